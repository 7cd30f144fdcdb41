import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { IngestEventsResponseSchema, IngestResultSchema, type IngestResult } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeResults, responseWithEncodedResults } from "./result-codec.js";

const text = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: "grapheme", maxLength: 12 }), fc.string({ unit: "binary", maxLength: 8 }), fc.constant(""));
const result: fc.Arbitrary<IngestResult> = fc
  .record({
    eventId: text,
    // The server sends 1-4; any int32 (negatives are ten-byte varints) is encoded as protobuf-es does.
    status: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
    field: text,
    reason: text,
    message: fc.oneof(text, fc.string({ minLength: 120, maxLength: 400 })),
    sequence: fc.oneof(fc.constant(0n), fc.bigInt({ min: 1n, max: 1n << 40n }), fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n })),
  })
  .map((r) => create(IngestResultSchema, r));
const counts = fc.record({
  acceptedCount: fc.nat({ max: 20_000 }),
  duplicateCount: fc.nat({ max: 20_000 }),
  conflictCount: fc.nat({ max: 20_000 }),
  rejectedCount: fc.nat({ max: 20_000 }),
});

describe("hand-written IngestEventsResponse results", () => {
  it("encode the results byte for byte as protobuf-es writes IngestEventsResponse field 1", () => {
    fc.assert(
      fc.property(fc.array(result, { maxLength: 20 }), (results) => {
        const reflective = toBinary(IngestEventsResponseSchema, create(IngestEventsResponseSchema, { results }));
        expect(Buffer.from(encodeResults(results))).toEqual(Buffer.from(reflective));
      }),
      { numRuns: 1_000 },
    );
  });

  it("make a response that decodes to the reflective one (results in order, counts)", () => {
    fc.assert(
      fc.property(fc.array(result, { maxLength: 50 }), counts, (results, c) => {
        const fast = toBinary(IngestEventsResponseSchema, responseWithEncodedResults(results, c));
        const reflective = toBinary(IngestEventsResponseSchema, create(IngestEventsResponseSchema, { results, ...c }));
        expect(fromBinary(IngestEventsResponseSchema, fast)).toEqual(fromBinary(IngestEventsResponseSchema, reflective));
        expect(fast.length).toBe(reflective.length);
        // The counts (fields 2-5) and then the results run, verbatim.
        expect(Buffer.from(fast)).toEqual(Buffer.concat([toBinary(IngestEventsResponseSchema, create(IngestEventsResponseSchema, c)), encodeResults(results)]));
      }),
      { numRuns: 1_000 },
    );
  });
});
