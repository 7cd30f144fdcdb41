import type { BurnGrant, DebitContext, Slice } from "../domain/types.js";
import type { DebitMode } from "../domain/debit.js";

/**
 * The real-time decision state of one wallet: what every grant has available (amount - burned -
 * held - expired), the overdraft in use, and the policy's room. PostgreSQL is the source of truth;
 * this is a fast copy that a debit decides from atomically. It may only ever be rebuilt from
 * PostgreSQL (load), decremented by a debit, or incremented by a credit carrying the generation it
 * was taken under (a credit for an older generation invalidates the state instead, so that nothing
 * is given back twice after a rebuild).
 */
export interface WalletSnapshot {
  /** Grants that can still burn or be given back to (not exhausted-and-unheld, not closed). */
  grants: BurnGrant[];
  /** Overdraft in use: posted + held below zero. */
  overdraftUsedNanos: bigint;
  /** Most overdraft the policy allows (soft negative limit; 0 otherwise). */
  overdraftLimitNanos: bigint;
  /** postpaid overage: uncovered holds are allowed. */
  uncoveredAllowed: boolean;
}

export interface DebitRequest {
  amountNanos: bigint;
  mode: DebitMode;
  ctx: DebitContext;
}

export type DebitResult =
  | { kind: "no_state" }
  | {
      kind: "ok" | "insufficient";
      /** Generation of the state the decision was taken under. */
      gen: string;
      slices: Slice[];
      overdraftNanos: bigint;
      uncoveredNanos: bigint;
      shortfallNanos: bigint;
      /** Sum of all grants' available minus overdraft in use, after the debit. */
      availableAfterNanos: bigint;
    };

export interface WalletRef {
  tenant: string;
  walletId: string;
}

export interface RealtimeStore {
  readonly kind: "redis" | "memory";
  /** Decides and applies one debit atomically (all-or-nothing in "all" mode). */
  debit(w: WalletRef, req: DebitRequest): Promise<DebitResult>;
  /**
   * Decides many debits of one wallet in one atomic step, in order (each as debit() would, seeing
   * the ones before it): one result per request, or [{ kind: "no_state" }] when the wallet has no
   * state (nothing decided). One round trip for a group's items on one wallet.
   */
  debitMany(w: WalletRef, reqs: DebitRequest[]): Promise<DebitResult[]>;
  /** Gives back slices and overdraft taken under `gen`; a stale gen invalidates the state instead. */
  credit(w: WalletRef, gen: string, slices: Slice[], overdraftNanos: bigint): Promise<"ok" | "stale">;
  /** Installs a snapshot when none is present; returns the generation in force. */
  load(w: WalletRef, snap: WalletSnapshot, gen: string): Promise<string>;
  /** Drops a wallet's state (it is rebuilt from PostgreSQL on next use). */
  invalidate(w: WalletRef): Promise<void>;
  /** Drops every wallet's state under this store's prefix (start-up rebuild). */
  invalidateAll(): Promise<number>;
  /** The generation of a wallet's state (null: none loaded). */
  gen(w: WalletRef): Promise<string | null>;
  /** Reads a wallet's state (tests and audits): available per grant and overdraft in use. */
  read(w: WalletRef): Promise<{ gen: string; availableByGrant: Map<string, bigint>; overdraftUsedNanos: bigint } | null>;
  close(): Promise<void>;
}
