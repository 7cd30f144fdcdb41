/**
 * How wallet movements become ledger money (the chart of accounts used by the wallet; see
 * README.md "Ledger mapping"). Pure: builds account and transfer descriptions; the service posts
 * them through the ledger's Connect client. Transfer ids derive from the caller's id, so a replay
 * posts nothing twice (the ledger answers EXISTS).
 */
import { ledgerId } from "@nanobill/service-kit";
import type { GrantKind, Slice } from "./types.js";

/** ledgerId (long natural ids end in a hash) is shared with invoicing: libs/service-kit/src/ledger-id.ts. */
export { LEDGER_ID_CHARS_MAX, ledgerId } from "@nanobill/service-kit";

/**
 * Account codes, from the ledger's chart of accounts (apps/ledger/README.md): 2100 customer
 * prepaid wallet, 1100 customer receivable, 3000 credit issuance, 4000 revenue, 4100 breakage,
 * 5100 promotional credits expense.
 */
export const ACCOUNT_CODE = {
  RECEIVABLE: 1100,
  WALLET: 2100,
  ISSUANCE: 3000,
  REVENUE: 4000,
  BREAKAGE: 4100,
  PROMOTIONAL: 5100,
} as const;

/**
 * Transfer codes (the ledger's list: 10 purchase, 11 promotional grant, 20 usage consumption,
 * 21 hold, 30 expiry -> breakage; the wallet adds 12 allowance grant, 22 overdraft consumption,
 * 23 overdraft repayment).
 */
export const TRANSFER_CODE = {
  GRANT_PURCHASED: 10,
  GRANT_PROMOTIONAL: 11,
  GRANT_ALLOWANCE: 12,
  BURN: 20,
  HOLD: 21,
  OVERDRAFT_BURN: 22,
  OVERDRAFT_REPAY: 23,
  EXPIRY: 30,
} as const;

export interface PlannedAccount {
  id: string;
  unit: string;
  code: number;
  /** debits_must_not_exceed_credits (customer wallets). */
  noOverdraw: boolean;
  history: boolean;
  /** Shared with other services (revenue, breakage, ...): an existing one with other flags is accepted. */
  shared: boolean;
}

export interface PlannedTransfer {
  id: string;
  debit: string;
  credit: string;
  /** Decimal string of nanos (JSON-safe). "0" on a post means the whole pending amount. */
  amount: string;
  unit: string;
  code: number;
  linked?: boolean;
  pending?: boolean;
  post?: boolean;
  void?: boolean;
  pendingId?: string;
  timeoutSeconds?: number;
  refs?: Record<string, string>;
  /**
   * On a post: the plain transfer moving what the post would have (same accounts, amount, unit),
   * sent instead when the ledger answers PENDING_TRANSFER_EXPIRED (the capture committed in the
   * wallet before the hold's ledger timeout, the post reached the ledger after it: the pending
   * amount went back, so the burn is booked as a plain transfer and the books still agree).
   */
  late?: PlannedTransfer;
}

/** The ledger accounts one wallet moves money between. */
export interface WalletLedger {
  unit: string;
  kind: "credits" | "prepaid";
  /** 2100 acct_wallet:<customer>:<unit> (must not go negative). */
  wallet: string;
  /** 1100 acct_receivable:<customer>:<unit>: prepaid purchases to invoice, and overdraft. */
  receivable: string;
  revenue: string;
  breakage: string;
  promo: string;
  /** 3000 acct_issuance:<unit> (credit types only: where purchased credits come from). */
  issuance: string;
}

export function walletLedger(customerId: string, unit: string, kind: "credits" | "prepaid"): WalletLedger {
  return {
    unit,
    kind,
    wallet: ledgerId(`acct_wallet:${customerId}:${unit}`),
    receivable: ledgerId(`acct_receivable:${customerId}:${unit}`),
    revenue: `acct_revenue:${unit}`,
    breakage: `acct_breakage:${unit}`,
    promo: `acct_promo:${unit}`,
    issuance: `acct_issuance:${unit}`,
  };
}

/** The accounts one wallet needs (its own two and the tenant's per-unit ones); creating them again is a no-op. */
export function walletAccounts(l: WalletLedger): PlannedAccount[] {
  const a: PlannedAccount[] = [
    { id: l.revenue, unit: l.unit, code: ACCOUNT_CODE.REVENUE, noOverdraw: false, history: false, shared: true },
    { id: l.breakage, unit: l.unit, code: ACCOUNT_CODE.BREAKAGE, noOverdraw: false, history: false, shared: true },
    { id: l.promo, unit: l.unit, code: ACCOUNT_CODE.PROMOTIONAL, noOverdraw: false, history: false, shared: true },
    { id: l.receivable, unit: l.unit, code: ACCOUNT_CODE.RECEIVABLE, noOverdraw: false, history: false, shared: true },
    { id: l.wallet, unit: l.unit, code: ACCOUNT_CODE.WALLET, noOverdraw: true, history: true, shared: false },
  ];
  if (l.kind === "credits") a.push({ id: l.issuance, unit: l.unit, code: ACCOUNT_CODE.ISSUANCE, noOverdraw: false, history: false, shared: true });
  return a;
}

/** Marks every transfer but the last as linked (one chain: all or nothing). */
export function chain(ts: PlannedTransfer[]): PlannedTransfer[] {
  return ts.map((t, i) => ({ ...t, linked: i < ts.length - 1 }));
}

/** Where a grant's money comes from: purchases of money from the customer's receivable, purchases of credits from issuance, gifts and allowances from the promotional expense. */
export function grantFundingAccount(kind: GrantKind, l: WalletLedger): { account: string; code: number } {
  switch (kind) {
    case "purchased":
      return { account: l.kind === "prepaid" ? l.receivable : l.issuance, code: TRANSFER_CODE.GRANT_PURCHASED };
    case "promotional":
      return { account: l.promo, code: TRANSFER_CODE.GRANT_PROMOTIONAL };
    case "allowance":
    case "rollover":
      return { account: l.promo, code: TRANSFER_CODE.GRANT_ALLOWANCE };
  }
}

/** A grant: debit the funding account, credit the wallet; then repay overdraft first. */
export function grantTransfers(a: { grantId: string; walletId: string; l: WalletLedger; kind: GrantKind; amountNanos: bigint; repayNanos: bigint; invoiceId: string }): PlannedTransfer[] {
  const f = grantFundingAccount(a.kind, a.l);
  const unit = a.l.unit;
  const refs: Record<string, string> = { grant_id: a.grantId, wallet_id: a.walletId };
  if (a.invoiceId) refs.invoice_id = a.invoiceId;
  const ts: PlannedTransfer[] = [
    { id: ledgerId(`xfer_w:g:${a.grantId}`), debit: f.account, credit: a.l.wallet, amount: a.amountNanos.toString(), unit, code: f.code, refs },
  ];
  if (a.repayNanos > 0n) {
    ts.push({ id: ledgerId(`xfer_w:r:${a.grantId}`), debit: a.l.wallet, credit: a.l.receivable, amount: a.repayNanos.toString(), unit, code: TRANSFER_CODE.OVERDRAFT_REPAY, refs });
  }
  return chain(ts);
}

/** A burn (Consume item): one transfer per grant slice, plus the overdraft part; linked. */
export function burnTransfers(a: { sourceId: string; l: WalletLedger; slices: Slice[]; overdraftNanos: bigint; eventId: string; prefix?: string }): PlannedTransfer[] {
  const unit = a.l.unit;
  const p = a.prefix ?? "b";
  const ts: PlannedTransfer[] = a.slices.map((s, i) => ({
    id: ledgerId(`xfer_w:${p}:${a.sourceId}:${i}`),
    debit: a.l.wallet,
    credit: a.l.revenue,
    amount: s.amountNanos.toString(),
    unit,
    code: TRANSFER_CODE.BURN,
    refs: refsOf({ grant_id: s.grantId, event_id: a.eventId, source_id: a.sourceId }),
  }));
  if (a.overdraftNanos > 0n) {
    ts.push({ id: ledgerId(`xfer_w:${p}:${a.sourceId}:od`), debit: a.l.receivable, credit: a.l.revenue, amount: a.overdraftNanos.toString(), unit, code: TRANSFER_CODE.OVERDRAFT_BURN, refs: refsOf({ event_id: a.eventId, source_id: a.sourceId }) });
  }
  return chain(ts);
}

/** Transfer id of a hold's pending slice i ("od" for the overdraft part). */
export const holdTransferId = (holdId: string, i: number | "od") => ledgerId(`xfer_w:h:${holdId}:${i}`);
/** Transfer id of a burn slice (prefix b: Consume, c: capture overage). */
export const burnTransferId = (prefix: string, sourceId: string, i: number | "od") => ledgerId(`xfer_w:${prefix}:${sourceId}:${i}`);
export const postTransferId = (holdId: string, i: number | "od") => ledgerId(`xfer_w:p:${holdId}:${i}`);
export const voidTransferId = (holdId: string, i: number | "od") => ledgerId(`xfer_w:v:${holdId}:${i}`);
/** Transfer id of the plain transfer that books a capture slice whose post came after the pending timeout. */
export const latePostTransferId = (holdId: string, i: number | "od") => ledgerId(`xfer_w:p:${holdId}:${i}:late`);
export const grantTransferId = (grantId: string) => ledgerId(`xfer_w:g:${grantId}`);

/** A hold: one pending transfer per slice (and the overdraft part), linked, with a timeout. */
export function holdTransfers(a: { holdId: string; l: WalletLedger; slices: Slice[]; overdraftNanos: bigint; timeoutSeconds: number }): PlannedTransfer[] {
  const unit = a.l.unit;
  const ts: PlannedTransfer[] = a.slices.map((s, i) => ({
    id: holdTransferId(a.holdId, i),
    debit: a.l.wallet,
    credit: a.l.revenue,
    amount: s.amountNanos.toString(),
    unit,
    code: TRANSFER_CODE.HOLD,
    pending: true,
    timeoutSeconds: a.timeoutSeconds,
    refs: { grant_id: s.grantId, hold_id: a.holdId },
  }));
  if (a.overdraftNanos > 0n) {
    ts.push({ id: holdTransferId(a.holdId, "od"), debit: a.l.receivable, credit: a.l.revenue, amount: a.overdraftNanos.toString(), unit, code: TRANSFER_CODE.HOLD, pending: true, timeoutSeconds: a.timeoutSeconds, refs: { hold_id: a.holdId } });
  }
  return chain(ts);
}

/**
 * Resolving a hold: per pending slice, post the burned part (> 0) or void it (0). Post/void ids
 * derive from the hold id, so a replayed capture or release posts nothing twice.
 */
export function resolveHoldTransfers(a: { holdId: string; burn: Slice[]; overdraftHeldNanos: bigint; overdraftBurnNanos: bigint; l?: WalletLedger }): PlannedTransfer[] {
  const ts: PlannedTransfer[] = [];
  const one = (i: number | "od", burnNanos: bigint) => {
    const pendingId = holdTransferId(a.holdId, i);
    if (burnNanos > 0n) {
      // The accounts of the pending transfer (holdTransfers): wallet -> revenue, or receivable -> revenue for the overdraft part.
      const late: PlannedTransfer | undefined = a.l
        ? {
            id: latePostTransferId(a.holdId, i),
            debit: i === "od" ? a.l.receivable : a.l.wallet,
            credit: a.l.revenue,
            amount: burnNanos.toString(),
            unit: a.l.unit,
            code: i === "od" ? TRANSFER_CODE.OVERDRAFT_BURN : TRANSFER_CODE.BURN,
            refs: refsOf({ grant_id: i === "od" ? "" : (a.burn[i]?.grantId ?? ""), hold_id: a.holdId }),
          }
        : undefined;
      ts.push({ id: postTransferId(a.holdId, i), debit: "", credit: "", amount: burnNanos.toString(), unit: "", code: 0, post: true, pendingId, ...(late ? { late } : {}) });
    }
    else ts.push({ id: voidTransferId(a.holdId, i), debit: "", credit: "", amount: "0", unit: "", code: 0, void: true, pendingId });
  };
  a.burn.forEach((s, i) => one(i, s.amountNanos));
  if (a.overdraftHeldNanos > 0n) one("od", a.overdraftBurnNanos);
  // Not linked: each pending slice resolves on its own (a void of an already expired slice must
  // not stop the others).
  return ts;
}

/**
 * Transfer id of a breakage: `xfer_w:x:<grant>` for a grant's expiry or rollover remainder; for what
 * a hold gives back after its grant expired, `xfer_w:xh:<length of grant id>:<grant>:<hold>` (both
 * caller ids may contain ':', so the length keeps every (grant, hold) pair apart, and the `xh`
 * prefix keeps them apart from a grant's own breakage — `xfer_w:x:<grant>:<hold>`, the scheme of
 * rows written before, collided with the breakage of a grant named `<grant>:<hold>`).
 */
export const expiryTransferId = (grantId: string, holdId?: string) =>
  ledgerId(holdId === undefined ? `xfer_w:x:${grantId}` : `xfer_w:xh:${grantId.length}:${grantId}:${holdId}`);

/** Expiry: the remainder moves from the wallet to breakage. */
export function expiryTransfer(a: { grantId: string; l: WalletLedger; amountNanos: bigint; holdId?: string }): PlannedTransfer {
  return {
    id: expiryTransferId(a.grantId, a.holdId),
    debit: a.l.wallet,
    credit: a.l.breakage,
    amount: a.amountNanos.toString(),
    unit: a.l.unit,
    code: TRANSFER_CODE.EXPIRY,
    refs: { grant_id: a.grantId },
  };
}

function refsOf(r: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(r)) if (v) out[k] = v;
  return out;
}
