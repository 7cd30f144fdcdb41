-- Webhooks (libs/webhooks): endpoints a tenant registers, and one delivery row per (endpoint,
-- event), written in the same transaction as the event itself (an outbox), then POSTed by the
-- dispatcher with retries. A service's migration holding this file's text creates them in its
-- schema (libs/webhooks checks the copies stay identical).
CREATE TABLE webhook_endpoints (
  tenant TEXT NOT NULL,
  id TEXT NOT NULL,
  url TEXT NOT NULL,
  -- The signing secret (HMAC-SHA256 key), shown to the caller when the endpoint is created.
  secret TEXT NOT NULL,
  -- The event kinds delivered; empty = every kind.
  event_kinds TEXT[] NOT NULL,
  description TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  enabled BOOLEAN NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  disabled_at TIMESTAMPTZ,
  PRIMARY KEY (tenant, id)
);

CREATE TABLE webhook_deliveries (
  seq BIGSERIAL PRIMARY KEY,
  tenant TEXT NOT NULL,
  endpoint_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  event_kind TEXT NOT NULL,
  -- The JSON body, fixed at enqueue time (signed with a fresh timestamp at each attempt).
  payload TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TIMESTAMPTZ NOT NULL,
  delivered_at TIMESTAMPTZ,
  failed_at TIMESTAMPTZ,
  last_status INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  UNIQUE (tenant, endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_deliveries_by_tenant ON webhook_deliveries (tenant, seq);

-- Queues one event for every enabled endpoint of the tenant subscribed to its kind (empty kinds:
-- every kind), once per (endpoint, event id); returns how many deliveries it created. Called in the
-- transaction that records the event (a service's AFTER INSERT trigger on its alerts, or
-- enqueueWebhooks), so the event and its deliveries commit or roll back together.
CREATE FUNCTION webhook_enqueue(p_tenant TEXT, p_event_id TEXT, p_kind TEXT, p_occurred_at TIMESTAMPTZ, p_data JSONB, p_now TIMESTAMPTZ)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
  body TEXT := jsonb_build_object(
    'id', p_event_id, 'kind', p_kind, 'tenant', p_tenant,
    'occurred_at', to_char(p_occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'data', p_data)::text;
  n INTEGER;
BEGIN
  IF octet_length(body) > 65536 THEN
    RAISE EXCEPTION 'webhook event % of kind %: body over 65536 bytes', p_event_id, p_kind USING ERRCODE = '22023';
  END IF;
  INSERT INTO webhook_deliveries (tenant, endpoint_id, event_id, event_kind, payload, created_at, next_attempt_at)
  SELECT p_tenant, ep.id, p_event_id, p_kind, body, p_now, p_now
  FROM webhook_endpoints ep
  WHERE ep.tenant = p_tenant AND ep.enabled AND (cardinality(ep.event_kinds) = 0 OR p_kind = ANY(ep.event_kinds))
  ORDER BY ep.id
  ON CONFLICT (tenant, endpoint_id, event_id) DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
