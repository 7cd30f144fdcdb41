/** The ledger store's interface (SQL in pg-store.ts; an in-memory fake in memory-store.ts). */
import type { CreateAccountItemResult, CreateTransferItemResult } from "../domain/results.js";
import type { Account, BalanceSnapshot, NewAccount, NewTransfer, Transfer } from "../domain/types.js";
import type { VerifyReport } from "../domain/verify.js";

/** Where a stored transfer stands (only pending transfers move, once). */
export type TransferStateName = "posted" | "pending" | "pending_posted" | "pending_voided" | "pending_expired";

export interface StoredTransfer extends Transfer {
  state: TransferStateName;
  /** When a pending transfer was posted / voided / expired (µs). */
  resolvedAtUs: bigint | null;
}

export interface AccountTransfersQuery {
  accountId: string;
  /** Include transfers debiting the account. */
  debits: boolean;
  /** Include transfers crediting the account. */
  credits: boolean;
  /** 0 = any code. */
  code: number;
  /** Inclusive lower bound (µs), or null. */
  startUs: bigint | null;
  /** Exclusive upper bound (µs), or null. */
  endUs: bigint | null;
  reversed: boolean;
  /** Most rows to return. */
  limit: number;
  /** Continue after this timestamp (exclusive, in the listing's direction), or null. */
  afterUs: bigint | null;
}

export interface AccountBalancesQuery {
  accountId: string;
  startUs: bigint | null;
  endUs: bigint | null;
  reversed: boolean;
  limit: number;
  afterUs: bigint | null;
}

/** A filter over a tenant's accounts (TigerBeetle's QueryFilter); every set field must match. */
export interface QueryAccountsQuery {
  /** "" = any unit. */
  unit: string;
  /** 0 = any code. */
  code: number;
  /** Entries the metadata must contain (empty = any). */
  metadata: Record<string, string>;
  /** Inclusive lower bound on the creation time (µs), or null. */
  startUs: bigint | null;
  /** Exclusive upper bound (µs), or null. */
  endUs: bigint | null;
  reversed: boolean;
  /** Most rows to return. */
  limit: number;
  /** Continue after this timestamp (exclusive, in the listing's direction), or null. */
  afterUs: bigint | null;
}

/** A filter over a tenant's transfers (TigerBeetle's QueryFilter); every set field must match. */
export interface QueryTransfersQuery {
  unit: string;
  code: number;
  /** Entries the references must contain (empty = any). */
  references: Record<string, string>;
  startUs: bigint | null;
  endUs: bigint | null;
  reversed: boolean;
  limit: number;
  afterUs: bigint | null;
}

/** One page of a query: the matches, and where a scan window that ended before the page filled stopped. */
export interface QueryPage<T> {
  items: T[];
  /** Set when the scan window (QUERY_SCAN_ROWS_MAX rows) ended before `limit` matches: continue after it. */
  scannedToUs: bigint | null;
}

export interface LedgerStore {
  /** Applies a batch of new accounts (group-committed); one result per item. */
  createAccounts(tenant: string, items: readonly NewAccount[]): Promise<CreateAccountItemResult[]>;
  /** Applies a batch of new transfers (group-committed); one result per item. */
  createTransfers(tenant: string, items: readonly NewTransfer[]): Promise<CreateTransferItemResult[]>;
  /** The accounts found, in the order of ids (unknown ids omitted). */
  lookupAccounts(tenant: string, ids: readonly string[]): Promise<Account[]>;
  /** The transfers found, in the order of ids (unknown ids omitted). */
  lookupTransfers(tenant: string, ids: readonly string[]): Promise<StoredTransfer[]>;
  /** One page of an account's transfers in timestamp order. */
  getAccountTransfers(tenant: string, q: AccountTransfersQuery): Promise<StoredTransfer[]>;
  /** One page of a history account's balance snapshots in timestamp order. */
  getAccountBalances(tenant: string, q: AccountBalancesQuery): Promise<BalanceSnapshot[]>;
  /** One page of the accounts matching a filter, in creation-time order. */
  queryAccounts(tenant: string, q: QueryAccountsQuery): Promise<QueryPage<Account>>;
  /** One page of the transfers matching a filter, in timestamp order. */
  queryTransfers(tenant: string, q: QueryTransfersQuery): Promise<QueryPage<StoredTransfer>>;
  /** The last balance snapshot at or before atUs, or null. */
  getBalanceAt(tenant: string, accountId: string, atUs: bigint): Promise<BalanceSnapshot | null>;
  /** Checks the invariants of one tenant. */
  verify(tenant: string): Promise<VerifyReport>;
  /** Expires the pending transfers whose timeout has passed (one sweep, every tenant); returns how many. */
  expireDue(): Promise<number>;
  /** Stops accepting writes and waits for queued ones. */
  close(): Promise<void>;
}

/** The group-commit queue is full: the caller should back off and retry (ResourceExhausted). */
export class LedgerBusyError extends Error {
  constructor(readonly queuedItems: number, readonly limit: number) {
    super(`ledger commit queue is full (${queuedItems} items queued, limit ${limit}); retry later`);
    this.name = "LedgerBusyError";
  }
}

/** The store is closed (shutting down): Unavailable. */
export class LedgerClosedError extends Error {
  constructor() {
    super("ledger store is closed");
    this.name = "LedgerClosedError";
  }
}

export const ACCOUNT_FLAG_BITS = { linked: 1, debitsMustNotExceedCredits: 2, creditsMustNotExceedDebits: 4, history: 8, imported: 16, closed: 32 } as const;
export const TRANSFER_FLAG_BITS = {
  linked: 1,
  pending: 2,
  postPendingTransfer: 4,
  voidPendingTransfer: 8,
  balancingDebit: 16,
  balancingCredit: 32,
  closingDebit: 64,
  closingCredit: 128,
  imported: 256,
} as const;

/** Transfer flag bit of the id-only rows that record spent ids (id_already_failed); never a TransferFlags bit. */
export const SPENT_ID_FLAG = 512;

export function flagsToBits<K extends string>(flags: Record<K, boolean>, bits: Record<K, number>): number {
  let n = 0;
  for (const k of Object.keys(bits) as K[]) if (flags[k]) n |= bits[k];
  return n;
}

export function bitsToFlags<K extends string>(n: number, bits: Record<K, number>): Record<K, boolean> {
  const out = {} as Record<K, boolean>;
  for (const k of Object.keys(bits) as K[]) out[k] = (n & bits[k]) !== 0;
  return out;
}

/** The state name of a transfer from its flags and its pending status. */
export function stateName(isPending: boolean, pendingState: string | null): TransferStateName {
  if (!isPending) return "posted";
  switch (pendingState) {
    case "posted":
      return "pending_posted";
    case "voided":
      return "pending_voided";
    case "expired":
      return "pending_expired";
    default:
      return "pending";
  }
}
