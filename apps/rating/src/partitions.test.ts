// Consumers partitioned by customer over metering's feed: every event rated exactly once across the
// partitions, idle partitions still advance their cursor, and a new partitioning resumes from the
// old cursors without missing or re-rating anything.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRatingService } from "./index.js";
import { partitionCursorName } from "./consumer.js";
import { FakeMetering, KEYS, T0, openHarness, type Harness } from "./test-support.js";
import { silentLogger } from "@nanobill/service-kit";

const t0 = T0.getTime();
const TENANTS = [
  { tenant: "tnt_a", key: KEYS.adminA },
  { tenant: "tnt_b", key: KEYS.adminB },
];

for (const backend of testBackends()) describe(`rating consumers partitioned by customer (${backend.name})`, () => {
  let h: Harness;
  beforeAll(async () => {
    h = await openHarness(await backend.open(), { consumerPartitions: 3 });
    for (const { tenant, key } of TENANTS) {
      h.metering.meters.set(`${tenant}\u0000calls`, "api.call");
      const c = h.client(key);
      await c.createCustomer({ customer: { customerId: "cus_1", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
      const version = create(PlanVersionSchema, {
        currency: "USD",
        charges: [{ chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "calls", eventType: "api.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.01", perQuantity: 1n } } } }],
      });
      await c.createPlan({ planId: "plan", name: "P", version });
      await c.publishPlanVersion({ planId: "plan", version: 1 });
      await c.createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
    }
  });
  afterAll(async () => {
    await h.close();
  });

  async function drain(consumers: ReadonlyArray<{ pollOnce(w: number): Promise<number> }>): Promise<number[]> {
    const rated = consumers.map(() => 0);
    for (let round = 0; round < 20; round++) {
      let any = 0;
      for (const [k, c] of consumers.entries()) {
        const n = await c.pollOnce(0);
        rated[k]! += n;
        any += n;
      }
      if (any === 0) return rated;
    }
    throw new Error("consumers did not drain");
  }

  it("rates each event once, in the partition of its customer, and advances idle partitions", async () => {
    expect(h.service.consumers).toHaveLength(3);
    for (let i = 0; i < 40; i++) h.metering.push(TENANTS[i % 2]!.tenant, { id: `e${i}`, customerId: "cus_1", type: "api.call", timestampMs: t0 - 60_000 + i, properties: { calls: 1 } });
    const rated = await drain(h.service.consumers);
    expect(rated.reduce((a, b) => a + b, 0)).toBe(40);
    const perPartition = [0, 0, 0];
    for (let i = 0; i < 40; i++) perPartition[FakeMetering.partitionOf(TENANTS[i % 2]!.tenant, "cus_1", 3)]!++;
    expect(rated).toEqual(perPartition);
    expect(h.wallet.consumed.map((x) => x.item.id).sort()).toEqual(Array.from({ length: 40 }, (_, i) => `e${i}:calls`).sort());
    const last = h.metering.events[h.metering.events.length - 1]!.sequence;
    for (let k = 0; k < 3; k++) expect(await h.service.rated.cursor(partitionCursorName(3, k))).toBe(last);
  });

  it("resumes under a new partitioning from the old cursors: nothing missed, nothing rated twice", async () => {
    for (let i = 40; i < 50; i++) h.metering.push(TENANTS[i % 2]!.tenant, { id: `e${i}`, customerId: "cus_1", type: "api.call", timestampMs: t0 - 60_000 + i, properties: { calls: 1 } });
    const two = await createRatingService({
      db: h.db,
      logger: silentLogger,
      clock: h.clock,
      config: { consumerEnabled: false, cacheTtlMs: 0, consumerPartitions: 2 },
      clients: { metering: h.metering.client(), wallet: h.wallet.client() },
    });
    expect(await two.rated.cursor(partitionCursorName(2, 0))).toBe(await h.service.rated.cursor(partitionCursorName(3, 0)));
    const rated = await drain(two.consumers);
    expect(rated.reduce((a, b) => a + b, 0)).toBe(10);
    expect(h.wallet.consumed).toHaveLength(50);
    expect(new Set(h.wallet.consumed.map((x) => x.item.id)).size).toBe(50);
    await two.stop();
  });

  it("serializes two consumers rating different events of one customer at once (no lost carry)", async () => {
    // 1.5 nanos per call: each event books 1 or 2 nanos and carries the half. Two consumers with
    // different cursors rate events 0-20 and 21-41 of the same customer concurrently; both read and
    // write the customer's carry, so without the customer lock one carry update would be lost.
    const c = h.client(KEYS.adminA);
    await c.createCustomer({ customer: { customerId: "cus_half", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
    const version = create(PlanVersionSchema, {
      currency: "USD",
      charges: [{ chargeId: "half", name: "Half", unit: "USD", usage: { meter: "half", eventType: "half.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.0000000015", perQuantity: 1n } } } }],
    });
    h.metering.meters.set("tnt_a\u0000half", "half.call");
    await c.createPlan({ planId: "plan_half", name: "H", version });
    await c.publishPlanVersion({ planId: "plan_half", version: 1 });
    await c.createSubscription({ subscriptionId: "sub_half", customerId: "cus_half", planId: "plan_half", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
    const first = h.metering.events.length > 0 ? h.metering.events[h.metering.events.length - 1]!.sequence : 0n;
    for (let i = 0; i < 42; i++) h.metering.push("tnt_a", { id: `h${i}`, customerId: "cus_half", type: "half.call", timestampMs: t0 - 30_000 + i, properties: { calls: 1 } });
    const mid = h.metering.events[h.metering.events.length - 22]!.sequence; // after event h20
    const svc = (cursorName: string) =>
      createRatingService({
        db: h.db,
        logger: silentLogger,
        clock: h.clock,
        config: { consumerEnabled: false, cacheTtlMs: 0, consumerBatchEvents: 21 },
        clients: { metering: h.metering.client(), wallet: h.wallet.client() },
      }).then((s) => ({ s, cursorName }));
    const [a, b] = await Promise.all([svc("metering"), svc("metering")]);
    await h.db.query(`INSERT INTO consumer_cursor (name, after_sequence, update_time) VALUES ('metering', $1, now()) ON CONFLICT (name) DO UPDATE SET after_sequence = $1`, [first.toString()]);
    // b reads from its own copy of the cursor: the second half.
    const [ra, rb] = await Promise.all([a.s.consumer.processBatch(h.metering.events.filter((e) => e.sequence > first && e.sequence <= mid), mid), b.s.consumer.processBatch(h.metering.events.filter((e) => e.sequence > mid), h.metering.events[h.metering.events.length - 1]!.sequence)]);
    expect(ra + rb).toBe(42);
    const usage = await h.client(KEYS.readA).listRatedUsage({ customerId: "cus_half", from: timestampFromMs(t0 - 3_600_000), to: timestampFromMs(t0 + 3_600_000) });
    // 42 x 1.5 = 63 nanos exactly, and nothing left in the carry.
    expect(usage.totals.map((x) => [x.chargeId, x.priceNanos])).toEqual([["half", 63n]]);
    const { rows } = await h.db.query(`SELECT residue_num FROM carries WHERE tenant = 'tnt_a' AND customer_id = 'cus_half' AND kind = 'p'`);
    expect(rows.map((r) => String(r.residue_num))).toEqual(["0"]);
    await Promise.all([a.s.stop(), b.s.stop()]);
  });

  it("skips events another consumer rated: the duplicate is refused by the key, the batch is rated again with the lookup", async () => {
    const fresh = await createRatingService({
      db: h.db,
      logger: silentLogger,
      clock: h.clock,
      config: { consumerEnabled: false, cacheTtlMs: 0 },
      clients: { metering: h.metering.client(), wallet: h.wallet.client() },
    });
    const ratedRows = async () => Number((await h.db.query<{ n: bigint }>(`SELECT count(*)::bigint AS n FROM rated_events`)).rows[0]!.n);
    const old = h.metering.events.filter((e) => e.event!.id.startsWith("e")).slice(0, 5);
    const before = await ratedRows();
    for (let i = 0; i < 3; i++) h.metering.push("tnt_a", { id: `dup${i}`, customerId: "cus_1", type: "api.call", timestampMs: t0 - 10_000 + i, properties: { calls: 1 } });
    const added = h.metering.events.slice(-3);
    // Five events rated long ago and three new ones in one page: only the new ones are rated.
    expect(await fresh.consumer.processBatch([...old, ...added], added[2]!.sequence)).toBe(3);
    expect(await ratedRows()).toBe(before + 3);
    // The same page again: nothing left to rate (and the cursor write is idempotent).
    expect(await fresh.consumer.processBatch([...old, ...added], added[2]!.sequence)).toBe(0);
    expect(await ratedRows()).toBe(before + 3);
    await fresh.consumer.drainOutbox();
    expect(h.wallet.consumed.filter((x) => x.item.id.startsWith("dup")).map((x) => x.item.id).sort()).toEqual(["dup0:calls", "dup1:calls", "dup2:calls"]);
    await fresh.stop();
  });
});
