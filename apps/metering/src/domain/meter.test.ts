import { describe, expect, it } from "vitest";
import { contributionOf, eventMatches, validateMeter, type MeterDefinition } from "./meter.js";

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
