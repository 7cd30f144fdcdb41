/** The ledger's vocabulary (TigerBeetle's model with string ids and units). Amounts are bigint nanos. */

export interface AccountFlags {
  /** Chains this item to the next item of the same request (all or nothing). */
  linked: boolean;
  /** debits_pending + debits_posted <= credits_posted, always. */
  debitsMustNotExceedCredits: boolean;
  /** credits_pending + credits_posted <= debits_posted, always. */
  creditsMustNotExceedDebits: boolean;
  /** Keep the balances after every change (GetAccountBalances). */
  history: boolean;
  /** Created with the caller's timestamp (historical data). */
  imported: boolean;
  /** Takes no more transfers except voids of its pending transfers (state: set by closing transfers). */
  closed: boolean;
}

export interface NewAccount {
  id: string;
  unit: string;
  code: number;
  flags: AccountFlags;
  metadata: Record<string, string>;
  /** The caller's creation time (µs) when flags.imported; 0n otherwise. */
  timestampUs: bigint;
}

export interface Balances {
  debitsPendingNanos: bigint;
  debitsPostedNanos: bigint;
  creditsPendingNanos: bigint;
  creditsPostedNanos: bigint;
}

export interface Account extends Balances {
  id: string;
  unit: string;
  code: number;
  flags: AccountFlags;
  metadata: Record<string, string>;
  /** Ledger timestamp of creation, microseconds since the Unix epoch. */
  timestampUs: bigint;
}

export interface TransferFlags {
  linked: boolean;
  pending: boolean;
  postPendingTransfer: boolean;
  voidPendingTransfer: boolean;
  balancingDebit: boolean;
  balancingCredit: boolean;
  /** Closes the debit account on success (pending transfers only). */
  closingDebit: boolean;
  /** Closes the credit account on success (pending transfers only). */
  closingCredit: boolean;
  /** Created with the caller's timestamp (historical data). */
  imported: boolean;
}

export interface NewTransfer {
  id: string;
  /** May be "" on post/void (the pending transfer's is used). */
  debitAccountId: string;
  creditAccountId: string;
  amountNanos: bigint;
  /** May be "" on post/void. */
  unit: string;
  /** Only on post/void. */
  pendingId: string;
  /** Only on pending; 0 = never expires. */
  timeoutSeconds: number;
  /** May be 0 on post/void. */
  code: number;
  flags: TransferFlags;
  references: Record<string, string>;
  /** The caller's time (µs) when flags.imported; 0n otherwise. */
  timestampUs: bigint;
}

/** A stored transfer: immutable. */
export interface Transfer {
  id: string;
  debitAccountId: string;
  creditAccountId: string;
  /** What moved (balancing: the actual amount; post: the amount posted; void: the amount released). */
  amountNanos: bigint;
  /** The amount as sent (idempotency compares it). */
  amountRequestedNanos: bigint;
  unit: string;
  pendingId: string;
  timeoutSeconds: number;
  code: number;
  flags: TransferFlags;
  references: Record<string, string>;
  timestampUs: bigint;
  /** Pending transfers with a timeout: when they expire (µs); otherwise null. */
  expiresAtUs: bigint | null;
}

export type PendingState = "pending" | "posted" | "voided" | "expired";

/** The mutable status of a pending transfer (the transfer row itself never changes). */
export interface PendingStatus {
  id: string;
  state: PendingState;
  /** When it was posted / voided / expired (µs), else null. */
  resolvedAtUs: bigint | null;
  /** Copied from the transfer for the expiry sweep. */
  expiresAtUs: bigint | null;
}

/** One snapshot of a history account's balances, just after a change. */
export interface BalanceSnapshot extends Balances {
  accountId: string;
  timestampUs: bigint;
}

export const NO_ACCOUNT_FLAGS: AccountFlags = {
  linked: false,
  debitsMustNotExceedCredits: false,
  creditsMustNotExceedDebits: false,
  history: false,
  imported: false,
  closed: false,
};

export const NO_TRANSFER_FLAGS: TransferFlags = {
  linked: false,
  pending: false,
  postPendingTransfer: false,
  voidPendingTransfer: false,
  balancingDebit: false,
  balancingCredit: false,
  closingDebit: false,
  closingCredit: false,
  imported: false,
};
