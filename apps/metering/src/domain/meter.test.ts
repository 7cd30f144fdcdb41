import { describe, expect, it } from "vitest";
import { contributionOf, eventMatches, groupValuesOf, validateMeter, type MeterDefinition } from "./meter.js";
import { bucketDeltas } from "./usage.js";

const ok: MeterDefinition = { id: "llm_tokens", eventType: "llm.call", aggregation: "sum", valueProperty: "input_tokens", filters: [], groupBy: ["model"], description: "" };

describe("validateMeter", () => {
  const bad: Array<[string, Partial<MeterDefinition>, string]> = [
    ["an id with capitals", { id: "LLM" }, "meter.id"],
    ["an empty event type", { eventType: "" }, "meter.event_type"],
    ["no aggregation", { aggregation: "" as never }, "meter.aggregation"],
    ["sum without a value property", { valueProperty: "" }, "meter.value_property"],
    ["count with a value property", { aggregation: "count" }, "meter.value_property"],
    ["an IN filter without values", { filters: [{ property: "model", operator: "in", values: [] }] }, "meter.filters[0].values"],
    ["an EXISTS filter with values", { filters: [{ property: "model", operator: "exists", values: ["x"] }] }, "meter.filters[0].values"],
    ["a repeated group-by key", { groupBy: ["model", "model"] }, "meter.group_by[1]"],
    ["nine group-by keys", { groupBy: ["a", "b", "c", "d", "e", "f", "g", "h", "i"] }, "meter.group_by"],
    ["__proto__ as the value property", { valueProperty: "__proto__" }, "meter.value_property"],
    ["__proto__ as a group-by key", { groupBy: ["model", "__proto__"] }, "meter.group_by[1]"],
    ["__proto__ as a filter property", { filters: [{ property: "__proto__", operator: "exists", values: [] }] }, "meter.filters[0].property"],
    ["a filter value with a lone surrogate", { filters: [{ property: "model", operator: "in", values: ["x\udc00"] }] }, "meter.filters[0].values"],
    ["a description with a lone surrogate", { description: "tokens \ud800" }, "meter.description"],
    ["17 filters", { filters: Array.from({ length: 17 }, () => ({ property: "model", operator: "exists" as const, values: [] })) }, "meter.filters"],
  ];
  for (const [name, over, field] of bad) {
    it(`refuses ${name}, naming ${field}`, () => {
      const r = validateMeter({ ...ok, ...over });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.field).toBe(field);
    });
  }
  it("accepts a valid meter", () => {
    expect(validateMeter(ok).ok).toBe(true);
  });
});

describe("filters and contributions", () => {
  const props = { model: { kind: "string" as const, value: "gpt-x" }, input_tokens: { kind: "int" as const, value: 12n }, ok: { kind: "bool" as const, value: true } };
  it("matches filters on canonical text", () => {
    expect(eventMatches([{ property: "ok", operator: "in", values: ["true"] }], props)).toBe(true);
    expect(eventMatches([{ property: "input_tokens", operator: "in", values: ["12"] }], props)).toBe(true);
    expect(eventMatches([{ property: "model", operator: "not_in", values: ["gpt-x"] }], props)).toBe(false);
    expect(eventMatches([{ property: "missing", operator: "not_exists", values: [] }], props)).toBe(true);
  });
  it("contributes nothing when the value is missing or not numeric", () => {
    expect(contributionOf({ ...ok, valueProperty: "missing" }, props)).toEqual({ kind: "none" });
    expect(contributionOf({ ...ok, valueProperty: "model" }, props)).toEqual({ kind: "none" });
    expect(contributionOf(ok, props)).toEqual({ kind: "number", value: 12n * 10n ** 18n });
    expect(contributionOf({ ...ok, aggregation: "unique_count", valueProperty: "model" }, props)).toEqual({ kind: "text", value: "gpt-x" });
  });
});

describe("own properties only: a meter naming an Object.prototype member (constructor, toString, valueOf, hasOwnProperty)", () => {
  // Such keys are valid property keys; an event without them must read as "absent", not as the
  // inherited function (which made bucketDeltas throw and stopped the shared usage cursor).
  const props = { input_tokens: { kind: "int" as const, value: 5n } };
  for (const key of ["constructor", "toString", "valueOf", "hasOwnProperty", "__defineGetter__"]) {
    it(`treats ${key} as absent when the event lacks it, and reads it when present`, () => {
      expect(validateMeter({ ...ok, groupBy: [key] }).ok).toBe(true);
      expect(groupValuesOf([key], props)).toEqual([null]);
      expect(contributionOf({ ...ok, aggregation: "unique_count", valueProperty: key, groupBy: [] }, props)).toEqual({ kind: "none" });
      expect(contributionOf({ ...ok, valueProperty: key, groupBy: [] }, props)).toEqual({ kind: "none" });
      expect(eventMatches([{ property: key, operator: "not_exists", values: [] }], props)).toBe(true);
      expect(eventMatches([{ property: key, operator: "exists", values: [] }], props)).toBe(false);
      const own = { ...props, [key]: { kind: "string" as const, value: "v" } };
      expect(groupValuesOf([key], own)).toEqual(["v"]);
      const d0 = BigInt(Date.UTC(2026, 10, 1)) * 1000n;
      const { buckets } = bucketDeltas(() => [{ ...ok, groupBy: [key] }], [
        { tenant: "t", sequence: 1n, customerId: "c", type: "llm.call", timestampUs: d0, properties: props },
        { tenant: "t", sequence: 2n, customerId: "c", type: "llm.call", timestampUs: d0, properties: own },
      ]);
      expect(buckets.filter((b) => b.level === "minute").map((b) => [b.groupKey, b.sum]).sort()).toEqual([
        ["[\"v\"]", 5n * 10n ** 18n],
        ["[null]", 5n * 10n ** 18n],
      ]);
    });
  }
});
