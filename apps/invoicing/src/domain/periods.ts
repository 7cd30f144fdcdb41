/**
 * Billing periods in the customer's IANA time zone (pure; Intl only, no clock).
 *
 * A subscription's periods are numbered 0, 1, 2, ... from its start. Boundaries are computed
 * from one base wall-clock time by adding whole months (1, 3 or 12) and clamping the day to the
 * month's length, never by chaining periods (so Jan 31 -> Feb 28 -> Mar 31, not Mar 28):
 * - calendar: boundaries at local midnight on the 1st of a month (quarter: Jan/Apr/Jul/Oct;
 *   year: Jan 1). Period 0 starts at the subscription start (a partial period).
 * - anniversary: boundaries at the subscription start's local day and time of day.
 * Every period is [start, end) in UTC instants; DST changes are handled by converting the local
 * boundary to an instant in the zone (a boundary inside a DST gap moves forward with the clock).
 */

export type PeriodInterval = "month" | "quarter" | "year";
export type PeriodAnchor = "calendar" | "anniversary";
/** ChargeTiming: in advance (seats, flat fees) or in arrears (usage). */
export type ChargeTiming = "advance" | "arrears";

export interface PeriodSpec {
  interval: PeriodInterval;
  anchor: PeriodAnchor;
  /** timeZone is an IANA zone ("Europe/Paris", "UTC"). */
  timeZone: string;
  /** startedAt is the subscription start (period 0 starts here). */
  startedAt: Date;
  /** anchorAt is the anniversary anchor (the customer's billing anchor); default startedAt. */
  anchorAt?: Date | undefined;
}

export interface Period {
  index: number;
  start: Date;
  end: Date;
}

export class PeriodError extends Error {
  constructor(
    readonly field: string,
    readonly rule: string,
  ) {
    super(`${field}: ${rule}`);
    this.name = "PeriodError";
  }
}

interface LocalTime {
  year: number;
  month: number; // 1..12
  day: number;
  hour: number;
  minute: number;
  second: number;
  millisecond: number;
}

/** Zones already validated, and their formatters (building an Intl.DateTimeFormat is costly). */
const validZones = new Map<string, string>();
const formatters = new Map<string, Intl.DateTimeFormat>();
const ZONES_CACHED_MAX = 1_000;

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    if (formatters.size < ZONES_CACHED_MAX) formatters.set(timeZone, f);
  }
  return f;
}


/** validateTimeZone: the canonical zone name, or PeriodError naming the field. */
export function validateTimeZone(timeZone: string, field: string): string {
  const known = validZones.get(timeZone);
  if (known !== undefined) return known;
  if (typeof timeZone !== "string" || timeZone.length === 0 || timeZone.length > 64) {
    throw new PeriodError(field, "must be an IANA time zone name such as Europe/Paris");
  }
  let canonical: string;
  try {
    canonical = new Intl.DateTimeFormat("en-US", { timeZone }).resolvedOptions().timeZone;
  } catch {
    throw new PeriodError(field, `must be an IANA time zone name, got ${JSON.stringify(timeZone)}`);
  }
  if (validZones.size < ZONES_CACHED_MAX) validZones.set(timeZone, canonical);
  return canonical;
}

function localOf(t: number, timeZone: string): LocalTime {
  if (timeZone === "UTC" || timeZone === "Etc/UTC") {
    const d = new Date(t);
    return {
      year: d.getUTCFullYear(),
      month: d.getUTCMonth() + 1,
      day: d.getUTCDate(),
      hour: d.getUTCHours(),
      minute: d.getUTCMinutes(),
      second: d.getUTCSeconds(),
      millisecond: d.getUTCMilliseconds(),
    };
  }
  const parts = formatter(timeZone).formatToParts(new Date(t));
  const get = (type: string): number => {
    const p = parts.find((x) => x.type === type);
    return p === undefined ? 0 : Number(p.value);
  };
  return {
    year: get("year"),
    month: get("month"),
    day: get("day"),
    hour: get("hour"),
    minute: get("minute"),
    second: get("second"),
    millisecond: ((t % 1000) + 1000) % 1000,
  };
}

function asUtc(l: LocalTime): number {
  const d = new Date(0);
  d.setUTCFullYear(l.year, l.month - 1, l.day);
  d.setUTCHours(l.hour, l.minute, l.second, l.millisecond);
  return d.getTime();
}

/** offsetMs: local wall time minus UTC at instant t, in the zone. */
function offsetMs(t: number, timeZone: string): number {
  return asUtc(localOf(t, timeZone)) - t;
}

/** zonedToInstant: the instant of a local wall-clock time in the zone. */
export function zonedToInstant(l: LocalTime, timeZone: string): number {
  const guess = asUtc(l);
  const o1 = offsetMs(guess, timeZone);
  const t1 = guess - o1;
  const o2 = offsetMs(t1, timeZone);
  if (o2 === o1) return t1;
  const t2 = guess - o2;
  if (offsetMs(t2, timeZone) === o2) return t2;
  // In a DST gap the wall time does not exist: take the offset before the change (the clock
  // moved forward, so the instant lands just after the gap).
  return guess - Math.min(o1, o2);
}

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function stepMonths(interval: PeriodInterval): number {
  return interval === "month" ? 1 : interval === "quarter" ? 3 : 12;
}

function baseOf(spec: PeriodSpec): LocalTime {
  if (spec.anchor === "anniversary") return localOf((spec.anchorAt ?? spec.startedAt).getTime(), spec.timeZone);
  const s = localOf(spec.startedAt.getTime(), spec.timeZone);
  const month = spec.interval === "month" ? s.month : spec.interval === "quarter" ? Math.floor((s.month - 1) / 3) * 3 + 1 : 1;
  return { year: s.year, month, day: 1, hour: 0, minute: 0, second: 0, millisecond: 0 };
}

function boundary(spec: PeriodSpec, base: LocalTime, n: number): number {
  const months = base.year * 12 + (base.month - 1) + n * stepMonths(spec.interval);
  const year = Math.floor(months / 12);
  const month = (months % 12) + 1;
  const day = Math.min(base.day, daysInMonth(year, month));
  return zonedToInstant({ ...base, year, month, day }, spec.timeZone);
}

/** checkSpec: validates a spec (interval, anchor, zone, start), naming the field. */
export function checkSpec(spec: PeriodSpec): void {
  if (spec.interval !== "month" && spec.interval !== "quarter" && spec.interval !== "year") {
    throw new PeriodError("interval", `must be month, quarter or year, got ${JSON.stringify(spec.interval)}`);
  }
  if (spec.anchor !== "calendar" && spec.anchor !== "anniversary") {
    throw new PeriodError("anchor", `must be calendar or anniversary, got ${JSON.stringify(spec.anchor)}`);
  }
  validateTimeZone(spec.timeZone, "time_zone");
  if (!(spec.startedAt instanceof Date) || Number.isNaN(spec.startedAt.getTime())) {
    throw new PeriodError("started_at", "must be a valid time");
  }
}

/** firstIndex: the boundary index k with boundary(k) <= startedAt < boundary(k + 1). */
function firstIndex(spec: PeriodSpec, base: LocalTime): number {
  const t = spec.startedAt.getTime();
  const l = localOf(t, spec.timeZone);
  let k = Math.floor(((l.year - base.year) * 12 + (l.month - base.month)) / stepMonths(spec.interval));
  while (boundary(spec, base, k) > t) k -= 1;
  while (boundary(spec, base, k + 1) <= t) k += 1;
  return k;
}

/** periodByIndex: period n (n >= 0) of the subscription. */
export function periodByIndex(spec: PeriodSpec, n: number): Period {
  checkSpec(spec);
  if (!Number.isSafeInteger(n) || n < 0 || n > 100_000) throw new PeriodError("period_index", "must be an integer in 0..100000");
  const base = baseOf(spec);
  const k = firstIndex(spec, base) + n;
  const start = Math.max(boundary(spec, base, k), spec.startedAt.getTime());
  const end = boundary(spec, base, k + 1);
  return { index: n, start: new Date(start), end: new Date(end) };
}

/**
 * nominalStart: where period n would start without the subscription start: period 0 of a
 * subscription that started between two boundaries is partial, [startedAt, end), of the full
 * period [nominalStart, end); later periods are full (nominalStart = start).
 */
export function nominalStart(spec: PeriodSpec, n: number): Date {
  checkSpec(spec);
  const base = baseOf(spec);
  return new Date(boundary(spec, base, firstIndex(spec, base) + n));
}

/** periodAt: the period containing instant `at` (at >= the subscription start). */
export function periodAt(spec: PeriodSpec, at: Date): Period {
  checkSpec(spec);
  const t = at.getTime();
  if (Number.isNaN(t)) throw new PeriodError("at", "must be a valid time");
  if (t < spec.startedAt.getTime()) throw new PeriodError("at", "is before the subscription started");
  const base = baseOf(spec);
  const k0 = firstIndex(spec, base);
  const l = localOf(t, spec.timeZone);
  const monthsDiff = (l.year - base.year) * 12 + (l.month - base.month);
  let k = Math.max(k0, Math.floor(monthsDiff / stepMonths(spec.interval)));
  // The estimate is off by at most one; walk to the period that contains t.
  while (k > k0 && boundary(spec, base, k) > t) k -= 1;
  while (boundary(spec, base, k + 1) <= t) k += 1;
  return periodByIndex(spec, k - k0);
}

/** periodStartingAt: the period whose start is exactly `start`, or undefined. */
export function periodStartingAt(spec: PeriodSpec, start: Date): Period | undefined {
  if (start.getTime() < spec.startedAt.getTime()) return undefined;
  const p = periodAt(spec, start);
  return p.start.getTime() === start.getTime() ? p : undefined;
}

/** lastEndedPeriod: the latest period that has ended at `now` (end <= now), or undefined. */
export function lastEndedPeriod(spec: PeriodSpec, now: Date): Period | undefined {
  if (now.getTime() < spec.startedAt.getTime()) return undefined;
  const current = periodAt(spec, now);
  return current.index === 0 ? undefined : periodByIndex(spec, current.index - 1);
}

/**
 * coveredPeriods: the periods a charge with the given timing is billed for on the invoice that
 * closes period n. Arrears (usage): period n itself. Advance (seats, flat fees): the next
 * period n + 1, and on the first invoice (n = 0) also period 0, which had no earlier invoice.
 */
export function coveredPeriods(spec: PeriodSpec, n: number, timing: ChargeTiming): Period[] {
  if (timing === "arrears") return [periodByIndex(spec, n)];
  return n === 0 ? [periodByIndex(spec, 0), periodByIndex(spec, 1)] : [periodByIndex(spec, n + 1)];
}

/** localDayStart: the instant of local midnight (in the zone) of the day containing d. */
export function localDayStart(d: Date, timeZone: string): Date {
  const l = localOf(d.getTime(), timeZone);
  return new Date(zonedToInstant({ ...l, hour: 0, minute: 0, second: 0, millisecond: 0 }, timeZone));
}

/** localDate: "YYYY-MM-DD" of d in the zone. */
export function localDate(d: Date, timeZone: string): string {
  const l = localOf(d.getTime(), timeZone);
  return `${String(l.year).padStart(4, "0")}-${String(l.month).padStart(2, "0")}-${String(l.day).padStart(2, "0")}`;
}
