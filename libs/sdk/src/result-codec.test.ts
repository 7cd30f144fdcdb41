import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { IngestEventsRequestViewSchema, IngestEventsResponseSchema, IngestResultSchema } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { WireError } from "@nanobill/service-kit";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeIngestResult } from "./result-codec.js";

const text = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: "grapheme", maxLength: 12 }), fc.constant(""));
const result = fc.record({
  eventId: text,
  status: fc.integer({ min: 0, max: 6 }),
  field: text,
  reason: text,
  message: text,
  sequence: fc.oneof(fc.constant(0n), fc.bigInt({ min: 1n, max: 1n << 40n }), fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n })),
});

describe("hand-written IngestResult decoder", () => {
  it("reads a response's results (through the view) as protobuf-es reads the response, unknown fields included", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(result, fc.array(fc.tuple(fc.integer({ min: 7, max: 2000 }), fc.uint8Array({ maxLength: 8 })), { maxLength: 2 })), { maxLength: 10 }),
        fc.nat({ max: 1000 }),
        (rs, accepted) => {
          const results = rs.map(([r, unknown]) => {
            const m = create(IngestResultSchema, r);
            m.$unknown = unknown.map(([no, data]) => ({ no, wireType: WireType.LengthDelimited, data: new Uint8Array([data.length, ...data]) }));
            return m;
          });
          const bytes = toBinary(IngestEventsResponseSchema, create(IngestEventsResponseSchema, { results, acceptedCount: accepted }));
          const reflective = fromBinary(IngestEventsResponseSchema, bytes).results;
          const view = fromBinary(IngestEventsRequestViewSchema, bytes).events;
          expect(view.map(decodeIngestResult)).toEqual(
            reflective.map((r) => ({ eventId: r.eventId, status: r.status, field: r.field, reason: r.reason, message: r.message, sequence: r.sequence })),
          );
        },
      ),
      { numRuns: 1_000 },
    );
  });

  it("throws on a truncated result, as fromBinary does", () => {
    const bytes = toBinary(IngestResultSchema, create(IngestResultSchema, { eventId: "evt_1", status: 1, sequence: 42n }));
    for (let n = 1; n < bytes.length; n++) {
      const cut = bytes.subarray(0, n);
      let reflective: unknown;
      try {
        fromBinary(IngestResultSchema, cut);
      } catch (e) {
        reflective = e;
      }
      if (reflective) expect(() => decodeIngestResult(cut)).toThrow(WireError);
      else expect(decodeIngestResult(cut)).toBeDefined();
    }
  });
});
