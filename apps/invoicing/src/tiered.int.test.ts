/**
 * Tiered charges through ClosePeriod against the real rating service (its consumer, stores and
 * RatePeriod / ListRatedEvents), both services on the same backend (PGlite and PostgreSQL):
 * volume and graduated lines priced on the period total, late usage settled as an adjustment,
 * Reconcile tying to the nano, and a line expanded down to its rated events.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import { ClosePeriodResult, InvoicingService, LineKind, type Invoice, type InvoiceLine } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { CostRateScope, PlanVersionSchema, type PlanVersion } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { fixedClock } from "@nanobill/service-kit";
import { KEYS, openHarness, type Harness } from "../../rating/src/test-support.js";
import { FakeWorld, TEST_KEYS } from "./testing/fakes.js";
import { openInvoicingOnRating } from "./testing/with-rating.js";

const USD = 1_000_000_000n;
const HOUR = 3_600_000;
// The customer's periods start at local midnight on the 1st in Asia/Kolkata (UTC+05:30): 18:30 UTC,
// not on the hour, so the hour-bucket window of a period ([18:00, 18:00)) holds the last half
// hour of the previous rating period.
const OCT = new Date("2026-09-30T18:30:00Z");
const NOV = new Date("2026-10-31T18:30:00Z");
const DEC = new Date("2026-11-30T18:30:00Z");
const JAN = new Date("2026-12-31T18:30:00Z");

function tiers(): Array<{ upTo: bigint; unitPrice: { amount: string } }> {
  return [
    { upTo: 1000n, unitPrice: { amount: "0.10" } },
    { upTo: 0n, unitPrice: { amount: "0.08" } },
  ];
}

function plan(): PlanVersion {
  const usage = { meter: "api_calls", eventType: "api.call", quantityProperties: ["units"] };
  return create(PlanVersionSchema, {
    currency: "USD",
    charges: [
      { chargeId: "calls_volume", name: "Calls (volume)", unit: "USD", usage, pricing: { case: "volume", value: { tiers: tiers() } } },
      { chargeId: "calls_graduated", name: "Calls (graduated)", unit: "USD", usage, pricing: { case: "graduated", value: { tiers: tiers() } } },
      { chargeId: "calls_unit", name: "Calls (per unit)", unit: "USD", usage, pricing: { case: "perUnit", value: { unitPrice: { amount: "0.01" } } } },
    ],
  });
}

function line(inv: Invoice | undefined, chargeId: string, kind = LineKind.USAGE): InvoiceLine | undefined {
  return inv?.lines.find((l) => l.chargeId === chargeId && l.kind === kind);
}

for (const backend of testBackends()) {
  describe(`tiered charges through ClosePeriod with the real rating service on ${backend.name}`, () => {
    let rating: Harness;
    let inv: Client<typeof InvoicingService>;
    let other: Client<typeof InvoicingService>;
    let stopInvoicing: () => Promise<void>;
    const world = new FakeWorld();
    const clock = fixedClock(new Date("2026-12-02T00:00:00Z"));
    let eventNo = 0;
    const push = (at: Date, units: number, customerId = "cus_t") =>
      rating.metering.push("tnt_a", { id: `evt_${++eventNo}`, customerId, type: "api.call", timestampMs: at.getTime(), properties: { units, provider: "acme", model: "m1" } });

    beforeAll(async () => {
      rating = await openHarness(await backend.open());
      rating.metering.meters.set("tnt_a\u0000api_calls", "api.call");
      const admin = rating.client(KEYS.adminA);
      await admin.createCustomer({ customer: { customerId: "cus_t", currency: "USD", billingAnchor: timestampFromDate(OCT), timeZone: "Asia/Kolkata" } });
      await admin.createPlan({ planId: "plan_tiers", name: "Tiers", version: plan() });
      await admin.publishPlanVersion({ planId: "plan_tiers", version: 1 });
      await admin.createSubscription({ subscriptionId: "sub_t", customerId: "cus_t", planId: "plan_tiers", planVersion: 1, startTime: timestampFromDate(OCT) });
      await admin.upsertCostRates({ rates: [{ provider: "acme", model: "m1", metric: "units", unitPrice: { amount: "0.02" }, currency: "USD", effectiveTime: timestampFromDate(new Date(0)), scope: CostRateScope.TENANT }] });
      // October: one event of 100 units at 23:40 local on Oct 31 (18:10 UTC): October's period,
      // November's hour-bucket window.
      push(new Date("2026-10-31T18:10:00Z"), 100);
      // November: 15 events of 100 units (1,500 units; the 11th crosses 1,000 and drops the
      // volume price of every unit: a negative provisional step).
      for (let i = 0; i < 15; i++) push(new Date(Date.UTC(2026, 10, 2 + i, 9, 15)), 100);
      // A UTC customer on the same plan with a prepaid wallet: the same 15 events in November.
      await admin.createCustomer({ customer: { customerId: "cus_u", currency: "USD", billingAnchor: timestampFromDate(new Date("2026-11-01T00:00:00Z")), timeZone: "UTC" } });
      await admin.createSubscription({ subscriptionId: "sub_u", customerId: "cus_u", planId: "plan_tiers", planVersion: 1, startTime: timestampFromDate(new Date("2026-11-01T00:00:00Z")) });
      for (let i = 0; i < 15; i++) push(new Date(Date.UTC(2026, 10, 2 + i, 9, 15)), 100, "cus_u");
      while ((await rating.service.consumer.pollOnce(0)) > 0);
      // What rating handed to the wallet (Consume), as the wallet reports it to invoicing.
      for (const { item } of rating.wallet.consumed) {
        if (item.customerId !== "cus_u") continue;
        world.consumption.push({ customerId: item.customerId, unit: item.unit, chargeId: item.chargeId, occurredAt: timestampDate(item.occurredAt!), consumedNanos: item.amountNanos });
      }

      const invoicing = await openInvoicingOnRating(backend, rating, world, clock);
      stopInvoicing = invoicing.stop;
      inv = invoicing.client;
      other = invoicing.clientFor(TEST_KEYS.otherTenant.key);
    });
    afterAll(async () => {
      await stopInvoicing?.();
      await rating?.close();
    });

    let november: Invoice | undefined;

    it("previews November mid-period with the tiered lines priced on the period total so far", async () => {
      const { invoice } = await inv.previewInvoice({ customerId: "cus_t", at: timestampFromDate(new Date("2026-11-20T00:00:00Z")) });
      expect(invoice!.periodStart).toEqual(timestampFromDate(NOV));
      expect(line(invoice, "calls_volume")?.amountNanos).toBe(120n * USD);
      expect(line(invoice, "calls_graduated")?.amountNanos).toBe(140n * USD);
    });

    it("closes October and November: volume 1,500 x $0.08 = $120 and graduated 1,000 x $0.10 + 500 x $0.08 = $140 on the period total", async () => {
      const r = await inv.closePeriod({
        items: [
          { customerId: "cus_t", subscriptionId: "sub_t", periodStart: timestampFromDate(OCT) },
          { customerId: "cus_t", subscriptionId: "sub_t", periodStart: timestampFromDate(NOV) },
        ],
      });
      expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.CREATED, ClosePeriodResult.CREATED]);
      const october = r.results[0]!.invoice;
      november = r.results[1]!.invoice;
      // October's one event is billed by October's rating period: 100 units in the first tier.
      expect(line(october, "calls_volume")?.amountNanos).toBe(10n * USD);
      expect(line(october, "calls_graduated")?.amountNanos).toBe(10n * USD);
      // November: exactly the period total, not the per-event sums of its hour window (which hold
      // October's last half hour too: $130 for the volume charge).
      const volume = line(november, "calls_volume")!;
      const graduated = line(november, "calls_graduated")!;
      expect(volume.amountNanos).toBe(120n * USD);
      expect(volume.quantity).toBe("1500");
      expect(volume.roundedAmountNanos).toBe(120n * USD);
      expect(volume.description).toContain("priced on the period total");
      expect(graduated.amountNanos).toBe(140n * USD);
      expect(graduated.quantity).toBe("1500");
      // The per-unit charge keeps its per-event prices by hour bucket: November's window holds the
      // 18:10 UTC event too (1,600 units x $0.01), and October's window none of them.
      expect(line(november, "calls_unit")?.amountNanos).toBe(16n * USD);
      expect(line(october, "calls_unit")).toBeUndefined();
      const usage = await rating.client(KEYS.readA).listRatedUsage({ customerId: "cus_t", from: timestampFromDate(new Date(NOV.getTime() - 30 * 60_000)), to: timestampFromDate(new Date(DEC.getTime() - 30 * 60_000)), chargeId: "calls_volume" });
      expect(usage.totals[0]!.priceNanos).toBe(130n * USD);
    });

    it("expands the November volume line to buckets and each bucket to events whose prices sum to it", async () => {
      const volume = line(november, "calls_volume")!;
      const hours = await inv.expandLine({ invoiceId: november!.id, lineId: volume.id, granularity: "hour" });
      expect(hours.buckets).toHaveLength(16);
      const bucketSum = hours.buckets.reduce((s, b) => s + b.amountNanos, 0n);
      expect(bucketSum).toBe(130n * USD);
      // buckets + settlement = the line, exactly
      expect(bucketSum + hours.settlementNanos).toBe(volume.amountNanos);
      let negative = 0;
      for (const b of hours.buckets) {
        const events: Array<{ amountNanos: bigint; costNanos: bigint; eventId: string }> = [];
        let token = "";
        for (let page = 0; page < 10; page++) {
          const r = await inv.expandLine({ invoiceId: november!.id, lineId: volume.id, granularity: "hour", bucketStart: b.start, pageSizeMax: 1, pageToken: token });
          expect(r.buckets[0]!.amountNanos).toBe(b.amountNanos);
          events.push(...r.events);
          token = r.nextPageToken;
          if (token === "") break;
        }
        expect(events.length).toBeGreaterThan(0);
        expect(events.reduce((s, e) => s + e.amountNanos, 0n)).toBe(b.amountNanos);
        for (const e of events) {
          expect(e.eventId).toMatch(/^evt_\d+$/);
          expect(e.costNanos).toBe(2n * USD); // 100 units x $0.02, attributed to the first charge
        }
        if (b.amountNanos < 0n) negative++;
      }
      // the 11th event's step: F(1,100) - F(1,000) = $88 - $100
      expect(negative).toBe(1);
      // a day bucket of the line expands too, within the line's window
      const days = await inv.expandLine({ invoiceId: november!.id, lineId: volume.id });
      const first = await inv.expandLine({ invoiceId: november!.id, lineId: volume.id, bucketStart: days.buckets[0]!.start, pageSizeMax: 1000 });
      expect(first.events.reduce((s, e) => s + e.amountNanos, 0n)).toBe(days.buckets[0]!.amountNanos);
      // another tenant cannot see the invoice, let alone its events
      expect(await other.expandLine({ invoiceId: november!.id, lineId: volume.id, bucketStart: days.buckets[0]!.start }).then(() => "ok", (e: Error) => e.message)).toMatch(/not found/);
    });

    it("settles a volume tier drop the wallet was over-burned for on the invoice: usage $120, wallet burns $132, $12 credit carried", async () => {
      const burned = world.consumption.filter((c) => c.chargeId === "calls_volume").reduce((s, c) => s + c.consumedNanos, 0n);
      expect(burned).toBe(132n * USD); // ten steps of $10 and four of $8; the -$12 step is not consumed back
      const r = await inv.closePeriod({ items: [{ customerId: "cus_u", subscriptionId: "sub_u" }] });
      const u = r.results[0]!.invoice!;
      expect(line(u, "calls_volume")?.amountNanos).toBe(120n * USD);
      expect(line(u, "calls_graduated")?.amountNanos).toBe(140n * USD);
      expect(line(u, "calls_unit")?.amountNanos).toBe(15n * USD);
      expect(u.totals!.subtotalNanos).toBe(275n * USD);
      expect(u.totals!.creditsAppliedNanos).toBe(-287n * USD);
      // -$12 due: a credit balance, carried to the next invoice (the customer's subscription goes on)
      expect(u.totals!.amountDueNanos).toBe(0n);
      expect(u.totals!.deferredNanos).toBe(-12n * USD);
      expect(u.lines.filter((l) => l.kind === LineKind.CARRIED_FORWARD).map((l) => [l.chargeId, l.amountMinor])).toEqual([["_credit_balance", 1200n]]);
      // UTC periods are on the hour: the buckets of the window sum to the line, nothing to settle.
      const volume = line(u, "calls_volume")!;
      expect((await inv.expandLine({ invoiceId: u.id, lineId: volume.id })).settlementNanos).toBe(0n);
      await inv.finalizeInvoice({ invoiceId: u.id });
      const rec = await inv.reconcile({ customerId: "cus_u" });
      expect(rec.invoicesChecked).toBe(1);
      expect(rec.differences).toEqual([]);
      expect(world.balance("acct_inv_recv_cus_u_USD")).toBe(12n * USD); // owed to the customer: the credit stays in the receivable until applied
    });

    it("ties finalized invoices to rated usage, settles late tiered usage as an adjustment and ties again", async () => {
      const ids = (await inv.listInvoices({ customerId: "cus_t" })).invoices.map((i) => i.id);
      expect(ids).toHaveLength(2);
      for (const id of ids) await inv.finalizeInvoice({ invoiceId: id });
      let rec = await inv.reconcile({ customerId: "cus_t" });
      expect(rec.invoicesChecked).toBe(2);
      expect(rec.differences).toEqual([]);

      // A late November event (100 units): the period total becomes 1,600 units.
      push(new Date("2026-11-25T12:00:00Z"), 100);
      while ((await rating.service.consumer.pollOnce(0)) > 0);
      rec = await inv.reconcile({ customerId: "cus_t" });
      const late = rec.differences.filter((d) => d.check === "rated_usage").map((d) => [d.detail.split(":")[0], d.differenceNanos]);
      // volume: F(1,600) = $128 (+$8); graduated: $148 (+$8); per unit: +$1
      expect(late.sort()).toEqual([
        ["charge calls_graduated", 8n * USD],
        ["charge calls_unit", 1n * USD],
        ["charge calls_volume", 8n * USD],
      ]);

      // December's invoice bills the late usage as adjustments naming November's window.
      clock.set(new Date(JAN.getTime() + HOUR));
      const r = await inv.closePeriod({ items: [{ customerId: "cus_t", subscriptionId: "sub_t", periodStart: timestampFromDate(DEC) }] });
      const december = r.results[0]!.invoice!;
      const adj = december.lines.filter((l) => l.kind === LineKind.ADJUSTMENT).map((l) => [l.chargeId, l.amountNanos, timestampDate(l.periodStart!).toISOString()]);
      expect(adj.sort()).toEqual([
        ["calls_graduated", 8n * USD, "2026-10-31T18:00:00.000Z"],
        ["calls_unit", 1n * USD, "2026-10-31T18:00:00.000Z"],
        ["calls_volume", 8n * USD, "2026-10-31T18:00:00.000Z"],
      ]);
      await inv.finalizeInvoice({ invoiceId: december.id });
      rec = await inv.reconcile({ customerId: "cus_t" });
      expect(rec.invoicesChecked).toBe(3);
      expect(rec.differences).toEqual([]);
    });
  });
}
