-- Invoicing: billing settings, invoices (one per subscription per period, ever), lines,
-- residues carried per (customer, charge), deferred minimums, gapless numbers, credit notes.

CREATE TABLE billing_settings (
  tenant                 TEXT NOT NULL,
  customer_id            TEXT NOT NULL,
  tax_rate_bps           INTEGER NOT NULL CHECK (tax_rate_bps BETWEEN 0 AND 10000),
  rounding_mode          TEXT NOT NULL,
  discount_bps           INTEGER NOT NULL CHECK (discount_bps BETWEEN 0 AND 10000),
  discount_nanos         BIGINT NOT NULL CHECK (discount_nanos >= 0),
  minimum_billable_nanos BIGINT NOT NULL CHECK (minimum_billable_nanos >= 0),
  deferral_periods_max   INTEGER NOT NULL CHECK (deferral_periods_max >= 0),
  deferral_until         TIMESTAMPTZ,
  period_interval        TEXT NOT NULL CHECK (period_interval IN ('month', 'quarter', 'year')),
  period_anchor          TEXT NOT NULL CHECK (period_anchor IN ('calendar', 'anniversary')),
  updated_at             TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, customer_id)
);

CREATE TABLE invoices (
  tenant                 TEXT NOT NULL,
  invoice_id             TEXT NOT NULL,
  customer_id            TEXT NOT NULL,
  subscription_id        TEXT NOT NULL,
  period_index           INTEGER NOT NULL,
  period_start           TIMESTAMPTZ NOT NULL,
  period_end             TIMESTAMPTZ NOT NULL,
  time_zone              TEXT NOT NULL,
  unit                   TEXT NOT NULL,
  status                 TEXT NOT NULL CHECK (status IN ('draft', 'finalized', 'paid', 'void')),
  number_seq             BIGINT,
  number                 TEXT,
  rounding_mode          TEXT NOT NULL,
  tax_rate_bps           INTEGER NOT NULL,
  subtotal_nanos         BIGINT NOT NULL,
  discount_nanos         BIGINT NOT NULL,
  tax_nanos              BIGINT NOT NULL,
  total_nanos            BIGINT NOT NULL,
  credits_applied_nanos  BIGINT NOT NULL,
  amount_due_nanos       BIGINT NOT NULL,
  amount_due_minor       BIGINT NOT NULL,
  exact_nanos            BIGINT NOT NULL,
  residue_carried_nanos  BIGINT NOT NULL,
  residue_delta_nanos    BIGINT NOT NULL,
  deferred_nanos         BIGINT NOT NULL,
  deferral_amount_nanos  BIGINT,
  deferral_since         TIMESTAMPTZ,
  deferral_periods       INTEGER,
  usage_from             TIMESTAMPTZ NOT NULL,
  usage_to               TIMESTAMPTZ NOT NULL,
  created_at             TIMESTAMPTZ NOT NULL,
  finalized_at           TIMESTAMPTZ,
  paid_at                TIMESTAMPTZ,
  voided_at              TIMESTAMPTZ,
  payment_id             TEXT,
  void_reason            TEXT,
  ledger_transfer_ids    TEXT[] NOT NULL DEFAULT '{}',
  ledger_pending         BOOLEAN NOT NULL DEFAULT false,
  PRIMARY KEY (tenant, invoice_id),
  -- One invoice per subscription per period, ever (ClosePeriod idempotency and concurrency).
  UNIQUE (tenant, subscription_id, period_start),
  UNIQUE (tenant, number_seq),
  -- A draft has no number; a finalized, paid or voided-after-finalization invoice keeps its own.
  CHECK (status <> 'draft' OR (number_seq IS NULL AND finalized_at IS NULL)),
  CHECK (status NOT IN ('finalized', 'paid') OR (number_seq IS NOT NULL AND finalized_at IS NOT NULL)),
  CHECK ((status = 'paid') = (paid_at IS NOT NULL) OR status = 'void')
);
CREATE INDEX invoices_customer ON invoices (tenant, customer_id, period_start DESC, invoice_id);
CREATE INDEX invoices_ledger_pending ON invoices (tenant) WHERE ledger_pending;
CREATE UNIQUE INDEX invoices_payment ON invoices (tenant, payment_id) WHERE payment_id IS NOT NULL;

CREATE TABLE invoice_lines (
  tenant                 TEXT NOT NULL,
  invoice_id             TEXT NOT NULL,
  line_no                INTEGER NOT NULL,
  line_id                TEXT NOT NULL,
  kind                   TEXT NOT NULL,
  description            TEXT NOT NULL,
  charge_id              TEXT NOT NULL,
  subscription_id        TEXT NOT NULL,
  quantity               TEXT NOT NULL,
  unit_price             TEXT NOT NULL,
  amount_nanos           BIGINT NOT NULL,
  residue_in_nanos       BIGINT NOT NULL,
  rounded_amount_nanos   BIGINT NOT NULL,
  amount_minor           BIGINT NOT NULL,
  residue_out_nanos      BIGINT NOT NULL,
  period_start           TIMESTAMPTZ NOT NULL,
  period_end             TIMESTAMPTZ NOT NULL,
  expandable             BOOLEAN NOT NULL,
  PRIMARY KEY (tenant, invoice_id, line_no),
  FOREIGN KEY (tenant, invoice_id) REFERENCES invoices (tenant, invoice_id)
);

-- The residue each (customer, charge) carries to its next period: sub-minor nanos and the
-- sub-nano fraction (num/den). Updated in the same transaction as the invoice that consumed it.
CREATE TABLE residues (
  tenant                 TEXT NOT NULL,
  customer_id            TEXT NOT NULL,
  residue_key            TEXT NOT NULL,
  unit                   TEXT NOT NULL,
  residue_nanos          BIGINT NOT NULL,
  sub_nano_num           NUMERIC NOT NULL,
  sub_nano_den           NUMERIC NOT NULL CHECK (sub_nano_den > 0),
  invoice_id             TEXT NOT NULL,
  PRIMARY KEY (tenant, customer_id, residue_key)
);

-- An invoice amount below the customer's minimum billable amount, carried to the next invoice.
CREATE TABLE deferrals (
  tenant                 TEXT NOT NULL,
  customer_id            TEXT NOT NULL,
  unit                   TEXT NOT NULL,
  amount_nanos           BIGINT NOT NULL,
  since                  TIMESTAMPTZ NOT NULL,
  periods                INTEGER NOT NULL,
  invoice_id             TEXT NOT NULL,
  PRIMARY KEY (tenant, customer_id)
);

-- Gapless numbers: the counter row is locked and advanced inside the finalize (or void)
-- transaction, so a rolled-back finalization never consumes a number.
CREATE TABLE number_counters (
  tenant                 TEXT NOT NULL,
  series                 TEXT NOT NULL CHECK (series IN ('invoice', 'credit_note')),
  last_value             BIGINT NOT NULL,
  PRIMARY KEY (tenant, series)
);

CREATE TABLE credit_notes (
  tenant                 TEXT NOT NULL,
  credit_note_id         TEXT NOT NULL,
  invoice_id             TEXT NOT NULL,
  number_seq             BIGINT NOT NULL,
  number                 TEXT NOT NULL,
  amount_nanos           BIGINT NOT NULL,
  unit                   TEXT NOT NULL,
  reason                 TEXT NOT NULL,
  created_at             TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, credit_note_id),
  UNIQUE (tenant, invoice_id),
  UNIQUE (tenant, number_seq)
);
