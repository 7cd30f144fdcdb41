/**
 * Posts the ledger outbox: chains of transfers written in the same PostgreSQL transaction as the
 * wallet change, sent to the ledger right after commit (flush) and retried in the background
 * until posted. Transfer ids derive from caller ids, so re-sending is harmless (EXISTS).
 *
 * Tracing: each call to the ledger runs in a batch span that continues the trace stored with its
 * batch's first row (the call that wrote it), not the trace of whoever runs the flush (a row may
 * be posted by a flush started for another call, or by the background loop), and links to the
 * traces of the batch's other rows (telemetry's withBatchTrace).
 */
import type { Db } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { withBatchTrace } from "@nanobill/telemetry";
import type { PlannedTransfer } from "./domain/ledger-plan.js";
import { LEDGER_BATCH_TRANSFERS_MAX } from "./limits.js";
import type { LedgerPort } from "./ledger-port.js";
import { markOutbox, nextOutbox } from "./store/store.js";

/** Results that mean "already done" for a chain item. */
const DONE = new Set(["OK", "EXISTS"]);
/** Results of a void that mean the pending amount is released already (the outcome a void wants). */
const VOID_DONE = new Set(["PENDING_TRANSFER_ALREADY_VOIDED", "PENDING_TRANSFER_EXPIRED"]);
/**
 * Results that could succeed later if a prerequisite (an account, the pending transfer) arrived
 * late: retry. The wallet's own ordering makes them unexpected (accounts are created with the
 * wallet; a chain's pending transfer is in an earlier outbox row, visible before its post). The
 * ledger remembers such failed ids (TigerBeetle's id_already_failed), so a retry answers
 * ID_ALREADY_FAILED and the chain is recorded as failed, logged and counted.
 */
const RETRY = new Set(["PENDING_TRANSFER_NOT_FOUND", "DEBIT_ACCOUNT_NOT_FOUND", "CREDIT_ACCOUNT_NOT_FOUND"]);
/** Outbox rows read per round. */
const ROUND_ROWS_MAX = 2_000;
/** Rounds per flush (bounded work per call). */
const ROUNDS_MAX = 20;

export interface LedgerOutbox {
  /** Resolves when every chain committed before the call has been sent (posted, or recorded as failed). */
  flush(): Promise<void>;
  /** Chains whose post failed for good (logged; visible in ledger_outbox.error). */
  readonly failures: number;
}

export function createLedgerOutbox(deps: { db: Db; ledger: LedgerPort; logger: Logger; clock: Clock }): LedgerOutbox {
  let current: Promise<void> | null = null;
  let next: Promise<void> | null = null;
  let failures = 0;

  async function round(): Promise<number> {
    const rows = await nextOutbox(deps.db, ROUND_ROWS_MAX);
    if (rows.length === 0) return 0;
    const done: bigint[] = [];
    const failed: Array<{ seq: bigint; error: string }> = [];
    const retry: Array<{ seq: bigint; error: string }> = [];
    // Group consecutive rows by tenant (one call acts for one tenant), chains kept whole.
    let i = 0;
    while (i < rows.length) {
      const tenant = rows[i]!.tenant;
      const batch: typeof rows = [];
      let n = 0;
      while (i < rows.length && rows[i]!.tenant === tenant && (batch.length === 0 || n + rows[i]!.transfers.length <= LEDGER_BATCH_TRANSFERS_MAX)) {
        batch.push(rows[i]!);
        n += rows[i]!.transfers.length;
        i++;
      }
      const transfers: PlannedTransfer[] = batch.flatMap((r) => r.transfers);
      const traces = batch.map((r) => r.trace);
      let results: string[];
      try {
        results = await withBatchTrace("credit-wallet.ledger_outbox.post", traces, () => deps.ledger.createTransfers(tenant, transfers));
      } catch (e) {
        // End the round here: a later row may post or void a pending transfer of this batch, and
        // sent ahead of it would fail for good (the ledger remembers the failed id).
        deps.logger.warn("ledger unavailable; outbox will retry", { err: String(e) });
        for (const r of [...batch, ...rows.slice(i)]) retry.push({ seq: r.seq, error: String(e).slice(0, 500) });
        break;
      }
      // A post that reached the ledger after its pending transfer's timeout (PENDING_TRANSFER_EXPIRED;
      // the pending amount went back to the wallet account): its plain transfer (`late`, same
      // accounts and amount, deterministic id) books the burn instead, in one more call.
      const late = new Map<number, string>();
      const lateTs: PlannedTransfer[] = [];
      const lateAt: number[] = [];
      transfers.forEach((t, j) => {
        if (t.post && t.late && results[j] === "PENDING_TRANSFER_EXPIRED") {
          lateTs.push(t.late);
          lateAt.push(j);
        }
      });
      if (lateTs.length > 0) {
        try {
          const lr = await withBatchTrace("credit-wallet.ledger_outbox.post_late", traces, () => deps.ledger.createTransfers(tenant, lateTs));
          lateAt.forEach((j, m) => late.set(j, lr[m] ?? "UNKNOWN"));
        } catch (e) {
          deps.logger.warn("ledger unavailable; outbox will retry", { err: String(e) });
          for (const r of [...batch, ...rows.slice(i)]) retry.push({ seq: r.seq, error: String(e).slice(0, 500) });
          break;
        }
        deps.logger.warn("hold captures posted after the pending timeout, booked as plain transfers", { tenant, transfers: lateTs.map((t) => t.id).join(",") });
      }
      for (const [j, x] of late) results[j] = DONE.has(x) ? "OK" : `${x} (late transfer ${transfers[j]!.late!.id})`;
      let k = 0;
      for (const r of batch) {
        const rs = results.slice(k, k + r.transfers.length);
        k += r.transfers.length;
        // LINKED_EVENT_FAILED only follows another item's real failure, which is what is reported.
        const bad = rs.map((x, j) => ({ x, t: r.transfers[j]! })).filter(({ x, t }) => !DONE.has(x) && !(t.void && VOID_DONE.has(x)) && x !== "LINKED_EVENT_FAILED");
        if (bad.length === 0) done.push(r.seq);
        else if (bad.every(({ x }) => RETRY.has(x))) retry.push({ seq: r.seq, error: bad.map(({ x, t }) => `${t.id}: ${x}`).join("; ") });
        else {
          failures++;
          const error = bad.map(({ x, t }) => `${t.id}: ${x}`).join("; ");
          deps.logger.error("ledger refused a wallet transfer chain", { tenant, error });
          failed.push({ seq: r.seq, error });
        }
      }
    }
    await markOutbox(deps.db, done, failed, retry, deps.clock.now());
    return done.length + failed.length;
  }

  async function run(): Promise<void> {
    for (let r = 0; r < ROUNDS_MAX; r++) {
      const n = await round();
      if (n === 0) return;
    }
  }

  function flush(): Promise<void> {
    if (current === null) {
      current = run().finally(() => {
        current = null;
      });
      return current;
    }
    if (next === null) {
      next = current.catch(() => undefined).then(() => {
        next = null;
        return flush();
      });
    }
    return next;
  }

  return {
    flush,
    get failures() {
      return failures;
    },
  };
}
