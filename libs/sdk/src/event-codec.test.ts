import { create, fromBinary, toBinary, equals } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, IngestEventsRequestSchema, PropertyValueSchema, type PropertyValue } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeEventEntry, type WireEvent, type WireProperty } from "./event-codec.js";

/** The reflective protobuf-es message of a wire event (the oracle). */
function reflective(e: WireEvent) {
  const properties: Record<string, PropertyValue> = {};
  for (const [k, v] of e.properties) {
    const kind =
      v.kind === "string" ? { case: "stringValue" as const, value: v.value }
      : v.kind === "decimal" ? { case: "decimalValue" as const, value: v.value }
      : v.kind === "int" ? { case: "intValue" as const, value: v.value }
      : { case: "boolValue" as const, value: v.value };
    properties[k] = create(PropertyValueSchema, { kind });
  }
  return create(EventSchema, {
    id: e.id,
    customerId: e.customerId,
    type: e.type,
    timestamp: timestampFromMs(e.timestampMs),
    properties,
    traceContext: e.traceparent || e.tracestate ? { traceparent: e.traceparent, tracestate: e.tracestate } : undefined,
  });
}

/** Strips the varint length prefix of an entry. */
function payload(entry: Uint8Array): Uint8Array {
  let pos = 0;
  let len = 0;
  let shift = 0;
  for (;;) {
    const b = entry[pos++]!;
    len += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (b < 0x80) break;
  }
  expect(entry.length - pos).toBe(len);
  return entry.subarray(pos);
}

// Short and long (around the 64-unit ASCII fast path), ASCII and not.
const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.string({ minLength: 60, maxLength: 70 }),
  fc.string({ unit: "grapheme", minLength: 30, maxLength: 70 }),
  fc.constant(""),
);
const prop: fc.Arbitrary<WireProperty> = fc.oneof(
  text.map((value) => ({ kind: "string" as const, value })),
  text.map((value) => ({ kind: "decimal" as const, value })),
  fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }).map((value) => ({ kind: "int" as const, value })),
  fc.boolean().map((value) => ({ kind: "bool" as const, value })),
);
const wireEvent: fc.Arbitrary<WireEvent> = fc.record({
  id: text,
  customerId: text,
  type: text,
  timestampMs: fc.integer({ min: -62_135_596_800_000, max: 253_402_300_799_999 }),
  properties: fc.uniqueArray(fc.tuple(text, prop), { maxLength: 8, selector: ([k]) => k }),
  traceparent: text,
  tracestate: text,
});

describe("hand-written Event encoder", () => {
  it("encodes what protobuf-es decodes to the reflective message, for any event", () => {
    fc.assert(
      fc.property(wireEvent, (e) => {
        const decoded = fromBinary(EventSchema, payload(encodeEventEntry(e)));
        expect(equals(EventSchema, decoded, reflective(e))).toBe(true);
      }),
      { numRuns: 2_000 },
    );
  });

  it("matches protobuf-es byte for byte on a typical event", () => {
    const e: WireEvent = {
      id: "evt_1",
      customerId: "cus_42",
      type: "llm.call",
      timestampMs: 1_764_000_000_123,
      properties: [["model", { kind: "string", value: "gpt-x" }], ["input_tokens", { kind: "int", value: 1234n }], ["cost", { kind: "decimal", value: "0.000015" }], ["cached", { kind: "bool", value: false }], ["delta", { kind: "int", value: -5n }]],
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      tracestate: "",
    };
    expect(Buffer.from(payload(encodeEventEntry(e)))).toEqual(Buffer.from(toBinary(EventSchema, reflective(e))));
  });

  it("sent as unknown field 1 of IngestEventsRequest, yields the request of those events", () => {
    fc.assert(
      fc.property(fc.array(wireEvent, { maxLength: 20 }), (events) => {
        const req = create(IngestEventsRequestSchema);
        req.$unknown = events.map((e) => ({ no: 1, wireType: WireType.LengthDelimited, data: encodeEventEntry(e) }));
        const decoded = fromBinary(IngestEventsRequestSchema, toBinary(IngestEventsRequestSchema, req));
        expect(decoded.events.length).toBe(events.length);
        decoded.events.forEach((d, i) => expect(equals(EventSchema, d, reflective(events[i]!))).toBe(true));
      }),
      { numRuns: 300 },
    );
  });

  it("refuses an int property outside int64 (two's complement would wrap it) naming the property, and encodes the bounds", () => {
    const base: WireEvent = { id: "evt_1", customerId: "cus_1", type: "llm.call", timestampMs: 1_764_000_000_000, properties: [], traceparent: "", tracestate: "" };
    for (const value of [1n << 63n, -(1n << 63n) - 1n, (1n << 64n) + 5n, 1n << 70n]) {
      expect(() => encodeEventEntry({ ...base, properties: [["tokens", { kind: "int", value }]] })).toThrow(TypeError);
      expect(() => encodeEventEntry({ ...base, properties: [["tokens", { kind: "int", value }]] })).toThrow(/properties\.tokens/);
    }
    for (const value of [(1n << 63n) - 1n, -(1n << 63n)]) {
      const e: WireEvent = { ...base, properties: [["tokens", { kind: "int", value }]] };
      expect(equals(EventSchema, fromBinary(EventSchema, payload(encodeEventEntry(e))), reflective(e))).toBe(true);
    }
  });
});
