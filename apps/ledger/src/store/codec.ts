/** SQL rows <-> domain values (amounts stay bigint; bigint parameters are sent as decimal strings). */
import type { Account, BalanceSnapshot, PendingState, PendingStatus, Transfer } from "../domain/types.js";
import type { FailedTransferId } from "../domain/working-set.js";
import {
  ACCOUNT_FLAG_BITS,
  SPENT_ID_FLAG,
  TRANSFER_FLAG_BITS,
  bitsToFlags,
  flagsToBits,
  stateName,
  type StoredTransfer,
} from "./types.js";

export const ACCOUNT_COLUMNS = [
  "tenant",
  "id",
  "unit",
  "code",
  "flags",
  "metadata",
  "debits_pending_nanos",
  "debits_posted_nanos",
  "credits_pending_nanos",
  "credits_posted_nanos",
  "timestamp_us",
];

/** SQL types of ACCOUNT_COLUMNS, in order (unnest inserts; the migrations' types: code is BIGINT since 0004). */
export const ACCOUNT_COLUMN_TYPES = ["text", "text", "text", "bigint", "int", "jsonb", "bigint", "bigint", "bigint", "bigint", "bigint"];

export function accountRow(tenant: string, a: Account): unknown[] {
  return [
    tenant,
    a.id,
    a.unit,
    a.code,
    flagsToBits(a.flags, ACCOUNT_FLAG_BITS),
    JSON.stringify(a.metadata),
    a.debitsPendingNanos.toString(),
    a.debitsPostedNanos.toString(),
    a.creditsPendingNanos.toString(),
    a.creditsPostedNanos.toString(),
    a.timestampUs.toString(),
  ];
}

export function rowToAccount(r: Record<string, unknown>): Account {
  return {
    id: r.id as string,
    unit: r.unit as string,
    code: Number(r.code),
    flags: bitsToFlags(Number(r.flags), ACCOUNT_FLAG_BITS),
    metadata: (r.metadata ?? {}) as Record<string, string>,
    debitsPendingNanos: BigInt(r.debits_pending_nanos as bigint),
    debitsPostedNanos: BigInt(r.debits_posted_nanos as bigint),
    creditsPendingNanos: BigInt(r.credits_pending_nanos as bigint),
    creditsPostedNanos: BigInt(r.credits_posted_nanos as bigint),
    timestampUs: BigInt(r.timestamp_us as bigint),
  };
}

export const TRANSFER_COLUMNS = [
  "tenant",
  "id",
  "debit_account_id",
  "credit_account_id",
  "amount_nanos",
  "amount_requested_nanos",
  "unit",
  "pending_id",
  "timeout_seconds",
  "code",
  "flags",
  "refs",
  "timestamp_us",
  "expires_at_us",
  "failed_result",
];

/** SQL types of TRANSFER_COLUMNS, in order (unnest inserts; the migrations' types: code is BIGINT since 0004). */
export const TRANSFER_COLUMN_TYPES = ["text", "text", "text", "text", "bigint", "bigint", "text", "text", "bigint", "bigint", "int", "jsonb", "bigint", "bigint", "text"];

export function transferRow(tenant: string, t: Transfer): unknown[] {
  return [
    tenant,
    t.id,
    t.debitAccountId,
    t.creditAccountId,
    t.amountNanos.toString(),
    t.amountRequestedNanos.toString(),
    t.unit,
    t.pendingId === "" ? null : t.pendingId,
    t.timeoutSeconds,
    t.code,
    flagsToBits(t.flags, TRANSFER_FLAG_BITS),
    isEmpty(t.references) ? null : JSON.stringify(t.references),
    t.timestampUs.toString(),
    t.expiresAtUs === null ? null : t.expiresAtUs.toString(),
    null,
  ];
}

/**
 * The id-only transfers row of a spent id (a transient failure): no accounts, amount 0, flag
 * SPENT_ID_FLAG, the result in failed_result, the failure time (not a ledger timestamp) in
 * timestamp_us. Every read of transfers skips it; the primary key refuses the id again.
 */
export function spentIdRow(tenant: string, f: FailedTransferId): unknown[] {
  return [tenant, f.id, "", "", "0", "0", "", null, 0, 0, SPENT_ID_FLAG, null, f.atUs.toString(), null, f.result];
}

function isEmpty(o: Record<string, string>): boolean {
  for (const _ in o) return false;
  return true;
}

const big = (v: unknown): bigint => BigInt(v as bigint);
const bigOrNull = (v: unknown): bigint | null => (v === null || v === undefined ? null : BigInt(v as bigint));

export function rowToTransfer(r: Record<string, unknown>): Transfer {
  return {
    id: r.id as string,
    debitAccountId: r.debit_account_id as string,
    creditAccountId: r.credit_account_id as string,
    amountNanos: big(r.amount_nanos),
    amountRequestedNanos: big(r.amount_requested_nanos),
    unit: r.unit as string,
    pendingId: (r.pending_id as string | null) ?? "",
    timeoutSeconds: Number(r.timeout_seconds),
    code: Number(r.code),
    flags: bitsToFlags(Number(r.flags), TRANSFER_FLAG_BITS),
    references: (r.refs ?? {}) as Record<string, string>,
    timestampUs: big(r.timestamp_us),
    expiresAtUs: bigOrNull(r.expires_at_us),
  };
}

/** A transfer row joined with its pending_transfers row (columns p_state, p_resolved_at_us). */
export function rowToStoredTransfer(r: Record<string, unknown>): StoredTransfer {
  const t = rowToTransfer(r);
  return { ...t, state: stateName(t.flags.pending, (r.p_state as string | null) ?? null), resolvedAtUs: bigOrNull(r.p_resolved_at_us) };
}

export function rowToPendingStatus(r: Record<string, unknown>): PendingStatus {
  return {
    id: r.id as string,
    state: r.p_state as PendingState,
    resolvedAtUs: bigOrNull(r.p_resolved_at_us),
    expiresAtUs: bigOrNull(r.expires_at_us),
  };
}

export const PENDING_COLUMNS = ["tenant", "id", "state", "expires_at_us", "resolved_at_us"];

/** SQL types of PENDING_COLUMNS, in order (unnest inserts). */
export const PENDING_COLUMN_TYPES = ["text", "text", "text", "bigint", "bigint"];

export function pendingRow(tenant: string, p: PendingStatus): unknown[] {
  return [tenant, p.id, p.state, p.expiresAtUs === null ? null : p.expiresAtUs.toString(), p.resolvedAtUs === null ? null : p.resolvedAtUs.toString()];
}

export const BALANCE_COLUMNS = [
  "tenant",
  "account_id",
  "timestamp_us",
  "debits_pending_nanos",
  "debits_posted_nanos",
  "credits_pending_nanos",
  "credits_posted_nanos",
];

/** SQL types of BALANCE_COLUMNS, in order (unnest inserts). */
export const BALANCE_COLUMN_TYPES = ["text", "text", "bigint", "bigint", "bigint", "bigint", "bigint"];

export function balanceRow(tenant: string, s: BalanceSnapshot): unknown[] {
  return [
    tenant,
    s.accountId,
    s.timestampUs.toString(),
    s.debitsPendingNanos.toString(),
    s.debitsPostedNanos.toString(),
    s.creditsPendingNanos.toString(),
    s.creditsPostedNanos.toString(),
  ];
}

export function rowToSnapshot(r: Record<string, unknown>): BalanceSnapshot {
  return {
    accountId: r.account_id as string,
    timestampUs: big(r.timestamp_us),
    debitsPendingNanos: big(r.debits_pending_nanos),
    debitsPostedNanos: big(r.debits_posted_nanos),
    creditsPendingNanos: big(r.credits_pending_nanos),
    creditsPostedNanos: big(r.credits_posted_nanos),
  };
}
