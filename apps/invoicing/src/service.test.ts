import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { ClosePeriodResult, InvoiceStatus, LineKind, RenderFormat, RoundingMode } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { CLOSE_PERIOD_ITEMS_MAX } from "./limits.js";
import { silentLogger } from "@nanobill/service-kit";
import { createInvoiceStore } from "./store/invoice-store.js";
import { createLedgerPoster } from "./ledger.js";
import { retryPendingLedger } from "./service.js";
import { suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");
const JAN = new Date("2027-01-01T00:00:00Z");
const NOW = new Date("2026-11-29T03:10:00Z");

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}
async function message(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "";
  } catch (e) {
    return ConnectError.from(e).rawMessage;
  }
}

function world(): FakeWorld {
  const w = new FakeWorld();
  w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
  w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
  w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
  return w;
}

for (const backend of testBackends()) {
  describe(`invoicing service on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    describe("the one-event slice", () => {
      it("previews cus_1 with a usage line of 8,755,000 nanos and credits applied of -8,755,000", async () => {
        const w = world();
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-29T03:00:00Z"), quantity: 1801n, priceNanos: 8_755_000n, unit: "USD", eventCount: 1n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-29T03:05:00Z"), consumedNanos: 8_755_000n });
        const h = await harness(await open(), w, NOW);
        const { invoice } = await h.client.previewInvoice({ customerId: "cus_1" });
        expect(invoice?.status).toBe(InvoiceStatus.PREVIEW);
        const usage = invoice!.lines.find((l) => l.kind === LineKind.USAGE)!;
        const credits = invoice!.lines.find((l) => l.kind === LineKind.CREDITS_APPLIED)!;
        expect(usage.amountNanos).toBe(8_755_000n);
        expect(usage.description).toContain("LLM tokens");
        expect(credits.amountNanos).toBe(-8_755_000n);
        expect(invoice!.totals!.amountDueNanos).toBe(0n);
        expect(invoice!.periodStart).toEqual(timestampFromDate(NOV));
        expect([...w.tenantsSeen]).toEqual(["tnt_a"]);
        // A reader key may preview; nothing was stored.
        expect(await code(h.reader.previewInvoice({ customerId: "cus_1" }))).toBe("ok");
        expect((await h.client.listInvoices({})).invoices).toHaveLength(0);
      });

      it("previews an unknown customer as NotFound and a bad id as InvalidArgument", async () => {
        const h = await harness(await open(), world(), NOW);
        expect(await code(h.client.previewInvoice({ customerId: "cus_404" }))).toBe(Code.NotFound);
        expect(await message(h.client.previewInvoice({ customerId: "" }))).toContain("customer_id");
      });
    });

    describe("the invoice lifecycle", () => {
      let h: Awaited<ReturnType<typeof harness>>;
      let w: FakeWorld;
      beforeAll(async () => {
        w = world();
        w.plans.set("plan_llm", {
          currency: "USD",
          minimum: "",
          charges: [
            { chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" },
            { chargeId: "platform", name: "Platform fee", kind: "flat", amount: "25" },
          ],
        });
        // $20 usage in November; $30 of it paid from the prepaid wallet.
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T05:00:00Z"), quantity: 1000n, priceNanos: 20n * USD, unit: "USD", eventCount: 40n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-10T05:30:00Z"), consumedNanos: 30n * USD });
        h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
        await h.client.setBillingSettings({ settings: { customerId: "cus_1", taxRateBps: 1000, discountNanos: 10n * USD } });
      });

      it("closes November: $50 of fees + $20 usage - $10 discount = $60, tax 10% = $66, prepaid $30 -> $36", async () => {
        const r = await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] });
        expect(r.results[0]!.result).toBe(ClosePeriodResult.CREATED);
        const inv = r.results[0]!.invoice!;
        // the first invoice bills the flat fee in advance for November and December
        expect(inv.lines.filter((l) => l.kind === LineKind.FLAT)).toHaveLength(2);
        const t = inv.totals!;
        expect(t.subtotalNanos).toBe(70n * USD);
        expect(t.discountNanos).toBe(-10n * USD);
        expect(t.taxNanos).toBe(6n * USD);
        expect(t.totalNanos).toBe(66n * USD);
        expect(t.creditsAppliedNanos).toBe(-30n * USD);
        expect(t.amountDueNanos).toBe(36n * USD);
        expect(t.amountDueMinor).toBe(3600n);
        expect(inv.status).toBe(InvoiceStatus.DRAFT);
        expect(inv.number).toBe("");
      });

      it("closes the same period again (sequentially and concurrently) into the same one invoice", async () => {
        const again = await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] });
        expect(again.results[0]!.result).toBe(ClosePeriodResult.ALREADY_CLOSED);
        const both = await Promise.all([
          h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] }),
          h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] }),
        ]);
        const ids = new Set(both.map((b) => b.results[0]!.invoice!.id));
        expect(ids.size).toBe(1);
        expect((await h.client.listInvoices({ customerId: "cus_1" })).invoices).toHaveLength(1);
      });

      it("refuses to close a period that has not ended, writing nothing", async () => {
        const r = await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] });
        expect(r.results[0]!.result).toBe(ClosePeriodResult.PERIOD_NOT_ENDED);
        expect(r.results[0]!.message).toContain("has not ended");
        expect((await h.client.listInvoices({ customerId: "cus_1" })).invoices).toHaveLength(1);
      });

      it("finalizes with a gapless number and posts receivable/revenue/tax transfers to the ledger", async () => {
        const id = (await h.client.listInvoices({ customerId: "cus_1" })).invoices[0]!.id;
        const { invoice } = await h.client.finalizeInvoice({ invoiceId: id });
        expect(invoice!.status).toBe(InvoiceStatus.FINALIZED);
        expect(invoice!.number).toBe("INV-000001");
        expect(w.balance("acct_inv_recv_cus_1_USD")).toBe(-36n * USD);
        expect(w.balance("acct_inv_tax_USD")).toBe(6n * USD);
        expect(w.balance("acct_inv_revenue_USD")).toBe(30n * USD);
      });

      it("answers a retried finalize with the finalized invoice, changing nothing (no second number or posting)", async () => {
        const id = (await h.client.listInvoices({ customerId: "cus_1" })).invoices[0]!.id;
        const before = w.transfers.size;
        const again = (await h.client.finalizeInvoice({ invoiceId: id })).invoice!;
        expect([again.status, again.number]).toEqual([InvoiceStatus.FINALIZED, "INV-000001"]);
        expect((await h.client.finalizeInvoice({ invoiceId: id })).invoice!.number).toBe("INV-000001");
        expect((await h.client.getInvoice({ invoiceId: id })).invoice!.number).toBe("INV-000001");
        expect(w.transfers.size).toBe(before);
      });

      it("reconciles the finalized invoice to the ledger and rated usage, then reports a late event to the nano", async () => {
        const ok = await h.client.reconcile({ customerId: "cus_1" });
        expect(ok.invoicesChecked).toBe(1);
        expect(ok.differences).toEqual([]);
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 7n, unit: "USD", eventCount: 1n });
        const late = await h.client.reconcile({ customerId: "cus_1" });
        expect(late.differences).toHaveLength(1);
        expect(late.differences[0]!.check).toBe("rated_usage");
        expect(late.differences[0]!.differenceNanos).toBe(7n);
        w.buckets.pop();
      });

      it("expands the usage line into day and hour buckets that sum to the line", async () => {
        const inv = (await h.client.listInvoices({ customerId: "cus_1" })).invoices[0]!;
        const full = (await h.client.getInvoice({ invoiceId: inv.id })).invoice!;
        const line = full.lines.find((l) => l.kind === LineKind.USAGE)!;
        const days = await h.client.expandLine({ invoiceId: inv.id, lineId: line.id });
        expect(days.buckets.reduce((s, b) => s + b.amountNanos, 0n)).toBe(line.amountNanos);
        const hours = await h.client.expandLine({ invoiceId: inv.id, lineId: line.id, granularity: "hour" });
        expect(hours.buckets[0]!.eventsCount).toBe(40n);
        expect(await code(h.client.expandLine({ invoiceId: inv.id, lineId: line.id, granularity: "week" }))).toBe(Code.InvalidArgument);
        const flat = full.lines.find((l) => l.kind === LineKind.FLAT)!;
        expect(await code(h.client.expandLine({ invoiceId: inv.id, lineId: flat.id }))).toBe(Code.FailedPrecondition);
      });

      it("renders JSON, HTML and PDF files", async () => {
        const id = (await h.client.listInvoices({ customerId: "cus_1" })).invoices[0]!.id;
        const json = await h.client.renderInvoice({ invoiceId: id, format: RenderFormat.JSON });
        expect(json.contentType).toBe("application/json");
        expect(JSON.parse(new TextDecoder().decode(json.content)).totals.amountDueNanos).toBe("36000000000");
        const html = await h.client.renderInvoice({ invoiceId: id, format: RenderFormat.HTML });
        const page = new TextDecoder().decode(html.content);
        expect(page).toContain("INV-000001");
        expect(page).toContain("36.00 USD");
        expect(page).toContain("Credits applied");
        const pdf = await h.client.renderInvoice({ invoiceId: id, format: RenderFormat.PDF });
        expect(pdf.contentType).toBe("application/pdf");
        expect(pdf.fileName).toBe("INV-000001.pdf");
        expect(Buffer.from(pdf.content).toString("latin1")).toContain("(36.00 USD) Tj");
      });

      it("marks paid idempotently, then refuses to void the paid invoice without a credit note", async () => {
        const id = (await h.client.listInvoices({ customerId: "cus_1" })).invoices[0]!.id;
        await h.client.markInvoicePaid({ invoiceId: id, paymentId: "pay_1" });
        const replay = await h.client.markInvoicePaid({ invoiceId: id, paymentId: "pay_1" });
        expect(replay.invoice!.status).toBe(InvoiceStatus.PAID);
        expect(w.balance("acct_inv_recv_cus_1_USD")).toBe(0n);
        expect(await code(h.client.markInvoicePaid({ invoiceId: id, paymentId: "pay_2" }))).toBe(Code.FailedPrecondition);
        expect(await message(h.client.voidInvoice({ invoiceId: id, reason: "dispute" }))).toContain("requires a credit note");
        expect((await h.client.getInvoice({ invoiceId: id })).invoice!.status).toBe(InvoiceStatus.PAID);
        const v = await h.client.voidInvoice({ invoiceId: id, reason: "dispute", creditNoteId: "cn_1" });
        expect(v.invoice!.status).toBe(InvoiceStatus.VOID);
        expect(v.invoice!.creditNote!.amountNanos).toBe(36n * USD);
        // the reversal leaves the customer's receivable as a credit of $36 (the credit note)
        expect(w.balance("acct_inv_recv_cus_1_USD")).toBe(36n * USD);
      });

      it("does not let a read key or another tenant change or see invoices", async () => {
        const id = (await h.client.listInvoices({ customerId: "cus_1" })).invoices[0]!.id;
        expect(await code(h.reader.finalizeInvoice({ invoiceId: id }))).toBe(Code.PermissionDenied);
        expect(await code(h.other.getInvoice({ invoiceId: id }))).toBe(Code.NotFound);
      });
    });

    describe("bad input", () => {
      it("refuses a tax rate out of range, naming the field, and keeps the old settings", async () => {
        const h = await harness(await open(), world(), NOW);
        await h.client.setBillingSettings({ settings: { customerId: "cus_1", taxRateBps: 2000 } });
        const err = await message(h.client.setBillingSettings({ settings: { customerId: "cus_1", taxRateBps: 10_001 } }));
        expect(err).toContain("settings.tax_rate_bps");
        expect((await h.client.getBillingSettings({ customerId: "cus_1" })).settings!.taxRateBps).toBe(2000);
        expect(await message(h.client.setBillingSettings({ settings: { customerId: "cus_1", roundingMode: 99 as RoundingMode } }))).toContain("rounding_mode");
        expect(await message(h.client.setBillingSettings({ settings: { customerId: "cus_1", minimumBillableNanos: 5n * USD } }))).toContain("deferral_periods_max");
      });

      it("refuses to invoice a customer with an unknown currency, writing nothing", async () => {
        const w = world();
        w.customers.set("cus_1", { customerId: "cus_1", currency: "XXX", timeZone: "UTC", billingAnchor: NOV });
        const h = await harness(await open(), w, DEC);
        const r = await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] });
        expect(r.results[0]!.result).toBe(ClosePeriodResult.INVALID);
        expect(r.results[0]!.message).toContain("not a supported ISO 4217 currency");
        expect((await h.client.listInvoices({})).invoices).toHaveLength(0);
        expect(await code(h.client.previewInvoice({ customerId: "cus_1" }))).toBe(Code.FailedPrecondition);
      });

      it("reports unknown subscriptions and customers per item, and refuses oversize batches", async () => {
        const h = await harness(await open(), world(), DEC);
        const r = await h.client.closePeriod({
          items: [
            { customerId: "cus_1", subscriptionId: "sub_404" },
            { customerId: "cus_404", subscriptionId: "sub_1" },
            { customerId: "cus_1", subscriptionId: "" },
            { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(new Date("2026-11-02T00:00:00Z")) },
          ],
        });
        expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.NOT_FOUND, ClosePeriodResult.NOT_FOUND, ClosePeriodResult.INVALID, ClosePeriodResult.INVALID]);
        const many = Array.from({ length: CLOSE_PERIOD_ITEMS_MAX + 1 }, () => ({ customerId: "cus_1", subscriptionId: "sub_1" }));
        expect(await message(h.client.closePeriod({ items: many }))).toContain(`at most ${CLOSE_PERIOD_ITEMS_MAX}`);
        expect(await code(h.client.closePeriod({ items: [] }))).toBe(Code.InvalidArgument);
      });

      it("refuses to void a draft with a credit note and keeps a voided draft unnumbered", async () => {
        const h = await harness(await open(), world(), DEC);
        const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] })).results[0]!.invoice!;
        expect(await message(h.client.voidInvoice({ invoiceId: inv.id, reason: "x", creditNoteId: "cn_9" }))).toContain("credit_note_id");
        expect(await message(h.client.voidInvoice({ invoiceId: inv.id, reason: "" }))).toContain("reason");
        const v = await h.client.voidInvoice({ invoiceId: inv.id, reason: "duplicate" });
        expect(v.invoice!.status).toBe(InvoiceStatus.VOID);
        expect(v.invoice!.number).toBe("");
        expect(await code(h.client.finalizeInvoice({ invoiceId: inv.id }))).toBe(Code.FailedPrecondition);
      });
    });

    describe("ledger outage", () => {
      it("finalizes while the ledger is down, keeps the transfers pending, and posts them once on retry", async () => {
        const w = world();
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 3n, priceNanos: 3n * USD, unit: "USD", eventCount: 3n });
        const db = await open();
        const h = await harness(db, w, DEC);
        const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] })).results[0]!.invoice!;
        w.ledgerDown = true;
        const fin = (await h.client.finalizeInvoice({ invoiceId: inv.id })).invoice!;
        expect(fin.number).toBe("INV-000001");
        expect(w.transfers.size).toBe(0);
        const deps = { store: createInvoiceStore(db), ledger: createLedgerPoster(w.ledger()), logger: silentLogger };
        expect(await retryPendingLedger(deps)).toBe(0);
        w.ledgerDown = false;
        expect(await retryPendingLedger(deps)).toBe(1);
        expect(w.balance("acct_inv_recv_cus_1_USD")).toBe(-3n * USD);
        expect(await retryPendingLedger(deps)).toBe(0);
        expect((await h.client.reconcile({})).differences).toEqual([]);
      });
    });

    describe("limits at the edge", () => {
      it("pages ListInvoices, caps page sizes, and refuses bad tokens, long reasons and oversize reconciles", async () => {
        const w = world();
        for (const id of ["sub_2", "sub_3"]) w.subscriptions.push({ subscriptionId: id, customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 3n, priceNanos: 3n * USD, unit: "USD", eventCount: 3n });
        const h = await harness(await open(), w, DEC);
        const r = await h.client.closePeriod({ items: ["sub_1", "sub_2", "sub_3"].map((subscriptionId) => ({ customerId: "cus_1", subscriptionId })) });
        expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.CREATED, ClosePeriodResult.CREATED, ClosePeriodResult.CREATED]);
        // the usage of the customer's charge belongs to its first subscription only
        expect(r.results.map((x) => x.invoice!.totals!.subtotalNanos)).toEqual([3n * USD, 0n, 0n]);
        const p1 = await h.client.listInvoices({ customerId: "cus_1", pageSizeMax: 2 });
        expect(p1.invoices).toHaveLength(2);
        const p2 = await h.client.listInvoices({ customerId: "cus_1", pageSizeMax: 2, pageToken: p1.nextPageToken });
        expect(p2.invoices).toHaveLength(1);
        expect(p2.nextPageToken).toBe("");
        expect(new Set([...p1.invoices, ...p2.invoices].map((i) => i.id)).size).toBe(3);
        expect((await h.client.listInvoices({ pageSizeMax: 1_000_000 })).invoices).toHaveLength(3);
        expect(await message(h.client.listInvoices({ pageToken: "garbage" }))).toContain("page_token");
        expect(await message(h.client.voidInvoice({ invoiceId: p2.invoices[0]!.id, reason: "x".repeat(501) }))).toContain("at most 500");
        expect(await message(h.client.reconcile({ invoicesMax: 2_001 }))).toContain("invoices_max");
        const inv = r.results[0]!.invoice!;
        const usage = inv.lines.find((l) => l.kind === LineKind.USAGE)!;
        expect(await message(h.client.expandLine({ invoiceId: inv.id, lineId: usage.id, pageToken: "-1" }))).toContain("page_token");
        // a bucket start that is not one of the line's buckets, and a malformed event cursor
        expect(await message(h.client.expandLine({ invoiceId: inv.id, lineId: usage.id, bucketStart: timestampFromDate(NOV) }))).toContain("bucket_start");
        const day = timestampFromDate(new Date("2026-11-05T00:00:00Z"));
        expect(await message(h.client.expandLine({ invoiceId: inv.id, lineId: usage.id, bucketStart: day, pageToken: "a b" }))).toContain("page_token");
      });
    });

    describe("rounding carried across periods", () => {
      it("bills $3.685 as $3.68 then $3.69 (half-even), carrying the half cent, and keeps the ledger residue account equal to the carried residue", async () => {
        const w = world();
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 55n, priceNanos: 3_685_000_000n, unit: "USD", eventCount: 55n });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-12-05T00:00:00Z"), quantity: 55n, priceNanos: 3_685_000_000n, unit: "USD", eventCount: 55n });
        const h = await harness(await open(), w, new Date("2027-01-02T00:00:00Z"));
        const r = await h.client.closePeriod({
          items: [
            { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) },
            { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) },
          ],
        });
        const [nov, dec] = r.results.map((x) => x.invoice!);
        const a = nov!.lines.find((l) => l.kind === LineKind.USAGE)!;
        const b = dec!.lines.find((l) => l.kind === LineKind.USAGE)!;
        expect(a.amountMinor + b.amountMinor).toBe(737n);
        expect(a.residueOutNanos + b.residueOutNanos).toBe(5_000_000n);
        await h.client.finalizeInvoice({ invoiceId: nov!.id });
        expect(w.balance("acct_inv_residue_cus_1_USD")).toBe(-a.residueOutNanos);
        await h.client.finalizeInvoice({ invoiceId: dec!.id });
        expect(w.balance("acct_inv_residue_cus_1_USD")).toBe(-b.residueOutNanos);
        expect((await h.client.getInvoice({ invoiceId: dec!.id })).invoice!.number).toBe("INV-000002");
      });

      it("bills usage rated late for a finalized period on the next invoice as an adjustment naming that period", async () => {
        const w = world();
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 10n, priceNanos: 2n * USD, unit: "USD", eventCount: 10n });
        const h = await harness(await open(), w, new Date("2027-01-02T00:00:00Z"));
        const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
        await h.client.finalizeInvoice({ invoiceId: nov.id });
        // an event of November arrives after November was invoiced
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 1_250_000_000n, unit: "USD", eventCount: 1n });
        expect((await h.client.reconcile({})).differences.map((d) => d.differenceNanos)).toEqual([1_250_000_000n]);
        const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] })).results[0]!.invoice!;
        expect(dec.periodStart).toEqual(timestampFromDate(DEC));
        const adj = dec.lines.find((l) => l.kind === LineKind.ADJUSTMENT)!;
        expect(adj.amountNanos).toBe(1_250_000_000n);
        expect(adj.periodStart).toEqual(timestampFromDate(NOV));
        expect(adj.description).toContain("2026-11-01 to 2026-12-01");
        await h.client.finalizeInvoice({ invoiceId: dec.id });
        expect((await h.client.reconcile({})).differences).toEqual([]);
        void JAN;
      });

      it("applies prepaid money burned by a late event of an invoiced period on the next invoice, once, and Reconcile ties credits", async () => {
        const w = world();
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 10n, priceNanos: 2n * USD, unit: "USD", eventCount: 10n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-05T00:10:00Z"), consumedNanos: 2n * USD });
        const h = await harness(await open(), w, new Date("2027-01-02T00:00:00Z"));
        const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
        expect(nov.totals!.creditsAppliedNanos).toBe(-2n * USD);
        await h.client.finalizeInvoice({ invoiceId: nov.id });
        // a late November event is rated and burns the prepaid wallet at its own time, inside November
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 1_250_000_000n, unit: "USD", eventCount: 1n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-30T23:10:00Z"), consumedNanos: 1_250_000_000n });
        const before = (await h.client.reconcile({})).differences;
        expect(before.map((d) => [d.check, d.differenceNanos])).toEqual([
          ["rated_usage", 1_250_000_000n],
          ["credits_applied", 1_250_000_000n],
        ]);
        const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] })).results[0]!.invoice!;
        const late = dec.lines.filter((l) => l.kind === LineKind.CREDITS_APPLIED && l.periodStart?.seconds === timestampFromDate(NOV).seconds);
        expect(late.map((l) => l.amountNanos)).toEqual([-1_250_000_000n]);
        expect(late[0]!.description).toContain("2026-11-01 to 2026-12-01");
        // the usage is billed (+$1.25) and its prepaid money applied (-$1.25): nothing is due for it twice
        expect(dec.lines.find((l) => l.kind === LineKind.ADJUSTMENT)!.amountNanos).toBe(1_250_000_000n);
        expect(dec.totals!.creditsAppliedNanos).toBe(-1_250_000_000n);
        expect(dec.totals!.amountDueNanos).toBe(0n);
        expect((await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.result).toBe(ClosePeriodResult.ALREADY_CLOSED);
        await h.client.finalizeInvoice({ invoiceId: dec.id });
        expect((await h.client.reconcile({})).differences).toEqual([]);
      });

      it("bills late usage and late prepaid money of every earlier period still open to late events, exactly once under concurrent closes", async () => {
        const w = world();
        const FEB = new Date("2027-02-01T00:00:00Z");
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 10n, priceNanos: 2n * USD, unit: "USD", eventCount: 10n });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-12-05T00:00:00Z"), quantity: 10n, priceNanos: 3n * USD, unit: "USD", eventCount: 10n });
        const h = await harness(await open(), w, new Date("2027-03-02T00:00:00Z"));
        const close = (starts: Date[]) => h.client.closePeriod({ items: starts.map((d) => ({ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) })) });
        await close([NOV, DEC]);
        // late events for November and December arrive after both were invoiced
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 1n * USD, unit: "USD", eventCount: 1n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-30T23:10:00Z"), consumedNanos: 1n * USD });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-12-31T23:00:00Z"), quantity: 1n, priceNanos: 500_000_000n, unit: "USD", eventCount: 1n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-12-31T23:10:00Z"), consumedNanos: 300_000_000n });
        // January and February closed concurrently (one batch of both, and each alone): both may bill December
        await Promise.all([close([JAN, FEB]), close([FEB]), close([JAN])]);
        const invoices = (await h.client.listInvoices({ customerId: "cus_1" })).invoices;
        expect(invoices).toHaveLength(4);
        const lines = (await Promise.all(invoices.map(async (i) => (await h.client.getInvoice({ invoiceId: i.id })).invoice!))).flatMap((i) => i.lines.map((l) => ({ ...l, on: i.periodStart!.seconds })));
        const naming = (kind: LineKind, d: Date) => lines.filter((l) => l.kind === kind && l.periodStart!.seconds === timestampFromDate(d).seconds && l.on !== timestampFromDate(d).seconds);
        const sum = (xs: Array<{ amountNanos: bigint }>) => xs.reduce((a, l) => a + l.amountNanos, 0n);
        // November (its end is 31 days before January starts, within the 35-day late-event age): billed by January's close
        expect(sum(naming(LineKind.ADJUSTMENT, NOV))).toBe(1n * USD);
        expect(sum(naming(LineKind.CREDITS_APPLIED, NOV))).toBe(-1n * USD);
        expect(naming(LineKind.ADJUSTMENT, NOV).every((l) => l.on === timestampFromDate(JAN).seconds)).toBe(true);
        // December: once, by whichever of January and February closed first
        expect(sum(naming(LineKind.ADJUSTMENT, DEC))).toBe(500_000_000n);
        expect(sum(naming(LineKind.CREDITS_APPLIED, DEC))).toBe(-300_000_000n);
        expect(naming(LineKind.ADJUSTMENT, DEC)).toHaveLength(1);
        for (const i of [...invoices].sort((a, b) => Number(a.periodStart!.seconds - b.periodStart!.seconds))) await h.client.finalizeInvoice({ invoiceId: i.id });
        expect((await h.client.reconcile({})).differences).toEqual([]);
        // March: November ended more than 35 days before March starts (no late event can arrive for it): not adjusted
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T22:00:00Z"), quantity: 1n, priceNanos: 7n, unit: "USD", eventCount: 1n });
        h.clock.set(new Date("2027-04-02T00:00:00Z"));
        const mar = (await close([new Date("2027-03-01T00:00:00Z")])).results[0]!.invoice!;
        expect(mar.lines.filter((l) => l.kind === LineKind.ADJUSTMENT)).toEqual([]);
      });

      it("follows a configured late-event age: with 100 days, February's close still bills November's late usage", async () => {
        const w = world();
        const FEB = new Date("2027-02-01T00:00:00Z");
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 10n, priceNanos: 2n * USD, unit: "USD", eventCount: 10n });
        const h = await harness(await open(), w, new Date("2027-03-02T00:00:00Z"), { lateEventAgeMs: 100 * 86_400_000 });
        const close = (starts: Date[]) => h.client.closePeriod({ items: starts.map((d) => ({ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) })) });
        await close([NOV, DEC, JAN]);
        // a late November event (62 days before February starts: past the 35-day default)
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 7n * USD, unit: "USD", eventCount: 1n });
        const feb = (await close([FEB])).results[0]!.invoice!;
        const adj = feb.lines.filter((l) => l.kind === LineKind.ADJUSTMENT);
        expect(adj.map((l) => [l.amountNanos, l.periodStart?.seconds])).toEqual([[7n * USD, timestampFromDate(NOV).seconds]]);
        for (const i of (await h.client.listInvoices({ customerId: "cus_1" })).invoices.sort((a, b) => Number(a.periodStart!.seconds - b.periodStart!.seconds)))
          await h.client.finalizeInvoice({ invoiceId: i.id });
        expect((await h.client.reconcile({})).differences).toEqual([]);
      });

      it("previews the late usage and late prepaid money of closed periods exactly as the next close bills them", async () => {
        const w = world();
        w.plans.set("plan_llm", {
          currency: "USD",
          minimum: "",
          charges: [
            { chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" },
            { chargeId: "platform", name: "Platform fee", kind: "flat", amount: "25" },
          ],
        });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-05T00:00:00Z"), quantity: 55n, priceNanos: 3_685_000_000n, unit: "USD", eventCount: 55n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-05T00:10:00Z"), consumedNanos: 1_234_567n });
        const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
        await h.client.setBillingSettings({ settings: { customerId: "cus_1", taxRateBps: 1000 } });
        await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] });
        // December usage, and a late November event that burned prepaid money
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-12-10T00:00:00Z"), quantity: 5n, priceNanos: 1_115_000_000n, unit: "USD", eventCount: 5n });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 333_333_333n, unit: "USD", eventCount: 1n });
        w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-30T23:10:00Z"), consumedNanos: 222_222_222n });
        h.clock.set(new Date("2027-01-01T00:00:01Z"));
        const { invoice: preview } = await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2026-12-31T23:30:00Z")) });
        const adj = preview!.lines.find((l) => l.kind === LineKind.ADJUSTMENT)!;
        expect(adj.amountNanos).toBe(333_333_333n);
        expect(adj.periodStart).toEqual(timestampFromDate(NOV));
        expect(preview!.lines.filter((l) => l.kind === LineKind.CREDITS_APPLIED).map((l) => l.amountNanos)).toEqual([-222_222_222n]);
        const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1" }] })).results[0]!.invoice!;
        const shape = (ls: typeof dec.lines) => ls.map((l) => [l.kind, l.chargeId, l.amountNanos, l.residueInNanos, l.roundedAmountNanos, l.residueOutNanos, l.periodStart?.seconds, l.description]);
        expect(shape(preview!.lines)).toEqual(shape(dec.lines));
        expect(preview!.totals).toEqual(dec.totals);
      });

      it("prorates seats billed in advance and credits a seat removed mid-period at the next close", async () => {
        const w = world();
        w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "seats", name: "Seats", kind: "seats", amount: "10" }] });
        w.subscriptions[0]!.seats = [{ seats: 2, at: NOV }];
        const h = await harness(await open(), w, new Date("2027-01-02T00:00:00Z"));
        const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
        // November and December billed in advance: 2 seats x $10 each
        expect(nov.lines.filter((l) => l.kind === LineKind.SEATS).map((l) => l.amountNanos)).toEqual([20n * USD, 20n * USD]);
        // one seat removed on December 16 (15 of 31 days at 2 seats, 16 at 1)
        w.subscriptions[0]!.seats.push({ seats: 1, at: new Date("2026-12-16T00:00:00Z") });
        const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.invoice!;
        const credit = dec.lines.find((l) => l.kind === LineKind.ADJUSTMENT)!;
        // 10 x (15 x 2 + 16 x 1) / 31 - 20 = -5.1612903225806... -> -5,161,290,323 nanos (sub-nano carried)
        expect(credit.amountNanos).toBe(-5_161_290_323n);
        expect(credit.description).toContain("credit for seat or fee changes in 2026-12-01 to 2027-01-01");
        expect(credit.periodStart).toEqual(timestampFromDate(DEC));
        // January is billed in advance at the seat count known now (1 seat)
        const jan = dec.lines.filter((l) => l.kind === LineKind.SEATS);
        expect(jan.map((l) => l.amountNanos)).toEqual([10n * USD]);
      });
    });
  });
}
