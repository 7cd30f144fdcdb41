import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatDecimal, parseDecimal } from "./decimal.js";
import type { PropertyValue } from "./event.js";
import { AGGREGATIONS, type MeterDefinition } from "./meter.js";
import { bucketDeltas, bucketStartUs, combineBuckets, mergeBucket, planQuery, recomputeUsage, type Bucket, type MeteredEvent, type UsageQuery } from "./usage.js";

const MIN = 60_000_000n;
const HOUR = 60n * MIN;
const DAY = 24n * HOUR;
const D0 = BigInt(Date.UTC(2026, 10, 1)) * 1000n;

describe("decimal", () => {
  it("parses and formats exactly", () => {
    expect(formatDecimal(parseDecimal("0.000000000000000001")!)).toBe("0.000000000000000001");
    expect(formatDecimal(parseDecimal("-12.50")!)).toBe("-12.5");
    expect(formatDecimal(parseDecimal("-0.0")!)).toBe("0");
    expect(["1234", "-5", "0", "100000000000000000000000000000", "-7.000000000000000001"].map((t) => formatDecimal(parseDecimal(t)!))).toEqual([
      "1234",
      "-5",
      "0",
      "100000000000000000000000000000",
      "-7.000000000000000001",
    ]);
    expect(parseDecimal("1.")).toBeUndefined();
    expect(parseDecimal("+1")).toBeUndefined();
  });
});

describe("bucket keys", () => {
  it("truncates to the UTC minute, hour and day", () => {
    const ts = D0 + 5n * HOUR + 7n * MIN + 13_000_123n;
    expect(bucketStartUs(ts, "minute")).toBe(D0 + 5n * HOUR + 7n * MIN);
    expect(bucketStartUs(ts, "hour")).toBe(D0 + 5n * HOUR);
    expect(bucketStartUs(ts, "day")).toBe(D0);
  });
});

describe("planQuery", () => {
  const m: MeterDefinition = { id: "m", eventType: "t", aggregation: "sum", valueProperty: "v", filters: [], groupBy: ["model"], description: "" };
  const q = (over: Partial<UsageQuery>): UsageQuery => ({ startUs: D0, endUs: D0 + DAY, window: "hour", customerIds: [], groupBy: [], groupByCustomer: false, filters: [], ...over });
  it("picks the coarsest aligned level for a whole-range query", () => {
    expect(planQuery(m, q({ window: "whole" }))).toEqual({ ok: true, level: "day" });
    expect(planQuery(m, q({ window: "whole", endUs: D0 + HOUR }))).toEqual({ ok: true, level: "hour" });
    expect(planQuery(m, q({ window: "whole", endUs: D0 + MIN }))).toEqual({ ok: true, level: "minute" });
  });
  it("names the field of a bad query", () => {
    expect(planQuery(m, q({ startUs: D0 + 1n }))).toMatchObject({ ok: false, field: "start_time" });
    expect(planQuery(m, q({ endUs: D0 }))).toMatchObject({ ok: false, field: "end_time" });
    expect(planQuery(m, q({ groupBy: ["other"] }))).toMatchObject({ ok: false, field: "group_by[0]" });
    expect(planQuery(m, q({ filters: [{ property: "other", operator: "exists", values: [] }] }))).toMatchObject({ ok: false, field: "filters[0].property" });
    expect(planQuery(m, q({ window: "minute", endUs: D0 + 10_001n * MIN }))).toMatchObject({ ok: false, field: "window" });
  });
});

// Random events and meters: buckets built from events in random chunks (as ingestion does),
// merged per key, then combined by a random query, equal a recomputation from the raw events.
const models = ["a", "b", "c"];
const arbValue: fc.Arbitrary<PropertyValue> = fc.oneof(
  fc.bigInt({ min: -1000n, max: 1000n }).map((v): PropertyValue => ({ kind: "int", value: v })),
  fc.tuple(fc.integer({ min: -999, max: 999 }), fc.integer({ min: 0, max: 999 })).map(([i, f]): PropertyValue => ({ kind: "decimal", value: formatDecimal(parseDecimal(`${i}.${String(f).padStart(3, "0")}`)!) })),
  fc.constantFrom<PropertyValue>({ kind: "string", value: "x" }, { kind: "bool", value: true }),
);
const arbEvent = fc.record({
  customer: fc.constantFrom("c1", "c2", "c3"),
  type: fc.constantFrom("llm.call", "other"),
  offsetUs: fc.bigInt({ min: 0n, max: 3n * DAY - 1n }),
  model: fc.option(fc.constantFrom(...models), { nil: undefined }),
  value: fc.option(arbValue, { nil: undefined }),
});
const arbMeter = fc.record({
  aggregation: fc.constantFrom(...AGGREGATIONS),
  groupBy: fc.constantFrom<string[]>([], ["model"]),
  filter: fc.boolean(),
});

type RawEvent = { customer: string; type: string; offsetUs: bigint; model: string | undefined; value: PropertyValue | undefined };
function eventsFrom(raw: RawEvent[]): MeteredEvent[] {
  return raw.map((r, i) => {
    const properties: Record<string, PropertyValue> = {};
    if (r.model !== undefined) properties.model = { kind: "string", value: r.model };
    if (r.value !== undefined) properties.v = r.value;
    return { tenant: "t", sequence: BigInt(i + 1), customerId: r.customer, type: r.type, timestampUs: D0 + r.offsetUs, properties };
  });
}

describe("usage buckets", () => {
  it("combined buckets equal a recomputation from raw events, for any chunking and query", () => {
    fc.assert(
      fc.property(
        fc.array(arbEvent, { maxLength: 60 }),
        arbMeter,
        fc.constantFrom("minute", "hour", "day", "whole") as fc.Arbitrary<"minute" | "hour" | "day" | "whole">,
        fc.integer({ min: 1, max: 7 }),
        fc.boolean(),
        fc.boolean(),
        (raw, ma, window, chunk, byCustomer, byModel) => {
          const m: MeterDefinition = {
            id: "m",
            eventType: "llm.call",
            aggregation: ma.aggregation,
            valueProperty: ma.aggregation === "count" ? "" : "v",
            filters: ma.filter ? [{ property: "model", operator: "not_in", values: ["c"] }] : [],
            groupBy: ma.groupBy,
            description: "",
          };
          const events = eventsFrom(raw);
          const stored = new Map<string, Bucket>();
          const uniques = new Map<string, { v: ReturnType<typeof bucketDeltas>["uniques"][number] }>();
          for (let i = 0; i < events.length; i += chunk) {
            const d = bucketDeltas(() => [m], events.slice(i, i + chunk));
            for (const b of d.buckets) {
              const k = `${b.level}|${b.startUs}|${b.customerId}|${b.groupKey}`;
              const prev = stored.get(k);
              if (prev) mergeBucket(prev, b);
              else stored.set(k, { ...b });
            }
            for (const u of d.uniques) uniques.set(`${u.level}|${u.startUs}|${u.customerId}|${u.groupKey}|${u.value}`, { v: u });
          }
          const q: UsageQuery = {
            startUs: D0,
            endUs: D0 + 2n * DAY,
            window,
            customerIds: [],
            groupBy: byModel && m.groupBy.length > 0 ? ["model"] : [],
            groupByCustomer: byCustomer,
            filters: [],
          };
          const plan = planQuery(m, q);
          if (!plan.ok) throw new Error(plan.rule);
          const level = plan.level;
          const got = combineBuckets(
            m,
            q,
            [...stored.values()].filter((b) => b.level === level),
            [...uniques.values()].map((x) => x.v).filter((u) => u.level === level),
          );
          expect(got).toEqual(recomputeUsage(m, q, events));
        },
      ),
      { numRuns: 300 },
    );
  });
});
