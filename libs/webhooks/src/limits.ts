/** Every limit of the webhooks library, in one place. */

/** Endpoint ids: 1-64 characters of [A-Za-z0-9_.-]. */
export const ENDPOINT_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/** Longest endpoint URL (http or https). */
export const URL_CHARS_MAX = 2_048;
/** Most endpoints per tenant (enabled or not). */
export const ENDPOINTS_PER_TENANT_MAX = 16;
/** Most event kinds an endpoint subscribes to (0 = every kind). */
export const EVENT_KINDS_MAX = 32;
/** Event kinds: 1-64 characters of [a-z0-9_.]. */
export const EVENT_KIND_PATTERN = /^[a-z0-9_.]{1,64}$/;
/** Longest description. */
export const DESCRIPTION_CHARS_MAX = 256;
/**
 * Characters refused in every free-text field (url, description, and the ids the RPCs look up):
 * control characters U+0000-U+001F and U+007F (PostgreSQL refuses NUL in text: it answered Internal).
 */
export const CONTROL_CHARS_RE = /[\u0000-\u001f\u007f]/;
/** Largest JSON body of one event. */
export const PAYLOAD_BYTES_MAX = 64 * 1024;
/** Event ids (sent as the nanobill-event-id header): 1-256 header-safe characters. */
export const EVENT_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,256}$/;
/** Most events one enqueue call takes. */
export const EVENTS_PER_ENQUEUE_MAX = 10_000;
/** Attempts before a delivery is given up (failed_at set; listed with its last error). */
export const ATTEMPTS_MAX = 15;
/** Retry delay after attempt n: min(BACKOFF_BASE_MS * 2^(n-1), BACKOFF_MAX_MS), plus up to 10% jitter. */
export const BACKOFF_BASE_MS = 5_000;
export const BACKOFF_MAX_MS = 3_600_000;
/** One POST's deadline (connect + response headers). */
export const DELIVERY_TIMEOUT_MS = 10_000;
/** POSTs one dispatcher runs at once. */
export const DELIVERIES_IN_FLIGHT_MAX = 8;
/**
 * Waves of DELIVERIES_IN_FLIGHT_MAX POSTs one round claims: a round's work takes at most
 * DELIVERY_WAVES_PER_ROUND x DELIVERY_TIMEOUT_MS (plus database time), which must fit its claim.
 */
export const DELIVERY_WAVES_PER_ROUND = 4;
/** Deliveries one dispatcher round claims (32): in-flight x waves, so the round fits its lease. */
export const DELIVERIES_PER_ROUND_MAX = DELIVERIES_IN_FLIGHT_MAX * DELIVERY_WAVES_PER_ROUND;
/** Slack in a claim beyond its round's POST time (database round trips, a slow event loop). */
export const CLAIM_LEASE_MARGIN_MS = 20_000;
/**
 * How long a claim lasts (60 s): a claimed delivery comes back to the queue after this long if its
 * dispatcher died. Derived from the round: waves x timeout + margin. A dispatcher with other options
 * derives its own lease the same way (see claimLeaseMs in dispatcher.ts).
 */
export const CLAIM_LEASE_MS = DELIVERY_WAVES_PER_ROUND * DELIVERY_TIMEOUT_MS + CLAIM_LEASE_MARGIN_MS;
/**
 * Most deliveries of one (tenant, endpoint) one round claims: an endpoint that never answers holds
 * at most this many of a round's slots, and every endpoint's oldest due delivery is claimed before
 * any endpoint's second (round robin by due time).
 */
export const DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX = 4;
/** Dispatcher poll interval when idle. */
export const DISPATCH_INTERVAL_MS = 1_000;
/** Longest error text kept per delivery. */
export const ERROR_CHARS_MAX = 500;
/** Receivers should refuse signatures older than this (verifyWebhookSignature's default). */
export const SIGNATURE_TOLERANCE_S = 300;
/** Most deliveries one list call returns. */
export const DELIVERIES_PER_PAGE_MAX = 1_000;
/** A replayed CreateWebhookEndpoint answers the signing secret only this long after the creation. */
export const SECRET_REPLAY_WINDOW_MS = 10 * 60_000;

/** Delivered and given-up deliveries are kept this long after they finished (ListWebhookDeliveries shows them), then deleted. */
export const DELIVERY_RETENTION_MS = 30 * 24 * 3_600_000;
/** How often a dispatcher deletes finished deliveries past the retention. */
export const PURGE_INTERVAL_MS = 10 * 60_000;
/** Rows one purge statement deletes, and statements per purge run (the rest waits for the next run). */
export const PURGE_BATCH_ROWS = 1_000;
export const PURGE_BATCHES_PER_RUN_MAX = 20;
