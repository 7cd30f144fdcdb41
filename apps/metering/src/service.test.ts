import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import {
  Aggregation,
  EventSchema,
  IngestStatus,
  MeterStatus,
  Window,
  type Event,
  type PropertyValue,
} from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { initTelemetry } from "@nanobill/telemetry";
import { context, trace, TraceFlags } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, openHarness, T0, type Harness } from "./test-support.js";
import { CLOSE_TIME_FUTURE_MS_MAX, EVENTS_PER_REQUEST_MAX } from "./limits.js";

const int = (v: bigint | number): PropertyValue => ({ $typeName: "nanobill.metering.v1.PropertyValue", kind: { case: "intValue", value: BigInt(v) } });
const str = (v: string): PropertyValue => ({ $typeName: "nanobill.metering.v1.PropertyValue", kind: { case: "stringValue", value: v } });

function llmEvent(id: string, over: Partial<Event> = {}): Event {
  return create(EventSchema, {
    id,
    customerId: "cus_1",
    type: "llm.call",
    timestamp: timestampFromDate(new Date(T0.getTime() - 60_000)),
    properties: { model: str("gpt-x"), provider: str("openai"), input_tokens: int(1234), output_tokens: int(567) },
    ...over,
  });
}

async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

for (const backend of testBackends()) {
  describe(`metering service (${backend.name})`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await openHarness(await backend.open());
    });
    afterAll(async () => {
      await h?.close();
    });

    it("accepts a new event, reports a retry as duplicate and a changed reuse as conflict", async () => {
      const c = h.client(KEYS.adminA);
      const first = await c.ingestEvents({ events: [llmEvent("evt_svc_1")] });
      expect(first.results[0]!.status).toBe(IngestStatus.ACCEPTED);
      expect(first.results[0]!.sequence).toBeGreaterThan(0n);
      expect(first.acceptedCount).toBe(1);
      const again = await c.ingestEvents({ events: [llmEvent("evt_svc_1")] });
      expect(again.results[0]!.status).toBe(IngestStatus.DUPLICATE);
      expect(again.results[0]!.sequence).toBe(first.results[0]!.sequence);
      const changed = await c.ingestEvents({ events: [llmEvent("evt_svc_1", { customerId: "cus_2" })] });
      expect(changed.results[0]!.status).toBe(IngestStatus.CONFLICT);
      expect(changed.results[0]!.field).toBe("id");
      expect(changed.conflictCount).toBe(1);
    });

    it("gives one result per event in order and a bad event does not drop the batch", async () => {
      const c = h.client(KEYS.ingestA);
      const res = await c.ingestEvents({
        events: [
          llmEvent("evt_ord_1"),
          llmEvent("evt_ord_2", { customerId: "" }),
          llmEvent("evt_ord_3"),
          llmEvent("evt_ord_1"),
          llmEvent("evt_ord_3", { type: "other" }),
        ],
      });
      expect(res.results.map((r) => [r.eventId, r.status])).toEqual([
        ["evt_ord_1", IngestStatus.ACCEPTED],
        ["evt_ord_2", IngestStatus.REJECTED],
        ["evt_ord_3", IngestStatus.ACCEPTED],
        ["evt_ord_1", IngestStatus.DUPLICATE],
        ["evt_ord_3", IngestStatus.CONFLICT],
      ]);
      expect(res.results[1]!.field).toBe("customer_id");
    });

    it("rejects each malformed event naming its field and writes nothing for it", async () => {
      const c = h.client(KEYS.adminA);
      const cases: Array<[Event, string, string]> = [
        [llmEvent("evt_bad_1", { customerId: "" }), "customer_id", "required"],
        [llmEvent("evt_bad_2", { properties: { input_tokens: int(-5) } }), "properties.input_tokens", "negative"],
        [
          llmEvent("evt_bad_3", { properties: { output_tokens: { $typeName: "nanobill.metering.v1.PropertyValue", kind: { case: "decimalValue", value: "12.5" } } } }),
          "properties.output_tokens",
          "not_integer",
        ],
        [llmEvent("evt_bad_4", { timestamp: { $typeName: "google.protobuf.Timestamp", seconds: 1n, nanos: -1 } }), "timestamp", "unparseable"],
        [llmEvent("evt_bad_5", { timestamp: timestampFromDate(new Date(T0.getTime() + 6 * 60_000)) }), "timestamp", "too_far_in_future"],
        [llmEvent("evt_bad_6", { timestamp: timestampFromDate(new Date(T0.getTime() - 36 * 86_400_000)) }), "timestamp", "period_closed"],
        [llmEvent("", {}), "id", "required"],
        [llmEvent("evt_bad_8", { type: "" }), "type", "required"],
        [llmEvent("evt_bad_9", { properties: { x: { $typeName: "nanobill.metering.v1.PropertyValue", kind: { case: undefined } } } }), "properties.x", "required"],
      ];
      const res = await c.ingestEvents({ events: cases.map((x) => x[0]) });
      res.results.forEach((r, i) => {
        expect(r.status).toBe(IngestStatus.REJECTED);
        expect(r.field).toBe(cases[i]![1]);
        expect(r.reason).toBe(cases[i]![2]);
        expect(r.message).toContain(cases[i]![1]);
      });
      const stored = await h.service.store.listTenantEvents("tnt_a", 10_000);
      expect(stored.filter((e) => e.id.startsWith("evt_bad_"))).toEqual([]);
    });

    it("refuses an empty or oversized batch with InvalidArgument", async () => {
      const c = h.client(KEYS.adminA);
      expect(await codeOf(c.ingestEvents({ events: [] }))).toBe(Code.InvalidArgument);
      const many = Array.from({ length: EVENTS_PER_REQUEST_MAX + 1 }, (_, i) => create(EventSchema, { id: `evt_many_${i}`, customerId: "c", type: "t" }));
      expect(await codeOf(c.ingestEvents({ events: many }))).toBe(Code.InvalidArgument);
    });

    it("keeps tenants apart: the same id in two tenants is two events", async () => {
      const a = await h.client(KEYS.adminA).ingestEvents({ events: [llmEvent("evt_shared")] });
      const b = await h.client(KEYS.adminB).ingestEvents({ events: [llmEvent("evt_shared", { customerId: "cus_other" })] });
      expect(a.results[0]!.status).toBe(IngestStatus.ACCEPTED);
      expect(b.results[0]!.status).toBe(IngestStatus.ACCEPTED);
    });

    it("requires a key, and the internal scope for ReadEvents", async () => {
      expect(await codeOf(h.client("sk_wrong_key_000000000000").ingestEvents({ events: [llmEvent("evt_x")] }))).toBe(Code.Unauthenticated);
      expect(await codeOf(h.client(KEYS.adminA).readEvents({ afterSequence: 0n }))).toBe(Code.PermissionDenied);
      // The feed holds every tenant's events: an internal key bound to one tenant may not read it.
      expect(await codeOf(h.client(KEYS.internalA).readEvents({ afterSequence: 0n }))).toBe(Code.PermissionDenied);
      await h.client(KEYS.internal).readEvents({ afterSequence: 0n, maxEvents: 1 });
      expect(await codeOf(h.client(KEYS.readA).ingestEvents({ events: [llmEvent("evt_x")] }))).toBe(Code.PermissionDenied);
    });

    it("serves accepted events of all tenants on ReadEvents in sequence order with tenant and trace context", async () => {
      const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
      await h.client(KEYS.adminA).ingestEvents({ events: [llmEvent("evt_rd_1", { traceContext: { $typeName: "nanobill.common.v1.TraceContext", traceparent: tp, tracestate: "k=v" } })] });
      const internal = h.client(KEYS.internal);
      const all: bigint[] = [];
      let after = 0n;
      for (;;) {
        const page = await internal.readEvents({ afterSequence: after, maxEvents: 3 });
        if (page.events.length === 0) break;
        all.push(...page.events.map((e) => e.sequence));
        after = page.lastSequence;
      }
      expect(all).toEqual([...all].sort((x, y) => (x < y ? -1 : 1)));
      const page = await internal.readEvents({ afterSequence: 0n, maxEvents: 10_000 });
      const e = page.events.find((x) => x.event!.id === "evt_rd_1")!;
      expect(e.tenant).toBe("tnt_a");
      expect(e.event!.traceContext?.traceparent).toBe(tp);
      expect(e.event!.traceContext?.tracestate).toBe("k=v");
      expect(e.event!.properties["input_tokens"]!.kind).toEqual({ case: "intValue", value: 1234n });
      expect(new Set(page.events.map((x) => x.tenant))).toEqual(new Set(["tnt_a", "tnt_b"]));
    });

    it("stores the ingest call's trace context with an event that carries none", async () => {
      const tel = initTelemetry({ serviceName: "metering-test" });
      try {
        const traceId = "5bf92f3577b34da6a3ce929d0e0e4736";
        const ctx = trace.setSpanContext(context.active(), { traceId, spanId: "10f067aa0ba902b7", traceFlags: TraceFlags.SAMPLED });
        await context.with(ctx, () => h.client(KEYS.adminA).ingestEvents({ events: [llmEvent("evt_tc_1")] }));
        const e = (await h.service.store.listTenantEvents("tnt_a", 10_000)).find((x) => x.id === "evt_tc_1")!;
        expect(e.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
      } finally {
        await tel.shutdown();
      }
    });

    it("long-polls ReadEvents until a commit lands", async () => {
      const internal = h.client(KEYS.internal);
      const head = await internal.readEvents({ afterSequence: 0n, maxEvents: 10_000 });
      const waiting = internal.readEvents({ afterSequence: head.lastSequence, waitMs: 20_000 });
      await new Promise((r) => setTimeout(r, 30));
      await h.client(KEYS.adminA).ingestEvents({ events: [llmEvent("evt_wake_1")] });
      const got = await waiting;
      expect(got.events.map((e) => e.event!.id)).toEqual(["evt_wake_1"]);
      const empty = await internal.readEvents({ afterSequence: got.lastSequence, waitMs: 60 });
      expect(empty.events).toEqual([]);
      expect(empty.lastSequence).toBe(got.lastSequence);
    });

    it("refuses ReadEvents arguments past their limits", async () => {
      const internal = h.client(KEYS.internal);
      expect(await codeOf(internal.readEvents({ maxEvents: 10_001 }))).toBe(Code.InvalidArgument);
      expect(await codeOf(internal.readEvents({ waitMs: 30_001 }))).toBe(Code.InvalidArgument);
      expect(await codeOf(internal.readEvents({ afterSequence: -1n }))).toBe(Code.InvalidArgument);
    });

    it("acknowledges an IngestStream in the order the events were sent", async () => {
      const c = h.client(KEYS.adminA);
      async function* msgs() {
        yield { events: [llmEvent("evt_st_1"), llmEvent("evt_st_2")] };
        yield { events: [llmEvent("evt_st_1"), llmEvent("evt_st_3", { customerId: "" })] };
      }
      const res = await c.ingestStream(msgs());
      expect(res.results.map((r) => [r.eventId, r.status])).toEqual([
        ["evt_st_1", IngestStatus.ACCEPTED],
        ["evt_st_2", IngestStatus.ACCEPTED],
        ["evt_st_1", IngestStatus.DUPLICATE],
        ["evt_st_3", IngestStatus.REJECTED],
      ]);
    });

    it("defines a meter idempotently, backfills it, and answers QueryUsage from buckets", async () => {
      const c = h.client(KEYS.adminA);
      const meter = { id: "input_tokens", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", groupBy: ["model"] };
      const created = await c.createMeter({ meter });
      expect(created.meter!.id).toBe("input_tokens");
      expect((await c.createMeter({ meter })).meter!.id).toBe("input_tokens");
      expect(await codeOf(c.createMeter({ meter: { ...meter, valueProperty: "output_tokens" } }))).toBe(Code.AlreadyExists);
      await h.service.runBackfills();
      const got = await c.getMeter({ meterId: "input_tokens" });
      expect(got.meter!.backfill!.doneSequence).toBe(got.meter!.backfill!.throughSequence);
      await c.ingestEvents({ events: [llmEvent("evt_q_1", { customerId: "cus_q" }), llmEvent("evt_q_1", { customerId: "cus_q" })] });
      const day = Date.UTC(2026, 10, 20);
      const usage = await c.queryUsage({
        meterId: "input_tokens",
        customerIds: ["cus_q"],
        startTime: timestampFromDate(new Date(day)),
        endTime: timestampFromDate(new Date(day + 86_400_000)),
        window: Window.WHOLE,
        groupBy: ["model"],
        groupByCustomer: true,
      });
      expect(usage.rows.map((r) => [r.customerId, r.group, r.value, r.eventCount])).toEqual([["cus_q", { model: "gpt-x" }, "1234", 1n]]);
      expect(await codeOf(c.queryUsage({ meterId: "nope", window: Window.DAY }))).toBe(Code.NotFound);
      expect(await codeOf(c.queryUsage({ meterId: "input_tokens", window: Window.UNSPECIFIED }))).toBe(Code.InvalidArgument);
      const list = await c.listMeters({});
      expect(list.meters.map((m) => m.id)).toEqual(["input_tokens"]);
    });

    it("says in QueryUsage's answer whether the meter still backfills (its rows may be short) or is ready", async () => {
      const c = h.client(KEYS.adminA);
      await c.ingestEvents({ events: [llmEvent("evt_bf_1", { customerId: "cus_bf" })] });
      // A meter whose backfill has not run yet (created by another replica a moment ago).
      await h.db.query(
        `INSERT INTO meters (tenant, meter_id, event_type, definition, created_us, backfill_through_sequence, backfill_done_sequence)
         SELECT 'tnt_a', 'bf_tokens', 'llm.call', $1::jsonb, 0, max(sequence), 0 FROM events`,
        [JSON.stringify({ id: "bf_tokens", eventType: "llm.call", aggregation: "sum", valueProperty: "input_tokens", filters: [], groupBy: [], description: "" })],
      );
      const day = Date.UTC(2026, 10, 20);
      const q = { meterId: "bf_tokens", customerIds: ["cus_bf"], startTime: timestampFromDate(new Date(day)), endTime: timestampFromDate(new Date(day + 86_400_000)), window: Window.WHOLE };
      const partial = await c.queryUsage(q);
      expect([partial.meterStatus, partial.rows.length]).toEqual([MeterStatus.BACKFILLING, 0]);
      await h.service.runBackfills();
      const ready = await c.queryUsage(q);
      expect([ready.meterStatus, ready.rows.map((r) => r.value)]).toEqual([MeterStatus.READY, ["1234"]]);
      expect((await c.queryUsage({ ...q, page: { pageSizeMax: 10 } })).meterStatus).toBe(MeterStatus.READY);
    });

    it("deletes a meter with its usage, and a meter created again under the id backfills from every stored event", async () => {
      const c = h.client(KEYS.adminA);
      const def = { id: "del_tokens", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", groupBy: ["model"] };
      await c.createMeter({ meter: def });
      await h.service.runBackfills();
      const day = Date.UTC(2026, 10, 20);
      await c.ingestEvents({ events: [llmEvent("evt_del_1", { customerId: "cus_del" }), llmEvent("evt_del_2", { customerId: "cus_del" })] });
      const query = { meterId: "del_tokens", customerIds: ["cus_del"], startTime: timestampFromDate(new Date(day)), endTime: timestampFromDate(new Date(day + 86_400_000)), window: Window.WHOLE };
      expect((await c.queryUsage(query)).rows.map((r) => r.value)).toEqual(["2468"]);
      expect(await codeOf(h.client(KEYS.readA).deleteMeter({ meterId: "del_tokens" }))).toBe(Code.PermissionDenied);
      expect(await codeOf(c.deleteMeter({ meterId: "" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(h.client(KEYS.adminB).deleteMeter({ meterId: "del_tokens" }))).toBe(Code.NotFound); // another tenant's
      const del = await c.deleteMeter({ meterId: "del_tokens" });
      expect(del.bucketsDeleted).toBeGreaterThan(0n);
      expect(await codeOf(c.getMeter({ meterId: "del_tokens" }))).toBe(Code.NotFound);
      expect(await codeOf(c.queryUsage(query))).toBe(Code.NotFound);
      expect(await codeOf(c.deleteMeter({ meterId: "del_tokens" }))).toBe(Code.NotFound);
      // Events go on arriving; the id is created again with another definition: its usage is
      // every stored event under the new definition, none of the old buckets.
      await c.ingestEvents({ events: [llmEvent("evt_del_3", { customerId: "cus_del" })] });
      await c.createMeter({ meter: { ...def, valueProperty: "output_tokens" } });
      await h.service.runBackfills();
      expect((await c.queryUsage(query)).rows.map((r) => [r.value, r.eventCount])).toEqual([["1701", 3n]]);
    });

    it("pages QueryUsage rows in order with tokens bound to their query; unpaged calls keep the 10,000-row bound", async () => {
      const c = h.client(KEYS.adminA);
      await c.createMeter({ meter: { id: "paged_tokens", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", groupBy: ["model"] } });
      await h.service.runBackfills();
      // 3 customers x 3 models x 3 minutes = 27 rows (minute windows, per customer and model).
      const base = T0.getTime() - 10 * 60_000;
      const events: Event[] = [];
      for (let c1 = 0; c1 < 3; c1++)
        for (let m = 0; m < 3; m++)
          for (let t = 0; t < 3; t++)
            events.push(llmEvent(`evt_pg_${c1}_${m}_${t}`, { customerId: `cus_pg${c1}`, timestamp: timestampFromDate(new Date(base + t * 60_000 + 1_000)), properties: { model: str(`m${m}`), input_tokens: int(10 * c1 + m + t) } }));
      await c.ingestEvents({ events });
      const query = {
        meterId: "paged_tokens",
        customerIds: ["cus_pg0", "cus_pg1", "cus_pg2"],
        startTime: timestampFromDate(new Date(base)),
        endTime: timestampFromDate(new Date(base + 5 * 60_000)),
        window: Window.MINUTE,
        groupBy: ["model"],
        groupByCustomer: true,
      };
      const all = await c.queryUsage(query);
      expect(all.rows).toHaveLength(27);
      expect(all.page).toBeUndefined();
      const pages: (typeof all.rows)[] = [];
      let token = "";
      for (let i = 0; i < 10; i++) {
        const r = await c.queryUsage({ ...query, page: { pageSizeMax: 10, pageToken: token } });
        pages.push(r.rows);
        token = r.page!.nextPageToken;
        if (token === "") break;
      }
      expect(pages.map((p) => p.length)).toEqual([10, 10, 7]);
      expect(pages.flat()).toEqual(all.rows);
      // Default page size, and a token only fits its own query.
      expect((await c.queryUsage({ ...query, page: {} })).rows).toEqual(all.rows);
      const first = await c.queryUsage({ ...query, page: { pageSizeMax: 5 } });
      expect(await codeOf(c.queryUsage({ ...query, groupByCustomer: false, page: { pageToken: first.page!.nextPageToken } }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.queryUsage({ ...query, page: { pageToken: "bm90IGEgdG9rZW4" } }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.queryUsage({ ...query, page: { pageSizeMax: 10_001 } }))).toBe(Code.InvalidArgument);
      // A token past the last row: an empty last page.
      const last = await c.queryUsage({ ...query, page: { pageSizeMax: 26 } });
      const end = await c.queryUsage({ ...query, page: { pageSizeMax: 1, pageToken: last.page!.nextPageToken } });
      expect([end.rows.length, end.page!.nextPageToken]).toEqual([1, ""]);
    });

    it("answers a retry of an event stored before it passed the late-event limit as a duplicate, a new one as period_closed", async () => {
      const c = h.client(KEYS.adminA);
      const ev = llmEvent("evt_old_1", { customerId: "cus_old", timestamp: timestampFromDate(new Date(T0.getTime() - 34 * 86_400_000)) });
      expect((await c.ingestEvents({ events: [ev] })).results[0]!.status).toBe(IngestStatus.ACCEPTED);
      h.clock.advance(2 * 86_400_000); // the event is now 36 days old
      try {
        const res = await c.ingestEvents({ events: [ev, llmEvent("evt_old_2", { customerId: "cus_old", timestamp: ev.timestamp }), { ...ev, properties: {} }] });
        expect(res.results.map((r) => [r.status, r.reason])).toEqual([
          [IngestStatus.DUPLICATE, ""],
          [IngestStatus.REJECTED, "period_closed"],
          [IngestStatus.CONFLICT, "content_differs"],
        ]);
      } finally {
        h.clock.advance(-2 * 86_400_000);
      }
    });

    it("splits ReadEvents by customer partition: every event in exactly one partition, in order, idle partitions advance", async () => {
      const internal = h.client(KEYS.internal);
      const start = (await internal.readEvents({ afterSequence: 0n, maxEvents: 10_000 })).lastSequence;
      const admins = [h.client(KEYS.adminA), h.client(KEYS.adminB)];
      for (let b = 0; b < 3; b++)
        for (const [t, c] of admins.entries()) await c.ingestEvents({ events: Array.from({ length: 7 }, (_, i) => llmEvent(`evt_part_${t}_${b}_${i}`, { customerId: `cus_p${i % 3}` })) });
      const all = (await internal.readEvents({ afterSequence: start, maxEvents: 10_000 })).events;
      expect(all).toHaveLength(42);
      const high = all[all.length - 1]!.sequence;
      const seen: bigint[] = [];
      const tenantsOf = new Map<number, Set<string>>();
      for (let k = 0; k < 4; k++) {
        let after = start;
        // Pages of 5: a full page ends at its last event, a short one at the high-water mark.
        for (let round = 0; round < 50 && after < high; round++) {
          const page = await internal.readEvents({ afterSequence: after, maxEvents: 5, partitionCount: 4, partition: k });
          for (const e of page.events) {
            expect(e.sequence > after).toBe(true);
            seen.push(e.sequence);
            (tenantsOf.get(k) ?? tenantsOf.set(k, new Set()).get(k)!).add(`${e.tenant}/${e.event!.customerId}`);
          }
          expect(page.lastSequence >= after).toBe(true);
          after = page.lastSequence;
        }
        expect(after).toBe(high);
      }
      expect(seen.sort((a, b) => (a < b ? -1 : 1))).toEqual(all.map((e) => e.sequence));
      // A (tenant, customer) lives in one partition.
      const owners = new Map<string, number>();
      for (const [k, ts] of tenantsOf) for (const t of ts) expect(owners.get(t) ?? k).toBe(k), owners.set(t, k);
      expect(await codeOf(internal.readEvents({ afterSequence: 0n, partitionCount: 4, partition: 4 }))).toBe(Code.InvalidArgument);
      expect(await codeOf(internal.readEvents({ afterSequence: 0n, partitionCount: 257, partition: 0 }))).toBe(Code.InvalidArgument);
      expect(await codeOf(internal.readEvents({ afterSequence: 0n, partition: 1 }))).toBe(Code.InvalidArgument);
    });

    it("refuses events in a closed period but still recognises retries of stored ones", async () => {
      const c = h.client(KEYS.adminA);
      await c.ingestEvents({ events: [llmEvent("evt_cl_1", { customerId: "cus_cl" })] });
      await c.closeUsagePeriod({ customerId: "cus_cl", closeTime: timestampFromDate(T0) });
      const res = await c.ingestEvents({ events: [llmEvent("evt_cl_1", { customerId: "cus_cl" }), llmEvent("evt_cl_2", { customerId: "cus_cl" })] });
      expect(res.results.map((r) => [r.status, r.reason])).toEqual([
        [IngestStatus.DUPLICATE, ""],
        [IngestStatus.REJECTED, "period_closed"],
      ]);
    });

    it("refuses a close_time more than CLOSE_TIME_FUTURE_MS_MAX past the clock (InvalidArgument naming close_time, nothing written) and accepts one at the bound", async () => {
      const c = h.client(KEYS.adminA);
      const closed = async () => (await h.db.query(`SELECT closed_through_us FROM closed_periods WHERE tenant = 'tnt_a' AND customer_id = 'cus_cl_future'`)).rows.map((r) => BigInt(r.closed_through_us as bigint));
      const edgeUs = BigInt(T0.getTime() + CLOSE_TIME_FUTURE_MS_MAX) * 1000n;
      const at = (us: bigint) => ({ seconds: us / 1_000_000n, nanos: Number(us % 1_000_000n) * 1000 });
      // 1 µs past the bound, and a year past it (the mistake that blocked the customer's ingestion for good).
      for (const us of [edgeUs + 1n, edgeUs + 365n * 86_400_000_000n]) {
        const err = await c.closeUsagePeriod({ customerId: "cus_cl_future", closeTime: at(us) }).catch((e) => ConnectError.from(e));
        expect(err).toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringMatching(/^close_time: /) });
      }
      expect(await closed()).toEqual([]);
      const ok = await c.closeUsagePeriod({ customerId: "cus_cl_future", closeTime: at(edgeUs) });
      expect(ok.closeTime).toEqual(expect.objectContaining(at(edgeUs)));
      expect(await closed()).toEqual([edgeUs]);
      // An event now is in the closed period; nothing later than the bound can be closed.
      const res = await c.ingestEvents({ events: [llmEvent("evt_cl_future", { customerId: "cus_cl_future" })] });
      expect(res.results[0]!.reason).toBe("period_closed");
    });

    it("keeps QueryUsage working for every tenant when a tenant's meter names constructor or has a definition that cannot be computed", async () => {
      const a = h.client(KEYS.adminA);
      const b = h.client(KEYS.adminB);
      const day = Date.UTC(2026, 10, 20);
      const query = (meterId: string, groupBy: string[] = []) =>
        ({ meterId, startTime: timestampFromDate(new Date(day)), endTime: timestampFromDate(new Date(day + 86_400_000)), window: Window.DAY, groupBy, customerIds: ["cus_iso"] });
      // "__proto__" is refused as a meter key; Object.prototype member names are ordinary keys.
      for (const over of [{ groupBy: ["__proto__"] }, { valueProperty: "__proto__" }, { filters: [{ property: "__proto__", operator: 3 }] }]) {
        const err = await a.createMeter({ meter: { id: "proto_meter", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", ...over } }).catch((e) => ConnectError.from(e));
        expect(err).toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringMatching(/^meter\.(group_by\[0\]|value_property|filters\[0\]\.property): /) });
      }
      await a.createMeter({ meter: { id: "by_ctor", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", groupBy: ["constructor"] } });
      await b.createMeter({ meter: { id: "b_tokens", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens" } });
      // A stored definition the aggregator cannot compute (as a corrupt or older one could be).
      await h.db.query(
        `INSERT INTO meters (tenant, meter_id, event_type, definition, created_us, backfill_through_sequence, backfill_done_sequence)
         SELECT 'tnt_a', 'broken', 'llm.call', $1::jsonb, 0, COALESCE(max(sequence), 0), COALESCE(max(sequence), 0) FROM events`,
        [JSON.stringify({ id: "broken", eventType: "llm.call", aggregation: "sum", valueProperty: "input_tokens", filters: [], groupBy: 7, description: "" })],
      );
      await h.service.runBackfills();
      await a.ingestEvents({ events: [llmEvent("evt_iso_a", { customerId: "cus_iso" })] });
      await b.ingestEvents({ events: [llmEvent("evt_iso_b", { customerId: "cus_iso" })] });
      // Tenant B's usage advances (every QueryUsage failed as Internal before: the shared cursor was stuck).
      expect((await b.queryUsage(query("b_tokens"))).rows.map((r) => r.value)).toEqual(["1234"]);
      expect((await a.queryUsage(query("by_ctor", ["constructor"]))).rows.map((r) => [r.group, r.value])).toEqual([[{}, "1234"]]);
      const err = await a.queryUsage(query("broken")).catch((e) => ConnectError.from(e));
      expect(err).toMatchObject({ code: Code.FailedPrecondition, rawMessage: expect.stringContaining("meter broken is set aside") });
      expect((err as ConnectError).rawMessage).toContain("TypeError");
      // GetMeter says so too; the healthy meter stays READY.
      const broken = (await a.getMeter({ meterId: "broken" })).meter!;
      expect(broken.status).toBe(MeterStatus.FAILED);
      expect(broken.statusMessage).toMatch(/^usage aggregation failed .*TypeError/);
      expect((await b.getMeter({ meterId: "b_tokens" })).meter).toMatchObject({ status: MeterStatus.READY, statusMessage: "" });
    });
  });
}
