/**
 * Every limit of the rating service, in one place. Each is enforced where named and tested at the
 * edge (service.test.ts, domain tests).
 */

/** Connect message size caps (bytes) for requests and responses. */
export const REQUEST_BYTES_MAX = 4 * 1024 * 1024;
export const RESPONSE_BYTES_MAX = 16 * 1024 * 1024;
/** Largest deadline a caller may ask for, and the default when it asks for none. */
export const TIMEOUT_MS_MAX = 60_000;
export const TIMEOUT_MS_DEFAULT = 10_000;

/** Ids (customer, plan, charge, subscription, override, rule): 1..ID_CHARS_MAX of [A-Za-z0-9._:-]. */
export const ID_CHARS_MAX = 128;
/** Charge ids: [a-z0-9_]{1,64}. */
export const CHARGE_ID_CHARS_MAX = 64;
/** Display names and descriptions. */
export const NAME_CHARS_MAX = 256;

/** Charges per plan version. */
export const CHARGES_PER_VERSION_MAX = 100;
/** Versions per plan. */
export const VERSIONS_PER_PLAN_MAX = 1_000;
/** Tiers per graduated / volume charge. */
export const TIERS_MAX = 100;
/** Cells per matrix charge. */
export const MATRIX_CELLS_MAX = 10_000;
/** Credit tiers per credits charge, and values per tier. */
export const CREDIT_TIERS_MAX = 100;
export const CREDIT_TIER_VALUES_MAX = 1_000;
/** Quantity / dimension properties per usage binding. */
export const QUANTITY_PROPERTIES_MAX = 16;
export const DIMENSION_PROPERTIES_MAX = 8;
/** Dimension values kept on a line (longer values are rejected as unpriced). */
export const DIMENSION_VALUE_CHARS_MAX = 256;
/** Outcome verification window. */
export const VERIFICATION_WINDOW_SECONDS_MAX = 90 * 24 * 3600;
/** Seats per subscription. */
export const SEATS_MAX = 1_000_000;
/** Billing interval in months: 1 (monthly) or 12 (yearly). */
export const INTERVAL_MONTHS_ALLOWED: readonly number[] = [1, 12];
/** Subscriptions per customer, phases per subscription, seat changes per subscription. */
export const SUBSCRIPTIONS_PER_CUSTOMER_MAX = 100;
export const PHASES_PER_SUBSCRIPTION_MAX = 1_000;
export const SEAT_CHANGES_PER_SUBSCRIPTION_MAX = 10_000;
/** Price overrides per customer. */
export const OVERRIDES_PER_CUSTOMER_MAX = 1_000;

/** Cost rates per UpsertCostRates request; rates returned by ListCostRates. */
export const COST_RATES_PER_REQUEST_MAX = 1_000;
export const COST_RATES_LIST_MAX = 10_000;

/** Pages: customers / alerts. */
export const PAGE_SIZE_DEFAULT = 100;
export const PAGE_SIZE_MAX = 1_000;
/** ListRatedUsage: longest window and most buckets returned. */
export const USAGE_WINDOW_MS_MAX = 400 * 24 * 3600 * 1000;
export const USAGE_BUCKETS_MAX = 50_000;
/** ListRatedEvents: longest window of event time (a bucket: an hour or a local day, DST included). */
export const RATED_EVENTS_WINDOW_MS_MAX = 48 * 3600 * 1000;
/** QueryMargin: longest window, most rows. */
export const MARGIN_WINDOW_MS_MAX = 400 * 24 * 3600 * 1000;
export const MARGIN_ROWS_MAX = 10_000;

/** Guardrails: rules per tenant, window bounds, and evaluation debounce. */
export const GUARDRAIL_RULES_MAX = 100;
export const GUARDRAIL_WINDOW_SECONDS_MIN = 60;
export const GUARDRAIL_WINDOW_SECONDS_MAX = 7 * 24 * 3600;
export const ALERTS_PAGE_MAX = 1_000;

/** Consumer: events per ReadEvents call, long-poll wait, back-off after an error. */
export const CONSUMER_BATCH_EVENTS_MAX = 2_000;
export const CONSUMER_WAIT_MS = 1_000;
/** Most consumer partitions (metering's ReadEvents allows 256). */
export const CONSUMER_PARTITIONS_MAX = 64;
/**
 * Partition leases (several consumer processes): how long a lease / membership lasts without a
 * heartbeat (database time), and how often the heartbeat runs (at most a third of the TTL).
 */
export const CONSUMER_LEASE_TTL_MS = 10_000;
export const CONSUMER_LEASE_TTL_MS_MIN = 200;
export const CONSUMER_LEASE_TTL_MS_MAX = 300_000;
export const CONSUMER_LEASE_HEARTBEAT_MS = 2_000;
export const CONSUMER_LEASE_HEARTBEAT_MS_MIN = 50;
/** Consumer member ids (RATING_CONSUMER_OWNER). */
export const CONSUMER_OWNER_CHARS_MAX = 128;
/** Committed batches whose wallet hand-off may wait behind the running one (then the loop waits). */
export const HANDOFF_BATCHES_QUEUED = 4;
/** How often the running loop confirms outcomes whose verification window ended (ms). */
export const OUTCOMES_CONFIRM_INTERVAL_MS = 1_000;
export const CONSUMER_ERROR_BACKOFF_MS = 500;
/** Consumer: pause after an empty answer that did not long-poll (never spin). */
export const CONSUMER_IDLE_MS = 50;
export const CONSUMER_ERROR_BACKOFF_MS_MAX = 10_000;
/** Consumer: batches rated with the already-rated lookup after one was refused a duplicate. */
export const CHECK_RATED_BATCHES_AFTER_OVERLAP = 16;
/** Consumer: outbox batch rows (a batch's wallet items each) read per drain step. */
export const OUTBOX_BATCHES_PER_DRAIN = 4;
/** Consumer: Consume items per wallet call (the wallet's own cap may be lower). */
export const WALLET_CONSUME_ITEMS_MAX = 500;
/** Consumer: how long rating context (customers, subscriptions, plans, cost rates) is cached. */
export const CONTEXT_CACHE_TTL_MS = 2_000;
/** Consumer: pending outcomes confirmed (and handed to the wallet) per poll. */
export const OUTCOMES_CONFIRM_MAX = 1_000;
/** Rows per multi-row INSERT / upsert statement. */
export const SQL_ROWS_PER_STATEMENT_MAX = 500;

/** The server limits of a rating process (main.ts, and each service of `npm start`). */
export const RATING_SERVER_LIMITS = { readMaxBytes: REQUEST_BYTES_MAX, writeMaxBytes: RESPONSE_BYTES_MAX, timeoutMsMax: TIMEOUT_MS_MAX, timeoutMsDefault: TIMEOUT_MS_DEFAULT } as const;
