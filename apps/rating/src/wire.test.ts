import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PropertyValueSchema, ReadEventsResponseSchema, StoredEventSchema, type PropertyValue as PbPropertyValue } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { ConsumeItemResultSchema, ConsumeItemSchema, ConsumeRequestSchema, ConsumeResponseSchema } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { storedEventOf, type RatingInput } from "./mapping.js";
import type { WalletItem } from "./store/rated-store.js";
import { ConsumeRequestViewSchema, ConsumeResponseViewSchema, decodeConsumeItemResult, decodeStoredEvent, encodeConsumeItems, ReadEventsResponseViewSchema, WireError, type ReadEventsPageView } from "./wire.js";
import { expectSameDecoding, mutated, soupOf, type Shape } from "../../../test/support/proto-fuzz.js";

const NOW = 1_800_000_000_123;
/**
 * Compared as entries (order included) with the prototype checked: toStrictEqual compares the
 * `constructor` property of two objects by identity, so a property keyed "constructor" would make
 * equal values unequal.
 */
const canon = (i: RatingInput) => ({ ...i, event: { ...i.event, properties: Object.entries(i.event.properties), plain: Object.getPrototypeOf(i.event.properties) === Object.prototype } });
const text = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: "grapheme", maxLength: 12 }), fc.string({ unit: "binary", maxLength: 8 }), fc.constant(""));
const key = fc.oneof(text, fc.constantFrom("__proto__", "0", "7", "10", "model", "constructor"));
const int64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
const pbValue: fc.Arbitrary<PbPropertyValue> = fc
  .oneof(
    text.map((value) => ({ case: "stringValue" as const, value })),
    text.map((value) => ({ case: "decimalValue" as const, value })),
    int64.map((value) => ({ case: "intValue" as const, value })),
    fc.boolean().map((value) => ({ case: "boolValue" as const, value })),
    fc.constant({ case: undefined }),
  )
  .map((kind) => create(PropertyValueSchema, { kind: kind as PbPropertyValue["kind"] }));
const timestamp = fc.option(fc.record({ seconds: fc.bigInt({ min: -(1n << 40n), max: 1n << 40n }), nanos: fc.integer({ min: -5, max: 1_000_000_005 }) }), { nil: undefined });
const unknown = fc.array(fc.tuple(fc.integer({ min: 7, max: 2000 }), fc.uint8Array({ maxLength: 8 })), { maxLength: 2 });

const pbStored = fc.record({
  tenant: text,
  sequence: int64,
  receiveTime: timestamp,
  event: fc.option(
    fc.record({
      id: text,
      customerId: text,
      type: text,
      timestamp,
      properties: fc.dictionary(key, pbValue, { maxKeys: 6 }),
      traceContext: fc.option(fc.record({ traceparent: text, tracestate: text }), { nil: undefined }),
      unknown,
    }),
    { nil: undefined },
  ),
  unknown,
});

const lenUnknown = (u: Array<[number, Uint8Array]>) => u.map(([no, data]) => ({ no, wireType: WireType.LengthDelimited, data: new Uint8Array([data.length, ...data]) }));

type PbStored = typeof pbStored extends fc.Arbitrary<infer T> ? T : never;
function storedBytes(s: PbStored): Uint8Array {
  const msg = create(StoredEventSchema, { tenant: s.tenant, sequence: s.sequence, receiveTime: s.receiveTime, event: s.event === undefined ? undefined : { id: s.event.id, customerId: s.event.customerId, type: s.event.type, timestamp: s.event.timestamp, properties: s.event.properties, traceContext: s.event.traceContext } });
  msg.$unknown = lenUnknown(s.unknown);
  if (msg.event !== undefined && s.event !== undefined) msg.event.$unknown = lenUnknown(s.event.unknown);
  return toBinary(StoredEventSchema, msg);
}

describe("hand-written StoredEvent decoder (ReadEvents pages)", () => {
  it("gives what storedEventOf(fromBinary(...)) gives, for any stored event (unknown fields, odd keys, no timestamp)", () => {
    fc.assert(
      fc.property(pbStored, (s) => {
        const bytes = storedBytes(s);
        expect(canon(decodeStoredEvent(bytes, NOW, 0))).toStrictEqual(canon(storedEventOf(fromBinary(StoredEventSchema, bytes), NOW)));
      }),
      { numRuns: 3_000 },
    );
  });

  it("a page read through the view and decoded event by event equals the page decoded by protobuf-es", () => {
    fc.assert(
      fc.property(fc.array(pbStored, { maxLength: 6 }), int64, unknown, (events, last, u) => {
        const msg = create(ReadEventsResponseSchema, { lastSequence: last });
        for (const s of events) msg.events.push(fromBinary(StoredEventSchema, storedBytes(s)));
        msg.$unknown = lenUnknown(u);
        const page = toBinary(ReadEventsResponseSchema, msg);
        const pb = fromBinary(ReadEventsResponseSchema, page);
        const view = fromBinary(ReadEventsResponseViewSchema, page) as unknown as ReadEventsPageView;
        expect(view.lastSequence).toBe(pb.lastSequence);
        expect(view.events.map((b) => canon(decodeStoredEvent(b, NOW)))).toStrictEqual(pb.events.map((e) => canon(storedEventOf(e, NOW))));
      }),
      { numRuns: 1_000 },
    );
  });

  it("merges repeated sub-messages and keeps the last scalar and the last map value, as protobuf does", () => {
    const a = toBinary(StoredEventSchema, create(StoredEventSchema, { tenant: "a", event: { id: "x", timestamp: { seconds: 100n }, properties: { k: { kind: { case: "intValue", value: 1n } } } } }));
    const b = toBinary(StoredEventSchema, create(StoredEventSchema, { tenant: "b", event: { customerId: "c", timestamp: { nanos: 5_000_000 }, properties: { k: { kind: { case: "stringValue", value: "s" } }, j: { kind: { case: "boolValue", value: true } } } } }));
    const both = new Uint8Array([...a, ...b]);
    const got = decodeStoredEvent(both, NOW, 0);
    expect(canon(got)).toStrictEqual(canon(storedEventOf(fromBinary(StoredEventSchema, both), NOW)));
    expect(got.event).toMatchObject({ tenant: "b", eventId: "x", customerId: "c", timestampMs: 100_005, properties: { k: { kind: "string", value: "s" }, j: { kind: "bool", value: true } } });
  });
});

// Malformed input: WireError exactly where fromBinary throws, else the same value.
const TIMESTAMP: Shape = { known: { 1: 0, 2: 0 }, sub: {} };
const PROPERTY_VALUE: Shape = { known: { 1: 2, 2: 0, 3: 2, 4: 0 }, sub: {} };
const PROPERTY_ENTRY: Shape = { known: { 1: 2, 2: 2 }, sub: { 2: PROPERTY_VALUE } };
const TRACE_CONTEXT: Shape = { known: { 1: 2, 2: 2 }, sub: {} };
const EVENT: Shape = { known: { 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2 }, sub: { 4: TIMESTAMP, 5: PROPERTY_ENTRY, 6: TRACE_CONTEXT } };
const STORED: Shape = { known: { 1: 2, 2: 0, 3: 2, 4: 2 }, sub: { 3: EVENT, 4: TIMESTAMP } };

function expectSameAsProtobufEs(bytes: Uint8Array): void {
  expectSameDecoding(() => canon(storedEventOf(fromBinary(StoredEventSchema, bytes), NOW)), () => canon(decodeStoredEvent(bytes, NOW, 0)), (e) => e instanceof WireError);
}

describe("decodeStoredEvent on malformed input (as protobuf-es 2.13 reads it)", () => {
  it("throws WireError iff fromBinary throws, else gives the same input: random field soups (20,000 runs)", () => {
    fc.assert(fc.property(mutated(soupOf(STORED, 4)), expectSameAsProtobufEs), { numRuns: 20_000 });
  });

  it("throws WireError iff fromBinary throws, else gives the same input: valid events mutated (5,000 runs)", () => {
    fc.assert(fc.property(mutated(pbStored.map((s) => [...storedBytes(s)])), expectSameAsProtobufEs), { numRuns: 5_000 });
  });
});

/** Item texts: also longer than one length byte and non-ASCII past the first 127 characters. */
const itemText = fc.oneof(text, fc.string({ minLength: 100, maxLength: 300 }), fc.tuple(fc.string({ unit: fc.constantFrom("a", "Z", "0", "_"), minLength: 127, maxLength: 130 }), text).map(([a, b]) => a + b));
const walletItem: fc.Arbitrary<WalletItem> = fc.record({
  tenant: text,
  itemId: itemText,
  customerId: itemText,
  unit: text,
  amountNanos: int64,
  eventId: text,
  chargeId: text,
  model: text,
  occurredMs: fc.oneof(fc.integer({ min: -2_000_000_000_000, max: 4_000_000_000_000 }), fc.constantFrom(0, 999, 1000, -1, -999, -1000, -1001)),
  traceparent: text,
  tracestate: text,
});

const pbItem = (w: WalletItem) => create(ConsumeItemSchema, { id: w.itemId, customerId: w.customerId, unit: w.unit, amountNanos: w.amountNanos, eventId: w.eventId, chargeId: w.chargeId, model: w.model, occurredAt: timestampFromMs(w.occurredMs) });

describe("hand-written ConsumeItem encoder", () => {
  it("writes byte for byte what toBinary writes, item by item and as a whole request through the view", () => {
    fc.assert(
      fc.property(fc.array(walletItem, { maxLength: 8 }), (items) => {
        const got = encodeConsumeItems(items);
        expect(got.length).toBe(items.length);
        items.forEach((w, i) => expect(Buffer.from(got[i]!).toString("hex")).toBe(Buffer.from(toBinary(ConsumeItemSchema, pbItem(w))).toString("hex")));
        const viaView = toBinary(ConsumeRequestViewSchema, create(ConsumeRequestViewSchema, { items: got } as never));
        expect(Buffer.from(viaView).toString("hex")).toBe(Buffer.from(toBinary(ConsumeRequestSchema, create(ConsumeRequestSchema, { items: items.map(pbItem) }))).toString("hex"));
      }),
      { numRuns: 3_000 },
    );
  });
});

const pbResult = fc.record({
  id: text,
  result: fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
  consumedNanos: int64,
  shortfallNanos: int64,
  walletId: text,
  error: text,
  replayed: fc.boolean(),
  unknown: fc.array(fc.tuple(fc.integer({ min: 8, max: 2000 }), fc.uint8Array({ maxLength: 8 })), { maxLength: 2 }),
});
type PbResult = typeof pbResult extends fc.Arbitrary<infer T> ? T : never;
function resultBytes(r: PbResult): Uint8Array {
  const m = create(ConsumeItemResultSchema, { id: r.id, result: r.result, consumedNanos: r.consumedNanos, shortfallNanos: r.shortfallNanos, walletId: r.walletId, error: r.error, replayed: r.replayed });
  m.$unknown = lenUnknown(r.unknown);
  return toBinary(ConsumeItemResultSchema, m);
}
const resultOf = (bytes: Uint8Array) => {
  const m = fromBinary(ConsumeItemResultSchema, bytes);
  return { result: m.result as number, error: m.error };
};
const RESULT: Shape = { known: { 1: 2, 2: 0, 3: 0, 4: 0, 5: 2, 6: 2, 7: 0 }, sub: {} };

describe("hand-written ConsumeItemResult decoder (Consume answers)", () => {
  it("gives the result and error fromBinary gives, for any result; a response read through the view equals the response decoded by protobuf-es", () => {
    fc.assert(
      fc.property(fc.array(pbResult, { maxLength: 6 }), (results) => {
        const each = results.map(resultBytes);
        each.forEach((b) => expect(decodeConsumeItemResult(b, 0)).toStrictEqual(resultOf(b)));
        const resp = toBinary(ConsumeResponseSchema, create(ConsumeResponseSchema, { results: each.map((b) => fromBinary(ConsumeItemResultSchema, b)) }));
        const view = fromBinary(ConsumeResponseViewSchema, resp) as unknown as { results: Uint8Array[] };
        expect(view.results.map((b) => decodeConsumeItemResult(b))).toStrictEqual(fromBinary(ConsumeResponseSchema, resp).results.map((r) => ({ result: r.result as number, error: r.error })));
      }),
      { numRuns: 2_000 },
    );
  });

  it("throws WireError iff fromBinary throws, else gives the same: random field soups and mutated results (20,000 + 5,000 runs)", () => {
    const same = (b: Uint8Array) => expectSameDecoding(() => resultOf(b), () => decodeConsumeItemResult(b, 0), (e) => e instanceof WireError);
    fc.assert(fc.property(mutated(soupOf(RESULT, 2)), same), { numRuns: 20_000 });
    fc.assert(fc.property(mutated(pbResult.map((r) => [...resultBytes(r)])), same), { numRuns: 5_000 });
  });
});
