// The consumer through its hand-written codecs (wire.ts: ReadEvents pages decoded by hand, Consume
// items encoded by hand) rates and hands over exactly what it does through the generated ones.
import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { StoredEventSchema } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { ConsumeItemSchema } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, T0, openHarness, type Harness } from "./test-support.js";

const t0 = T0.getTime();

async function setUp(h: Harness): Promise<void> {
  h.metering.meters.set("tnt_a\u0000calls", "api.call");
  const c = h.client(KEYS.adminA);
  await c.createCustomer({ customer: { customerId: "cus_1", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
  const version = create(PlanVersionSchema, {
    currency: "USD",
    charges: [{ chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "calls", eventType: "api.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.0000000015", perQuantity: 1n } } } }],
  });
  await c.createPlan({ planId: "plan", name: "P", version });
  await c.publishPlanVersion({ planId: "plan", version: 1 });
  await c.createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
}

/** The same feed for both consumers, including an event with neither a timestamp nor a receive time. */
function feed(h: Harness): void {
  for (let i = 0; i < 30; i++) {
    h.metering.push("tnt_a", { id: `e${i}`, customerId: "cus_1", type: "api.call", timestampMs: t0 - 60_000 + i * 997, properties: { calls: 1 + i * 7, note: `n\u00e9${i}` }, ...(i % 3 === 0 ? { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } : {}) });
  }
  const last = h.metering.events[h.metering.events.length - 1]!.sequence;
  h.metering.events.push(create(StoredEventSchema, { tenant: "tnt_a", sequence: last + 10n, event: { id: "no_time", customerId: "cus_1", type: "api.call", properties: { calls: { kind: { case: "intValue", value: 3n } } } } }));
}

for (const backend of testBackends()) describe(`rating consumer through the hand-written codecs (${backend.name})`, () => {
  let views: Harness;
  let generated: Harness;
  beforeAll(async () => {
    views = await openHarness(await backend.open());
    generated = await openHarness(await backend.open(), {}, { views: false });
    for (const h of [views, generated]) {
      await setUp(h);
      feed(h);
    }
  });
  afterAll(async () => {
    await views.close();
    await generated.close();
  });

  it("rates the same events to the same rows and hands the wallet the same items as through the generated codecs", async () => {
    expect(await views.service.consumer.pollOnce(0)).toBe(31);
    expect(await generated.service.consumer.pollOnce(0)).toBe(31);
    for (const id of [...Array.from({ length: 30 }, (_, i) => `e${i}`), "no_time"]) {
      const a = await views.service.rated.ratedEvent("tnt_a", id);
      expect(a, id).not.toBeNull();
      expect(a).toEqual(await generated.service.rated.ratedEvent("tnt_a", id));
    }
    const items = (h: Harness) => h.wallet.consumed.map((x) => [x.tenant, toJson(ConsumeItemSchema, x.item)]);
    expect(items(views)).toHaveLength(31);
    expect(items(views)).toEqual(items(generated));
    // No timestamp at all: rated at the consumer's clock, as storedEventOf does.
    expect((await views.service.rated.ratedEvent("tnt_a", "no_time"))!.timestampMs).toBe(t0);
  });
});
