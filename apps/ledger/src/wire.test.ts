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
import { newTransferFromPb, transferItemResultToPb } from "./mapping.js";
import { decodeNewTransfer, encodeTransferItemResult, WireError } from "./wire.js";

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
  timestamp: fc.option(fc.record({ seconds: fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }), nanos: fc.integer({ min: 0, max: 999_999_999 }) }), { nil: undefined }),
});
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
        expect(decodeNewTransfer(bytes)).toEqual(newTransferFromPb(fromBinary(NewTransferSchema, bytes)));
      }),
      { numRuns: 3_000 },
    );
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
