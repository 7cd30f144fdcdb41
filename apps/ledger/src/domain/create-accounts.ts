/** CreateAccounts semantics (pure): validation, idempotency, linked chains. */
import { isUnitCode } from "@nanobill/money";
import { METADATA_ENTRIES_MAX } from "../limits.js";
import type { LedgerClock } from "./clock.js";
import { checkImported } from "./imported.js";
import { type CreateAccountItemResult, type CreateAccountResult } from "./results.js";
import type { Account, NewAccount } from "./types.js";
import { isValidId, isValidSmallMap, sameMap } from "./validate.js";
import type { WorkingSet } from "./working-set.js";

/** The result of one account against the current state, by precedence (no change made). */
export function checkAccount(ws: WorkingSet, a: NewAccount, clock: LedgerClock, batchImported = false): CreateAccountResult {
  const imp = checkImported(a, batchImported, clock);
  if (imp) return imp;
  if (!isValidId(a.id)) return "id_invalid";
  // An existing id is compared first (TigerBeetle 0.16.4 and later; results.ts lists the order).
  const e = ws.accounts.get(a.id);
  if (e) {
    if (!sameAccountFlags(e, a)) return "exists_with_different_flags";
    if (e.unit !== a.unit) return "exists_with_different_unit";
    if (e.code !== a.code) return "exists_with_different_code";
    if (!sameMap(e.metadata, a.metadata)) return "exists_with_different_metadata";
    return "exists";
  }
  if (a.flags.debitsMustNotExceedCredits && a.flags.creditsMustNotExceedDebits) return "flags_are_mutually_exclusive";
  if (!isUnitCode(a.unit)) return "unit_invalid";
  if (!Number.isInteger(a.code) || a.code <= 0) return "code_must_not_be_zero";
  if (!isValidSmallMap(a.metadata, METADATA_ENTRIES_MAX)) return "metadata_invalid";
  // Timestamps are unique and strictly increasing across the ledger.
  if (a.flags.imported && a.timestampUs <= clock.last) return "imported_event_timestamp_must_not_regress";
  return "ok";
}

function sameAccountFlags(e: Account, a: NewAccount): boolean {
  return (
    e.flags.linked === a.flags.linked &&
    e.flags.debitsMustNotExceedCredits === a.flags.debitsMustNotExceedCredits &&
    e.flags.creditsMustNotExceedDebits === a.flags.creditsMustNotExceedDebits &&
    e.flags.history === a.flags.history &&
    e.flags.imported === a.flags.imported
    // closed is state (closing transfers change it), not compared.
  );
}

/**
 * Applies a batch of new accounts in order to the working set and returns one result per item.
 * A linked chain (items with flags.linked, closed by the first item without it) is created all
 * or nothing; a chain left open at the end of the batch fails with linked_event_chain_open.
 */
export function createAccounts(ws: WorkingSet, items: readonly NewAccount[], clock: LedgerClock): CreateAccountItemResult[] {
  const batchImported = items.length > 0 && items[0]!.flags.imported;
  return applyChained(
    items,
    (a) => a.flags.linked,
    (a) => {
      const r = checkAccount(ws, a, clock, batchImported);
      if (r === "ok") {
        const ts = a.flags.imported ? clock.importAt(a.timestampUs) : clock.next();
        ws.addAccount({
          id: a.id,
          unit: a.unit,
          code: a.code,
          flags: { ...a.flags },
          metadata: { ...a.metadata },
          debitsPendingNanos: 0n,
          debitsPostedNanos: 0n,
          creditsPendingNanos: 0n,
          creditsPostedNanos: 0n,
          timestampUs: ts,
        });
        return { result: r, id: a.id, timestampUs: ts };
      }
      if (r === "exists") return { result: r, id: a.id, timestampUs: ws.accounts.get(a.id)!.timestampUs };
      return { result: r, id: a.id, timestampUs: null };
    },
    ws,
    (id, result) => ({ result, id, timestampUs: null }),
    (it) => it.id,
  );
}

/**
 * Linked-chain driver shared by accounts and transfers. Each item is applied in order; items of
 * a chain are rolled back together when one fails: the failing item keeps its own result, the
 * others get linked_event_failed. The last item of the batch must not be linked: its chain gets
 * linked_event_failed, and the last item linked_event_chain_open.
 */
export function applyChained<I, R extends { result: string }>(
  items: readonly I[],
  isLinked: (item: I) => boolean,
  apply: (item: I) => R,
  ws: WorkingSet,
  failed: (id: string, result: "linked_event_failed" | "linked_event_chain_open") => R,
  idOf: (item: I) => string,
): R[] {
  const results: R[] = new Array(items.length);
  let i = 0;
  while (i < items.length) {
    // The chain is items[i..end] where end is the first unlinked item (or the last item).
    let end = i;
    while (end < items.length - 1 && isLinked(items[end]!)) end++;
    const open = isLinked(items[end]!); // only possible when end is the last item
    if (end === i && !open) {
      // A single unlinked item: no chain bookkeeping (nothing is journaled).
      results[i] = apply(items[i]!);
      i++;
      continue;
    }
    const mark = ws.mark();
    let failedAt = -1;
    for (let k = i; k <= end; k++) {
      const r = open && k === end ? failed(idOf(items[k]!), "linked_event_chain_open") : apply(items[k]!);
      results[k] = r;
      if (r.result !== "ok" && r.result !== "exists") {
        failedAt = k;
        break;
      }
    }
    if (failedAt >= 0) {
      ws.rollback(mark);
      // The last item of a chain left open answers linked_event_chain_open even when an earlier
      // item broke the chain (TigerBeetle checks "chain open" before "chain broken"); the others
      // linked_event_failed.
      for (let k = i; k <= end; k++) if (k !== failedAt) results[k] = failed(idOf(items[k]!), open && k === end ? "linked_event_chain_open" : "linked_event_failed");
    }
    ws.commit();
    i = end + 1;
  }
  return results;
}
