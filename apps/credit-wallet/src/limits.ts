/** Every limit of the credit-wallet service, in one place. Each is enforced and tested at its edge. */

/** Most items in one Consume request. */
export const CONSUME_ITEMS_MAX = 1_000;
/**
 * Authorize group commits (unary calls and stream messages) in flight at once per tenant, and how
 * many items must wait before a group beyond the first starts (pipelining: its real-time step and
 * statement overlap the first's commit; small extra groups cost a commit each for little overlap).
 */
export const AUTHORIZE_GROUPS_IN_FLIGHT = 2;
export const AUTHORIZE_EXTRA_GROUP_MIN_ITEMS = 64;
/**
 * Longest wait of a Consume / Authorize item whose id's first attempt is still in flight in this
 * process (a client's retry): past it the item is not run and the call answers Unavailable (retry).
 * Well under the default deadline (TIMEOUT_MS_DEFAULT), so the answer reaches the caller.
 */
export const GATE_WAIT_MS_MAX = 5_000;
/** Most items in one AuthorizeBatch request. */
export const AUTHORIZE_ITEMS_MAX = 1_000;
/** Longest caller id (grant, consume item, hold); ledger ids derived from longer ones end in a hash (domain/ledger-plan.ts ledgerId). */
export const ID_CHARS_MAX = 128;
/** Characters allowed in caller ids (a subset of what ledger transfer ids accept). */
export const ID_RE = /^[A-Za-z0-9._:\/@+=-]+$/;
/** Longest customer id, charge id, model, event id, invoice id. */
export const REF_CHARS_MAX = 128;
/** Longest description of a grant. */
export const DESCRIPTION_CHARS_MAX = 256;
/** Most scope entries (charge ids + models) on one grant. */
export const SCOPE_ENTRIES_MAX = 32;
/** Most open (not fully burned, not expired) grants one wallet may have. */
export const GRANTS_PER_WALLET_OPEN_MAX = 200;
/**
 * Most nanos ever granted to one wallet (every grant's amount, rollovers included): the ledger's
 * wallet account counts its credits in int64, and so does the balance.
 */
export const WALLET_GRANTED_NANOS_MAX = 9n * 10n ** 18n;
/** Default hold time to live. */
export const HOLD_TTL_MS_DEFAULT = 60_000;
/** Longest hold time to live (one day). */
export const HOLD_TTL_MS_MAX = 86_400_000;
/** The ledger's pending transfer outlives the wallet's hold by this much, so a capture at the last moment still posts. */
export const HOLD_LEDGER_GRACE_MS = 60_000;
/** Default page size of listings. */
export const PAGE_SIZE_DEFAULT = 100;
/** Largest page size of listings. */
export const PAGE_SIZE_MAX = 1_000;
/** Most exchange rates per credit type. */
export const RATES_PER_CREDIT_TYPE_MAX = 1_000;
/** Longest auto top-up cooldown (30 days) and shortest (0). */
export const AUTO_TOP_UP_COOLDOWN_MS_MAX = 30 * 86_400_000;
/** Most ledger transfers posted in one CreateTransfers call by the outbox (the ledger accepts 8,190). */
export const LEDGER_BATCH_TRANSFERS_MAX = 8_000;
/** Retries of a one-statement group commit (no explicit transaction) on a deadlock or serialization failure. */
export const ONE_STATEMENT_RETRIES_MAX = 3;
/** Most operations one group commit applies in one PostgreSQL transaction. */
export const COMMIT_BATCH_OPS_MAX = 256;
/** Most wallets one RunExpiry / RunRollover call processes (the caller repeats for more). */
export const RUN_WALLETS_MAX = 10_000;
/** How long before a grant's expiry the credits_expiring alert is raised (default). */
export const EXPIRY_NOTICE_MS_DEFAULT = 7 * 86_400_000;
/** Grace after expires_at before the remainder moves to breakage (default). */
export const EXPIRY_GRACE_MS_DEFAULT = 0;
/** Longest expiry grace, of the deployment or of one grant (90 days). */
export const EXPIRY_GRACE_MS_MAX = 90 * 86_400_000;
/** AuthorizeStream: most messages read and not yet answered per stream (the server stops reading meanwhile). */
export const AUTHORIZE_STREAM_IN_FLIGHT_MAX = 256;
/** AuthorizeStream: most messages per stream (then RESOURCE_EXHAUSTED; the client opens another). */
export const AUTHORIZE_STREAM_ITEMS_MAX = 1_000_000;
/**
 * AuthorizeStream: longest life of one stream (then DEADLINE_EXCEEDED after answering what was
 * read). A stream also ends that way AUTHORIZE_STREAM_DEADLINE_MARGIN_MS before its call's deadline
 * (at most TIMEOUT_MS_MAX; the default deadline when the client sends none), so it is never cut
 * by the deadline with messages unanswered.
 */
export const AUTHORIZE_STREAM_LIFETIME_MS = 300_000;
export const AUTHORIZE_STREAM_DEADLINE_MARGIN_MS = 2_000;
/** Longest rollover grant lifetime after period end (10 years). */
export const ROLLOVER_EXPIRES_AFTER_MS_MAX = 10 * 366 * 86_400_000;
/** Largest priority (lower burns first). */
export const PRIORITY_MAX = 1_000_000;
/** Basis points of 100%. */
export const BPS_ONE = 10_000;
/** Most reloads of Redis state one request may trigger before it fails Unavailable. */
export const REALTIME_RELOADS_MAX = 3;
/** Longest customer id (part of ledger account ids, which end in a hash when too long). */
export const CUSTOMER_ID_CHARS_MAX = 128;
/** Characters refused in charge ids, models and scope entries (the real-time store's separators and control characters). */
export const REF_FORBIDDEN_RE = /[,|\u0000-\u001f]/;
/** TEXT_FORBIDDEN_RE: characters refused in free text (Grant description, credit type name): control characters (PostgreSQL refuses NUL in text). */
export const TEXT_FORBIDDEN_RE = /[\u0000-\u001f\u007f]/;
/** Most grants one GetBalance lists. */
export const BALANCE_GRANTS_MAX = 1_000;
/** Bytes of one request / response (a full batch of 1,000 items fits easily). */
export const REQUEST_BYTES_MAX = 4 * 1024 * 1024;
export const RESPONSE_BYTES_MAX = 8 * 1024 * 1024;
/** Deadlines of calls to the wallet (default and most). */
export const TIMEOUT_MS_DEFAULT = 10_000;
export const TIMEOUT_MS_MAX = 60_000;
/** How often the background loop retries the ledger outbox and expires due holds and grants. */
export const BACKGROUND_INTERVAL_MS = 1_000;
/** Most tenants one background round expires for. */
export const BACKGROUND_TENANTS_MAX = 1_000;

/** RUN_AS_OF_SKEW_MS_MAX: how far before now an expiry/rollover run's as_of may be (10 years; after now is refused too); beyond it InvalidArgument. */
export const RUN_AS_OF_SKEW_MS_MAX = 10 * 366 * 24 * 3_600_000;
