/**
 * A charge the plan prices on the period total (volume) that is priced per unit in the period
 * being closed — by the customer's price override, or after a migration to a version where it is
 * per unit — through ClosePeriod and Reconcile against the real rating service (both services on
 * the same backend). Rating's RatePeriod marks such a line `period_priced = false`: the invoice
 * bills it from its hour buckets (it must not be dropped), and Reconcile checks every charge rated
 * for the period, not only the ones the invoice has a line for.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import { ClosePeriodResult, InvoicingService, LineKind, PeriodAnchor, PeriodInterval, type Invoice } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { PeriodLineKind, PlanVersionSchema, type PlanVersion } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { fixedClock } from "@nanobill/service-kit";
import { KEYS, openHarness, type Harness } from "../../rating/src/test-support.js";
import { FakeWorld } from "./testing/fakes.js";
import { openInvoicingOnRating } from "./testing/with-rating.js";

const USD = 1_000_000_000n;
const OCT = new Date("2026-10-01T00:00:00Z");
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");
// Asia/Kolkata: periods start at local midnight = 18:30 UTC the day before
const K_OCT = new Date("2026-09-30T18:30:00Z");
const K_NOV = new Date("2026-10-31T18:30:00Z");

const volume = { case: "volume" as const, value: { tiers: [{ upTo: 1000n, unitPrice: { amount: "0.10" } }, { upTo: 0n, unitPrice: { amount: "0.08" } }] } };
const perUnit = { case: "perUnit" as const, value: { unitPrice: { amount: "0.05" } } };

function version(n: number, calls: "volume" | "perUnit"): PlanVersion {
  const usage = { meter: "api_calls", eventType: "api.call", quantityProperties: ["units"] };
  return create(PlanVersionSchema, {
    version: n,
    currency: "USD",
    charges: [
      { chargeId: "calls", name: "Calls", unit: "USD", usage, pricing: calls === "volume" ? volume : perUnit },
      { chargeId: "images", name: "Images", unit: "USD", usage: { meter: "images", eventType: "image.gen", quantityProperties: ["count"] }, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.01" } } } },
    ],
  });
}
const usageLine = (inv: Invoice | undefined, chargeId: string) => inv?.lines.find((l) => l.kind === LineKind.USAGE && l.chargeId === chargeId);

for (const backend of testBackends()) {
  describe(`a period-priced charge priced per unit in the period, through ClosePeriod with the real rating service on ${backend.name}`, () => {
    let rating: Harness;
    let inv: Client<typeof InvoicingService>;
    let stopInvoicing: () => Promise<void>;
    const world = new FakeWorld();
    const clock = fixedClock(new Date("2026-12-02T00:00:00Z"));
    let eventNo = 0;
    const call = (customerId: string, at: Date, units: number) => rating.metering.push("tnt_a", { id: `evt_c${++eventNo}`, customerId, type: "api.call", timestampMs: at.getTime(), properties: { units } });
    const image = (customerId: string, at: Date, count: number) => rating.metering.push("tnt_a", { id: `evt_i${++eventNo}`, customerId, type: "image.gen", timestampMs: at.getTime(), properties: { count } });
    const drain = async () => {
      while ((await rating.service.consumer.pollOnce(0)) > 0);
    };

    beforeAll(async () => {
      rating = await openHarness(await backend.open());
      rating.metering.meters.set("tnt_a\u0000api_calls", "api.call");
      rating.metering.meters.set("tnt_a\u0000images", "image.gen");
      const admin = rating.client(KEYS.adminA);
      await admin.createPlan({ planId: "plan_v", name: "Volume", version: version(1, "volume") });
      await admin.publishPlanVersion({ planId: "plan_v", version: 1 });
      await admin.createPlanVersion({ planId: "plan_v", version: version(2, "perUnit") });
      await admin.publishPlanVersion({ planId: "plan_v", version: 2 });
      // cus_o: on the volume version, with a per-unit price override of `calls` ($0.05).
      await admin.createCustomer({ customer: { customerId: "cus_o", currency: "USD", billingAnchor: timestampFromDate(OCT), timeZone: "UTC" } });
      await admin.createSubscription({ subscriptionId: "sub_o", customerId: "cus_o", planId: "plan_v", planVersion: 1, startTime: timestampFromDate(OCT) });
      await admin.setPriceOverride({ priceOverride: { overrideId: "ovr_o", customerId: "cus_o", chargeId: "calls", startTime: timestampFromDate(OCT), charge: { pricing: perUnit } } });
      // cus_m: on the volume version in October, migrated to the per-unit version on November 1.
      await admin.createCustomer({ customer: { customerId: "cus_m", currency: "USD", billingAnchor: timestampFromDate(OCT), timeZone: "UTC" } });
      await admin.createSubscription({ subscriptionId: "sub_m", customerId: "cus_m", planId: "plan_v", planVersion: 1, startTime: timestampFromDate(OCT) });
      await admin.migrateSubscription({ subscriptionId: "sub_m", planId: "plan_v", planVersion: 2, effectiveTime: timestampFromDate(NOV) });
      // cus_s: sub_s1 in October, replaced by sub_s2 (same plan: the same charge ids) from November 1.
      await admin.createCustomer({ customer: { customerId: "cus_s", currency: "USD", billingAnchor: timestampFromDate(OCT), timeZone: "UTC" } });
      await admin.createSubscription({ subscriptionId: "sub_s1", customerId: "cus_s", planId: "plan_v", planVersion: 2, startTime: timestampFromDate(OCT), endTime: timestampFromDate(NOV) });
      await admin.createSubscription({ subscriptionId: "sub_s2", customerId: "cus_s", planId: "plan_v", planVersion: 2, startTime: timestampFromDate(NOV) });
      call("cus_s", new Date("2026-10-10T09:00:00Z"), 100); // $5 under sub_s1
      call("cus_s", new Date("2026-11-10T09:00:00Z"), 200); // $10 under sub_s2
      // cus_w (Asia/Kolkata: periods start at 18:30 UTC): sub_w1 in October, sub_w2 from November's
      // start; $30 of November calls under sub_w2, paid by prepaid money the wallet burned for them.
      await admin.createCustomer({ customer: { customerId: "cus_w", currency: "USD", billingAnchor: timestampFromDate(K_OCT), timeZone: "Asia/Kolkata" } });
      await admin.createSubscription({ subscriptionId: "sub_w1", customerId: "cus_w", planId: "plan_v", planVersion: 2, startTime: timestampFromDate(K_OCT), endTime: timestampFromDate(K_NOV) });
      await admin.createSubscription({ subscriptionId: "sub_w2", customerId: "cus_w", planId: "plan_v", planVersion: 2, startTime: timestampFromDate(K_NOV) });
      call("cus_w", new Date("2026-11-05T09:00:00Z"), 600);
      world.consumption.push({ customerId: "cus_w", unit: "USD", chargeId: "calls", occurredAt: new Date("2026-11-05T09:00:00Z"), consumedNanos: 30n * USD });
      // November: ten events of 100 units each (1,000 units x $0.05 = $50).
      for (const c of ["cus_o", "cus_m"]) for (let i = 0; i < 10; i++) call(c, new Date(Date.UTC(2026, 10, 2 + i, 9)), 100);
      await drain();

      const invoicing = await openInvoicingOnRating(backend, rating, world, clock);
      stopInvoicing = invoicing.stop;
      inv = invoicing.client;
    });
    afterAll(async () => {
      await stopInvoicing?.();
      await rating?.close();
    });

    const invoices = new Map<string, Invoice>();

    it("bills $50 for a volume charge a price override makes per unit, and for one a migration made per unit (rating: period_priced false)", async () => {
      for (const [customerId, subscriptionId] of [["cus_o", "sub_o"], ["cus_m", "sub_m"]] as const) {
        const rp = await rating.client(KEYS.readA).ratePeriod({ customerId, at: timestampFromDate(NOV) });
        expect(rp.lines.filter((l) => l.kind === PeriodLineKind.USAGE).map((l) => [l.chargeId, l.amountNanos, l.periodPriced])).toEqual([["calls", 50n * USD, false]]);
        const r = await inv.closePeriod({ items: [{ customerId, subscriptionId, periodStart: timestampFromDate(NOV) }] });
        expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.CREATED]);
        const november = r.results[0]!.invoice!;
        const calls = usageLine(november, "calls");
        expect(calls?.amountNanos, customerId).toBe(50n * USD);
        expect(calls?.quantity).toBe("1000");
        expect(calls?.description).toBe("Calls: usage");
        expect(november.totals!.amountDueNanos).toBe(50n * USD);
        invoices.set(customerId, november);
      }
    });

    it("bills a successor subscription's usage of a shared charge on its own invoice (owner per period: the subscription alive in it)", async () => {
      const rp = await rating.client(KEYS.readA).ratePeriod({ customerId: "cus_s", at: timestampFromDate(NOV) });
      expect(rp.lines.filter((l) => l.kind === PeriodLineKind.USAGE).map((l) => [l.subscriptionId, l.chargeId, l.amountNanos])).toEqual([["sub_s2", "calls", 10n * USD]]);
      const octRp = await rating.client(KEYS.readA).ratePeriod({ customerId: "cus_s", at: timestampFromDate(OCT) });
      expect(octRp.lines.filter((l) => l.kind === PeriodLineKind.USAGE).map((l) => [l.subscriptionId, l.chargeId, l.amountNanos])).toEqual([["sub_s1", "calls", 5n * USD]]);
      const close = async (subscriptionId: string, periodStart: Date) =>
        (await inv.closePeriod({ items: [{ customerId: "cus_s", subscriptionId, periodStart: timestampFromDate(periodStart) }] })).results[0]!.invoice!;
      // Before: the first subscription that ever had `calls` owned it in every period, so sub_s2's
      // November usage was on no invoice (sub_s1 had ended).
      expect(usageLine(await close("sub_s2", NOV), "calls")?.amountNanos).toBe(10n * USD);
      expect(usageLine(await close("sub_s1", OCT), "calls")?.amountNanos).toBe(5n * USD);
      expect((await inv.previewInvoice({ customerId: "cus_s", at: timestampFromDate(new Date("2026-11-20T00:00:00Z")) })).invoice!.lines.filter((l) => l.kind === LineKind.USAGE).map((l) => [l.subscriptionId, l.chargeId, l.amountNanos])).toEqual([["sub_s2", "calls", 10n * USD]]);
    });

    it("applies the prepaid money burned for a successor's usage on the successor's invoice, the boundary off the hour", async () => {
      const close = async (subscriptionId: string) =>
        (await inv.closePeriod({ items: [{ customerId: "cus_w", subscriptionId, periodStart: timestampFromDate(K_NOV) }] })).results[0]!.invoice!;
      const w2 = await close("sub_w2");
      expect([usageLine(w2, "calls")?.amountNanos, w2.totals!.amountDueNanos]).toEqual([30n * USD, 0n]);
      // before: the hour window (from 18:00) made the ended sub_w1 the owner of the wallet's burns:
      // sub_w2 owed $30 and sub_w1's November was credited -$30
      expect((await close("sub_w1")).totals!.amountDueNanos).toBe(0n);
    });

    it("previews the period the same way", async () => {
      const { invoice } = await inv.previewInvoice({ customerId: "cus_o", at: timestampFromDate(new Date("2026-11-20T00:00:00Z")) });
      expect(usageLine(invoice, "calls")?.amountNanos).toBe(50n * USD);
    });

    it("ties the invoices with Reconcile, then reports usage rated late for a charge the invoice has no line for", async () => {
      for (const i of invoices.values()) await inv.finalizeInvoice({ invoiceId: i.id });
      let rec = await inv.reconcile({ customerId: "cus_o" });
      expect(rec.invoicesChecked).toBe(1);
      expect(rec.differences).toEqual([]);
      // A late November image event (3 images x $0.01): no images line on November's invoice.
      image("cus_o", new Date("2026-11-20T12:00:00Z"), 3);
      await drain();
      rec = await inv.reconcile({ customerId: "cus_o" });
      expect(rec.differences.map((d) => [d.check, d.detail.split(":")[0], d.expectedNanos, d.actualNanos])).toEqual([["rated_usage", "charge images", 0n, 30_000_000n]]);
    });

    it("bills a predecessor's and a successor's usage of a shared charge once each when the invoicing period (a quarter) is coarser than rating's (a month)", async () => {
      const admin = rating.client(KEYS.adminA);
      // cus_q: rating's periods monthly; invoicing's a calendar quarter. sub_q1 Oct 1 - Nov 10 ($10
      // on Oct 5), sub_q2 (same plan) from Dec 1 ($20 on Dec 5): the guard allows it (no shared month).
      await admin.createCustomer({ customer: { customerId: "cus_q", currency: "USD", billingAnchor: timestampFromDate(OCT), timeZone: "UTC" } });
      await admin.createSubscription({ subscriptionId: "sub_q1", customerId: "cus_q", planId: "plan_v", planVersion: 2, startTime: timestampFromDate(OCT), endTime: timestampFromDate(new Date("2026-11-10T00:00:00Z")) });
      await admin.createSubscription({ subscriptionId: "sub_q2", customerId: "cus_q", planId: "plan_v", planVersion: 2, startTime: timestampFromDate(DEC) });
      call("cus_q", new Date("2026-10-05T09:00:00Z"), 200);
      call("cus_q", new Date("2026-12-05T09:00:00Z"), 400);
      await drain();
      await inv.setBillingSettings({ settings: { customerId: "cus_q", periodInterval: PeriodInterval.QUARTER, periodAnchor: PeriodAnchor.CALENDAR } });
      clock.set(new Date("2027-01-02T00:00:00Z"));
      const close = async (subscriptionId: string, periodStart: Date) =>
        (await inv.closePeriod({ items: [{ customerId: "cus_q", subscriptionId, periodStart: timestampFromDate(periodStart) }] })).results[0]!.invoice!;
      // before: sub_q1's quarter [Oct 1, Jan 1) billed December's $20 too ($50 in all for $30 of usage)
      expect(usageLine(await close("sub_q1", OCT), "calls")?.amountNanos).toBe(10n * USD);
      expect(usageLine(await close("sub_q2", DEC), "calls")?.amountNanos).toBe(20n * USD);
    });
  });
}
