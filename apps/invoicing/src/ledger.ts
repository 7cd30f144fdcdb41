/**
 * What invoicing posts to the ledger (chart of accounts below), computed from an invoice's
 * state, with deterministic transfer ids so every post is idempotent and can be retried.
 *
 *   1100 acct_inv_recv_<customer>_<unit>     accounts receivable of the customer
 *   1150 acct_inv_residue_<customer>_<unit>  rounding residue carried (recognized, not yet billed)
 *   1000 acct_inv_cash_<unit>                payments received
 *   2300 acct_inv_tax_<unit>                 tax payable
 *   4000 acct_inv_revenue_<unit>             invoiced revenue
 *   1100 acct_receivable:<customer>:<unit>   the credit wallet's receivable (prepaid purchases to
 *                                            invoice; the wallet's account, not created here first)
 * finalize: receivable <- revenue (amount due - tax - credit balance lines - prepaid top-ups),
 *           receivable <- tax (tax),
 *           receivable <- wallet receivable (prepaid top-ups: `_topup`),
 *           residue <- revenue (residue carried out - residue carried in; either sign)
 *           A credit balance carried to the next invoice stays in the receivable (a credit there)
 *           until an invoice applies it: its carried_forward lines are not revenue, so the
 *           receivable's balance is what the customer owes (negative: is owed) across invoices.
 *           A prepaid-money auto top-up billed by the invoice is not revenue either: the wallet
 *           booked it (wallet receivable -> wallet) and books revenue when the money burns; the
 *           invoice takes the claim over from the wallet's receivable into its own.
 * paid:     cash <- receivable (amount due)
 * void:     the finalize legs but the residue's reversed (a paid invoice's receivable then shows
 *           the credit owed; a voided top-up is owed on the wallet's receivable again)
 */
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  CreateAccountResult,
  CreateTransferResult,
  NewAccountSchema,
  NewTransferSchema,
  type LedgerService,
  type NewTransfer,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { forTenant, ledgerId } from "@nanobill/service-kit";
import { CHARGE_ID_CREDIT_BALANCE } from "./domain/assemble.js";
import type { StoredInvoice } from "./store/invoice-store.js";
import { UPSTREAM_TIMEOUT_MS } from "./limits.js";

export const ACCOUNT_CODES = { cash: 1000, receivable: 1100, residue: 1150, tax: 2300, revenue: 4000 } as const;
export const TRANSFER_CODES = { invoice: 300, payment: 310, void: 320 } as const;

export interface Leg {
  id: string;
  debit: string;
  credit: string;
  amountNanos: bigint;
  code: number;
}

/**
 * accounts: the ledger accounts of a customer's invoices in one unit. Ids are mapped by the
 * shared ledgerId (as the wallet maps its own): an id that fits the ledger's 128 characters is
 * used as written; a longer one (a customer id of 108 characters or more) ends in a hash.
 */
export function accounts(customerId: string, unit: string) {
  return {
    receivable: ledgerId(`acct_inv_recv_${customerId}_${unit}`),
    residue: ledgerId(`acct_inv_residue_${customerId}_${unit}`),
    cash: ledgerId(`acct_inv_cash_${unit}`),
    tax: ledgerId(`acct_inv_tax_${unit}`),
    revenue: ledgerId(`acct_inv_revenue_${unit}`),
    /** The credit wallet's receivable (apps/credit-wallet domain/ledger-plan.ts walletLedger). */
    walletReceivable: ledgerId(`acct_receivable:${customerId}:${unit}`),
  };
}

function leg(id: string, debit: string, credit: string, amount: bigint, code: number): Leg[] {
  if (amount === 0n) return [];
  return amount > 0n ? [{ id, debit, credit, amountNanos: amount, code }] : [{ id, debit: credit, credit: debit, amountNanos: -amount, code }];
}

/** creditBalanceNanos: the invoice's credit-balance lines (carried out: +, applied: -). */
export function creditBalanceNanos(inv: Pick<StoredInvoice, "lines">): bigint {
  let n = 0n;
  for (const l of inv.lines) if (l.kind === "carried_forward" && l.chargeId === CHARGE_ID_CREDIT_BALANCE) n += l.roundedAmountNanos;
  return n;
}

/**
 * prepaidTopUpNanos: the invoice's auto top-ups of prepaid money in its own unit, as booked (each
 * line's exact amount in whole nanos: rounded + residue out - residue in, so the `_top_up` residue
 * carried stays out of revenue too). A prepaid wallet's top-up at cost basis 1 books exactly the
 * amount the wallet put on its receivable. Top-ups of credits are not in it: the wallet books
 * those from credit issuance in the credit unit, and the invoice's money is their revenue.
 */
export function prepaidTopUpNanos(inv: Pick<StoredInvoice, "lines" | "unit">): bigint {
  let n = 0n;
  for (const l of inv.lines) if (l.kind === "one_off" && l.topUpUnit === inv.unit) n += l.amountNanos;
  return n;
}

export function finalizeLegs(inv: StoredInvoice): Leg[] {
  const a = accounts(inv.customerId, inv.unit);
  const t = inv.totals;
  const topUps = prepaidTopUpNanos(inv);
  return [
    ...leg(`xfer_${inv.id}_rev`, a.receivable, a.revenue, t.amountDueNanos - t.taxNanos - creditBalanceNanos(inv) - topUps, TRANSFER_CODES.invoice),
    ...leg(`xfer_${inv.id}_tax`, a.receivable, a.tax, t.taxNanos, TRANSFER_CODES.invoice),
    ...leg(`xfer_${inv.id}_topup`, a.receivable, a.walletReceivable, topUps, TRANSFER_CODES.invoice),
    ...leg(`xfer_${inv.id}_res`, a.residue, a.revenue, inv.residueDeltaNanos, TRANSFER_CODES.invoice),
  ];
}

export function paidLegs(inv: StoredInvoice): Leg[] {
  const a = accounts(inv.customerId, inv.unit);
  return leg(`xfer_${inv.id}_paid`, a.cash, a.receivable, inv.totals.amountDueNanos, TRANSFER_CODES.payment);
}

export function voidLegs(inv: StoredInvoice): Leg[] {
  return finalizeLegs(inv)
    .filter((l) => !l.id.endsWith("_res"))
    .map((l) => ({ ...l, id: l.id.replace(/^xfer_(.*)_(rev|tax|topup)$/, "xfer_$1_void_$2"), debit: l.credit, credit: l.debit, code: TRANSFER_CODES.void }));
}

/** allLegs: every leg the invoice's history calls for, by id. */
export function allLegs(inv: StoredInvoice): Map<string, Leg> {
  const m = new Map<string, Leg>();
  for (const l of [...finalizeLegs(inv), ...paidLegs(inv), ...voidLegs(inv)]) m.set(l.id, l);
  return m;
}

export interface LedgerPoster {
  /** post: posts the invoice's recorded transfer ids; true when every one is in the ledger. */
  post(tenant: string, inv: StoredInvoice): Promise<{ ok: boolean; detail: string }>;
  lookup(tenant: string, ids: string[]): Promise<Map<string, bigint>>;
}

export function createLedgerPoster(ledger: Client<typeof LedgerService>): LedgerPoster {
  return {
    async post(tenant, inv) {
      const legs = allLegs(inv);
      const todo = inv.ledgerTransferIds.map((id) => legs.get(id)).filter((l): l is Leg => l !== undefined);
      if (todo.length === 0) return { ok: true, detail: "" };
      const a = accounts(inv.customerId, inv.unit);
      const codes: Record<string, number> = {
        [a.receivable]: ACCOUNT_CODES.receivable,
        [a.residue]: ACCOUNT_CODES.residue,
        [a.cash]: ACCOUNT_CODES.cash,
        [a.tax]: ACCOUNT_CODES.tax,
        [a.revenue]: ACCOUNT_CODES.revenue,
        [a.walletReceivable]: ACCOUNT_CODES.receivable,
      };
      const used = [...new Set(todo.flatMap((l) => [l.debit, l.credit]))].sort();
      // the wallet's receivable exists once the wallet does; it is created here only as the wallet
      // creates it (code 1100, no flags, no metadata), so either order answers EXISTS
      const accRes = await ledger.createAccounts(
        {
          accounts: used.map((id) =>
            create(NewAccountSchema, { id, unit: inv.unit, code: codes[id] ?? ACCOUNT_CODES.revenue, metadata: id === a.walletReceivable ? {} : { owner: "invoicing" } }),
          ),
        },
        forTenant(tenant, { timeoutMs: UPSTREAM_TIMEOUT_MS }),
      );
      const badAcc = accRes.results.filter((r) => r.result !== CreateAccountResult.OK && r.result !== CreateAccountResult.EXISTS);
      if (badAcc.length > 0) return { ok: false, detail: badAcc.map((r) => `${r.id}: ${CreateAccountResult[r.result]}`).join("; ") };
      const transfers: NewTransfer[] = todo.map((l) =>
        create(NewTransferSchema, {
          id: l.id,
          debitAccountId: l.debit,
          creditAccountId: l.credit,
          amountNanos: l.amountNanos,
          unit: inv.unit,
          code: l.code,
          references: { invoice_id: inv.id, customer_id: inv.customerId },
        }),
      );
      const res = await ledger.createTransfers({ transfers }, forTenant(tenant, { timeoutMs: UPSTREAM_TIMEOUT_MS }));
      const bad = res.results.filter((r) => r.result !== CreateTransferResult.OK && r.result !== CreateTransferResult.EXISTS);
      return bad.length === 0 ? { ok: true, detail: "" } : { ok: false, detail: bad.map((r) => `${r.id}: ${CreateTransferResult[r.result]}`).join("; ") };
    },

    async lookup(tenant, ids) {
      const out = new Map<string, bigint>();
      if (ids.length === 0) return out;
      const r = await ledger.lookupTransfers({ ids }, forTenant(tenant, { timeoutMs: UPSTREAM_TIMEOUT_MS }));
      for (const t of r.transfers) out.set(t.id, t.amountNanos);
      return out;
    },
  };
}
