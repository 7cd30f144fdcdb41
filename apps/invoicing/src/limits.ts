/** Every limit of the invoicing service, in one place (enforced and tested at the edge). */

/** CLOSE_PERIOD_ITEMS_MAX: subscriptions per ClosePeriod request. */
export const CLOSE_PERIOD_ITEMS_MAX = 1_000;
/** LIST_PAGE_SIZE_DEFAULT / LIST_PAGE_SIZE_MAX: invoices per ListInvoices page. */
export const LIST_PAGE_SIZE_DEFAULT = 50;
export const LIST_PAGE_SIZE_MAX = 500;
/** EXPAND_PAGE_SIZE_DEFAULT / EXPAND_PAGE_SIZE_MAX: buckets per ExpandLine page. */
export const EXPAND_PAGE_SIZE_DEFAULT = 200;
export const EXPAND_PAGE_SIZE_MAX = 2_000;
/** EXPAND_EVENTS_PAGE_SIZE_DEFAULT / _MAX: rated events per ExpandLine page of one bucket (rating's page limit). */
export const EXPAND_EVENTS_PAGE_SIZE_DEFAULT = 200;
export const EXPAND_EVENTS_PAGE_SIZE_MAX = 1_000;
/** EXPAND_TOKEN_CHARS_MAX: length of an ExpandLine page token (rating's event cursor passed through). */
export const EXPAND_TOKEN_CHARS_MAX = 300;
/** RECONCILE_INVOICES_DEFAULT / RECONCILE_INVOICES_MAX: invoices checked per Reconcile call. */
export const RECONCILE_INVOICES_DEFAULT = 200;
export const RECONCILE_INVOICES_MAX = 2_000;
/** LINES_PER_INVOICE_MAX: lines on one invoice (charges x covered periods + totals lines). */
export const LINES_PER_INVOICE_MAX = 500;
/** TAX_RATE_BPS_MAX: a tax rate is 0..10000 basis points (0%..100%). */
export const TAX_RATE_BPS_MAX = 10_000;
/** DISCOUNT_BPS_MAX: a percentage discount is 0..10000 basis points. */
export const DISCOUNT_BPS_MAX = 10_000;
/** DEFERRAL_PERIODS_MAX: the most periods an amount may be deferred (minimum billable). */
export const DEFERRAL_PERIODS_MAX = 24;
/** ID_CHARS_MAX: length of any id (customer, subscription, invoice, payment, credit note). */
export const ID_CHARS_MAX = 128;
/** REASON_CHARS_MAX: length of a void reason. */
export const REASON_CHARS_MAX = 500;
/** RATED_BUCKETS_PER_PERIOD_MAX: rated buckets read for one subscription period. */
export const RATED_BUCKETS_PER_PERIOD_MAX = 200_000;
/** UPSTREAM_PAGES_MAX: pages followed when listing from rating or the wallet (a runaway guard). */
export const UPSTREAM_PAGES_MAX = 1_000;
/** UPSTREAM_TIMEOUT_MS: timeout of each call to rating, the wallet or the ledger. */
export const UPSTREAM_TIMEOUT_MS = 10_000;
/** CLOSE_CONCURRENCY: subscriptions closed in parallel within one ClosePeriod request. */
export const CLOSE_CONCURRENCY = 8;
/** RENDER_BYTES_MAX: the largest rendered file. */
export const RENDER_BYTES_MAX = 8 * 1024 * 1024;
/** Server limits: request/response bytes and timeouts. */
export const READ_MAX_BYTES = 4 * 1024 * 1024;
export const WRITE_MAX_BYTES = 16 * 1024 * 1024;
export const TIMEOUT_MS_MAX = 120_000;
export const TIMEOUT_MS_DEFAULT = 30_000;
/**
 * LATE_EVENT_AGE_MS: metering's late-event age (its default limit: older events are refused).
 * A close of period p bills late usage and late prepaid consumption of every earlier invoiced
 * period whose end is less than this before p starts (events for it may still arrive during p).
 */
export const LATE_EVENT_AGE_MS = 35 * 24 * 60 * 60 * 1000;
/** Bounds of the configured late-event age (INVOICING_LATE_EVENT_AGE_MS), as metering's. */
export const LATE_EVENT_AGE_MS_MIN = 60 * 1000;
export const LATE_EVENT_AGE_MS_MAX = 400 * 24 * 60 * 60 * 1000;
/**
 * LATE_PERIODS_MAX: the most earlier invoiced periods one close (or preview) adjusts: enough for
 * monthly periods and the longest late-event age (400 days); only periods inside the age cost RPCs.
 */
export const LATE_PERIODS_MAX = 14;
/**
 * GRACE_PERIOD_MS_MAX: the longest grace period (BillingSettings.grace_period_ms) during which a
 * draft can be refreshed after its period ends: 31 days (inside metering's 35-day late-event age).
 */
export const GRACE_PERIOD_MS_MAX = 31 * 24 * 60 * 60 * 1000;
/** TOP_UPS_PER_PERIOD_MAX: wallet auto top-ups not yet billed that one invoice bills as one-off lines (more is refused). */
export const TOP_UPS_PER_PERIOD_MAX = 200;
/**
 * TOP_UPS_LISTED_MAX: auto top-up alerts one close (or preview) lists over its look-back window
 * (the previous period and the late-event age before the period, up to its end; billed ones included).
 */
export const TOP_UPS_LISTED_MAX = 1_000;
/** CREDIT_TYPES_PER_INVOICE_MAX: credit types whose consumption one invoice shows in credits_in_units (display only: overage is billed for every type). */
export const CREDIT_TYPES_PER_INVOICE_MAX = 10;
/**
 * CREDIT_TYPES_READ_MAX: credit types one close (or preview) reads consumption and overage for
 * (one ListConsumption each, per window); usage priced in more is refused for that item
 * (FailedPrecondition), never billed without its overage.
 */
export const CREDIT_TYPES_READ_MAX = 100;
/**
 * DRAFT_LOOP_MS_DEFAULT / _MAX: the draft loop's interval (INVOICING_DRAFT_LOOP_MS; 0 = off): how
 * often drafts in their grace period are refreshed and, with auto_finalize, finalized after it.
 */
export const DRAFT_LOOP_MS_DEFAULT = 60_000;
export const DRAFT_LOOP_MS_MAX = 24 * 60 * 60 * 1000;
/** DRAFT_LOOP_BATCH_DEFAULT / _MAX: drafts one pass of the draft loop looks at (INVOICING_DRAFT_LOOP_BATCH). */
export const DRAFT_LOOP_BATCH_DEFAULT = 100;
export const DRAFT_LOOP_BATCH_MAX = 1_000;
/**
 * TOP_UPS_BULK_CUSTOMERS_MIN / TOP_UPS_BULK_LISTED_MAX: a ClosePeriod request closing the first
 * subscription of at least this many customers lists the tenant's auto top-up alerts once for the
 * whole request (one paged ListAlerts instead of one per customer), up to this many alerts; past
 * that it falls back to one listing per customer.
 */
export const TOP_UPS_BULK_CUSTOMERS_MIN = 20;
export const TOP_UPS_BULK_LISTED_MAX = 10_000;

/** The server limits of an invoicing process (main.ts, and each service of `npm start`). */
export const INVOICING_SERVER_LIMITS = { readMaxBytes: READ_MAX_BYTES, writeMaxBytes: WRITE_MAX_BYTES, timeoutMsMax: TIMEOUT_MS_MAX, timeoutMsDefault: TIMEOUT_MS_DEFAULT } as const;
