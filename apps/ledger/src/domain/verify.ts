/** The ledger's invariants as one pure check over accounts and the sums of their transfers. */
import { VERIFY_VIOLATIONS_MAX } from "../limits.js";
import type { Account, Balances } from "./types.js";

export interface UnitTotals extends Balances {
  unit: string;
}

export interface VerifyReport {
  ok: boolean;
  violations: string[];
  units: UnitTotals[];
  accountsChecked: number;
  transfersChecked: number;
}

const ZERO: Balances = { debitsPendingNanos: 0n, debitsPostedNanos: 0n, creditsPendingNanos: 0n, creditsPostedNanos: 0n };

/**
 * Checks: (1) every stored balance equals the sum of its transfers (sums: per account, posted from
 * plain and post transfers, pending from pending transfers still pending); (2) no constrained
 * account breaks its flag; (3) per unit, debits == credits, pending and posted.
 */
export function verifyLedger(accounts: Iterable<Account>, sums: ReadonlyMap<string, Balances>, transfersChecked: number): VerifyReport {
  const violations: string[] = [];
  const add = (v: string) => {
    if (violations.length < VERIFY_VIOLATIONS_MAX) violations.push(v);
  };
  const units = new Map<string, UnitTotals>();
  let accountsChecked = 0;
  const seen = new Set<string>();
  for (const a of accounts) {
    accountsChecked++;
    seen.add(a.id);
    const s = sums.get(a.id) ?? ZERO;
    for (const k of ["debitsPendingNanos", "debitsPostedNanos", "creditsPendingNanos", "creditsPostedNanos"] as const) {
      if (a[k] !== s[k]) add(`account ${a.id}: stored ${k} ${a[k]} != sum of transfers ${s[k]}`);
      if (a[k] < 0n) add(`account ${a.id}: ${k} ${a[k]} is negative`);
    }
    if (a.flags.debitsMustNotExceedCredits && a.debitsPendingNanos + a.debitsPostedNanos > a.creditsPostedNanos) {
      add(`account ${a.id}: debits ${a.debitsPendingNanos + a.debitsPostedNanos} exceed credits_posted ${a.creditsPostedNanos}`);
    }
    if (a.flags.creditsMustNotExceedDebits && a.creditsPendingNanos + a.creditsPostedNanos > a.debitsPostedNanos) {
      add(`account ${a.id}: credits ${a.creditsPendingNanos + a.creditsPostedNanos} exceed debits_posted ${a.debitsPostedNanos}`);
    }
    const u = units.get(a.unit) ?? { unit: a.unit, ...ZERO };
    u.debitsPendingNanos += a.debitsPendingNanos;
    u.debitsPostedNanos += a.debitsPostedNanos;
    u.creditsPendingNanos += a.creditsPendingNanos;
    u.creditsPostedNanos += a.creditsPostedNanos;
    units.set(a.unit, u);
  }
  for (const id of sums.keys()) if (!seen.has(id)) add(`transfers name account ${id}, which does not exist`);
  for (const u of units.values()) {
    if (u.debitsPostedNanos !== u.creditsPostedNanos) add(`unit ${u.unit}: posted debits ${u.debitsPostedNanos} != posted credits ${u.creditsPostedNanos}`);
    if (u.debitsPendingNanos !== u.creditsPendingNanos) add(`unit ${u.unit}: pending debits ${u.debitsPendingNanos} != pending credits ${u.creditsPendingNanos}`);
  }
  const sorted = [...units.values()].sort((a, b) => (a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0));
  return { ok: violations.length === 0, violations, units: sorted, accountsChecked, transfersChecked };
}

/** The contribution of one transfer to the sums verifyLedger compares (pending counts only while pending). */
export function addTransferToSums(
  sums: Map<string, Balances>,
  t: { debitAccountId: string; creditAccountId: string; amountNanos: bigint; flags: { pending: boolean; voidPendingTransfer: boolean } },
  stillPending: boolean,
): void {
  const dr = sums.get(t.debitAccountId) ?? { ...ZERO };
  const cr = sums.get(t.creditAccountId) ?? { ...ZERO };
  if (t.flags.pending) {
    if (stillPending) {
      dr.debitsPendingNanos += t.amountNanos;
      cr.creditsPendingNanos += t.amountNanos;
    }
  } else if (!t.flags.voidPendingTransfer) {
    dr.debitsPostedNanos += t.amountNanos;
    cr.creditsPostedNanos += t.amountNanos;
  }
  sums.set(t.debitAccountId, dr);
  sums.set(t.creditAccountId, cr);
}
