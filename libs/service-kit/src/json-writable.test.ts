import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { create, toJson } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { LookupAccountsResponseSchema } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { jsonWritable } from "./errors.js";

const throws = (f: () => unknown): boolean => {
  try {
    f();
    return false;
  } catch {
    return true;
  }
};

describe("jsonWritable", () => {
  it("throws exactly when toJson throws, for Timestamps nested in lists (random seconds and nanos around the edges)", () => {
    const seconds = fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.constantFrom(-62_135_596_801n, -62_135_596_800n, 0n, 253_402_300_799n, 253_402_300_800n));
    const nanos = fc.oneof(fc.integer({ min: -2_000_000_000, max: 2_000_000_000 }), fc.constantFrom(-1, 0, 999_999_999, 1_000_000_000));
    fc.assert(
      fc.property(fc.array(fc.tuple(seconds, nanos), { maxLength: 3 }), (times) => {
        const msg = create(LookupAccountsResponseSchema, { accounts: times.map(([s, n], i) => ({ id: `a${i}`, createTime: { seconds: s, nanos: n } })) });
        expect(throws(() => jsonWritable(LookupAccountsResponseSchema, msg))).toBe(throws(() => toJson(LookupAccountsResponseSchema, msg)));
      }),
      { numRuns: 2_000 },
    );
  });

  it("throws exactly when toJson throws, for Durations", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }), fc.integer({ min: -1_500_000_000, max: 1_500_000_000 }), (seconds, nanos) => {
        const d = create(DurationSchema, { seconds, nanos });
        expect(throws(() => jsonWritable(DurationSchema, d))).toBe(throws(() => toJson(DurationSchema, d)));
      }),
      { numRuns: 2_000 },
    );
  });
});
