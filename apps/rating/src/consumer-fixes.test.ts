// The consumer against a poison event (one whose rating throws) and against a replay rated under a
// changed catalog: neither may stop the partition or rate an event twice.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, T0, openHarness, type Harness } from "./test-support.js";

const t0 = T0.getTime();

for (const backend of testBackends()) describe(`rating consumer: poison events and replays (${backend.name})`, () => {
  let h: Harness;
  beforeAll(async () => {
    h = await openHarness(await backend.open());
    h.metering.meters.set("tnt_a\u0000calls", "api.call");
    const c = h.client(KEYS.adminA);
    for (const id of ["cus_1", "cus_2"]) await c.createCustomer({ customer: { customerId: id, currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
    const version = create(PlanVersionSchema, {
      currency: "USD",
      charges: [{ chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "calls", eventType: "api.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "1", perQuantity: 1n } } } }],
    });
    await c.createPlan({ planId: "plan", name: "P", version });
    await c.publishPlanVersion({ planId: "plan", version: 1 });
    await c.createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
  });
  afterAll(async () => {
    await h.close();
  });

  it("records an event whose price overflows int64 as unpriced and rates the rest of its batch", async () => {
    h.metering.push("tnt_a", { id: "ok_1", customerId: "cus_1", type: "api.call", timestampMs: t0 - 3_000, properties: { calls: 5 } });
    // 10^10 calls at $1 (10^19 nanos): past the largest amount of one event, unpriced by the domain.
    h.metering.push("tnt_a", { id: "too_big", customerId: "cus_1", type: "api.call", timestampMs: t0 - 2_900, properties: { calls: 10_000_000_000n } });
    // Ten events of 10^9 calls at $1 (10^18 nanos each, the most one event may be): the tenth
    // takes the batch's booked total past int64, so rating it throws: a poison event.
    for (let i = 0; i < 10; i++) h.metering.push("tnt_a", { id: `huge_${i}`, customerId: "cus_1", type: "api.call", timestampMs: t0 - 2_000 + i, properties: { calls: 1_000_000_000n } });
    h.metering.push("tnt_a", { id: "ok_2", customerId: "cus_1", type: "api.call", timestampMs: t0 - 1_000, properties: { calls: 7 } });
    expect(await h.service.consumer.pollOnce(0)).toBe(13);
    expect((await h.service.rated.ratedEvent("tnt_a", "ok_1"))!.lines.map((l) => l.priceNanos)).toEqual([5_000_000_000n]);
    expect((await h.service.rated.ratedEvent("tnt_a", "ok_2"))!.lines.map((l) => l.priceNanos)).toEqual([7_000_000_000n]);
    expect((await h.service.rated.ratedEvent("tnt_a", "too_big"))!.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n, reason: expect.stringMatching(/^price exceeds/) });
    expect((await h.service.rated.ratedEvent("tnt_a", "huge_8"))!.lines.map((l) => l.priceNanos)).toEqual([10n ** 18n]);
    const huge = (await h.service.rated.ratedEvent("tnt_a", "huge_9"))!;
    expect(huge.lines).toHaveLength(1);
    expect(huge.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n });
    expect(huge.lines[0]!.reason).toMatch(/^rating failed: .*int64/);
    expect(h.wallet.consumed.map((x) => x.item.id)).toEqual(["ok_1:calls", ...Array.from({ length: 9 }, (_, i) => `huge_${i}:calls`), "ok_2:calls"]);
    expect(await h.service.consumer.pollOnce(0)).toBe(0);
  });

  it("sets aside the event that would take a period total past int64 (the batch's write failed on the column and was retried for good) and rates the rest", async () => {
    const c = h.client(KEYS.adminA);
    await c.createCustomer({ customer: { customerId: "cus_3", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
    await c.createSubscription({ subscriptionId: "sub_3", customerId: "cus_3", planId: "plan", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
    // Nine events of 10^18 nanos in one batch: 9 x 10^18 booked in cus_3's period, within int64.
    for (let i = 0; i < 9; i++) h.metering.push("tnt_a", { id: `tot_${i}`, customerId: "cus_3", type: "api.call", timestampMs: t0 - 900 + i, properties: { calls: 1_000_000_000n } });
    expect(await h.service.consumer.pollOnce(0)).toBe(9);
    // A tenth, in a later batch (its carry starts afresh), would take the period past int64.
    h.metering.push("tnt_a", { id: "tot_over", customerId: "cus_3", type: "api.call", timestampMs: t0 - 800, properties: { calls: 1_000_000_000n } });
    h.metering.push("tnt_a", { id: "tot_ok", customerId: "cus_3", type: "api.call", timestampMs: t0 - 700, properties: { calls: 3 } });
    expect(await h.service.consumer.pollOnce(0)).toBe(2);
    const over = (await h.service.rated.ratedEvent("tnt_a", "tot_over"))!;
    expect(over.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n });
    expect(over.lines[0]!.reason).toMatch(/^rating failed: the period's booked total of charge calls would pass int64/);
    expect((await h.service.rated.ratedEvent("tnt_a", "tot_ok"))!.lines.map((l) => l.priceNanos)).toEqual([3_000_000_000n]);
    expect(await h.service.consumer.pollOnce(0)).toBe(0);
  });

  it("asks for fewer events while pages come back ResourceExhausted (large events past a message limit), and for more again after", async () => {
    for (let i = 0; i < 5; i++) h.metering.push("tnt_a", { id: `big_${i}`, customerId: "cus_1", type: "api.call", timestampMs: t0 - 500 + i, properties: { calls: 1 } });
    h.metering.pageEventsLimit = 700; // the default batch (2,000) is refused; 1,000 too; 500 passes
    h.metering.readSizes = [];
    try {
      expect(await h.service.consumer.pollOnce(0)).toBe(5);
      expect(h.metering.readSizes).toEqual([2_000, 1_000, 500]);
      for (let i = 0; i < 5; i++) expect(await h.service.rated.ratedEvent("tnt_a", `big_${i}`)).toBeDefined();
      // The next read asks for twice as many (1,000: refused), then 500 again.
      expect(await h.service.consumer.pollOnce(0)).toBe(0);
      expect(h.metering.readSizes.slice(3)).toEqual([1_000, 500]);
    } finally {
      h.metering.pageEventsLimit = Infinity;
    }
  });

  it("does not rate an event again when a replay would rate it under other charges (a subscription created meanwhile)", async () => {
    const seq = h.metering.push("tnt_a", { id: "x_1", customerId: "cus_2", type: "api.call", timestampMs: t0 - 500, properties: { calls: 3 } });
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect((await h.service.rated.ratedEvent("tnt_a", "x_1"))!.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["", 0n]]);
    // A subscription covering x_1, written to the tables: the API refuses one reaching back over
    // rated usage now (backdated-changes.test.ts), but one stored before that rule may exist.
    await h.db.query(`INSERT INTO subscriptions (tenant, subscription_id, customer_id, start_time, end_time, create_time) VALUES ('tnt_a', 'sub_2', 'cus_2', $1, NULL, $2)`, [new Date(Date.UTC(2026, 10, 1)), T0]);
    await h.db.query(`INSERT INTO subscription_phases (tenant, subscription_id, seq, plan_id, plan_version, start_time, end_time) VALUES ('tnt_a', 'sub_2', 1, 'plan', 1, $1, NULL)`, [new Date(Date.UTC(2026, 10, 1))]);
    const consumed = h.wallet.consumed.length;
    // The same event delivered again (a new partitioning starts at the lowest old cursor).
    const again = h.metering.events.filter((e) => e.sequence === seq);
    expect(await h.service.consumer.processBatch(again, seq)).toBe(0);
    expect((await h.service.rated.ratedEvent("tnt_a", "x_1"))!.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["", 0n]]);
    await h.service.consumer.drainOutbox();
    expect(h.wallet.consumed).toHaveLength(consumed);
  });

  it("rates an event delivered twice in one page once (the first) and goes on with the rest of the page", async () => {
    h.metering.push("tnt_a", { id: "dup_1", customerId: "cus_1", type: "api.call", timestampMs: t0 - 400, properties: { calls: 2 } });
    h.metering.push("tnt_a", { id: "dup_1", customerId: "cus_1", type: "api.call", timestampMs: t0 - 400, properties: { calls: 2 } });
    h.metering.push("tnt_a", { id: "after_dup", customerId: "cus_1", type: "api.call", timestampMs: t0 - 300, properties: { calls: 4 } });
    const consumed = h.wallet.consumed.length;
    expect(await h.service.consumer.pollOnce(0)).toBe(2);
    expect((await h.service.rated.ratedEvent("tnt_a", "dup_1"))!.lines.map((l) => l.priceNanos)).toEqual([2_000_000_000n]);
    expect((await h.service.rated.ratedEvent("tnt_a", "after_dup"))!.lines.map((l) => l.priceNanos)).toEqual([4_000_000_000n]);
    expect(h.wallet.consumed.slice(consumed).map((x) => [x.item.id, x.item.amountNanos])).toEqual([
      ["dup_1:calls", 2_000_000_000n],
      ["after_dup:calls", 4_000_000_000n],
    ]);
    expect(await h.service.consumer.pollOnce(0)).toBe(0);
  });
});

describe("storedEventOf", () => {
  it("truncates an event's time to the millisecond (23:59:59.9996 stays in its day and period)", async () => {
    const { storedEventOf } = await import("./mapping.js");
    const { StoredEventSchema } = await import("@nanobill/contracts/nanobill/metering/v1/metering_pb");
    const last = Date.UTC(2026, 10, 30, 23, 59, 59);
    const s = create(StoredEventSchema, { tenant: "t", sequence: 1n, event: { id: "e", customerId: "c", type: "x", timestamp: { seconds: BigInt(last / 1000), nanos: 999_600_000 } } });
    expect(new Date(storedEventOf(s, 0).event.timestampMs).toISOString()).toBe("2026-11-30T23:59:59.999Z");
  });
});
