/**
 * From what rating and the wallet report to the charge lines of one subscription period (pure).
 *
 * - Periods: the customer's zone; anniversary of the customer's billing anchor by default.
 * - Usage is attributed by rating's hour buckets: a period's usage window is
 *   [floorHour(start), floorHour(end)), so consecutive periods partition the buckets exactly
 *   (no bucket is billed twice or never, even when a boundary is not on the hour).
 * - Usage is billed in arrears (the closed period); flat and seat fees in advance (the next
 *   period, and on the first invoice also period 0). Seats are prorated by the millisecond over
 *   the seat changes in force.
 * - A customer's usage and consumption of a charge belong to the subscription whose plan has
 *   the charge (the first such subscription); usage of charges no plan lists belongs to the
 *   customer's first subscription.
 */
import { CHARGE_ID_CAPTURED_HOLDS, RESIDUE_KEY_TOP_UP, type ChargeInput } from "./assemble.js";
import type { CreditsInUnits } from "./invoice.js";
import { coveredPeriods, localDate, nominalStart, type Period, type PeriodAnchor, type PeriodInterval, type PeriodSpec } from "./periods.js";
import { InvalidInput } from "./settings.js";
import { exact, formatDecimal, priceTimesQuantity, reduce, type ExactNanos } from "./rounding.js";
import { Rate } from "@nanobill/money";

export interface CustomerInfo {
  customerId: string;
  currency: string;
  timeZone: string;
  billingAnchor: Date | undefined;
  createdAt: Date | undefined;
}

export interface PhaseInfo {
  planId: string;
  planVersion: number;
  start: Date;
  end: Date | undefined;
}

export interface SubscriptionInfo {
  subscriptionId: string;
  customerId: string;
  startedAt: Date;
  endedAt: Date | undefined;
  phases: PhaseInfo[];
  seatChanges: Array<{ seats: number; effectiveAt: Date }>;
}

export interface ChargeInfo {
  chargeId: string;
  name: string;
  unit: string;
  kind: "usage" | "flat" | "seats";
  /** amount: the flat fee per period, or the price of one seat per period (decimal). */
  amount: string;
  /** periodPriced: a usage charge priced on the period total (graduated, volume, package, included allowance); absent = false. */
  periodPriced?: boolean;
}

export interface PlanVersionInfo {
  planId: string;
  version: number;
  currency: string;
  minimumCommitment: string;
  charges: ChargeInfo[];
}

export interface UsageTotal {
  chargeId: string;
  quantity: bigint;
  priceNanos: bigint;
  unit: string;
  /**
   * settlement: set for a charge priced on the period total: priceNanos is rating's exact period
   * amount (after the real-time cap); provisionalNanos what its events were rated at one by one,
   * settlementNanos = priceNanos - provisionalNanos (the close settlement).
   */
  settlement?: { provisionalNanos: bigint; settlementNanos: bigint };
}

/**
 * PeriodPricedLine: a usage line of rating's RatePeriod. periodPriced: the charge is priced on the
 * period total in this period (the amounts below are used); false: rating prices it per event in
 * this period (a price override or a migration made the plan's tiered charge per unit, say), so
 * it keeps its hour-bucket sums.
 */
export interface PeriodPricedLine {
  chargeId: string;
  /** subscriptionId: the subscription the line belongs to (rating's owner of the charge). */
  subscriptionId: string;
  periodPriced: boolean;
  unit: string;
  quantity: bigint;
  /** amountNanos: round_half_even(F(period quantity)), uncapped. */
  amountNanos: bigint;
  /** bookedNanos: the sum of the per-event provisional steps (uncapped). */
  bookedNanos: bigint;
  /** ratedNanos: the sum of the events' prices after the real-time spending cap (= booked without a cut). */
  ratedNanos: bigint;
}

/** RatedPeriodInfo: rating's billing period (RatePeriod) and its usage lines. */
export interface RatedPeriodInfo {
  periodStart: Date;
  periodEnd: Date;
  lines: PeriodPricedLine[];
}

export const planKey = (planId: string, version: number): string => `${planId}@${version}`;

const HOUR_MS = 3_600_000;

export function floorHour(d: Date): Date {
  return new Date(Math.floor(d.getTime() / HOUR_MS) * HOUR_MS);
}

/** usageWindow: the rated hour buckets that belong to a period. */
/** withinLife: period p cut to the subscription's [start, end) (unchanged when it covers p). */
export function withinLife(p: { start: Date; end: Date }, sub: { startedAt: Date; endedAt: Date | undefined }): { start: Date; end: Date } {
  const start = sub.startedAt.getTime() > p.start.getTime() ? sub.startedAt : p.start;
  const end = sub.endedAt !== undefined && sub.endedAt.getTime() < p.end.getTime() ? sub.endedAt : p.end;
  return end.getTime() > start.getTime() ? { start, end } : { start: p.start, end: p.start };
}

export function usageWindow(p: { start: Date; end: Date }): { from: Date; to: Date } {
  return { from: floorHour(p.start), to: floorHour(p.end) };
}

export function periodSpecFor(customer: CustomerInfo, sub: SubscriptionInfo, interval: PeriodInterval, anchor: PeriodAnchor): PeriodSpec {
  return { interval, anchor, timeZone: customer.timeZone === "" ? "UTC" : customer.timeZone, startedAt: sub.startedAt, anchorAt: customer.billingAnchor };
}

/**
 * aliveIn: the subscriptions alive in [from, to) (all of them when none is), in their order: the
 * ones that may own a charge's usage there (rating's usageOwners rule). Rating refuses two
 * subscriptions sharing a charge id in one billing period, so a successor starting at a period
 * boundary owns the charge's usage from then on (before, the first subscription that ever had the
 * charge kept it, even ended, and the successor's usage was billed on nobody's invoice).
 */
export function aliveIn(subs: SubscriptionInfo[], w: { from: Date; to: Date }): SubscriptionInfo[] {
  const alive = subs.filter((s) => s.startedAt.getTime() < w.to.getTime() && (s.endedAt === undefined || s.endedAt.getTime() > w.from.getTime()));
  return alive.length > 0 ? alive : subs;
}

/**
 * chargeOwners: charge id -> the subscription that bills it: the first whose plan has it in a phase
 * in force in `w` (when given), else in any phase (rating's usageOwners rule).
 */
export function chargeOwners(subs: SubscriptionInfo[], plans: ReadonlyMap<string, PlanVersionInfo>, w?: { from: Date; to: Date }): Map<string, string> {
  const owners = new Map<string, string>();
  for (const inForce of w === undefined ? [false] : [true, false]) {
    for (const s of subs) {
      for (const ph of s.phases) {
        if (inForce && !(ph.start.getTime() < w!.to.getTime() && (ph.end === undefined || ph.end.getTime() > w!.from.getTime()))) continue;
        const plan = plans.get(planKey(ph.planId, ph.planVersion));
        for (const c of plan?.charges ?? []) if (!owners.has(c.chargeId)) owners.set(c.chargeId, s.subscriptionId);
      }
    }
  }
  return owners;
}

/** ownerOf: the subscription billing a charge (unlisted charges: the first subscription). */
export function ownerOf(chargeId: string, owners: ReadonlyMap<string, string>, subs: SubscriptionInfo[]): string {
  return owners.get(chargeId) ?? subs[0]?.subscriptionId ?? "";
}

function phaseAt(sub: SubscriptionInfo, t: Date): PhaseInfo | undefined {
  let found: PhaseInfo | undefined;
  for (const ph of sub.phases) {
    if (ph.start.getTime() <= t.getTime() && (ph.end === undefined || t.getTime() < ph.end.getTime())) found = ph;
  }
  return found ?? sub.phases[0];
}

/**
 * phaseParts: [a, b) split by the subscription's phases (each phase's overlap with it, in time
 * order), as rating's RatePeriod prices fees per phase; when no phase overlaps it, the whole of
 * [a, b) under the phase in force at a (else the first phase).
 */
export function phaseParts(sub: SubscriptionInfo, a: Date, b: Date): Array<{ phase: PhaseInfo; start: Date; end: Date }> {
  const out: Array<{ phase: PhaseInfo; start: Date; end: Date }> = [];
  for (const ph of sub.phases) {
    const x = Math.max(ph.start.getTime(), a.getTime());
    const y = Math.min(ph.end?.getTime() ?? Infinity, b.getTime());
    if (x < y) out.push({ phase: ph, start: new Date(x), end: new Date(y) });
  }
  if (out.length === 0) {
    const ph = phaseAt(sub, a);
    return ph === undefined ? [] : [{ phase: ph, start: a, end: b }];
  }
  return out.sort((x, y) => x.start.getTime() - y.start.getTime());
}

/** seatSeconds: sum of seats x milliseconds in force over [start, end). */
export function seatMillis(sub: SubscriptionInfo, start: Date, end: Date): bigint {
  const changes = [...sub.seatChanges].sort((a, b) => a.effectiveAt.getTime() - b.effectiveAt.getTime());
  let total = 0n;
  const s = start.getTime();
  const e = end.getTime();
  for (let i = 0; i < changes.length; i++) {
    const from = Math.max(changes[i]!.effectiveAt.getTime(), s);
    const to = Math.min(i + 1 < changes.length ? changes[i + 1]!.effectiveAt.getTime() : e, e);
    if (to > from) total += BigInt(changes[i]!.seats) * BigInt(to - from);
  }
  return total;
}

function seatsAt(sub: SubscriptionInfo, t: Date): number {
  let seats = 0;
  for (const c of [...sub.seatChanges].sort((a, b) => a.effectiveAt.getTime() - b.effectiveAt.getTime())) {
    if (c.effectiveAt.getTime() <= t.getTime()) seats = c.seats;
  }
  return seats;
}

function decimalNanos(amount: string, field: string): ExactNanos | undefined {
  if (amount === "" || Rate.parse(amount, field, { allowNegative: true }).num === 0n) return undefined;
  return priceTimesQuantity(amount, "1");
}

/** isoDay: the local date "YYYY-MM-DD" of d in the customer's time zone ("" = UTC), as the invoice labels its dates. */
function isoDay(d: Date, timeZone: string): string {
  return localDate(d, timeZone === "" ? "UTC" : timeZone);
}

/**
 * feesFor: the flat and seat fees of one period (seats prorated over the changes in force).
 * fullStart: the start of the full period when p is a partial first period (the subscription
 * started between two boundaries). A subscription that ends inside p (endedAt in (start, end))
 * is billed only up to its end. The billed part [start, min(end, endedAt)) is split by the
 * subscription's phases (phaseParts: a plan migration inside the period), each part billed by the
 * plan version in force over it, as rating's RatePeriod prices fees: each part of the full period
 * [fullStart, end) prorates its version's flat fee by the millisecond, fee x part / full, exact
 * (the sub-nano and sub-cent remainders are carried on the charge's key like every line's, from
 * one part to the next), and seats are priced per full period length over the seat-milliseconds
 * of the part.
 */
export function feesFor(p: Period, sub: SubscriptionInfo, plans: ReadonlyMap<string, PlanVersionInfo>, currency: string, timeZone: string, fullStart: Date = p.start): ChargeInput[] {
  const out: ChargeInput[] = [];
  if (sub.endedAt !== undefined && p.start.getTime() >= sub.endedAt.getTime()) return out;
  const ends = sub.endedAt !== undefined && sub.endedAt.getTime() < p.end.getTime();
  const billedEnd = ends ? sub.endedAt! : p.end;
  const fullMs = BigInt(p.end.getTime() - Math.min(fullStart.getTime(), p.start.getTime()));
  const partial = fullMs !== BigInt(p.end.getTime() - p.start.getTime());
  const endNote = ends ? `to the subscription's end at ${billedEnd.toISOString()}` : "";
  const parts = phaseParts(sub, p.start, billedEnd);
  // A part cut by a phase boundary (a migration inside the period) says which version billed it.
  const split = parts.length > 1 || parts.some((x) => x.start.getTime() > p.start.getTime() || x.end.getTime() < billedEnd.getTime());
  for (const part of parts) {
    const plan = plans.get(planKey(part.phase.planId, part.phase.planVersion));
    const phaseNote = split ? `${part.phase.planId} v${part.phase.planVersion} in force from ${part.start.toISOString()} to ${part.end.toISOString()}` : "";
    for (const c of plan?.charges ?? []) {
      if (c.unit !== currency || (c.kind !== "flat" && c.kind !== "seats")) continue;
      const price = decimalNanos(c.amount, `charges.${c.chargeId}.amount`);
      if (price === undefined) continue;
      const label = `${c.name || c.chargeId} (${isoDay(p.start, timeZone)} to ${isoDay(p.end, timeZone)}, in advance)`;
      const partMs = BigInt(part.end.getTime() - part.start.getTime());
      if (c.kind === "flat") {
        if (partMs === fullMs || fullMs <= 0n) out.push(fee("flat", c, sub, label, "1", c.amount, price, p));
        else {
          const amount = reduce({ num: price.num * partMs, den: price.den * fullMs });
          const why = split
            ? `prorated for ${phaseNote}${partial ? " in a partial first period" : ""}${ends ? ` (${endNote})` : ""}: ${partMs} of ${fullMs} ms`
            : partial
              ? `prorated for a partial first period${ends ? ` and ${endNote}` : ""}: ${partMs} of ${fullMs} ms (full period from ${fullStart.toISOString()})`
              : `prorated ${endNote}: ${partMs} of ${fullMs} ms`;
          out.push(fee("flat", c, sub, `${label}, ${why}`, "1", c.amount, amount, p));
        }
      } else {
        const periodMs = fullMs;
        const sm = seatMillis(sub, part.start, part.end);
        if (sm === 0n || periodMs <= 0n) continue;
        const amount = reduce({ num: price.num * sm, den: price.den * periodMs });
        const whole = sm % periodMs === 0n;
        const qty = whole ? (sm / periodMs).toString() : String(seatsAt(sub, part.start));
        const notes: string[] = [];
        if (split) notes.push(`for ${phaseNote} (${partMs} of ${fullMs} ms)`);
        if (partial) notes.push(`for a partial first period (${BigInt(billedEnd.getTime() - p.start.getTime())} of ${fullMs} ms)`);
        if (ends) notes.push(`${endNote} (${BigInt(billedEnd.getTime() - p.start.getTime())} of ${fullMs} ms)`);
        if (!whole && (!split || sm !== BigInt(seatsAt(sub, part.start)) * partMs)) notes.push("on seat changes");
        const why = notes.length === 0 ? "" : `, prorated ${notes.join(" and ")}`;
        out.push(fee("seats", c, sub, `${label}${why}`, qty, c.amount, amount, p));
      }
    }
  }
  return out;
}

/** feeCharges: flat and seat fees of the periods covered in advance by the invoice of period n. */
export function feeCharges(spec: PeriodSpec, n: number, sub: SubscriptionInfo, plans: ReadonlyMap<string, PlanVersionInfo>, currency: string): ChargeInput[] {
  return coveredPeriods(spec, n, "advance").flatMap((p) => feesFor(p, sub, plans, currency, spec.timeZone, p.index === 0 ? nominalStart(spec, 0) : p.start));
}

/**
 * commitmentFees: the flat and seat fees covering period n itself (exact), as feesFor prices them
 * (the seat changes known now; period 0 prorated from its nominal start), wherever they are billed:
 * in advance on invoice n - 1 (trued up on invoice n), or on invoice 0 for period 0. With the
 * period's usage they are what its minimum commitment is compared with (rating RatePeriod's rule:
 * usage, flat and seat lines of the period).
 */
export function commitmentFees(spec: PeriodSpec, n: number, sub: SubscriptionInfo, plans: ReadonlyMap<string, PlanVersionInfo>, currency: string): ExactNanos {
  const p = coveredPeriods(spec, n, "arrears")[0]!;
  let sum: ExactNanos = { num: 0n, den: 1n };
  for (const f of feesFor(p, sub, plans, currency, spec.timeZone, p.index === 0 ? nominalStart(spec, 0) : p.start)) {
    sum = reduce({ num: sum.num * f.amount.den + f.amount.num * sum.den, den: sum.den * f.amount.den });
  }
  return sum;
}

/** feeChargeIds: the charges billed in advance (flat and seats) of the plans. */
export function feeChargeIds(plans: ReadonlyMap<string, PlanVersionInfo>): Set<string> {
  const ids = new Set<string>();
  for (const p of plans.values()) for (const c of p.charges) if (c.kind === "flat" || c.kind === "seats") ids.add(c.chargeId);
  return ids;
}

/**
 * feeTrueUps: fees of period p billed in advance, recomputed at its close with the seat
 * changes known now, minus what was billed for p (billed: charge -> exact nanos of its fee and
 * adjustment lines naming p). Seats added are charged, seats removed credited, prorated.
 * Differences under one nano (sub-nano proration already carried) are not lines.
 */
export function feeTrueUps(p: Period, sub: SubscriptionInfo, plans: ReadonlyMap<string, PlanVersionInfo>, currency: string, billed: ReadonlyMap<string, bigint>, timeZone: string): ChargeInput[] {
  // per charge: the sum of its parts (a migration inside p bills one part per phase)
  const expected = new Map<string, ChargeInput>();
  for (const f of feesFor(p, sub, plans, currency, timeZone)) {
    const prev = expected.get(f.chargeId);
    expected.set(f.chargeId, prev === undefined ? f : { ...prev, amount: reduce({ num: prev.amount.num * f.amount.den + f.amount.num * prev.amount.den, den: prev.amount.den * f.amount.den }) });
  }
  const ids = [...new Set([...expected.keys(), ...billed.keys()])].sort();
  const ends = sub.endedAt !== undefined && sub.endedAt.getTime() < p.end.getTime();
  const out: ChargeInput[] = [];
  for (const chargeId of ids) {
    const e = expected.get(chargeId)?.amount ?? { num: 0n, den: 1n };
    const b = billed.get(chargeId) ?? 0n;
    const diff = reduce({ num: e.num - b * e.den, den: e.den });
    if ((diff.num < 0n ? -diff.num : diff.num) < diff.den) continue;
    const name = expected.get(chargeId)?.description.replace(/ \(.*$/, "") ?? chargeId;
    out.push({
      kind: "adjustment",
      residueKey: chargeId,
      chargeId,
      subscriptionId: sub.subscriptionId,
      description: `${name}: ${diff.num > 0n ? "charge" : "credit"} for seat or fee changes${ends ? ` and the subscription's end at ${sub.endedAt!.toISOString()}` : ""} in ${isoDay(p.start, timeZone)} to ${isoDay(p.end, timeZone)} (billed in advance)`,
      quantity: "1",
      unitPrice: "",
      amount: diff,
      periodStart: p.start,
      periodEnd: p.end,
      expandable: false,
    });
  }
  return out;
}

function fee(kind: "flat" | "seats", c: ChargeInfo, sub: SubscriptionInfo, description: string, quantity: string, unitPrice: string, amount: ExactNanos, p: Period): ChargeInput {
  return {
    kind,
    residueKey: c.chargeId,
    chargeId: c.chargeId,
    subscriptionId: sub.subscriptionId,
    description,
    quantity,
    unitPrice,
    amount,
    periodStart: p.start,
    periodEnd: p.end,
    expandable: false,
  };
}

/** TopUpInfo: one wallet auto top-up (the wallet's auto_top_up alert and its grant's cost basis). */
export interface TopUpInfo {
  grantId: string;
  unit: string;
  amountNanos: bigint;
  at: Date;
  costBasis: string;
  costCurrency: string;
  /** unpriced: why the top-up has no price of its own (its grant is not listed by the wallet); not billed. */
  unpriced?: string;
}

/**
 * topUpCharges: one one-off line per auto top-up bought in the invoice currency: what the
 * customer pays for it is exactly amount (units of the wallet) x cost basis (currency per unit),
 * rounded like every line with its remainder carried (residue key "_top_up"); charge id = the
 * grant id (billed once, ever). Top-ups without a cost basis in the invoice currency are not
 * billed here (returned as skipped).
 */
export function topUpCharges(
  topUps: TopUpInfo[],
  currency: string,
  subscriptionId: string,
  p: { start: Date; end: Date },
  timeZone: string,
  periodOf: (at: Date) => { start: Date; end: Date } = () => p,
): { charges: ChargeInput[]; skipped: TopUpInfo[] } {
  const charges: ChargeInput[] = [];
  const skipped: TopUpInfo[] = [];
  const seen = new Set<string>();
  for (const t of [...topUps].sort((a, b) => a.at.getTime() - b.at.getTime() || (a.grantId < b.grantId ? -1 : 1))) {
    if (seen.has(t.grantId)) continue; // one line per grant, whatever the alert listing repeats
    seen.add(t.grantId);
    if (t.costBasis === "" || t.costCurrency !== currency || t.amountNanos <= 0n) {
      skipped.push(t);
      continue;
    }
    const quantity = formatDecimal(t.amountNanos, 9);
    // a top-up made before this period (not billed by its own period's invoice: recorded after
    // that close, or made before the subscription started) names the period it belongs to
    const late = t.at.getTime() < p.start.getTime();
    const own = late ? periodOf(t.at) : p;
    const note = !late ? "" : t.at.getTime() < own.start.getTime() ? ", made before the subscription started" : `, for ${isoDay(own.start, timeZone)} to ${isoDay(own.end, timeZone)} (not billed by that period's invoice)`;
    charges.push({
      kind: "one_off",
      residueKey: RESIDUE_KEY_TOP_UP,
      chargeId: t.grantId,
      subscriptionId,
      description: `Auto top-up of ${quantity} ${t.unit} on ${t.at.toISOString()} at ${t.costBasis} ${t.costCurrency} per unit (grant ${t.grantId})${note}`,
      quantity,
      unitPrice: t.costBasis,
      amount: priceTimesQuantity(t.costBasis, quantity),
      periodStart: own.start,
      periodEnd: own.end,
      expandable: false,
      topUpUnit: t.unit,
    });
  }
  return { charges, skipped };
}

/** CreditTypeInfo: a credit type's name and exchange rates (wallet GetCreditType). */
export interface CreditTypeInfo {
  name: string;
  rates: Array<{ rate: string; currency: string; effectiveAt: Date }>;
}

/**
 * creditsInUnits: for each credit type, the credits consumed for the period and their value at
 * the rate in force at the period end (the latest rate effective before it), credits x rate
 * rounded half-even to the nano. Credit types with nothing consumed are left out.
 */
export function creditsInUnits(consumed: Array<{ unit: string; creditsNanos: bigint }>, types: ReadonlyMap<string, CreditTypeInfo | undefined>, periodEnd: Date): CreditsInUnits[] {
  const out: CreditsInUnits[] = [];
  for (const c of [...consumed].sort((a, b) => (a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0))) {
    if (c.creditsNanos === 0n) continue;
    const t = types.get(c.unit);
    let rate: CreditTypeInfo["rates"][number] | undefined;
    for (const r of t?.rates ?? []) if (r.effectiveAt.getTime() < periodEnd.getTime() && (rate === undefined || r.effectiveAt.getTime() >= rate.effectiveAt.getTime())) rate = r;
    let valueNanos = 0n;
    if (rate !== undefined) {
      const v = priceTimesQuantity(rate.rate, formatDecimal(c.creditsNanos, 9));
      valueNanos = roundHalfEven(v.num, v.den);
    }
    out.push({ creditTypeId: c.unit, name: t?.name || c.unit, creditsNanos: c.creditsNanos, rate: rate?.rate ?? "", rateCurrency: rate?.currency ?? "", valueNanos });
  }
  return out;
}

export { CHARGE_ID_CAPTURED_HOLDS } from "./assemble.js";

/** A line on `_captured_holds` over the window (its own residue key, not expandable). */
function capturedLine(kind: "usage" | "adjustment", description: string, nanos: bigint, subscriptionId: string, window: { from: Date; to: Date }): ChargeInput {
  return {
    kind,
    residueKey: CHARGE_ID_CAPTURED_HOLDS,
    chargeId: CHARGE_ID_CAPTURED_HOLDS,
    subscriptionId,
    description,
    quantity: "1",
    unitPrice: "",
    amount: exact(nanos),
    periodStart: window.from,
    periodEnd: window.to,
    expandable: false,
  };
}

/**
 * capturedHoldsCharges: the prepaid money a wallet burned by captures of holds in the window (this
 * subscription's share), billed as one `usage` line of its own, "Captured holds", over the whole
 * window, rounded like every line with its remainder carried (residue key "_captured_holds"). A
 * capture is a burn of its own (no rated event bills it); its money is applied as credits like any
 * grant-funded burn, so a captured hold paid from prepaid money nets to 0 and one paid by the
 * overdraft is due. None when nothing was captured.
 */
export function capturedHoldsCharges(capturedNanos: bigint, subscriptionId: string, window: { from: Date; to: Date }): ChargeInput[] {
  if (capturedNanos === 0n) return [];
  return [capturedLine("usage", "Captured holds (burned from the wallet by Capture)", capturedNanos, subscriptionId, window)];
}

/**
 * lateCapturedAdjustment: holds captured for an earlier invoiced window since it was billed
 * (captured now - billed on `_captured_holds`), one `adjustment` line naming the period.
 */
export function lateCapturedAdjustment(capturedNow: bigint, billedNanos: bigint, subscriptionId: string, window: { from: Date; to: Date }, named: { start: Date; end: Date; timeZone: string }): ChargeInput[] {
  const diff = capturedNow - billedNanos;
  if (diff === 0n) return [];
  const description = `Captured holds: captured late for ${isoDay(named.start, named.timeZone)} to ${isoDay(named.end, named.timeZone)}`;
  return [capturedLine("adjustment", description, diff, subscriptionId, window)];
}

/**
 * overageCharges: postpaid overage of credit wallets (POSTPAID_OVERAGE): the credits a wallet
 * could not cover in the window (its shortfall), billed at the wallet's overage rate (currency per
 * credit): one `overage` line per credit type, amount = shortfall x rate exactly, rounded like
 * every line with its remainder carried (residue key "_overage:<unit>"). A shortfall without
 * overage terms in the invoice currency is not billed (returned as skipped).
 */
export function overageCharges(
  shortfalls: Array<{ unit: string; name: string; shortfallNanos: bigint; terms: { rate: string; currency: string } | undefined }>,
  currency: string,
  subscriptionId: string,
  window: { from: Date; to: Date },
): { charges: ChargeInput[]; skipped: Array<{ unit: string; shortfallNanos: bigint }> } {
  const charges: ChargeInput[] = [];
  const skipped: Array<{ unit: string; shortfallNanos: bigint }> = [];
  for (const s of [...shortfalls].sort((a, b) => (a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0))) {
    if (s.shortfallNanos <= 0n) continue;
    if (s.terms === undefined || s.terms.currency !== currency) {
      skipped.push({ unit: s.unit, shortfallNanos: s.shortfallNanos });
      continue;
    }
    const quantity = formatDecimal(s.shortfallNanos, 9);
    charges.push({
      kind: "overage",
      residueKey: `_overage:${s.unit}`,
      chargeId: `_overage:${s.unit}`,
      subscriptionId,
      description: `Postpaid overage: ${quantity} ${s.unit} credits of ${s.name} not covered by the wallet, at ${s.terms.rate} ${s.terms.currency} per credit`,
      quantity,
      unitPrice: s.terms.rate,
      amount: priceTimesQuantity(s.terms.rate, quantity),
      periodStart: window.from,
      periodEnd: window.to,
      expandable: false,
    });
  }
  return { charges, skipped };
}

/** roundHalfEven: num / den rounded to an integer, ties to even. */
export function roundHalfEven(num: bigint, den: bigint): bigint {
  if (den < 0n) [num, den] = [-num, -den];
  let q = num / den;
  let r = num % den;
  if (r < 0n) {
    q -= 1n;
    r += den;
  }
  const twice = 2n * r;
  if (twice > den || (twice === den && q % 2n !== 0n)) q += 1n;
  return q;
}

/** usageCharges: one usage line per charge of the subscription priced in the invoice currency. */
export function usageCharges(
  totals: UsageTotal[],
  sub: SubscriptionInfo | undefined,
  owners: ReadonlyMap<string, string>,
  subs: SubscriptionInfo[],
  names: ReadonlyMap<string, string>,
  currency: string,
  window: { from: Date; to: Date },
): ChargeInput[] {
  const byCharge = new Map<string, UsageTotal>();
  for (const t of totals) {
    if (t.unit !== currency || t.chargeId === "") continue;
    if (sub !== undefined && ownerOf(t.chargeId, owners, subs) !== sub.subscriptionId) continue;
    const prev = byCharge.get(t.chargeId);
    byCharge.set(t.chargeId, prev === undefined ? { ...t } : { ...prev, quantity: prev.quantity + t.quantity, priceNanos: prev.priceNanos + t.priceNanos });
  }
  return [...byCharge.values()]
    .sort((a, b) => (a.chargeId < b.chargeId ? -1 : a.chargeId > b.chargeId ? 1 : 0))
    .map((t) => ({
      kind: "usage" as const,
      residueKey: t.chargeId,
      chargeId: t.chargeId,
      subscriptionId: sub?.subscriptionId ?? ownerOf(t.chargeId, owners, subs),
      description:
        t.settlement === undefined
          ? `${names.get(t.chargeId) ?? t.chargeId}: usage`
          : `${names.get(t.chargeId) ?? t.chargeId}: usage priced on the period total` +
            (t.settlement.settlementNanos === 0n ? "" : ` (per-event provisional prices ${t.settlement.provisionalNanos} nanos, settled at close ${t.settlement.settlementNanos > 0n ? "+" : ""}${t.settlement.settlementNanos} nanos)`),
      quantity: t.quantity.toString(),
      unitPrice: "",
      amount: exact(t.priceNanos),
      periodStart: window.from,
      periodEnd: window.to,
      expandable: true,
    }));
}

/** periodPricedIds: the usage charges of the subscription's plans priced on the period total. */
export function periodPricedIds(sub: SubscriptionInfo, plans: ReadonlyMap<string, PlanVersionInfo>): Set<string> {
  const ids = new Set<string>();
  for (const ph of sub.phases) for (const c of plans.get(planKey(ph.planId, ph.planVersion))?.charges ?? []) if (c.kind === "usage" && c.periodPriced === true) ids.add(c.chargeId);
  return ids;
}

/**
 * sameBillingPeriod: rating's billing period is the invoice period p: same end, and the same
 * start (period 0 may start later, at the subscription start, inside rating's period).
 */
export function sameBillingPeriod(r: { periodStart: Date; periodEnd: Date }, p: { start: Date; end: Date; index: number }): boolean {
  if (r.periodEnd.getTime() !== p.end.getTime()) return false;
  return r.periodStart.getTime() === p.start.getTime() || (p.index === 0 && r.periodStart.getTime() < p.start.getTime());
}

/**
 * withPeriodPricing: the usage totals of period p with every charge priced on the period total
 * taken from rating's RatePeriod instead of the sum of its hour buckets:
 *
 *     line = rated + (amount - booked)
 *
 * amount = round_half_even(F(period quantity)) (exact, whatever order the events came in), booked
 * = the sum of the per-event provisional steps, rated = what the events were rated at after the
 * real-time spending cap (= booked when no cap cut them). Without a cap the line is exactly F(total).
 * Such a charge is billed by rating's billing period (exact event time), not by the hour window:
 * its bucket totals are dropped. The same holds for every period of a charge that the
 * subscription's plans (planIds: any phase) price on the period total, also where rating prices it
 * per event in p (a price override, a migration to a per-unit version; its line is not
 * periodPriced, amount = booked = the sum of its events' prices by exact event time): so a charge
 * tiered in one period and per unit in the next is billed over rating's exact periods in both, and
 * the steps of a boundary hour off the hour are billed once, by the period they belong to (the
 * hour window would give the next period the whole boundary hour). A charge of planIds without
 * any rating line for p has no usage in rating's period, so its window buckets (a neighbouring
 * period's steps) are dropped. Charges no plan prices on the period total keep their bucket sums.
 * When rating's period is not p (other interval or anchor settings), or rating could not be asked
 * (r undefined), the bucket sums stand (rating's per-event steps, which sum to F of rating's own
 * period totals).
 */
export function withPeriodPricing(totals: UsageTotal[], r: RatedPeriodInfo | undefined, p: { start: Date; end: Date; index: number }, planIds: ReadonlySet<string>): UsageTotal[] {
  if (r === undefined || !sameBillingPeriod(r, p)) return totals;
  const fromRating = r.lines.filter((l) => l.periodPriced || planIds.has(l.chargeId));
  const ids = new Set([...planIds, ...fromRating.map((l) => l.chargeId)]);
  const out = totals.filter((t) => !ids.has(t.chargeId));
  for (const l of fromRating) {
    const settlementNanos = l.amountNanos - l.bookedNanos;
    const line: UsageTotal = { chargeId: l.chargeId, unit: l.unit, quantity: l.quantity, priceNanos: l.ratedNanos + settlementNanos };
    // per-event pricing in p: its events' prices, nothing to settle (described as plain usage)
    out.push(l.periodPriced ? { ...line, settlement: { provisionalNanos: l.ratedNanos, settlementNanos } } : line);
  }
  return out;
}

/**
 * commitmentUsage: the usage of period p that counts towards one subscription's minimum commitment,
 * from rating's RatePeriod (rating's rule: the period's own usage, by exact event time): the sum of
 * the usage lines naming the subscription, in the invoice currency, each at what it is billed for
 * the period after the real-time cap, rated + (amount - booked) (as withPeriodPricing bills it).
 * The usage lines of a per-unit charge stay billed by hour bucket, so with a boundary off the hour
 * the boundary hour's usage before the boundary is billed on the next invoice but counts here, for
 * its own period (and not towards the next period's commitment). Undefined when rating was not
 * asked or does not implement RatePeriod, or its billing period is not p (sameBillingPeriod): the
 * invoice's usage lines count then.
 */
export function commitmentUsage(r: RatedPeriodInfo | undefined, p: { start: Date; end: Date; index: number }, subscriptionId: string, currency: string): bigint | undefined {
  if (r === undefined || !sameBillingPeriod(r, p)) return undefined;
  let sum = 0n;
  for (const l of r.lines) if (l.subscriptionId === subscriptionId && l.unit === currency) sum += l.ratedNanos + (l.amountNanos - l.bookedNanos);
  return sum;
}

/**
 * versionAtEnd: the plan version in force at the end of period p, by rating's rule (RatePeriod's
 * `lastVersion`): of the phases overlapping p within the subscription's life (and whose plan
 * version is known), the one starting last. Undefined when none overlaps.
 */
function versionAtEnd(sub: SubscriptionInfo, p: { start: Date; end: Date }, plans: ReadonlyMap<string, PlanVersionInfo>): PlanVersionInfo | undefined {
  const lo = Math.max(p.start.getTime(), sub.startedAt.getTime());
  const hi = Math.min(p.end.getTime(), sub.endedAt?.getTime() ?? Infinity);
  let found: PlanVersionInfo | undefined;
  let foundStart = -Infinity;
  for (const ph of sub.phases) {
    const a = Math.max(ph.start.getTime(), lo);
    const b = Math.min(ph.end?.getTime() ?? Infinity, hi);
    const plan = plans.get(planKey(ph.planId, ph.planVersion));
    if (a >= b || plan === undefined) continue;
    if (a >= foundStart) {
      found = plan;
      foundStart = a;
    }
  }
  return found;
}

/**
 * minimumCommitmentNanos: the commitment for period n (0 when none): the minimum of the plan
 * version in force at the period's end (versionAtEnd, the rule of rating's RatePeriod), so a
 * migration inside the period takes the new version's commitment for the whole period.
 */
export function minimumCommitmentNanos(spec: PeriodSpec, n: number, sub: SubscriptionInfo, plans: ReadonlyMap<string, PlanVersionInfo>): bigint {
  const p = coveredPeriods(spec, n, "arrears")[0]!;
  const plan = versionAtEnd(sub, p, plans);
  const m = plan === undefined ? undefined : decimalNanos(plan.minimumCommitment, "minimum_commitment_amount");
  if (m === undefined) return 0n;
  if (m.den !== 1n) throw new InvalidInput("minimum_commitment_amount", `must have at most 9 fraction digits, got ${plan!.minimumCommitment}`);
  return m.num;
}

/**
 * lateUsageAdjustments: usage rated for an earlier, already invoiced period after its invoice
 * was made (late events), as adjustment lines naming that period. invoiced maps charge id ->
 * exact nanos already billed for the period (its usage line plus earlier adjustments). The lines
 * cover `window` (the period's hour buckets); their description names the period (`named`: the
 * period cut to the subscription's life) by its local dates in the customer's time zone.
 */
export function lateUsageAdjustments(
  ratedNow: UsageTotal[],
  invoiced: ReadonlyMap<string, bigint>,
  sub: SubscriptionInfo,
  owners: ReadonlyMap<string, string>,
  subs: SubscriptionInfo[],
  names: ReadonlyMap<string, string>,
  currency: string,
  window: { from: Date; to: Date },
  named: { start: Date; end: Date; timeZone: string },
  feeIds: ReadonlySet<string> = new Set(),
): ChargeInput[] {
  const rated = new Map<string, bigint>();
  for (const t of ratedNow) {
    if (t.unit !== currency || t.chargeId === "" || ownerOf(t.chargeId, owners, subs) !== sub.subscriptionId) continue;
    rated.set(t.chargeId, (rated.get(t.chargeId) ?? 0n) + t.priceNanos);
  }
  const ids = [...new Set([...rated.keys(), ...invoiced.keys()])].filter((id) => !feeIds.has(id)).sort();
  const out: ChargeInput[] = [];
  for (const chargeId of ids) {
    const diff = (rated.get(chargeId) ?? 0n) - (invoiced.get(chargeId) ?? 0n);
    if (diff === 0n) continue;
    out.push({
      kind: "adjustment",
      residueKey: chargeId,
      chargeId,
      subscriptionId: sub.subscriptionId,
      description: `${names.get(chargeId) ?? chargeId}: usage rated late for ${isoDay(named.start, named.timeZone)} to ${isoDay(named.end, named.timeZone)}`,
      quantity: "1",
      unitPrice: "",
      amount: exact(diff),
      periodStart: window.from,
      periodEnd: window.to,
      expandable: false,
    });
  }
  return out;
}
