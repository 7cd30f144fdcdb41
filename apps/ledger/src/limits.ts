/**
 * Every limit of the ledger, in one place. Each is enforced (domain, service or store) and tested
 * at its edge.
 */

/** Most transfers in one CreateTransfers request (TigerBeetle's batch size). */
export const TRANSFERS_PER_REQUEST_MAX = 8_190;
/** Most accounts in one CreateAccounts request. */
export const ACCOUNTS_PER_REQUEST_MAX = 8_190;
/** Most ids in one LookupAccounts / LookupTransfers request. */
export const LOOKUP_IDS_MAX = 8_190;
/** Longest id (accounts, transfers, pending ids), in bytes (ASCII only). */
export const ID_BYTES_MAX = 128;
/** Most metadata entries on an account. */
export const METADATA_ENTRIES_MAX = 16;
/** Most reference entries on a transfer. */
export const REFERENCES_ENTRIES_MAX = 8;
/** Longest metadata / reference key, in bytes. */
export const MAP_KEY_BYTES_MAX = 64;
/** Longest metadata / reference value, in bytes. */
export const MAP_VALUE_BYTES_MAX = 256;
/** Bound on one transfer amount: 10^18 nanos (one billion units). Same as @nanobill/money. */
export const TRANSFER_AMOUNT_NANOS_MAX = 10n ** 18n;
/** Page size when a listing asks for 0. */
export const PAGE_SIZE_DEFAULT = 100;
/** Largest page of GetAccountTransfers / GetAccountBalances. */
export const PAGE_SIZE_MAX = 1_000;
/**
 * Most rows one QueryAccounts / QueryTransfers call scans in timestamp order to apply its filters
 * (unit, code, metadata / references): when the window ends before the page is full, the page
 * comes back short with a next_page_token that continues after the window.
 */
export const QUERY_SCAN_ROWS_MAX = 100_000;
/** Longest page token accepted, in bytes. */
export const PAGE_TOKEN_BYTES_MAX = 64;
/**
 * Most items (transfers + accounts) waiting in the group-commit queue; a request that would pass
 * it is refused with ResourceExhausted (32 clients x 8,190 fit).
 */
export const COMMIT_QUEUE_ITEMS_MAX = 262_144;
/** Most items applied in one group-commit transaction (requests are never split). */
export const COMMIT_ITEMS_PER_TRANSACTION_MAX = 32_768;
/** Most pending transfers one expiry sweep expires per transaction. */
export const EXPIRY_SWEEP_BATCH_MAX = 8_190;
/** How often the expiry sweep runs, in milliseconds. */
export const EXPIRY_SWEEP_INTERVAL_MS = 1_000;
/** Most violations one Verify reports. */
export const VERIFY_VIOLATIONS_MAX = 100;
/** Largest request message accepted by the standalone server, in bytes (8,190 transfers fit). */
export const REQUEST_BYTES_MAX = 8 * 1024 * 1024;
/** Largest response message, in bytes (1,000 transfers with references fit). */
export const RESPONSE_BYTES_MAX = 16 * 1024 * 1024;
/** Longest deadline a client may ask for, in milliseconds. */
export const TIMEOUT_MS_MAX = 60_000;
/** Deadline of a call that sets none, in milliseconds. */
export const TIMEOUT_MS_DEFAULT = 30_000;
/** A commit writing at most this many rows sends them with its updates in one round trip (unnest); more are COPYed. */
export const PIPELINED_INSERT_ROWS_MAX = 512;
