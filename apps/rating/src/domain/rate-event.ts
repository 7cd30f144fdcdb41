import { AMOUNT_NANOS_MAX, INT64_MAX, INT64_MIN, allocate, type Rate } from "@nanobill/money";
import { compileCharge, type CompiledCharge, type CompiledVersion } from "./compile.js";
import { MODEL_PROPERTY, PROVIDER_PROPERTY, type CostCatalog, type CostLine } from "./cost-catalog.js";
import { billingPeriod, type Period } from "./period.js";
import {
  matrixRate,
  percentagePrice,
  periodTotal,
  propExactNanos,
  propQuantity,
  propString,
  rateExact,
  roundHalfEven,
  type Exact,
} from "./pricing.js";
import { COST, PRICE, carryKey, periodKey, taskKey, type RatingState } from "./state.js";
import {
  EVENTS_METRIC,
  METRIC,
  dimKeyPart,
  dimsKeyOf,
  type Customer,
  type PriceOverride,
  type RatedEventResult,
  type RatedLine,
  type Subscription,
  type UsageEvent,
} from "./types.js";

/**
 * TenantCatalog: what rating needs to know about one tenant to rate its events: customers,
 * subscriptions, compiled plan versions, price overrides and the cost catalog. Pure data with
 * memoized compilation; the consumer loads one per tenant (cached for a short TTL) and the
 * service invalidates it on writes.
 */
export class TenantCatalog {
  readonly tenant: string;
  readonly costs: CostCatalog;
  readonly creditRates: Map<string, CreditRate[]>;
  readonly #customers: Map<string, Customer>;
  readonly #subscriptions: Map<string, Subscription[]>;
  readonly #versions: Map<string, CompiledVersion>; // planId\0version
  readonly #overrides: Map<string, PriceOverride[]>;
  readonly #overrideCache = new Map<string, CompiledCharge>();
  readonly #periodCache = new Map<string, Period>();

  constructor(opts: {
    tenant: string;
    customers: Customer[];
    subscriptions: Subscription[];
    versions: Array<{ planId: string; version: CompiledVersion }>;
    overrides: PriceOverride[];
    costs: CostCatalog;
    /** creditRates: per credit type, exchange rates (currency nanos per credit) oldest first. */
    creditRates?: Map<string, CreditRate[]>;
  }) {
    this.creditRates = opts.creditRates ?? new Map();
    this.tenant = opts.tenant;
    this.costs = opts.costs;
    this.#customers = new Map(opts.customers.map((c) => [c.customerId, c]));
    this.#subscriptions = new Map();
    for (const s of opts.subscriptions) {
      let l = this.#subscriptions.get(s.customerId);
      if (l === undefined) this.#subscriptions.set(s.customerId, (l = []));
      l.push(s);
    }
    // By start time, then id: the order resolve (and RatePeriod) pick "the" subscription in.
    for (const l of this.#subscriptions.values()) l.sort((a, b) => a.startMs - b.startMs || (a.subscriptionId < b.subscriptionId ? -1 : a.subscriptionId > b.subscriptionId ? 1 : 0));
    this.#versions = new Map(opts.versions.map((v) => [`${v.planId}\u0000${v.version.spec.version}`, v.version]));
    this.#overrides = new Map();
    for (const o of opts.overrides) {
      let l = this.#overrides.get(o.customerId);
      if (l === undefined) this.#overrides.set(o.customerId, (l = []));
      l.push(o);
    }
  }

  customer(id: string): Customer | undefined {
    return this.#customers.get(id);
  }

  version(planId: string, version: number): CompiledVersion | undefined {
    return this.#versions.get(`${planId}\u0000${version}`);
  }

  /**
   * resolve: the subscription, version, period and charges in force for an event: the first
   * subscription in force at the event time (by start time, then id) whose current phase's plan
   * version has a charge for the event's type; when none has one, the first in force (no charge).
   * So usage under a customer's second concurrent subscription is rated, and two plans pricing the
   * same event type never both charge it (the first wins).
   */
  resolve(e: UsageEvent): Resolution | { reason: string } {
    const customer = this.#customers.get(e.customerId);
    if (customer === undefined) return { reason: "unknown customer" };
    const subs = this.#subscriptions.get(e.customerId);
    let first: Resolution | { reason: string } | null = null;
    if (subs !== undefined) {
      for (const s of subs) {
        for (const ph of s.phases) {
          if (ph.startMs <= e.timestampMs && (ph.endMs === null || e.timestampMs < ph.endMs)) {
            const v = this.version(ph.planId, ph.planVersion);
            if (v === undefined) {
              first ??= { reason: `plan ${ph.planId} v${ph.planVersion} not found` };
              break;
            }
            const base = v.byEventType.get(e.type);
            if (base === undefined && first !== null) break;
            const period = this.period(customer, v.spec.intervalMonths, e.timestampMs);
            const r: Resolution = { customer, subscriptionId: s.subscriptionId, subscription: s, version: v, period, charges: this.#applyOverrides(customer, v, ph.planId, base ?? [], e.timestampMs) };
            if (base !== undefined) return r;
            first = r;
            break;
          }
        }
      }
    }
    return first ?? { reason: "no subscription in force at the event time" };
  }

  /** period: the customer's billing period containing atMs (memoized). */
  period(c: Customer, intervalMonths: number, atMs: number): Period {
    const key = `${c.customerId}\u0000${intervalMonths}`;
    const p = this.#periodCache.get(key);
    if (p !== undefined && p.startMs <= atMs && atMs < p.endMs) return p;
    const np = billingPeriod(c.billingAnchorMs, c.timeZone, intervalMonths, atMs);
    if (this.#periodCache.size > 100_000) this.#periodCache.clear();
    this.#periodCache.set(key, np);
    return np;
  }

  #applyOverrides(c: Customer, v: CompiledVersion, planId: string, charges: CompiledCharge[], ts: number): CompiledCharge[] {
    const os = this.#overrides.get(c.customerId);
    if (os === undefined || charges.length === 0) return charges;
    return charges.map((ch) => {
      const o = os.find((x) => x.chargeId === ch.chargeId && x.startMs <= ts && (x.endMs === null || ts < x.endMs));
      if (o === undefined) return ch;
      return this.compiledOverride(o, planId, v, ch);
    });
  }

  /** compiledOverride: an override compiled against the charge it replaces (memoized). */
  compiledOverride(o: PriceOverride, planId: string, v: CompiledVersion, ch: CompiledCharge): CompiledCharge {
    const key = `${o.overrideId}\u0000${planId}\u0000${v.spec.version}`;
    let cc = this.#overrideCache.get(key);
    if (cc === undefined) {
      cc = compileCharge({ ...ch.spec, pricing: o.pricing, includedQuantity: o.includedQuantity }, "price_override.charge", v.spec.currency);
      this.#overrideCache.set(key, cc);
    }
    return cc;
  }

  subscriptions(customerId: string): Subscription[] {
    return this.#subscriptions.get(customerId) ?? [];
  }

  overrides(customerId: string): PriceOverride[] {
    return this.#overrides.get(customerId) ?? [];
  }
}

/** CreditRate: a credit type's exchange rate from a time (Rate: currency nanos per credit). */
export interface CreditRate {
  effectiveMs: number;
  rate: Rate;
  currency: string;
}

/** creditValue: credits (nanos of credit) in currency nanos at tsMs, rounded half-even; 0 if no rate. */
export function creditValue(rates: CreditRate[] | undefined, creditNanos: bigint, tsMs: number): bigint {
  if (rates === undefined) return 0n;
  let r: CreditRate | undefined;
  for (const x of rates) if (x.effectiveMs <= tsMs) r = x;
  if (r === undefined) return 0n;
  return roundHalfEven({ num: creditNanos * r.rate.num, den: r.rate.den * 1_000_000_000n });
}

export interface Resolution {
  customer: Customer;
  subscriptionId: string;
  /** subscription: the subscription in force (its phases give the cap's parts of the period). */
  subscription: Subscription;
  version: CompiledVersion;
  period: Period;
  charges: CompiledCharge[];
}

interface RawLine {
  dims: Record<string, string>;
  dimsKey: string;
  metric: string;
  quantity: bigint;
  bad: string; // non-empty: unusable quantity
}

const EVENTS_ONLY = [EVENTS_METRIC];

/** usageLines: one raw line per quantity property present (dimensions keyed in sorted order). */
function usageLines(c: CompiledCharge, e: UsageEvent, single: boolean): RawLine[] {
  const u = c.usage!;
  const props = e.properties;
  const counting = u.quantityProperties.length === 0;
  const metrics = counting ? EVENTS_ONLY : u.quantityProperties;
  const order = c.dimOrder;
  const out: RawLine[] = [];
  for (const m of metrics) {
    let quantity = 1n;
    let bad = "";
    if (!counting) {
      const v = props[m];
      if (v === undefined) continue;
      const q = propQuantity(v);
      if (typeof q === "string") {
        bad = `${m}: ${q}`;
        quantity = 0n;
      } else quantity = q;
    }
    const dims: Record<string, string> = {};
    let key = "";
    for (const k of order) {
      let val: string;
      if (k === METRIC) val = m;
      else {
        const pv = props[k];
        if (pv === undefined) continue;
        val = propString(pv);
      }
      dims[k] = val;
      const part = `${k}=${dimKeyPart(val)}`;
      key = key === "" ? part : `${key}\u001f${part}`;
    }
    out.push({ dims, dimsKey: key, metric: m, quantity, bad });
    if (single) break;
  }
  return out;
}

function line(chargeId: string, dims: Record<string, string>, quantity: bigint, unit: string, dimsKey?: string): RatedLine {
  return {
    chargeId,
    dimensions: dims,
    dimsKey: dimsKey ?? dimsKeyOf(dims),
    quantity,
    priceNanos: 0n,
    unit,
    costNanos: 0n,
    costUnit: "",
    status: "final",
    reason: "",
    attributedCostNanos: 0n,
    priceValueNanos: 0n,
  };
}

/**
 * rateEvent: prices and costs one event against the tenant catalog, mutating `state` (carries,
 * period totals, tasks). Pure apart from `state`; the same (catalog, state, event) always gives
 * the same result. Lines:
 *  - event-mode charges: each line's exact price goes through the (customer, charge, dimensions)
 *    CarryAccumulator (half-even), so booked prices sum to the rounded exact total, to the nano;
 *  - period-mode charges: the event books round(F(total after)) - round(F(total before)) on the
 *    (customer, charge, period) running total, split over its lines by quantity (largest
 *    remainder); provisional;
 *  - outcome charges: pending/final outcome lines, clawbacks on reversal events in the window;
 *  - cost: each catalog metric of the event's (provider, model) is attributed once, to the first
 *    line with that metric, else to a cost-only line (charge ""), through its own carry.
 */
export function rateEvent(cat: TenantCatalog, state: RatingState, e: UsageEvent): RatedEventResult {
  const t = cat.tenant;
  const res = cat.resolve(e);
  const lines: RatedLine[] = [];
  const model = propString(e.properties[MODEL_PROPERTY]);
  let taskId = propString(e.properties["task_id"]);
  let subscriptionId = "";
  let reason = "";
  const attemptTasks = new Set<string>();
  const outcomes: Array<{ line: RatedLine; outcome: NonNullable<ReturnType<RatingState["task"]>["outcome"]> }> = [];

  if ("reason" in res) {
    reason = res.reason;
  } else {
    subscriptionId = res.subscriptionId;
    for (const c of res.charges) {
      const p = c.pricing;
      if (p.kind === "outcome") {
        const tid = p.taskIdProperty === "" ? "" : propString(e.properties[p.taskIdProperty]);
        if (tid !== "") taskId = tid;
        const from = lines.length;
        if (c.usage !== null && e.type === c.usage.eventType) rateOutcome(t, state, e, c, tid, lines, outcomes);
        else if (e.type === p.reversalEventType && tid !== "") rateReversal(t, state, e, c, tid, lines);
        if (lines.length > from) addPeriodSums(t, state, e, c, res.period, lines, from, null);
        if (p.attemptEventTypes.has(e.type) && tid !== "") attemptTasks.add(tid);
        continue;
      }
      if (c.usage === null || c.usage.eventType !== e.type) continue;
      if (c.mode === "period") ratePeriodCharge(t, state, e, c, res.period, lines);
      else rateEventCharge(t, state, e, c, res.period, lines, p.kind === "credits" ? cat.creditRates.get(c.unit) : undefined);
    }
  }

  // Every subscription's currency usage is counted (a cap added later in the period sees it).
  if (!("reason" in res)) applyCap(t, state, e, res, lines);
  // An outcome is handed to the wallet at its confirmation with the price it was booked at: after the cap.
  for (const o of outcomes) o.outcome.priceNanos = o.line.priceNanos;

  // Cost: attribute each catalog metric once.
  const costs = cat.costs.costOf(e);
  const used = new Set<CostLine>();
  for (const l of lines) {
    if (l.status === "clawed_back") continue;
    const m = l.dimensions[METRIC];
    const cl = costs.find((x) => x.metric === m && !used.has(x));
    if (cl === undefined) continue;
    used.add(cl);
    bookCost(t, state, e.customerId, l, cl.exact, cl.currency);
  }
  if (!("reason" in res)) {
    for (const l of lines) {
      if (l.chargeId === "" || l.costNanos === 0n) continue;
      const k = periodKey(t, e.customerId, l.chargeId, res.period.startMs);
      const pt = state.periodTotal(k, l.unit, res.period.endMs);
      pt.costNanos += l.costNanos;
      checkPeriodTotal(pt, l.chargeId);
    }
  }
  for (const cl of costs) {
    if (used.has(cl)) continue;
    const dims: Record<string, string> = { [METRIC]: cl.metric, [MODEL_PROPERTY]: model, [PROVIDER_PROPERTY]: propString(e.properties[PROVIDER_PROPERTY]) };
    const l = line("", dims, cl.quantity, "");
    l.status = "cost_only";
    l.reason = reason;
    bookCost(t, state, e.customerId, l, cl.exact, cl.currency);
    lines.push(l);
  }
  if (reason !== "" && lines.length === 0) {
    const l = line("", { [METRIC]: EVENTS_METRIC }, 1n, "");
    l.status = "cost_only";
    l.reason = `${reason}; no cost rate for provider ${JSON.stringify(propString(e.properties[PROVIDER_PROPERTY]))} model ${JSON.stringify(model)}`;
    lines.push(l);
  }

  // Attempts: their cost accrues to the task's outcome.
  if (attemptTasks.size > 0) {
    let cost = 0n;
    let unit = "";
    for (const l of lines) {
      if (l.costNanos !== 0n) {
        cost += l.costNanos;
        unit = l.costUnit;
      }
    }
    for (const tid of attemptTasks) {
      const k = taskKey(t, e.customerId, tid);
      const ts = state.task(k);
      ts.attemptCostNanos += cost;
      if (unit !== "") ts.costUnit = unit;
      state.touch("task", k);
    }
  }

  return { eventId: e.eventId, customerId: e.customerId, eventType: e.type, timestampMs: e.timestampMs, subscriptionId, taskId, model, lines };
}

// A zero amount books 0 and leaves its carry alone: a carry restored from its stored residue alone
// (-1/2 after a half-up booking) would otherwise round -1/2 + 0 away from zero to -1, where the
// uninterrupted accumulator books 0 (for non-negative amounts this is the only case where the two
// differ).
function bookCost(t: string, state: RatingState, customerId: string, l: RatedLine, exact: Exact, cur: string): void {
  l.costUnit = cur;
  if (exact.num === 0n) return;
  if (exact.num > AMOUNT_NANOS_MAX * exact.den) {
    // The price's rule on the cost side: one event's cost past 10^9 units is not booked (it threw
    // in the carry and made the event a poison one); the line says why.
    const why = `cost exceeds ${AMOUNT_NANOS_MAX} nanos (10^9 units) for one event`;
    l.reason = l.reason === "" ? why : `${l.reason}; ${why}`;
    return;
  }
  const k = carryKey(t, customerId, l.chargeId, l.dimsKey, COST);
  l.costNanos = state.carry(k).add(exact);
  state.touch("carry", k);
}

function bookPrice(t: string, state: RatingState, customerId: string, l: RatedLine, exact: Exact): void {
  if (exact.num === 0n) return;
  const k = carryKey(t, customerId, l.chargeId, l.dimsKey, PRICE);
  l.priceNanos = state.carry(k).add(exact);
  state.touch("carry", k);
}

function addPeriodSums(t: string, state: RatingState, e: UsageEvent, c: CompiledCharge, period: Period, lines: RatedLine[], from: number, bookedDelta: bigint | null): void {
  const k = periodKey(t, e.customerId, c.chargeId, period.startMs);
  const pt = state.periodTotal(k, c.unit, period.endMs);
  for (let i = from; i < lines.length; i++) {
    const l = lines[i]!;
    pt.quantity += l.quantity;
    if (bookedDelta === null) pt.bookedNanos += l.priceNanos;
  }
  if (bookedDelta !== null) pt.bookedNanos += bookedDelta;
  checkPeriodTotal(pt, c.chargeId);
  state.touch("period", k);
}

/**
 * A customer's period totals of a charge are stored as int64 (rated-store): one that would pass
 * it (about 9.2 x 10^9 units of quantity or money in one period) throws, so the event that takes
 * it there is set aside as a poison event (unpriced, the reason on its line) and the partition
 * goes on; before, the batch's write failed on the column and was retried for good.
 */
function checkPeriodTotal(pt: { quantity: bigint; bookedNanos: bigint; costNanos: bigint }, chargeId: string): void {
  for (const [name, v] of [["quantity", pt.quantity], ["booked", pt.bookedNanos], ["cost", pt.costNanos]] as const) {
    if (v > INT64_MAX || v < INT64_MIN) throw new Error(`the period's ${name} total of charge ${chargeId} would pass int64 (${v})`);
  }
}

function rateEventCharge(t: string, state: RatingState, e: UsageEvent, c: CompiledCharge, period: Period, out: RatedLine[], creditRates?: CreditRate[]): void {
  const p = c.pricing;
  const single = p.kind === "percentage" || p.kind === "dynamic";
  const raws = usageLines(c, e, single);
  const from = out.length;
  for (const r of raws) {
    const l = line(c.chargeId, r.dims, r.quantity, c.unit, r.dimsKey);
    out.push(l);
    if (r.bad !== "") {
      l.status = "unpriced";
      l.reason = r.bad;
      continue;
    }
    let exact: Exact | null = null;
    switch (p.kind) {
      case "per_unit":
        exact = p.rate.exactTimes(r.quantity);
        break;
      case "matrix": {
        const rate = matrixRate(p, r.dims, l.dimsKey);
        if (rate === null) l.reason = "no matrix cell matches and no default price";
        else exact = rate.exactTimes(r.quantity);
        break;
      }
      case "credits": {
        const v = propString(e.properties[p.tierProperty]);
        const rate = p.byValue.get(v) ?? p.defaultRate;
        if (rate === null) l.reason = `no credit tier for ${p.tierProperty}=${JSON.stringify(v)}`;
        else exact = rate.exactTimes(r.quantity);
        break;
      }
      case "percentage": {
        const amt = propExactNanos(e.properties[p.amountProperty]);
        if (amt === null) l.reason = `${p.amountProperty}: missing or not a decimal`;
        else if (amt.num < 0n) l.reason = `${p.amountProperty}: negative`;
        else exact = percentagePrice(p, amt);
        break;
      }
      case "dynamic": {
        const amt = propExactNanos(e.properties[p.priceProperty]);
        if (amt === null) l.reason = `${p.priceProperty}: missing or not a decimal`;
        else if (amt.num < 0n) l.reason = `${p.priceProperty}: negative`;
        else exact = amt;
        break;
      }
      default:
        l.reason = `charge model ${p.kind} is not event priced`;
    }
    if (exact !== null && exact.num > AMOUNT_NANOS_MAX * exact.den) {
      // One event priced past the largest amount (10^9 units): unpriced with the reason, as a
      // negative price is; it threw in the carry and made the event a poison one (review of 2026-11-30).
      exact = null;
      l.reason = `price exceeds ${AMOUNT_NANOS_MAX} nanos (10^9 units) for one event`;
    }
    if (exact === null) {
      l.status = "unpriced";
      continue;
    }
    bookPrice(t, state, e.customerId, l, exact);
    if (p.kind === "credits") l.priceValueNanos = creditValue(creditRates, l.priceNanos, e.timestampMs);
  }
  addPeriodSums(t, state, e, c, period, out, from, null);
}

function ratePeriodCharge(t: string, state: RatingState, e: UsageEvent, c: CompiledCharge, period: Period, out: RatedLine[]): void {
  const raws = usageLines(c, e, false);
  const from = out.length;
  let dq = 0n;
  for (const r of raws) {
    const l = line(c.chargeId, r.dims, r.quantity, c.unit, r.dimsKey);
    out.push(l);
    if (r.bad !== "") {
      l.status = "unpriced";
      l.reason = r.bad;
      l.quantity = 0n;
    } else {
      l.status = "provisional";
      dq += r.quantity;
    }
  }
  if (dq === 0n) {
    addPeriodSums(t, state, e, c, period, out, from, 0n);
    return;
  }
  const k = periodKey(t, e.customerId, c.chargeId, period.startMs);
  const pt = state.periodTotal(k, c.unit, period.endMs);
  const before = pt.bookedNanos;
  const after = roundHalfEven(periodTotal(c, pt.quantity + dq));
  const step = after - before;
  const priced = out.slice(from).filter((l) => l.status === "provisional");
  const shares = step === 0n ? priced.map(() => 0n) : allocate(step, priced.map((l) => l.quantity), "price_nanos");
  priced.forEach((l, i) => (l.priceNanos = shares[i]!));
  addPeriodSums(t, state, e, c, period, out, from, step);
}

function rateOutcome(
  t: string,
  state: RatingState,
  e: UsageEvent,
  c: CompiledCharge,
  tid: string,
  out: RatedLine[],
  outcomes: Array<{ line: RatedLine; outcome: NonNullable<ReturnType<RatingState["task"]>["outcome"]> }>,
): void {
  const p = c.pricing as Extract<CompiledCharge["pricing"], { kind: "outcome" }>;
  const dims: Record<string, string> = { [METRIC]: "outcomes" };
  for (const d of c.usage!.dimensionProperties) {
    const v = e.properties[d];
    if (v !== undefined) dims[d] = propString(v);
  }
  const l = line(c.chargeId, dims, 1n, c.unit);
  out.push(l);
  if (p.conditionProperty !== "" && propString(e.properties[p.conditionProperty]) !== p.conditionValue) {
    l.status = "unpriced";
    l.reason = `condition ${p.conditionProperty}=${JSON.stringify(p.conditionValue)} not met`;
    l.quantity = 0n;
    return;
  }
  // An outcome with a verification window needs a task to be confirmed from: without a task id on
  // the event it is its own task (keyed by its event id; no reversal can name it, so it is
  // confirmed when its window ends).
  const taskId = tid !== "" ? tid : p.windowMs > 0 ? `event:${e.eventId}` : "";
  if (taskId !== "") {
    const k = taskKey(t, e.customerId, taskId);
    const task = state.task(k);
    if (task.outcome !== null && task.outcome.status !== "clawed_back") {
      l.status = "unpriced";
      l.reason = `task ${JSON.stringify(taskId)} already has outcome ${task.outcome.eventId}`;
      l.quantity = 0n;
      return;
    }
    bookPrice(t, state, e.customerId, l, rateExact(p.amount));
    l.attributedCostNanos = task.attemptCostNanos;
    task.outcome = {
      eventId: e.eventId,
      chargeId: c.chargeId,
      priceNanos: l.priceNanos,
      unit: c.unit,
      verifyUntilMs: e.timestampMs + p.windowMs,
      eventTimeMs: e.timestampMs,
      model: propString(e.properties[MODEL_PROPERTY]),
      status: p.windowMs > 0 ? "pending" : "confirmed",
    };
    outcomes.push({ line: l, outcome: task.outcome });
    state.touch("task", k);
  } else {
    bookPrice(t, state, e.customerId, l, rateExact(p.amount));
  }
  l.status = p.windowMs > 0 ? "pending" : "final";
}

function rateReversal(t: string, state: RatingState, e: UsageEvent, c: CompiledCharge, tid: string, out: RatedLine[]): void {
  const k = taskKey(t, e.customerId, tid);
  const task = state.task(k);
  const o = task.outcome;
  // A reversal timed inside the window claws the outcome back even when it arrives after the
  // window ended and the outcome was confirmed (a late event): the clawback line credits it on the
  // invoice; an amount already handed to the wallet at the confirmation stays burned there. The
  // window starts at the outcome: a reversal timed before it claws nothing back, whichever
  // arrives first (an outcome stored without its time keeps the old rule).
  if (o === null || o.chargeId !== c.chargeId || (o.status !== "pending" && o.status !== "confirmed") || e.timestampMs > o.verifyUntilMs || e.timestampMs < o.eventTimeMs) return;
  const l = line(c.chargeId, { [METRIC]: "outcomes" }, -1n, c.unit);
  l.priceNanos = -o.priceNanos;
  l.status = "clawed_back";
  l.reason =
    o.status === "pending"
      ? `reversal of outcome ${o.eventId} within its verification window`
      : `reversal of outcome ${o.eventId} within its verification window, received after its confirmation`;
  out.push(l);
  o.status = "clawed_back";
  state.touch("task", k);
}

/**
 * CAP_CHARGE_ID: the prefix of the period-total keys holding a subscription's uncapped currency
 * usage (not charges), one per part of the period (capParts): "#cap:<subscription id>" for its
 * first part, "#cap:<subscription id>@<part start ms>" for each later one (a migration). Rows keyed
 * "#cap" alone (one running total per customer) were written before the cap was per subscription
 * and are no longer read.
 */
export const CAP_CHARGE_ID = "#cap";
/** isCapKey: a period-total charge id that is a cap running total, not a charge. */
export const isCapKey = (chargeId: string): boolean => chargeId === CAP_CHARGE_ID || chargeId.startsWith(`${CAP_CHARGE_ID}:`);

/** CapPart: one phase of a subscription within a period: [startMs, endMs), its plan version and the key of its usage total. */
export interface CapPart {
  startMs: number;
  endMs: number;
  planId: string;
  planVersion: number;
  /** key: the period-total charge id holding the part's uncapped usage (CAP_CHARGE_ID). */
  key: string;
}

/**
 * capParts: the parts of a period a subscription's phases cover, in time order (phases do not
 * overlap). Real-time rating and RatePeriod both apply the spending cap part by part from these:
 * each part's cap is its version's, the running total is carried across parts.
 */
export function capParts(s: Subscription, period: Period): CapPart[] {
  const out: CapPart[] = [];
  for (const ph of s.phases) {
    const a = Math.max(ph.startMs, period.startMs, s.startMs);
    const b = Math.min(ph.endMs ?? Infinity, period.endMs, s.endMs ?? Infinity);
    if (a >= b) continue;
    out.push({ startMs: a, endMs: b, planId: ph.planId, planVersion: ph.planVersion, key: "" });
  }
  out.sort((x, y) => x.startMs - y.startMs);
  out.forEach((p, i) => (p.key = i === 0 ? `${CAP_CHARGE_ID}:${s.subscriptionId}` : `${CAP_CHARGE_ID}:${s.subscriptionId}@${p.startMs}`));
  return out;
}

/** capParts per subscription and period, kept while the (cached, immutable) subscription object lives: the hot path computes them once per period. */
const capPartsCache = new WeakMap<Subscription, { startMs: number; endMs: number; parts: CapPart[] }>();
function capPartsOf(s: Subscription, period: Period): CapPart[] {
  const c = capPartsCache.get(s);
  if (c !== undefined && c.startMs === period.startMs && c.endMs === period.endMs) return c.parts;
  const parts = capParts(s, period);
  capPartsCache.set(s, { startMs: period.startMs, endMs: period.endMs, parts });
  return parts;
}

/**
 * cappedIncrease: what usage going from u0 to u1 (the subscription's uncapped running total in
 * the period) books under `cap` (nanos; null or <= 0: none): min(cap, u1) - min(cap, u0).
 */
export function cappedIncrease(cap: bigint | null, u0: bigint, u1: bigint): bigint {
  if (cap === null || cap <= 0n) return u1 - u0;
  return (u1 < cap ? u1 : cap) - (u0 < cap ? u0 : cap);
}

/**
 * applyCap: the spending cap in real time. A spending cap is a ceiling on the subscription's
 * usage charges per billing period, taken from the plan version in force at the event. The
 * running total U counts the uncapped currency usage of every event the subscription rated in the
 * period, whatever the version (capped or not): per part of the period (capParts), U = the totals
 * of the earlier parts + this part's so far. An event whose lines add S books
 * min(cap, U + S) - min(cap, U) instead of S under a capped version (S under an uncapped one), the
 * difference taken from its positive lines (largest remainder) and marked provisional. So a cap
 * added mid-period lets through only what remains under it, and a cap removed mid-period stops
 * applying at the migration. The period's per-charge totals stay uncapped (RatePeriod shows the
 * cap as an adjustment line, computed part by part from the same totals); buckets and wallet
 * amounts are capped.
 */
function applyCap(t: string, state: RatingState, e: UsageEvent, res: Resolution, lines: RatedLine[]): void {
  const cur = res.version.spec.currency;
  const priced = lines.filter((l) => l.unit === cur && l.chargeId !== "" && (l.status === "final" || l.status === "provisional" || l.status === "pending" || l.status === "clawed_back"));
  if (priced.length === 0) return;
  const s = priced.reduce((a, l) => a + l.priceNanos, 0n);
  const parts = capPartsOf(res.subscription, res.period);
  let u = 0n;
  let key = parts[0]?.key ?? `${CAP_CHARGE_ID}:${res.subscriptionId}`;
  if (parts.length > 1) for (const p of parts) {
    if (p.startMs > e.timestampMs) break;
    if (e.timestampMs < p.endMs) {
      key = p.key;
      break;
    }
    u += state.periodTotal(periodKey(t, e.customerId, p.key, res.period.startMs), cur, res.period.endMs).bookedNanos;
  }
  const k = periodKey(t, e.customerId, key, res.period.startMs);
  const pt = state.periodTotal(k, cur, res.period.endMs);
  u += pt.bookedNanos;
  pt.bookedNanos += s;
  checkPeriodTotal(pt, key);
  state.touch("period", k);
  if (res.version.cap === null) return;
  const cap = roundHalfEven(rateExact(res.version.cap));
  if (cap <= 0n) return;
  const capped = cappedIncrease(cap, u, u + s);
  const cut = s - capped;
  if (cut === 0n) return;
  // The event books `capped` in all: lines of one sign take it (each at most its uncapped price,
  // largest remainder), lines of the other sign book 0. The wallet is handed positive lines only,
  // so a positive line is never raised above its uncapped price to offset a negative one.
  const pos = priced.filter((l) => l.priceNanos > 0n);
  const neg = priced.filter((l) => l.priceNanos < 0n);
  const [keep, zero] = capped >= 0n ? [pos, neg] : [neg, pos];
  const mark = (l: RatedLine) => {
    if (l.status === "final") l.status = "provisional";
    l.reason = l.reason === "" ? "spending cap reached" : `${l.reason}; spending cap reached`;
  };
  for (const l of zero) {
    l.priceNanos = 0n;
    mark(l);
  }
  const kept = keep.reduce((a, l) => a + l.priceNanos, 0n);
  const reduce = kept - capped; // same sign as the kept lines (|capped| <= |kept|)
  if (reduce === 0n) return;
  const mag = reduce < 0n ? -reduce : reduce;
  const shares = allocate(mag, keep.map((l) => (l.priceNanos < 0n ? -l.priceNanos : l.priceNanos)), "cap");
  keep.forEach((l, i) => {
    if (shares[i]! === 0n) return;
    l.priceNanos -= reduce < 0n ? -shares[i]! : shares[i]!;
    mark(l);
  });
}
