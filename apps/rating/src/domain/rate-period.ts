import { INT64_MAX, INT64_MIN } from "@nanobill/money";
import type { CompiledCharge, CompiledVersion } from "./compile.js";
import { failedPrecondition } from "./errors.js";
import type { Period } from "./period.js";
import { allocateCumulative, prorate } from "./period.js";
import { addExact, periodTotal, rateExact, roundHalfEven, subExact, ZERO, type Exact } from "./pricing.js";
import { capParts, cappedIncrease, type TenantCatalog } from "./rate-event.js";
import type { Customer, Subscription } from "./types.js";

export type PeriodLineKind = "usage" | "flat" | "seats" | "minimum_true_up" | "cap_adjustment";

export interface PeriodLine {
  kind: PeriodLineKind;
  chargeId: string;
  description: string;
  quantity: bigint;
  amountNanos: bigint;
  unit: string;
  costNanos: bigint;
  bookedNanos: bigint;
  startMs: number;
  endMs: number;
  /** periodPriced: a usage line of a charge priced on the period total (amount = F(quantity)). */
  periodPriced: boolean;
  /** ratedNanos: usage lines: what the line's events were rated at after the real-time cap (= booked unless cut). */
  ratedNanos: bigint;
  /** subscriptionId: the subscription the line belongs to (usageOwners for usage lines). */
  subscriptionId: string;
}

export interface PeriodUsageTotal {
  chargeId: string;
  unit: string;
  quantity: bigint;
  bookedNanos: bigint;
  costNanos: bigint;
  /** ratedNanos: the events' prices after the real-time spending cap (undefined: bookedNanos). */
  ratedNanos?: bigint;
}

export interface RatedPeriod {
  period: Period;
  lines: PeriodLine[];
  totalNanos: bigint; // currency lines only
  currency: string;
}

const DAY_MS = 86_400_000;

function fmtDays(ms: number): string {
  const d = ms / DAY_MS;
  return Number.isInteger(d) ? String(d) : d.toFixed(3);
}

/** Each subscription phase's overlap [a, b) with the period, with its plan version (phases without one, or no overlap, skipped). */
function* phaseSpans(cat: TenantCatalog, subs: Subscription[], period: Period) {
  for (const s of subs) {
    for (const ph of s.phases) {
      const a = Math.max(ph.startMs, period.startMs, s.startMs);
      const b = Math.min(ph.endMs ?? Infinity, period.endMs, s.endMs ?? Infinity);
      if (a >= b) continue;
      const v = cat.version(ph.planId, ph.planVersion);
      if (v === undefined) continue;
      yield { s, ph, planId: ph.planId, v, a, b };
    }
  }
}

/** A usage charge over one part of the period: the charge in force there (plan version, override). */
export interface UsagePiece {
  charge: CompiledCharge;
  startMs: number;
  endMs: number;
  /** The billing interval of the piece's plan version (its events' period totals follow it). */
  intervalMonths: number;
}

/**
 * usagePieces: per usage charge id, the parts of the period its subscriptions' phases give it, in
 * time order, each with the charge in force (the phase's plan version; split where the customer's
 * overrides of the charge start or end, each part with the one in force over it).
 */
export function usagePieces(cat: TenantCatalog, customer: Customer, subs: Subscription[], period: Period): Map<string, UsagePiece[]> {
  const out = new Map<string, UsagePiece[]>();
  for (const { planId, v, a, b } of phaseSpans(cat, subs, period)) {
    for (const c0 of v.charges) {
      if (c0.mode === "recurring") continue;
      const l = out.get(c0.chargeId) ?? [];
      for (const x of overridePieces(cat, customer, planId, v, c0, a, b)) l.push({ ...x, intervalMonths: v.spec.intervalMonths });
      out.set(c0.chargeId, l);
    }
  }
  for (const l of out.values()) l.sort((x, y) => x.startMs - y.startMs);
  return out;
}

/**
 * segmentedPieces: the pieces of a period-priced usage charge to price piece by piece — its usage
 * crosses a plan migration (or an override change), the pieces do not overlap, share one billing
 * interval, and every piece is period priced in the same unit; null otherwise (the charge is then priced as a whole under the pricing in force at the end).
 */
export function segmentedPieces(pieces: UsagePiece[] | undefined, unit: string): UsagePiece[] | null {
  if (pieces === undefined || pieces.length < 2) return null;
  // Pieces that overlap (two subscriptions billing the same charge at once) leave no single
  // version in force to price a unit by: whole-period rule. So does a migration that changes the
  // billing interval: the other interval's events went into its own period's totals, not this
  // period's (rated_events, where the running quantity is read, has them all).
  const disjoint = pieces.every((x, i) => i === 0 || pieces[i - 1]!.endMs <= x.startMs);
  const oneInterval = pieces.every((x) => x.intervalMonths === pieces[0]!.intervalMonths);
  return disjoint && oneInterval && pieces.every((x) => x.charge.mode === "period" && x.charge.unit === unit) ? pieces : null;
}

/**
 * usageBoundaries: the (charge, time) pairs whose running period quantity ratePeriod needs: the
 * start of every piece but the first of each segmented charge.
 */
export function usageBoundaries(cat: TenantCatalog, customer: Customer, subs: Subscription[], period: Period, totals: PeriodUsageTotal[]): Array<{ chargeId: string; atMs: number }> {
  const pieces = usagePieces(cat, customer, subs, period);
  const out: Array<{ chargeId: string; atMs: number }> = [];
  for (const t of totals) {
    const seg = segmentedPieces(pieces.get(t.chargeId), t.unit);
    if (seg !== null) for (const x of seg.slice(1)) out.push({ chargeId: t.chargeId, atMs: x.startMs });
  }
  return out;
}

/**
 * segmentedTotal: a period quantity priced piece by piece, each unit by the pricing in force when
 * it was used, at its place in the period's running total: sum over pieces of F_i(Q_i) - F_i(Q_i-1)
 * (Q_i = the running quantity at the end of piece i; the last is the period total). Exact; the
 * caller rounds once.
 */
export function segmentedTotal(pieces: UsagePiece[], quantityBefore: (atMs: number) => bigint, total: bigint): Exact {
  let sum: Exact = ZERO;
  let prev = 0n;
  for (let i = 0; i < pieces.length; i++) {
    let q = i + 1 < pieces.length ? quantityBefore(pieces[i + 1]!.startMs) : total;
    // The running quantity never goes back and never passes the period total (the cumulative
    // reads and the period total are two reads of the same rows).
    if (q < prev) q = prev;
    if (q > total) q = total;
    if (q > prev) sum = addExact(sum, subExact(periodTotal(pieces[i]!.charge, q), periodTotal(pieces[i]!.charge, prev)));
    prev = q;
  }
  return sum;
}

/**
 * usageOwners: usage charge id -> the subscription its usage line belongs to in `period`: of the
 * subscriptions alive in the period (all of them when none is), the first (catalog order: start
 * time, then id) whose plan has the charge in a phase in force in the period (else in any phase;
 * the rule invoicing bills usage by,
 * chargeOwners); a charge no plan has belongs to the first of them. Period totals are kept per
 * charge, not per subscription; CreateSubscription/MigrateSubscription refuse two subscriptions
 * sharing a charge id in one billing period (domain/shared-charges.ts), so in a period at most one
 * alive subscription has a shared charge: a successor starting at a period boundary owns its usage
 * from then on (before, the first subscription that ever had the charge kept it, even ended).
 */
export function usageOwners(cat: TenantCatalog, subs: Subscription[], period: Period): { ownerOf(chargeId: string): string } {
  const alive = subs.filter((s) => s.startMs < period.endMs && (s.endMs === null || s.endMs > period.startMs));
  if (alive.length > 0) subs = alive;
  const owners = new Map<string, string>();
  // The phases in force in the period first (a subscription that takes a charge on by a migration
  // after the period does not own it in the period), then any phase (a charge none has in force).
  for (const inForce of [true, false]) {
    for (const s of subs) {
      for (const ph of s.phases) {
        if (inForce && !(ph.startMs < period.endMs && (ph.endMs === null || ph.endMs > period.startMs))) continue;
        for (const c of cat.version(ph.planId, ph.planVersion)?.charges ?? []) if (!owners.has(c.chargeId)) owners.set(c.chargeId, s.subscriptionId);
      }
    }
  }
  return { ownerOf: (chargeId) => owners.get(chargeId) ?? subs[0]?.subscriptionId ?? "" };
}

/**
 * ratePeriod: a customer's billing period priced exactly (invoicing calls it through RatePeriod):
 *  - usage charges: period-mode charges at round_half_even(F(period quantity)) whatever order the
 *    events came in (across a plan migration, given quantityBefore: each unit by the version in
 *    force when it was used, segmentedTotal, rounded once); event-mode charges at the sum booked per
 *    event (carry-exact);
 *  - flat fees and seats: one line per phase overlap, override part and seat segment, each
 *    prorated exactly by the millisecond; the lines of one fee (subscription, charge) are rounded
 *    together, cumulative half-even (allocateCumulative): they sum to the fee's exact prorated
 *    total over the covered time rounded half-even once, and a whole period at one price is the
 *    un-split fee;
 *  - spending cap: a term of a plan version, so per subscription, applied to that subscription's
 *    own usage lines (usageOwners) part by part as real-time rating does (capParts): each phase
 *    part under its own version's cap (or none), the running total U carried across parts — U at
 *    the end of each part but the last from rating's per-part running totals (`capUsage`, the
 *    uncapped usage the subscription rated there), at the end of the last part its usage lines'
 *    sum X; the capped sum is sum_i min(cap_i, U_i) - min(cap_i, U_i-1) (U_i - U_i-1 without a
 *    cap), and a cap adjustment line (capped - X) when it is below X. Without a migration: min(cap, X) - X;
 *  - minimum commitment: from the version in force at the period's end (of the subscription's
 *    phases overlapping the period, the one starting last), applied to that subscription's own
 *    lines (usage, flat and seat fees, cap adjustment): a true-up line when they sum below it.
 */
export function ratePeriod(
  cat: TenantCatalog,
  customer: Customer,
  subs: Subscription[],
  period: Period,
  totals: PeriodUsageTotal[],
  /** The running period quantity of a charge before atMs, for the pairs usageBoundaries names. */
  quantityBefore?: (chargeId: string, atMs: number) => bigint,
  /** The uncapped usage a subscription rated in one part of the period, by the part's key (CapPart.key); absent: 0. */
  capUsage?: (key: string) => bigint,
): RatedPeriod {
  const lines: PeriodLine[] = [];
  const periodMs = period.endMs - period.startMs;
  // per subscription: the version in force at the period's end (its phase starting last)
  const lastVersion = new Map<string, { v: CompiledVersion; startMs: number }>();
  const chargeSpecs = new Map<string, CompiledCharge>();
  const chargeEnds = new Map<string, number>();
  // flat and seat pieces per fee (subscription, charge, kind, unit), booked by allocateCumulative
  const fees = new Map<string, Array<{ line: PeriodLine; exact: Exact; what: string }>>();
  const feePiece = (line: PeriodLine, exact: Exact, what: string): void => {
    const key = [line.subscriptionId, line.chargeId, line.kind, line.unit].join("\u0000");
    const group = fees.get(key) ?? [];
    group.push({ line, exact, what });
    fees.set(key, group);
  };

  for (const { s, ph, v, a, b } of phaseSpans(cat, subs, period)) {
    if (a >= (lastVersion.get(s.subscriptionId)?.startMs ?? -Infinity)) lastVersion.set(s.subscriptionId, { v, startMs: a });
    for (const c0 of v.charges) {
      // An override in force over part of [a, b) prices only that part: split the overlap at
      // the boundaries of the customer's overrides of this charge and price each piece with the
      // charge in force over it (prorated exactly per piece, like phases; the fee's pieces are
      // rounded together below, allocateCumulative).
      // Usage charges are priced on the period totals below, with the charge in force at b - 1.
      const pieces = c0.mode === "recurring" ? overridePieces(cat, customer, ph.planId, v, c0, a, b) : [{ charge: overrideAt(cat, customer, ph.planId, v, c0, b - 1), startMs: a, endMs: b }];
      // The charge in force at b - 1; of two subscriptions billing the same charge id up to the
      // same time, the first (by start time, then id) keeps it, as rating an event picks it.
      const prevEnd = chargeEnds.get(c0.chargeId);
      if (prevEnd === undefined || b > prevEnd) {
        chargeSpecs.set(c0.chargeId, pieces[pieces.length - 1]!.charge);
        chargeEnds.set(c0.chargeId, b);
      }
      for (const { charge: c, startMs: x, endMs: y } of pieces) {
        const p = c.pricing;
        if (p.kind === "flat") {
          const line: PeriodLine = { kind: "flat", chargeId: c.chargeId, description: `${c.spec.name || c.chargeId}: ${fmtDays(y - x)} of ${fmtDays(periodMs)} days`, quantity: 1n, amountNanos: 0n, unit: c.unit, costNanos: 0n, bookedNanos: 0n, startMs: x, endMs: y, periodPriced: false, ratedNanos: 0n, subscriptionId: s.subscriptionId };
          lines.push(line);
          feePiece(line, prorate(rateExact(p.amount), y - x, periodMs), "");
        } else if (p.kind === "seats") {
          for (const seg of seatSegments(s, x, y)) {
            if (seg.seats === 0) continue;
            const line: PeriodLine = { kind: "seats", chargeId: c.chargeId, description: `${seg.seats} seats x ${fmtDays(seg.endMs - seg.startMs)} of ${fmtDays(periodMs)} days`, quantity: BigInt(seg.seats), amountNanos: 0n, unit: c.unit, costNanos: 0n, bookedNanos: 0n, startMs: seg.startMs, endMs: seg.endMs, periodPriced: false, ratedNanos: 0n, subscriptionId: s.subscriptionId };
            lines.push(line);
            feePiece(line, prorate({ num: p.perSeat.num * BigInt(seg.seats), den: p.perSeat.den }, seg.endMs - seg.startMs, periodMs), `${seg.seats} seats`);
          }
        }
      }
    }
  }
  // Each fee's pieces (its phase parts, override parts and seat segments) booked together:
  // they sum to the fee prorated over the whole covered time, rounded half-even once.
  for (const group of fees.values()) {
    group.sort((x, y) => x.line.startMs - y.line.startMs);
    const amounts = allocateCumulative(group.map((x) => x.exact));
    group.forEach((x, i) => {
      x.line.amountNanos = checkedLine(amounts[i]!, x.line.kind, x.line.chargeId, x.what);
    });
  }

  const pieces = quantityBefore === undefined ? undefined : usagePieces(cat, customer, subs, period);
  const owners = usageOwners(cat, subs, period);
  for (const t of totals) {
    const c = chargeSpecs.get(t.chargeId);
    const periodPriced = c !== undefined && c.mode === "period";
    // Usage across a plan migration: each part priced by its own version (segmentedTotal).
    const seg = periodPriced && pieces !== undefined ? segmentedPieces(pieces.get(t.chargeId), t.unit) : null;
    const exact = !periodPriced ? null : seg !== null ? segmentedTotal(seg, (at) => quantityBefore!(t.chargeId, at), t.quantity) : periodTotal(c, t.quantity);
    const amount = exact !== null ? checkedLine(roundHalfEven(exact), "usage", t.chargeId, `quantity ${t.quantity}`) : t.bookedNanos;
    lines.push({ kind: "usage", chargeId: t.chargeId, description: c?.spec.name || t.chargeId, quantity: t.quantity, amountNanos: amount, unit: t.unit, costNanos: t.costNanos, bookedNanos: t.bookedNanos, startMs: period.startMs, endMs: period.endMs, periodPriced, ratedNanos: t.ratedNanos ?? t.bookedNanos, subscriptionId: owners.ownerOf(t.chargeId) });
  }

  const cur = customer.currency;
  const sum = (kinds: PeriodLineKind[], subscriptionId?: string): bigint =>
    lines.reduce((s, l) => (l.unit === cur && kinds.includes(l.kind) && (subscriptionId === undefined || l.subscriptionId === subscriptionId) ? checkedSum(s + l.amountNanos, kinds) : s), 0n);
  // Each subscription's cap and commitment (catalog order), on its own lines only.
  for (const s of subs) {
    const last = lastVersion.get(s.subscriptionId);
    if (last === undefined) continue;
    const { v } = last;
    const own = { subscriptionId: s.subscriptionId, chargeId: "", quantity: 0n, unit: cur, costNanos: 0n, bookedNanos: 0n, startMs: period.startMs, endMs: period.endMs, periodPriced: false, ratedNanos: 0n };
    // The cap part by part (capParts), as rating applied it to each event: each part under its own
    // version's cap, the running total carried across parts.
    const parts = capParts(s, period).map((p) => {
      const c = cat.version(p.planId, p.planVersion)?.cap ?? null;
      return { key: p.key, cap: c === null ? null : roundHalfEven(rateExact(c)) };
    });
    const caps = [...new Set(parts.flatMap((p) => (p.cap !== null && p.cap > 0n ? [p.cap] : [])))];
    if (caps.length > 0) {
      const usage = sum(["usage"], s.subscriptionId);
      let capped = 0n;
      let u = 0n;
      parts.forEach((p, i) => {
        const next = i + 1 < parts.length ? u + (capUsage?.(p.key) ?? 0n) : usage;
        capped += cappedIncrease(p.cap, u, next);
        u = next;
      });
      const adj = checkedLine(capped - usage, "cap_adjustment", "");
      if (adj < 0n) lines.push({ ...own, kind: "cap_adjustment", description: `spending cap ${caps.join(" / ")} nanos`, amountNanos: adj });
    }
    if (v.minimum !== null) {
      const min = roundHalfEven(rateExact(v.minimum));
      const all = sum(["usage", "flat", "seats", "cap_adjustment"], s.subscriptionId);
      if (min > 0n && all < min) lines.push({ ...own, kind: "minimum_true_up", description: `minimum commitment ${min} nanos`, amountNanos: min - all });
    }
  }
  return { period, lines, totalNanos: sum(["usage", "flat", "seats", "cap_adjustment", "minimum_true_up"]), currency: cur };
}

/** overrideAt: the charge in force at atMs: the customer's override of it then, else the charge itself. */
function overrideAt(cat: TenantCatalog, customer: Customer, planId: string, v: CompiledVersion, c: CompiledCharge, atMs: number): CompiledCharge {
  const o = cat.overrides(customer.customerId).find((x) => x.chargeId === c.chargeId && x.startMs <= atMs && (x.endMs === null || atMs < x.endMs));
  return o === undefined ? c : cat.compiledOverride(o, planId, v, c);
}

/**
 * overridePieces: [a, b) split at every start and end of the customer's overrides of charge c
 * inside it, each piece with the charge in force over it (override or plan charge).
 */
export function overridePieces(cat: TenantCatalog, customer: Customer, planId: string, v: CompiledVersion, c: CompiledCharge, a: number, b: number): Array<{ charge: CompiledCharge; startMs: number; endMs: number }> {
  const cuts = new Set<number>();
  for (const o of cat.overrides(customer.customerId)) {
    if (o.chargeId !== c.chargeId) continue;
    if (o.startMs > a && o.startMs < b) cuts.add(o.startMs);
    if (o.endMs !== null && o.endMs > a && o.endMs < b) cuts.add(o.endMs);
  }
  const bounds = [a, ...[...cuts].sort((x, y) => x - y), b];
  const out: Array<{ charge: CompiledCharge; startMs: number; endMs: number }> = [];
  for (let i = 0; i + 1 < bounds.length; i++) out.push({ charge: overrideAt(cat, customer, planId, v, c, bounds[i]!), startMs: bounds[i]!, endMs: bounds[i + 1]! });
  return out;
}

/** checkedLine: a line amount must fit in int64 nanos (the API's int64), else FailedPrecondition naming the charge. */
function checkedLine(v: bigint, kind: PeriodLineKind, chargeId: string, what = ""): bigint {
  if (v > INT64_MAX || v < INT64_MIN) {
    throw failedPrecondition(`charges.${chargeId}`, `the ${kind} line${what === "" ? "" : ` (${what})`} amounts to ${v} nanos, beyond int64 nanos (${INT64_MAX}); the period cannot be priced`);
  }
  return v;
}

/** checkedSum: a running sum of period lines must fit in int64 nanos, else FailedPrecondition. */
function checkedSum(v: bigint, kinds: PeriodLineKind[]): bigint {
  if (v > INT64_MAX || v < INT64_MIN) {
    throw failedPrecondition("total_nanos", `the sum of the period's ${kinds.join(", ")} lines overflows int64 nanos (${INT64_MAX}); the period cannot be priced`);
  }
  return v;
}

/** seatSegments: the seat count in force over [a, b), split at each change. */
export function seatSegments(s: Subscription, a: number, b: number): Array<{ seats: number; startMs: number; endMs: number }> {
  const changes = [...s.seatChanges].sort((x, y) => x.effectiveMs - y.effectiveMs);
  const out: Array<{ seats: number; startMs: number; endMs: number }> = [];
  let seats = 0;
  for (const ch of changes) if (ch.effectiveMs <= a) seats = ch.seats;
  let t = a;
  for (const ch of changes) {
    if (ch.effectiveMs <= a) continue;
    if (ch.effectiveMs >= b) break;
    out.push({ seats, startMs: t, endMs: ch.effectiveMs });
    seats = ch.seats;
    t = ch.effectiveMs;
  }
  out.push({ seats, startMs: t, endMs: b });
  return out.filter((x) => x.endMs > x.startMs);
}
