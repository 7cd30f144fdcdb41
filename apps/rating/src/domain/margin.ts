import { divRound } from "@nanobill/money";
import type { GuardrailRuleRow } from "../store/catalog-store.js";

/**
 * Margin: revenue - cost, and margin in basis points of revenue (floor; 0 when revenue is 0).
 * Only amounts in the same currency are compared. Guardrails count credit-priced revenue at the
 * credits' currency value (each line's price_value_nanos, at the credit type's exchange rate at
 * the event time); credit-priced usage whose value is not known in the cost currency is left out
 * of the margin, its cost included.
 */
export function marginBps(revenueNanos: bigint, costNanos: bigint): bigint {
  if (revenueNanos <= 0n) return costNanos > 0n ? -10_000n : 0n;
  return divRound((revenueNanos - costNanos) * 10_000n, revenueNanos, "floor");
}

/** WindowSum: one customer's revenue and cost by model over a rule's window (one currency). */
export interface WindowSum {
  customerId: string;
  model: string;
  unit: string; // price unit
  costUnit: string;
  priceNanos: bigint;
  costNanos: bigint;
  /** valueNanos: credit-priced rows: the credits' currency value (sum of the lines' price_value_nanos). */
  valueNanos?: bigint;
  /** valueUnit: the currency of valueNanos (the credit type's exchange currency); "" when not known. */
  valueUnit?: string;
}

/** isCreditUnit: a credit type id (cr_...) rather than a currency. */
export function isCreditUnit(unit: string): boolean {
  return unit.startsWith("cr_");
}

export interface AlertRow {
  alertId: string;
  ruleId: string;
  customerId: string;
  kind: GuardrailRuleRow["kind"];
  observedBps: bigint;
  thresholdBps: bigint;
  revenueNanos: bigint;
  costNanos: bigint;
  unit: string;
  windowStartMs: number;
  windowEndMs: number;
  raiseTimeMs: number;
  message: string;
}

/**
 * evaluateRule: the alerts one rule raises for the customers' window sums at nowMs. The alert
 * id is deterministic per (rule, customer, window slot) where slots are window-length steps of
 * time, so re-evaluating within a slot raises nothing new (idempotent).
 *  - margin_below: revenue and cost in the same currency; margin bps < threshold.
 *  - cost_mix_shift: the share of cost spent on rule.model > threshold bps of all cost.
 */
export function evaluateRule(rule: GuardrailRuleRow, sums: WindowSum[], nowMs: number): AlertRow[] {
  const windowMs = rule.windowSeconds * 1000;
  const slot = Math.floor(nowMs / windowMs);
  const byCustomer = new Map<string, WindowSum[]>();
  for (const s of sums) {
    if (rule.customerId !== "" && s.customerId !== rule.customerId) continue;
    const l = byCustomer.get(s.customerId);
    if (l === undefined) byCustomer.set(s.customerId, [s]);
    else l.push(s);
  }
  const out: AlertRow[] = [];
  for (const [customerId, ss] of byCustomer) {
    // One currency: the cost currency with the most cost.
    const costByUnit = new Map<string, bigint>();
    for (const s of ss) if (s.costUnit !== "") costByUnit.set(s.costUnit, (costByUnit.get(s.costUnit) ?? 0n) + s.costNanos);
    if (costByUnit.size === 0) continue;
    const unit = [...costByUnit.entries()].sort((a, b) => (a[1] < b[1] ? 1 : a[1] > b[1] ? -1 : 0))[0]![0];
    let revenue = 0n;
    let cost = 0n;
    let marginCost = 0n; // the cost of usage whose revenue is counted (or that has none)
    let modelCost = 0n;
    let foreignRevenue = false; // revenue priced in a currency other than the cost's
    for (const s of ss) {
      const credit = isCreditUnit(s.unit);
      if (!credit && s.unit !== "" && s.unit !== unit && s.priceNanos !== 0n) foreignRevenue = true;
      // Revenue counts in the cost's currency: credit-priced revenue at its currency value, other
      // revenue when priced in that currency. A row whose revenue is in another unit (a credit
      // without a value here, a EUR price against USD cost) is left out of the margin: its cost
      // against no revenue fired a false alert (review of 2026-11-30). Usage that is not priced
      // (no revenue, unit "") still counts its cost: that is the margin it destroys.
      const comparable = credit ? s.valueUnit === unit : s.unit === unit || s.unit === "";
      if (credit ? comparable : s.unit === unit) revenue += credit ? (s.valueNanos ?? 0n) : s.priceNanos;
      if (s.costUnit === unit) {
        cost += s.costNanos;
        if (comparable) marginCost += s.costNanos;
        if (s.model === rule.model) modelCost += s.costNanos;
      }
    }
    let observed: bigint;
    let fire: boolean;
    let message: string;
    if (rule.kind === "margin_below") {
      cost = marginCost;
      if (revenue === 0n && cost === 0n) continue;
      // A customer billed only in another currency than its cost has no margin to compute here
      // (no exchange rates): its unpriced usage's cost alone fired -10,000 bps (second review).
      if (revenue === 0n && foreignRevenue) continue;
      observed = marginBps(revenue, cost);
      fire = observed < rule.thresholdBps;
      message = `margin ${observed} bps over the last ${rule.windowSeconds}s is below ${rule.thresholdBps} bps`;
    } else {
      if (cost === 0n) continue;
      observed = divRound(modelCost * 10_000n, cost, "floor");
      fire = observed > rule.thresholdBps;
      message = `model ${rule.model} is ${observed} bps of cost over the last ${rule.windowSeconds}s (threshold ${rule.thresholdBps} bps)`;
    }
    if (!fire) continue;
    out.push({
      alertId: `alr_${rule.ruleId}_${customerId}_${slot}`,
      ruleId: rule.ruleId,
      customerId,
      kind: rule.kind,
      observedBps: observed,
      thresholdBps: rule.thresholdBps,
      revenueNanos: revenue,
      costNanos: cost,
      unit,
      windowStartMs: nowMs - windowMs,
      windowEndMs: nowMs,
      raiseTimeMs: nowMs,
      message,
    });
  }
  return out;
}
