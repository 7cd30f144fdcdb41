import { invalid } from "./errors.js";
import { addExact, roundHalfEven, type Exact } from "./pricing.js";

/**
 * Billing periods: a customer's periods start at its billing anchor's local wall-clock day and
 * time (in its IANA time zone) every `intervalMonths` calendar months. A day past the end of a
 * short month clamps to the month's last day (anchor Jan 31 -> Feb 28/29 -> Mar 31).
 */

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(tz, f);
  }
  return f;
}

/** isValidTimeZone: true for an IANA zone the runtime knows. */
export function isValidTimeZone(tz: string): boolean {
  try {
    formatter(tz);
    return true;
  } catch {
    return false;
  }
}

interface Wall {
  y: number;
  m: number; // 1..12
  d: number;
  hh: number;
  mm: number;
  ss: number;
  ms: number;
}

function wallOf(ms: number, tz: string): Wall {
  const parts = formatter(tz).formatToParts(new Date(ms));
  const get = (t: string): number => Number(parts.find((p) => p.type === t)?.value ?? "0");
  return { y: get("year"), m: get("month"), d: get("day"), hh: get("hour"), mm: get("minute"), ss: get("second"), ms: ((ms % 1000) + 1000) % 1000 };
}

/** offsetMs: the zone's UTC offset at instant ms. */
function offsetMs(ms: number, tz: string): number {
  const w = wallOf(ms, tz);
  return Date.UTC(w.y, w.m - 1, w.d, w.hh, w.mm, w.ss, w.ms) - ms;
}

/**
 * instantOf: the UTC instant of a local wall-clock time. A time in a fall-back overlap takes its
 * first instant; a time in a spring-forward gap does not exist and moves forward by the gap (02:30
 * on a 02:00 -> 03:00 night is 03:30), in zones west and east of UTC alike. The same rule as
 * invoicing's zonedToInstant (apps/invoicing/src/domain/periods.ts), so both agree on boundaries.
 */
function instantOf(w: Wall, tz: string): number {
  const guess = Date.UTC(w.y, w.m - 1, w.d, w.hh, w.mm, w.ss, w.ms);
  const o1 = offsetMs(guess, tz);
  const t1 = guess - o1;
  const o2 = offsetMs(t1, tz);
  if (o2 === o1) return t1;
  const t2 = guess - o2;
  if (offsetMs(t2, tz) === o2) return t2;
  // In a gap: the offset before the change (the smaller) lands just after the gap.
  return guess - Math.min(o1, o2);
}

function daysInMonth(y: number, m: number): number {
  return new Date(Date.UTC(y, m, 0)).getUTCDate();
}

/** periodStartK: start of the k-th period after the anchor (k may be negative). */
function periodStartK(anchor: Wall, tz: string, months: number, k: number): number {
  const total = anchor.y * 12 + (anchor.m - 1) + k * months;
  const y = Math.floor(total / 12);
  const m = (total % 12) + 1;
  const d = Math.min(anchor.d, daysInMonth(y, m));
  return instantOf({ ...anchor, y, m, d }, tz);
}

export interface Period {
  startMs: number;
  endMs: number;
}

/**
 * The last period computed per (anchor, zone, interval): consecutive events of a customer (and of
 * every customer sharing an anchor) fall in the same period, and computing one takes about ten
 * Intl formatToParts calls (it was ~40% of rating an event when each batch's catalog started with
 * an empty cache). A pure memo: same inputs, same answer. Bounded; starts over when full.
 */
const lastPeriods = new Map<string, Period>();
export const PERIOD_MEMO_MAX = 10_000;

/** billingPeriod: the period [start, end) containing atMs. */
export function billingPeriod(anchorMs: number, tz: string, intervalMonths: number, atMs: number): Period {
  const key = `${anchorMs}\u0000${intervalMonths}\u0000${tz}`;
  const last = lastPeriods.get(key);
  if (last !== undefined && last.startMs <= atMs && atMs < last.endMs) return last;
  const p = computeBillingPeriod(anchorMs, tz, intervalMonths, atMs);
  if (lastPeriods.size >= PERIOD_MEMO_MAX) lastPeriods.clear();
  lastPeriods.set(key, p);
  return p;
}

function computeBillingPeriod(anchorMs: number, tz: string, intervalMonths: number, atMs: number): Period {
  if (!isValidTimeZone(tz)) throw invalid("time_zone", `unknown IANA time zone ${JSON.stringify(tz)}`);
  const a = wallOf(anchorMs, tz);
  const at = wallOf(atMs, tz);
  let k = Math.floor(((at.y - a.y) * 12 + (at.m - a.m)) / intervalMonths);
  for (let i = 0; i < 4; i++) {
    const s = periodStartK(a, tz, intervalMonths, k);
    if (s > atMs) {
      k--;
      continue;
    }
    const e = periodStartK(a, tz, intervalMonths, k + 1);
    if (e <= atMs) {
      k++;
      continue;
    }
    return Object.freeze({ startMs: s, endMs: e });
  }
  throw new Error(`billingPeriod: no period found for ${atMs}`);
}

/**
 * prorate: amount-per-period (exact nanos) x covered/total time, by the millisecond, exact. The
 * lengths are the exact boundaries' differences (instants are whole milliseconds), never
 * truncated: a piece from a non-whole-second instant loses no time. The caller rounds.
 */
export function prorate(amountPerPeriod: Exact, coveredMs: number, periodMs: number): Exact {
  if (!Number.isSafeInteger(coveredMs) || !Number.isSafeInteger(periodMs)) throw new Error(`prorate: lengths must be whole milliseconds (${coveredMs} of ${periodMs})`);
  if (periodMs <= 0) return { num: 0n, den: 1n };
  return { num: amountPerPeriod.num * BigInt(coveredMs), den: amountPerPeriod.den * BigInt(periodMs) };
}

/**
 * allocateCumulative: whole nanos for the pieces of one fee over one billing period (phase parts,
 * override parts, seat segments of one charge of one subscription), given each piece's exact
 * prorated amount in time order. The rounding, named "cumulative half-even": piece i books
 * round_half_even(E_1 + ... + E_i) - round_half_even(E_1 + ... + E_i-1). So the pieces always sum
 * to the exact total rounded half-even once (no residue is dropped: each piece's sub-nano
 * remainder moves into the next), each piece is within one nano of its own exact amount, and a
 * full period at one price equals the un-split fee. (Before, each piece was rounded on its own:
 * $10 over three equal phases booked 3 x 3,333,333,333.)
 */
export function allocateCumulative(exacts: Exact[]): bigint[] {
  const out: bigint[] = [];
  let cum: Exact = { num: 0n, den: 1n };
  let booked = 0n;
  for (const e of exacts) {
    cum = addExact(cum, e);
    const r = roundHalfEven(cum);
    out.push(r - booked);
    booked = r;
  }
  return out;
}

/** ProrationResult: a mid-period change billed in advance. */
export interface ProrationResult {
  creditNanos: bigint; // negative: the unused part of the old amount
  chargeNanos: bigint; // the remaining part of the new amount
  netNanos: bigint; // credit + charge (what the change costs now)
}

/**
 * prorateChange: a fee paid in advance for the period changes at changeMs from oldAmount to
 * newAmount (per whole period): the unused old part is credited and the remaining new part
 * charged, each prorated by the millisecond and rounded half-even once; net = credit + charge.
 * $20 -> $50 on day 15 of a 30-day cycle: -10 + 25 = $15.
 */
export function prorateChange(p: Period, changeMs: number, oldAmount: Exact, newAmount: Exact): ProrationResult {
  if (changeMs < p.startMs || changeMs > p.endMs) throw invalid("effective_time", "must be inside the billing period");
  const remaining = p.endMs - changeMs;
  const period = p.endMs - p.startMs;
  const o = prorate(oldAmount, remaining, period);
  const creditNanos = -roundHalfEven(o);
  const chargeNanos = roundHalfEven(prorate(newAmount, remaining, period));
  return { creditNanos, chargeNanos, netNanos: creditNanos + chargeNanos };
}
