/**
 * The ledger on PostgreSQL (or PGlite) through @nanobill/db. Writes go through one group-commit
 * writer: every commit is one transaction that
 *   1. locks ledger_meta (the last timestamp; serialises writers across processes), loads the
 *      transfers the batch names (own ids for idempotency, pending ids) and locks the accounts its
 *      items name (SELECT ... FOR UPDATE): one round trip with the BEGIN (Tx.pipeline);
 *   2. locks the accounts of loaded pending transfers no item named (when there are any);
 *   3. applies the pure domain in memory, request after request;
 *   4. inserts accounts, transfers, pending states and balance snapshots (unnest, or COPY past
 *      PIPELINED_INSERT_ROWS_MAX rows), updates each touched account once and each resolved pending
 *      state once (UPDATE ... FROM unnest), stores the last timestamp: one round trip; commits,
 * and only then resolves each caller with its results. A commit of single transfers is three
 * round trips (it was seven: bench/ledger README figures).
 */
import { isDbError, unnestInsert, type Db, type PipelineStatement, type Row, type Tx } from "@nanobill/db";
import { LedgerClock } from "../domain/clock.js";
import { createAccounts } from "../domain/create-accounts.js";
import { createTransfers, expireDue as expireDueDomain } from "../domain/create-transfers.js";
import type { CreateAccountItemResult, CreateTransferItemResult } from "../domain/results.js";
import type { Account, Balances, BalanceSnapshot, NewAccount, NewTransfer, PendingStatus, Transfer } from "../domain/types.js";
import { addTransferToSums, verifyLedger, type VerifyReport } from "../domain/verify.js";
import { WorkingSet } from "../domain/working-set.js";
import {
  COMMIT_ITEMS_PER_TRANSACTION_MAX,
  COMMIT_QUEUE_ITEMS_MAX,
  EXPIRY_SWEEP_BATCH_MAX,
  PIPELINED_INSERT_ROWS_MAX,
  QUERY_SCAN_ROWS_MAX,
  VERIFY_VIOLATIONS_MAX,
} from "../limits.js";
import {
  ACCOUNT_COLUMNS,
  ACCOUNT_COLUMN_TYPES,
  BALANCE_COLUMNS,
  BALANCE_COLUMN_TYPES,
  PENDING_COLUMNS,
  PENDING_COLUMN_TYPES,
  TRANSFER_COLUMNS,
  TRANSFER_COLUMN_TYPES,
  accountRow,
  balanceRow,
  pendingRow,
  rowToAccount,
  rowToPendingStatus,
  rowToSnapshot,
  rowToStoredTransfer,
  rowToTransfer,
  spentIdRow,
  transferRow,
} from "./codec.js";
import { GroupCommitter, JobFailed } from "./group-commit.js";
import { verifyHistory } from "./verify-sql.js";
import {
  ACCOUNT_FLAG_BITS,
  SPENT_ID_FLAG,
  flagsToBits,
  type AccountBalancesQuery,
  type AccountTransfersQuery,
  type LedgerStore,
  type QueryAccountsQuery,
  type QueryPage,
  type QueryTransfersQuery,
  type StoredTransfer,
} from "./types.js";

type Job =
  | { kind: "accounts"; tenant: string; items: readonly NewAccount[] }
  | { kind: "transfers"; tenant: string; items: readonly NewTransfer[] }
  | { kind: "expire" };
type JobResult = CreateAccountItemResult[] | CreateTransferItemResult[] | number;

export interface PgLedgerStoreOptions {
  db: Db;
  /** Wall clock in microseconds since the epoch (injected; tests move it). */
  nowUs: () => bigint;
  queueItemsMax?: number;
  itemsPerCommitMax?: number;
  /** Commits that look every id up after one found an existing id optimistically (default 100; tests use 0). */
  fullLookupCommitsAfterConflict?: number;
  /** Rows one filtered query scans at most (default QUERY_SCAN_ROWS_MAX; tests use less). */
  queryScanRowsMax?: number;
}

/** After a commit found an existing id the optimistic way, this many commits look ids up first. */
const FULL_LOOKUP_COMMITS_AFTER_CONFLICT = 100;

const TRANSFER_SELECT = `t.id, t.debit_account_id, t.credit_account_id, t.amount_nanos, t.amount_requested_nanos, t.unit,
  t.pending_id, t.timeout_seconds, t.code, t.flags, t.refs, t.timestamp_us, t.expires_at_us,
  p.state AS p_state, p.resolved_at_us AS p_resolved_at_us`;

/**
 * Takes the ledger lock (serialises writers across processes; holds the last timestamp). The
 * batch's statements look rows up by key (ids from unnest): index probes. Without the two
 * settings, PostgreSQL plans an 8,190-id lookup as a hash join over the whole transfers table once
 * it holds a few tens of thousands of rows (measured: 150 ms at 300k rows, 473 ms at 1M, against
 * 26-31 ms for the probes), so commits slowed down as the ledger grew. Scoped to the transaction.
 */
const LOCK_META_SQL =
  "SELECT last_timestamp_us, set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true) FROM ledger_meta WHERE id = 1 FOR UPDATE";

/** Reads the named transfers (with their pending state) of a batch. */
function lookupTransfersStatement(tenants: string[], ids: string[]): PipelineStatement {
  return {
    sql: `SELECT k.tenant AS k_tenant, ${TRANSFER_SELECT}
           FROM unnest($1::text[], $2::text[]) AS k(tenant, id)
           JOIN transfers t ON t.tenant = k.tenant AND t.id = k.id
           LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id`,
    params: [tenants, ids],
  };
}

/** Locks and reads the touched accounts not locked yet, in (tenant, id) order (null: none); marks them locked. */
function lockAccountsStatement(touched: Map<string, { accountIds: Set<string> }>, locked: Set<string>): PipelineStatement | null {
  const keys: [string, string][] = [];
  for (const [tenant, t] of touched) {
    for (const id of t.accountIds) {
      const k = `${tenant}\u0000${id}`;
      if (!locked.has(k)) (locked.add(k), keys.push([tenant, id]));
    }
  }
  if (keys.length === 0) return null;
  keys.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return {
    sql: `SELECT a.* FROM accounts a
           JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON a.tenant = k.tenant AND a.id = k.id
           ORDER BY a.tenant, a.id
           FOR UPDATE OF a`,
    params: [keys.map((k) => k[0]), keys.map((k) => k[1])],
  };
}

export function createPgLedgerStore(opts: PgLedgerStoreOptions): LedgerStore {
  const { db, nowUs } = opts;
  const scanRowsMax = opts.queryScanRowsMax ?? QUERY_SCAN_ROWS_MAX;
  // Idempotency lookups are optimistic: a commit first loads only the pending transfers it names
  // and lets the transfers primary key catch an id that already exists; then (rarely: retries)
  // it rolls back and runs again with every id looked up, and keeps looking up ids for a while.
  let fullLookupCommits = 0;
  const applyAll = async (jobs: Job[]): Promise<JobResult[]> => {
    if (fullLookupCommits > 0) {
      fullLookupCommits--;
      return db.transaction((tx) => commit(tx, jobs, true), { retriesMax: 3 });
    }
    try {
      return await db.transaction((tx) => commit(tx, jobs, false), { retriesMax: 3 });
    } catch (e) {
      if (!(e instanceof OptimisticConflict) && !(isDbError(e) && e.code === "unique_violation")) throw e;
      fullLookupCommits = opts.fullLookupCommitsAfterConflict ?? FULL_LOOKUP_COMMITS_AFTER_CONFLICT;
      return db.transaction((tx) => commit(tx, jobs, true), { retriesMax: 3 });
    }
  };
  // A commit holds many callers' requests (any tenant's). When it fails with an error that may
  // belong to one request (a row the database refuses, an invariant), each request is retried
  // alone in its own transaction, in the same order, so one bad request fails only its own caller
  // (metering's group committer does the same). Errors of the connection or the moment (database
  // unreachable, statement timeout, serialization conflict after the retries) are the same for
  // every request: the whole commit gets them, without a retry per request. A request that fails
  // alone gets its error.
  const apply = async (jobs: Job[]): Promise<(JobResult | JobFailed)[]> => {
    try {
      return await applyAll(jobs);
    } catch (e) {
      if (jobs.length <= 1 || !mayBelongToOneJob(e)) throw e;
      const out: (JobResult | JobFailed)[] = [];
      for (const j of jobs) {
        try {
          out.push((await applyAll([j]))[0]!);
        } catch (alone) {
          out.push(new JobFailed(alone));
        }
      }
      return out;
    }
  };
  const committer = new GroupCommitter<Job, JobResult>(apply, {
    queueItemsMax: opts.queueItemsMax ?? COMMIT_QUEUE_ITEMS_MAX,
    itemsPerCommitMax: opts.itemsPerCommitMax ?? COMMIT_ITEMS_PER_TRANSACTION_MAX,
  });

  async function commit(tx: Tx, jobs: Job[], lookupOwnIds: boolean): Promise<JobResult[]> {
    // What the batch touches, per tenant.
    const touched = new Map<string, { transferIds: Set<string>; accountIds: Set<string> }>();
    const touch = (tenant: string) => {
      let t = touched.get(tenant);
      if (!t) touched.set(tenant, (t = { transferIds: new Set(), accountIds: new Set() }));
      return t;
    };
    for (const j of jobs) {
      if (j.kind === "accounts") {
        const t = touch(j.tenant);
        for (const a of j.items) if (a.id) t.accountIds.add(a.id);
      } else if (j.kind === "transfers") {
        const t = touch(j.tenant);
        for (const x of j.items) {
          if (x.id && lookupOwnIds) t.transferIds.add(x.id);
          if (x.pendingId) t.transferIds.add(x.pendingId);
          if (x.debitAccountId) t.accountIds.add(x.debitAccountId);
          if (x.creditAccountId) t.accountIds.add(x.creditAccountId);
        }
      }
    }

    // Reads, in as few round trips as the batch allows (each costs a wait on PostgreSQL, and the
    // ledger lock is held across them): the ledger lock, the transfers the batch names and the
    // accounts its items name go out together; an expiry sweep needs the clock first (its due
    // transfers are read with it, then looked up); the accounts of loaded pending transfers that
    // no item named are locked after. Every commit holds the ledger lock first, so the order in
    // which a commit locks accounts cannot deadlock another commit.
    const locked = new Set<string>();
    const lookups = (): { statements: PipelineStatement[]; transfersAt: number; accountsAt: number } => {
      const statements: PipelineStatement[] = [];
      const ten: string[] = [];
      const ids: string[] = [];
      for (const [tenant, t] of touched) for (const id of t.transferIds) (ten.push(tenant), ids.push(id));
      const transfersAt = ids.length > 0 ? statements.push(lookupTransfersStatement(ten, ids)) - 1 : -1;
      const accounts = lockAccountsStatement(touched, locked);
      const accountsAt = accounts ? statements.push(accounts) - 1 : -1;
      return { statements, transfersAt, accountsAt };
    };
    const hasExpire = jobs.some((j) => j.kind === "expire");
    const first = hasExpire ? { statements: [], transfersAt: -1, accountsAt: -1 } : lookups();
    const [metaResult, ...firstResults] = await tx.pipeline([{ sql: LOCK_META_SQL, params: [] }, ...first.statements]);
    const lastTimestampUs = BigInt(metaResult!.rows[0]!.last_timestamp_us as bigint);
    const clock = new LedgerClock(lastTimestampUs, nowUs);

    const due: { tenant: string; id: string }[] = [];
    let transferRowsRead: Row[] = first.transfersAt >= 0 ? firstResults[first.transfersAt]!.rows : [];
    const accountRowsRead: Row[] = first.accountsAt >= 0 ? firstResults[first.accountsAt]!.rows : [];
    if (hasExpire) {
      const r = await tx.query<{ tenant: string; id: string }>(
        `SELECT tenant, id FROM pending_transfers
         WHERE state = 'pending' AND expires_at_us IS NOT NULL AND expires_at_us <= $1
         ORDER BY expires_at_us LIMIT $2`,
        [clock.peek().toString(), EXPIRY_SWEEP_BATCH_MAX],
      );
      for (const row of r.rows) {
        due.push(row);
        touch(row.tenant).transferIds.add(row.id);
      }
      const second = lookups();
      if (second.statements.length > 0) {
        const rs = await tx.pipeline(second.statements);
        if (second.transfersAt >= 0) transferRowsRead = rs[second.transfersAt]!.rows;
        if (second.accountsAt >= 0) accountRowsRead.push(...rs[second.accountsAt]!.rows);
      }
    }

    // The named transfers with their pending state, and the spent ids among them.
    const loadedTransfers = new Map<string, Transfer[]>();
    const loadedFailed = new Map<string, string[]>();
    const loadedPending = new Map<string, PendingStatus[]>();
    for (const row of transferRowsRead) {
      const tenant = row.k_tenant as string;
      if ((Number(row.flags) & SPENT_ID_FLAG) !== 0) {
        // A spent id (an earlier transient failure): id_already_failed, and no transfer.
        push(loadedFailed, tenant, row.id as string);
        continue;
      }
      const t = rowToTransfer(row);
      push(loadedTransfers, tenant, t);
      if (t.flags.pending) {
        push(loadedPending, tenant, rowToPendingStatus(row));
        // Posting, voiding or expiring it changes its accounts.
        touch(tenant).accountIds.add(t.debitAccountId).add(t.creditAccountId);
      }
    }
    const more = lockAccountsStatement(touched, locked);
    if (more) accountRowsRead.push(...(await tx.query(more.sql, more.params)).rows);
    const loadedAccounts = new Map<string, Account[]>();
    for (const row of accountRowsRead) push(loadedAccounts, row.tenant as string, rowToAccount(row));

    // Apply the domain in memory, request after request.
    const sets = new Map<string, WorkingSet>();
    const wsOf = (tenant: string): WorkingSet => {
      let ws = sets.get(tenant);
      if (!ws) {
        ws = new WorkingSet({
          accounts: loadedAccounts.get(tenant) ?? [],
          transfers: loadedTransfers.get(tenant) ?? [],
          pendingStatuses: loadedPending.get(tenant) ?? [],
          failedTransferIds: loadedFailed.get(tenant) ?? [],
        });
        sets.set(tenant, ws);
      }
      return ws;
    };
    const results: JobResult[] = [];
    for (const j of jobs) {
      if (j.kind === "accounts") results.push(createAccounts(wsOf(j.tenant), j.items, clock));
      else if (j.kind === "transfers") results.push(createTransfers(wsOf(j.tenant), j.items, clock));
      else {
        let n = 0;
        const byTenant = new Map<string, string[]>();
        for (const d of due) push(byTenant, d.tenant, d.id);
        for (const [tenant, ids] of byTenant) n += expireDueDomain(wsOf(tenant), ids, clock);
        due.length = 0; // a second expire job in the same commit finds nothing more
        results.push(n);
      }
    }

    // Optimistic mode did not look the batch's own ids up: an id that exists already either hits
    // the primary key below (items that would be stored) or is among the failed items (which
    // would have answered EXISTS* or ID_ALREADY_FAILED; spent ids are id-only rows of transfers):
    // check those (with the writes: a hit rolls them back), and start over with full lookups.
    const writes: PipelineStatement[] = [];
    if (!lookupOwnIds) {
      const ten: string[] = [];
      const ids: string[] = [];
      jobs.forEach((j, k) => {
        if (j.kind !== "transfers") return;
        const res = results[k] as CreateTransferItemResult[];
        for (let i = 0; i < res.length; i++) {
          const r = res[i]!.result;
          if (r !== "ok" && r !== "exists" && j.items[i]!.id) (ten.push(j.tenant), ids.push(j.items[i]!.id));
        }
      });
      if (ids.length > 0) {
        writes.push({
          sql: `SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(tenant, id)
           JOIN transfers t ON t.tenant = k.tenant AND t.id = k.id LIMIT 1`,
          params: [ten, ids],
        });
      }
    }
    const checkAt = writes.length - 1;

    // Write everything the batch changed.
    const accountRows: unknown[][] = [];
    const transferRows: unknown[][] = [];
    const pendingRows: unknown[][] = [];
    const balanceRows: unknown[][] = [];
    const upd = { tenant: [] as string[], id: [] as string[], dp: [] as string[], dpo: [] as string[], cp: [] as string[], cpo: [] as string[], fl: [] as number[] };
    const pend = { tenant: [] as string[], id: [] as string[], state: [] as string[], at: [] as (string | null)[] };
    for (const [tenant, ws] of sets) {
      for (const a of ws.newAccounts) accountRows.push(accountRow(tenant, a));
      // Spent ids go into transfers as id-only rows: the primary key then refuses them again (an
      // optimistic commit that stores a spent id fails on it and reruns with full lookups).
      for (const f of ws.newFailedTransferIds) transferRows.push(spentIdRow(tenant, f));
      for (const t of ws.newTransfers) {
        transferRows.push(transferRow(tenant, t));
        if (t.flags.pending) pendingRows.push(pendingRow(tenant, ws.pending.get(t.id)!));
      }
      for (const s of ws.snapshots) balanceRows.push(balanceRow(tenant, s));
      for (const id of ws.dirtyAccounts) {
        const a = ws.accounts.get(id)!;
        upd.tenant.push(tenant);
        upd.id.push(id);
        upd.dp.push(a.debitsPendingNanos.toString());
        upd.dpo.push(a.debitsPostedNanos.toString());
        upd.cp.push(a.creditsPendingNanos.toString());
        upd.cpo.push(a.creditsPostedNanos.toString());
        upd.fl.push(flagsToBits(a.flags, ACCOUNT_FLAG_BITS));
      }
      for (const id of ws.dirtyPending) {
        const p = ws.pending.get(id)!;
        pend.tenant.push(tenant);
        pend.id.push(id);
        pend.state.push(p.state);
        pend.at.push(p.resolvedAtUs === null ? null : p.resolvedAtUs.toString());
      }
    }
    // Small batches insert their rows in the same round trip as the updates (unnest); large ones
    // COPY (a round trip of its own, but the fastest way in per row: libs/db README).
    const inserts: [string, string[], string[], unknown[][]][] = [
      ["accounts", ACCOUNT_COLUMNS, ACCOUNT_COLUMN_TYPES, accountRows],
      ["transfers", TRANSFER_COLUMNS, TRANSFER_COLUMN_TYPES, transferRows],
      ["pending_transfers", PENDING_COLUMNS, PENDING_COLUMN_TYPES, pendingRows],
      ["account_balances", BALANCE_COLUMNS, BALANCE_COLUMN_TYPES, balanceRows],
    ];
    const pipelined = inserts.reduce((n, [, , , rows]) => n + rows.length, 0) <= PIPELINED_INSERT_ROWS_MAX;
    for (const [table, columns, types, rows] of inserts) {
      if (rows.length === 0) continue;
      if (pipelined) writes.push(unnestInsert(table, columns, types, rows));
      else await db.copyRows(table, columns, rows, tx);
    }
    const clockMoved = clock.last !== lastTimestampUs;
    let accountsAt = -1;
    if (upd.id.length > 0) {
      // One statement: every touched account once (balances and flags), and the ledger's last timestamp.
      accountsAt =
        writes.push({
          sql: `WITH m AS (UPDATE ledger_meta SET last_timestamp_us = GREATEST(last_timestamp_us, $7::bigint) WHERE id = 1)
         UPDATE accounts a SET debits_pending_nanos = u.dp, debits_posted_nanos = u.dpo,
           credits_pending_nanos = u.cp, credits_posted_nanos = u.cpo, flags = u.fl
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $8::int[]) AS u(tenant, id, dp, dpo, cp, cpo, fl)
         WHERE a.tenant = u.tenant AND a.id = u.id`,
          params: [upd.tenant, upd.id, upd.dp, upd.dpo, upd.cp, upd.cpo, clock.last.toString(), upd.fl],
        }) - 1;
    } else if (clockMoved) {
      writes.push({ sql: "UPDATE ledger_meta SET last_timestamp_us = $1 WHERE id = 1", params: [clock.last.toString()] });
    }
    let pendingAt = -1;
    if (pend.id.length > 0) {
      pendingAt =
        writes.push({
          sql: `UPDATE pending_transfers p SET state = u.state, resolved_at_us = u.at
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(tenant, id, state, at)
         WHERE p.tenant = u.tenant AND p.id = u.id AND p.state = 'pending'`,
          params: [pend.tenant, pend.id, pend.state, pend.at],
        }) - 1;
    }
    if (writes.length > 0) {
      const rs = await tx.pipeline(writes);
      if (checkAt >= 0 && rs[checkAt]!.rows.length > 0) throw new OptimisticConflict();
      if (accountsAt >= 0 && rs[accountsAt]!.rowCount !== upd.id.length) throw new Error(`ledger invariant: updated ${rs[accountsAt]!.rowCount} of ${upd.id.length} accounts`);
      if (pendingAt >= 0 && rs[pendingAt]!.rowCount !== pend.id.length) throw new Error(`ledger invariant: resolved ${rs[pendingAt]!.rowCount} of ${pend.id.length} pending transfers`);
    }
    return results;
  }

  return {
    createAccounts(tenant, items) {
      if (items.length === 0) return Promise.resolve([]);
      return committer.submit({ kind: "accounts", tenant, items }, items.length) as Promise<CreateAccountItemResult[]>;
    },

    createTransfers(tenant, items) {
      if (items.length === 0) return Promise.resolve([]);
      return committer.submit({ kind: "transfers", tenant, items }, items.length) as Promise<CreateTransferItemResult[]>;
    },

    async lookupAccounts(tenant, ids) {
      if (ids.length === 0) return [];
      const r = await db.query("SELECT * FROM accounts WHERE tenant = $1 AND id = ANY($2::text[])", [tenant, [...ids]]);
      const byId = new Map(r.rows.map((row) => [row.id as string, rowToAccount(row)]));
      return inOrder(ids, byId);
    },

    async lookupTransfers(tenant, ids) {
      if (ids.length === 0) return [];
      const r = await db.query(
        `SELECT ${TRANSFER_SELECT} FROM transfers t
         LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id
         WHERE t.tenant = $1 AND t.id = ANY($2::text[]) AND (t.flags & ${SPENT_ID_FLAG}) = 0`,
        [tenant, [...ids]],
      );
      const byId = new Map(r.rows.map((row) => [row.id as string, rowToStoredTransfer(row)]));
      return inOrder(ids, byId);
    },

    async getAccountTransfers(tenant, q: AccountTransfersQuery) {
      const both = q.debits === q.credits;
      const sides: string[] = [];
      if (both || q.debits) sides.push("t.debit_account_id = $2");
      if (both || q.credits) sides.push("t.credit_account_id = $2");
      const params: unknown[] = [tenant, q.accountId];
      const where = [`t.tenant = $1`, `(${sides.join(" OR ")})`, `(t.flags & ${SPENT_ID_FLAG}) = 0`];
      if (q.code !== 0) where.push(`t.code = $${params.push(q.code)}`);
      if (q.startUs !== null) where.push(`t.timestamp_us >= $${params.push(q.startUs.toString())}`);
      if (q.endUs !== null) where.push(`t.timestamp_us < $${params.push(q.endUs.toString())}`);
      if (q.afterUs !== null) where.push(`t.timestamp_us ${q.reversed ? "<" : ">"} $${params.push(q.afterUs.toString())}`);
      const r = await db.query(
        `SELECT ${TRANSFER_SELECT} FROM transfers t
         LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id
         WHERE ${where.join(" AND ")}
         ORDER BY t.timestamp_us ${q.reversed ? "DESC" : "ASC"} LIMIT $${params.push(q.limit)}`,
        params,
      );
      return r.rows.map(rowToStoredTransfer);
    },

    async getAccountBalances(tenant, q: AccountBalancesQuery) {
      const params: unknown[] = [tenant, q.accountId];
      const where = ["tenant = $1", "account_id = $2"];
      if (q.startUs !== null) where.push(`timestamp_us >= $${params.push(q.startUs.toString())}`);
      if (q.endUs !== null) where.push(`timestamp_us < $${params.push(q.endUs.toString())}`);
      if (q.afterUs !== null) where.push(`timestamp_us ${q.reversed ? "<" : ">"} $${params.push(q.afterUs.toString())}`);
      const r = await db.query(
        `SELECT * FROM account_balances WHERE ${where.join(" AND ")}
         ORDER BY timestamp_us ${q.reversed ? "DESC" : "ASC"} LIMIT $${params.push(q.limit)}`,
        params,
      );
      return r.rows.map(rowToSnapshot);
    },

    async queryAccounts(tenant, q: QueryAccountsQuery) {
      const filters: ((params: unknown[]) => string)[] = [];
      if (q.unit !== "") filters.push((p) => `a.unit = $${p.push(q.unit)}`);
      if (q.code !== 0) filters.push((p) => `a.code = $${p.push(q.code)}`);
      if (Object.keys(q.metadata).length > 0) filters.push((p) => `a.metadata @> $${p.push(JSON.stringify(q.metadata))}::jsonb`);
      return queryPage(db, scanRowsMax, {
        from: "accounts a",
        base: ["a.tenant = $1"],
        tenant,
        q,
        filters,
        select: "a.*",
        map: rowToAccount,
      });
    },

    async queryTransfers(tenant, q: QueryTransfersQuery) {
      const filters: ((params: unknown[]) => string)[] = [];
      if (q.unit !== "") filters.push((p) => `t.unit = $${p.push(q.unit)}`);
      if (q.code !== 0) filters.push((p) => `t.code = $${p.push(q.code)}`);
      if (Object.keys(q.references).length > 0) filters.push((p) => `t.refs @> $${p.push(JSON.stringify(q.references))}::jsonb`);
      return queryPage(db, scanRowsMax, {
        // The partial time index holds real transfers only (no spent-id rows).
        from: "transfers t",
        base: ["t.tenant = $1", `(t.flags & ${SPENT_ID_FLAG}) = 0`],
        tenant,
        q,
        filters,
        select: TRANSFER_SELECT,
        join: "LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id",
        map: rowToStoredTransfer,
      });
    },

    async getBalanceAt(tenant, accountId, atUs) {
      const r = await db.query(
        `SELECT * FROM account_balances WHERE tenant = $1 AND account_id = $2 AND timestamp_us <= $3
         ORDER BY timestamp_us DESC LIMIT 1`,
        [tenant, accountId, atUs.toString()],
      );
      return r.rows[0] ? rowToSnapshot(r.rows[0]) : null;
    },

    async verify(tenant): Promise<VerifyReport> {
      // One snapshot for the whole check: accounts and transfers as of the same instant.
      return db.transaction(
        async (tx) => {
          const accounts = (await tx.query("SELECT * FROM accounts WHERE tenant = $1", [tenant])).rows.map(rowToAccount);
          const sums = new Map<string, Balances>();
          const r = await tx.query<{ account_id: string; dp: string; dpo: string; cp: string; cpo: string }>(
            `SELECT account_id, SUM(dp)::text AS dp, SUM(dpo)::text AS dpo, SUM(cp)::text AS cp, SUM(cpo)::text AS cpo FROM (
               SELECT t.debit_account_id AS account_id,
                 CASE WHEN (t.flags & 2) <> 0 AND p.state = 'pending' THEN t.amount_nanos ELSE 0 END AS dp,
                 CASE WHEN (t.flags & 10) = 0 THEN t.amount_nanos ELSE 0 END AS dpo,
                 0::bigint AS cp, 0::bigint AS cpo
               FROM transfers t LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id
               WHERE t.tenant = $1 AND (t.flags & ${SPENT_ID_FLAG}) = 0
               UNION ALL
               SELECT t.credit_account_id, 0, 0,
                 CASE WHEN (t.flags & 2) <> 0 AND p.state = 'pending' THEN t.amount_nanos ELSE 0 END,
                 CASE WHEN (t.flags & 10) = 0 THEN t.amount_nanos ELSE 0 END
               FROM transfers t LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id
               WHERE t.tenant = $1 AND (t.flags & ${SPENT_ID_FLAG}) = 0
             ) x GROUP BY account_id`,
            [tenant],
          );
          for (const row of r.rows) {
            sums.set(row.account_id, {
              debitsPendingNanos: BigInt(row.dp),
              debitsPostedNanos: BigInt(row.dpo),
              creditsPendingNanos: BigInt(row.cp),
              creditsPostedNanos: BigInt(row.cpo),
            });
          }
          const count = await tx.query<{ n: bigint }>(`SELECT COUNT(*)::bigint AS n FROM transfers WHERE tenant = $1 AND (flags & ${SPENT_ID_FLAG}) = 0`, [tenant]);
          const pendingWithoutState = await tx.query<{ n: bigint }>(
            `SELECT COUNT(*)::bigint AS n FROM transfers t LEFT JOIN pending_transfers p ON p.tenant = t.tenant AND p.id = t.id
             WHERE t.tenant = $1 AND (t.flags & 2) <> 0 AND p.id IS NULL`,
            [tenant],
          );
          const report = verifyLedger(accounts, sums, Number(count.rows[0]!.n));
          const add = (v: string) => {
            report.ok = false;
            if (report.violations.length < VERIFY_VIOLATIONS_MAX) report.violations.push(v);
          };
          if (BigInt(pendingWithoutState.rows[0]!.n) > 0n) add(`${pendingWithoutState.rows[0]!.n} pending transfers have no pending state`);
          // A spent-id row moves nothing: no accounts, no amount, no other flag.
          const badSpent = await tx.query<{ n: bigint }>(
            `SELECT COUNT(*)::bigint AS n FROM transfers WHERE tenant = $1 AND (flags & ${SPENT_ID_FLAG}) <> 0
               AND (flags <> ${SPENT_ID_FLAG} OR amount_nanos <> 0 OR debit_account_id <> '' OR credit_account_id <> '' OR failed_result IS NULL)`,
            [tenant],
          );
          if (BigInt(badSpent.rows[0]!.n) > 0n) add(`${badSpent.rows[0]!.n} spent-id rows of transfers name accounts, an amount or other flags`);
          // Invariants 4 and 5 and the closed flag (src/store/verify-sql.ts).
          await verifyHistory(tx, tenant, add);
          return report;
        },
        { isolation: "repeatable read" },
      );
    },

    expireDue() {
      return committer.submit({ kind: "expire" }, 1) as Promise<number>;
    },

    close() {
      return committer.close();
    },
  };
}

/**
 * One page of QueryAccounts / QueryTransfers in timestamp order. Without filters every row of the
 * time range matches, so the time index serves the page directly. With filters the scan is
 * bounded: the timestamp of the scanMax-th row of the range (in the listing's direction) closes a
 * window; the page holds the matches inside it, and when the window ends before the page is full,
 * scannedToUs tells the caller to continue after it.
 */
async function queryPage<T>(
  db: Db,
  scanMax: number,
  s: {
    from: string;
    base: string[];
    tenant: string;
    q: { startUs: bigint | null; endUs: bigint | null; afterUs: bigint | null; reversed: boolean; limit: number };
    filters: ((params: unknown[]) => string)[];
    select: string;
    join?: string;
    map: (row: Record<string, unknown>) => T & { timestampUs: bigint };
  },
): Promise<QueryPage<T>> {
  const alias = s.from.split(" ")[1]!;
  const ts = `${alias}.timestamp_us`;
  const dir = s.q.reversed ? "DESC" : "ASC";
  const params: unknown[] = [s.tenant];
  const where = [...s.base];
  if (s.q.startUs !== null) where.push(`${ts} >= $${params.push(s.q.startUs.toString())}`);
  if (s.q.endUs !== null) where.push(`${ts} < $${params.push(s.q.endUs.toString())}`);
  if (s.q.afterUs !== null) where.push(`${ts} ${s.q.reversed ? "<" : ">"} $${params.push(s.q.afterUs.toString())}`);
  let edge: bigint | null = null;
  if (s.filters.length > 0) {
    const e = await db.query<{ timestamp_us: bigint }>(
      `SELECT ${ts} FROM ${s.from} WHERE ${where.join(" AND ")} ORDER BY ${ts} ${dir} OFFSET $${params.length + 1} LIMIT 1`,
      [...params, scanMax - 1],
    );
    if (e.rows[0]) edge = BigInt(e.rows[0].timestamp_us);
    if (edge !== null) where.push(`${ts} ${s.q.reversed ? ">=" : "<="} $${params.push(edge.toString())}`);
    for (const f of s.filters) where.push(f(params));
  }
  const r = await db.query(
    `SELECT ${s.select} FROM ${s.from} ${s.join ?? ""} WHERE ${where.join(" AND ")} ORDER BY ${ts} ${dir} LIMIT $${params.push(s.q.limit)}`,
    params,
  );
  const items = r.rows.map(s.map);
  return { items, scannedToUs: items.length < s.q.limit ? edge : null };
}

/** Errors that may come from one request of a commit (else: the connection's or the moment's, the same for all). */
function mayBelongToOneJob(e: unknown): boolean {
  if (isDbError(e)) return !(e.code === "unavailable" || e.code === "timeout" || e.code === "serialization" || e.code === "nested_transaction");
  return true;
}

/** A commit's optimistic idempotency check found an existing id: run it again with full lookups. */
class OptimisticConflict extends Error {
  constructor() {
    super("a transfer id of the batch exists already");
  }
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const a = m.get(k);
  if (a) a.push(v);
  else m.set(k, [v]);
}

function inOrder<T>(ids: readonly string[], byId: Map<string, T>): T[] {
  const out: T[] = [];
  const seen = new Set<string>();
  for (const id of ids) {
    const v = byId.get(id);
    if (v !== undefined && !seen.has(id)) {
      out.push(v);
      seen.add(id);
    }
  }
  return out;
}

export type { BalanceSnapshot, StoredTransfer };
