import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import {
  CostRateScope,
  GuardrailKind,
  MarginGroupBy,
  PeriodLineKind,
  PlanVersionSchema,
  RatedLineStatus,
  type PlanVersion,
} from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { initTelemetry, type Telemetry } from "@nanobill/telemetry";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, T0, openHarness, type Harness } from "./test-support.js";
import { COST_RATES_PER_REQUEST_MAX, PAGE_SIZE_MAX } from "./limits.js";

const t0 = T0.getTime();
const HOUR = 3_600_000;

function matrixVersion(): PlanVersion {
  return create(PlanVersionSchema, {
    currency: "USD",
    charges: [
      {
        chargeId: "llm_tokens",
        name: "LLM tokens",
        unit: "USD",
        usage: { meter: "llm_tokens", eventType: "llm.call", quantityProperties: ["input_tokens", "output_tokens"], dimensionProperties: ["model"] },
        pricing: {
          case: "matrix",
          value: {
            cells: [
              { match: { model: "gpt-x", metric: "input_tokens" }, unitPrice: { amount: "2.50", perQuantity: 1_000_000n } },
              { match: { model: "gpt-x", metric: "output_tokens" }, unitPrice: { amount: "10", perQuantity: 1_000_000n } },
            ],
          },
        },
      },
    ],
  });
}

async function expectCode(p: Promise<unknown>, code: Code, msg?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ConnectError);
    expect(Code[(e as ConnectError).code]).toBe(Code[code]);
    if (msg) expect((e as ConnectError).rawMessage).toMatch(msg);
    return;
  }
  throw new Error(`expected ${Code[code]}, got success`);
}

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
beforeAll(() => {
  telemetry = initTelemetry({ serviceName: "rating-test", exporter });
});
afterAll(async () => {
  await telemetry.shutdown();
});

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";

for (const backend of testBackends()) {
  describe(`rating service on ${backend.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await openHarness(await backend.open());
      h.metering.meters.set("tnt_a\u0000llm_tokens", "llm.call");
      const c = h.client(KEYS.adminA);
      await c.createCustomer({ customer: { customerId: "cus_1", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
      await c.createPlan({ planId: "plan_llm", name: "LLM", version: matrixVersion() });
      await c.publishPlanVersion({ planId: "plan_llm", version: 1 });
      await c.createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
      const r = await c.upsertCostRates({
        rates: [
          { provider: "openai", model: "gpt-x", metric: "input_tokens", unitPrice: { amount: "1.25", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: timestampFromMs(0) },
          { provider: "openai", model: "gpt-x", metric: "output_tokens", unitPrice: { amount: "5", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: timestampFromMs(0), scope: CostRateScope.TENANT },
        ],
      });
      expect(r.results.map((x) => x.ok)).toEqual([true, true]);
    });
    afterAll(async () => {
      await h.close();
    });

    it("rates the event-flow event at 8,755,000 nanos with cost 4,377,500 and hands it to the wallet once", async () => {
      const props = { model: "gpt-x", provider: "openai", input_tokens: 1234, output_tokens: 567 };
      h.metering.push("tnt_a", { id: "evt_1", customerId: "cus_1", type: "llm.call", timestampMs: t0, properties: props, traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01` });
      exporter.reset();
      expect(await h.service.consumer.pollOnce(0)).toBe(1);
      await telemetry.forceFlush();
      const span = exporter.getFinishedSpans().find((s) => s.name === "rating.rate_event");
      expect(span?.spanContext().traceId).toBe(TRACE_ID);
      expect(span?.attributes["nanobill.price_nanos"]).toBe(8_755_000);
      expect(span?.attributes["nanobill.cost_nanos"]).toBe(4_377_500);
      const c = h.client(KEYS.readA);
      const usage = await c.listRatedUsage({ customerId: "cus_1", from: timestampFromMs(t0 - HOUR), to: timestampFromMs(t0 + HOUR) });
      expect(usage.totals).toHaveLength(1);
      expect(usage.totals[0]).toMatchObject({ chargeId: "llm_tokens", quantity: 1801n, priceNanos: 8_755_000n, unit: "USD", costNanos: 4_377_500n, costUnit: "USD" });
      expect(usage.buckets.map((b) => [b.dimensions.metric, b.priceNanos, b.costNanos])).toEqual([
        ["input_tokens", 3_085_000n, 1_542_500n],
        ["output_tokens", 5_670_000n, 2_835_000n],
      ]);
      const ev = await c.getRatedEvent({ eventId: "evt_1" });
      expect(ev.rated?.lines.map((l) => l.status)).toEqual([RatedLineStatus.FINAL, RatedLineStatus.FINAL]);
      expect(h.wallet.consumed.map((x) => [x.tenant, x.item.id, x.item.amountNanos, x.item.unit])).toEqual([["tnt_a", "evt_1:llm_tokens", 8_755_000n, "USD"]]);

      // The same event delivered again (a redelivery with a new sequence) changes nothing.
      h.metering.push("tnt_a", { id: "evt_1", customerId: "cus_1", type: "llm.call", timestampMs: t0, properties: props });
      expect(await h.service.consumer.pollOnce(0)).toBe(0);
      const again = await c.listRatedUsage({ customerId: "cus_1", from: timestampFromMs(t0 - HOUR), to: timestampFromMs(t0 + HOUR) });
      expect(again.totals[0]!.priceNanos).toBe(8_755_000n);
      expect(h.wallet.consumed).toHaveLength(1);
    });

    it("quotes an event without recording it", async () => {
      const q = await h.client(KEYS.readA).quote({
        event: { customerId: "cus_1", type: "llm.call", timestamp: timestampFromMs(t0), properties: { model: { kind: { case: "stringValue", value: "gpt-x" } }, provider: { kind: { case: "stringValue", value: "openai" } }, input_tokens: { kind: { case: "intValue", value: 1_000_000n } } } },
      });
      expect(q.rated?.lines[0]).toMatchObject({ priceNanos: 2_500_000_000n, costNanos: 1_250_000_000n });
      await expectCode(h.client(KEYS.readA).getRatedEvent({ eventId: "nope" }), Code.NotFound);
    });

    it("keeps the wallet hand-off in the outbox while the wallet is down and drains it later", async () => {
      h.wallet.failNext = 1;
      h.metering.push("tnt_a", { id: "evt_2", customerId: "cus_1", type: "llm.call", timestampMs: t0 + 1000, properties: { model: "gpt-x", provider: "openai", input_tokens: 1000 } });
      await expect(h.service.consumer.pollOnce(0)).rejects.toThrow(/wallet down/);
      expect(await h.service.rated.outboxSize()).toBe(1);
      await h.service.consumer.drainOutbox();
      expect(await h.service.rated.outboxSize()).toBe(0);
      expect(h.wallet.consumed.map((x) => x.item.id)).toContain("evt_2:llm_tokens");
    });

    it("answers margin by model and raises a margin alert within the batch that caused it", async () => {
      const admin = h.client(KEYS.adminA);
      await admin.createGuardrailRule({ rule: { ruleId: "rule_m60", kind: GuardrailKind.MARGIN_BELOW, thresholdBps: 6000n, windowSeconds: 3600 } });
      h.metering.push("tnt_a", { id: "evt_3", customerId: "cus_1", type: "llm.call", timestampMs: t0 + 2000, properties: { model: "gpt-x", provider: "openai", input_tokens: 10 } });
      h.clock.advance(5000);
      await h.service.consumer.pollOnce(0);
      const alerts = await h.client(KEYS.readA).listAlerts({ since: timestampFromMs(t0 - HOUR) });
      expect(alerts.alerts).toHaveLength(1);
      expect(alerts.alerts[0]).toMatchObject({ ruleId: "rule_m60", customerId: "cus_1", observedBps: 5000n, thresholdBps: 6000n });
      const m = await h.client(KEYS.readA).queryMargin({ from: timestampFromMs(t0 - HOUR), to: timestampFromMs(t0 + HOUR), groupBy: [MarginGroupBy.MODEL] });
      expect(m.rows).toHaveLength(1);
      expect(m.rows[0]).toMatchObject({ model: "gpt-x", marginBps: 5000n, unit: "USD" });
      expect(m.rows[0]!.revenueNanos).toBe(2n * m.rows[0]!.costNanos);
    });

    it("rates a period exactly with RatePeriod", async () => {
      const p = await h.client(KEYS.readA).ratePeriod({ customerId: "cus_1", at: timestampFromMs(t0) });
      expect(p.periodStart).toEqual(timestampFromMs(Date.UTC(2026, 10, 1)));
      expect(p.periodEnd).toEqual(timestampFromMs(Date.UTC(2026, 11, 1)));
      const usage = p.lines.filter((l) => l.kind === PeriodLineKind.USAGE);
      expect(usage).toHaveLength(1);
      expect(usage[0]!.amountNanos).toBe(usage[0]!.bookedNanos);
      // a matrix charge is priced per event: not period priced; no cap, so rated == booked
      expect(usage[0]!.periodPriced).toBe(false);
      expect(usage[0]!.ratedNanos).toBe(usage[0]!.bookedNanos);
      expect(p.totalNanos).toBe(usage[0]!.amountNanos);
    });

    it("lists the rated events of a bucket, paged and bounded, summing to the bucket, for the caller's tenant only", async () => {
      const c = h.client(KEYS.readA);
      const hour = Math.floor(t0 / HOUR) * HOUR;
      const usage = await c.listRatedUsage({ customerId: "cus_1", from: timestampFromMs(hour), to: timestampFromMs(hour + HOUR), chargeId: "llm_tokens" });
      const bucketPrice = usage.buckets.reduce((s, b) => s + b.priceNanos, 0n);
      const bucketQty = usage.buckets.reduce((s, b) => s + b.quantity, 0n);
      expect(bucketPrice).toBeGreaterThan(0n);
      const seen: string[] = [];
      let price = 0n;
      let qty = 0n;
      let token = "";
      for (let i = 0; i < 100; i++) {
        const r = await c.listRatedEvents({ customerId: "cus_1", chargeId: "llm_tokens", from: timestampFromMs(hour), to: timestampFromMs(hour + HOUR), pageSizeMax: 1, pageToken: token });
        expect(r.events.length).toBeLessThanOrEqual(1);
        for (const e of r.events) {
          seen.push(e.eventId);
          price += e.priceNanos;
          qty += e.quantity;
          expect(e.unit).toBe("USD");
        }
        token = r.nextPageToken;
        if (token === "") break;
      }
      expect(seen).toContain("evt_1");
      expect(new Set(seen).size).toBe(seen.length);
      expect(price).toBe(bucketPrice);
      expect(qty).toBe(bucketQty);
      const first = await c.listRatedEvents({ customerId: "cus_1", chargeId: "llm_tokens", from: timestampFromMs(t0), to: timestampFromMs(t0 + 1) });
      expect(first.events.map((e) => [e.eventId, e.priceNanos, e.costNanos, e.costUnit, e.status])).toEqual([["evt_1", 8_755_000n, 4_377_500n, "USD", RatedLineStatus.FINAL]]);
      // Another tenant does not see tenant A's customer; windows and tokens are bounded.
      await expectCode(h.client(KEYS.adminB).listRatedEvents({ customerId: "cus_1", chargeId: "llm_tokens", from: timestampFromMs(hour), to: timestampFromMs(hour + HOUR) }), Code.NotFound);
      await expectCode(c.listRatedEvents({ customerId: "cus_1", chargeId: "llm_tokens", from: timestampFromMs(hour), to: timestampFromMs(hour + 49 * HOUR) }), Code.InvalidArgument, /to: window must be at most 48 hours/);
      await expectCode(c.listRatedEvents({ customerId: "cus_1", chargeId: "llm_tokens", from: timestampFromMs(hour), to: timestampFromMs(hour + HOUR), pageToken: "x" }), Code.InvalidArgument, /page_token/);
      await expectCode(c.listRatedEvents({ customerId: "cus_1", chargeId: "Bad Id", from: timestampFromMs(hour), to: timestampFromMs(hour + HOUR) }), Code.InvalidArgument, /charge_id/);
      await expectCode(c.listRatedEvents({ customerId: "cus_1", chargeId: "llm_tokens", from: timestampFromMs(hour), to: timestampFromMs(hour + HOUR), pageSizeMax: PAGE_SIZE_MAX + 1 }), Code.InvalidArgument, /page_size_max/);
    });

    it("prices a volume charge under a spending cap on the period total: amount F(total), rated the capped per-event prices", async () => {
      h.metering.meters.set("tnt_b\u0000api_calls", "api.call");
      const b = h.client(KEYS.adminB);
      const start = Date.UTC(2026, 10, 1);
      await b.createCustomer({ customer: { customerId: "cus_cap", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      const tiers = [{ upTo: 1000n, unitPrice: { amount: "0.10" } }, { upTo: 0n, unitPrice: { amount: "0.08" } }];
      await b.createPlan({
        planId: "plan_cap",
        name: "Capped",
        version: {
          currency: "USD",
          spendingCapAmount: "50",
          charges: [{ chargeId: "calls", unit: "USD", usage: { meter: "api_calls", eventType: "api.call", quantityProperties: ["units"] }, pricing: { case: "volume", value: { tiers } } }],
        },
      });
      await b.publishPlanVersion({ planId: "plan_cap", version: 1 });
      await b.createSubscription({ subscriptionId: "sub_cap", customerId: "cus_cap", planId: "plan_cap", planVersion: 1, startTime: timestampFromMs(start) });
      for (let i = 0; i < 12; i++) h.metering.push("tnt_b", { id: `evt_cap_${i}`, customerId: "cus_cap", type: "api.call", timestampMs: start + (i + 1) * HOUR, properties: { units: 100 } });
      while ((await h.service.consumer.pollOnce(0)) > 0);
      const p = await b.ratePeriod({ customerId: "cus_cap", at: timestampFromMs(start) });
      const usage = p.lines.find((l) => l.kind === PeriodLineKind.USAGE)!;
      // 1,200 units: F = 1,200 x $0.08 = $96; per-event steps sum to $96 uncapped, $50 after the cap.
      expect(usage).toMatchObject({ chargeId: "calls", periodPriced: true, quantity: 1200n, amountNanos: 96_000_000_000n, bookedNanos: 96_000_000_000n, ratedNanos: 50_000_000_000n });
      expect(p.lines.find((l) => l.kind === PeriodLineKind.CAP_ADJUSTMENT)?.amountNanos).toBe(-46_000_000_000n);
      expect(p.totalNanos).toBe(50_000_000_000n);
      const buckets = await b.listRatedUsage({ customerId: "cus_cap", from: timestampFromMs(start), to: timestampFromMs(start + 24 * HOUR) });
      expect(buckets.totals[0]!.priceNanos).toBe(usage.ratedNanos);
    });

    it("prices period-priced usage across a mid-period migration part by part: each unit by the version in force when it was used", async () => {
      h.metering.meters.set("tnt_b\u0000api_mig", "api.mig");
      const b = h.client(KEYS.adminB);
      const start = Date.UTC(2026, 10, 1);
      const DAY = 86_400_000;
      const usage = { meter: "api_mig", eventType: "api.mig", quantityProperties: ["units"] };
      await b.createCustomer({ customer: { customerId: "cus_mig", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      // v1: graduated 0-1,000 at $0.01, then $0.008. v2: graduated 0-5,000 at $0.004, then $0.002.
      const v = (tiers: Array<{ upTo: bigint; amount: string }>) => ({
        currency: "USD",
        charges: [{ chargeId: "calls", unit: "USD", usage, pricing: { case: "graduated" as const, value: { tiers: tiers.map((t) => ({ upTo: t.upTo, unitPrice: { amount: t.amount } })) } } }],
      });
      await b.createPlan({ planId: "plan_mig", name: "Migrating", version: v([{ upTo: 1000n, amount: "0.01" }, { upTo: 0n, amount: "0.008" }]) });
      await b.publishPlanVersion({ planId: "plan_mig", version: 1 });
      await b.createPlanVersion({ planId: "plan_mig", version: { ...v([{ upTo: 5000n, amount: "0.004" }, { upTo: 0n, amount: "0.002" }]), version: 2 } });
      await b.publishPlanVersion({ planId: "plan_mig", version: 2 });
      await b.createSubscription({ subscriptionId: "sub_mig", customerId: "cus_mig", planId: "plan_mig", planVersion: 1, startTime: timestampFromMs(start) });
      await b.migrateSubscription({ subscriptionId: "sub_mig", planId: "plan_mig", planVersion: 2, effectiveTime: timestampFromMs(start + 10 * DAY) });
      // 3,000 units before the migration (days 1-3), 7,000 after (days 11-17), the last one
      // exactly at the migration instant (it belongs to v2).
      for (let i = 0; i < 3; i++) h.metering.push("tnt_b", { id: `evt_mig_a${i}`, customerId: "cus_mig", type: "api.mig", timestampMs: start + (i + 1) * DAY, properties: { units: 1000 } });
      for (let i = 0; i < 6; i++) h.metering.push("tnt_b", { id: `evt_mig_b${i}`, customerId: "cus_mig", type: "api.mig", timestampMs: start + (11 + i) * DAY, properties: { units: 1000 } });
      h.metering.push("tnt_b", { id: "evt_mig_edge", customerId: "cus_mig", type: "api.mig", timestampMs: start + 10 * DAY, properties: { units: 1000 } });
      while ((await h.service.consumer.pollOnce(0)) > 0);
      const p = await b.ratePeriod({ customerId: "cus_mig", at: timestampFromMs(start) });
      const line = p.lines.find((l) => l.kind === PeriodLineKind.USAGE)!;
      // v1 over units 1-3,000: 1,000 x 0.01 + 2,000 x 0.008 = $26. v2 over units 3,001-10,000:
      // F2(10,000) - F2(3,000) = (5,000 x 0.004 + 5,000 x 0.002) - 3,000 x 0.004 = $30 - $12 = $18.
      // $44 (priced as a whole under v2 it was $30; under v1, $82).
      expect(line).toMatchObject({ chargeId: "calls", periodPriced: true, quantity: 10_000n, amountNanos: 44_000_000_000n });
      expect(p.totalNanos).toBe(44_000_000_000n);
    });

    it("refuses edits to a published version with FailedPrecondition and names bad fields", async () => {
      const c = h.client(KEYS.adminA);
      await expectCode(c.updatePlanVersion({ planId: "plan_llm", version: { ...matrixVersion(), version: 1 } }), Code.FailedPrecondition, /immutable/);
      const bad = matrixVersion();
      bad.charges[0]!.usage!.meter = "no_such_meter";
      await expectCode(c.createPlan({ planId: "plan_bad", name: "x", version: bad }), Code.InvalidArgument, /version\.charges\[0\]\.usage\.meter: unknown meter/);
      const tiers = create(PlanVersionSchema, {
        currency: "USD",
        charges: [{ chargeId: "g", unit: "USD", usage: { meter: "llm_tokens", eventType: "llm.call" }, pricing: { case: "graduated", value: { tiers: [{ upTo: 10n, unitPrice: { amount: "1" } }, { upTo: 5n, unitPrice: { amount: "1" } }, { unitPrice: { amount: "1" } }] } } }],
      });
      await expectCode(c.createPlan({ planId: "plan_tiers", name: "x", version: tiers }), Code.InvalidArgument, /version\.charges\[0\]\.graduated\.tiers\[1\]\.up_to/);
      expect((await h.service.catalog.getPlan("tnt_a", "plan_tiers"))).toBeNull();
      await expectCode(c.createSubscription({ subscriptionId: "sub_x", customerId: "cus_1", planId: "plan_llm", planVersion: 9, startTime: timestampFromMs(t0) }), Code.NotFound);
    });

    it("is idempotent on caller ids: same content returns the first result, different content is AlreadyExists", async () => {
      const c = h.client(KEYS.adminA);
      const cust = { customerId: "cus_1", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" };
      await c.createCustomer({ customer: cust });
      await expectCode(c.createCustomer({ customer: { ...cust, currency: "EUR" } }), Code.AlreadyExists);
      await c.createPlan({ planId: "plan_llm", name: "LLM", version: matrixVersion() });
      await expectCode(c.createPlan({ planId: "plan_llm", name: "Other", version: matrixVersion() }), Code.AlreadyExists);
    });

    it("enforces scopes and tenant isolation", async () => {
      await expectCode(h.client(KEYS.readA).createCustomer({ customer: { customerId: "cus_2", currency: "USD", billingAnchor: timestampFromMs(t0) } }), Code.PermissionDenied);
      await expectCode(h.client(KEYS.adminB).getCustomer({ customerId: "cus_1" }), Code.NotFound);
      const viaInternal = await h.client(KEYS.internal, "tnt_a").getCustomer({ customerId: "cus_1" });
      expect(viaInternal.customer?.currency).toBe("USD");
    });

    it("burns credits for a credits charge: 6 premium requests at 3 credits each hand 18 credits to the wallet", async () => {
      const c = h.client(KEYS.adminA);
      h.metering.meters.set("tnt_a\u0000assist", "assist.request");
      await c.createCustomer({ customer: { customerId: "cus_c", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)) } });
      await c.createPlan({
        planId: "plan_credits",
        name: "Credits",
        version: {
          currency: "USD",
          charges: [
            {
              chargeId: "assist",
              unit: "cr_credits",
              usage: { meter: "assist", eventType: "assist.request", dimensionProperties: ["model"] },
              pricing: { case: "credits", value: { tierProperty: "model", tiers: [{ tier: "premium", values: ["big"], creditsPerUnit: "3" }], defaultCreditsPerUnit: "1" } },
            },
          ],
        },
      });
      await c.publishPlanVersion({ planId: "plan_credits", version: 1 });
      await c.createSubscription({ subscriptionId: "sub_c", customerId: "cus_c", planId: "plan_credits", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
      for (let i = 0; i < 6; i++) h.metering.push("tnt_a", { id: `as_${i}`, customerId: "cus_c", type: "assist.request", timestampMs: t0 + i, properties: { model: "big" } });
      expect(await h.service.consumer.pollOnce(0)).toBe(6);
      const burned = h.wallet.consumed.filter((x) => x.item.customerId === "cus_c");
      expect(burned.map((x) => x.item.unit)).toEqual(Array(6).fill("cr_credits"));
      expect(burned.reduce((a, x) => a + x.item.amountNanos, 0n)).toBe(18_000_000_000n);
      // credits burned and their currency value at the wallet's exchange rate ($0.01 per credit)
      const line = (await h.client(KEYS.readA).getRatedEvent({ eventId: "as_0" })).rated!.lines[0]!;
      expect(line).toMatchObject({ priceNanos: 3_000_000_000n, unit: "cr_credits", priceValueNanos: 30_000_000n });
    });

    it("bills an outcome after its verification window, with the cost of its attempts, and claws back a reversed one", async () => {
      const c = h.client(KEYS.adminA);
      h.metering.meters.set("tnt_a\u0000tickets", "ticket.resolved");
      await c.createCustomer({ customer: { customerId: "cus_o", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)) } });
      await c.createPlan({
        planId: "plan_out",
        name: "Outcomes",
        version: {
          currency: "USD",
          charges: [
            {
              chargeId: "resolved",
              unit: "USD",
              usage: { meter: "tickets", eventType: "ticket.resolved" },
              pricing: { case: "outcome", value: { amount: "0.99", verificationWindowSeconds: 7n * 86_400n, reversalEventType: "ticket.reopened", taskIdProperty: "task_id", attemptEventTypes: ["llm.call"] } },
            },
          ],
        },
      });
      await c.publishPlanVersion({ planId: "plan_out", version: 1 });
      await c.createSubscription({ subscriptionId: "sub_o", customerId: "cus_o", planId: "plan_out", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
      const base = h.clock.now().getTime();
      h.metering.push("tnt_a", { id: "att_1", customerId: "cus_o", type: "llm.call", timestampMs: base, properties: { task_id: "t1", model: "gpt-x", provider: "openai", input_tokens: 1000 } });
      h.metering.push("tnt_a", { id: "out_1", customerId: "cus_o", type: "ticket.resolved", timestampMs: base + 1, properties: { task_id: "t1" } });
      h.metering.push("tnt_a", { id: "out_2", customerId: "cus_o", type: "ticket.resolved", timestampMs: base + 2, properties: { task_id: "t2" } });
      h.metering.push("tnt_a", { id: "rev_2", customerId: "cus_o", type: "ticket.reopened", timestampMs: base + 3, properties: { task_id: "t2" } });
      expect(await h.service.consumer.pollOnce(0)).toBe(4);
      const r = h.client(KEYS.readA);
      const o1 = (await r.getRatedEvent({ eventId: "out_1" })).rated!.lines[0]!;
      expect(o1).toMatchObject({ priceNanos: 990_000_000n, status: RatedLineStatus.PENDING, attributedCostNanos: 1_250_000n });
      expect((await r.getRatedEvent({ eventId: "out_2" })).rated!.lines[0]!.status).toBe(RatedLineStatus.CLAWED_BACK);
      expect((await r.getRatedEvent({ eventId: "rev_2" })).rated!.lines[0]).toMatchObject({ priceNanos: -990_000_000n, status: RatedLineStatus.CLAWED_BACK });
      expect(h.wallet.consumed.some((x) => x.item.customerId === "cus_o")).toBe(false);
      h.clock.advance(8 * 86_400_000);
      await h.service.consumer.pollOnce(0);
      expect(h.wallet.consumed.filter((x) => x.item.customerId === "cus_o").map((x) => [x.item.id, x.item.amountNanos])).toEqual([["out_1:resolved", 990_000_000n]]);
      expect((await r.getRatedEvent({ eventId: "out_1" })).rated!.lines[0]!.status).toBe(RatedLineStatus.FINAL);
    });

    it("lets only operator keys write global cost rates", async () => {
      const rate = { provider: "p", model: "m", metric: "calls", unitPrice: { amount: "1" }, currency: "USD", effectiveTime: timestampFromMs(0), scope: CostRateScope.GLOBAL };
      const byTenant = await h.client(KEYS.adminA).upsertCostRates({ rates: [rate] });
      expect(byTenant.results[0]).toMatchObject({ ok: false });
      expect(byTenant.results[0]!.error).toMatch(/rates\[0\]\.scope/);
      // An internal key bound to one tenant is not the operator: global rates reach every tenant.
      const byBound = await h.client(KEYS.internalA).upsertCostRates({ rates: [rate] });
      expect(byBound.results[0]).toMatchObject({ ok: false, error: expect.stringMatching(/rates\[0\]\.scope/) });
      const byOperator = await h.client(KEYS.internal, "tnt_a").upsertCostRates({ rates: [rate] });
      expect(byOperator.results[0]!.ok).toBe(true);
    });

    it("runs the consumer in the background from start() and stops it with stop()", async () => {
      h.metering.push("tnt_a", { id: "evt_bg", customerId: "cus_1", type: "llm.call", timestampMs: h.clock.now().getTime(), properties: { model: "gpt-x", provider: "openai", input_tokens: 10 } });
      h.service.consumer.start();
      h.service.consumer.start(); // idempotent
      const c = h.client(KEYS.readA);
      let rated;
      for (let i = 0; i < 200 && rated === undefined; i++) {
        rated = await c.getRatedEvent({ eventId: "evt_bg" }).then((r) => r.rated, () => undefined);
        if (rated === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      await h.service.stop();
      expect(rated?.lines[0]?.priceNanos).toBe(25_000n);
    });

    it("refuses a subscription or migration to a version in another currency than the customer's, writing nothing", async () => {
      const b = h.client(KEYS.adminB);
      const start = Date.UTC(2026, 10, 1);
      await b.createCustomer({ customer: { customerId: "cus_eur", currency: "EUR", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      await b.createCustomer({ customer: { customerId: "cus_usd", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      await b.createPlan({ planId: "plan_fx", name: "FX", version: { currency: "USD", charges: [{ chargeId: "base", unit: "USD", pricing: { case: "flat", value: { amount: "20" } } }] } });
      await b.publishPlanVersion({ planId: "plan_fx", version: 1 });
      await b.createPlanVersion({ planId: "plan_fx", version: { version: 2, currency: "EUR", charges: [{ chargeId: "base", unit: "EUR", pricing: { case: "flat", value: { amount: "20" } } }] } });
      await b.publishPlanVersion({ planId: "plan_fx", version: 2 });
      await expectCode(
        b.createSubscription({ subscriptionId: "sub_eur", customerId: "cus_eur", planId: "plan_fx", planVersion: 1, startTime: timestampFromMs(start) }),
        Code.FailedPrecondition,
        /plan_version: currency USD differs from the customer's currency EUR/,
      );
      expect((await b.listSubscriptions({ customerId: "cus_eur" })).subscriptions).toHaveLength(0);
      await b.createSubscription({ subscriptionId: "sub_eur", customerId: "cus_eur", planId: "plan_fx", planVersion: 2, startTime: timestampFromMs(start) });
      await b.createSubscription({ subscriptionId: "sub_usd", customerId: "cus_usd", planId: "plan_fx", planVersion: 1, startTime: timestampFromMs(start) });
      await expectCode(
        b.migrateSubscription({ subscriptionId: "sub_usd", planId: "plan_fx", planVersion: 2, effectiveTime: timestampFromMs(start + 10 * 86_400_000) }),
        Code.FailedPrecondition,
        /plan_version: currency EUR differs from the customer's currency USD/,
      );
      const subs = (await b.listSubscriptions({ customerId: "cus_usd" })).subscriptions;
      expect(subs[0]!.phases.map((p) => [p.planVersion, p.endTime])).toEqual([[1, undefined]]);
      const p = await b.ratePeriod({ customerId: "cus_eur", at: timestampFromMs(start) });
      expect([p.currency, p.totalNanos, p.lines.map((l) => l.unit)]).toEqual(["EUR", 20_000_000_000n, ["EUR"]]);
    });

    it("refuses a migration or subscription onto a version the customer's price override does not fit, writing nothing", async () => {
      h.metering.meters.set("tnt_b\u0000api_ovr", "api.ovr");
      const b = h.client(KEYS.adminB);
      const start = Date.UTC(2026, 10, 1);
      const DAY = 86_400_000;
      const usage = (dims: string[]) => ({ meter: "api_ovr", eventType: "api.ovr", quantityProperties: ["n"], dimensionProperties: dims });
      await b.createCustomer({ customer: { customerId: "cus_ovr", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      await b.createPlan({ planId: "plan_ovr", name: "O", version: { currency: "USD", charges: [{ chargeId: "api", unit: "USD", usage: usage(["region"]), pricing: { case: "perUnit", value: { unitPrice: { amount: "1" } } } }] } });
      await b.publishPlanVersion({ planId: "plan_ovr", version: 1 });
      await b.createPlanVersion({ planId: "plan_ovr", version: { version: 2, currency: "USD", charges: [{ chargeId: "api", unit: "USD", usage: usage([]), pricing: { case: "perUnit", value: { unitPrice: { amount: "1" } } } }] } });
      await b.publishPlanVersion({ planId: "plan_ovr", version: 2 });
      await b.createSubscription({ subscriptionId: "sub_ovr", customerId: "cus_ovr", planId: "plan_ovr", planVersion: 1, startTime: timestampFromMs(start) });
      // valid against v1 (dimension "region"), not against v2 (no such dimension)
      await b.setPriceOverride({
        priceOverride: {
          overrideId: "ovr_region",
          customerId: "cus_ovr",
          chargeId: "api",
          charge: { pricing: { case: "matrix", value: { cells: [{ match: { region: "eu" }, unitPrice: { amount: "0.5" } }], defaultPrice: { amount: "0.8" } } } },
          startTime: timestampFromMs(start),
        },
      });
      await expectCode(
        b.migrateSubscription({ subscriptionId: "sub_ovr", planId: "plan_ovr", planVersion: 2, effectiveTime: timestampFromMs(start + 10 * DAY) }),
        Code.FailedPrecondition,
        /price_override: override "ovr_region" of charge "api" does not fit plan_ovr v2 .*unknown dimension "region"/,
      );
      expect((await b.listSubscriptions({ customerId: "cus_ovr" })).subscriptions[0]!.phases.map((p) => p.planVersion)).toEqual([1]);
      await expectCode(
        b.createSubscription({ subscriptionId: "sub_ovr2", customerId: "cus_ovr", planId: "plan_ovr", planVersion: 2, startTime: timestampFromMs(start) }),
        Code.FailedPrecondition,
        /price_override: override "ovr_region"/,
      );
      expect((await b.listSubscriptions({ customerId: "cus_ovr" })).subscriptions.map((s) => s.subscriptionId)).toEqual(["sub_ovr"]);
      // An override that has ended before the new phase does not block it.
      await b.createCustomer({ customer: { customerId: "cus_ovr_old", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      await b.createSubscription({ subscriptionId: "sub_ovr_old", customerId: "cus_ovr_old", planId: "plan_ovr", planVersion: 1, startTime: timestampFromMs(start) });
      await b.setPriceOverride({
        priceOverride: {
          overrideId: "ovr_old",
          customerId: "cus_ovr_old",
          chargeId: "api",
          charge: { pricing: { case: "matrix", value: { cells: [{ match: { region: "eu" }, unitPrice: { amount: "0.5" } }] } } },
          startTime: timestampFromMs(start),
          endTime: timestampFromMs(start + 5 * DAY),
        },
      });
      const m = await b.migrateSubscription({ subscriptionId: "sub_ovr_old", planId: "plan_ovr", planVersion: 2, effectiveTime: timestampFromMs(start + 10 * DAY) });
      expect(m.subscription!.phases.map((p) => p.planVersion)).toEqual([1, 2]);
    });

    it("refuses plan amounts above AMOUNT_NANOS_MAX and answers RatePeriod overflows with FailedPrecondition, never Internal", async () => {
      const b = h.client(KEYS.adminB);
      const start = Date.UTC(2026, 10, 1);
      await expectCode(
        b.createPlan({ planId: "plan_big", name: "Big", version: { currency: "USD", charges: [{ chargeId: "base", unit: "USD", pricing: { case: "flat", value: { amount: "100000000000" } } }] } }),
        Code.InvalidArgument,
        /version\.charges\[0\]\.flat\.amount: must be at most 1000000000/,
      );
      expect(await h.service.catalog.getPlan("tnt_b", "plan_big")).toBeNull();
      // At the bound each amount is accepted; 1,000,000 seats x $10^9 still overflows int64 at close.
      await b.createCustomer({ customer: { customerId: "cus_big", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      await b.createPlan({ planId: "plan_seats_max", name: "Seats", version: { currency: "USD", charges: [{ chargeId: "seats", unit: "USD", pricing: { case: "seats", value: { perSeatAmount: "1000000000" } } }] } });
      await b.publishPlanVersion({ planId: "plan_seats_max", version: 1 });
      await b.createSubscription({ subscriptionId: "sub_big", customerId: "cus_big", planId: "plan_seats_max", planVersion: 1, startTime: timestampFromMs(start), seats: 1_000_000 });
      await expectCode(b.ratePeriod({ customerId: "cus_big", at: timestampFromMs(start) }), Code.FailedPrecondition, /charges\.seats: the seats line \(1000000 seats\).*beyond int64/);
    });

    it("prices a flat fee overridden from day 15 of 30 at $10 + $25 in RatePeriod", async () => {
      const b = h.client(KEYS.adminB);
      const start = Date.UTC(2026, 10, 1);
      await b.createCustomer({ customer: { customerId: "cus_flat_ovr", currency: "USD", billingAnchor: timestampFromMs(start), timeZone: "UTC" } });
      await b.createPlan({ planId: "plan_flat", name: "Flat", version: { currency: "USD", charges: [{ chargeId: "base", unit: "USD", pricing: { case: "flat", value: { amount: "20" } } }] } });
      await b.publishPlanVersion({ planId: "plan_flat", version: 1 });
      await b.createSubscription({ subscriptionId: "sub_flat_ovr", customerId: "cus_flat_ovr", planId: "plan_flat", planVersion: 1, startTime: timestampFromMs(start) });
      await b.setPriceOverride({ priceOverride: { overrideId: "ovr_flat", customerId: "cus_flat_ovr", chargeId: "base", charge: { pricing: { case: "flat", value: { amount: "50" } } }, startTime: timestampFromMs(start + 15 * 86_400_000) } });
      const p = await b.ratePeriod({ customerId: "cus_flat_ovr", at: timestampFromMs(start) });
      expect(p.lines.map((l) => [l.kind, l.amountNanos])).toEqual([[PeriodLineKind.FLAT, 10_000_000_000n], [PeriodLineKind.FLAT, 25_000_000_000n]]);
      expect(p.totalNanos).toBe(35_000_000_000n);
    });

    it("enforces limits at the edge", async () => {
      await expectCode(h.client(KEYS.readA).listCustomers({ pageSizeMax: PAGE_SIZE_MAX + 1 }), Code.InvalidArgument, /page_size_max/);
      const rate = { provider: "p", model: "m", metric: "calls", unitPrice: { amount: "1" }, currency: "USD", effectiveTime: timestampFromMs(0) };
      await expectCode(h.client(KEYS.adminA).upsertCostRates({ rates: Array.from({ length: COST_RATES_PER_REQUEST_MAX + 1 }, () => rate) }), Code.InvalidArgument, /rates/);
      const ok = await h.client(KEYS.adminA).upsertCostRates({ rates: [rate, { ...rate, unitPrice: { amount: "-1" } }] });
      expect(ok.results.map((r) => r.ok)).toEqual([true, false]);
      expect(ok.results[1]!.error).toMatch(/rates\[1\]\.unit_price\.amount/);
      await expectCode(h.client(KEYS.readA).listRatedUsage({ customerId: "cus_1", from: timestampFromMs(0), to: timestampFromMs(t0) }), Code.InvalidArgument, /window/);
    });

    it("refuses times outside years 1970..9999 and nanos outside 0..999,999,999, and a RatePeriod whose period would end past 9999, naming the field (fuzz and review findings: Internal)", async () => {
      const b = h.client(KEYS.adminB);
      const ts = (seconds: bigint, nanos = 0) => ({ seconds, nanos });
      const y10000 = ts(253_402_300_800n); // 10000-01-01T00:00:00Z
      const y1969 = ts(-1n, 999_000_000); // 1969-12-31T23:59:59.999Z
      const y50 = ts(-60_589_296_000n); // 0050-01-01: Date.UTC would read it as 1950
      const range = /must be a time in years 1970\.\.9999 UTC/;
      for (const t of [y10000, y1969, y50, ts(2n ** 62n)]) {
        await expectCode(b.createCustomer({ customer: { customerId: "cus_far", currency: "USD", billingAnchor: t, timeZone: "UTC" } }), Code.InvalidArgument, new RegExp(`^customer\\.billing_anchor: ${range.source}`));
      }
      await expectCode(b.createCustomer({ customer: { customerId: "cus_far", currency: "USD", billingAnchor: ts(0n, -1), timeZone: "UTC" } }), Code.InvalidArgument, /^customer\.billing_anchor: nanos must be in 0\.\.999999999, got -1/);
      await expectCode(b.listCostRates({ at: y10000 }), Code.InvalidArgument, /^at: must be a time/);
      await expectCode(b.listAlerts({ since: y1969 }), Code.InvalidArgument, /^since: must be a time/);
      await expectCode(b.listRatedUsage({ customerId: "cus_1", from: y50, to: ts(0n) }), Code.InvalidArgument, /^from: must be a time/);
      const rates = await b.upsertCostRates({ rates: [{ provider: "p", model: "m", metric: "calls", unitPrice: { amount: "1" }, currency: "USD", effectiveTime: ts(0n, 1_000_000_000) }] });
      expect(rates.results.map((r) => [r.ok, r.error])).toEqual([[false, "rates[0].effective_time: nanos must be in 0..999999999, got 1000000000"]]);
      await b.createCustomer({ customer: { customerId: "cus_far", currency: "USD", billingAnchor: ts(0n), timeZone: "America/New_York" } });
      await expectCode(b.quote({ event: { eventId: "q", customerId: "cus_far", type: "llm.call", timestamp: ts(2n ** 62n) } }), Code.InvalidArgument, /^event\.timestamp: must be a time/);
      await expectCode(b.ratePeriod({ customerId: "cus_far", at: y10000 }), Code.InvalidArgument, /^at: must be a time/);
      // The first instant: with an anchor on the 15th its period starts in 1969, which an answer can hold.
      await b.createCustomer({ customer: { customerId: "cus_far15", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(1970, 0, 15)), timeZone: "UTC" } });
      const first = await b.ratePeriod({ customerId: "cus_far15", at: ts(0n) });
      expect(new Date(Number(first.periodStart!.seconds) * 1000).toISOString()).toBe("1969-12-15T00:00:00.000Z");
      // 9999-12-15 is a valid time, but its billing period ends on 10000-01-01, which no Timestamp JSON can hold.
      await expectCode(b.ratePeriod({ customerId: "cus_far", at: timestampFromMs(Date.UTC(9999, 11, 15)) }), Code.InvalidArgument, /^at: the billing period containing it ends after 9999-12-31/);
      const last = await b.ratePeriod({ customerId: "cus_far", at: timestampFromMs(Date.UTC(9999, 10, 15)) });
      expect(new Date(Number(last.periodEnd!.seconds) * 1000).toISOString()).toBe("9999-12-01T00:00:00.000Z"); // Nov 30, 19:00 in New York
    });
  });
}
