-- Draft refresh during a grace period (RefreshInvoice).
-- grace_period_ms: how long after a period ends its draft can still be re-assembled (0 = never).
ALTER TABLE billing_settings ADD COLUMN grace_period_ms BIGINT NOT NULL DEFAULT 0
  CHECK (grace_period_ms BETWEEN 0 AND 2678400000);
-- close_inputs: the state the invoice was assembled from, so that a refresh re-assembles it from
-- the same inputs: per residue key it touched, the residue state carried in and the invoice that
-- had carried it out ({"r": {key: [residue_nanos, sub_nano_num, sub_nano_den, owner | null]},
-- "d": [amount_nanos, since_ms, periods, owner] | null}); NULL for invoices made before this
-- migration (they cannot be refreshed).
ALTER TABLE invoices ADD COLUMN close_inputs JSONB;
ALTER TABLE invoices ADD COLUMN refreshed_at TIMESTAMPTZ;
