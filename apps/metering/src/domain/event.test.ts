import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { contentHashOf, encodeProperties, encodePropertiesViaObject, parseRfc3339Us, sortedKeys, validateEvent, type EventInput, type PropertyValue } from "./event.js";

const NOW_US = BigInt(Date.UTC(2026, 10, 20, 10)) * 1000n;
const ctx = { nowUs: NOW_US, lateEventAgeUs: 35n * 86_400_000_000n };
const int = (v: bigint): PropertyValue => ({ kind: "int", value: v });
const base = (over: Partial<EventInput> = {}): EventInput => ({
  id: "evt_1",
  customerId: "cus_1",
  type: "llm.call",
  timestamp: NOW_US - 1_000_000n,
  properties: { model: { kind: "string", value: "gpt-x" }, input_tokens: int(1234n) },
  ...over,
});

describe("validateEvent", () => {
  const rejected: Array<[string, EventInput, string, string]> = [
    ["missing id", base({ id: "" }), "id", "required"],
    ["id with a space", base({ id: "evt 1" }), "id", "malformed"],
    ["missing customer", base({ customerId: "" }), "customer_id", "required"],
    ["missing type", base({ type: "" }), "type", "required"],
    ["unparseable timestamp text", base({ timestamp: "yesterday" }), "timestamp", "unparseable"],
    ["timestamp with month 13", base({ timestamp: "2026-13-01T00:00:00Z" }), "timestamp", "unparseable"],
    ["timestamp Feb 30", base({ timestamp: "2026-02-30T00:00:00Z" }), "timestamp", "unparseable"],
    ["more than 5 minutes in the future", base({ timestamp: NOW_US + 5n * 60_000_000n + 1n }), "timestamp", "too_far_in_future"],
    ["negative token count", base({ properties: { input_tokens: int(-1n) } }), "properties.input_tokens", "negative"],
    ["decimal token count", base({ properties: { output_tokens: { kind: "decimal", value: "1.5" } } }), "properties.output_tokens", "not_integer"],
    ["string count", base({ properties: { call_count: { kind: "string", value: "3" } } }), "properties.call_count", "not_integer"],
    ["unset property value", base({ properties: { x: undefined } }), "properties.x", "required"],
    ["malformed decimal", base({ properties: { ratio: { kind: "decimal", value: "1e5" } } }), "properties.ratio", "malformed_decimal"],
    ["decimal with 19 fraction digits", base({ properties: { ratio: { kind: "decimal", value: "0.1234567890123456789" } } }), "properties.ratio", "malformed_decimal"],
    ["string too long", base({ properties: { s: { kind: "string", value: "x".repeat(1025) } } }), "properties.s", "too_long"],
    ["too many properties", base({ properties: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, int(1n)])) }), "properties", "too_many"],
    ["bad key", base({ properties: { "1abc": int(1n) } }), "properties.1abc", "malformed_key"],
    // A lone UTF-16 surrogate or a NUL cannot be written to JSONB (the batch failed as Internal).
    ["a lone high surrogate in a string", base({ properties: { model: { kind: "string", value: "gpt\ud800" } } }), "properties.model", "malformed"],
    ["a lone low surrogate in a string", base({ properties: { model: { kind: "string", value: "\udc00gpt" } } }), "properties.model", "malformed"],
    ["a NUL in a string", base({ properties: { model: { kind: "string", value: "gpt\u0000x" } } }), "properties.model", "malformed"],
    // A "__proto__" key (the decoders keep it, on null-prototype objects) is refused by name.
    ["a __proto__ key", base({ properties: Object.assign(Object.create(null), { ["__proto__"]: int(7n), input_tokens: int(3n) }) }), "properties.__proto__", "malformed_key"],
    ["bad traceparent", base({ traceContext: { traceparent: "nope", tracestate: "" } }), "trace_context.traceparent", "malformed"],
  ];
  for (const [name, input, field, reason] of rejected) {
    it(`rejects ${name}, naming ${field}`, () => {
      const v = validateEvent(input, ctx);
      expect(v.ok).toBe(false);
      if (!v.ok) {
        expect(v.rejection.field).toBe(field);
        expect(v.rejection.reason).toBe(reason);
        expect(v.rejection.message.startsWith(`${field}: `)).toBe(true);
      }
    });
  }

  it("accepts well-formed non-BMP text (a surrogate pair is not a lone surrogate)", () => {
    const v = validateEvent(base({ properties: { model: { kind: "string", value: "gpt-\u{1F600}-é" } } }), ctx);
    expect(v.ok).toBe(true);
  });

  it("names a malformed key in well-formed text, cut to 128 bytes (a lone surrogate or control character becomes U+FFFD)", () => {
    const v = validateEvent(base({ properties: { ["\ud800\u0001" + "é".repeat(200)]: int(1n) } }), ctx);
    expect(v.ok).toBe(false);
    if (!v.ok) {
      expect(v.rejection.reason).toBe("malformed_key");
      expect(v.rejection.field.startsWith("properties.\ufffd\ufffdé")).toBe(true);
      expect(/\p{Cs}/u.test(v.rejection.field)).toBe(false);
      expect(Buffer.byteLength(v.rejection.field.slice("properties.".length), "utf8")).toBeLessThanOrEqual(128);
    }
  });

  it("accepts exactly 5 minutes in the future and exactly the late-event limit", () => {
    expect(validateEvent(base({ timestamp: NOW_US + 5n * 60_000_000n }), ctx).ok).toBe(true);
    expect(validateEvent(base({ timestamp: NOW_US - 35n * 86_400_000_000n }), ctx).ok).toBe(true);
  });

  it("marks an event older than the late-event limit as late (stored never; a retry of a stored id stays a duplicate)", () => {
    const v = validateEvent(base({ timestamp: NOW_US - 35n * 86_400_000_000n - 1n }), ctx);
    expect(v.ok && v.late).toEqual({ field: "timestamp", reason: "period_closed", message: "timestamp: is older than the late-event limit (35 days)" });
    const inTime = validateEvent(base({ timestamp: NOW_US - 35n * 86_400_000_000n }), ctx);
    expect(inTime.ok && inTime.late).toBeUndefined();
  });

  it("honours a configured late-event limit", () => {
    const v = validateEvent(base({ timestamp: NOW_US - 2n * 86_400_000_000n }), { ...ctx, lateEventAgeUs: 86_400_000_000n });
    expect(v.ok && v.late?.reason).toBe("period_closed");
  });

  it("defaults a missing timestamp to now and stores the ingest call's trace context", () => {
    const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const v = validateEvent(base({ timestamp: undefined }), { ...ctx, defaultTraceContext: { traceparent: tp, tracestate: "" } });
    expect(v.ok && v.event.timestampUs).toBe(NOW_US);
    expect(v.ok && v.event.traceparent).toBe(tp);
  });

  it("hashes content: the same event hashes alike, any content change differs, the trace context does not count", () => {
    const h = (e: EventInput) => {
      const v = validateEvent(e, ctx);
      if (!v.ok) throw new Error(v.rejection.message);
      return v.event.contentHash;
    };
    const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    expect(h(base())).toBe(h(base({ traceContext: { traceparent: tp, tracestate: "" } })));
    expect(h(base())).not.toBe(h(base({ customerId: "cus_2" })));
    expect(h(base())).not.toBe(h(base({ properties: { model: { kind: "string", value: "gpt-x" }, input_tokens: int(1235n) } })));
    expect(h(base({ properties: { r: { kind: "decimal", value: "1.50" } } }))).toBe(h(base({ properties: { r: { kind: "decimal", value: "1.5" } } })));
  });

  it("hashes an event without a timestamp alike whenever it is received (its retry is a duplicate)", () => {
    const a = validateEvent(base({ timestamp: undefined }), ctx);
    const b = validateEvent(base({ timestamp: undefined }), { ...ctx, nowUs: NOW_US + 1_000_000n });
    expect(a.ok && b.ok && a.event.contentHash === b.event.contentHash).toBe(true);
  });

  it("keeps the stored encoding and the content hash of an event as they were (stored hashes decide duplicate vs conflict)", () => {
    const v = validateEvent(
      base({
        properties: {
          model: { kind: "string", value: "gpt-\"x\"\u00e9\ud83d\ude00" },
          input_tokens: int(1234n),
          ratio: { kind: "decimal", value: "1.50" },
          ok: { kind: "bool", value: true },
          _z: { kind: "bool", value: false },
        },
      }),
      ctx,
    );
    // Computed by the code of 2026-11-29 (JSON.stringify of an object, createHash("sha256")).
    expect(v.ok && v.event.propertiesJson).toBe('{"_z":{"b":false},"input_tokens":{"i":"1234"},"model":{"s":"gpt-\\"x\\"\u00e9\ud83d\ude00"},"ok":{"b":true},"ratio":{"d":"1.5"}}');
    expect(v.ok && v.event.contentHash).toBe("2rEM08c9ats8qu4mNXUmoa");
  });

  it("writes the stored encoding as JSON.stringify of the sorted object would, for any keys and values", () => {
    const value: fc.Arbitrary<PropertyValue> = fc.oneof(
      fc.string({ unit: "binary", maxLength: 12 }).map((value) => ({ kind: "string" as const, value })),
      fc.string({ maxLength: 12 }).map((value) => ({ kind: "decimal" as const, value })),
      fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }).map((value) => ({ kind: "int" as const, value })),
      fc.boolean().map((value) => ({ kind: "bool" as const, value })),
    );
    const key = fc.oneof(fc.string({ maxLength: 10 }), fc.string({ unit: "binary", maxLength: 6 }), fc.nat({ max: 5_000_000_000 }).map(String), fc.constantFrom("__proto__", "constructor", "toString", "01", "-1"));
    fc.assert(
      fc.property(fc.array(fc.tuple(key, value), { maxLength: 8 }), (entries) => {
        const props = Object.fromEntries(entries) as Record<string, PropertyValue>;
        expect(encodeProperties(props)).toBe(encodePropertiesViaObject(props));
      }),
      { numRuns: 3_000 },
    );
  });

  it("sorts keys in Array#sort's order (UTF-16 code units), up to the property limit", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: "binary", maxLength: 6 }), { maxLength: 64 }), (keys) => {
        const o = Object.fromEntries(keys.map((k) => [k, 1]));
        expect(sortedKeys(o)).toEqual(Object.keys(o).sort());
      }),
      { numRuns: 2_000 },
    );
  });

  it("hashes with the same sha256 digest as createHash, for any text", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 20 }), fc.string({ maxLength: 10 }), fc.bigInt({ min: 0n, max: 1n << 60n }), fc.string({ unit: "binary", maxLength: 40 }), (c, t, ts, p) => {
        const expected = createHash("sha256").update(`${c}\u0000${t}\u0000${ts}\u0000${p}`).digest("base64url").slice(0, 22);
        expect(contentHashOf(c, t, ts, p)).toBe(expected);
      }),
      { numRuns: 2_000 },
    );
  });

  it("parses RFC 3339 with offsets and fractions to microseconds", () => {
    expect(parseRfc3339Us("1970-01-01T00:00:00.000001Z")).toBe(1n);
    expect(parseRfc3339Us("1970-01-01T01:00:00+01:00")).toBe(0n);
    expect(parseRfc3339Us("2026-11-20T10:00:00.123456789Z")).toBe(BigInt(Date.UTC(2026, 10, 20, 10)) * 1000n + 123456n);
  });
});
