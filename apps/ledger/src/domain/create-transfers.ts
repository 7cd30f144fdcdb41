/**
 * CreateTransfers semantics (pure), after TigerBeetle's documented model: validation and
 * idempotency by precedence, plain / pending / post / void / balancing transfers, linked chains,
 * pending timeouts (expiry). Works on a WorkingSet; every change is journaled so that a failed
 * chain is rolled back.
 */
import { INT64_MAX, isUnitCode } from "@nanobill/money";
import { REFERENCES_ENTRIES_MAX, TRANSFER_AMOUNT_NANOS_MAX } from "../limits.js";
import { applyChained } from "./create-accounts.js";
import { checkImported } from "./imported.js";
import type { LedgerClock } from "./clock.js";
import { TRANSIENT_TRANSFER_RESULTS, type CreateTransferItemResult, type CreateTransferResult } from "./results.js";
import type { NewTransfer, Transfer, TransferFlags } from "./types.js";
import { isValidId, isValidSmallMap, sameMap } from "./validate.js";
import type { WorkingSet } from "./working-set.js";

const US_PER_SECOND = 1_000_000n;

function fail(result: CreateTransferResult, id: string): CreateTransferItemResult {
  return { result, id, amountNanos: 0n, timestampUs: null };
}

function sameTransferFlags(a: TransferFlags, b: TransferFlags): boolean {
  return (
    a.linked === b.linked &&
    a.pending === b.pending &&
    a.postPendingTransfer === b.postPendingTransfer &&
    a.voidPendingTransfer === b.voidPendingTransfer &&
    a.balancingDebit === b.balancingDebit &&
    a.balancingCredit === b.balancingCredit &&
    a.closingDebit === b.closingDebit &&
    a.closingCredit === b.closingCredit &&
    a.imported === b.imported
  );
}

/**
 * The idempotency comparison of a new transfer with the stored one of the same id. Post/void
 * items may leave debit/credit account, unit and code empty: an empty field matches the stored
 * one, a given one must equal it.
 */
export function compareExisting(e: Transfer, t: NewTransfer): CreateTransferResult {
  const pv = t.flags.postPendingTransfer || t.flags.voidPendingTransfer;
  if (!sameTransferFlags(e.flags, t.flags)) return "exists_with_different_flags";
  if (e.pendingId !== t.pendingId) return "exists_with_different_pending_id";
  if (e.timeoutSeconds !== t.timeoutSeconds) return "exists_with_different_timeout";
  if (!(pv && t.debitAccountId === "") && e.debitAccountId !== t.debitAccountId) return "exists_with_different_debit_account_id";
  if (!(pv && t.creditAccountId === "") && e.creditAccountId !== t.creditAccountId) return "exists_with_different_credit_account_id";
  if (e.amountRequestedNanos !== t.amountNanos) return "exists_with_different_amount";
  if (!sameMap(e.references, t.references)) return "exists_with_different_references";
  if (!(pv && t.unit === "") && e.unit !== t.unit) return "exists_with_different_unit";
  if (!(pv && t.code === 0) && e.code !== t.code) return "exists_with_different_code";
  return "exists";
}

/** The request-shape checks that need no state, by precedence (after id and exists). */
export function checkShape(t: NewTransfer): CreateTransferResult | null {
  const f = t.flags;
  const pv = f.postPendingTransfer || f.voidPendingTransfer;
  const phases = (f.pending ? 1 : 0) + (f.postPendingTransfer ? 1 : 0) + (f.voidPendingTransfer ? 1 : 0);
  if (phases > 1 || (pv && (f.balancingDebit || f.balancingCredit || f.closingDebit || f.closingCredit))) return "flags_are_mutually_exclusive";
  if ((!pv || t.debitAccountId !== "") && !isValidId(t.debitAccountId)) return "debit_account_id_invalid";
  if ((!pv || t.creditAccountId !== "") && !isValidId(t.creditAccountId)) return "credit_account_id_invalid";
  if (t.debitAccountId !== "" && t.debitAccountId === t.creditAccountId) return "accounts_must_be_different";
  if (!pv && t.pendingId !== "") return "pending_id_must_be_empty";
  if (pv && !isValidId(t.pendingId)) return "pending_id_invalid";
  if (pv && t.pendingId === t.id) return "pending_id_must_be_different";
  if (!f.pending && t.timeoutSeconds !== 0) return "timeout_reserved_for_pending_transfer";
  if (!f.pending && (f.closingDebit || f.closingCredit)) return "closing_transfer_must_be_pending";
  if ((!pv || t.unit !== "") && !isUnitCode(t.unit)) return "unit_invalid";
  if (!pv && t.code === 0) return "code_must_not_be_zero";
  if (t.amountNanos < 0n) return "amount_must_not_be_negative";
  if (!pv && t.amountNanos === 0n) return "amount_must_not_be_zero";
  if (t.amountNanos > TRANSFER_AMOUNT_NANOS_MAX) return "amount_exceeds_max";
  if (!isValidSmallMap(t.references, REFERENCES_ENTRIES_MAX)) return "references_invalid";
  return null;
}

/** Applies one transfer (no chain logic) and returns its result. */
export function applyTransfer(ws: WorkingSet, t: NewTransfer, clock: LedgerClock, batchImported = false): CreateTransferItemResult {
  const imp = checkImported(t, batchImported, clock);
  if (imp) return fail(imp, t.id);
  if (!isValidId(t.id)) return fail("id_invalid", t.id);
  const e = ws.transfers.get(t.id);
  if (e) {
    const r = compareExisting(e, t);
    return r === "exists" ? { result: r, id: t.id, amountNanos: e.amountNanos, timestampUs: e.timestampUs } : fail(r, t.id);
  }
  if (ws.failedTransferIds.has(t.id)) return fail("id_already_failed", t.id);
  const shape = checkShape(t);
  if (shape) return fail(shape, t.id);
  if (t.flags.postPendingTransfer || t.flags.voidPendingTransfer) return applyPostOrVoid(ws, t, clock);

  const dr = ws.accounts.get(t.debitAccountId);
  if (!dr) return fail("debit_account_not_found", t.id);
  const cr = ws.accounts.get(t.creditAccountId);
  if (!cr) return fail("credit_account_not_found", t.id);
  if (dr.unit !== cr.unit) return fail("accounts_must_have_the_same_unit", t.id);
  if (t.unit !== dr.unit) return fail("transfer_must_have_the_same_unit_as_accounts", t.id);
  if (t.flags.imported) {
    // Timestamps are unique and strictly increasing across the whole ledger (accounts, transfers,
    // expiries), so an imported transfer must come after the last one handed out. That also puts
    // it after both accounts' creation; the two postdate checks keep TigerBeetle's order.
    if (t.timestampUs <= clock.last) return fail("imported_event_timestamp_must_not_regress", t.id);
    if (t.timestampUs <= dr.timestampUs) return fail("imported_event_timestamp_must_postdate_debit_account", t.id);
    if (t.timestampUs <= cr.timestampUs) return fail("imported_event_timestamp_must_postdate_credit_account", t.id);
    if (t.timeoutSeconds !== 0) return fail("imported_event_timeout_must_be_zero", t.id);
  }
  if (dr.flags.closed) return fail("debit_account_already_closed", t.id);
  if (cr.flags.closed) return fail("credit_account_already_closed", t.id);

  let amount = t.amountNanos;
  if (t.flags.balancingDebit) {
    const available = dr.creditsPostedNanos - dr.debitsPostedNanos - dr.debitsPendingNanos;
    amount = minBig(amount, available > 0n ? available : 0n);
  }
  if (t.flags.balancingCredit) {
    const available = cr.debitsPostedNanos - cr.creditsPostedNanos - cr.creditsPendingNanos;
    amount = minBig(amount, available > 0n ? available : 0n);
  }
  const pending = t.flags.pending;
  if (pending) {
    if (dr.debitsPendingNanos + amount > INT64_MAX) return fail("overflows_debits_pending", t.id);
    if (cr.creditsPendingNanos + amount > INT64_MAX) return fail("overflows_credits_pending", t.id);
  }
  // Checked for a pending transfer too (it may post), in TigerBeetle's order.
  if (dr.debitsPostedNanos + amount > INT64_MAX) return fail("overflows_debits_posted", t.id);
  if (cr.creditsPostedNanos + amount > INT64_MAX) return fail("overflows_credits_posted", t.id);
  if (dr.debitsPendingNanos + dr.debitsPostedNanos + amount > INT64_MAX) return fail("overflows_debits", t.id);
  if (cr.creditsPendingNanos + cr.creditsPostedNanos + amount > INT64_MAX) return fail("overflows_credits", t.id);
  // The timestamp this transfer gets if it succeeds (read once: checks and stamp agree).
  const at = t.flags.imported ? t.timestampUs : clock.peek();
  if (pending && t.timeoutSeconds > 0 && at + BigInt(t.timeoutSeconds) * US_PER_SECOND > INT64_MAX) {
    return fail("overflows_timeout", t.id);
  }
  // A balancing transfer that can move nothing fails, except a closing one: closing an account
  // with nothing left to sweep is a pending transfer of 0 (TigerBeetle 0.16 moves 0 there too).
  const closing = t.flags.closingDebit || t.flags.closingCredit;
  if (t.flags.balancingDebit && amount === 0n && !closing) return fail("exceeds_credits", t.id);
  if (t.flags.balancingCredit && amount === 0n && !closing) return fail("exceeds_debits", t.id);
  if (dr.flags.debitsMustNotExceedCredits && dr.debitsPendingNanos + dr.debitsPostedNanos + amount > dr.creditsPostedNanos) {
    return fail("exceeds_credits", t.id);
  }
  if (cr.flags.creditsMustNotExceedDebits && cr.creditsPendingNanos + cr.creditsPostedNanos + amount > cr.debitsPostedNanos) {
    return fail("exceeds_debits", t.id);
  }

  const ts = t.flags.imported ? clock.importAt(at) : clock.take(at);
  if (pending) {
    ws.changeBalances(dr.id, { debitsPendingNanos: amount }, ts);
    ws.changeBalances(cr.id, { creditsPendingNanos: amount }, ts);
  } else {
    ws.changeBalances(dr.id, { debitsPostedNanos: amount }, ts);
    ws.changeBalances(cr.id, { creditsPostedNanos: amount }, ts);
  }
  // Closing transfers are pending (checkShape): voiding them, or their expiry, reopens the account.
  if (t.flags.closingDebit) ws.setClosed(dr.id, true);
  if (t.flags.closingCredit) ws.setClosed(cr.id, true);
  ws.addTransfer({
    id: t.id,
    debitAccountId: dr.id,
    creditAccountId: cr.id,
    amountNanos: amount,
    amountRequestedNanos: t.amountNanos,
    unit: t.unit,
    pendingId: "",
    timeoutSeconds: t.timeoutSeconds,
    code: t.code,
    flags: t.flags,
    references: t.references,
    timestampUs: ts,
    expiresAtUs: pending && t.timeoutSeconds > 0 ? ts + BigInt(t.timeoutSeconds) * US_PER_SECOND : null,
  });
  return { result: "ok", id: t.id, amountNanos: amount, timestampUs: ts };
}

function applyPostOrVoid(ws: WorkingSet, t: NewTransfer, clock: LedgerClock): CreateTransferItemResult {
  const isPost = t.flags.postPendingTransfer;
  const p = ws.transfers.get(t.pendingId);
  if (!p) return fail("pending_transfer_not_found", t.id);
  if (!p.flags.pending) return fail("pending_transfer_not_pending", t.id);
  if (t.debitAccountId !== "" && t.debitAccountId !== p.debitAccountId) return fail("pending_transfer_has_different_debit_account_id", t.id);
  if (t.creditAccountId !== "" && t.creditAccountId !== p.creditAccountId) return fail("pending_transfer_has_different_credit_account_id", t.id);
  if (t.unit !== "" && t.unit !== p.unit) return fail("pending_transfer_has_different_unit", t.id);
  if (t.code !== 0 && t.code !== p.code) return fail("pending_transfer_has_different_code", t.id);
  // TigerBeetle 0.16: more than pending is exceeds_pending_transfer_amount for a post and a void;
  // a void of less than all of it (0 = all) is pending_transfer_has_different_amount.
  if (t.amountNanos > p.amountNanos) return fail("exceeds_pending_transfer_amount", t.id);
  if (!isPost && t.amountNanos !== 0n && t.amountNanos !== p.amountNanos) return fail("pending_transfer_has_different_amount", t.id);
  const status = ws.pending.get(p.id);
  if (!status) throw new Error(`ledger invariant: pending transfer ${p.id} has no status`);
  if (status.state === "posted") return fail("pending_transfer_already_posted", t.id);
  if (status.state === "voided") return fail("pending_transfer_already_voided", t.id);
  if (status.state === "expired") return fail("pending_transfer_expired", t.id);
  // The timestamp this item gets if it succeeds: TigerBeetle's expires_at <= timestamp is expired.
  const at = t.flags.imported ? t.timestampUs : clock.peek();
  if (status.expiresAtUs !== null && status.expiresAtUs <= at) {
    // Its timeout passed before the sweep reached it: expire it now (its own ledger event), unless
    // this item is imported (its timestamp is the caller's; the sweep expires the transfer).
    if (!t.flags.imported) expirePending(ws, p.id, clock, at);
    return fail("pending_transfer_expired", t.id);
  }
  if (t.flags.imported && t.timestampUs <= clock.last) return fail("imported_event_timestamp_must_not_regress", t.id);
  const dr = ws.accounts.get(p.debitAccountId);
  const cr = ws.accounts.get(p.creditAccountId);
  if (!dr || !cr) throw new Error(`ledger invariant: accounts of pending transfer ${p.id} not loaded`);
  // The only movement a closed account takes is the void of a pending transfer.
  if (dr.flags.closed && isPost) return fail("debit_account_already_closed", t.id);
  if (cr.flags.closed && isPost) return fail("credit_account_already_closed", t.id);
  const amount = isPost ? (t.amountNanos === 0n ? p.amountNanos : t.amountNanos) : p.amountNanos;
  if (isPost) {
    if (dr.debitsPostedNanos + amount > INT64_MAX) return fail("overflows_debits_posted", t.id);
    if (cr.creditsPostedNanos + amount > INT64_MAX) return fail("overflows_credits_posted", t.id);
  }
  const ts = t.flags.imported ? clock.importAt(at) : clock.take(at);
  ws.changeBalances(dr.id, { debitsPendingNanos: -p.amountNanos, debitsPostedNanos: isPost ? amount : 0n }, ts);
  ws.changeBalances(cr.id, { creditsPendingNanos: -p.amountNanos, creditsPostedNanos: isPost ? amount : 0n }, ts);
  ws.resolvePending(p.id, isPost ? "posted" : "voided", ts);
  if (!isPost) reopenClosedBy(ws, p);
  ws.addTransfer({
    id: t.id,
    debitAccountId: p.debitAccountId,
    creditAccountId: p.creditAccountId,
    amountNanos: amount,
    amountRequestedNanos: t.amountNanos,
    unit: p.unit,
    pendingId: p.id,
    timeoutSeconds: 0,
    code: t.code === 0 ? p.code : t.code,
    flags: t.flags,
    references: t.references,
    timestampUs: ts,
    expiresAtUs: null,
  });
  return { result: "ok", id: t.id, amountNanos: amount, timestampUs: ts };
}

/**
 * Expires one pending transfer: its amount leaves the pending balances of both accounts, its
 * state becomes expired, at `at`: the timestamp its expiry was checked against (clock.peek(),
 * nothing handed out since), so it is never stamped before its expires_at (a second read of a wall
 * clock stepped back could; review of 2026-11-30). Returns false when it is not pending.
 */
export function expirePending(ws: WorkingSet, id: string, clock: LedgerClock, at: bigint): boolean {
  const status = ws.pending.get(id);
  const p = ws.transfers.get(id);
  if (!status || !p || status.state !== "pending") return false;
  const ts = clock.take(at);
  ws.changeBalances(p.debitAccountId, { debitsPendingNanos: -p.amountNanos }, ts);
  ws.changeBalances(p.creditAccountId, { creditsPendingNanos: -p.amountNanos }, ts);
  ws.resolvePending(id, "expired", ts);
  reopenClosedBy(ws, p);
  return true;
}

/** Voiding or expiring a closing transfer reopens the account(s) it closed. */
function reopenClosedBy(ws: WorkingSet, p: Transfer): void {
  if (p.flags.closingDebit) ws.setClosed(p.debitAccountId, false);
  if (p.flags.closingCredit) ws.setClosed(p.creditAccountId, false);
}

/** Expires every given pending transfer whose timeout has passed (the expiry sweep). Returns how many. */
export function expireDue(ws: WorkingSet, ids: readonly string[], clock: LedgerClock): number {
  let n = 0;
  for (const id of ids) {
    const s = ws.pending.get(id);
    const at = clock.peek();
    if (s && s.state === "pending" && s.expiresAtUs !== null && s.expiresAtUs <= at) {
      if (expirePending(ws, id, clock, at)) n++;
    }
  }
  ws.commit();
  return n;
}

/** Applies a batch in order (linked chains all or nothing); one result per item. */
export function createTransfers(ws: WorkingSet, items: readonly NewTransfer[], clock: LedgerClock): CreateTransferItemResult[] {
  // The first item decides whether the request imports history (TigerBeetle's rule).
  const batchImported = items.length > 0 && items[0]!.flags.imported;
  return applyChained(
    items,
    (t) => t.flags.linked,
    (t) => {
      const r = applyTransfer(ws, t, clock, batchImported);
      // A transient failure spends the id, even when its chain is rolled back (TigerBeetle 0.16).
      if (TRANSIENT_TRANSFER_RESULTS.has(r.result)) ws.addFailedTransferId({ id: t.id, result: r.result, atUs: clock.peek() });
      return r;
    },
    ws,
    (id, result) => fail(result, id),
    (t) => t.id,
  );
}

function minBig(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/**
 * The ids a batch needs loaded before it is applied: the transfers it names (its own ids, for
 * idempotency, and pending ids) and the accounts it names directly. Accounts of referenced
 * pending transfers are added by the store once those are loaded.
 */
export function referencedIds(items: readonly NewTransfer[]): { transferIds: Set<string>; accountIds: Set<string> } {
  const transferIds = new Set<string>();
  const accountIds = new Set<string>();
  for (const t of items) {
    if (t.id) transferIds.add(t.id);
    if (t.pendingId) transferIds.add(t.pendingId);
    if (t.debitAccountId) accountIds.add(t.debitAccountId);
    if (t.creditAccountId) accountIds.add(t.creditAccountId);
  }
  return { transferIds, accountIds };
}
