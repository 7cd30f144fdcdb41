import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventSchema, IngestStatus, PropertyValueSchema, type PropertyValue } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { testBackends } from "@nanobill/db";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, openHarness, T0, type Harness } from "./test-support.js";

const EXPECTED_CODES = new Set([Code.InvalidArgument, Code.NotFound, Code.ResourceExhausted, Code.AlreadyExists, Code.PermissionDenied]);

const arbText = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom("", "evt_1", "cus_1", "llm.call", "a".repeat(200), "\u0000", "é", "../x", "x\u0000y"));
const arbProp: fc.Arbitrary<PropertyValue> = fc.oneof(
  fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom("a\u0000b", "\u0000")).map((v) => create(PropertyValueSchema, { kind: { case: "stringValue", value: v } })),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((v) => create(PropertyValueSchema, { kind: { case: "intValue", value: v } })),
  fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom("1.5", "-0", "1e9", "NaN", "9".repeat(40), "0." + "1".repeat(25))).map((v) =>
    create(PropertyValueSchema, { kind: { case: "decimalValue", value: v } }),
  ),
  fc.boolean().map((v) => create(PropertyValueSchema, { kind: { case: "boolValue", value: v } })),
  fc.constant(create(PropertyValueSchema, {})),
);
const arbEvent = fc
  .record({
    id: arbText,
    customerId: arbText,
    type: arbText,
    seconds: fc.option(fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }), { nil: undefined }),
    nanos: fc.integer({ min: -2, max: 1_000_000_001 }),
    near: fc.boolean(),
    props: fc.dictionary(fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom("input_tokens", "x_count", "model")), arbProp, { maxKeys: 8 }),
    tp: fc.option(fc.oneof(fc.string({ maxLength: 60 }), fc.constant("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")), { nil: undefined }),
  })
  .map((r) =>
    create(EventSchema, {
      id: r.id,
      customerId: r.customerId,
      type: r.type,
      timestamp:
        r.seconds === undefined ? undefined : { $typeName: "google.protobuf.Timestamp", seconds: r.near ? BigInt(Math.floor(T0.getTime() / 1000)) - (r.seconds % 1000n) : r.seconds, nanos: r.nanos },
      properties: r.props,
      traceContext: r.tp === undefined ? undefined : { $typeName: "nanobill.common.v1.TraceContext", traceparent: r.tp, tracestate: "" },
    }),
  );

const [backend] = testBackends();

describe("fuzz: malformed requests never yield Internal", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await openHarness(await backend!.open());
  });
  afterAll(async () => {
    await h?.close();
  });

  it("IngestEvents answers every random batch with per-event results or a named InvalidArgument", async () => {
    const c = h.client(KEYS.adminA);
    await fc.assert(
      fc.asyncProperty(fc.array(arbEvent, { minLength: 0, maxLength: 12 }), async (events) => {
        try {
          const res = await c.ingestEvents({ events });
          expect(res.results.length).toBe(events.length);
          for (const r of res.results) {
            expect(r.status).not.toBe(IngestStatus.UNSPECIFIED);
            if (r.status === IngestStatus.REJECTED) expect(r.field).not.toBe("");
          }
        } catch (e) {
          const err = ConnectError.from(e);
          expect(EXPECTED_CODES.has(err.code), `${Code[err.code]}: ${err.message}`).toBe(true);
        }
      }),
      { numRuns: 80 },
    );
  });

  it("ReadEvents, QueryUsage (paged or not), CreateMeter, ListMeters and DeleteMeter answer random arguments without Internal", async () => {
    const admin = h.client(KEYS.adminA);
    const internal = h.client(KEYS.internal);
    await fc.assert(
      fc.asyncProperty(
        fc.bigInt({ min: -5n, max: 2n ** 62n }),
        fc.integer({ min: 0, max: 20_000 }),
        fc.integer({ min: 0, max: 40 }),
        arbText,
        fc.integer({ min: 0, max: 6 }),
        fc.array(arbText, { maxLength: 3 }),
        fc.integer({ min: 0, max: 7 }),
        fc.bigInt({ min: -10n, max: 2n ** 36n }),
        fc.bigInt({ min: -10n, max: 2n ** 36n }),
        async (after, max, wait, text, agg, list, win, s, e) => {
          const calls: Array<Promise<unknown>> = [
            internal.readEvents({ afterSequence: after, maxEvents: max, waitMs: wait }),
            admin.createMeter({ meter: { id: text, eventType: text, aggregation: agg, valueProperty: list[0] ?? "", groupBy: list, filters: [{ property: text, operator: win % 6, values: list }] } }),
            admin.queryUsage({
              meterId: text,
              window: win,
              startTime: { seconds: s, nanos: 0 },
              endTime: { seconds: e, nanos: 0 },
              groupBy: list,
              customerIds: list,
              ...(win % 2 ? { page: { pageSizeMax: max, pageToken: text } } : {}),
            }),
            admin.listMeters({ page: { pageSizeMax: max % 200, pageToken: text } }),
            admin.deleteMeter({ meterId: text }),
            admin.closeUsagePeriod({ customerId: text, closeTime: { seconds: s, nanos: win } }),
          ];
          for (const r of await Promise.allSettled(calls)) {
            if (r.status === "fulfilled") continue;
            const ce = ConnectError.from(r.reason);
            expect(EXPECTED_CODES.has(ce.code), `${Code[ce.code]}: ${ce.message}`).toBe(true);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it("IngestStream answers random streams (empty, oversized and malformed messages) in order or with a named error", async () => {
    const c = h.client(KEYS.ingestA);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(arbEvent, { minLength: 0, maxLength: 8 }), { minLength: 0, maxLength: 5 }), async (messages) => {
        async function* stream() {
          for (const events of messages) yield { events };
        }
        try {
          const res = await c.ingestStream(stream());
          // Every message was answered (an empty one would have been refused), in send order.
          expect(res.results.map((r) => r.eventId)).toEqual(messages.flat().map((e) => e.id));
          for (const r of res.results) if (r.status === IngestStatus.REJECTED) expect(r.field).not.toBe("");
        } catch (e) {
          const err = ConnectError.from(e);
          expect(EXPECTED_CODES.has(err.code), `${Code[err.code]}: ${err.message}`).toBe(true);
          if (err.code === Code.InvalidArgument) expect(err.rawMessage).toMatch(/^events/);
        }
      }),
      { numRuns: 40 },
    );
  });
});
