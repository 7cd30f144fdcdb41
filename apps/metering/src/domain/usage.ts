// Usage buckets and queries. Buckets are minute, hour and day totals per (meter, customer,
// group values), computed from newly stored events only; queries combine the buckets of one
// level into windows. `recomputeUsage` answers the same query from raw events (the oracle the
// tests compare against).
import { QUERY_CUSTOMERS_MAX, QUERY_RANGE_MS_MAX, QUERY_WINDOWS_MAX } from "../limits.js";
import { formatDecimal, type Scaled } from "./decimal.js";
import { ownProperty, type PropertyValue } from "./event.js";
import {
  contributionOf,
  filterMatches,
  groupKeyOf,
  groupValuesOf,
  validateFilter,
  type MeterDefinition,
  type PropertyFilter,
} from "./meter.js";

export const LEVELS = ["minute", "hour", "day"] as const;
export type Level = (typeof LEVELS)[number];
export type Window = Level | "whole";
export const LEVEL_US: Record<Level, bigint> = {
  minute: 60_000_000n,
  hour: 3_600_000_000n,
  day: 86_400_000_000n,
};

/** Start (UTC, microseconds) of the bucket of `level` holding `tsUs` (tsUs >= 0). */
export function bucketStartUs(tsUs: bigint, level: Level): bigint {
  return tsUs - (tsUs % LEVEL_US[level]);
}

/** A stored event as the usage code needs it. */
export interface MeteredEvent {
  tenant: string;
  sequence: bigint;
  customerId: string;
  type: string;
  timestampUs: bigint;
  properties: Record<string, PropertyValue>;
}

export interface Latest {
  timestampUs: bigint;
  sequence: bigint;
  value: Scaled;
}

/** One bucket's totals (a delta at ingestion, a stored row at query time). */
export interface Bucket {
  tenant: string;
  meterId: string;
  customerId: string;
  level: Level;
  startUs: bigint;
  groupKey: string;
  eventCount: bigint;
  sum: Scaled;
  min: Scaled | null;
  max: Scaled | null;
  latest: Latest | null;
}

/** One distinct value of a unique_count meter in one bucket. */
export interface UniqueValue {
  tenant: string;
  meterId: string;
  customerId: string;
  level: Level;
  startUs: bigint;
  groupKey: string;
  value: string;
}

function laterLatest(a: Latest | null, b: Latest | null): Latest | null {
  if (a === null) return b;
  if (b === null) return a;
  if (b.timestampUs > a.timestampUs || (b.timestampUs === a.timestampUs && b.sequence > a.sequence)) return b;
  return a;
}

function minOf(a: Scaled | null, b: Scaled | null): Scaled | null {
  return a === null ? b : b === null ? a : a < b ? a : b;
}
function maxOf(a: Scaled | null, b: Scaled | null): Scaled | null {
  return a === null ? b : b === null ? a : a > b ? a : b;
}

/** Merges bucket b into a (same key). */
export function mergeBucket(a: Bucket, b: Bucket): void {
  a.eventCount += b.eventCount;
  a.sum += b.sum;
  a.min = minOf(a.min, b.min);
  a.max = maxOf(a.max, b.max);
  a.latest = laterLatest(a.latest, b.latest);
}

/**
 * The bucket deltas of newly stored events: for each event, each meter of its tenant and type
 * it contributes to (metersOf may depend on the event's sequence), and each level. Deltas are
 * merged per key (one row per key).
 */
export function bucketDeltas(
  metersOf: (tenant: string, sequence: bigint) => MeterDefinition[],
  events: MeteredEvent[],
): { buckets: Bucket[]; uniques: UniqueValue[] } {
  // Per event only the minute bucket; hours and days are rolled up from the minutes (a minute
  // lies in exactly one hour and one day), so the per-event work does not triple.
  const minutes = new Map<string, Bucket>();
  const minuteUniques = new Map<string, UniqueValue>();
  for (const e of events) {
    for (const m of metersOf(e.tenant, e.sequence)) {
      if (m.eventType !== e.type) continue;
      const c = contributionOf(m, e.properties);
      if (c.kind === "none") continue;
      const groupKey = groupKeyOf(groupValuesOf(m.groupBy, e.properties));
      const startUs = bucketStartUs(e.timestampUs, "minute");
      const key = `${e.tenant}\u0000${m.id}\u0000${e.customerId}\u0000${startUs}\u0000${groupKey}`;
      const prev = minutes.get(key);
      if (c.kind === "number") {
        const latest = { timestampUs: e.timestampUs, sequence: e.sequence, value: c.value };
        if (prev) {
          prev.eventCount += 1n;
          prev.sum += c.value;
          prev.min = minOf(prev.min, c.value);
          prev.max = maxOf(prev.max, c.value);
          prev.latest = laterLatest(prev.latest, latest);
        } else {
          minutes.set(key, { tenant: e.tenant, meterId: m.id, customerId: e.customerId, level: "minute", startUs, groupKey, eventCount: 1n, sum: c.value, min: c.value, max: c.value, latest });
        }
      } else if (prev) prev.eventCount += 1n;
      else minutes.set(key, { tenant: e.tenant, meterId: m.id, customerId: e.customerId, level: "minute", startUs, groupKey, eventCount: 1n, sum: 0n, min: null, max: null, latest: null });
      if (c.kind === "text") {
        const ukey = `${key}\u0000${c.value}`;
        if (!minuteUniques.has(ukey)) minuteUniques.set(ukey, { tenant: e.tenant, meterId: m.id, customerId: e.customerId, level: "minute", startUs, groupKey, value: c.value });
      }
    }
  }
  const buckets = [...minutes.values()];
  const uniques = [...minuteUniques.values()];
  for (const level of ["hour", "day"] as const) {
    const rolled = new Map<string, Bucket>();
    for (const b of minutes.values()) {
      const startUs = bucketStartUs(b.startUs, level);
      const key = `${b.tenant}\u0000${b.meterId}\u0000${b.customerId}\u0000${startUs}\u0000${b.groupKey}`;
      const prev = rolled.get(key);
      if (prev) mergeBucket(prev, b);
      else rolled.set(key, { ...b, level, startUs });
    }
    buckets.push(...rolled.values());
    const rolledUniques = new Map<string, UniqueValue>();
    for (const u of minuteUniques.values()) {
      const startUs = bucketStartUs(u.startUs, level);
      const ukey = `${u.tenant}\u0000${u.meterId}\u0000${u.customerId}\u0000${startUs}\u0000${u.groupKey}\u0000${u.value}`;
      if (!rolledUniques.has(ukey)) rolledUniques.set(ukey, { ...u, level, startUs });
    }
    uniques.push(...rolledUniques.values());
  }
  return { buckets, uniques };
}

export interface UsageQuery {
  startUs: bigint;
  endUs: bigint;
  window: Window;
  customerIds: string[];
  groupBy: string[];
  groupByCustomer: boolean;
  filters: PropertyFilter[];
}

export interface UsageRow {
  windowStartUs: bigint;
  windowEndUs: bigint;
  customerId: string;
  group: Record<string, string>;
  value: string;
  eventCount: bigint;
}

export type QueryCheck = { ok: true; level: Level } | { ok: false; field: string; rule: string };

/** Checks a query against its meter and picks the bucket level that answers it. */
export function planQuery(m: MeterDefinition, q: UsageQuery): QueryCheck {
  const bad = (field: string, rule: string): QueryCheck => ({ ok: false, field, rule });
  if (q.startUs < 0n) return bad("start_time", "is required (1970 or later)");
  if (q.endUs <= q.startUs) return bad("end_time", "must be after start_time");
  if (q.endUs - q.startUs > BigInt(QUERY_RANGE_MS_MAX) * 1000n)
    return bad("end_time", `at most ${QUERY_RANGE_MS_MAX / 86_400_000} days after start_time`);
  if (q.customerIds.length > QUERY_CUSTOMERS_MAX) return bad("customer_ids", `at most ${QUERY_CUSTOMERS_MAX}`);
  const seen = new Set<string>();
  for (const [i, g] of q.groupBy.entries()) {
    if (!m.groupBy.includes(g)) return bad(`group_by[${i}]`, `must be one of the meter's group_by (${m.groupBy.join(", ") || "none"})`);
    if (seen.has(g)) return bad(`group_by[${i}]`, "is repeated");
    seen.add(g);
  }
  for (const [i, f] of q.filters.entries()) {
    const check = validateFilter(f, `filters[${i}]`);
    if (check) return bad(check.field, check.rule);
    if (!m.groupBy.includes(f.property)) return bad(`filters[${i}].property`, "must be one of the meter's group_by properties");
  }
  let level: Level;
  if (q.window === "whole") {
    if (q.startUs % LEVEL_US.minute !== 0n) return bad("start_time", "must be a whole minute");
    if (q.endUs % LEVEL_US.minute !== 0n) return bad("end_time", "must be a whole minute");
    level = q.startUs % LEVEL_US.day === 0n && q.endUs % LEVEL_US.day === 0n ? "day"
      : q.startUs % LEVEL_US.hour === 0n && q.endUs % LEVEL_US.hour === 0n ? "hour" : "minute";
  } else {
    level = q.window;
    if (q.startUs % LEVEL_US[level] !== 0n) return bad("start_time", `must be aligned to the ${level} window (UTC)`);
    if (q.endUs % LEVEL_US[level] !== 0n) return bad("end_time", `must be aligned to the ${level} window (UTC)`);
    if ((q.endUs - q.startUs) / LEVEL_US[level] > BigInt(QUERY_WINDOWS_MAX))
      return bad("window", `at most ${QUERY_WINDOWS_MAX} windows; use a larger window`);
  }
  return { ok: true, level };
}

function windowOf(q: UsageQuery, tsUs: bigint): [bigint, bigint] {
  if (q.window === "whole") return [q.startUs, q.endUs];
  const start = bucketStartUs(tsUs, q.window);
  return [start, start + LEVEL_US[q.window]];
}

interface Acc {
  windowStartUs: bigint;
  windowEndUs: bigint;
  customerId: string;
  group: Record<string, string>;
  eventCount: bigint;
  sum: Scaled;
  min: Scaled | null;
  max: Scaled | null;
  latest: Latest | null;
  uniques: Set<string>;
}

function selectGroup(m: MeterDefinition, q: UsageQuery, groupValues: (string | null)[]): Record<string, string> | undefined {
  for (const f of q.filters) {
    const v = groupValues[m.groupBy.indexOf(f.property)];
    if (!filterMatches(f, v === null || v === undefined ? undefined : v)) return undefined;
  }
  const group: Record<string, string> = {};
  for (const g of q.groupBy) {
    const v = groupValues[m.groupBy.indexOf(g)];
    if (v !== null && v !== undefined) group[g] = v;
  }
  return group;
}

function accKey(ws: bigint, customerId: string, group: Record<string, string>, groupBy: string[]): string {
  return `${ws}\u0000${customerId}\u0000${JSON.stringify(groupBy.map((g) => ownProperty(group, g) ?? null))}`;
}

/** A usage row's place in the answer's order: window start, customer, then its group values in group_by order. */
export type UsageRowKey = readonly [bigint, string, string];

export function usageRowKey(q: UsageQuery, r: UsageRow): UsageRowKey {
  return [r.windowStartUs, r.customerId, JSON.stringify(q.groupBy.map((g) => ownProperty(r.group, g) ?? null))];
}

export function compareUsageRowKeys(x: UsageRowKey, y: UsageRowKey): number {
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  if (x[1] !== y[1]) return x[1] < y[1] ? -1 : 1;
  return x[2] < y[2] ? -1 : x[2] > y[2] ? 1 : 0;
}

function finish(m: MeterDefinition, q: UsageQuery, accs: Map<string, Acc>): UsageRow[] {
  const rows: UsageRow[] = [];
  for (const a of accs.values()) {
    let value: string;
    switch (m.aggregation) {
      case "count":
        value = a.eventCount.toString();
        break;
      case "sum":
        value = formatDecimal(a.sum);
        break;
      case "max":
        value = formatDecimal(a.max ?? 0n);
        break;
      case "min":
        value = formatDecimal(a.min ?? 0n);
        break;
      case "latest":
        value = formatDecimal(a.latest?.value ?? 0n);
        break;
      case "unique_count":
        value = a.uniques.size.toString();
        break;
    }
    rows.push({ windowStartUs: a.windowStartUs, windowEndUs: a.windowEndUs, customerId: a.customerId, group: a.group, value, eventCount: a.eventCount });
  }
  const keys = new Map(rows.map((r) => [r, usageRowKey(q, r)]));
  rows.sort((x, y) => compareUsageRowKeys(keys.get(x)!, keys.get(y)!));
  return rows;
}

function accFor(accs: Map<string, Acc>, q: UsageQuery, tsUs: bigint, customerId: string, group: Record<string, string>): Acc {
  const [ws, we] = windowOf(q, tsUs);
  const cust = q.groupByCustomer ? customerId : "";
  const key = accKey(ws, cust, group, q.groupBy);
  let a = accs.get(key);
  if (!a) {
    a = { windowStartUs: ws, windowEndUs: we, customerId: cust, group, eventCount: 0n, sum: 0n, min: null, max: null, latest: null, uniques: new Set() };
    accs.set(key, a);
  }
  return a;
}

/** Answers a planned query from the buckets (and unique values) of one level inside the range. */
export function combineBuckets(m: MeterDefinition, q: UsageQuery, buckets: Bucket[], uniques: UniqueValue[]): UsageRow[] {
  const accs = new Map<string, Acc>();
  const customers = q.customerIds.length > 0 ? new Set(q.customerIds) : undefined;
  const inScope = (b: { customerId: string; startUs: bigint }) =>
    b.startUs >= q.startUs && b.startUs < q.endUs && (!customers || customers.has(b.customerId));
  for (const b of buckets) {
    if (!inScope(b)) continue;
    const group = selectGroup(m, q, JSON.parse(b.groupKey) as (string | null)[]);
    if (!group) continue;
    const a = accFor(accs, q, b.startUs, b.customerId, group);
    a.eventCount += b.eventCount;
    a.sum += b.sum;
    a.min = minOf(a.min, b.min);
    a.max = maxOf(a.max, b.max);
    a.latest = laterLatest(a.latest, b.latest);
  }
  for (const u of uniques) {
    if (!inScope(u)) continue;
    const group = selectGroup(m, q, JSON.parse(u.groupKey) as (string | null)[]);
    if (!group) continue;
    accFor(accs, q, u.startUs, u.customerId, group).uniques.add(u.value);
  }
  return finish(m, q, accs);
}

/** Answers a query straight from raw stored events (the oracle for combineBuckets). */
export function recomputeUsage(m: MeterDefinition, q: UsageQuery, events: MeteredEvent[]): UsageRow[] {
  const accs = new Map<string, Acc>();
  for (const e of events) {
    if (e.type !== m.eventType || e.timestampUs < q.startUs || e.timestampUs >= q.endUs) continue;
    if (q.customerIds.length > 0 && !q.customerIds.includes(e.customerId)) continue;
    const c = contributionOf(m, e.properties);
    if (c.kind === "none") continue;
    const group = selectGroup(m, q, groupValuesOf(m.groupBy, e.properties));
    if (!group) continue;
    const a = accFor(accs, q, e.timestampUs, e.customerId, group);
    a.eventCount += 1n;
    if (c.kind === "number") {
      a.sum += c.value;
      a.min = minOf(a.min, c.value);
      a.max = maxOf(a.max, c.value);
      a.latest = laterLatest(a.latest, { timestampUs: e.timestampUs, sequence: e.sequence, value: c.value });
    }
    if (c.kind === "text") a.uniques.add(c.value);
  }
  return finish(m, q, accs);
}
