// The hand encoder of CreateTransfersItemResult gives protobuf-es's bytes exactly, and a response
// view of them decodes as the generated CreateTransfersResponse.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  NewTransferSchema,
  CreateTransfersItemResultSchema,
  CreateTransfersResponseSchema,
  CreateTransfersResponseViewSchema,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CREATE_TRANSFER_RESULTS, type CreateTransferItemResult } from "./domain/results.js";
import { newTransferFromPb, TimestampNanosError, transferItemResultToPb } from "./mapping.js";
import { decodeNewTransfer, encodeTransferItemResult, WireError } from "./wire.js";
import { expectSameDecoding, mutated, paddedVarint, soupOf, tagBytes, varintOf, type Shape } from "../../../test/support/proto-fuzz.js";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
// Timestamps protobuf can carry: seconds within int64 once divided.
const US_MIN = -(2n ** 62n);
const US_MAX = 2n ** 62n;

const result: fc.Arbitrary<CreateTransferItemResult> = fc.record({
  result: fc.constantFrom(...CREATE_TRANSFER_RESULTS),
  id: fc.oneof(fc.constant(""), fc.string({ maxLength: 40 }), fc.string({ unit: "grapheme", maxLength: 20 }), fc.constant("xfer_\u00e9\u{1F600}")),
  amountNanos: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 10n ** 18n }), fc.bigInt({ min: INT64_MIN, max: INT64_MAX })),
  timestampUs: fc.oneof(fc.constant(null), fc.constant(0n), fc.constant(-1n), fc.constant(999_999n), fc.bigInt({ min: US_MIN, max: US_MAX }), fc.bigInt({ min: 1_700_000_000_000_000n, max: 1_900_000_000_000_000n })),
});

describe("encodeTransferItemResult", () => {
  it("writes the bytes protobuf-es writes for the same result (5,000 random results)", () => {
    fc.assert(
      fc.property(result, (r) => {
        expect(encodeTransferItemResult(r)).toEqual(toBinary(CreateTransfersItemResultSchema, transferItemResultToPb(r)));
      }),
      { numRuns: 5_000 },
    );
  });

  it("a view of encoded results decodes as the generated CreateTransfersResponse", () => {
    fc.assert(
      fc.property(fc.array(result, { maxLength: 50 }), (rs) => {
        const bytes = toBinary(CreateTransfersResponseViewSchema, create(CreateTransfersResponseViewSchema, { results: rs.map(encodeTransferItemResult) }));
        expect(bytes).toEqual(toBinary(CreateTransfersResponseSchema, create(CreateTransfersResponseSchema, { results: rs.map(transferItemResultToPb) })));
        expect(fromBinary(CreateTransfersResponseSchema, bytes).results.map((x) => x.id)).toEqual(rs.map((r) => r.id));
      }),
      { numRuns: 500 },
    );
  });
});

const str = fc.oneof(fc.constant(""), fc.string({ maxLength: 24 }), fc.string({ unit: "grapheme", maxLength: 12 }), fc.constant("\uFEFFbom"));
const newTransfer = fc.record({
  id: str,
  debitAccountId: str,
  creditAccountId: str,
  amountNanos: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 10n ** 18n }), fc.bigInt({ min: INT64_MIN, max: INT64_MAX })),
  unit: str,
  pendingId: str,
  timeoutSeconds: fc.nat({ max: 2 ** 32 - 1 }),
  code: fc.nat({ max: 2 ** 32 - 1 }),
  flags: fc.option(
    fc.record({ linked: fc.boolean(), pending: fc.boolean(), postPendingTransfer: fc.boolean(), voidPendingTransfer: fc.boolean(), balancingDebit: fc.boolean(), balancingCredit: fc.boolean(), closingDebit: fc.boolean(), closingCredit: fc.boolean(), imported: fc.boolean() }),
    { nil: undefined },
  ),
  references: fc.dictionary(str, str, { maxKeys: 4 }),
  // Mostly valid nanos; sometimes any int32 (outside 0..999,999,999: TimestampNanosError on both paths).
  timestamp: fc.option(
    fc.record({
      seconds: fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }),
      nanos: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 999_999_999 }) }, { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }),
    }),
    { nil: undefined },
  ),
});

/** The decoded transfer, or the TimestampNanosError's message as a value (both paths must agree on it exactly). */
function settle(f: () => unknown): unknown {
  try {
    return f();
  } catch (e) {
    if (e instanceof TimestampNanosError) return { timestampNanosError: e.message };
    throw e;
  }
}
/** Bytes of an unknown field (number 100-120) of any wire type protobuf-es skips. */
const unknownField = fc.oneof(
  fc.tuple(fc.integer({ min: 100, max: 120 }), fc.nat()).map(([no, v]) => Uint8Array.from([...varintBytes(no * 8), ...varintBytes(v)])),
  fc.tuple(fc.integer({ min: 100, max: 120 }), fc.uint8Array({ maxLength: 8 })).map(([no, b]) => Uint8Array.from([...varintBytes(no * 8 + 2), b.length, ...b])),
  fc.integer({ min: 100, max: 120 }).map((no) => Uint8Array.from([...varintBytes(no * 8 + 5), 1, 2, 3, 4])),
  fc.integer({ min: 100, max: 120 }).map((no) => Uint8Array.from([...varintBytes(no * 8 + 1), 1, 2, 3, 4, 5, 6, 7, 8])),
);
function varintBytes(v: number): number[] {
  const out: number[] = [];
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}
const concat = (parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));

describe("decodeNewTransfer", () => {
  it("gives what newTransferFromPb(fromBinary(...)) gives, with unknown fields and messages concatenated (merged) (3,000 random transfers)", () => {
    fc.assert(
      fc.property(fc.array(newTransfer, { minLength: 1, maxLength: 3 }), fc.array(unknownField, { maxLength: 3 }), (ts, unknown) => {
        const bytes = concat([...ts.map((t) => toBinary(NewTransferSchema, create(NewTransferSchema, t))), ...unknown]);
        expect(settle(() => decodeNewTransfer(bytes))).toEqual(settle(() => newTransferFromPb(fromBinary(NewTransferSchema, bytes))));
      }),
      { numRuns: 3_000 },
    );
  });

  it("throws TimestampNanosError, as newTransferFromPb does, when the timestamp's nanos is outside 0..999,999,999 (no silent borrow from seconds)", () => {
    for (const nanos of [-5, -1, 1_000_000_000, 2 ** 31 - 1, -(2 ** 31)]) {
      const bytes = toBinary(NewTransferSchema, create(NewTransferSchema, { id: "xfer_1", timestamp: { seconds: 1n, nanos } }));
      expect(() => decodeNewTransfer(bytes), String(nanos)).toThrow(new TimestampNanosError(nanos));
      expect(() => newTransferFromPb(fromBinary(NewTransferSchema, bytes)), String(nanos)).toThrow(new TimestampNanosError(nanos));
    }
    for (const [nanos, us] of [[0, 1_000_000n], [999, 1_000_000n], [1_000, 1_000_001n], [999_999_999, 1_999_999n]] as const) {
      const bytes = toBinary(NewTransferSchema, create(NewTransferSchema, { id: "xfer_1", timestamp: { seconds: 1n, nanos } }));
      expect(decodeNewTransfer(bytes).timestampUs).toBe(us);
      expect(newTransferFromPb(fromBinary(NewTransferSchema, bytes)).timestampUs).toBe(us);
    }
    // Malformed bytes are still WireError first (the whole message is read before the timestamp is checked).
    const badNanos = [...toBinary(NewTransferSchema, create(NewTransferSchema, { timestamp: { seconds: 1n, nanos: -5 } }))];
    expect(() => decodeNewTransfer(Uint8Array.from([...badNanos, 0x0f]))).toThrow(WireError);
  });

  it("throws WireError on truncated or malformed bytes, and on invalid UTF-8 in a string", () => {
    const good = toBinary(NewTransferSchema, create(NewTransferSchema, { id: "xfer_1", debitAccountId: "a", creditAccountId: "b", amountNanos: 5n, unit: "USD", code: 1 }));
    for (let n = 1; n < good.length; n++) {
      let threw = false;
      try {
        decodeNewTransfer(good.subarray(0, n));
      } catch (e) {
        threw = e instanceof WireError;
      }
      // A cut inside a field must throw; a cut between fields is a valid shorter message.
      if (!threw) expect(() => fromBinary(NewTransferSchema, good.subarray(0, n))).not.toThrow();
    }
    expect(() => decodeNewTransfer(Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]))).toThrow(WireError);
    expect(() => decodeNewTransfer(Uint8Array.from([0x0f]))).toThrow(WireError);
    expect(() => decodeNewTransfer(Uint8Array.from([0x00, 0x01]))).toThrow(WireError);
  });
});

// ---- Malformed input: the hand decoder must throw WireError exactly where fromBinary throws and
// otherwise give the same domain value. protobuf-es 2.13 reads a known field by its declared type
// whatever its wire type, so wrong wire types on known fields are the interesting mutations.

/** A message's known field numbers with their declared wire types, and its message-typed (or map entry) fields' shapes. */
const TIMESTAMP: Shape = { known: { 1: 0, 2: 0 }, sub: {} };
const FLAGS: Shape = { known: { 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: 0 }, sub: {} };
const REF_ENTRY: Shape = { known: { 1: 2, 2: 2 }, sub: {} };
const NEW_TRANSFER: Shape = { known: { 1: 2, 2: 2, 3: 2, 4: 0, 5: 2, 6: 2, 7: 0, 8: 0, 9: 2, 10: 2, 11: 2 }, sub: { 9: FLAGS, 10: REF_ENTRY, 11: TIMESTAMP } };

function expectSameAsProtobufEs(bytes: Uint8Array): void {
  expectSameDecoding(() => settle(() => newTransferFromPb(fromBinary(NewTransferSchema, bytes))), () => settle(() => decodeNewTransfer(bytes)), (e) => e instanceof WireError);
}

describe("decodeNewTransfer on malformed input (as protobuf-es 2.13 reads it)", () => {
  it("throws WireError iff fromBinary throws, else gives the same transfer: random field soups with wrong wire types, bad tags, bad lengths, truncations (20,000 runs)", () => {
    fc.assert(fc.property(mutated(soupOf(NEW_TRANSFER)), expectSameAsProtobufEs), { numRuns: 20_000 });
  });

  it("throws WireError iff fromBinary throws, else gives the same transfer: valid transfers with a byte flipped, a wire type changed or cut short (5,000 runs)", () => {
    const valid = newTransfer.map((t) => [...toBinary(NewTransferSchema, create(NewTransferSchema, t))]);
    fc.assert(fc.property(mutated(valid), expectSameAsProtobufEs), { numRuns: 5_000 });
  });

  it("reads a known field by its declared type whatever its wire type, as protobuf-es does", () => {
    const cases: Array<[string, number[], Partial<ReturnType<typeof decodeNewTransfer>> | "throws"]> = [
      // amount_nanos (4, int64) sent as LEN: the varint 1 is read, then 05 is a tag of field 0.
      ["int64 as LEN 22 01 05", [0x22, 0x01, 0x05], "throws"],
      ["int64 as LEN 22 05", [0x22, 0x05], { amountNanos: 5n }],
      ["int64 as I64", [0x21, 0x07], { amountNanos: 7n }],
      ["int64 as I32", [0x25, 0x7f], { amountNanos: 127n }],
      ["int64 as start group", [0x23, 0x02], { amountNanos: 2n }],
      ["int64 as end group", [0x24, 0x02], { amountNanos: 2n }],
      // id (1, string) sent as a varint: the varint is read as the string's length.
      ["string as varint", [0x08, 0x02, 0x68, 0x69], { id: "hi" }],
      ["string as I32, length past the end", [0x0d, 0x05, 0x68], "throws"],
      // timestamp (11, message) sent as a varint: read as the message's length.
      ["message as varint", [0x58, 0x02, 0x08, 0x05], { timestampUs: 5_000_000n }],
      ["code (uint32) as I64", [0x41, 0x80, 0x01], { code: 128 }],
      // A sub-message's last field may run past its length: protobuf-es reads on from there.
      ["timestamp field overruns its length", [0x5a, 0x01, 0x08, 0x05, 0x0a, 0x01, 0x78], { timestampUs: 5_000_000n, id: "x" }],
      // A length of 2^32 + 2 is read as uint32 (low 32 bits): 2.
      ["string length 2^32+2", [0x0a, ...varintOf(2n ** 32n + 2n), 0x6f, 0x6b], { id: "ok" }],
      // In a map entry an unknown field number consumes only its tag: 18 (field 3 varint), then key "a".
      ["map entry unknown field is a bare tag", [0x52, 0x04, 0x18, 0x0a, 0x01, 0x61], { references: { a: "" } }],
      ["map entry unknown field payload read as a tag", [0x52, 0x02, 0x18, 0x00], "throws"],
      // An unknown field's varint may have any length when skipped; a known field's may not exceed 10 bytes.
      ["unknown varint of 12 bytes", [0x98, 0x06, ...paddedVarint(1n, 12)], {}],
      ["known varint of 11 bytes", [0x20, ...paddedVarint(1n, 11)], "throws"],
      ["lone end group on an unknown field", [0x9c, 0x06], "throws"],
    ];
    for (const [name, bytes, want] of cases) {
      const b = Uint8Array.from(bytes);
      if (want === "throws") {
        expect(() => fromBinary(NewTransferSchema, b), name).toThrow();
        expect(() => decodeNewTransfer(b), name).toThrow(WireError);
      } else {
        expect(decodeNewTransfer(b), name).toMatchObject(want);
      }
      expectSameAsProtobufEs(b);
    }
  });

  it("refuses tags that do not fit in 32 bits, as protobuf-es does, and accepts field number 2^29-1", () => {
    const refused = [
      [0x80, 0x80, 0x80, 0x80, 0x10, 0x00], // 5th byte > 0x0f: tag >= 2^32
      [0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00],
      [0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00], // 6-byte tag (field 1 varint, redundantly encoded)
      [0x0f], // wire type 7
      [0x0e, 0x00], // wire type 6
      [0x00, 0x01], // field 0
      [0x80, 0x80, 0x80, 0x80, 0x00, 0x00], // field 0 in 5 bytes
    ];
    for (const bytes of refused) {
      const b = Uint8Array.from(bytes);
      expect(() => fromBinary(NewTransferSchema, b), bytes.join(" ")).toThrow();
      expect(() => decodeNewTransfer(b), bytes.join(" ")).toThrow(WireError);
    }
    const maxField = Uint8Array.from([0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x0a, 0x01, 0x7a]); // field 2^29-1 varint 1, then id "z"
    expect(decodeNewTransfer(maxField).id).toBe("z");
    expectSameAsProtobufEs(maxField);
    const redundant = Uint8Array.from([0x8a, 0x80, 0x80, 0x80, 0x00, 0x01, 0x79]); // field 1 LEN tag in 5 bytes
    expect(decodeNewTransfer(redundant).id).toBe("y");
    expectSameAsProtobufEs(redundant);
  });

  it("skips groups nested up to protobuf-es's recursion limit (99 deep at the top level) and no deeper", () => {
    const nested = (depth: number) => {
      const open: number[] = [];
      const close: number[] = [];
      for (let i = 0; i < depth; i++) {
        open.push(...tagBytes(100 + (i % 5), 3));
        close.unshift(...tagBytes(100 + (i % 5), 4));
      }
      return Uint8Array.from([...open, ...close]);
    };
    expect(() => decodeNewTransfer(nested(99))).not.toThrow();
    expectSameAsProtobufEs(nested(99));
    expect(() => decodeNewTransfer(nested(100))).toThrow(WireError);
    expectSameAsProtobufEs(nested(100));
    // In a sub-message (depth 2), one level less.
    const inTimestamp = (depth: number) => {
      const g = nested(depth);
      return Uint8Array.from([0x5a, ...varintOf(BigInt(g.length)), ...g]);
    };
    expectSameAsProtobufEs(inTimestamp(98));
    expect(() => decodeNewTransfer(inTimestamp(98))).not.toThrow();
    expect(() => decodeNewTransfer(inTimestamp(99))).toThrow(WireError);
    expectSameAsProtobufEs(inTimestamp(99));
  });
});
