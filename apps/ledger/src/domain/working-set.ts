/**
 * The in-memory state one group commit works on for one tenant: the accounts, transfers and
 * pending statuses the batch touches (loaded by the store), plus a journal of every change so
 * that a failed linked chain is rolled back exactly. Pure: no I/O.
 */
import type { CreateTransferResult } from "./results.js";
import type { Account, BalanceSnapshot, Balances, PendingStatus, Transfer } from "./types.js";

export interface WorkingSetInput {
  accounts: Iterable<Account>;
  transfers: Iterable<Transfer>;
  pendingStatuses: Iterable<PendingStatus>;
  /** Transfer ids that failed before with a transient result (id_already_failed). */
  failedTransferIds?: Iterable<string>;
}

/** A transfer id spent by a transient failure, to be stored. */
export interface FailedTransferId {
  id: string;
  result: CreateTransferResult;
  /** When it failed (the ledger's clock, not handed out as a timestamp). */
  atUs: bigint;
}

type Undo = () => void;

export class WorkingSet {
  readonly accounts = new Map<string, Account>();
  readonly transfers = new Map<string, Transfer>();
  readonly pending = new Map<string, PendingStatus>();
  /** Transfer ids spent by transient failures (loaded + new). Never rolled back: a failure stays a failure. */
  readonly failedTransferIds = new Set<string>();
  /** Ids spent in this working set, in order. */
  readonly newFailedTransferIds: FailedTransferId[] = [];
  /** Created in this working set, in order. */
  readonly newAccounts: Account[] = [];
  readonly newTransfers: Transfer[] = [];
  /** Balance snapshots of history accounts, in order. */
  readonly snapshots: BalanceSnapshot[] = [];
  /** Ids of pre-existing accounts whose balances changed (new accounts are inserted whole). */
  readonly dirtyAccounts = new Set<string>();
  /** Ids of pre-existing pending statuses that changed. */
  readonly dirtyPending = new Set<string>();
  private readonly createdAccounts = new Set<string>();
  private readonly createdPending = new Set<string>();
  private readonly journal: Undo[] = [];
  /** True between mark() and commit()/rollback to the outermost mark: only then are undo entries kept. */
  private journaling = false;

  constructor(input?: WorkingSetInput) {
    if (!input) return;
    for (const a of input.accounts) this.accounts.set(a.id, { ...a });
    for (const t of input.transfers) this.transfers.set(t.id, t);
    for (const p of input.pendingStatuses) this.pending.set(p.id, { ...p });
    for (const id of input.failedTransferIds ?? []) this.failedTransferIds.add(id);
  }

  /**
   * Remembers a transfer id that failed with a transient result. Not journaled: like TigerBeetle,
   * the id stays spent even when its linked chain is rolled back.
   */
  addFailedTransferId(f: FailedTransferId): void {
    if (this.failedTransferIds.has(f.id)) return;
    this.failedTransferIds.add(f.id);
    this.newFailedTransferIds.push(f);
  }

  /** Opens or closes an account (closing transfers, their void or expiry). */
  setClosed(id: string, closed: boolean): void {
    const a = this.accounts.get(id);
    if (!a) throw new Error(`ledger invariant: account ${id} not loaded`);
    if (a.flags.closed === closed) return;
    if (this.journaling) {
      const before = a.flags;
      const wasDirty = this.dirtyAccounts.has(id);
      this.journal.push(() => {
        a.flags = before;
        if (!wasDirty) this.dirtyAccounts.delete(id);
      });
    }
    // A new object: the loaded account's flags may be shared with the caller's copy.
    a.flags = { ...a.flags, closed };
    if (!this.createdAccounts.has(id)) this.dirtyAccounts.add(id);
  }

  /** A point to roll back to. */
  mark(): number {
    this.journaling = true;
    return this.journal.length;
  }

  /** Undoes every change made after mark. */
  rollback(mark: number): void {
    while (this.journal.length > mark) this.journal.pop()!();
    if (mark === 0) this.journaling = false;
  }

  /** Forgets the journal (the changes stay). */
  commit(): void {
    this.journal.length = 0;
    this.journaling = false;
  }

  addAccount(a: Account): void {
    this.accounts.set(a.id, a);
    this.newAccounts.push(a);
    this.createdAccounts.add(a.id);
    if (this.journaling) this.journal.push(() => {
      this.accounts.delete(a.id);
      this.newAccounts.pop();
      this.createdAccounts.delete(a.id);
    });
  }

  addTransfer(t: Transfer): void {
    this.transfers.set(t.id, t);
    this.newTransfers.push(t);
    if (this.journaling) this.journal.push(() => {
      this.transfers.delete(t.id);
      this.newTransfers.pop();
    });
    if (t.flags.pending) {
      const p: PendingStatus = { id: t.id, state: "pending", resolvedAtUs: null, expiresAtUs: t.expiresAtUs };
      this.pending.set(t.id, p);
      this.createdPending.add(t.id);
      if (this.journaling) this.journal.push(() => {
        this.pending.delete(t.id);
        this.createdPending.delete(t.id);
      });
    }
  }

  /** Sets a pending transfer's state (once). */
  resolvePending(id: string, state: PendingStatus["state"], atUs: bigint): void {
    const p = this.pending.get(id);
    if (!p) throw new Error(`ledger invariant: pending status ${id} not loaded`);
    if (this.journaling) {
      const before = { ...p };
      const wasDirty = this.dirtyPending.has(id);
      this.journal.push(() => {
        Object.assign(p, before);
        if (!wasDirty) this.dirtyPending.delete(id);
      });
    }
    p.state = state;
    p.resolvedAtUs = atUs;
    if (!this.createdPending.has(id)) this.dirtyPending.add(id);
  }

  /** Adds deltas to an account's balances (checked by the caller) and records a snapshot for history accounts. */
  changeBalances(id: string, delta: Partial<Balances>, atUs: bigint): void {
    const a = this.accounts.get(id);
    if (!a) throw new Error(`ledger invariant: account ${id} not loaded`);
    if (this.journaling) {
      const before: Balances = {
        debitsPendingNanos: a.debitsPendingNanos,
        debitsPostedNanos: a.debitsPostedNanos,
        creditsPendingNanos: a.creditsPendingNanos,
        creditsPostedNanos: a.creditsPostedNanos,
      };
      const wasDirty = this.dirtyAccounts.has(id);
      this.journal.push(() => {
        Object.assign(a, before);
        if (!wasDirty) this.dirtyAccounts.delete(id);
      });
    }
    if (delta.debitsPendingNanos !== undefined) a.debitsPendingNanos += delta.debitsPendingNanos;
    if (delta.debitsPostedNanos !== undefined) a.debitsPostedNanos += delta.debitsPostedNanos;
    if (delta.creditsPendingNanos !== undefined) a.creditsPendingNanos += delta.creditsPendingNanos;
    if (delta.creditsPostedNanos !== undefined) a.creditsPostedNanos += delta.creditsPostedNanos;
    if (!this.createdAccounts.has(id)) this.dirtyAccounts.add(id);
    if (a.flags.history) {
      this.snapshots.push({
        accountId: id,
        timestampUs: atUs,
        debitsPendingNanos: a.debitsPendingNanos,
        debitsPostedNanos: a.debitsPostedNanos,
        creditsPendingNanos: a.creditsPendingNanos,
        creditsPostedNanos: a.creditsPostedNanos,
      });
      if (this.journaling) this.journal.push(() => {
        this.snapshots.pop();
      });
    }
  }

  /** True when the pending status was created in this working set (insert, not update). */
  isNewPending(id: string): boolean {
    return this.createdPending.has(id);
  }
}
