// The hand encoder of CreateTransfersItemResult gives protobuf-es's bytes exactly, and a response
// view of them decodes as the generated CreateTransfersResponse.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  CreateTransfersItemResultSchema,
  CreateTransfersResponseSchema,
  CreateTransfersResponseViewSchema,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CREATE_TRANSFER_RESULTS, type CreateTransferItemResult } from "./domain/results.js";
import { transferItemResultToPb } from "./mapping.js";
import { encodeTransferItemResult } from "./wire.js";

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
