// Several rating processes on one schema split the partitions of metering's feed through leases:
// every event rated exactly once (buckets == recomputation from the rated rows, carries exact),
// balanced shares that follow joins and leaves, a crashed process's partitions taken over after the
// lease expiry, and a stale owner's batch refused by the fence.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { openDb, testBackends, type Db } from "@nanobill/db";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { silentLogger } from "@nanobill/service-kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CatalogCache } from "./catalog-cache.js";
import { partitionCursorName, RatingConsumer } from "./consumer.js";
import { createRatingService, type RatingServiceHandle } from "./index.js";
import { MemoryRatingState } from "./domain/state.js";
import { LeaseLostError, LeaseStore } from "./store/lease-store.js";
import { FakeMetering, KEYS, T0, openHarness, type Harness } from "./test-support.js";

const t0 = T0.getTime();
const P = 4;
const CUSTOMERS = 12;

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const backend of testBackends()) describe(`rating consumer processes sharing partitions by lease (${backend.name})`, () => {
  let h: Harness;
  let seq = 0;
  const pools: Db[] = [];
  const running: RatingServiceHandle[] = [];

  /** One more "process": its own pool on PostgreSQL (PGlite has one connection), its own service. */
  async function processOf(owner: string, ttlMs: number): Promise<RatingServiceHandle> {
    const db = backend.name === "postgres" ? await openDb({ url: process.env.DATABASE_URL!, schema: h.db.schema, poolMax: 4 }) : h.db;
    if (db !== h.db) pools.push(db);
    const s = await createRatingService({
      db,
      logger: silentLogger,
      clock: h.clock,
      config: { consumerEnabled: true, consumerLeases: true, consumerPartitions: P, consumerOwner: owner, consumerLeaseTtlMs: ttlMs, consumerLeaseHeartbeatMs: 50, cacheTtlMs: 0 },
      clients: { metering: h.metering.client(), wallet: h.wallet.client() },
    });
    running.push(s);
    return s;
  }

  function push(n: number): void {
    for (let i = 0; i < n; i++, seq++) h.metering.push("tnt_a", { id: `e${seq}`, customerId: `cus_${seq % CUSTOMERS}`, type: "half.call", timestampMs: t0 - 600_000 + seq, properties: { calls: 1 } });
  }

  async function ratedCount(): Promise<number> {
    const r = await h.db.query<{ n: bigint }>(`SELECT count(*)::bigint AS n FROM rated_events`);
    return Number(r.rows[0]!.n);
  }

  /** Every event once; buckets == a recomputation from the rated rows; each customer's total exact. */
  async function expectRatedOnce(): Promise<void> {
    const rows = (await h.db.query(`SELECT event_id, customer_id, price_nanos FROM rated_events`)).rows;
    expect(rows).toHaveLength(seq);
    expect(new Set(rows.map((r) => r.event_id)).size).toBe(seq);
    const bucket = (await h.db.query(`SELECT customer_id, sum(price_nanos)::bigint AS p, sum(event_count)::bigint AS n FROM usage_buckets GROUP BY customer_id ORDER BY customer_id`)).rows;
    const recomputed = new Map<string, { p: bigint; n: bigint }>();
    for (const r of rows) {
      const cur = recomputed.get(r.customer_id as string) ?? { p: 0n, n: 0n };
      cur.p += BigInt(r.price_nanos as bigint);
      cur.n += 1n;
      recomputed.set(r.customer_id as string, cur);
    }
    expect(bucket.map((b) => [b.customer_id, BigInt(b.p as bigint), BigInt(b.n as bigint)])).toEqual([...recomputed].sort(([a], [b]) => (a < b ? -1 : 1)).map(([c, v]) => [c, v.p, v.n]));
    // 1.5 nanos per call with the carry: a customer's n events book round_half_up(1.5 n) in total
    // (a lost or doubled carry update would be off by a nano).
    for (const [c, v] of recomputed) expect(v.p, c).toBe((3n * v.n + 1n) / 2n);
    expect(new Set(h.wallet.consumed.map((x) => x.item.id)).size).toBe(seq);
  }

  async function leaseRows() {
    return (await new LeaseStore(h.db).leases()).filter((l) => l.partitionCount === P);
  }

  beforeAll(async () => {
    h = await openHarness(await backend.open());
    h.metering.meters.set("tnt_a\u0000half", "half.call");
    const c = h.client(KEYS.adminA);
    const version = create(PlanVersionSchema, {
      currency: "USD",
      charges: [{ chargeId: "half", name: "Half", unit: "USD", usage: { meter: "half", eventType: "half.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.0000000015", perQuantity: 1n } } } }],
    });
    await c.createPlan({ planId: "plan", name: "P", version });
    await c.publishPlanVersion({ planId: "plan", version: 1 });
    for (let k = 0; k < CUSTOMERS; k++) {
      await c.createCustomer({ customer: { customerId: `cus_${k}`, currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
      await c.createSubscription({ subscriptionId: `sub_${k}`, customerId: `cus_${k}`, planId: "plan", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
    }
    // The customers land in every partition (else the test would not exercise them all).
    expect(new Set(Array.from({ length: CUSTOMERS }, (_, k) => FakeMetering.partitionOf("tnt_a", `cus_${k}`, P))).size).toBe(P);
  });
  afterAll(async () => {
    await Promise.all(running.map((s) => s.stop()));
    for (const p of pools) await p.close();
    await h.close();
  });

  it("three processes take balanced shares and rate a stream exactly once; shares follow a graceful leave", async () => {
    const [a, b, c] = [await processOf("proc_a", 2_000), await processOf("proc_b", 2_000), await processOf("proc_c", 2_000)];
    push(60);
    await Promise.all([a.start(), b.start(), c.start()]);
    const shares = () => [a, b, c].map((s) => s.leases!.held().length);
    await until("balanced shares", () => shares().join() === "2,1,1");
    for (let round = 0; round < 6; round++) {
      push(40);
      await new Promise((r) => setTimeout(r, 30));
    }
    await until("every event rated", async () => (await ratedCount()) === seq && h.wallet.consumed.length === seq);
    await expectRatedOnce();
    const rows = await leaseRows();
    expect(rows.map((r) => r.owner).sort()).toEqual(["proc_a", "proc_a", "proc_b", "proc_c"]);
    const held = [a, b, c].flatMap((s) => s.leases!.held()).sort();
    expect(held).toEqual([0, 1, 2, 3]);
    // A graceful stop frees its leases at once: the two left take 2 each, well before any expiry.
    await c.stop();
    expect((await leaseRows()).some((r) => r.owner === "proc_c")).toBe(false);
    await until("two shares of 2", () => [a, b].map((s) => s.leases!.held().length).join() === "2,2", 1_500);
    push(50);
    await until("every event rated", async () => (await ratedCount()) === seq && h.wallet.consumed.length === seq);
    await expectRatedOnce();
    await Promise.all([a.stop(), b.stop()]);
    // Each cursor was last written under the epoch of its current lease (or a later one).
    const cursors = (await h.db.query(`SELECT name, fence_epoch FROM consumer_cursor WHERE name LIKE 'metering:p%/${P}' ORDER BY name`)).rows;
    expect(cursors).toHaveLength(P);
    for (const r of cursors) expect(BigInt(r.fence_epoch as bigint)).toBeGreaterThan(0n);
  });

  it("takes over a crashed process's partitions only after the lease expiry; nothing lost or rated twice", async () => {
    const TTL = 1_500;
    const [a, b] = [await processOf("proc_d", TTL), await processOf("proc_e", TTL)];
    await a.start();
    expect(a.leases!.held()).toEqual([0, 1, 2, 3]); // alone: every partition on start
    await b.start();
    await until("two shares of 2", () => [a, b].map((s) => s.leases!.held().length).join() === "2,2");
    push(80);
    await until("some events rated", async () => (await ratedCount()) > seq - 80);
    const lost = b.leases!.held();
    const before = await leaseRows();
    await b.leases!.halt(); // a crash: leases and membership stay until they expire
    const haltedAt = Date.now();
    push(80);
    await new Promise((r) => setTimeout(r, 200));
    const mid = await leaseRows();
    if (Date.now() - haltedAt < TTL - 300) {
      // Not expired yet: the crashed owner still holds them and the survivor did not take them.
      for (const p of lost) expect(mid.find((r) => r.partition === p)!.owner).toBe("proc_e");
      expect(a.leases!.held()).toHaveLength(2);
    }
    await until("takeover after expiry", () => a.leases!.held().length === P);
    expect(Date.now() - haltedAt).toBeGreaterThanOrEqual(TTL / 2);
    const after = await leaseRows();
    for (const p of lost) {
      const was = before.find((r) => r.partition === p)!;
      const now = after.find((r) => r.partition === p)!;
      expect(now.owner).toBe("proc_d");
      expect(now.epoch).toBe(was.epoch + 1n);
    }
    await until("every event rated", async () => (await ratedCount()) === seq && h.wallet.consumed.length === seq);
    await expectRatedOnce();
    await a.stop();
  });

  it("refuses a stale owner's batch and cursor write (fence), and the new owner rates the events once", async () => {
    const leases = new LeaseStore(h.db);
    const name = partitionCursorName(P, 0);
    await leases.ensure([{ name, partition: 0 }], P);
    // The old owner's lease expires (1 ms), the new owner takes it over with the next epoch.
    const [old] = await leases.acquire("proc_old", P, 1, 1);
    expect(old!.name).toBe(name);
    await new Promise((r) => setTimeout(r, 20));
    const [cur] = await leases.acquire("proc_new", P, 1, 60_000);
    expect(cur).toMatchObject({ name, epoch: old!.epoch + 1n });
    const consumer = (owner: string, epoch: bigint) =>
      new RatingConsumer({
        db: h.db,
        rated: h.service.rated,
        leases,
        cache: new CatalogCache(h.service.catalog, h.clock, 0, h.wallet.client(), silentLogger),
        metering: h.metering.client(),
        wallet: h.wallet.client(),
        logger: silentLogger,
        clock: h.clock,
        options: { cursorName: name, batchEventsMax: 1_000, waitMs: 0, partitionCount: P, partition: 0, fence: { owner, epoch } },
      });
    push(20);
    const cursorBefore = await h.service.rated.cursor(name);
    const events = h.metering.events.filter((e) => e.sequence > cursorBefore && FakeMetering.partitionOf(e.tenant, e.event!.customerId, P) === 0);
    expect(events.length).toBeGreaterThan(0);
    const last = h.metering.events[h.metering.events.length - 1]!.sequence;
    const ratedBefore = await ratedCount();
    await expect(consumer("proc_old", old!.epoch).processBatch(events, last)).rejects.toBeInstanceOf(LeaseLostError);
    expect(await ratedCount()).toBe(ratedBefore);
    expect(await h.service.rated.cursor(name)).toBe(cursorBefore);
    // The new owner rates them; the old owner's cursor write alone is refused by the cursor's epoch too.
    expect(await consumer("proc_new", cur!.epoch).processBatch(events, last)).toBe(events.length);
    await expect(
      h.db.transaction((tx) => h.service.rated.writeBatch(tx, { rated: [], wallet: [], cursor: { name, afterSequence: last + 1000n, fence: { owner: "proc_old", epoch: old!.epoch } } }, new MemoryRatingState(), t0)),
    ).rejects.toBeInstanceOf(LeaseLostError);
    expect(await h.service.rated.cursor(name)).toBe(last);
    // A renewal at the lost epoch is refused; the release of the lost lease frees nothing.
    expect(await leases.renew("proc_old", [old!], 60_000)).toEqual(new Set());
    expect(await leases.release("proc_old", old!)).toBe(false);
    expect(await leases.release("proc_new", cur!)).toBe(true);
    // Rate the other partitions' events of this test too (unleased), then everything is rated once.
    for (const c of h.service.consumers) while ((await c.pollOnce(0)) > 0);
    await h.service.consumer.drainOutbox();
    await expectRatedOnce();
  });

  if (backend.name === "postgres") {
    it("makes a takeover skip a lease whose owner's batch transaction is open (PostgreSQL: two connections)", async () => {
      const leases = new LeaseStore(h.db);
      const name = partitionCursorName(P, 1);
      await leases.ensure([{ name, partition: 1 }], P);
      await h.db.query(`UPDATE consumer_leases SET owner = '', expires_at = to_timestamp(0) WHERE partition_count = $1`, [P]);
      const got = await leases.acquire("proc_x", P, P, 1);
      const mine = got.find((l) => l.name === name)!;
      await new Promise((r) => setTimeout(r, 20)); // expired now
      const other = await openDb({ url: process.env.DATABASE_URL!, schema: h.db.schema, poolMax: 2 });
      try {
        let taken: string[] = [];
        await h.db.transaction(async (tx) => {
          await leases.fence(tx, name, "proc_x", mine.epoch);
          // While the batch holds the fence, the other process takes every expired lease but this one.
          taken = (await new LeaseStore(other).acquire("proc_y", P, P, 60_000)).map((l) => l.name);
        });
        expect(taken).not.toContain(name);
        expect(taken).toHaveLength(P - 1);
        // Committed: now it can be taken over.
        expect((await new LeaseStore(other).acquire("proc_y", P, 1, 60_000)).map((l) => l.name)).toEqual([name]);
        await h.db.query(`UPDATE consumer_leases SET owner = '', expires_at = to_timestamp(0) WHERE partition_count = $1`, [P]);
      } finally {
        await other.close();
      }
    });
  }
});
