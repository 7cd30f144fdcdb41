import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { EventSchema, PropertyValueSchema, type PropertyValue as PbPropertyValue } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { eventFromPb } from "./mapping.js";
import { decodeEventInput, WireError } from "./wire.js";

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
