import fc from "fast-check";
import { migrate, openDb, testBackends, type Db, type Queryable, type Row, type TestDb, type Tx } from "@nanobill/db";
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

/** The Db with a count of the event rows each aggregation read returned (the statement reading events after the cursor). */
function countingEventReads(inner: Db, reads: number[]): Db {
  const orig = new WeakMap<Queryable, Queryable>();
  const counted = (sql: string, n: number) => {
    if (sql.includes("FROM events WHERE sequence > $1::bigint ORDER BY sequence")) reads.push(n);
  };
  const wrap = (q: Queryable): Tx => {
    const w: Tx = {
      async query<R extends Row = Row>(sql: string, params?: unknown[]) {
        const r = await q.query<R>(sql, params);
        counted(sql, r.rows.length);
        return r;
      },
      async pipeline<R extends Row = Row>(statements: { sql: string; params: unknown[] }[]) {
        const rs = await (q as Tx).pipeline<R>(statements);
        rs.forEach((r, i) => counted(statements[i]!.sql, r.rows.length));
        return rs;
      },
    };
    orig.set(w, q);
    return w;
  };
  return {
    kind: inner.kind,
    schema: inner.schema,
    query: wrap(inner).query,
    transaction: (fn, o) => inner.transaction((tx) => fn(wrap(tx)), o),
    copyRows: (table, cols, rows, tx) => inner.copyRows(table, cols, rows, tx ? orig.get(tx) : undefined),
    listen: (channel, onNotify) => inner.listen(channel, onNotify),
    close: () => inner.close(),
  };
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

    it("answers a group of several tenants (pairs lookup) as groups of one tenant (ids lookup) answer: same id in two tenants, duplicates, conflicts, closed periods", async () => {
      await store.closePeriod("t_mix_b", "c_closed", D0 + HOUR);
      const ev = (tenant: string, id: string, v: bigint, customerId = "c1") => item(tenant, { id, customerId, properties: { n_count: { kind: "int", value: v } } });
      await store.ingest([ev("t_mix_a", "x1", 1n), ev("t_mix_b", "x2", 2n)], NOW_US);
      const group = [
        ev("t_mix_a", "x1", 1n), // duplicate
        ev("t_mix_b", "x1", 9n), // the same id in another tenant: new
        ev("t_mix_b", "x2", 3n), // conflict
        ev("t_mix_b", "x3", 4n, "c_closed"), // closed period
        ev("t_mix_a", "x4", 5n),
        ev("t_mix_a", "x4", 5n), // duplicate within the group
      ];
      const mixed = await store.ingest(group, NOW_US);
      expect(mixed.map((o) => o.status)).toEqual(["duplicate", "accepted", "conflict", "rejected", "accepted", "duplicate"]);
      // The same occurrences again, one tenant per call: the same answers (now all stored or refused).
      const a = await store.ingest([group[0]!, group[4]!, group[5]!], NOW_US);
      const b = await store.ingest([group[1]!, group[2]!, group[3]!], NOW_US);
      expect(a.map((o) => o.status)).toEqual(["duplicate", "duplicate", "duplicate"]);
      expect(b.map((o) => o.status)).toEqual(["duplicate", "conflict", "rejected"]);
      expect((await store.listTenantEvents("t_mix_b", 10)).map((e) => e.id).sort()).toEqual(["x1", "x2"]);
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

    it("aggregates the events it committed from memory and reads the others (another store's, past a rolled-back gap), exactly, in full steps", async () => {
      await aggregateAll(store, 100_000); // the cursor past the other tests' events
      const reads: number[] = [];
      const a = createMeteringStore(countingEventReads(db, reads));
      const b = createMeteringStore(db); // another replica: its events are not in a's memory
      const m: MeterDefinition = { id: "m_mem", eventType: "llm.call", aggregation: "sum", valueProperty: "v", filters: [], groupBy: ["model"], description: "" };
      await a.createMeter("t_mem", m, NOW_US, sameDefinition);
      const ev = (n: number) =>
        item("t_mem", { id: `m${n}`, customerId: `c${n % 3}`, timestamp: D0 + BigInt(n) * 600_000_000n, properties: { model: { kind: "string", value: n % 2 ? "a" : "b" }, v: { kind: "int", value: BigInt(n) } } });
      const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => ev(from + i));
      await a.ingest(range(0, 10), NOW_US);
      await b.ingest(range(10, 15), NOW_US);
      // Sequences reserved, then the COPY fails (NUL): a gap on the cursor.
      const bad = ev(15);
      await expect(a.ingest([ev(16), { ...bad, event: { ...bad.event, customerId: "c\u0000" } }], NOW_US)).rejects.toThrow();
      await a.ingest(range(17, 27), NOW_US);
      await b.ingest(range(27, 29), NOW_US);
      const steps: number[] = [];
      for (;;) {
        const step = await a.aggregateStep(4);
        steps.push(step.events);
        if (step.events < 4) break;
      }
      // Full steps until the end (a short run from memory is completed by reading), and the first
      // two steps (a's first 8 events) read no row.
      expect(steps.slice(0, -1).every((n) => n === 4)).toBe(true);
      expect(steps.reduce((x, y) => x + y, 0)).toBe(27);
      expect(reads.slice(0, 1)).toEqual([2]); // step 3: two from memory, then b's first two
      expect(reads.reduce((x, y) => x + y, 0)).toBeLessThan(27);
      const stored = (await store.listTenantEvents("t_mem", 1_000)).map((e) => ({ ...e, tenant: "t_mem" }));
      expect(stored.length).toBe(27);
      const q: UsageQuery = { startUs: D0, endUs: D0 + DAY, window: "hour", customerIds: [], groupBy: ["model"], groupByCustomer: true, filters: [] };
      expect(await queryAll(store, "t_mem", m, q)).toEqual(recomputeUsage(m, q, stored));
    });

    it("takes a run of many single-event commits from memory in one step, in sequence order", async () => {
      await aggregateAll(store, 100_000);
      const reads: number[] = [];
      const a = createMeteringStore(countingEventReads(db, reads));
      const m: MeterDefinition = { id: "m_one", eventType: "llm.call", aggregation: "sum", valueProperty: "v", filters: [], groupBy: [], description: "" };
      await a.createMeter("t_one", m, NOW_US, sameDefinition);
      const ev = (n: number) => item("t_one", { id: `o${n}`, customerId: "c1", timestamp: D0 + BigInt(n) * 1_000_000n, properties: { v: { kind: "int", value: BigInt(n) } } });
      // 300 commits of one event, 16 at a time (the group committer's concurrency).
      for (let n = 0; n < 300; n += 16) await Promise.all(Array.from({ length: Math.min(16, 300 - n) }, (_, k) => a.ingest([ev(n + k)], NOW_US)));
      const step = await a.aggregateStep(20_000);
      expect(step.events).toBe(300);
      expect(reads).toEqual([0]); // the whole run from memory; the table read after it finds nothing
      const stored = (await store.listTenantEvents("t_one", 1_000)).map((e) => ({ ...e, tenant: "t_one" }));
      const q: UsageQuery = { startUs: D0, endUs: D0 + DAY, window: "hour", customerIds: [], groupBy: [], groupByCustomer: false, filters: [] };
      expect(await queryAll(store, "t_one", m, q)).toEqual(recomputeUsage(m, q, stored));
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
