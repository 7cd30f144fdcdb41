import { createHash } from "node:crypto";

/** LEDGER_ID_CHARS_MAX: the longest ledger account / transfer id (apps/ledger limits.ts ID_BYTES_MAX). */
export const LEDGER_ID_CHARS_MAX = 128;

/**
 * ledgerId: a ledger account or transfer id from its natural form (one implementation for every
 * service that names ledger ids from caller-supplied parts such as customer or grant ids). An id
 * that fits is returned as it is, so existing accounts keep their ids; a longer one keeps an
 * 80-character readable head and ends with 40 hex digits of its SHA-256 (deterministic: replays
 * and later posts name the same id).
 */
export function ledgerId(natural: string): string {
  if (natural.length <= LEDGER_ID_CHARS_MAX) return natural;
  return `${natural.slice(0, 80)}.${createHash("sha256").update(natural).digest("hex").slice(0, 40)}`;
}
