-- Per-line minimum billable amount: usage lines below it are carried per (customer, charge).
ALTER TABLE billing_settings ADD COLUMN line_minimum_billable_nanos BIGINT NOT NULL DEFAULT 0
  CHECK (line_minimum_billable_nanos >= 0);
-- A charge's usage below the line minimum, carried to the next invoice that bills the charge
-- (whole minor units, in nanos): since = the start of the first deferred period.
CREATE TABLE line_deferrals (
  tenant                 TEXT NOT NULL,
  customer_id            TEXT NOT NULL,
  charge_id              TEXT NOT NULL,
  unit                   TEXT NOT NULL,
  subscription_id        TEXT NOT NULL,
  description            TEXT NOT NULL,
  amount_nanos           BIGINT NOT NULL,
  since                  TIMESTAMPTZ NOT NULL,
  periods                INTEGER NOT NULL CHECK (periods >= 1),
  invoice_id             TEXT NOT NULL,
  PRIMARY KEY (tenant, customer_id, charge_id)
);
