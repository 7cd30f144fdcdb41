/**
 * Invoicing's ledger postings against the real ledger service (PGlite and PostgreSQL), rating and
 * the wallet faked (the wallet's own transfers posted as the wallet posts them): account ids the
 * ledger accepts for every customer id rating accepts; a prepaid-money auto top-up billed by an
 * invoice is revenue once (when the wallet burns it), and its wallet receivable is cleared.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { testBackends } from "@nanobill/db";
import type { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { create } from "@bufbuild/protobuf";
import { AccountFlagsSchema, CreateAccountResult, CreateTransferResult } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { InvoiceStatus, LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { walletAccounts, walletLedger } from "../../credit-wallet/src/domain/ledger-plan.js";
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

    it("bills a prepaid-money auto top-up without counting it as revenue again: the invoice takes the claim over from the wallet's receivable; paid clears it; void gives it back", async () => {
      const w = new RealLedgerWorld(ledgerHarness.client(KEYS.internal));
      const ledger = ledgerHarness.client();
      const cust = "cus_topup";
      w.customers.set(cust, { customerId: cust, currency: "USD", timeZone: "UTC", billingAnchor: MAR });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_t", customerId: cust, planId: "plan_llm", planVersion: 1, startedAt: MAR, seats: [] });
      // the wallet, as it books (apps/credit-wallet README "Ledger mapping"): a $2 auto top-up
      // (wallet receivable -> wallet) and a $0.60 burn of it (wallet -> revenue)
      const wl = walletLedger(cust, "USD", "prepaid");
      const accs = await ledger.createAccounts({
        accounts: walletAccounts(wl).map((a) => ({ id: a.id, unit: a.unit, code: a.code, flags: create(AccountFlagsSchema, { debitsMustNotExceedCredits: a.noOverdraw, history: a.history }) })),
      });
      expect(accs.results.map((r) => r.result)).toEqual(accs.results.map(() => CreateAccountResult.OK));
      const moved = await ledger.createTransfers({
        transfers: [
          { id: "xfer_w:g:wal_t:topup:1", debitAccountId: wl.receivable, creditAccountId: wl.wallet, amountNanos: 2n * USD, unit: "USD", code: 10 },
          { id: "xfer_w:b:evt_1:0", debitAccountId: wl.wallet, creditAccountId: wl.revenue, amountNanos: 600_000_000n, unit: "USD", code: 20 },
        ],
      });
      expect(moved.results.map((r) => r.result)).toEqual([CreateTransferResult.OK, CreateTransferResult.OK]);
      w.buckets.push({ customerId: cust, chargeId: "llm_tokens", hourStart: new Date("2026-03-10T00:00:00Z"), quantity: 1n, priceNanos: 600_000_000n, unit: "USD", eventCount: 1n });
      w.consumption.push({ customerId: cust, unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-03-10T00:30:00Z"), consumedNanos: 600_000_000n });
      w.topUps.push(
        { customerId: cust, walletId: "wal_t", grantId: "wal_t:topup:1", unit: "USD", amountNanos: 2n * USD, at: new Date("2026-03-10T00:30:00Z"), costBasis: "1", costCurrency: "USD" },
        // credits bought for money: the wallet books them from issuance in the credit unit, so the
        // invoice's money is their only revenue (no wallet receivable to clear)
        { customerId: cust, walletId: "wal_cr", grantId: "wal_cr:topup:1", unit: "cr_tokens", amountNanos: 100n * USD, at: new Date("2026-03-11T00:00:00Z"), costBasis: "0.01", costCurrency: "USD" },
      );
      const h = await harness(await open(), w, new Date("2026-04-01T00:10:00Z"));
      const inv = (await h.client.closePeriod({ items: [{ customerId: cust, subscriptionId: "sub_t", periodStart: timestampFromDate(MAR) }] })).results[0]!.invoice!;
      // usage $0.60 + top-ups $2 + $1 - credits applied $0.60 = $3 due
      expect(inv.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.roundedAmountNanos])).toEqual([["wal_t:topup:1", 2n * USD], ["wal_cr:topup:1", 1n * USD]]);
      expect(inv.totals!.amountDueNanos).toBe(3n * USD);
      const a = accounts(cust, "USD");
      // the tenant's per-unit accounts are shared with the other tests of the suite: their movements count from here
      const revenue0 = await debitBalance(ledger, a.revenue);
      const cash0 = await debitBalance(ledger, a.cash);
      const fin = (await h.client.finalizeInvoice({ invoiceId: inv.id })).invoice!;
      expect(fin.ledgerTransferIds).toEqual([`xfer_${inv.id}_rev`, `xfer_${inv.id}_topup`]);
      expect(a.walletReceivable).toBe(wl.receivable);
      // revenue: $0.60 of usage (the wallet's burn) + $1 of credits sold; the $2 top-up is not revenue
      expect(-(await debitBalance(ledger, wl.revenue)) - (await debitBalance(ledger, a.revenue) - revenue0)).toBe(1_600_000_000n);
      expect(await debitBalance(ledger, wl.receivable)).toBe(0n); // the invoice took the $2 claim over
      expect(await debitBalance(ledger, a.receivable)).toBe(3n * USD);
      expect((await h.client.reconcile({ customerId: cust })).differences).toEqual([]);
      await h.client.markInvoicePaid({ invoiceId: fin.id, paymentId: "pay_t" });
      expect(await debitBalance(ledger, a.receivable)).toBe(0n);
      expect(await debitBalance(ledger, a.cash) - cash0).toBe(3n * USD);
      expect((await h.client.reconcile({ customerId: cust })).differences).toEqual([]);
      // void (credit note): the $3 is owed back on the invoice's receivable, the $2 top-up is unbilled
      // again on the wallet's receivable, the $1 of credits sold is no longer revenue
      const voided = (await h.client.voidInvoice({ invoiceId: fin.id, reason: "re-issue", creditNoteId: "cn_t" })).invoice!;
      expect(voided.ledgerTransferIds).toContain(`xfer_${inv.id}_void_topup`);
      expect(await debitBalance(ledger, a.receivable)).toBe(-3n * USD);
      expect(await debitBalance(ledger, wl.receivable)).toBe(2n * USD);
      expect(await debitBalance(ledger, a.revenue)).toBe(revenue0);
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
        walletReceivable: "acct_receivable:cus_1:USD",
      });
      const fits = "cus_" + "y".repeat(103); // acct_inv_residue_<107 chars>_USD: 128 characters
      expect(accounts(fits, "USD").residue).toBe(`acct_inv_residue_${fits}_USD`);
    });
  });
}
