-- Late-usage adjustments and late credits read, for each earlier invoiced period of a subscription
-- that a close (or preview) adjusts, the usage, adjustment and credits-applied lines naming that
-- period: lines are looked up by (tenant, subscription, period_start) instead of a scan.
CREATE INDEX invoice_lines_billed_window ON invoice_lines (tenant, subscription_id, period_start);
