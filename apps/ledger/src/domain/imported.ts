/** The imported-event checks shared by accounts and transfers (pure). */
import { INT64_MAX } from "@nanobill/money";
import type { LedgerClock } from "./clock.js";

/**
 * The checks of an item against its request's first item and the clock (imported events), by
 * precedence: they come before the id checks. batchImported is the first item's imported flag.
 */
export function checkImported(
  t: { flags: { imported: boolean }; timestampUs: bigint },
  batchImported: boolean,
  clock: LedgerClock,
):
  | "imported_event_expected"
  | "imported_event_not_expected"
  | "timestamp_must_be_zero"
  | "imported_event_timestamp_out_of_range"
  | "imported_event_timestamp_must_not_advance"
  | null {
  if (t.flags.imported !== batchImported) return t.flags.imported ? "imported_event_not_expected" : "imported_event_expected";
  if (!t.flags.imported) return t.timestampUs !== 0n ? "timestamp_must_be_zero" : null;
  if (t.timestampUs <= 0n || t.timestampUs > INT64_MAX) return "imported_event_timestamp_out_of_range";
  // Imported events are history: strictly before the ledger's clock.
  if (t.timestampUs >= clock.peek()) return "imported_event_timestamp_must_not_advance";
  return null;
}
