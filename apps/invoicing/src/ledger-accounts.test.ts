/**
 * Invoicing's ledger postings against the real ledger service (PGlite and PostgreSQL), rating and
 * the wallet faked: account ids the ledger accepts for every customer id rating accepts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import type { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { InvoiceStatus } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { KEYS, openLedgerHarness, type LedgerHarness } from "../../ledger/src/test-support.js";
import { FakeWorld, harness } from "./testing/fakes.js";
import { accounts } from "./ledger.js";
import { suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const MAR = new Date("2026-03-01T00:00:00Z");

/** The fake world with the real ledger in place of the fake one. */
class RealLedgerWorld extends FakeWorld {
  constructor(private readonly realLedger: Client<typeof LedgerService>) {
    super();
  }
  override ledger(): Client<typeof LedgerService> {
    return this.realLedger;
  }
}

/** debits - credits posted on an account of the real ledger (0 when it does not exist). */
async function debitBalance(ledger: Client<typeof LedgerService>, id: string): Promise<bigint> {
  const a = (await ledger.lookupAccounts({ ids: [id] })).accounts[0];
  return a === undefined ? 0n : a.debitsPostedNanos - a.creditsPostedNanos;
}

for (const backend of testBackends()) {
  describe(`invoicing's postings in the real ledger on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });
    let ledgerHarness: LedgerHarness;
    beforeAll(async () => {
      ledgerHarness = await openLedgerHarness(backend);
    });
    afterAll(async () => {
      await ledgerHarness?.close();
    });

    it("posts a finalized invoice of a customer with a 120-character id (its account ids end in a hash) and Reconcile finds nothing", async () => {
      const cust = "cus_" + "x".repeat(116);
      const w = new RealLedgerWorld(ledgerHarness.client(KEYS.internal));
      w.customers.set(cust, { customerId: cust, currency: "USD", timeZone: "UTC", billingAnchor: MAR });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_long", customerId: cust, planId: "plan_llm", planVersion: 1, startedAt: MAR, seats: [] });
      // $2.0000025 of usage (a residue) and 8.25% tax: revenue, tax and residue legs
      w.buckets.push({ customerId: cust, chargeId: "llm_tokens", hourStart: new Date("2026-03-10T00:00:00Z"), quantity: 1n, priceNanos: 2_000_002_500n, unit: "USD", eventCount: 1n });
      const h = await harness(await open(), w, new Date("2026-04-01T00:10:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: cust, taxRateBps: 825 } });
      const inv = (await h.client.closePeriod({ items: [{ customerId: cust, subscriptionId: "sub_long", periodStart: timestampFromDate(MAR) }] })).results[0]!.invoice!;
      const fin = (await h.client.finalizeInvoice({ invoiceId: inv.id })).invoice!;
      expect(fin.status).toBe(InvoiceStatus.FINALIZED);
      expect(fin.ledgerTransferIds).toHaveLength(3);
      const ledger = ledgerHarness.client();
      const found = (await ledger.lookupTransfers({ ids: fin.ledgerTransferIds })).transfers.map((t) => t.id);
      expect(found.sort()).toEqual([...fin.ledgerTransferIds].sort());
      const a = accounts(cust, "USD");
      expect(a.receivable.length).toBeLessThanOrEqual(128);
      expect(a.receivable).toMatch(/^acct_inv_recv_cus_x+\.[0-9a-f]{40}$/);
      expect(await debitBalance(ledger, a.receivable)).toBe(fin.totals!.amountDueNanos); // $2.00 + $0.17 tax
      expect(await debitBalance(ledger, a.residue)).toBe(fin.lines.reduce((s, l) => s + l.residueOutNanos - l.residueInNanos, 0n));
      expect((await h.client.reconcile({ customerId: cust })).differences).toEqual([]);
      await h.client.markInvoicePaid({ invoiceId: fin.id, paymentId: "pay_long" });
      expect(await debitBalance(ledger, a.receivable)).toBe(0n);
      expect((await h.client.reconcile({ customerId: cust })).differences).toEqual([]);
      expect((await ledger.verify({})).ok).toBe(true);
    });

    it("keeps the account ids of customers whose ids fit as they were", () => {
      expect(accounts("cus_1", "USD")).toEqual({
        receivable: "acct_inv_recv_cus_1_USD",
        residue: "acct_inv_residue_cus_1_USD",
        cash: "acct_inv_cash_USD",
        tax: "acct_inv_tax_USD",
        revenue: "acct_inv_revenue_USD",
      });
      const fits = "cus_" + "y".repeat(103); // acct_inv_residue_<107 chars>_USD: 128 characters
      expect(accounts(fits, "USD").residue).toBe(`acct_inv_residue_${fits}_USD`);
    });
  });
}
