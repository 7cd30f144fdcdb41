import { create, fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { EventSchema, PropertyValueSchema, type PropertyValue as PbPropertyValue } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { validateEvent } from "./domain/event.js";
import { eventFromPb } from "./mapping.js";
import { decodeEventInput, WireError } from "./wire.js";
import { expectSameDecoding, mutated, paddedVarint, soupOf, type Shape } from "../../../test/support/proto-fuzz.js";

const text = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: "grapheme", maxLength: 12 }), fc.constant(""));
const pbValue: fc.Arbitrary<PbPropertyValue> = fc
  .oneof(
    text.map((value) => ({ case: "stringValue" as const, value })),
    text.map((value) => ({ case: "decimalValue" as const, value })),
    fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }).map((value) => ({ case: "intValue" as const, value })),
    fc.boolean().map((value) => ({ case: "boolValue" as const, value })),
    fc.constant({ case: undefined }),
  )
  .map((kind) => create(PropertyValueSchema, { kind: kind as PbPropertyValue["kind"] }));

const pbEvent = fc.record({
  id: text,
  customerId: text,
  type: text,
  timestamp: fc.option(
    fc.record({ seconds: fc.bigInt({ min: -(1n << 40n), max: 1n << 40n }), nanos: fc.integer({ min: -5, max: 1_000_000_005 }) }),
    { nil: undefined },
  ),
  properties: fc.dictionary(text, pbValue, { maxKeys: 8 }),
  traceContext: fc.option(fc.record({ traceparent: text, tracestate: text }), { nil: undefined }),
  unknown: fc.array(fc.tuple(fc.integer({ min: 7, max: 2000 }), fc.uint8Array({ maxLength: 8 })), { maxLength: 3 }),
});

describe("hand-written Event decoder", () => {
  it("gives what eventFromPb(fromBinary(...)) gives, for any event (unknown fields included)", () => {
    fc.assert(
      fc.property(pbEvent, (e) => {
        const msg = create(EventSchema, { id: e.id, customerId: e.customerId, type: e.type, timestamp: e.timestamp, properties: e.properties, traceContext: e.traceContext });
        // Unknown fields as a newer client would send them (length-delimited payloads).
        msg.$unknown = e.unknown.map(([no, data]) => ({ no, wireType: WireType.LengthDelimited, data: new Uint8Array([data.length, ...data]) }));
        const bytes = toBinary(EventSchema, msg);
        expect(decodeEventInput(bytes)).toEqual(eventFromPb(fromBinary(EventSchema, bytes)));
      }),
      { numRuns: 3_000 },
    );
  });

  it("keeps a property keyed __proto__ (on both paths, binary and JSON), so validation refuses it by name instead of it vanishing", () => {
    const ctx = { nowUs: 1_800_000_000_000_000n, lateEventAgeUs: 35n * 86_400_000_000n };
    const base = toBinary(EventSchema, create(EventSchema, { id: "e1", customerId: "c1", type: "llm.call", properties: { input_tokens: { kind: { case: "intValue", value: 3n } } } }));
    // A map entry {1: "__proto__", 2: {2: int_value v}} (protobuf-es's create() cannot build one: it sets the prototype).
    const entry = (v: number) => {
      const key = Buffer.from("__proto__");
      const e = Buffer.concat([Buffer.from([0x0a, key.length]), key, Buffer.from([0x12, 2, 0x10, v])]);
      return Buffer.concat([Buffer.from([0x2a, e.length]), e]);
    };
    const outcomes = [5, 9].map((v) => {
      const bytes = Buffer.concat([Buffer.from(base), entry(v)]);
      const hand = decodeEventInput(bytes);
      const pb = eventFromPb(fromBinary(EventSchema, bytes));
      expect(hand).toEqual(pb);
      expect(Object.keys(hand.properties).sort()).toEqual(["__proto__", "input_tokens"]);
      expect(hand.properties["__proto__"]).toEqual({ kind: "int", value: BigInt(v) });
      return validateEvent(hand, ctx);
    });
    for (const v of outcomes) expect(v.ok ? "accepted" : [v.rejection.field, v.rejection.reason]).toEqual(["properties.__proto__", "malformed_key"]);
    // Connect JSON: fromJson stores the entry the same way.
    const json = fromJson(EventSchema, JSON.parse('{"id":"e1","customerId":"c1","type":"llm.call","properties":{"__proto__":{"intValue":"7"},"input_tokens":{"intValue":"3"}}}'));
    const fromJsonInput = eventFromPb(json);
    expect(fromJsonInput.properties["__proto__"]).toEqual({ kind: "int", value: 7n });
    const v = validateEvent(fromJsonInput, ctx);
    expect(v.ok ? "accepted" : v.rejection.field).toBe("properties.__proto__");
  });

  it("merges a repeated timestamp and keeps the last of a repeated string, as protobuf does", () => {
    const a = toBinary(EventSchema, create(EventSchema, { id: "a", timestamp: { seconds: 100n, nanos: 0 } }));
    const b = toBinary(EventSchema, create(EventSchema, { id: "b", timestamp: { seconds: 0n, nanos: 5000 } }));
    const both = new Uint8Array([...a, ...b]);
    expect(decodeEventInput(both)).toEqual(eventFromPb(fromBinary(EventSchema, both)));
    expect(decodeEventInput(both).timestamp).toBe(100_000_005n);
  });

  it("decodes strings as protobuf-es does: a leading BOM dropped, invalid UTF-8 refused", () => {
    const withBom = new Uint8Array([0x0a, 0x06, 0xef, 0xbb, 0xbf, 0x65, 0x76, 0x31]); // id = BOM + "ev1"
    expect(decodeEventInput(withBom).id).toBe(eventFromPb(fromBinary(EventSchema, withBom)).id);
    expect(decodeEventInput(withBom).id).toBe("ev1");
    const invalid = new Uint8Array([0x0a, 0x02, 0xc3, 0x28]); // id = an invalid 2-byte sequence
    expect(() => fromBinary(EventSchema, invalid)).toThrow();
    expect(() => decodeEventInput(invalid)).toThrow(WireError);
  });

  it("throws WireError on truncated or malformed bytes", () => {
    const ok = toBinary(EventSchema, create(EventSchema, { id: "evt_1", customerId: "c", properties: { k: { kind: { case: "intValue", value: 5n } } } }));
    for (let cut = 1; cut < ok.length; cut++) {
      let threw = false;
      try {
        decodeEventInput(ok.subarray(0, cut));
      } catch (e) {
        expect(e).toBeInstanceOf(WireError);
        threw = true;
      }
      // A cut exactly between two fields is a valid, shorter event.
      if (!threw) expect(() => fromBinary(EventSchema, ok.subarray(0, cut))).not.toThrow();
    }
    expect(() => decodeEventInput(new Uint8Array([0x0f]))).toThrow(WireError); // wire type 7
    expect(() => decodeEventInput(new Uint8Array([0x00, 0x01]))).toThrow(WireError); // field 0
  });
});

// ---- Malformed input: the hand decoder must throw WireError exactly where fromBinary throws and
// otherwise give the same domain value (protobuf-es 2.13 reads a known field by its declared type
// whatever its wire type).

/** A message's known field numbers with their declared wire types, and its message-typed (or map entry) fields' shapes. */
const TIMESTAMP: Shape = { known: { 1: 0, 2: 0 }, sub: {} };
const PROPERTY_VALUE: Shape = { known: { 1: 2, 2: 0, 3: 2, 4: 0 }, sub: {} };
const PROPERTY_ENTRY: Shape = { known: { 1: 2, 2: 2 }, sub: { 2: PROPERTY_VALUE } };
const TRACE_CONTEXT: Shape = { known: { 1: 2, 2: 2 }, sub: {} };
const EVENT: Shape = { known: { 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2 }, sub: { 4: TIMESTAMP, 5: PROPERTY_ENTRY, 6: TRACE_CONTEXT } };

function expectSameAsProtobufEs(bytes: Uint8Array): void {
  expectSameDecoding(() => eventFromPb(fromBinary(EventSchema, bytes)), () => decodeEventInput(bytes), (e) => e instanceof WireError);
}

describe("decodeEventInput on malformed input (as protobuf-es 2.13 reads it)", () => {
  it("throws WireError iff fromBinary throws, else gives the same event: random field soups with wrong wire types, bad tags, bad lengths, truncations (20,000 runs)", () => {
    fc.assert(fc.property(mutated(soupOf(EVENT, 3)), expectSameAsProtobufEs), { numRuns: 20_000 });
  });

  it("throws WireError iff fromBinary throws, else gives the same event: valid events with a byte flipped, a wire type changed or cut short (5,000 runs)", () => {
    const valid = pbEvent.map((e) => [...toBinary(EventSchema, create(EventSchema, { id: e.id, customerId: e.customerId, type: e.type, timestamp: e.timestamp, properties: e.properties, traceContext: e.traceContext }))]);
    fc.assert(fc.property(mutated(valid), expectSameAsProtobufEs), { numRuns: 5_000 });
  });

  it("reads a known field by its declared type whatever its wire type, as protobuf-es does", () => {
    const cases: Array<[string, number[], Partial<ReturnType<typeof decodeEventInput>> | "throws"]> = [
      // id (1, string) sent as a varint: the varint is read as the string's length.
      ["string as varint", [0x08, 0x02, 0x68, 0x69], { id: "hi" }],
      ["string as I64, length past the end", [0x09, 0x05, 0x68], "throws"],
      // timestamp (4, message) sent as a varint: read as the message's length.
      ["message as varint", [0x20, 0x02, 0x08, 0x05], { timestamp: 5_000_000n }],
      // seconds (int64) sent as LEN: the varint 1 is read, then 05 is a tag of field 0.
      ["int64 as LEN 12 01 05 in a timestamp", [0x22, 0x03, 0x0a, 0x01, 0x05], "throws"],
      ["int64 as LEN in a timestamp", [0x22, 0x02, 0x0a, 0x07], { timestamp: 7_000_000n }],
      // A sub-message's last field may run past its length: protobuf-es reads on from there.
      ["timestamp field overruns its length", [0x22, 0x01, 0x08, 0x05, 0x0a, 0x01, 0x78], { timestamp: 5_000_000n, id: "x" }],
      // PropertyValue int_value (2, int64) sent as I32, bool_value (4) sent as LEN.
      ["int_value as I32", [0x2a, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x15], "throws"],
      ["int_value as I32 (4 bytes of varint)", [0x2a, 0x07, 0x0a, 0x01, 0x6b, 0x12, 0x02, 0x15, 0x09], { properties: { k: { kind: "int", value: 9n } } }],
      ["bool_value as LEN", [0x2a, 0x07, 0x0a, 0x01, 0x6b, 0x12, 0x02, 0x22, 0x01], { properties: { k: { kind: "bool", value: true } } }],
      // A second value in one map entry replaces the first (a fresh PropertyValue, not merged).
      ["second empty value replaces the first", [0x2a, 0x09, 0x0a, 0x01, 0x6b, 0x12, 0x02, 0x10, 0x01, 0x12, 0x00], { properties: { k: undefined } }],
      // In a map entry an unknown field number consumes only its tag.
      ["map entry unknown field is a bare tag", [0x2a, 0x04, 0x18, 0x0a, 0x01, 0x61], { properties: { a: undefined } }],
      ["map entry unknown field payload read as a tag", [0x2a, 0x02, 0x18, 0x00], "throws"],
      ["string length 2^32+2", [0x0a, 0x83, 0x80, 0x80, 0x80, 0x10, 0x6f, 0x6b], "throws"],
      ["string length 2^32+2 (wraps to 2)", [0x0a, 0x82, 0x80, 0x80, 0x80, 0x10, 0x6f, 0x6b], { id: "ok" }],
      ["unknown varint of 12 bytes", [0x98, 0x06, ...paddedVarint(1n, 12)], {}],
      ["known varint of 11 bytes", [0x20, 0x0b, 0x08, ...paddedVarint(1n, 11)], "throws"],
      ["lone end group on an unknown field", [0x9c, 0x06], "throws"],
    ];
    for (const [name, bytes, want] of cases) {
      const b = Uint8Array.from(bytes);
      if (want === "throws") {
        expect(() => fromBinary(EventSchema, b), name).toThrow();
        expect(() => decodeEventInput(b), name).toThrow(WireError);
      } else {
        expect(decodeEventInput(b), name).toMatchObject(want);
      }
      expectSameAsProtobufEs(b);
    }
  });

  it("refuses tags that do not fit in 32 bits, as protobuf-es does, and accepts field number 2^29-1", () => {
    const refused = [
      [0x80, 0x80, 0x80, 0x80, 0x10, 0x00], // 5th byte > 0x0f: tag >= 2^32
      [0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00],
      [0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00], // 6-byte tag
      [0x2a, 0x03, 0x80, 0x80, 0x80], // inside a map entry: a truncated tag
      [0x22, 0x06, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00], // inside a timestamp
      [0x0f], // wire type 7
      [0x00, 0x01], // field 0
    ];
    for (const bytes of refused) {
      const b = Uint8Array.from(bytes);
      expect(() => fromBinary(EventSchema, b), bytes.join(" ")).toThrow();
      expect(() => decodeEventInput(b), bytes.join(" ")).toThrow(WireError);
    }
    const maxField = Uint8Array.from([0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x0a, 0x01, 0x7a]); // field 2^29-1 varint 1, then id "z"
    expect(decodeEventInput(maxField).id).toBe("z");
    expectSameAsProtobufEs(maxField);
  });
});
