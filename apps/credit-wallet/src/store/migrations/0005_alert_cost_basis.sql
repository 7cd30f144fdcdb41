-- An auto_top_up alert carries what the top-up was bought at (the grant's cost basis and its
-- currency), so invoicing bills it from the alert itself: no GetBalance lookup (whose grant list is
-- capped), never the wallet's current auto top-up terms. Empty for other kinds and older alerts.
ALTER TABLE alerts ADD COLUMN cost_basis TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN cost_basis_currency TEXT NOT NULL DEFAULT '';

-- Webhook bodies of wallet alerts carry them too (same function as migration 0004, two more fields).
CREATE OR REPLACE FUNCTION wallet_alert_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM webhook_enqueue(NEW.tenant, NEW.id, NEW.kind, NEW.created_at, jsonb_build_object(
    'alert_id', NEW.id,
    'wallet_id', NEW.wallet_id,
    'customer_id', NEW.customer_id,
    'grant_id', NEW.grant_id,
    'amount_nanos', NEW.amount_nanos::text,
    'unit', NEW.unit,
    'expires_at', CASE WHEN NEW.expires_at IS NULL THEN NULL
                       ELSE to_char(NEW.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END,
    'cost_basis', NEW.cost_basis,
    'cost_basis_currency', NEW.cost_basis_currency), NEW.created_at);
  RETURN NULL;
END $$;
