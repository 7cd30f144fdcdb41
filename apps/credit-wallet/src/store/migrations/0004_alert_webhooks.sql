-- Every new wallet alert (credits_expiring, low_balance, auto_top_up) is queued for the tenant's
-- webhook endpoints (libs/webhooks) in the transaction that stores it: an AFTER INSERT trigger, so
-- a replayed alert (ON CONFLICT DO NOTHING, no row) queues nothing. Amounts go out as strings of
-- nanos (exact beyond 2^53).
CREATE FUNCTION wallet_alert_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM webhook_enqueue(NEW.tenant, NEW.id, NEW.kind, NEW.created_at, jsonb_build_object(
    'alert_id', NEW.id,
    'wallet_id', NEW.wallet_id,
    'customer_id', NEW.customer_id,
    'grant_id', NEW.grant_id,
    'amount_nanos', NEW.amount_nanos::text,
    'unit', NEW.unit,
    'expires_at', CASE WHEN NEW.expires_at IS NULL THEN NULL
                       ELSE to_char(NEW.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END), NEW.created_at);
  RETURN NULL;
END $$;
CREATE TRIGGER alerts_webhooks AFTER INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION wallet_alert_webhooks();
