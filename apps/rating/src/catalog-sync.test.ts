// Two rating processes on one database, as deployed (API replicas write the catalog, the consumer
// rates): the consumer's catalog cache (a long TTL here) must see a write of the other process at
// its next page. Before, the consumer rated the usage of a subscription created through another
// replica "no subscription in force" (and priced with an old override), for good.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { testBackends, type TestBackend } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, T0, openHarness, type Harness } from "./test-support.js";

const t0 = T0.getTime();
const NOV_1 = timestampFromMs(Date.UTC(2026, 10, 1));

/**
 * Two rating services on one database of `backend`: the consumer (caches catalogs for 10 minutes)
 * and an API replica; customers `customerIds` and a published per-unit plan ($1 a call), written
 * through the replica. Each describe gets its own pair (registered with its beforeAll/afterAll).
 */
function twoProcesses(backend: TestBackend, customerIds: string[]): { consumer: () => Harness; api: () => Harness } {
  let consumer: Harness;
  let api: Harness;
  beforeAll(async () => {
    const db = await backend.open();
    consumer = await openHarness(db, { cacheTtlMs: 600_000 });
    api = await openHarness(db);
    consumer.metering.meters.set("tnt_a\u0000calls", "api.call");
    api.metering.meters.set("tnt_a\u0000calls", "api.call");
    const c = api.client(KEYS.adminA);
    for (const id of customerIds) await c.createCustomer({ customer: { customerId: id, currency: "USD", billingAnchor: NOV_1, timeZone: "UTC" } });
    const version = create(PlanVersionSchema, {
      currency: "USD",
      charges: [{ chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "calls", eventType: "api.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "1", perQuantity: 1n } } } }],
    });
    await c.createPlan({ planId: "plan", name: "P", version });
    await c.publishPlanVersion({ planId: "plan", version: 1 });
  });
  afterAll(async () => {
    await api?.service.stop();
    await consumer?.close();
  });
  return { consumer: () => consumer, api: () => api };
}


for (const backend of testBackends()) describe(`rating catalog cache across processes (${backend.name})`, () => {
  const p = twoProcesses(backend, ["cus_1"]);

  it("rates usage under a subscription another process created after the consumer cached the tenant", async () => {
    p.consumer().metering.push("tnt_a", { id: "before", customerId: "cus_1", type: "api.call", timestampMs: t0 - 2_000, properties: { calls: 2 } });
    expect(await p.consumer().service.consumer.pollOnce(0)).toBe(1);
    expect((await p.consumer().service.rated.ratedEvent("tnt_a", "before"))!.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["", 0n]]); // no subscription yet
    // From after "before" (a start reaching back over rated usage is refused: backdated-changes.test.ts).
    await p.api().client(KEYS.adminA).createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan", planVersion: 1, startTime: timestampFromMs(t0 - 1_500) });
    p.consumer().metering.push("tnt_a", { id: "after", customerId: "cus_1", type: "api.call", timestampMs: t0 - 1_000, properties: { calls: 3 } });
    expect(await p.consumer().service.consumer.pollOnce(0)).toBe(1);
    expect((await p.consumer().service.rated.ratedEvent("tnt_a", "after"))!.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["calls", 3_000_000_000n]]);
  });

  it("prices with a price override another process set, and quotes with it", async () => {
    await p.api().client(KEYS.adminA).setPriceOverride({
      priceOverride: { overrideId: "ovr_1", customerId: "cus_1", chargeId: "calls", charge: { pricing: { case: "perUnit", value: { unitPrice: { amount: "0.5" } } } }, startTime: timestampFromMs(t0 - 900) },
    });
    p.consumer().metering.push("tnt_a", { id: "overridden", customerId: "cus_1", type: "api.call", timestampMs: t0 - 500, properties: { calls: 4 } });
    expect(await p.consumer().service.consumer.pollOnce(0)).toBe(1);
    expect((await p.consumer().service.rated.ratedEvent("tnt_a", "overridden"))!.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["calls", 2_000_000_000n]]);
    const q = await p.consumer().client(KEYS.adminA).quote({ event: { eventId: "q1", customerId: "cus_1", type: "api.call", timestamp: timestampFromMs(t0 - 100), properties: { calls: { kind: { case: "intValue", value: 10n } } } } });
    expect(q.rated!.lines.map((l) => l.priceNanos)).toEqual([5_000_000_000n]);
  });
});

for (const backend of testBackends()) describe(`rating catalog cache: a TTL reload between pages (${backend.name})`, () => {
  const p = twoProcesses(backend, ["cus_0", "cus_1"]);

  it("rates usage under a subscription another process created, after a TTL reload outside sync() (the guardrail step)", async () => {
    p.consumer().clock.set(new Date(t0));
    p.consumer().metering.push("tnt_a", { id: "e0", customerId: "cus_0", type: "api.call", timestampMs: t0 - 5_000, properties: { calls: 1 } });
    expect(await p.consumer().service.consumer.pollOnce(0)).toBe(1); // tenant entry loaded at t0
    p.consumer().clock.set(new Date(t0 + 300_000));
    p.consumer().metering.push("tnt_a", { id: "e1", customerId: "cus_1", type: "api.call", timestampMs: t0 - 4_000, properties: { calls: 1 } });
    expect(await p.consumer().service.consumer.pollOnce(0)).toBe(1); // cus_1 entry loaded at t0 + 5 min (no subscription)
    await p.api().client(KEYS.adminA).createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan", planVersion: 1, startTime: timestampFromMs(t0 - 3_000) }); // after e1
    p.consumer().clock.set(new Date(t0 + 600_001));
    // The guardrail step of the poll that was running when the write committed reloads the tenant
    // (TTL expired) at the new generation: the customers loaded before the write must not be kept.
    await p.consumer().service.consumer.evaluateGuardrails(new Map([["tnt_a", new Set(["cus_1"])]]));
    p.consumer().metering.push("tnt_a", { id: "e2", customerId: "cus_1", type: "api.call", timestampMs: t0 - 1_000, properties: { calls: 3 } });
    expect(await p.consumer().service.consumer.pollOnce(0)).toBe(1);
    expect((await p.consumer().service.rated.ratedEvent("tnt_a", "e2"))!.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["calls", 3_000_000_000n]]);
  });
});
