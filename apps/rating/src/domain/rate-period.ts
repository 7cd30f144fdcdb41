import type { CompiledCharge, CompiledVersion } from "./compile.js";
import type { Period } from "./period.js";
import { prorate } from "./period.js";
import { periodTotal, rateExact, roundHalfEven } from "./pricing.js";
import type { TenantCatalog } from "./rate-event.js";
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

/**
 * ratePeriod: a customer's billing period priced exactly (invoicing calls it through RatePeriod):
 *  - usage charges: period-mode charges at round_half_even(F(period quantity)) whatever order the
 *    events came in; event-mode charges at the sum booked per event (carry-exact);
 *  - flat fees and seats: per phase overlap and per seat segment, prorated by the second, each
 *    rounded half-even once;
 *  - minimum commitment: a true-up line when the currency lines sum below it;
 *  - spending cap: a negative adjustment when usage lines sum above it.
 */
export function ratePeriod(cat: TenantCatalog, customer: Customer, subs: Subscription[], period: Period, totals: PeriodUsageTotal[]): RatedPeriod {
  const lines: PeriodLine[] = [];
  const periodMs = period.endMs - period.startMs;
  let lastVersion: { planId: string; v: CompiledVersion } | null = null;
  let lastStart = -Infinity;
  const chargeSpecs = new Map<string, CompiledCharge>();

  for (const s of subs) {
    for (const ph of s.phases) {
      const a = Math.max(ph.startMs, period.startMs, s.startMs);
      const b = Math.min(ph.endMs ?? Infinity, period.endMs, s.endMs ?? Infinity);
      if (a >= b) continue;
      const v = cat.version(ph.planId, ph.planVersion);
      if (v === undefined) continue;
      if (a >= lastStart) {
        lastStart = a;
        lastVersion = { planId: ph.planId, v };
      }
      for (const c0 of v.charges) {
        const c = applyOverride(cat, customer, ph.planId, v, c0, b - 1);
        chargeSpecs.set(c.chargeId, c);
        const p = c.pricing;
        if (p.kind === "flat") {
          const amt = roundHalfEven(prorate(rateExact(p.amount), b - a, periodMs));
          lines.push({ kind: "flat", chargeId: c.chargeId, description: `${c.spec.name || c.chargeId}: ${fmtDays(b - a)} of ${fmtDays(periodMs)} days`, quantity: 1n, amountNanos: amt, unit: c.unit, costNanos: 0n, bookedNanos: 0n, startMs: a, endMs: b, periodPriced: false, ratedNanos: 0n });
        } else if (p.kind === "seats") {
          for (const seg of seatSegments(s, a, b)) {
            if (seg.seats === 0) continue;
            const amt = roundHalfEven(prorate({ num: p.perSeat.num * BigInt(seg.seats), den: p.perSeat.den }, seg.endMs - seg.startMs, periodMs));
            lines.push({ kind: "seats", chargeId: c.chargeId, description: `${seg.seats} seats x ${fmtDays(seg.endMs - seg.startMs)} of ${fmtDays(periodMs)} days`, quantity: BigInt(seg.seats), amountNanos: amt, unit: c.unit, costNanos: 0n, bookedNanos: 0n, startMs: seg.startMs, endMs: seg.endMs, periodPriced: false, ratedNanos: 0n });
          }
        }
      }
    }
  }

  for (const t of totals) {
    const c = chargeSpecs.get(t.chargeId);
    const periodPriced = c !== undefined && c.mode === "period";
    const amount = periodPriced ? roundHalfEven(periodTotal(c, t.quantity)) : t.bookedNanos;
    lines.push({ kind: "usage", chargeId: t.chargeId, description: c?.spec.name || t.chargeId, quantity: t.quantity, amountNanos: amount, unit: t.unit, costNanos: t.costNanos, bookedNanos: t.bookedNanos, startMs: period.startMs, endMs: period.endMs, periodPriced, ratedNanos: t.ratedNanos ?? t.bookedNanos });
  }

  const cur = customer.currency;
  const sum = (kinds: PeriodLineKind[]): bigint => lines.reduce((s, l) => (l.unit === cur && kinds.includes(l.kind) ? s + l.amountNanos : s), 0n);
  if (lastVersion !== null) {
    const { v } = lastVersion;
    if (v.cap !== null) {
      const cap = roundHalfEven(rateExact(v.cap));
      const usage = sum(["usage"]);
      if (cap > 0n && usage > cap) {
        lines.push({ kind: "cap_adjustment", chargeId: "", description: `spending cap ${cap} nanos`, quantity: 0n, amountNanos: cap - usage, unit: cur, costNanos: 0n, bookedNanos: 0n, startMs: period.startMs, endMs: period.endMs, periodPriced: false, ratedNanos: 0n });
      }
    }
    if (v.minimum !== null) {
      const min = roundHalfEven(rateExact(v.minimum));
      const all = sum(["usage", "flat", "seats", "cap_adjustment"]);
      if (min > 0n && all < min) {
        lines.push({ kind: "minimum_true_up", chargeId: "", description: `minimum commitment ${min} nanos`, quantity: 0n, amountNanos: min - all, unit: cur, costNanos: 0n, bookedNanos: 0n, startMs: period.startMs, endMs: period.endMs, periodPriced: false, ratedNanos: 0n });
      }
    }
  }
  return { period, lines, totalNanos: sum(["usage", "flat", "seats", "cap_adjustment", "minimum_true_up"]), currency: cur };
}

function applyOverride(cat: TenantCatalog, customer: Customer, planId: string, v: CompiledVersion, c: CompiledCharge, atMs: number): CompiledCharge {
  const o = cat.overrides(customer.customerId).find((x) => x.chargeId === c.chargeId && x.startMs <= atMs && (x.endMs === null || atMs < x.endMs));
  return o === undefined ? c : cat.compiledOverride(o, planId, v, c);
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
