// ReadEvents pages end early at a byte budget (READ_PAGE_BYTES_MAX; lowered here): large events
// never make a page pass the response limit, and reading on from last_sequence still gives every
// event exactly once, in order, also per partition.
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EventSchema, StoredEventSchema, type PropertyValue } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { testBackends } from "@nanobill/db";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredEvent } from "./store/store.js";
import { storedEventSizeBound, storedEventToPb } from "./mapping.js";
import { KEYS, openHarness, T0, type Harness } from "./test-support.js";

const str = (v: string): PropertyValue => ({ $typeName: "nanobill.metering.v1.PropertyValue", kind: { case: "stringValue", value: v } });
const BUDGET = 40_000;

describe("storedEventSizeBound", () => {
  it("is at least the binary size of the stored event", () => {
    const text = fc.string({ unit: "grapheme", maxLength: 40 });
    const value = fc.oneof(
      fc.record({ kind: fc.constant("string" as const), value: text }),
      fc.record({ kind: fc.constant("int" as const), value: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) }),
      fc.record({ kind: fc.constant("decimal" as const), value: fc.stringMatching(/^-?\d{1,30}(\.\d{1,18})?$/) }),
      fc.record({ kind: fc.constant("bool" as const), value: fc.boolean() }),
    );
    fc.assert(
      fc.property(text, text, text, text, fc.dictionary(fc.stringMatching(/^[a-z_][a-z0-9_]{0,20}$/), value, { maxKeys: 10 }), text, fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }), (tenant, id, customerId, type, properties, tracestate, sequence) => {
        const e: StoredEvent = { tenant, sequence, id, customerId, type, timestampUs: -(2n ** 62n), properties, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate, receivedUs: 2n ** 62n };
        expect(storedEventSizeBound(e)).toBeGreaterThanOrEqual(toBinary(StoredEventSchema, storedEventToPb(e)).length);
      }),
      { numRuns: 2_000 },
    );
  });

  it("with json, is at least the JSON size of the stored event, control characters and lone surrogates escaped", () => {
    const text = fc.string({ unit: fc.oneof(fc.constantFrom("\u0001", "\u001f", '"', "\\", "\ud800", "\udfff"), fc.string({ unit: "binary", minLength: 1, maxLength: 1 })), maxLength: 40 });
    const value = fc.oneof(
      fc.record({ kind: fc.constant("string" as const), value: text }),
      fc.record({ kind: fc.constant("int" as const), value: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) }),
      fc.record({ kind: fc.constant("decimal" as const), value: fc.stringMatching(/^-?\d{1,30}(\.\d{1,18})?$/) }),
      fc.record({ kind: fc.constant("bool" as const), value: fc.boolean() }),
    );
    const us = fc.bigInt({ min: -62_135_596_800_000_000n, max: 253_402_300_799_999_999n });
    fc.assert(
      fc.property(text, text, text, text, fc.dictionary(text, value, { maxKeys: 10 }), text, fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }), us, us, (tenant, id, customerId, type, properties, tracestate, sequence, timestampUs, receivedUs) => {
        const e: StoredEvent = { tenant, sequence, id, customerId, type, timestampUs, properties, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate, receivedUs };
        const bytes = Buffer.byteLength(toJsonString(StoredEventSchema, storedEventToPb(e))) + 1; // + the comma between events
        expect(storedEventSizeBound(e, true)).toBeGreaterThanOrEqual(bytes);
        expect(storedEventSizeBound(e, true)).toBeGreaterThanOrEqual(storedEventSizeBound(e));
      }),
      { numRuns: 2_000 },
    );
  });
});

for (const backend of testBackends()) {
  describe(`ReadEvents page byte budget (${backend.name})`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await openHarness(await backend.open(), { readPageBytesMax: BUDGET });
    });
    afterAll(async () => {
      await h?.close();
    });

    it("ends a page of large events early and reads on from its last event, every event once, in order (also per partition)", async () => {
      const big = (i: number) =>
        create(EventSchema, {
          id: `big_${i}`,
          customerId: `cus_${i % 3}`,
          type: "llm.call",
          timestamp: timestampFromDate(new Date(T0.getTime() - 60_000)),
          properties: Object.fromEntries(Array.from({ length: 15 }, (_, k) => [`p${k}`, str("x".repeat(1_000))])),
        });
      const small = (i: number) => create(EventSchema, { id: `small_${i}`, customerId: `cus_${i % 3}`, type: "llm.call", timestamp: timestampFromDate(new Date(T0.getTime() - 60_000)), properties: { n: str("1") } });
      await h.client(KEYS.adminA).ingestEvents({ events: [small(0), big(0), big(1), big(2), small(1), big(3), big(4), small(2)] });
      const internal = h.client(KEYS.internal);
      const readAll = async (partitionCount: number, partition: number) => {
        const ids: string[] = [];
        const seqs: bigint[] = [];
        const sizes: number[] = [];
        let after = 0n;
        for (let i = 0; i < 50; i++) {
          const page = await internal.readEvents({ afterSequence: after, maxEvents: 100, partitionCount, partition });
          if (page.events.length === 0) break;
          sizes.push(page.events.length);
          expect(toBinary(StoredEventSchema, page.events[0]!).length).toBeLessThan(20_000);
          expect(page.events.reduce((n, e) => n + toBinary(StoredEventSchema, e).length, 0)).toBeLessThanOrEqual(page.events.length === 1 ? Infinity : BUDGET);
          if (page.events.length > 0) expect(page.lastSequence).toBe(page.events[page.events.length - 1]!.sequence);
          for (const e of page.events) (ids.push(e.event!.id), seqs.push(e.sequence));
          after = page.lastSequence;
        }
        expect(seqs).toEqual([...seqs].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
        return { ids, sizes };
      };
      // A JSON reader's pages hold the JSON bound: control characters are 6 bytes each in JSON
      // (the properties limit counts them so), and the binary bound counts 3.
      const ctl = (i: number) => create(EventSchema, { ...big(100 + i), id: `ctl_${i}`, properties: { p0: str("\u0001".repeat(1_000)), p1: str("\u0002".repeat(1_000)) } });
      let from = 0n;
      for (let p = await internal.readEvents({ afterSequence: from }); p.events.length > 0; p = await internal.readEvents({ afterSequence: from })) from = p.lastSequence;
      const ing = await h.client(KEYS.adminA).ingestEvents({ events: Array.from({ length: 8 }, (_, i) => ctl(i)) });
      expect(ing.results.map((r) => r.message)).toEqual(Array(8).fill(""));
      const jsonPage = await h.client(KEYS.internal, undefined, true).readEvents({ afterSequence: from, maxEvents: 100 });
      expect(jsonPage.events.map((e) => e.event!.id)).toEqual(["ctl_0", "ctl_1", "ctl_2"]);
      expect(jsonPage.events.reduce((n, e) => n + Buffer.byteLength(toJsonString(StoredEventSchema, e)), 0)).toBeLessThanOrEqual(BUDGET);
      expect(jsonPage.events.reduce((n, e) => n + Buffer.byteLength(toJsonString(StoredEventSchema, e)), 0)).toBeGreaterThan(BUDGET / 2);
      expect((await internal.readEvents({ afterSequence: from, maxEvents: 100 })).events.map((e) => e.event!.id)).toEqual(["ctl_0", "ctl_1", "ctl_2", "ctl_3", "ctl_4", "ctl_5"]);
      const whole = await readAll(0, 0);
      expect(whole.ids.filter((id) => id.startsWith("big_") || id.startsWith("small_")).sort()).toEqual(["big_0", "big_1", "big_2", "big_3", "big_4", "small_0", "small_1", "small_2"]);
      expect(new Set(whole.ids).size).toBe(whole.ids.length);
      expect(Math.max(...whole.sizes)).toBeLessThan(8); // pages ended early
      const parts = [...(await readAll(2, 0)).ids, ...(await readAll(2, 1)).ids].sort();
      expect(parts).toEqual([...whole.ids].sort());
    });
  });
}
