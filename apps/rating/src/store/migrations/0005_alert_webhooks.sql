-- Every new guardrail alert is queued for the tenant's webhook endpoints (libs/webhooks) in the
-- transaction that stores it: an AFTER INSERT trigger, so an alert replay (ON CONFLICT DO NOTHING,
-- no row) queues nothing and a rolled-back batch queues nothing. Money and basis points go out as
-- strings (exact beyond 2^53).
CREATE FUNCTION rating_alert_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM webhook_enqueue(NEW.tenant, NEW.alert_id, NEW.kind, NEW.raise_time, jsonb_build_object(
    'alert_id', NEW.alert_id,
    'rule_id', NEW.rule_id,
    'customer_id', NEW.customer_id,
    'observed_bps', NEW.observed_bps::text,
    'threshold_bps', NEW.threshold_bps::text,
    'revenue_nanos', NEW.revenue_nanos::text,
    'cost_nanos', NEW.cost_nanos::text,
    'unit', NEW.unit,
    'window_start', to_char(NEW.window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'window_end', to_char(NEW.window_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'message', NEW.message), NEW.raise_time);
  RETURN NULL;
END $$;
CREATE TRIGGER alerts_webhooks AFTER INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION rating_alert_webhooks();
