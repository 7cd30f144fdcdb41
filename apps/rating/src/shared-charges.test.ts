// The guard on a customer's subscriptions sharing a charge id in one billing period (usage, period
// totals, commitments and caps are kept per customer and charge, not per subscription): through
// the handlers on every test backend. Reviewer's findings 1, 2 and 5 (/tmp/reports/billing2.md).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, codeOf, openHarness, type Harness } from "./test-support.js";

const NOV = Date.UTC(2026, 10, 1);
const DEC = Date.UTC(2026, 11, 1);
const DAY = 86_400_000;

const usagePlan = (chargeId: string, eventType: string, commitment = "") =>
  create(PlanVersionSchema, {
    currency: "USD",
    intervalMonths: 1,
    minimumCommitmentAmount: commitment,
    charges: [{ chargeId, name: chargeId, unit: "USD", usage: { meter: `${chargeId}_m`, eventType, quantityProperties: [] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.01" } } } }],
  });

for (const backend of testBackends()) describe(`rating: subscriptions sharing a charge id (${backend.name})`, () => {
  let h: Harness;
  const ts = timestampFromMs;
  beforeAll(async () => {
    h = await openHarness(await backend.open());
    h.metering.meters.set("tnt_a\u0000calls_m", "api.call");
    h.metering.meters.set("tnt_a\u0000images_m", "image.gen");
    const c = h.client(KEYS.adminA);
    await c.createPlan({ planId: "basic", name: "Basic", version: usagePlan("calls", "api.call") });
    await c.publishPlanVersion({ planId: "basic", version: 1 });
    await c.createPlan({ planId: "pro", name: "Pro", version: usagePlan("calls", "api.call", "100") });
    await c.publishPlanVersion({ planId: "pro", version: 1 });
    await c.createPlan({ planId: "img", name: "Images", version: usagePlan("images", "image.gen") });
    await c.publishPlanVersion({ planId: "img", version: 1 });
    // img v2 adds a "calls" charge: a migration to it collides with a subscription billing calls.
    await c.createPlanVersion({ planId: "img", version: { ...usagePlan("calls", "api.call"), version: 2 } });
    await c.publishPlanVersion({ planId: "img", version: 2 });
    for (const id of ["cus_b", "cus_c", "cus_d", "cus_e", "cus_m"]) {
      await c.createCustomer({ customer: { customerId: id, currency: "USD", billingAnchor: ts(NOV), timeZone: "UTC" } });
    }
  });
  afterAll(async () => {
    await h.close();
  });

  it("refuses a successor starting mid-period on a plan sharing `calls` (sub_b1 Nov 1 - Nov 10, sub_b2 from Nov 10), FailedPrecondition naming sub_b1, the charge and the period, and writes nothing", async () => {
    const c = h.client(KEYS.adminA);
    await c.createSubscription({ subscriptionId: "sub_b1", customerId: "cus_b", planId: "basic", planVersion: 1, startTime: ts(NOV), endTime: ts(NOV + 9 * DAY) });
    const got = await codeOf(c.createSubscription({ subscriptionId: "sub_b2", customerId: "cus_b", planId: "pro", planVersion: 1, startTime: ts(NOV + 9 * DAY) }));
    expect(got).toMatch(/^FailedPrecondition: plan_version: subscription_id "sub_b1" shares charge "calls" with this subscription in the billing period starting 2026-11-01T00:00:00\.000Z .*MigrateSubscription/);
    expect(await h.service.catalog.getSubscription("tnt_a", "sub_b2")).toBeNull();
    expect((await h.client(KEYS.readA).listSubscriptions({ customerId: "cus_b" })).subscriptions.map((s) => s.subscriptionId)).toEqual(["sub_b1"]);
    // Also refused when the new subscription starts first (it would own `calls` of sub_b1's period).
    expect(await codeOf(c.createSubscription({ subscriptionId: "sub_b0", customerId: "cus_b", planId: "pro", planVersion: 1, startTime: ts(NOV - 20 * DAY), endTime: ts(NOV + DAY) }))).toMatch(/^FailedPrecondition: plan_version: subscription_id "sub_b1"/);
  });

  it("refuses two concurrent subscriptions of the same plan", async () => {
    const c = h.client(KEYS.adminA);
    await c.createSubscription({ subscriptionId: "sub_c1", customerId: "cus_c", planId: "basic", planVersion: 1, startTime: ts(NOV) });
    expect(await codeOf(c.createSubscription({ subscriptionId: "sub_c2", customerId: "cus_c", planId: "basic", planVersion: 1, startTime: ts(NOV + 3 * DAY) }))).toMatch(/^FailedPrecondition: plan_version: subscription_id "sub_c1" shares charge "calls"/);
    expect(await h.service.catalog.getSubscription("tnt_a", "sub_c2")).toBeNull();
  });

  it("allows concurrent subscriptions whose plans share no charge id, and a successor starting at the next billing period's start", async () => {
    const c = h.client(KEYS.adminA);
    await c.createSubscription({ subscriptionId: "sub_d1", customerId: "cus_d", planId: "basic", planVersion: 1, startTime: ts(NOV + DAY), endTime: ts(DEC) });
    expect(await codeOf(c.createSubscription({ subscriptionId: "sub_d2", customerId: "cus_d", planId: "img", planVersion: 1, startTime: ts(NOV + 2 * DAY) }))).toBe("OK");
    // sub_d1 ends at Dec 1, the start of the next period: a successor sharing `calls` from Dec 1 is fine.
    expect(await codeOf(c.createSubscription({ subscriptionId: "sub_d3", customerId: "cus_d", planId: "pro", planVersion: 1, startTime: ts(DEC) }))).toBe("OK");
    // One millisecond earlier it shares November with sub_d1.
    expect(await codeOf(c.createSubscription({ subscriptionId: "sub_d4", customerId: "cus_e", planId: "basic", planVersion: 1, startTime: ts(NOV), endTime: ts(DEC) }))).toBe("OK");
    expect(await codeOf(c.createSubscription({ subscriptionId: "sub_d5", customerId: "cus_e", planId: "pro", planVersion: 1, startTime: ts(DEC - 1) }))).toMatch(/^FailedPrecondition: plan_version: subscription_id "sub_d4"/);
  });

  it("refuses a migration to a version whose charges collide with another subscription's, keeps the subscription unchanged, and allows one that does not", async () => {
    const c = h.client(KEYS.adminA);
    await c.createSubscription({ subscriptionId: "sub_m1", customerId: "cus_m", planId: "basic", planVersion: 1, startTime: ts(NOV), endTime: ts(NOV + 10 * DAY) });
    await c.createSubscription({ subscriptionId: "sub_m2", customerId: "cus_m", planId: "img", planVersion: 1, startTime: ts(NOV) });
    const mig = { subscriptionId: "sub_m2", planId: "img", planVersion: 2, effectiveTime: ts(NOV + 20 * DAY) };
    expect(await codeOf(c.migrateSubscription(mig))).toMatch(/^FailedPrecondition: plan_version: subscription_id "sub_m1" shares charge "calls"/);
    expect((await h.service.catalog.getSubscription("tnt_a", "sub_m2"))!.phases).toHaveLength(1);
    // sub_m1's own plan change goes through MigrateSubscription (no other subscription bills `calls`).
    expect(await codeOf(c.migrateSubscription({ subscriptionId: "sub_m1", planId: "pro", planVersion: 1, effectiveTime: ts(NOV + 5 * DAY) }))).toBe("OK");
  });

  it("allows a migration taking a charge on from a later period, and keeps the earlier period's usage of it with the subscription that had it in force", async () => {
    const c = h.client(KEYS.adminA);
    const combo = create(PlanVersionSchema, { ...usagePlan("calls", "api.call"), charges: [...usagePlan("calls", "api.call").charges, ...usagePlan("images", "image.gen").charges] });
    await c.createPlan({ planId: "combo", name: "Combo", version: combo });
    await c.publishPlanVersion({ planId: "combo", version: 1 });
    await c.createCustomer({ customer: { customerId: "cus_n", currency: "USD", billingAnchor: ts(NOV), timeZone: "UTC" } });
    // sub_a_main (calls) sorts first; sub_img_n bills images until Nov 5.
    await c.createSubscription({ subscriptionId: "sub_a_main", customerId: "cus_n", planId: "basic", planVersion: 1, startTime: ts(NOV) });
    await c.createSubscription({ subscriptionId: "sub_img_n", customerId: "cus_n", planId: "img", planVersion: 1, startTime: ts(NOV), endTime: ts(NOV + 4 * DAY) });
    // Taking images on from Dec 3 shares no billing period with sub_img_n (before: refused, the
    // whole life of sub_a_main was checked, from Nov 1).
    expect(await codeOf(c.migrateSubscription({ subscriptionId: "sub_a_main", planId: "combo", planVersion: 1, effectiveTime: ts(DEC + 2 * DAY) }))).toBe("OK");
    // November's images belong to sub_img_n (in force then), not to sub_a_main (first, but images only from December).
    h.metering.push("tnt_a", { id: "evt_img_n", customerId: "cus_n", type: "image.gen", timestampMs: NOV + DAY, properties: {} });
    while ((await h.service.consumer.pollOnce(0)) > 0);
    const nov = await h.client(KEYS.readA).ratePeriod({ customerId: "cus_n", at: ts(NOV + DAY) });
    expect(nov.lines.filter((l) => l.chargeId === "images").map((l) => l.subscriptionId)).toEqual(["sub_img_n"]);
  });

  it("still answers an idempotent replay of an existing subscription and of a migration as before", async () => {
    const c = h.client(KEYS.adminA);
    const req = { subscriptionId: "sub_c1", customerId: "cus_c", planId: "basic", planVersion: 1, startTime: ts(NOV) };
    expect(await codeOf(c.createSubscription(req))).toBe("OK");
    expect(await codeOf(c.createSubscription({ ...req, seats: 2 }))).toMatch(/^AlreadyExists/);
    expect(await codeOf(c.migrateSubscription({ subscriptionId: "sub_m1", planId: "pro", planVersion: 1, effectiveTime: ts(NOV + 5 * DAY) }))).toBe("OK");
    expect((await h.service.catalog.getSubscription("tnt_a", "sub_m1"))!.phases).toHaveLength(2);
  });
});
