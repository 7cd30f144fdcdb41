/**
 * Review fixes (PGlite and PostgreSQL): the period grid frozen once invoiced; bad times answered as
 * InvalidArgument naming the field (one bad ClosePeriod item refused alone); voiding an invoice
 * gives back what it carried; retries of FinalizeInvoice / VoidInvoice answer the same invoice;
 * dates in descriptions and renderings are the customer's local dates.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { ClosePeriodResult, InvoiceStatus, LineKind, PeriodAnchor, PeriodInterval, RenderFormat } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { outcomeOf, suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");

for (const backend of testBackends()) {
  describe(`review fixes on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("refuses a period interval or anchor change once the customer has a non-void invoice (usage and fees would be billed twice)", async () => {
      const START = new Date("2026-10-15T00:00:00Z");
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: START });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }, { chargeId: "base", name: "Base fee", kind: "flat", amount: "20" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: START, seats: [] });
      for (const d of ["2026-10-20", "2026-11-05", "2026-11-20", "2026-12-05"]) {
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date(d + "T00:00:00Z"), quantity: 1n, priceNanos: USD, unit: "USD", eventCount: 1n });
      }
      const h = await harness(await open(), w, new Date("2026-12-16T00:00:00Z"));
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!;
      // before any invoice the grid may change (and back)
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", periodAnchor: PeriodAnchor.CALENDAR } });
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", periodAnchor: PeriodAnchor.ANNIVERSARY } });
      const oct = await close(START);
      expect(oct.result).toBe(ClosePeriodResult.CREATED);
      expect((await close(new Date("2026-11-15T00:00:00Z"))).result).toBe(ClosePeriodResult.CREATED);
      const [code, msg] = await outcomeOf(h.client.setBillingSettings({ settings: { customerId: "cus_1", periodAnchor: PeriodAnchor.CALENDAR } }));
      expect(code).toBe(Code.FailedPrecondition);
      expect(msg).toContain("settings.period_anchor: cannot change from anniversary to calendar");
      const [code2, msg2] = await outcomeOf(h.client.setBillingSettings({ settings: { customerId: "cus_1", periodInterval: PeriodInterval.QUARTER } }));
      expect(code2).toBe(Code.FailedPrecondition);
      expect(msg2).toContain("settings.period_interval: cannot change from month to quarter");
      // nothing written: the settings are as before, other settings can still change
      const s = (await h.client.getBillingSettings({ customerId: "cus_1" })).settings!;
      expect([s.periodAnchor, s.periodInterval]).toEqual([PeriodAnchor.ANNIVERSARY, PeriodInterval.MONTH]);
      expect((await h.client.setBillingSettings({ settings: { customerId: "cus_1", taxRateBps: 100 } })).settings!.taxRateBps).toBe(100);
      // the calendar period Nov 1 is not a period of the (unchanged) anniversary grid: nothing billed twice
      expect((await close(NOV)).result).toBe(ClosePeriodResult.INVALID);
    });

    it("answers times out of range with InvalidArgument naming the field, and one bad ClosePeriod item as its own INVALID result", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1n, priceNanos: 3n * USD, unit: "USD", eventCount: 1n });
      w.customers.set("cus_fee", { customerId: "cus_fee", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_fee", { currency: "USD", minimum: "", charges: [{ chargeId: "base", name: "Base fee", kind: "flat", amount: "20" }] });
      w.subscriptions.push({ subscriptionId: "sub_fee", customerId: "cus_fee", planId: "plan_fee", planVersion: 1, startedAt: NOV, seats: [] });
      const h = await harness(await open(), w, new Date("2026-12-02T00:00:00Z"));
      const huge = { seconds: 10n ** 15n, nanos: 0 } as ReturnType<typeof timestampFromDate>;
      const before = { seconds: -(10n ** 12n), nanos: 0 } as ReturnType<typeof timestampFromDate>;
      const arg = async (p: Promise<unknown>, field: string) => {
        const [code, msg] = await outcomeOf(p);
        expect([code, msg.startsWith(`${field}: `)]).toEqual([Code.InvalidArgument, true]);
      };
      await arg(h.client.setBillingSettings({ settings: { customerId: "cus_1", minimumBillableNanos: USD, deferralUntil: huge } }), "settings.deferral_until");
      await arg(h.client.listInvoices({ pageToken: "9999999999999999.inv_abc" }), "page_token");
      await arg(h.client.previewInvoice({ customerId: "cus_1", at: huge }), "at");
      // a valid time whose billing period ends on 10000-01-01, which no Timestamp JSON can hold (fuzz finding: Internal)
      await arg(h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("9999-12-15T00:00:00Z")) }), "at");
      expect((await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("9999-11-15T00:00:00Z")) })).invoice!.periodEnd!.seconds).toBe(
        BigInt(Date.UTC(9999, 11, 1) / 1000),
      );
      // A flat fee billed in advance: November 9999's preview bills December, which ends in 10000 (review finding: Internal).
      await arg(h.client.previewInvoice({ customerId: "cus_fee", at: timestampFromDate(new Date("9999-11-15T00:00:00Z")) }), "at");
      expect((await h.client.previewInvoice({ customerId: "cus_fee", at: timestampFromDate(new Date("9999-10-15T00:00:00Z")) })).invoice!.lines.length).toBeGreaterThan(0);
      const r = await h.client.closePeriod({
        items: [
          { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) },
          { customerId: "cus_1", subscriptionId: "sub_1", periodStart: huge },
        ],
      });
      expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.CREATED, ClosePeriodResult.INVALID]);
      expect(r.results[1]!.message).toContain("items[1].period_start: must be a time in years 1..9999 UTC");
      const inv = r.results[0]!.invoice!;
      await h.client.finalizeInvoice({ invoiceId: inv.id });
      await arg(h.client.markInvoicePaid({ invoiceId: inv.id, paymentId: "pay_1", paidAt: huge }), "paid_at");
      await arg(h.client.markInvoicePaid({ invoiceId: inv.id, paymentId: "pay_2", paidAt: before }), "paid_at");
      await arg(h.client.expandLine({ invoiceId: inv.id, lineId: inv.lines[0]!.id, bucketStart: huge }), "bucket_start");
      // nothing half-written: the invoice is still finalized and unpaid
      expect((await h.client.getInvoice({ invoiceId: inv.id })).invoice!.status).toBe(InvoiceStatus.FINALIZED);
    });
    const deferralWorld = () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      const usage = (at: string, p: bigint) => w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date(at), quantity: 1n, priceNanos: p, unit: "USD", eventCount: 1n });
      usage("2026-11-10T00:00:00Z", 3n * USD);
      usage("2026-12-10T00:00:00Z", 4n * USD);
      usage("2027-01-10T00:00:00Z", 6n * USD);
      return w;
    };
    const JAN = new Date("2027-01-01T00:00:00Z");
    const closeOf = (h: Awaited<ReturnType<typeof harness>>) => async (d: Date) =>
      (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;

    it("voiding an invoice that deferred an amount drops that deferral (not billed later), and a retried void answers the void invoice", async () => {
      const h = await harness(await open(), deferralWorld(), new Date("2027-02-02T00:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", minimumBillableNanos: 5n * USD, deferralPeriodsMax: 3 } });
      const close = closeOf(h);
      const nov = await close(NOV);
      expect([nov.totals!.amountDueNanos, nov.totals!.deferredNanos]).toEqual([0n, 3n * USD]);
      const v = await h.client.voidInvoice({ invoiceId: nov.id, reason: "usage disputed" });
      expect(v.invoice!.status).toBe(InvoiceStatus.VOID);
      // a retry of the same void: the same void invoice
      expect((await h.client.voidInvoice({ invoiceId: nov.id, reason: "usage disputed" })).invoice!.status).toBe(InvoiceStatus.VOID);
      expect((await outcomeOf(h.client.voidInvoice({ invoiceId: nov.id, reason: "usage disputed", creditNoteId: "cn_1" })))[0]).toBe(Code.FailedPrecondition);
      // December does not bill November's voided $3: its own $4 is below the minimum, deferred
      const dec = await close(DEC);
      expect(dec.lines.filter((l) => l.chargeId === "_deferred").map((l) => l.roundedAmountNanos)).toEqual([-4n * USD]);
      expect(dec.totals!.deferredNanos).toBe(4n * USD);
    });

    it("voiding an invoice that billed a carried deferral gives it back to the next invoice; voiding one whose deferral a later invoice carried on is refused", async () => {
      const h = await harness(await open(), deferralWorld(), new Date("2027-02-02T00:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", minimumBillableNanos: 5n * USD, deferralPeriodsMax: 3 } });
      const close = closeOf(h);
      const nov = await close(NOV);
      const dec = await close(DEC);
      // December billed November's $3 + its $4
      expect(dec.totals!.amountDueNanos).toBe(7n * USD);
      // November's deferral was carried on by December: voiding November is refused, nothing written
      const [code, msg] = await outcomeOf(h.client.voidInvoice({ invoiceId: nov.id, reason: "x" }));
      expect(code).toBe(Code.FailedPrecondition);
      expect(msg).toContain(`was carried on by invoice ${dec.id}`);
      expect((await h.client.getInvoice({ invoiceId: nov.id })).invoice!.status).toBe(InvoiceStatus.DRAFT);
      // voiding December gives November's $3 back: January bills it (since November, not lost)
      await h.client.voidInvoice({ invoiceId: dec.id, reason: "re-issue" });
      const jan = await close(JAN);
      const carried = jan.lines.filter((l) => l.chargeId === "_deferred");
      expect(carried.map((l) => l.roundedAmountNanos)).toEqual([3n * USD]);
      expect(carried[0]!.description).toContain("since 2026-11-01");
      expect(jan.totals!.amountDueNanos).toBe(9n * USD);
      // January carried November's deferral on (and billed it): voiding November is refused again, naming January
      const [code2, msg2] = await outcomeOf(h.client.voidInvoice({ invoiceId: nov.id, reason: "x" }));
      expect([code2, msg2.includes(`carried on by invoice ${jan.id}`)]).toEqual([Code.FailedPrecondition, true]);
    });

    it("voiding an invoice gives back the usage it carried in below the line minimum", async () => {
      const h = await harness(await open(), deferralWorld(), new Date("2027-02-02T00:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: 5n * USD, deferralPeriodsMax: 3 } });
      const close = closeOf(h);
      const nov = await close(NOV);
      expect(nov.totals!.amountDueNanos).toBe(0n);
      const dec = await close(DEC);
      expect(dec.totals!.amountDueNanos).toBe(7n * USD);
      expect((await outcomeOf(h.client.voidInvoice({ invoiceId: nov.id, reason: "x" })))[1]).toContain("usage of llm_tokens it carried below the line minimum was carried on");
      await h.client.voidInvoice({ invoiceId: dec.id, reason: "re-issue" });
      const jan = await close(JAN);
      // January: $6 + November's $3 given back
      expect(jan.totals!.amountDueNanos).toBe(9n * USD);
    });

    it("answers a retried FinalizeInvoice with the finalized invoice (one number, one posting)", async () => {
      const h = await harness(await open(), deferralWorld(), new Date("2027-02-02T00:00:00Z"));
      const nov = await closeOf(h)(NOV);
      const a = (await h.client.finalizeInvoice({ invoiceId: nov.id })).invoice!;
      const b = (await h.client.finalizeInvoice({ invoiceId: nov.id })).invoice!;
      expect([a.number, b.number, b.status]).toEqual(["INV-000001", "INV-000001", InvoiceStatus.FINALIZED]);
      await h.client.voidInvoice({ invoiceId: nov.id, reason: "x" });
      expect((await outcomeOf(h.client.finalizeInvoice({ invoiceId: nov.id })))[0]).toBe(Code.FailedPrecondition);
    });
    it("a deferral made by one subscription's invoice is not counted again by the other subscription's invoice of the same period", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      for (const x of ["a", "b"]) {
        w.plans.set(`plan_${x}`, { currency: "USD", minimum: "", charges: [{ chargeId: `${x}_tokens`, name: x.toUpperCase(), kind: "usage", amount: "0" }] });
        w.subscriptions.push({ subscriptionId: `sub_${x}`, customerId: "cus_1", planId: `plan_${x}`, planVersion: 1, startedAt: NOV, seats: [] });
        w.buckets.push({ customerId: "cus_1", chargeId: `${x}_tokens`, hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1n, priceNanos: USD, unit: "USD", eventCount: 1n });
      }
      const h = await harness(await open(), w, new Date("2026-12-02T00:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", minimumBillableNanos: 5n * USD, deferralPeriodsMax: 1 } });
      // in two requests, so that the second reads the deferral from the database
      const one = async (sub: string) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: sub, periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      const a = await one("sub_a");
      const b = await one("sub_b");
      expect([a.totals!.amountDueNanos, a.totals!.deferredNanos]).toEqual([0n, USD]);
      // November is one deferred period: sub_b's invoice defers the $2 on (periods max 1 not reached by one period)
      expect([b.totals!.amountDueNanos, b.totals!.deferredNanos, b.deferral!.periods]).toEqual([0n, 2n * USD, 1]);
    });
    it("returns the tax on a net credit: a negative tax line, and the ledger's tax payable goes down by it", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_s", { currency: "USD", minimum: "", charges: [{ chargeId: "seats", name: "Seats", kind: "seats", amount: "10" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_s", planVersion: 1, startedAt: NOV, seats: [{ seats: 2, at: NOV }] });
      const h = await harness(await open(), w, new Date("2027-01-02T00:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", taxRateBps: 1000 } });
      const close = closeOf(h);
      const nov = await close(NOV);
      // November and December in advance: $40, tax $4
      expect([nov.totals!.subtotalNanos, nov.totals!.taxNanos]).toEqual([40n * USD, 4n * USD]);
      await h.client.finalizeInvoice({ invoiceId: nov.id });
      expect(w.balance("acct_inv_tax_USD")).toBe(4n * USD);
      // every seat removed on December 2: 30 of 31 days of $20 credited, nothing billed for January
      w.subscriptions[0]!.seats.push({ seats: 0, at: new Date("2026-12-02T00:00:00Z") });
      const dec = await close(DEC);
      const sub = dec.totals!.subtotalNanos;
      expect(sub).toBe(-19_350_000_000n); // -20 x 30/31 = -19.3548... -> -$19.35
      expect(dec.totals!.taxNanos).toBe(-1_940_000_000n); // 10% of -$19.35 = -$1.935 -> -$1.94 (half-even)
      expect(dec.totals!.totalNanos).toBe(sub + dec.totals!.taxNanos);
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect(w.balance("acct_inv_tax_USD")).toBe(4n * USD - 1_940_000_000n);
      expect((await h.client.reconcile({ customerId: "cus_1" })).differences.filter((d) => d.check !== "rated_usage")).toEqual([]);
    });

    it("names a Tokyo customer's periods by their local dates (fees in advance, late usage, the rendered header), not the UTC dates of the instants", async () => {
      // February in Tokyo: 2026-01-31T15:00Z .. 2026-02-28T15:00Z
      const FEB = new Date("2026-01-31T15:00:00Z");
      const MAR = new Date("2026-02-28T15:00:00Z");
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "Asia/Tokyo", billingAnchor: FEB });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }, { chargeId: "base", name: "Base fee", kind: "flat", amount: "20" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: FEB, seats: [] });
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-02-10T00:00:00Z"), quantity: 1n, priceNanos: USD, unit: "USD", eventCount: 1n });
      const h = await harness(await open(), w, new Date("2026-04-01T00:00:00Z"));
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      const feb = await close(FEB);
      expect(feb.lines.filter((l) => l.kind === LineKind.FLAT).map((l) => l.description)).toEqual(["Base fee (2026-02-01 to 2026-03-01, in advance)", "Base fee (2026-03-01 to 2026-04-01, in advance)"]);
      await h.client.finalizeInvoice({ invoiceId: feb.id });
      const html = new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: feb.id, format: RenderFormat.HTML })).content);
      expect(html).toContain("period 2026-02-01 to 2026-03-01 (Asia/Tokyo)");
      const pdf = Buffer.from((await h.client.renderInvoice({ invoiceId: feb.id, format: RenderFormat.PDF })).content).toString("latin1");
      expect(pdf).toContain("(Period 2026-02-01 to 2026-03-01 \\(Asia/Tokyo\\)");
      // an event of February rated after February's invoice: March's close names February locally
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-02-20T00:00:00Z"), quantity: 1n, priceNanos: USD, unit: "USD", eventCount: 1n });
      const mar = await close(MAR);
      expect(mar.lines.filter((l) => l.kind === LineKind.ADJUSTMENT).map((l) => l.description)).toEqual(["LLM tokens: usage rated late for 2026-02-01 to 2026-03-01"]);
      expect(mar.lines.filter((l) => l.kind === LineKind.FLAT).map((l) => l.description)).toEqual(["Base fee (2026-04-01 to 2026-05-01, in advance)"]);
    });
  });
}
