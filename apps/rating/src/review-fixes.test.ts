// Service-level tests of the review's findings (R2, R6-R9): each through the handlers and the
// consumer on every test backend.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { GuardrailKind, PeriodLineKind, PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { version as versionSpec } from "./domain/fixtures.js";
import { KEYS, codeOf, openHarness, type Harness } from "./test-support.js";

const NOV = Date.UTC(2026, 10, 1);
const HOUR = 3_600_000;
const DAY = 86_400_000;
const B = 1_000_000_000n;

const flatPlan = (amount: string, intervalMonths = 1) =>
  create(PlanVersionSchema, { currency: "USD", intervalMonths, charges: [{ chargeId: "platform", name: "Platform", unit: "USD", pricing: { case: "flat", value: { amount } } }] });
const tokensPlan = (intervalMonths = 1) =>
  create(PlanVersionSchema, {
    currency: "USD",
    intervalMonths,
    charges: [{ chargeId: "tokens", name: "Tokens", unit: "USD", usage: { meter: "m", eventType: "llm.call", quantityProperties: ["tokens"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.01" } } } }],
  });

for (const backend of testBackends()) describe(`rating review fixes (${backend.name})`, () => {
  let h: Harness;
  beforeAll(async () => {
    h = await openHarness(await backend.open());
    h.metering.meters.set("tnt_a\u0000m", "llm.call");
    const c = h.client(KEYS.adminA);
    await c.createPlan({ planId: "plat", name: "Platform", version: flatPlan("100") });
    await c.publishPlanVersion({ planId: "plat", version: 1 });
    await c.createPlan({ planId: "use", name: "Usage", version: tokensPlan() });
    await c.publishPlanVersion({ planId: "use", version: 1 });
  });
  afterAll(async () => {
    await h.close();
  });

  it("R2: rates, buckets, hands to the wallet and prices in RatePeriod the usage of a customer's second concurrent subscription", async () => {
    const c = h.client(KEYS.adminA);
    const r = h.client(KEYS.readA);
    await c.createCustomer({ customer: { customerId: "cus_2s", currency: "USD", billingAnchor: timestampFromMs(NOV), timeZone: "UTC" } });
    await c.createSubscription({ subscriptionId: "sub_a", customerId: "cus_2s", planId: "plat", planVersion: 1, startTime: timestampFromMs(NOV) });
    await c.createSubscription({ subscriptionId: "sub_b", customerId: "cus_2s", planId: "use", planVersion: 1, startTime: timestampFromMs(NOV + 1000) });
    h.metering.push("tnt_a", { id: "evt_2s", customerId: "cus_2s", type: "llm.call", timestampMs: NOV + HOUR, properties: { tokens: 1000 } });
    await h.service.consumer.pollOnce(0);
    const ev = await r.getRatedEvent({ eventId: "evt_2s" });
    expect(ev.rated?.subscriptionId).toBe("sub_b");
    expect(ev.rated?.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["tokens", 10n * B]]);
    const u = await r.listRatedUsage({ customerId: "cus_2s", from: timestampFromMs(NOV), to: timestampFromMs(NOV + DAY) });
    expect(u.totals.map((t) => [t.chargeId, t.quantity, t.priceNanos])).toEqual([["tokens", 1000n, 10n * B]]);
    expect(h.wallet.consumed.filter((x) => x.item.id === "evt_2s:tokens").map((x) => x.item.amountNanos)).toEqual([10n * B]);
    const p = await r.ratePeriod({ customerId: "cus_2s", at: timestampFromMs(NOV + HOUR) });
    expect(p.lines.map((l) => [l.kind, l.chargeId, l.amountNanos])).toEqual([
      [PeriodLineKind.FLAT, "platform", 100n * B],
      [PeriodLineKind.USAGE, "tokens", 10n * B],
    ]);
  });

  it("R2: RatePeriod takes the billing interval of the first subscription in force (by start time, then id), not the last", async () => {
    const c = h.client(KEYS.adminA);
    await c.createPlan({ planId: "use_y", name: "Usage yearly", version: tokensPlan(12) });
    await c.publishPlanVersion({ planId: "use_y", version: 1 });
    await c.createCustomer({ customer: { customerId: "cus_iv", currency: "USD", billingAnchor: timestampFromMs(NOV), timeZone: "UTC" } });
    await c.createSubscription({ subscriptionId: "sub_m", customerId: "cus_iv", planId: "plat", planVersion: 1, startTime: timestampFromMs(NOV) });
    await c.createSubscription({ subscriptionId: "sub_y", customerId: "cus_iv", planId: "use_y", planVersion: 1, startTime: timestampFromMs(NOV + 1000) });
    const p = await h.client(KEYS.readA).ratePeriod({ customerId: "cus_iv", at: timestampFromMs(NOV + HOUR) });
    expect(p.periodEnd).toEqual(timestampFromMs(Date.UTC(2026, 11, 1)));
  });

  it("R6: refuses a minimum commitment or spending cap finer than a nano with InvalidArgument naming the field, writing nothing", async () => {
    const c = h.client(KEYS.adminA);
    const withMin = (m: string) => { const v = flatPlan("10"); v.minimumCommitmentAmount = m; return v; };
    const withCap = (m: string) => { const v = flatPlan("10"); v.spendingCapAmount = m; return v; };
    expect(await codeOf(c.createPlan({ planId: "sub_nano", name: "x", version: withMin("100.0000000001") }))).toMatch(/^InvalidArgument: version\.minimum_commitment_amount: .*9 fraction digits/);
    expect(await codeOf(c.createPlan({ planId: "sub_nano", name: "x", version: withCap("50.00000000005") }))).toMatch(/^InvalidArgument: version\.spending_cap_amount: .*9 fraction digits/);
    expect(await h.service.catalog.getPlan("tnt_a", "sub_nano")).toBeNull();
    expect(await codeOf(c.createPlanVersion({ planId: "plat", version: { ...withMin("0.0000000001"), version: 2 } }))).toMatch(/^InvalidArgument: version\.minimum_commitment_amount/);
    expect((await h.service.catalog.getPlan("tnt_a", "plat"))!.versions.map((v) => v.version)).toEqual([1]);
    // Nine fraction digits (and trailing zeros past them) are whole nanos: accepted.
    expect(await codeOf(c.createPlan({ planId: "nano_ok", name: "x", version: withMin("100.0000000010") }))).toBe("OK");
    expect(await codeOf(c.updatePlanVersion({ planId: "nano_ok", version: { ...withCap("1.0000000001"), version: 1 } }))).toMatch(/^InvalidArgument: version\.spending_cap_amount/);
    expect((await h.service.catalog.getVersion("tnt_a", "nano_ok", 1))!.spendingCapAmount).toBe("");
    // A draft stored before this rule cannot be published.
    await h.service.catalog.createPlan("tnt_a", "old_draft", "x", versionSpec([], { version: 1, status: "draft", minimumCommitmentAmount: "100.0000000001" }), NOV);
    expect(await codeOf(c.publishPlanVersion({ planId: "old_draft", version: 1 }))).toMatch(/^InvalidArgument: version\.minimum_commitment_amount/);
  });

  it("R7: CreatePlanVersion needs the version number, so a retried call returns the first result instead of adding a version", async () => {
    const c = h.client(KEYS.adminA);
    await c.createPlan({ planId: "plat7", name: "Platform", version: flatPlan("100") });
    expect(await codeOf(c.createPlanVersion({ planId: "plat7", version: flatPlan("120") }))).toMatch(/^InvalidArgument: version\.version: .*next version number 2/);
    expect((await h.service.catalog.getPlan("tnt_a", "plat7"))!.versions.map((v) => v.version)).toEqual([1]);
    const v2 = { ...flatPlan("120"), version: 2 };
    await c.createPlanVersion({ planId: "plat7", version: v2 });
    const again = await c.createPlanVersion({ planId: "plat7", version: v2 });
    expect(again.plan?.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(await codeOf(c.createPlanVersion({ planId: "plat7", version: { ...flatPlan("130"), version: 2 } }))).toMatch(/^AlreadyExists/);
  });

  it("R8: refuses a seat change outside the subscription's [start, end) naming change.effective_time, and a CreateSubscription retry still replays", async () => {
    const c = h.client(KEYS.adminA);
    await c.createPlan({ planId: "seatp", name: "Seats", version: create(PlanVersionSchema, { currency: "USD", charges: [{ chargeId: "seats", name: "Seats", unit: "USD", pricing: { case: "seats", value: { perSeatAmount: "10" } } }] }) });
    await c.publishPlanVersion({ planId: "seatp", version: 1 });
    await c.createCustomer({ customer: { customerId: "cus_seat", currency: "USD", billingAnchor: timestampFromMs(NOV), timeZone: "UTC" } });
    const req = { subscriptionId: "sub_s", customerId: "cus_seat", planId: "seatp", planVersion: 1, startTime: timestampFromMs(NOV + 5 * DAY), endTime: timestampFromMs(NOV + 20 * DAY), seats: 3 };
    await c.createSubscription(req);
    const change = (changeId: string, seats: number, atMs: number) => c.updateSeats({ subscriptionId: "sub_s", change: { changeId, seats, effectiveTime: timestampFromMs(atMs) } });
    expect(await codeOf(change("chg0", 50, NOV))).toMatch(/^InvalidArgument: change\.effective_time: /);
    expect(await codeOf(change("chg1", 50, NOV + 20 * DAY))).toMatch(/^InvalidArgument: change\.effective_time: /);
    // At the start itself, under an id that sorts before "initial": allowed, and not mistaken for it.
    expect(await codeOf(change("a_chg", 7, NOV + 5 * DAY))).toBe("OK");
    expect(await codeOf(change("chg2", 9, NOV + 20 * DAY - 1))).toBe("OK");
    const sub = (await h.service.catalog.getSubscription("tnt_a", "sub_s"))!;
    expect(sub.seatChanges.map((x) => x.changeId).sort()).toEqual(["a_chg", "chg2", "initial"]);
    expect(await codeOf(c.createSubscription(req))).toBe("OK");
    expect(await codeOf(c.createSubscription({ ...req, seats: 7 }))).toMatch(/^AlreadyExists/);
  });

  it("R10: margin guardrails value credit-priced revenue at the credits' exchange rate: no false alert for $0.50 of credits against $0.001 of cost", async () => {
    const c = h.client(KEYS.adminA);
    h.metering.meters.set("tnt_a\u0000assist", "assist.request");
    const creditsPlan = (perRequest: string) =>
      create(PlanVersionSchema, {
        currency: "USD",
        charges: [{ chargeId: "assist", name: "Assist", unit: "cr_credits", usage: { meter: "assist", eventType: "assist.request", dimensionProperties: ["model"] }, pricing: { case: "credits", value: { tierProperty: "model", tiers: [{ tier: "premium", values: ["big"], creditsPerUnit: perRequest }] } } }],
      });
    await c.upsertCostRates({ rates: [{ provider: "openai", model: "big", metric: "input_tokens", unitPrice: { amount: "1", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: timestampFromMs(0) }] });
    await c.createGuardrailRule({ rule: { ruleId: "rule_cr", kind: GuardrailKind.MARGIN_BELOW, thresholdBps: 2000n, windowSeconds: 3600 } });
    const now = h.clock.now().getTime();
    for (const [cus, perRequest] of [["cus_cr_dear", "50"], ["cus_cr_cheap", "0.01"]] as const) {
      await c.createPlan({ planId: `plan_${cus}`, name: "Credits", version: creditsPlan(perRequest) });
      await c.publishPlanVersion({ planId: `plan_${cus}`, version: 1 });
      await c.createCustomer({ customer: { customerId: cus, currency: "USD", billingAnchor: timestampFromMs(NOV), timeZone: "UTC" } });
      await c.createSubscription({ subscriptionId: `sub_${cus}`, customerId: cus, planId: `plan_${cus}`, planVersion: 1, startTime: timestampFromMs(NOV) });
      h.metering.push("tnt_a", { id: `evt_${cus}`, customerId: cus, type: "assist.request", timestampMs: now - 1000, properties: { model: "big", provider: "openai", input_tokens: 1000 } });
    }
    await h.service.consumer.pollOnce(0);
    const alerts = (await h.client(KEYS.readA).listAlerts({ since: timestampFromMs(now - HOUR) })).alerts.filter((a) => a.ruleId === "rule_cr");
    // 50 credits at $0.01 = $0.50 against $0.001: margin 9,980 bps, no alert. 0.01 credit = $0.0001
    // against $0.001: -90,000 bps, an alert in USD.
    expect(alerts.map((a) => [a.customerId, a.observedBps, a.revenueNanos, a.costNanos, a.unit])).toEqual([["cus_cr_cheap", -90_000n, 100_000n, 1_000_000n, "USD"]]);
  });
});
