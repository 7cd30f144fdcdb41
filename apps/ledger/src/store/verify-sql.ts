/**
 * Verify's checks of invariants 4 and 5 (a pending transfer changes state once; ledger timestamps
 * are unique, after what they follow, and not beyond ledger_meta) and of the accounts' closed flag,
 * in SQL over one tenant, inside Verify's repeatable-read transaction. Each query is set-based
 * (hash joins and aggregates over the tenant's rows, or index probes per account) and returns at
 * most VERIFY_VIOLATIONS_MAX rows; every message names the tenant and the ids involved.
 */
import type { Tx } from "@nanobill/db";
import { VERIFY_VIOLATIONS_MAX } from "../limits.js";
import { ACCOUNT_FLAG_BITS, SPENT_ID_FLAG, TRANSFER_FLAG_BITS } from "./types.js";

// The stored flag bits the SQL tests (types.ts).
const PENDING = TRANSFER_FLAG_BITS.pending;
const POST = TRANSFER_FLAG_BITS.postPendingTransfer;
const VOID = TRANSFER_FLAG_BITS.voidPendingTransfer;
const CLOSING_DEBIT = TRANSFER_FLAG_BITS.closingDebit;
const CLOSING_CREDIT = TRANSFER_FLAG_BITS.closingCredit;
const CLOSED = ACCOUNT_FLAG_BITS.closed;
/** Real (not spent-id) post or void rows. */
const RESOLUTION = `(flags & ${POST | VOID}) <> 0 AND (flags & ${SPENT_ID_FLAG}) = 0`;
const LIMIT = VERIFY_VIOLATIONS_MAX;

/** Runs every check; `add` receives each violation (the caller caps their number). */
export async function verifyHistory(tx: Tx, tenant: string, add: (violation: string) => void): Promise<void> {
  const where = `tenant ${tenant}`;

  // 1. Each post/void row against its pending transfer and the pending transfer's state.
  const res = await tx.query<{
    id: string;
    pending_id: string | null;
    is_post: boolean;
    both: boolean;
    amount: string;
    ts: string;
    p_found: boolean;
    p_pending: boolean;
    p_amount: string | null;
    p_ts: string | null;
    other_accounts: boolean;
    state: string | null;
    resolved_at: string | null;
  }>(
    `SELECT r.id, r.pending_id, (r.flags & ${POST}) <> 0 AS is_post, (r.flags & ${POST | VOID}) = ${POST | VOID} AS both,
       r.amount_nanos::text AS amount, r.timestamp_us::text AS ts,
       p.id IS NOT NULL AS p_found, COALESCE((p.flags & ${PENDING}) <> 0, false) AS p_pending,
       p.amount_nanos::text AS p_amount, p.timestamp_us::text AS p_ts,
       COALESCE((p.debit_account_id, p.credit_account_id, p.unit) <> (r.debit_account_id, r.credit_account_id, r.unit), false) AS other_accounts,
       s.state, s.resolved_at_us::text AS resolved_at
     FROM transfers r
     LEFT JOIN transfers p ON p.tenant = r.tenant AND p.id = r.pending_id
     LEFT JOIN pending_transfers s ON s.tenant = r.tenant AND s.id = r.pending_id
     WHERE r.tenant = $1 AND (r.flags & ${POST | VOID}) <> 0 AND (r.flags & ${SPENT_ID_FLAG}) = 0 AND (
       p.id IS NULL OR (p.flags & ${PENDING}) = 0 OR (r.flags & ${POST | VOID}) = ${POST | VOID}
       OR s.state IS DISTINCT FROM (CASE WHEN (r.flags & ${POST}) <> 0 THEN 'posted' ELSE 'voided' END)
       OR s.resolved_at_us IS DISTINCT FROM r.timestamp_us
       OR ((r.flags & ${POST}) <> 0 AND r.amount_nanos > p.amount_nanos)
       OR ((r.flags & ${POST}) = 0 AND r.amount_nanos <> p.amount_nanos)
       OR r.timestamp_us <= p.timestamp_us
       OR (p.debit_account_id, p.credit_account_id, p.unit) <> (r.debit_account_id, r.credit_account_id, r.unit))
     ORDER BY r.timestamp_us, r.id LIMIT ${LIMIT}`,
    [tenant],
  );
  for (const r of res.rows) {
    const kind = r.both ? "post+void" : r.is_post ? "post" : "void";
    const of = `${where}: ${kind} transfer ${r.id} of pending transfer ${r.pending_id ?? "(none)"}`;
    if (r.both) add(`${of} has both the post and the void flag`);
    if (!r.p_found) {
      add(`${of}: no such transfer`);
      continue;
    }
    if (!r.p_pending) {
      add(`${of}: that transfer is not pending`);
      continue;
    }
    const want = r.is_post ? "posted" : "voided";
    if (r.state !== want) add(`${of}: the pending transfer's state is ${r.state ?? "missing"}, not ${want}`);
    else if (r.resolved_at !== r.ts) add(`${of}: the pending transfer was ${want} at ${r.resolved_at}, not at this transfer's timestamp ${r.ts}`);
    if (r.is_post && BigInt(r.amount) > BigInt(r.p_amount!)) add(`${of} posts ${r.amount} nanos, more than the pending amount ${r.p_amount}`);
    if (!r.is_post && r.amount !== r.p_amount) add(`${of} releases ${r.amount} nanos, not the pending amount ${r.p_amount}`);
    if (BigInt(r.ts) <= BigInt(r.p_ts!)) add(`${of} has timestamp ${r.ts}, not after the pending transfer's ${r.p_ts}`);
    if (r.other_accounts) add(`${of} names other accounts or another unit than the pending transfer`);
  }

  // 2. Each pending state: of a pending transfer, resolved at most once and by a row of its kind
  //    (posted: a post; voided: a void; expired / pending: none), resolved_at set iff resolved,
  //    an expiry after the pending transfer and only of one with a timeout.
  const states = await tx.query<{
    id: string;
    state: string;
    resolved_at: string | null;
    p_pending: boolean;
    p_ts: string | null;
    has_timeout: boolean;
    n: number;
    posts: number;
    voids: number;
    first_id: string | null;
    last_id: string | null;
  }>(
    `WITH r AS (
       SELECT pending_id, COUNT(*)::int AS n, COUNT(*) FILTER (WHERE (flags & ${POST}) <> 0)::int AS posts,
         COUNT(*) FILTER (WHERE (flags & ${VOID}) <> 0)::int AS voids, MIN(id) AS first_id, MAX(id) AS last_id
       FROM transfers WHERE tenant = $1 AND ${RESOLUTION} GROUP BY pending_id)
     SELECT s.id, s.state, s.resolved_at_us::text AS resolved_at,
       COALESCE((p.flags & ${PENDING}) <> 0, false) AS p_pending, p.timestamp_us::text AS p_ts,
       p.expires_at_us IS NOT NULL AS has_timeout,
       COALESCE(r.n, 0) AS n, COALESCE(r.posts, 0) AS posts, COALESCE(r.voids, 0) AS voids, r.first_id, r.last_id
     FROM pending_transfers s
     LEFT JOIN transfers p ON p.tenant = s.tenant AND p.id = s.id
     LEFT JOIN r ON r.pending_id = s.id
     WHERE s.tenant = $1 AND (
       p.id IS NULL OR (p.flags & ${PENDING}) = 0 OR COALESCE(r.n, 0) > 1
       OR (s.state = 'posted' AND COALESCE(r.posts, 0) = 0)
       OR (s.state = 'voided' AND COALESCE(r.voids, 0) = 0)
       OR ((s.state = 'pending') <> (s.resolved_at_us IS NULL))
       OR (s.state = 'expired' AND (p.expires_at_us IS NULL OR s.resolved_at_us <= p.timestamp_us)))
     ORDER BY s.id LIMIT ${LIMIT}`,
    [tenant],
  );
  for (const s of states.rows) {
    const of = `${where}: pending transfer ${s.id} (state ${s.state})`;
    if (!s.p_pending) {
      add(`${of} has a pending state but is not a stored pending transfer`);
      continue;
    }
    if (s.n > 1) add(`${of} is resolved ${s.n} times (${s.posts} posts, ${s.voids} voids: ${s.first_id} ... ${s.last_id})`);
    if (s.state === "posted" && s.posts === 0) add(`${of} has no post transfer`);
    if (s.state === "voided" && s.voids === 0) add(`${of} has no void transfer`);
    if ((s.state === "pending") !== (s.resolved_at === null)) add(`${of} has resolved_at ${s.resolved_at ?? "null"}`);
    if (s.state === "expired" && !s.has_timeout) add(`${of} has no timeout, so it cannot expire`);
    if (s.state === "expired" && s.resolved_at !== null && BigInt(s.resolved_at) <= BigInt(s.p_ts!)) {
      add(`${of} expired at ${s.resolved_at}, not after its own timestamp ${s.p_ts}`);
    }
  }

  // 3. Ledger timestamps (accounts, transfers, expiries; not spent-id rows, which carry the
  //    failure time) are unique within the tenant and not after ledger_meta.last_timestamp_us.
  //    One hash aggregate over integers; the ids are looked up only for the timestamps found.
  const bad = await tx.query<{ ts: string; n: number }>(
    `WITH ts AS (
       SELECT timestamp_us AS ts FROM accounts WHERE tenant = $1
       UNION ALL SELECT timestamp_us FROM transfers WHERE tenant = $1 AND (flags & ${SPENT_ID_FLAG}) = 0
       UNION ALL SELECT resolved_at_us FROM pending_transfers WHERE tenant = $1 AND state = 'expired')
     SELECT ts::text, COUNT(*)::int AS n FROM ts GROUP BY ts
     HAVING COUNT(*) > 1 OR ts > (SELECT last_timestamp_us FROM ledger_meta WHERE id = 1)
     ORDER BY ts LIMIT ${LIMIT}`,
    [tenant],
  );
  if (bad.rows.length > 0) {
    const last = (await tx.query<{ l: string }>("SELECT last_timestamp_us::text AS l FROM ledger_meta WHERE id = 1")).rows[0]!.l;
    const named = await tx.query<{ ts: string; what: string }>(
      `SELECT ts::text, what FROM (
         SELECT timestamp_us AS ts, 'account ' || id AS what FROM accounts WHERE tenant = $1 AND timestamp_us = ANY($2::bigint[])
         UNION ALL SELECT timestamp_us, 'transfer ' || id FROM transfers
           WHERE tenant = $1 AND (flags & ${SPENT_ID_FLAG}) = 0 AND timestamp_us = ANY($2::bigint[])
         UNION ALL SELECT resolved_at_us, 'the expiry of ' || id FROM pending_transfers
           WHERE tenant = $1 AND state = 'expired' AND resolved_at_us = ANY($2::bigint[])) x
       ORDER BY ts, what`,
      [tenant, bad.rows.map((b) => b.ts)],
    );
    const byTs = new Map<string, string[]>();
    for (const r of named.rows) byTs.set(r.ts, [...(byTs.get(r.ts) ?? []), r.what]);
    for (const b of bad.rows) {
      const whats = (byTs.get(b.ts) ?? []).slice(0, 5).join(", ");
      if (b.n > 1) add(`${where}: timestamp ${b.ts} is not unique: ${b.n} events have it (${whats})`);
      if (BigInt(b.ts) > BigInt(last)) add(`${where}: timestamp ${b.ts} (${whats}) is after the ledger's last timestamp ${last}`);
    }
  }

  // 4. A transfer comes after both of its accounts' creation (index probes per account on the
  //    transfers' (tenant, account, timestamp) indexes).
  const early = await tx.query<{ account_id: string; account_ts: string; id: string; ts: string }>(
    `SELECT a.id AS account_id, a.timestamp_us::text AS account_ts, t.id, t.timestamp_us::text AS ts
     FROM accounts a CROSS JOIN LATERAL (
       (SELECT id, timestamp_us FROM transfers d WHERE d.tenant = a.tenant AND d.debit_account_id = a.id AND d.timestamp_us <= a.timestamp_us
        ORDER BY d.timestamp_us LIMIT 1)
       UNION ALL
       (SELECT id, timestamp_us FROM transfers c WHERE c.tenant = a.tenant AND c.credit_account_id = a.id AND c.timestamp_us <= a.timestamp_us
        ORDER BY c.timestamp_us LIMIT 1)) t
     WHERE a.tenant = $1 ORDER BY a.id, t.timestamp_us LIMIT ${LIMIT}`,
    [tenant],
  );
  for (const e of early.rows) add(`${where}: transfer ${e.id} has timestamp ${e.ts}, not after the creation of its account ${e.account_id} at ${e.account_ts}`);

  // 5. The closed flag: an account is closed iff one pending closing transfer names it on its
  //    closing side, except an account created closed, which never takes a transfer.
  const closing = await tx.query<{ id: string; closed: boolean; n: number; first_id: string | null }>(
    `WITH c AS (
       SELECT t.id, t.flags, t.debit_account_id, t.credit_account_id FROM pending_transfers s
       JOIN transfers t ON t.tenant = s.tenant AND t.id = s.id
       WHERE s.tenant = $1 AND s.state = 'pending' AND (t.flags & ${CLOSING_DEBIT | CLOSING_CREDIT}) <> 0),
     closes AS (
       SELECT id, debit_account_id AS account_id FROM c WHERE (flags & ${CLOSING_DEBIT}) <> 0
       UNION ALL SELECT id, credit_account_id FROM c WHERE (flags & ${CLOSING_CREDIT}) <> 0)
     SELECT * FROM (
       SELECT a.id, (a.flags & ${CLOSED}) <> 0 AS closed, COUNT(x.id)::int AS n, MIN(x.id) AS first_id
       FROM accounts a LEFT JOIN closes x ON x.account_id = a.id
       WHERE a.tenant = $1 AND ((a.flags & ${CLOSED}) <> 0 OR x.id IS NOT NULL)
       GROUP BY a.id, a.flags) k
     WHERE (NOT closed AND n > 0) OR (closed AND n > 1)
       OR (closed AND n = 0 AND (EXISTS (SELECT 1 FROM transfers d WHERE d.tenant = $1 AND d.debit_account_id = k.id)
         OR EXISTS (SELECT 1 FROM transfers c WHERE c.tenant = $1 AND c.credit_account_id = k.id)))
     ORDER BY id LIMIT ${LIMIT}`,
    [tenant],
  );
  for (const c of closing.rows) {
    const of = `${where}: account ${c.id}`;
    if (!c.closed) add(`${of} is open, but pending closing transfer ${c.first_id} closes it`);
    else if (c.n > 1) add(`${of} is closed by ${c.n} pending closing transfers (${c.first_id}, ...); a closed account takes no new one`);
    else add(`${of} is closed, but no pending closing transfer closes it (and transfers name it, so it was not created closed)`);
  }
}
