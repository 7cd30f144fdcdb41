-- Metering: events (unique per tenant and id forever), meters, usage buckets, closed periods.
-- Times are BIGINT microseconds since the Unix epoch (UTC); meter values are exact NUMERIC.

-- events: every accepted event. `sequence` is the downstream cursor: writers serialize on
-- LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE, so sequence order is commit order (gaps from
-- rolled-back transactions are allowed).
CREATE TABLE events (
  sequence      BIGSERIAL PRIMARY KEY,
  tenant        TEXT   NOT NULL,
  event_id      TEXT   NOT NULL,
  customer_id   TEXT   NOT NULL,
  type          TEXT   NOT NULL,
  timestamp_us  BIGINT NOT NULL,
  properties    JSONB  NOT NULL,
  traceparent   TEXT   NOT NULL,
  tracestate    TEXT   NOT NULL,
  content_hash  TEXT   NOT NULL,
  received_us   BIGINT NOT NULL,
  CONSTRAINT events_tenant_event_id_key UNIQUE (tenant, event_id)
);

-- meters: definitions (JSON of the domain MeterDefinition) and backfill progress. Events with
-- sequence <= backfill_through_sequence are added by the backfill; later ones at ingestion.
CREATE TABLE meters (
  tenant                     TEXT   NOT NULL,
  meter_id                   TEXT   NOT NULL,
  event_type                 TEXT   NOT NULL,
  definition                 JSONB  NOT NULL,
  created_us                 BIGINT NOT NULL,
  backfill_through_sequence  BIGINT NOT NULL,
  backfill_done_sequence     BIGINT NOT NULL,
  backfill_events_done       BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant, meter_id)
);

-- usage_buckets: minute/hour/day totals per (meter, customer, group values), changed only in
-- the transaction that inserts the events they count (or by the backfill), so exactly once.
CREATE TABLE usage_buckets (
  tenant               TEXT    NOT NULL,
  meter_id             TEXT    NOT NULL,
  level                TEXT    NOT NULL CHECK (level IN ('minute', 'hour', 'day')),
  bucket_start_us      BIGINT  NOT NULL,
  customer_id          TEXT    NOT NULL,
  group_key            TEXT    NOT NULL,
  event_count          BIGINT  NOT NULL,
  value_sum            NUMERIC NOT NULL,
  value_min            NUMERIC,
  value_max            NUMERIC,
  latest_value         NUMERIC,
  latest_timestamp_us  BIGINT,
  latest_sequence      BIGINT,
  PRIMARY KEY (tenant, meter_id, level, bucket_start_us, customer_id, group_key)
);

-- usage_unique_values: the distinct values of unique_count meters per bucket.
CREATE TABLE usage_unique_values (
  tenant           TEXT   NOT NULL,
  meter_id         TEXT   NOT NULL,
  level            TEXT   NOT NULL CHECK (level IN ('minute', 'hour', 'day')),
  bucket_start_us  BIGINT NOT NULL,
  customer_id      TEXT   NOT NULL,
  group_key        TEXT   NOT NULL,
  value            TEXT   NOT NULL,
  PRIMARY KEY (tenant, meter_id, level, bucket_start_us, customer_id, group_key, value)
);

-- closed_periods: events of a customer before closed_through_us are refused (period_closed).
CREATE TABLE closed_periods (
  tenant             TEXT   NOT NULL,
  customer_id        TEXT   NOT NULL,
  closed_through_us  BIGINT NOT NULL,
  PRIMARY KEY (tenant, customer_id)
);

-- genai_mappings: per-tenant mapping of OpenTelemetry GenAI spans to events.
CREATE TABLE genai_mappings (
  tenant   TEXT  PRIMARY KEY,
  mapping  JSONB NOT NULL
);
