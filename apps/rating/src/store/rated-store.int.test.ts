import { migrate, testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrationsDir } from "../index.js";
import { rateEvent } from "../domain/rate-event.js";
import { MemoryRatingState } from "../domain/state.js";
import { T0, catalogFor, charge, event, llmCosts, usage, version } from "../domain/fixtures.js";
import { CatalogStore } from "./catalog-store.js";
import { RatedStore } from "./rated-store.js";
import type { TestDb } from "@nanobill/db";

const subNano = version([charge("tok", { kind: "per_unit", unitPrice: { amount: "0.0000375", perQuantity: "1000000" } }, { usage: usage("llm.call", ["input_tokens"], ["model"]) })]);

for (const backend of testBackends()) {
  describe(`rating store on ${backend.name}`, () => {
    let db: TestDb;
    let rated: RatedStore;
    let catalog: CatalogStore;
    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      rated = new RatedStore(db);
      catalog = new CatalogStore(db);
    });
    afterAll(async () => {
      await db.dispose();
    });

    it("writes nothing of a batch whose rows fail to build while its state statements are in flight (none runs after the ROLLBACK)", async () => {
      const cat = catalogFor(subNano, llmCosts());
      const st = new MemoryRatingState();
      const r = rateEvent(cat, st, event("rb1", "llm.call", { model: "gpt-x", input_tokens: 7 }));
      // Any throw while the rows are built (here JSON of a bigint dimension; review probe).
      (r.lines[0]!.dimensions as Record<string, unknown>).model = 1n;
      const before = (await db.query("SELECT count(*)::int AS n FROM period_totals")).rows[0];
      await expect(
        db.transaction((tx) => rated.writeBatch(tx, { rated: [{ tenant: "tnt_rb", sequence: 1n, result: r }], wallet: [], cursor: { name: "metering_rb", afterSequence: 1n } }, st, T0)),
      ).rejects.toThrow(/BigInt/);
      await new Promise((res) => setTimeout(res, 200)); // anything still in flight has run by now
      expect((await db.query("SELECT count(*)::int AS n FROM period_totals")).rows[0]).toEqual(before);
      expect((await db.query("SELECT count(*)::int AS n FROM carries WHERE tenant = 'tnt_rb'")).rows[0]).toEqual({ n: 0 });
    });

    it("persists carried residues so that rating resumed from the store books what an uninterrupted run books", async () => {
      const cat = catalogFor(subNano, llmCosts());
      // Uninterrupted reference: 30 events of 7 tokens at 0.0375 nano per token.
      const ref = new MemoryRatingState();
      let refSum = 0n;
      for (let i = 0; i < 30; i++) refSum += rateEvent(cat, ref, event(`r${i}`, "llm.call", { model: "gpt-x", input_tokens: 7 })).lines[0]!.priceNanos;
      // Three batches of 10, each loading state from the store and writing it back.
      let sum = 0n;
      for (let b = 0; b < 3; b++) {
        await db.transaction(async (tx) => {
          const st = new MemoryRatingState();
          await rated.loadState(tx, st, [{ tenant: "tnt_test", customerId: "cus_1" }], [], T0);
          const out = [];
          for (let i = 0; i < 10; i++) {
            const r = rateEvent(cat, st, event(`e${b}_${i}`, "llm.call", { model: "gpt-x", input_tokens: 7 }));
            sum += r.lines[0]!.priceNanos;
            out.push({ tenant: "tnt_test", sequence: BigInt(b * 10 + i + 1), result: r });
          }
          await rated.writeBatch(tx, { rated: out, wallet: [], cursor: { name: "metering", afterSequence: BigInt(b * 10 + 10) } }, st, T0);
        });
      }
      expect(sum).toBe(refSum);
      expect(sum).toBe(8n); // 30 x 7 x 0.0375 = 7.875 -> 8
      expect(await rated.cursor("metering")).toBe(30n);
      const done = await db.transaction((tx) => rated.alreadyRated(tx, [{ tenant: "tnt_test", eventId: "e0_0" }, { tenant: "tnt_test", eventId: "nope" }]));
      expect([...done]).toEqual(["tnt_test\u0000e0_0"]);
      const buckets = await rated.buckets("tnt_test", "cus_1", T0, T0 + 2 * 3_600_000, "", 100);
      expect(buckets).toHaveLength(1);
      expect(buckets[0]).toMatchObject({ chargeId: "tok", quantity: 210n, priceNanos: 8n, eventCount: 30n });
      const totals = await rated.periodTotals("tnt_test", "cus_1", T0);
      // Beside the charge, the subscription's spending-cap running total (kept with or without a cap).
      expect(totals).toEqual([expect.objectContaining({ chargeId: "#cap:sub_1", bookedNanos: 8n }), expect.objectContaining({ chargeId: "tok", quantity: 210n, bookedNanos: 8n })]);
    });

    it("never moves the cursor backwards", async () => {
      await db.transaction((tx) => rated.writeBatch(tx, { rated: [], wallet: [], cursor: { name: "metering", afterSequence: 5n } }, new MemoryRatingState(), T0));
      expect(await rated.cursor("metering")).toBe(30n);
    });

    it("rolls back everything of a batch that fails", async () => {
      const cat = catalogFor(subNano);
      const st = new MemoryRatingState();
      const r = rateEvent(cat, st, event("dup", "llm.call", { model: "gpt-x", input_tokens: 1 }));
      await db.transaction((tx) => rated.writeBatch(tx, { rated: [{ tenant: "t2", sequence: 1n, result: r }], wallet: [], cursor: { name: "c2", afterSequence: 1n } }, st, T0));
      await expect(
        db.transaction((tx) => rated.writeBatch(tx, { rated: [{ tenant: "t2", sequence: 2n, result: r }], wallet: [], cursor: { name: "c2", afterSequence: 2n } }, st, T0)),
      ).rejects.toThrow();
      expect(await rated.cursor("c2")).toBe(1n);
      const b = await rated.buckets("t2", "cus_1", T0, T0 + 7_200_000, "", 10);
      expect(b[0]!.eventCount).toBe(1n);
    });

    it("keeps a batch's wallet items in one outbox row until the wallet answered for all of them", async () => {
      const items = [0, 1, 2].map((i) => ({ tenant: i === 2 ? "t_other" : "t_ob", itemId: `ev${i}:tok`, customerId: "cus_1", unit: "USD", amountNanos: 10n ** 18n - BigInt(i), eventId: `ev${i}`, chargeId: "tok", model: "m\u00e9", occurredMs: T0 + i, traceparent: i === 0 ? "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" : "", tracestate: "" }));
      const id = await db.transaction((tx) => rated.writeBatch(tx, { rated: [], wallet: items, cursor: { name: "ob", afterSequence: 1n } }, new MemoryRatingState(), T0));
      expect(id).not.toBeNull();
      expect(await db.transaction((tx) => rated.writeBatch(tx, { rated: [], wallet: [], cursor: { name: "ob", afterSequence: 2n } }, new MemoryRatingState(), T0))).toBeNull();
      expect(await rated.outboxSize()).toBe(3);
      expect(await rated.outboxBatches(10)).toEqual([{ batchId: id, items }]);
      await rated.outboxBatchFailed(id!, "wallet down");
      const { rows } = await db.query(`SELECT attempts, last_error FROM wallet_outbox_batches`);
      expect(rows).toEqual([{ attempts: 1, last_error: "wallet down" }]);
      await rated.outboxBatchDone(id!);
      expect(await rated.outboxSize()).toBe(0);
      expect(await rated.outboxBatches(10)).toEqual([]);
    });

    it("stores plan versions immutably once published", async () => {
      await catalog.createPlan("tnt_s", "p1", "P", subNano, T0);
      await catalog.publishPlanVersion("tnt_s", "p1", 1, T0, () => {});
      await expect(catalog.updatePlanVersion("tnt_s", "p1", { ...subNano, version: 1 }, T0)).rejects.toThrow(/immutable/);
      const p = await catalog.createPlanVersion("tnt_s", "p1", { ...subNano, version: 2 }, T0, 10);
      expect(p.versions.map((v) => [v.version, v.status])).toEqual([[1, "published"], [2, "draft"]]);
      await expect(catalog.archivePlanVersion("tnt_s", "p1", 2, T0)).rejects.toThrow(/draft/);
    });
  });
}
