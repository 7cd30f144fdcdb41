// Every limit of the metering service, in one place. Each is enforced and tested at the edge.

/** Most events in one IngestEvents request (or one IngestStream message). */
export const EVENTS_PER_REQUEST_MAX = 10_000;
/** Most bytes of one request message (Connect readMaxBytes). */
export const REQUEST_BYTES_MAX = 4 * 1024 * 1024;
/** Most bytes of one response message (Connect writeMaxBytes). */
export const RESPONSE_BYTES_MAX = 16 * 1024 * 1024;

/** Length bounds of ids (event id, customer id) and of the event type. */
export const ID_LENGTH_MAX = 128;

/**
 * Most bytes of the field, reason and message of one IngestResult, counted as JSON-escaped UTF-8
 * (mapping.ts resultText cuts longer text at a code point; control characters and lone surrogates
 * become U+FFFD). The longest produced: field "properties.<128-byte key>" (139 bytes), message
 * "<field>: <rule>" (about 230 bytes), reason "too_far_in_future" (17 bytes).
 */
export const RESULT_FIELD_BYTES_MAX = 160;
export const RESULT_REASON_BYTES_MAX = 32;
export const RESULT_MESSAGE_BYTES_MAX = 320;
/** Bytes of a JSON string member `"name":"<n bytes>"` (the value already escaped). */
const jsonMember = (name: string, valueBytes: number) => name.length + 3 + valueBytes + 2;
/**
 * Worst-case bytes of one IngestResult inside IngestStreamResponse.results, in the Connect JSON
 * encoding (the larger one: the binary encoding of the same result is at most (1 + 2 + 128) id +
 * 2 status + (1 + 9) sequence + (1 + 2 + 160) field + (1 + 1 + 32) reason + (1 + 2 + 320) message +
 * (1 + 2) as an element of results = 666 bytes), with a 128-byte event id, the longest status name
 * ("INGEST_STATUS_UNSPECIFIED", 25), a 19-digit sequence and field/reason/message at their maxima:
 * 2 braces + 5 commas inside + 1 comma between results + the members
 * (140 + 36 + 32 + 170 + 43 + 332) = 761 bytes.
 * An event id longer than ID_LENGTH_MAX (rejected, but echoed as sent) is bounded per stream by
 * service.ts (ingestStream counts each result's bound with its actual id, see resultBytesBound).
 */
export const INGEST_RESULT_BYTES_MAX =
  2 + 5 + 1 +
  jsonMember("eventId", ID_LENGTH_MAX) +
  jsonMember("status", "INGEST_STATUS_UNSPECIFIED".length) +
  jsonMember("sequence", 19) +
  jsonMember("field", RESULT_FIELD_BYTES_MAX) +
  jsonMember("reason", RESULT_REASON_BYTES_MAX) +
  jsonMember("message", RESULT_MESSAGE_BYTES_MAX);
/** Bytes of IngestStreamResponse around its results: `{"results":[` and `]}`. */
export const STREAM_RESPONSE_OVERHEAD_BYTES = 14;
/**
 * Most events over one IngestStream: its single response carries one result per event and must
 * fit RESPONSE_BYTES_MAX, else it would fail ResourceExhausted after every batch committed (and
 * every retry the same way). floor((16 MiB - 14) / 761) = 22,046; rounded down to 20,000 (two full
 * 10,000-event messages). limits.test.ts encodes 20,000 worst-case results in JSON and binary.
 */
export const EVENTS_PER_STREAM_MAX = 20_000;
export const EVENT_TYPE_LENGTH_MAX = 128;
/** Property bounds: count per event, key bytes, string value bytes, whole properties bytes. */
export const PROPERTIES_PER_EVENT_MAX = 64;
export const PROPERTY_KEY_BYTES_MAX = 128;
export const PROPERTY_STRING_BYTES_MAX = 1024;
export const PROPERTIES_BYTES_MAX = 16 * 1024;
/** Exact decimal properties: at most this many integer and fraction digits. */
export const DECIMAL_INTEGER_DIGITS_MAX = 30;
export const DECIMAL_FRACTION_DIGITS_MAX = 18;
/** Trace context header bounds (W3C: traceparent is 55 chars; tracestate at most 512). */
export const TRACEPARENT_LENGTH_MAX = 128;
export const TRACESTATE_LENGTH_MAX = 512;

/** An event may be at most this far in the future of the server clock. */
export const FUTURE_SKEW_MS_MAX = 5 * 60 * 1000;
/**
 * CloseUsagePeriod: a close_time may be at most this far past the server clock. Closed periods
 * only move forward, so a far-future close refused every later event of the customer for good;
 * no event can be stamped later than FUTURE_SKEW_MS_MAX ahead, so a close beyond it closes nothing
 * that can exist yet: the same bound.
 */
export const CLOSE_TIME_FUTURE_MS_MAX = FUTURE_SKEW_MS_MAX;
/** Default late-event limit: events older than this are rejected (period_closed). */
export const LATE_EVENT_AGE_MS_DEFAULT = 35 * 24 * 60 * 60 * 1000;
/** Bounds on the configured late-event limit. */
export const LATE_EVENT_AGE_MS_MIN = 60 * 1000;
export const LATE_EVENT_AGE_MS_MAX = 400 * 24 * 60 * 60 * 1000;

/** ReadEvents: default and maximum page, maximum long-poll wait, fallback poll interval. */
export const READ_EVENTS_DEFAULT = 1_000;
export const READ_EVENTS_MAX = 10_000;
/**
 * Most bytes of one ReadEvents page, by an upper bound of each event's binary encoding
 * (mapping.ts storedEventSizeBound): a page ends early (last_sequence = its last event) rather
 * than pass RESPONSE_BYTES_MAX with large events (up to ~16.5 KB each). Always at least one event.
 */
export const READ_PAGE_BYTES_MAX = 12 * 1024 * 1024;
/** ReadEvents partitions: most partitions, and most sequences one partitioned read examines. */
export const READ_PARTITIONS_MAX = 256;
export const READ_PARTITION_SCAN_MAX = 100_000;
export const READ_WAIT_MS_MAX = 30_000;
export const READ_POLL_INTERVAL_MS = 250;
/** A LISTEN for other replicas' commits that could not start is retried this often. */
export const LISTEN_RETRY_MS = 5_000;
/** Most concurrent long-polling ReadEvents calls per process. */
export const READ_WAITERS_MAX = 1_000;

/** Group commit: most events (and requests) written in one transaction. */
export const COMMIT_EVENTS_MAX = 20_000;
export const COMMIT_REQUESTS_MAX = 256;
/** Most events waiting for the writer; beyond it IngestEvents fails with ResourceExhausted. */
export const INGEST_QUEUE_EVENTS_MAX = 200_000;

/** Meters: per tenant, filters, filter values, group-by keys, description bytes. */
export const METERS_PER_TENANT_MAX = 1_000;
export const METER_FILTERS_MAX = 16;
export const FILTER_VALUES_MAX = 100;
export const METER_GROUP_BY_MAX = 8;
export const METER_DESCRIPTION_BYTES_MAX = 1024;
/** ListMeters page size: default and maximum. */
export const METERS_PAGE_DEFAULT = 50;
export const METERS_PAGE_MAX = 100;
/** Usage aggregation: most events per aggregation transaction. */
export const AGGREGATE_CHUNK_EVENTS = 20_000;
/** Ingestion waits (back-pressure) while this many committed events are not in the buckets yet. */
export const AGGREGATION_LAG_EVENTS_MAX = 100_000;
/**
 * Most events a store keeps in memory after committing them, for the aggregator (store.ts
 * `recent`: it takes them instead of reading them back): the lag above plus one full commit, a few
 * hundred bytes each (the validated event's properties are shared, not copied).
 */
export const RECENT_EVENTS_MAX = AGGREGATION_LAG_EVENTS_MAX + COMMIT_EVENTS_MAX;
/** Most ms a QueryUsage (or the back-pressure wait) waits for aggregation to catch up (then Unavailable). */
export const AGGREGATE_CATCH_UP_MS_MAX = 30_000;
/** Backfill: events read per backfill step. */
export const BACKFILL_CHUNK_EVENTS = 5_000;

/** QueryUsage: customers per query, rows returned, windows, range length. */
export const QUERY_CUSTOMERS_MAX = 1_000;
export const QUERY_ROWS_MAX = 10_000;
/** QueryUsage rows per page when the request is paged without a size. */
export const QUERY_PAGE_ROWS_DEFAULT = 1_000;
export const QUERY_WINDOWS_MAX = 10_000;
export const QUERY_RANGE_MS_MAX = 400 * 24 * 60 * 60 * 1000;

/** OTLP: most bytes of one export request, most spans mapped from it. */
export const OTLP_BYTES_MAX = 4 * 1024 * 1024;
export const OTLP_SPANS_MAX = 10_000;
/**
 * OTLP: how long an export may take from its arrival to its answer (the gRPC server's default
 * deadline). Past it the receiver answers 503 + Retry-After (OTLP's retryable answer) while the
 * events already handed to the group commit are stored or not: the exporter's retry keeps the span
 * ids, so what was stored answers as duplicates.
 */
export const OTLP_EXPORT_TIMEOUT_MS = 30_000;

/** The server limits of a metering process (main.ts, and each service of `npm start`). */
export const METERING_SERVER_LIMITS = { readMaxBytes: REQUEST_BYTES_MAX, writeMaxBytes: RESPONSE_BYTES_MAX } as const;
