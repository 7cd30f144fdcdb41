/**
 * Rating's RatePeriod and invoicing (ClosePeriod, PreviewInvoice) agree on the minimum commitment,
 * the spending cap and the fees of a period, against the real rating service (both services on
 * the same backend):
 *  - a commitment and a spending cap are terms of a plan version: each applies per subscription,
 *    to that subscription's own lines (its usage, its flat and seat fees), also for a customer with
 *    several subscriptions (RatePeriod, the real-time cap, ClosePeriod and the preview);
 *  - flat and seat fees across a mid-period migration are prorated per phase (each version's fee
 *    over the part of the period it was in force), also when the migration is made after the
 *    period's fees were billed in advance (the close trues them up), and count that way towards
 *    the commitment;
 *  - a charge priced on the period total in one period and per unit in the next (a migration at a
 *    period boundary off the hour) is billed over rating's exact periods in both, so the boundary
 *    hour's steps before the boundary are billed once (by the period they belong to);
 *  - the commitment of a period whose boundary is off the hour is trued up from rating's exact
 *    period (RatePeriod's lines of the subscription), while per-unit usage stays billed by hour
 *    bucket: an event in the boundary hour before the boundary counts for its own period's
 *    commitment and is billed (once) on the next invoice, whose true-up does not count it.
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
const OCT = new Date("2026-10-01T00:00:00Z");
const NOV = new Date("2026-11-01T00:00:00Z"); // a 30-day month
const MID_NOV = new Date(NOV.getTime() + 15 * DAY);

const callsCharge = { chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "api_calls", eventType: "api.call", quantityProperties: ["units"] }, pricing: { case: "perUnit" as const, value: { unitPrice: { amount: "0.01" } } } };
const imagesCharge = { chargeId: "images", name: "Images", unit: "USD", usage: { meter: "images", eventType: "image.gen", quantityProperties: ["count"] }, pricing: { case: "perUnit" as const, value: { unitPrice: { amount: "1" } } } };
const volumeCalls = { ...callsCharge, pricing: { case: "volume" as const, value: { tiers: [{ upTo: 1000n, unitPrice: { amount: "0.10" } }, { upTo: 0n, unitPrice: { amount: "0.08" } }] } } };
const perUnitCalls = { ...callsCharge, pricing: { case: "perUnit" as const, value: { unitPrice: { amount: "0.05" } } } };
// Asia/Kolkata: periods start at local midnight = 18:30 UTC the day before
const K_OCT = new Date("2026-09-30T18:30:00Z");
const K_NOV = new Date("2026-10-31T18:30:00Z");
const tieredCalls = { chargeId: "tcalls", name: "TCalls", unit: "USD", usage: { meter: "tcalls", eventType: "t.call", quantityProperties: ["units"] }, pricing: { case: "volume" as const, value: { tiers: [{ upTo: 1000n, unitPrice: { amount: "0.10" } }, { upTo: 0n, unitPrice: { amount: "0.08" } }] } } };
const flat = (amount: string) => ({ chargeId: "platform", name: "Platform", unit: "USD", pricing: { case: "flat" as const, value: { amount } } });

function version(n: number, charges: object[], terms: { minimum?: string; cap?: string } = {}): PlanVersion {
  return create(PlanVersionSchema, { version: n, currency: "USD", charges: charges as never, minimumCommitmentAmount: terms.minimum ?? "", spendingCapAmount: terms.cap ?? "" });
}

/** lines of a RatePeriod answer: [kind, subscription, amount] (usage lines also name their charge). */
const periodLines = (r: RatePeriodResponse) => r.lines.map((l) => [PeriodLineKind[l.kind], l.subscriptionId, l.chargeId, l.amountNanos]);
/** lines of an invoice but credits applied: [kind, charge, rounded amount]. */
const invoiceLines = (inv: Invoice) => inv.lines.filter((l) => l.kind !== LineKind.CREDITS_APPLIED).map((l) => [LineKind[l.kind], l.chargeId, l.roundedAmountNanos]);

for (const backend of testBackends()) {
  describe(`rating RatePeriod and invoicing agree on commitments, caps and fees, with the real rating service on ${backend.name}`, () => {
    let rating: Harness;
    let inv: Client<typeof InvoicingService>;
    let stopInvoicing: () => Promise<void>;
    const world = new FakeWorld();
    const clock = fixedClock(new Date("2026-11-01T00:00:01Z"));
    let eventNo = 0;
    const call = (customerId: string, at: Date, units: number) => rating.metering.push("tnt_a", { id: `evt_c${++eventNo}`, customerId, type: "api.call", timestampMs: at.getTime(), properties: { units } });
    const image = (customerId: string, at: Date, count: number) => rating.metering.push("tnt_a", { id: `evt_i${++eventNo}`, customerId, type: "image.gen", timestampMs: at.getTime(), properties: { count } });
    const tcall = (customerId: string, at: Date, units: number) => rating.metering.push("tnt_a", { id: `evt_t${++eventNo}`, customerId, type: "t.call", timestampMs: at.getTime(), properties: { units } });
    const drain = async () => {
      while ((await rating.service.consumer.pollOnce(0)) > 0);
    };
    const ratePeriod = (customerId: string, at: Date) => rating.client(KEYS.readA).ratePeriod({ customerId, at: timestampFromDate(at) });
    const close = async (customerId: string, subscriptionId: string, periodStart: Date) => {
      const r = await inv.closePeriod({ items: [{ customerId, subscriptionId, periodStart: timestampFromDate(periodStart) }] });
      expect(r.results.map((x) => [x.result, x.message])).toEqual([[ClosePeriodResult.CREATED, ""]]);
      return r.results[0]!.invoice!;
    };

    beforeAll(async () => {
      rating = await openHarness(await backend.open());
      rating.metering.meters.set("tnt_a\u0000api_calls", "api.call");
      rating.metering.meters.set("tnt_a\u0000images", "image.gen");
      rating.metering.meters.set("tnt_a\u0000tcalls", "t.call");
      const admin = rating.client(KEYS.adminA);
      const plan = async (planId: string, ...versions: PlanVersion[]) => {
        await admin.createPlan({ planId, name: planId, version: versions[0]! });
        await admin.publishPlanVersion({ planId, version: 1 });
        for (const v of versions.slice(1)) {
          await admin.createPlanVersion({ planId, version: v });
          await admin.publishPlanVersion({ planId, version: v.version });
        }
      };
      await plan("plan_a", version(1, [callsCharge], { minimum: "100" })); // calls $0.01, commitment $100
      await plan("plan_b", version(1, [imagesCharge])); // images $1, no commitment
      await plan("plan_ca", version(1, [callsCharge], { cap: "50" })); // calls $0.01, cap $50
      await plan("plan_cb", version(1, [imagesCharge], { cap: "20" })); // images $1, cap $20
      await plan("plan_f", version(1, [flat("30")], { minimum: "100" }), version(2, [flat("60")], { minimum: "100" }));
      await plan("plan_k", version(1, [volumeCalls]), version(2, [perUnitCalls]));
      await plan("plan_j", version(1, [callsCharge, tieredCalls], { minimum: "100" })); // calls $0.01 + a tiered charge, commitment $100
      const customer = (customerId: string, anchor: Date) => admin.createCustomer({ customer: { customerId, currency: "USD", billingAnchor: timestampFromDate(anchor), timeZone: "UTC" } });
      const subscribe = (subscriptionId: string, customerId: string, planId: string, start: Date) => admin.createSubscription({ subscriptionId, customerId, planId, planVersion: 1, startTime: timestampFromDate(start) });
      // cus_s: two subscriptions from November 1: sub_s_a (commitment $100, $30 of calls), sub_s_b ($200 of images).
      await customer("cus_s", NOV);
      await subscribe("sub_s_a", "cus_s", "plan_a", NOV);
      await subscribe("sub_s_b", "cus_s", "plan_b", NOV);
      for (let i = 0; i < 3; i++) call("cus_s", new Date(Date.UTC(2026, 10, 2 + i, 9)), 1000);
      image("cus_s", new Date(Date.UTC(2026, 10, 6, 9)), 200);
      // cus_c: sub_c_a (cap $50, $30 of calls), then sub_c_b (cap $20, $100 of images).
      await customer("cus_c", NOV);
      await subscribe("sub_c_a", "cus_c", "plan_ca", NOV);
      await subscribe("sub_c_b", "cus_c", "plan_cb", NOV);
      for (let i = 0; i < 3; i++) call("cus_c", new Date(Date.UTC(2026, 10, 2 + i, 9)), 1000);
      image("cus_c", new Date(Date.UTC(2026, 10, 6, 9)), 100);
      // cus_f: the platform fee goes from $30 (v1) to $60 (v2) on November 16 (15 of 30 days each).
      await customer("cus_f", NOV);
      await subscribe("sub_f", "cus_f", "plan_f", NOV);
      await admin.migrateSubscription({ subscriptionId: "sub_f", planId: "plan_f", planVersion: 2, effectiveTime: timestampFromDate(MID_NOV) });
      // cus_g: the same plan from October; migrated after October's close billed November's fee in advance (below).
      await customer("cus_g", OCT);
      await subscribe("sub_g", "cus_g", "plan_f", OCT);
      // cus_k (Asia/Kolkata): volume-priced calls in October, per unit ($0.05) from November's start
      // (18:30 UTC); October's last event at 18:10 UTC shares the 18:00 hour bucket with November's first.
      await admin.createCustomer({ customer: { customerId: "cus_k", currency: "USD", billingAnchor: timestampFromDate(K_OCT), timeZone: "Asia/Kolkata" } });
      await subscribe("sub_k", "cus_k", "plan_k", K_OCT);
      await admin.migrateSubscription({ subscriptionId: "sub_k", planId: "plan_k", planVersion: 2, effectiveTime: timestampFromDate(K_NOV) });
      for (let i = 0; i < 9; i++) call("cus_k", new Date(Date.UTC(2026, 9, 2 + i, 9)), 100);
      call("cus_k", new Date("2026-10-31T18:10:00Z"), 100);
      call("cus_k", new Date("2026-10-31T18:45:00Z"), 100);
      for (let i = 0; i < 3; i++) call("cus_k", new Date(Date.UTC(2026, 10, 2 + i, 9)), 100);
      // cus_j (Asia/Kolkata, periods at 18:30 UTC), commitment $100: $95 of calls on Oct 5, $10 at
      // 18:10 UTC on Oct 31 (still October by the exact period, in the 18:00 UTC hour bucket that
      // November's window starts with), $0.10 on a tiered charge. cus_j2: the same calls on plan_a
      // (per unit only: RatePeriod is asked for the commitment alone).
      for (const [customerId, subscriptionId, planId] of [["cus_j", "sub_j", "plan_j"], ["cus_j2", "sub_j2", "plan_a"]] as const) {
        await admin.createCustomer({ customer: { customerId, currency: "USD", billingAnchor: timestampFromDate(K_OCT), timeZone: "Asia/Kolkata" } });
        await subscribe(subscriptionId, customerId, planId, K_OCT);
        call(customerId, new Date(Date.UTC(2026, 9, 5, 9)), 9500);
        call(customerId, new Date("2026-10-31T18:10:00Z"), 1000);
      }
      tcall("cus_j", new Date(Date.UTC(2026, 9, 6, 9)), 1);
      await drain();

      const invoicing = await openInvoicingOnRating(backend, rating, world, clock);
      stopInvoicing = invoicing.stop;
      inv = invoicing.client;
    });
    afterAll(async () => {
      await stopInvoicing?.();
      await rating?.close();
    });

    it("RatePeriod trues up each subscription's own commitment from its own lines: $100 - $30 of calls for sub_s_a, none for sub_s_b's $200", async () => {
      const r = await ratePeriod("cus_s", NOV);
      expect(periodLines(r)).toEqual([
        ["USAGE", "sub_s_a", "calls", 30n * USD],
        ["USAGE", "sub_s_b", "images", 200n * USD],
        ["MINIMUM_TRUE_UP", "sub_s_a", "", 70n * USD],
      ]);
      expect(r.totalNanos).toBe(300n * USD);
    });

    it("the preview trues up each active subscription's commitment from its own usage and fees ($70 for sub_s_a)", async () => {
      clock.set(new Date("2026-11-20T00:00:00Z"));
      const { invoice } = await inv.previewInvoice({ customerId: "cus_s" });
      expect(invoiceLines(invoice!)).toEqual([
        ["USAGE", "calls", 30n * USD],
        ["USAGE", "images", 200n * USD],
        ["MINIMUM_TRUE_UP", "_true_up", 70n * USD],
      ]);
      expect(invoice!.lines.find((l) => l.kind === LineKind.MINIMUM_TRUE_UP)?.subscriptionId).toBe("sub_s_a");
    });

    it("ClosePeriod bills sub_s_a $30 + a $70 true-up and sub_s_b $200: the two invoices sum to RatePeriod's total", async () => {
      clock.set(new Date("2026-12-02T00:00:00Z"));
      const a = await close("cus_s", "sub_s_a", NOV);
      const b = await close("cus_s", "sub_s_b", NOV);
      expect(invoiceLines(a)).toEqual([["USAGE", "calls", 30n * USD], ["MINIMUM_TRUE_UP", "_true_up", 70n * USD]]);
      expect(invoiceLines(b)).toEqual([["USAGE", "images", 200n * USD]]);
      expect(a.totals!.amountDueNanos + b.totals!.amountDueNanos).toBe((await ratePeriod("cus_s", NOV)).totalNanos);
    });

    it("caps each subscription's own usage, in real time and in RatePeriod: images cut to sub_c_b's $20 whatever sub_c_a's calls; invoices sum to RatePeriod's $50", async () => {
      const r = await ratePeriod("cus_c", NOV);
      expect(periodLines(r)).toEqual([
        ["USAGE", "sub_c_a", "calls", 30n * USD],
        ["USAGE", "sub_c_b", "images", 100n * USD],
        ["CAP_ADJUSTMENT", "sub_c_b", "", -80n * USD],
      ]);
      expect(r.lines.map((l) => l.ratedNanos)).toEqual([30n * USD, 20n * USD, 0n]);
      expect(r.totalNanos).toBe(50n * USD);
      const a = await close("cus_c", "sub_c_a", NOV);
      const b = await close("cus_c", "sub_c_b", NOV);
      expect(invoiceLines(a)).toEqual([["USAGE", "calls", 30n * USD]]);
      expect(invoiceLines(b)).toEqual([["USAGE", "images", 20n * USD]]);
    });

    it("prorates the platform fee per phase across a mid-November migration ($15 + $30) in RatePeriod and on the first invoice, and trues up $100 - $45", async () => {
      const r = await ratePeriod("cus_f", NOV);
      expect(periodLines(r)).toEqual([
        ["FLAT", "sub_f", "platform", 15n * USD],
        ["FLAT", "sub_f", "platform", 30n * USD],
        ["MINIMUM_TRUE_UP", "sub_f", "", 55n * USD],
      ]);
      const nov = await close("cus_f", "sub_f", NOV);
      // November's fee per phase, December's in advance (v2), November's true-up
      expect(invoiceLines(nov)).toEqual([["FLAT", "platform", 15n * USD], ["FLAT", "platform", 30n * USD], ["FLAT", "platform", 60n * USD], ["MINIMUM_TRUE_UP", "_true_up", 55n * USD]]);
      expect(nov.totals!.amountDueNanos).toBe(r.totalNanos + 60n * USD);
    });

    it("trues up a fee billed in advance before a mid-period migration by phase (+$15) and counts $45 towards the commitment", async () => {
      clock.set(new Date("2026-11-01T00:00:01Z"));
      const oct = await close("cus_g", "sub_g", OCT);
      expect(invoiceLines(oct)).toEqual([["FLAT", "platform", 30n * USD], ["FLAT", "platform", 30n * USD], ["MINIMUM_TRUE_UP", "_true_up", 70n * USD]]);
      await rating.client(KEYS.adminA).migrateSubscription({ subscriptionId: "sub_g", planId: "plan_f", planVersion: 2, effectiveTime: timestampFromDate(MID_NOV) });
      const r = await ratePeriod("cus_g", NOV);
      expect(periodLines(r)).toEqual([
        ["FLAT", "sub_g", "platform", 15n * USD],
        ["FLAT", "sub_g", "platform", 30n * USD],
        ["MINIMUM_TRUE_UP", "sub_g", "", 55n * USD],
      ]);
      clock.set(new Date("2026-12-02T00:00:00Z"));
      const nov = await close("cus_g", "sub_g", NOV);
      // December's fee in advance (v2), November's fee trued up by phase (+$15), November's true-up
      expect(invoiceLines(nov)).toEqual([["FLAT", "platform", 60n * USD], ["ADJUSTMENT", "platform", 15n * USD], ["MINIMUM_TRUE_UP", "_true_up", 55n * USD]]);
      // November's fees on both invoices ($30 + $15) and its true-up: RatePeriod's total
      expect(30n * USD + 15n * USD + 55n * USD).toBe(r.totalNanos);
    });

    it("bills a charge tiered in October and per unit in November over rating's exact periods: the boundary hour's October step once, on October's invoice", async () => {
      clock.set(new Date("2026-11-01T00:00:00Z"));
      const oct = await close("cus_k", "sub_k", K_OCT);
      // 1,000 units at the volume tier $0.10, the 18:10 UTC event included (rating's period, exact time)
      expect(invoiceLines(oct)).toEqual([["USAGE", "calls", 100n * USD]]);
      clock.set(new Date("2026-12-02T00:00:00Z"));
      const nov = await close("cus_k", "sub_k", K_NOV);
      // 400 units at $0.05 from 18:30 UTC; not October's $10 step in the 18:00 UTC hour bucket
      expect(invoiceLines(nov)).toEqual([["USAGE", "calls", 20n * USD]]);
      const r = await ratePeriod("cus_k", K_NOV);
      expect(r.lines.map((l) => [l.chargeId, l.amountNanos, l.periodPriced])).toEqual([["calls", 20n * USD, false]]);
      await inv.finalizeInvoice({ invoiceId: oct.id });
      await inv.finalizeInvoice({ invoiceId: nov.id });
      expect((await inv.reconcile({ customerId: "cus_k" })).differences).toEqual([]);
    });

    const trueUpRows: Array<[string, string, string, Array<[string, string, bigint]>]> = [
      ["a plan with a tiered charge", "cus_j", "sub_j", [["USAGE", "calls", 95n * USD], ["USAGE", "tcalls", 100_000_000n]]],
      ["a per-unit plan (RatePeriod asked for the commitment)", "cus_j2", "sub_j2", [["USAGE", "calls", 95n * USD]]],
    ];
    it.each(trueUpRows)(
      "trues up a commitment with a boundary off the hour (Asia/Kolkata, 18:30 UTC) over rating's exact period, %s: the 10 USD at 18:10 UTC counts for October (no true-up) and is billed on November, whose true-up (100 USD) does not count it; preview == close; the invoices sum to RatePeriod's totals",
      async (_name, customerId, subscriptionId, october) => {
        const octRated = await ratePeriod(customerId, K_OCT);
        expect(octRated.lines.filter((l) => l.kind === PeriodLineKind.MINIMUM_TRUE_UP)).toEqual([]);
        expect(octRated.totalNanos).toBe(october.reduce((s, l) => s + l[2], 0n) + 10n * USD);
        clock.set(new Date("2026-11-02T00:00:00Z"));
        const oct = await close(customerId, subscriptionId, K_OCT);
        // the usage lines by hour bucket as before (the 18:00 UTC bucket is November's); no true-up
        expect(invoiceLines(oct)).toEqual(october);
        clock.set(new Date("2026-11-20T00:00:00Z"));
        const { invoice: preview } = await inv.previewInvoice({ customerId });
        clock.set(new Date("2026-12-02T00:00:00Z"));
        const nov = await close(customerId, subscriptionId, K_NOV);
        expect(invoiceLines(nov)).toEqual([["USAGE", "calls", 10n * USD], ["MINIMUM_TRUE_UP", "_true_up", 100n * USD]]);
        expect(invoiceLines(preview!)).toEqual(invoiceLines(nov));
        const novRated = await ratePeriod(customerId, K_NOV);
        expect(periodLines(novRated)).toEqual([["MINIMUM_TRUE_UP", subscriptionId, "", 100n * USD]]);
        expect(oct.totals!.amountDueNanos + nov.totals!.amountDueNanos).toBe(octRated.totalNanos + novRated.totalNanos);
      },
    );
  });
}
