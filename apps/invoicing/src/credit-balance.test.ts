/**
 * A negative amount due (credits or returns above the period's charges) is the customer's credit
 * balance: carried to the next invoice, which applies it; the ledger's receivable holds it as a
 * credit meanwhile (PGlite and PostgreSQL).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { RenderFormat, type Invoice } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { outcomeOf, suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");
const JAN = new Date("2027-01-01T00:00:00Z");
const RECEIVABLE = "acct_inv_recv_cus_1_USD";

for (const backend of testBackends()) {
  describe(`credit balance on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });
    const world = () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      const usage = (at: string, p: bigint) => w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date(at), quantity: 1n, priceNanos: p, unit: "USD", eventCount: 1n });
      // November: $3 of usage and a $15 return (a tier drop, a refund rated as usage): -$12
      usage("2026-11-10T00:00:00Z", 3n * USD);
      usage("2026-11-20T00:00:00Z", -15n * USD);
      usage("2026-12-10T00:00:00Z", 20n * USD);
      usage("2027-01-10T00:00:00Z", 6n * USD);
      return w;
    };
    const credit = (inv: Invoice) => inv.lines.filter((l) => l.chargeId === "_credit_balance").map((l) => [l.roundedAmountNanos, l.description]);

    it("carries -$12 to December, which applies it ($20 - $12 = $8 due); the receivable holds the credit in between and ties after payment", async () => {
      const w = world();
      const h = await harness(await open(), w, new Date("2027-02-02T00:00:00Z"));
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      const nov = await close(NOV);
      expect([nov.totals!.totalNanos, nov.totals!.amountDueNanos, nov.totals!.deferredNanos]).toEqual([-12n * USD, 0n, -12n * USD]);
      expect(credit(nov)).toEqual([[12n * USD, "Credit balance carried to the next invoice (since 2026-11-01)"]]);
      await h.client.finalizeInvoice({ invoiceId: nov.id });
      expect(w.balance(RECEIVABLE)).toBe(12n * USD); // owed to the customer
      // the rendering says where the $12 went: the rows after the total add up to the amount due
      const html = new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: nov.id, format: RenderFormat.HTML })).content);
      expect(html).toContain("<tr><td>Credit balance carried to next invoice</td><td class=\"n\">12.00 USD</td></tr>");

      const dec = await close(DEC);
      expect(credit(dec)).toEqual([[-12n * USD, "Credit balance from earlier invoices since 2026-11-01 (1 period)"]]);
      expect([dec.totals!.totalNanos, dec.totals!.amountDueNanos, dec.totals!.deferredNanos]).toEqual([20n * USD, 8n * USD, 0n]);
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect(w.balance(RECEIVABLE)).toBe(-8n * USD); // the customer owes $8
      expect(w.balance("acct_inv_revenue_USD")).toBe(8n * USD); // -$12 + $20: revenue as before the carry
      await h.client.markInvoicePaid({ invoiceId: dec.id, paymentId: "pay_1" });
      expect(w.balance(RECEIVABLE)).toBe(0n);
      expect((await h.client.reconcile({ customerId: "cus_1" })).differences).toEqual([]);

      // December applied November's credit: voiding November is refused (nothing written)
      const [code, msg] = await outcomeOf(h.client.voidInvoice({ invoiceId: nov.id, reason: "x" }));
      expect(code).toBe(Code.FailedPrecondition);
      expect(msg).toContain(`was carried on by invoice ${dec.id}`);
    });

    it("keeps a USD credit balance in USD when the customer moves to JPY: the JPY invoice neither applies it nor carries over it (second review: -$12.50 failed every close, -$12 was applied as 12 yen)", async () => {
      const w = world();
      w.buckets.splice(0, w.buckets.length);
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1n, priceNanos: -12_500_000_000n, unit: "USD", eventCount: 1n });
      const h = await harness(await open(), w, new Date("2027-02-02T00:00:00Z"));
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      const nov = await close(NOV);
      expect(nov.totals!.deferredNanos).toBe(-12_500_000_000n);
      w.customers.set("cus_1", { customerId: "cus_1", currency: "JPY", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "JPY", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-12-10T00:00:00Z"), quantity: 1n, priceNanos: 1000n * USD, unit: "JPY", eventCount: 1n });
      // and a JPY return in January: its negative amount due stands (the USD credit holds the carry)
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2027-01-10T00:00:00Z"), quantity: 1n, priceNanos: -300n * USD, unit: "JPY", eventCount: 1n });
      const dec = await close(DEC);
      expect([dec.unit, credit(dec), dec.totals!.amountDueNanos, dec.totals!.deferredNanos]).toEqual(["JPY", [], 1000n * USD, 0n]);
      const jan = await close(JAN);
      expect([credit(jan), jan.totals!.amountDueNanos, jan.totals!.deferredNanos]).toEqual([[], -300n * USD, 0n]);
      // the USD credit is still carried, in USD, by November's invoice
      const preview = (await h.client.previewInvoice({ customerId: "cus_1" })).invoice!;
      expect(credit(preview)).toEqual([]);
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      // back in USD, the preview takes it in (and, with nothing to use it on, carries it on)
      expect(credit((await h.client.previewInvoice({ customerId: "cus_1" })).invoice!).map(([n]) => n)).toEqual([-12_500_000_000n, 12_500_000_000n]);
    });

    it("voiding the invoice that applied the credit gives it back to the next invoice; the last invoice of a customer leaves a negative amount due", async () => {
      const w = world();
      const h = await harness(await open(), w, new Date("2027-02-02T00:00:00Z"));
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      await close(NOV);
      const dec = await close(DEC);
      await h.client.voidInvoice({ invoiceId: dec.id, reason: "re-issue" });
      const jan = await close(JAN);
      // January's $6 does not use it up: $6 is carried on, still since November
      expect(credit(jan)).toEqual([
        [-12n * USD, "Credit balance from earlier invoices since 2026-11-01 (1 period)"],
        [6n * USD, "Credit balance carried to the next invoice (since 2026-11-01)"],
      ]);
      expect([jan.totals!.amountDueNanos, jan.totals!.deferredNanos]).toEqual([0n, -6n * USD]);

      // a customer whose subscription ends with the period: no later invoice, the -$12 stands
      const w2 = world();
      w2.subscriptions[0]!.endedAt = DEC;
      const h2 = await harness(await open(), w2, new Date("2027-02-02T00:00:00Z"));
      const last = (await h2.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect([last.totals!.amountDueNanos, last.totals!.deferredNanos, credit(last)]).toEqual([-12n * USD, 0n, []]);
    });
  });
}
