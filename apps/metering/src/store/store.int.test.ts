import fc from "fast-check";
import { migrate, openDb, testBackends, type TestDb } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateEvent, type EventInput, type PropertyValue } from "../domain/event.js";
import { AGGREGATIONS, sameDefinition, type MeterDefinition } from "../domain/meter.js";
import { combineBuckets, planQuery, recomputeUsage, type UsageQuery } from "../domain/usage.js";
import { migrationsDir } from "../index.js";
import { aggregateAll } from "./aggregator.js";
import { createGroupCommitter, IngestQueueFullError } from "./group-commit.js";
import { createMeteringStore, type IngestItem, type MeteringStore } from "./store.js";

const HOUR = 3_600_000_000n;
const DAY = 24n * HOUR;
const D0 = BigInt(Date.UTC(2026, 10, 1)) * 1000n;
const NOW_US = D0 + 3n * DAY;
const ctx = { nowUs: NOW_US, lateEventAgeUs: 35n * DAY };

function item(tenant: string, input: Partial<EventInput> & { id: string }): IngestItem {
  const v = validateEvent({ customerId: "c1", type: "llm.call", timestamp: D0, properties: {}, ...input }, ctx);
  if (!v.ok) throw new Error(v.rejection.message);
  return { tenant, event: v.event };
}

async function queryAll(store: MeteringStore, tenant: string, m: MeterDefinition, q: UsageQuery) {
  const plan = planQuery(m, q);
  if (!plan.ok) throw new Error(plan.rule);
  const b = await store.readBuckets(tenant, m.id, plan.level, q.startUs, q.endUs, q.customerIds, 1_000_000);
  const u = await store.readUniqueValues(tenant, m.id, plan.level, q.startUs, q.endUs, q.customerIds, 1_000_000);
  return combineBuckets(m, q, b, u);
}

for (const backend of testBackends()) {
  describe(`metering store (${backend.name})`, () => {
    let db: TestDb;
    let store: MeteringStore;
    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      store = createMeteringStore(db);
    });
    afterAll(async () => {
      await db?.dispose();
    });

    it("stores each (tenant, id) once across concurrent group commits and acknowledges only after commit", async () => {
      let commits = 0;
      const gc = createGroupCommitter(store, { commitEventsMax: 200, commitRequestsMax: 64, queueEventsMax: 100_000, nowUs: () => NOW_US, onCommit: () => commits++ });
      const requests = Array.from({ length: 24 }, (_, r) =>
        Array.from({ length: 30 }, (_, i) => item("t_conc", { id: `e${(r * 37 + i * 11) % 400}`, properties: { n_count: { kind: "int", value: BigInt((r * 37 + i * 11) % 400) } } })),
      );
      const outs = await Promise.all(requests.map((r) => gc.submit(r)));
      await gc.close();
      const accepted = outs.flat().filter((o) => o.status === "accepted").length;
      const stored = await store.listTenantEvents("t_conc", 100_000);
      expect(accepted).toBe(stored.length);
      expect(new Set(stored.map((e) => e.id)).size).toBe(stored.length);
      expect(outs.flat().every((o) => o.status === "accepted" || o.status === "duplicate")).toBe(true);
      expect(commits).toBeGreaterThan(0);
    });

    it("refuses a request that would pass the ingest queue limit, without writing it", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const slow = { ...store, ingest: async (items: IngestItem[], r: bigint) => (await gate, store.ingest(items, r)) };
      const gc = createGroupCommitter(slow, { commitEventsMax: 10, commitRequestsMax: 4, queueEventsMax: 3, nowUs: () => NOW_US });
      const first = gc.submit([item("t_q", { id: "q1" }), item("t_q", { id: "q2" })]);
      await expect(gc.submit([item("t_q", { id: "q3" }), item("t_q", { id: "q4" })])).rejects.toThrow(IngestQueueFullError);
      release();
      expect((await first).map((o) => o.status)).toEqual(["accepted", "accepted"]);
      await gc.close();
      expect((await store.listTenantEvents("t_q", 10)).map((e) => e.id)).toEqual(["q1", "q2"]);
    });

    it("hands out sequences in commit order on the cursor", async () => {
      const before = await store.readEvents(0n, 100_000);
      const last = before.length ? before[before.length - 1]!.sequence : 0n;
      await store.ingest([item("t_seq", { id: "a" }), item("t_seq", { id: "b" })], NOW_US);
      await store.ingest([item("t_seq", { id: "c" })], NOW_US);
      const after = await store.readEvents(last, 10);
      expect(after.map((e) => e.id)).toEqual(["a", "b", "c"]);
      // Sequences are reserved per commit under the events lock: consecutive within a commit.
      expect(after[1]!.sequence - after[0]!.sequence).toBe(1n);
      expect(after[0]!.sequence < after[1]!.sequence && after[1]!.sequence < after[2]!.sequence).toBe(true);
    });

    it("writes nothing when the transaction fails", async () => {
      const bad = item("t_fail", { id: "x1" });
      // A NUL byte cannot be stored in TEXT: the insert fails, the whole group rolls back.
      const broken = { ...item("t_fail", { id: "x2" }), event: { ...bad.event, id: "x2", customerId: "c\u0000" } };
      await expect(store.ingest([bad, broken], NOW_US)).rejects.toThrow();
      expect(await store.listTenantEvents("t_fail", 10)).toEqual([]);
      const retry = await store.ingest([bad], NOW_US);
      expect(retry[0]!.status).toBe("accepted");
    });

    it("isolates a failing request from the others of its group", async () => {
      const gc = createGroupCommitter(store, { commitEventsMax: 1000, commitRequestsMax: 64, queueEventsMax: 100_000, nowUs: () => NOW_US });
      const good = item("t_iso", { id: "g1" });
      const bad = item("t_iso", { id: "b1" });
      const broken = { ...bad, event: { ...bad.event, customerId: "c\u0000" } };
      const [r1, r2] = await Promise.allSettled([gc.submit([good]), gc.submit([broken]), gc.submit([item("t_iso", { id: "g2" })])]);
      await gc.close();
      expect(r1.status).toBe("fulfilled");
      expect(r2.status).toBe("rejected");
      expect((await store.listTenantEvents("t_iso", 10)).map((e) => e.id).sort()).toEqual(["g1", "g2"]);
    });

    it("keeps buckets exact with two replicas ingesting overlapping ids and aggregating at once", async () => {
      // Two stores on the same schema (two processes' pools on PostgreSQL; PGlite serializes them).
      const other = backend.name === "postgres" ? await openDb({ url: process.env.DATABASE_URL!, schema: db.schema, poolMax: 4 }) : undefined;
      const storeB = other ? createMeteringStore(other) : store;
      try {
        const m: MeterDefinition = { id: "m_rep", eventType: "llm.call", aggregation: "sum", valueProperty: "v", filters: [], groupBy: ["model"], description: "" };
        await store.createMeter("t_rep", m, NOW_US, sameDefinition);
        const batch = (r: number) =>
          Array.from({ length: 40 }, (_, i) => {
            const n = (r * 17 + i * 7) % 300; // ids overlap across batches and replicas
            return item("t_rep", { id: `r${n}`, customerId: `c${n % 4}`, timestamp: D0 + BigInt(n) * 60_000_000n, properties: { model: { kind: "string", value: n % 2 ? "a" : "b" }, v: { kind: "int", value: BigInt(n) } } });
          });
        await Promise.all(
          [store, storeB].map(async (s, k) => {
            for (let r = 0; r < 12; r++) {
              await s.ingest(batch(r * 2 + k), NOW_US);
              await s.aggregateStep(25);
            }
          }),
        );
        await aggregateAll(store, 1000);
        const stored = (await store.listTenantEvents("t_rep", 100_000)).map((e) => ({ ...e, tenant: "t_rep" }));
        expect(new Set(stored.map((e) => e.id)).size).toBe(stored.length);
        const q: UsageQuery = { startUs: D0, endUs: D0 + DAY, window: "hour", customerIds: [], groupBy: ["model"], groupByCustomer: true, filters: [] };
        expect(await queryAll(store, "t_rep", m, q)).toEqual(recomputeUsage(m, q, stored));
      } finally {
        await other?.close();
      }
    });

    it("aggregates events whose group-by and unique values are the largest allowed (8 x 1 KB): long values are keyed by their hash", async () => {
      const groupBy = ["g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7"];
      const big = (i: number) => `${i}${"\u00e9".repeat(511)}`; // 1,023 UTF-8 bytes
      const props = Object.fromEntries([...groupBy.map((g, i) => [g, { kind: "string" as const, value: big(i) }]), ["u", { kind: "string" as const, value: big(9) }]]);
      for (const [id, aggregation, valueProperty] of [["m_big", "count", ""], ["m_uniq", "unique_count", "u"]] as const)
        await store.createMeter("t_big", { id, eventType: "llm.call", aggregation, valueProperty, filters: [], groupBy, description: "" }, NOW_US, sameDefinition);
      const out = await store.ingest([item("t_big", { id: "b1", properties: props }), item("t_big", { id: "b2", properties: props })], NOW_US);
      expect(out.map((o) => o.status)).toEqual(["accepted", "accepted"]);
      await aggregateAll(store, 1000);
      for (const aggregation of ["count", "unique_count"] as const) {
        const m: MeterDefinition = { id: aggregation === "count" ? "m_big" : "m_uniq", eventType: "llm.call", aggregation, valueProperty: aggregation === "count" ? "" : "u", filters: [], groupBy, description: "" };
        const q: UsageQuery = { startUs: D0 - (D0 % DAY), endUs: D0 - (D0 % DAY) + DAY, window: "day", customerIds: [], groupBy, groupByCustomer: false, filters: [] };
        const rows = await queryAll(store, "t_big", m, q);
        expect(rows.map((r) => r.value)).toEqual([aggregation === "count" ? "2" : "1"]);
        expect(Object.values(rows[0]!.group).every((v) => /^sha256:[0-9a-f]{64}$/.test(v))).toBe(true);
        const stored = (await store.listTenantEvents("t_big", 10)).map((e) => ({ ...e, tenant: "t_big" }));
        expect(rows).toEqual(recomputeUsage(m, q, stored));
      }
    });

    it("keeps buckets equal to a recomputation from stored events, with duplicates, replays and a meter created midway (backfill)", async () => {
      const arbValue: fc.Arbitrary<PropertyValue | undefined> = fc.option(
        fc.oneof(
          fc.bigInt({ min: -50n, max: 500n }).map((v): PropertyValue => ({ kind: "int", value: v })),
          fc.integer({ min: 0, max: 99999 }).map((v): PropertyValue => ({ kind: "decimal", value: `${Math.floor(v / 1000)}.${v % 1000}` })),
        ),
        { nil: undefined },
      );
      const arbEvent = fc.record({
        id: fc.integer({ min: 0, max: 40 }),
        customer: fc.constantFrom("c1", "c2"),
        offsetUs: fc.bigInt({ min: 0n, max: 2n * DAY - 1n }),
        model: fc.constantFrom("a", "b"),
        value: arbValue,
      });
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(fc.array(arbEvent, { minLength: 1, maxLength: 15 }), { minLength: 1, maxLength: 6 }), fc.constantFrom(...AGGREGATIONS), fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 12 }), async (batches, aggregation, meterAt, aggChunk) => {
          const tenant = `t_prop_${run++}`;
          const m: MeterDefinition = {
            id: "m",
            eventType: "llm.call",
            aggregation,
            valueProperty: aggregation === "count" ? "" : "v",
            filters: [{ property: "model", operator: "in", values: ["a", "b"] }],
            groupBy: ["model"],
            description: "",
          };
          for (const [bi, batch] of batches.entries()) {
            if (bi === meterAt) await store.createMeter(tenant, m, NOW_US, sameDefinition);
            const items = batch.map((e) => {
              const properties: Record<string, PropertyValue> = { model: { kind: "string", value: e.model } };
              if (e.value) properties.v = e.value;
              // The id determines the content, so a repeated id is a duplicate (a retry).
              return item(tenant, { id: `e${e.id}`, customerId: e.customer, timestamp: D0 + e.offsetUs, properties });
            });
            // Each events batch is also replayed once (a client retry).
            await store.ingest(items, NOW_US);
            await store.ingest(items.slice(0, 3), NOW_US);
            // The aggregator runs at arbitrary points, in small steps, before and after the meter
            // exists and while its backfill is pending.
            if (aggChunk > 0) await store.aggregateStep(aggChunk);
            if (bi % 2 === 1) for (const p of await store.pendingBackfills(100)) await store.backfillStep(p.tenant, p.meterId, 3);
          }
          if (meterAt >= batches.length) await store.createMeter(tenant, m, NOW_US, sameDefinition);
          if (aggChunk > 0) await store.aggregateStep(aggChunk);
          for (const p of await store.pendingBackfills(100)) while (!(await store.backfillStep(p.tenant, p.meterId, 4))) {}
          await aggregateAll(store, 7);
          const stored = (await store.listTenantEvents(tenant, 100_000)).map((e) => ({ ...e, tenant }));
          for (const window of ["hour", "day", "whole"] as const) {
            const q: UsageQuery = { startUs: D0, endUs: D0 + 2n * DAY, window, customerIds: [], groupBy: ["model"], groupByCustomer: true, filters: [] };
            expect(await queryAll(store, tenant, m, q)).toEqual(recomputeUsage(m, q, stored));
          }
        }),
        { numRuns: backend.name === "pglite" ? 6 : 8 },
      );
    });

    it("stores an id by its next occurrence in a group when the first cannot be stored (late, closed period), as separate requests would", async () => {
      const lateV = validateEvent({ id: "cand_late", customerId: "c1", type: "llm.call", timestamp: NOW_US - 35n * DAY - 1n, properties: {} }, ctx);
      if (!lateV.ok || !lateV.late) throw new Error("expected a late event");
      const late: IngestItem = { tenant: "t_cand", event: lateV.event, late: lateV.late };
      const fine = item("t_cand", { id: "cand_late" });
      const changed = item("t_cand", { id: "cand_late", properties: { n_count: { kind: "int", value: 1n } } });
      const outs = await store.ingest([late, late, fine, fine, changed, late], NOW_US);
      expect(outs.map((o) => o.status)).toEqual(["rejected", "rejected", "accepted", "duplicate", "conflict", "conflict"]);
      expect(outs[0]).toMatchObject({ field: "timestamp", reason: "period_closed", message: lateV.late.message });
      const seq = (outs[2] as { sequence: bigint }).sequence;
      expect((outs[3] as { sequence: bigint }).sequence).toBe(seq);
      expect((await store.listTenantEvents("t_cand", 10)).map((e) => [e.id, e.sequence])).toEqual([["cand_late", seq]]);

      // The first occurrence falls in its customer's closed period, the second (another customer) does not.
      await store.closePeriod("t_cand", "c_closed", D0 + HOUR);
      const closed = item("t_cand", { id: "cand_closed", customerId: "c_closed", timestamp: D0 });
      const open = item("t_cand", { id: "cand_closed", customerId: "c_open", timestamp: D0 });
      const outs2 = await store.ingest([closed, open, closed, open], NOW_US);
      expect(outs2.map((o) => o.status)).toEqual(["rejected", "accepted", "conflict", "duplicate"]);
      expect(outs2[0]).toMatchObject({ field: "timestamp", reason: "period_closed" });
      // Nothing storable: each occurrence is rejected with its own reason.
      const outs3 = await store.ingest([closed, late].map((it) => ({ ...it, event: { ...it.event, id: "cand_none" } })), NOW_US);
      expect(outs3.map((o) => o.status === "rejected" && o.message)).toEqual([
        "timestamp: falls in a closed (invoiced) period of the customer",
        lateV.late.message,
      ]);
    });

    it("sets aside a meter whose usage cannot be computed; every other meter (other tenants', its tenant's) keeps advancing", async () => {
      await aggregateAll(store, 20_000);
      const sum = (id: string, groupBy: string[]): MeterDefinition => ({ id, eventType: "llm.call", aggregation: "sum", valueProperty: "input_tokens", filters: [], groupBy, description: "" });
      // Definitions stored before validation refused "__proto__" and before lookups were own-property
      // only: they must aggregate (absent property = null group / no value), not throw.
      const legacy: Array<[string, MeterDefinition]> = [
        ["t_iso_a", sum("by_ctor", ["constructor"])],
        ["t_iso_a", sum("by_proto", ["__proto__"])],
        ["t_iso_a", { ...sum("uniq_valueof", []), aggregation: "unique_count", valueProperty: "valueOf" }],
        ["t_iso_b", sum("good", ["model"])],
      ];
      for (const [t, m] of legacy) expect((await store.createMeter(t, m, NOW_US, sameDefinition)).status).toBe("created");
      // Definitions that make the computation throw (as a corrupt or older stored one could): one
      // applied by the aggregator, one still to backfill.
      const hw = await store.highWaterSequence();
      const insertBroken = (id: string, through: bigint, done: bigint) =>
        db.query(
          `INSERT INTO meters (tenant, meter_id, event_type, definition, created_us, backfill_through_sequence, backfill_done_sequence)
           VALUES ('t_iso_a', $1, 'llm.call', $2::jsonb, 0, $3::bigint, $4::bigint)`,
          [id, JSON.stringify({ ...sum(id, []), filters: null }), through.toString(), done.toString()],
        );
      await insertBroken("broken", hw, hw);
      const tokens = (n: bigint) => ({ input_tokens: { kind: "int" as const, value: n }, model: { kind: "string" as const, value: "m1" } });
      await store.ingest([item("t_iso_a", { id: "a1", properties: tokens(5n) }), item("t_iso_b", { id: "b1", properties: tokens(7n) }), item("t_iso_b", { id: "b2", properties: tokens(11n) })], NOW_US);
      await aggregateAll(store, 20_000); // threw TypeError on every attempt before: the shared cursor never moved
      expect(await store.aggregateStep(20_000)).toEqual({ through: await store.highWaterSequence(), events: 0 });
      const q: UsageQuery = { startUs: D0, endUs: D0 + DAY, window: "day", customerIds: [], groupBy: [], groupByCustomer: false, filters: [] };
      expect((await queryAll(store, "t_iso_b", sum("good", ["model"]), q)).map((r) => r.value)).toEqual(["18"]);
      const byCtor = await queryAll(store, "t_iso_a", sum("by_ctor", ["constructor"]), { ...q, groupBy: ["constructor"] });
      expect(byCtor.map((r) => [r.group, r.value])).toEqual([[{}, "5"]]);
      expect((await queryAll(store, "t_iso_a", sum("by_proto", ["__proto__"]), q)).map((r) => r.value)).toEqual(["5"]);
      expect(await queryAll(store, "t_iso_a", { ...sum("uniq_valueof", []), aggregation: "unique_count", valueProperty: "valueOf" }, q)).toEqual([]);
      const broken = await store.getMeter("t_iso_a", "broken");
      expect(broken?.aggregationError).toMatch(/^usage aggregation failed at event sequence \d+\.\.\d+: TypeError/);
      expect((await store.getMeter("t_iso_b", "good"))?.aggregationError).toBeNull();

      // Later events: the set-aside meter is no longer tried, the others advance.
      await store.ingest([item("t_iso_b", { id: "b3", properties: tokens(100n) }), item("t_iso_a", { id: "a2", properties: tokens(1n) })], NOW_US);
      const step = await store.aggregateStep(20_000);
      expect(step.failed).toBeUndefined();
      expect(step.through).toBe(await store.highWaterSequence());
      expect((await queryAll(store, "t_iso_b", sum("good", ["model"]), q)).map((r) => r.value)).toEqual(["118"]);

      // A broken meter still to backfill is set aside too, and does not hold up other backfills.
      await insertBroken("broken_backfill", await store.highWaterSequence(), 0n);
      expect((await store.createMeter("t_iso_b", sum("good_later", []), NOW_US, sameDefinition)).status).toBe("created");
      for (;;) {
        const pending = await store.pendingBackfills(100);
        if (pending.length === 0) break;
        for (const p of pending) while (!(await store.backfillStep(p.tenant, p.meterId))) {}
      }
      expect((await store.getMeter("t_iso_a", "broken_backfill"))?.aggregationError).toMatch(/^usage aggregation failed in its backfill: TypeError/);
      expect((await queryAll(store, "t_iso_b", sum("good_later", []), q)).map((r) => r.value)).toEqual(["118"]);
    });
  });
}
