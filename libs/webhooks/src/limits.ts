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
/** Largest JSON body of one event. */
export const PAYLOAD_BYTES_MAX = 64 * 1024;
/** Most events one enqueue call takes. */
export const EVENTS_PER_ENQUEUE_MAX = 10_000;
/** Attempts before a delivery is given up (failed_at set; listed with its last error). */
export const ATTEMPTS_MAX = 15;
/** Retry delay after attempt n: min(BACKOFF_BASE_MS * 2^(n-1), BACKOFF_MAX_MS), plus up to 10% jitter. */
export const BACKOFF_BASE_MS = 5_000;
export const BACKOFF_MAX_MS = 3_600_000;
/** One POST's deadline (connect + response headers). */
export const DELIVERY_TIMEOUT_MS = 10_000;
/** A claimed delivery comes back to the queue after this long if its dispatcher died mid-POST. */
export const CLAIM_LEASE_MS = 60_000;
/** Deliveries one dispatcher round claims, and POSTs it runs at once. */
export const DELIVERIES_PER_ROUND_MAX = 100;
export const DELIVERIES_IN_FLIGHT_MAX = 8;
/** Dispatcher poll interval when idle. */
export const DISPATCH_INTERVAL_MS = 1_000;
/** Longest error text kept per delivery. */
export const ERROR_CHARS_MAX = 500;
/** Receivers should refuse signatures older than this (verifyWebhookSignature's default). */
export const SIGNATURE_TOLERANCE_S = 300;
/** Most deliveries one list call returns. */
export const DELIVERIES_PER_PAGE_MAX = 1_000;
