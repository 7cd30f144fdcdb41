/**
 * A spending cap changed by a mid-period migration, against the real rating service: a cap is a
 * ceiling on a subscription's usage charges per billing period, taken from the plan version in
 * force at each event; the running total counts all the subscription's usage in the period,
 * whatever the version. So a cap added mid-period lets through only what remains under it, and a
 * cap removed mid-period stops applying from the migration on. Rating's RatePeriod (per phase
 * part, the running total carried across parts), ClosePeriod and PreviewInvoice (from the real-time
 * buckets) agree.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import { ClosePeriodResult, InvoicingService, LineKind, type Invoice } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { PeriodLineKind, PlanVersionSchema, type PlanVersion, type RatePeriodResponse } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { fixedClock } from "@nanobill/service-kit";
import { KEYS, openHarness, type Harness } from "../../rating/src/test-support.js";
import { FakeWorld } from "./testing/fakes.js";
import { openInvoicingOnRating } from "./testing/with-rating.js";

const USD = 1_000_000_000n;
const DAY = 86_400_000;
const NOV = new Date("2026-11-01T00:00:00Z"); // a 30-day month
const MID_NOV = new Date(NOV.getTime() + 15 * DAY);

const calls = { chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "api_calls", eventType: "api.call", quantityProperties: ["units"] }, pricing: { case: "perUnit" as const, value: { unitPrice: { amount: "0.01" } } } };
const version = (n: number, cap = ""): PlanVersion => create(PlanVersionSchema, { version: n, currency: "USD", charges: [calls] as never, spendingCapAmount: cap });
const periodLines = (r: RatePeriodResponse) => r.lines.map((l) => [PeriodLineKind[l.kind], l.subscriptionId, l.chargeId, l.amountNanos]);
const invoiceLines = (inv: Invoice) => inv.lines.filter((l) => l.kind !== LineKind.CREDITS_APPLIED).map((l) => [LineKind[l.kind], l.chargeId, l.roundedAmountNanos]);

for (const backend of testBackends()) {
  describe(`a spending cap changed by a mid-period migration on ${backend.name}`, () => {
    let rating: Harness;
    let inv: Client<typeof InvoicingService>;
    let stopInvoicing: () => Promise<void>;
    const world = new FakeWorld();
    const clock = fixedClock(new Date("2026-11-25T00:00:00Z"));
    let eventNo = 0;
    const call = (customerId: string, at: Date, units: number) => rating.metering.push("tnt_a", { id: `evt_c${++eventNo}`, customerId, type: "api.call", timestampMs: at.getTime(), properties: { units } });
    const drain = async () => {
      while ((await rating.service.consumer.pollOnce(0)) > 0);
    };
    const ratePeriod = (customerId: string) => rating.client(KEYS.readA).ratePeriod({ customerId, at: timestampFromDate(NOV) });
    const preview = async (customerId: string) => (await inv.previewInvoice({ customerId })).invoice!;
    const close = async (customerId: string, subscriptionId: string) => {
      const r = await inv.closePeriod({ items: [{ customerId, subscriptionId, periodStart: timestampFromDate(NOV) }] });
      expect(r.results.map((x) => [x.result, x.message])).toEqual([[ClosePeriodResult.CREATED, ""]]);
      return r.results[0]!.invoice!;
    };

    beforeAll(async () => {
      rating = await openHarness(await backend.open());
      rating.metering.meters.set("tnt_a\u0000api_calls", "api.call");
      const admin = rating.client(KEYS.adminA);
      const plan = async (planId: string, v1: PlanVersion, v2: PlanVersion) => {
        await admin.createPlan({ planId, name: planId, version: v1 });
        await admin.publishPlanVersion({ planId, version: 1 });
        await admin.createPlanVersion({ planId, version: v2 });
        await admin.publishPlanVersion({ planId, version: 2 });
      };
      await plan("plan_capdrop", version(1, "20"), version(2)); // cap $20, then none
      await plan("plan_capadd", version(1), version(2, "20")); // none, then cap $20
      const customer = (customerId: string) => admin.createCustomer({ customer: { customerId, currency: "USD", billingAnchor: timestampFromDate(NOV), timeZone: "UTC" } });
      const subscribe = (subscriptionId: string, customerId: string, planId: string) =>
        admin.createSubscription({ subscriptionId, customerId, planId, planVersion: 1, startTime: timestampFromDate(NOV) });
      const migrate2 = (subscriptionId: string, planId: string) => admin.migrateSubscription({ subscriptionId, planId, planVersion: 2, effectiveTime: timestampFromDate(MID_NOV) });

      // C: cap $20 (v1) dropped on Nov 16 (v2): $30 before (capped to $20), $10 after (no cap).
      await customer("cus_c");
      await subscribe("sub_c", "cus_c", "plan_capdrop");
      await migrate2("sub_c", "plan_capdrop");
      for (let i = 0; i < 3; i++) call("cus_c", new Date(Date.UTC(2026, 10, 2 + i, 9)), 1000);
      call("cus_c", new Date(Date.UTC(2026, 10, 20, 9)), 1000);

      // D: no cap (v1), cap $20 from Nov 16 (v2), the migration made after the first $30 was rated
      // (the usual order: an upgrade takes effect now): $30 before, $30 after, none of it let through.
      await customer("cus_d");
      await subscribe("sub_d", "cus_d", "plan_capadd");
      for (let i = 0; i < 3; i++) call("cus_d", new Date(Date.UTC(2026, 10, 2 + i, 9)), 1000);
      await drain();
      await migrate2("sub_d", "plan_capadd");
      for (let i = 0; i < 3; i++) call("cus_d", new Date(Date.UTC(2026, 10, 20 + i, 9)), 1000);
      await drain();

      const invoicing = await openInvoicingOnRating(backend, rating, world, clock);
      stopInvoicing = invoicing.stop;
      inv = invoicing.client;
    });
    afterAll(async () => {
      await stopInvoicing?.();
      await rating?.close();
    });

    it("C: a cap removed mid-period caps only the usage before the migration: $20 + $10 = $30 in RatePeriod, the preview and the close", async () => {
      const r = await ratePeriod("cus_c");
      expect(periodLines(r)).toEqual([
        ["USAGE", "sub_c", "calls", 40n * USD],
        ["CAP_ADJUSTMENT", "sub_c", "", -10n * USD],
      ]);
      expect(r.totalNanos).toBe(30n * USD);
      clock.set(new Date("2026-11-25T00:00:00Z"));
      expect(invoiceLines(await preview("cus_c"))).toEqual([["USAGE", "calls", 30n * USD]]);
      clock.set(new Date("2026-12-02T00:00:00Z"));
      const c = await close("cus_c", "sub_c");
      expect(invoiceLines(c)).toEqual([["USAGE", "calls", 30n * USD]]);
      expect(c.totals!.amountDueNanos).toBe(r.totalNanos);
    });

    it("D: a cap added mid-period lets through only what remains under it ($20 - $30 < 0: nothing): $30 in RatePeriod, the preview and the close", async () => {
      const r = await ratePeriod("cus_d");
      expect(periodLines(r)).toEqual([
        ["USAGE", "sub_d", "calls", 60n * USD],
        ["CAP_ADJUSTMENT", "sub_d", "", -30n * USD],
      ]);
      expect(r.totalNanos).toBe(30n * USD);
      clock.set(new Date("2026-11-25T00:00:00Z"));
      expect(invoiceLines(await preview("cus_d"))).toEqual([["USAGE", "calls", 30n * USD]]);
      clock.set(new Date("2026-12-02T00:00:00Z"));
      const d = await close("cus_d", "sub_d");
      expect(invoiceLines(d)).toEqual([["USAGE", "calls", 30n * USD]]);
      expect(d.totals!.amountDueNanos).toBe(r.totalNanos);
    });
  });
}
