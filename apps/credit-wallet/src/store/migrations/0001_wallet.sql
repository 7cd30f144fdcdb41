-- credit-wallet: credit types, wallets, grants, holds, consumption, statement, alerts, ledger outbox.
-- Amounts are BIGINT nano-units of the wallet's unit. Every row carries its tenant.

CREATE TABLE credit_types (
  tenant      TEXT NOT NULL,
  id          TEXT NOT NULL,
  name        TEXT NOT NULL,
  currency    TEXT NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, id)
);

CREATE TABLE exchange_rates (
  tenant          TEXT NOT NULL,
  credit_type_id  TEXT NOT NULL,
  effective_at    TIMESTAMPTZ NOT NULL,
  rate            TEXT NOT NULL,          -- exact decimal: currency per credit
  currency        TEXT NOT NULL,
  PRIMARY KEY (tenant, credit_type_id, effective_at),
  FOREIGN KEY (tenant, credit_type_id) REFERENCES credit_types (tenant, id)
);

CREATE TABLE wallets (
  tenant                  TEXT NOT NULL,
  id                      TEXT NOT NULL,
  customer_id             TEXT NOT NULL,
  unit                    TEXT NOT NULL,
  kind                    TEXT NOT NULL CHECK (kind IN ('credits', 'prepaid')),
  policy_mode             TEXT NOT NULL CHECK (policy_mode IN ('hard_stop', 'soft_negative', 'postpaid_overage')),
  negative_limit_nanos    BIGINT NOT NULL DEFAULT 0 CHECK (negative_limit_nanos >= 0),
  overage_rate            TEXT NOT NULL DEFAULT '',
  overage_currency        TEXT NOT NULL DEFAULT '',
  overdraft_posted_nanos  BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_posted_nanos >= 0),
  overdraft_held_nanos    BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_held_nanos >= 0),
  auto_top_up             JSONB,
  top_up_armed            BOOLEAN NOT NULL DEFAULT TRUE,
  last_top_up_at          TIMESTAMPTZ,
  top_up_seq              INTEGER NOT NULL DEFAULT 0,
  ledger_account_id       TEXT NOT NULL,
  created_at              TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, id),
  UNIQUE (tenant, customer_id, unit)
);

CREATE TABLE grants (
  tenant               TEXT NOT NULL,
  id                   TEXT NOT NULL,
  wallet_id            TEXT NOT NULL,
  kind                 TEXT NOT NULL CHECK (kind IN ('purchased', 'promotional', 'allowance', 'rollover')),
  amount_nanos         BIGINT NOT NULL CHECK (amount_nanos > 0),
  burned_nanos         BIGINT NOT NULL DEFAULT 0 CHECK (burned_nanos >= 0),
  held_nanos           BIGINT NOT NULL DEFAULT 0 CHECK (held_nanos >= 0),
  expired_nanos        BIGINT NOT NULL DEFAULT 0 CHECK (expired_nanos >= 0),
  priority             INTEGER NOT NULL,
  effective_at         TIMESTAMPTZ NOT NULL,
  expires_at           TIMESTAMPTZ,
  created_at           TIMESTAMPTZ NOT NULL,
  cost_basis           TEXT NOT NULL,
  cost_basis_currency  TEXT NOT NULL,
  scope_charge_ids     TEXT[] NOT NULL DEFAULT '{}',
  scope_models         TEXT[] NOT NULL DEFAULT '{}',
  rollover             JSONB,
  period_end           TIMESTAMPTZ,
  renew                BOOLEAN NOT NULL DEFAULT FALSE,
  root_id              TEXT NOT NULL,
  period_index         INTEGER NOT NULL DEFAULT 0,
  state                TEXT NOT NULL CHECK (state IN ('active', 'expired', 'rolled_over')),
  invoice_id           TEXT NOT NULL DEFAULT '',
  description          TEXT NOT NULL DEFAULT '',
  request_hash         TEXT NOT NULL,
  PRIMARY KEY (tenant, id),
  FOREIGN KEY (tenant, wallet_id) REFERENCES wallets (tenant, id),
  -- The PostgreSQL guard behind the real-time decision: no grant ever gives more than it has.
  CONSTRAINT grants_within_amount CHECK (burned_nanos + held_nanos + expired_nanos <= amount_nanos)
);
CREATE INDEX grants_wallet_active ON grants (tenant, wallet_id) WHERE state = 'active';
CREATE INDEX grants_expiry ON grants (expires_at) WHERE state = 'active' AND expires_at IS NOT NULL;
CREATE INDEX grants_period_end ON grants (period_end) WHERE state = 'active' AND period_end IS NOT NULL;

CREATE TABLE holds (
  tenant           TEXT NOT NULL,
  id               TEXT NOT NULL,
  wallet_id        TEXT NOT NULL,
  amount_nanos     BIGINT NOT NULL CHECK (amount_nanos > 0),
  slices           JSONB NOT NULL,         -- [{"g": grant id, "n": "nanos"}] in burn-down order
  overdraft_nanos  BIGINT NOT NULL DEFAULT 0,
  uncovered_nanos  BIGINT NOT NULL DEFAULT 0,
  state            TEXT NOT NULL CHECK (state IN ('pending', 'captured', 'released', 'expired')),
  expires_at       TIMESTAMPTZ NOT NULL,
  captured_nanos   BIGINT NOT NULL DEFAULT 0,
  charge_id        TEXT NOT NULL DEFAULT '',
  model            TEXT NOT NULL DEFAULT '',
  request_hash     TEXT NOT NULL,
  created_at       TIMESTAMPTZ NOT NULL,
  resolved_at      TIMESTAMPTZ,
  PRIMARY KEY (tenant, id),
  FOREIGN KEY (tenant, wallet_id) REFERENCES wallets (tenant, id)
);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE state = 'pending';

-- One row per burn that invoicing sees: a Consume item (source 'consume') or a Capture ('capture').
CREATE TABLE consumptions (
  tenant           TEXT NOT NULL,
  source           TEXT NOT NULL CHECK (source IN ('consume', 'capture')),
  id               TEXT NOT NULL,
  wallet_id        TEXT NOT NULL,
  customer_id      TEXT NOT NULL,
  unit             TEXT NOT NULL,
  amount_nanos     BIGINT NOT NULL,
  consumed_nanos   BIGINT NOT NULL CHECK (consumed_nanos >= 0),
  shortfall_nanos  BIGINT NOT NULL CHECK (shortfall_nanos >= 0),
  event_id         TEXT NOT NULL DEFAULT '',
  charge_id        TEXT NOT NULL DEFAULT '',
  model            TEXT NOT NULL DEFAULT '',
  hold_id          TEXT NOT NULL DEFAULT '',
  occurred_at      TIMESTAMPTZ NOT NULL,
  request_hash     TEXT NOT NULL,
  created_at       TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, source, id),
  CHECK (consumed_nanos + shortfall_nanos = amount_nanos)
);
CREATE INDEX consumptions_customer ON consumptions (tenant, customer_id, unit, occurred_at);

-- The statement: every movement of every grant, each traceable to its cause.
CREATE TABLE movements (
  tenant              TEXT NOT NULL,
  id                  TEXT NOT NULL,
  seq                 BIGSERIAL,
  wallet_id           TEXT NOT NULL,
  grant_id            TEXT NOT NULL DEFAULT '',
  kind                TEXT NOT NULL,
  amount_nanos        BIGINT NOT NULL CHECK (amount_nanos > 0),
  source_id           TEXT NOT NULL,
  event_id            TEXT NOT NULL DEFAULT '',
  hold_id             TEXT NOT NULL DEFAULT '',
  invoice_id          TEXT NOT NULL DEFAULT '',
  ledger_transfer_id  TEXT NOT NULL DEFAULT '',
  occurred_at         TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, id)
);
CREATE INDEX movements_wallet ON movements (tenant, wallet_id, seq);

CREATE TABLE alerts (
  tenant        TEXT NOT NULL,
  id            TEXT NOT NULL,
  seq           BIGSERIAL,
  kind          TEXT NOT NULL CHECK (kind IN ('credits_expiring', 'low_balance', 'auto_top_up')),
  wallet_id     TEXT NOT NULL,
  customer_id   TEXT NOT NULL,
  grant_id      TEXT NOT NULL DEFAULT '',
  amount_nanos  BIGINT NOT NULL DEFAULT 0,
  unit          TEXT NOT NULL,
  expires_at    TIMESTAMPTZ,
  created_at    TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, id)
);
CREATE INDEX alerts_tenant_seq ON alerts (tenant, seq);

-- Transactional outbox of ledger transfers: written in the same transaction as the wallet change,
-- posted to the ledger right after commit (and retried until posted). One row = one linked chain.
CREATE TABLE ledger_outbox (
  seq         BIGSERIAL PRIMARY KEY,
  tenant      TEXT NOT NULL,
  transfers   JSONB NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL,
  posted_at   TIMESTAMPTZ,
  attempts    INTEGER NOT NULL DEFAULT 0,
  error       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX ledger_outbox_unposted ON ledger_outbox (seq) WHERE posted_at IS NULL;
