-- Rating: customers, plans (versioned, charges in the version spec), subscriptions (phases, seat
-- changes), price overrides, the cost catalog, rated events and hour buckets, rating state
-- (carried residues, period totals, outcome tasks), the consumer cursor, the wallet outbox,
-- guardrail rules and alerts. Money is BIGINT nanos beside a unit; residues are exact rationals
-- (NUMERIC numerator / denominator). Every key starts with the tenant (Citus-compatible).

CREATE TABLE customers (
  tenant          TEXT        NOT NULL,
  customer_id     TEXT        NOT NULL,
  name            TEXT        NOT NULL,
  currency        TEXT        NOT NULL,
  billing_anchor  TIMESTAMPTZ NOT NULL,
  time_zone       TEXT        NOT NULL,
  create_time     TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, customer_id)
);

CREATE TABLE plans (
  tenant      TEXT        NOT NULL,
  plan_id     TEXT        NOT NULL,
  name        TEXT        NOT NULL,
  create_time TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, plan_id)
);

-- spec: the PlanVersionSpec JSON (charges included) exactly as accepted; immutable once published.
CREATE TABLE plan_versions (
  tenant       TEXT        NOT NULL,
  plan_id      TEXT        NOT NULL,
  version      INTEGER     NOT NULL CHECK (version >= 1),
  status       TEXT        NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
  spec         JSONB       NOT NULL,
  publish_time TIMESTAMPTZ,
  update_time  TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, plan_id, version),
  FOREIGN KEY (tenant, plan_id) REFERENCES plans (tenant, plan_id)
);

CREATE TABLE subscriptions (
  tenant          TEXT        NOT NULL,
  subscription_id TEXT        NOT NULL,
  customer_id     TEXT        NOT NULL,
  start_time      TIMESTAMPTZ NOT NULL,
  end_time        TIMESTAMPTZ,
  create_time     TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, subscription_id),
  FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id)
);
CREATE INDEX subscriptions_customer ON subscriptions (tenant, customer_id);

CREATE TABLE subscription_phases (
  tenant          TEXT        NOT NULL,
  subscription_id TEXT        NOT NULL,
  seq             INTEGER     NOT NULL,
  plan_id         TEXT        NOT NULL,
  plan_version    INTEGER     NOT NULL,
  start_time      TIMESTAMPTZ NOT NULL,
  end_time        TIMESTAMPTZ,
  PRIMARY KEY (tenant, subscription_id, seq),
  FOREIGN KEY (tenant, subscription_id) REFERENCES subscriptions (tenant, subscription_id)
);

CREATE TABLE seat_changes (
  tenant          TEXT        NOT NULL,
  subscription_id TEXT        NOT NULL,
  change_id       TEXT        NOT NULL,
  seats           INTEGER     NOT NULL CHECK (seats >= 0),
  effective_time  TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, subscription_id, change_id),
  FOREIGN KEY (tenant, subscription_id) REFERENCES subscriptions (tenant, subscription_id)
);

CREATE TABLE price_overrides (
  tenant      TEXT        NOT NULL,
  override_id TEXT        NOT NULL,
  customer_id TEXT        NOT NULL,
  charge_id   TEXT        NOT NULL,
  spec        JSONB       NOT NULL,
  start_time  TIMESTAMPTZ NOT NULL,
  end_time    TIMESTAMPTZ,
  PRIMARY KEY (tenant, override_id),
  FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id)
);
CREATE INDEX price_overrides_customer ON price_overrides (tenant, customer_id);

-- tenant '' holds the global catalog; a tenant's own rows override it.
CREATE TABLE cost_rates (
  tenant         TEXT        NOT NULL,
  provider       TEXT        NOT NULL,
  model          TEXT        NOT NULL,
  metric         TEXT        NOT NULL,
  effective_time TIMESTAMPTZ NOT NULL,
  amount         TEXT        NOT NULL,
  per_quantity   TEXT        NOT NULL,
  currency       TEXT        NOT NULL,
  PRIMARY KEY (tenant, provider, model, metric, effective_time)
);

-- One row per (event, charge); charge_id '' holds cost-only lines. lines: RatedLine JSON.
CREATE TABLE rated_events (
  tenant          TEXT        NOT NULL,
  event_id        TEXT        NOT NULL,
  charge_id       TEXT        NOT NULL,
  customer_id     TEXT        NOT NULL,
  event_type      TEXT        NOT NULL,
  event_time      TIMESTAMPTZ NOT NULL,
  subscription_id TEXT        NOT NULL,
  model           TEXT        NOT NULL,
  task_id         TEXT        NOT NULL,
  unit            TEXT        NOT NULL,
  price_nanos     BIGINT      NOT NULL,
  cost_unit       TEXT        NOT NULL,
  cost_nanos      BIGINT      NOT NULL,
  lines           JSONB       NOT NULL,
  sequence        BIGINT      NOT NULL,
  rate_time       TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, event_id, charge_id)
);
CREATE INDEX rated_events_customer_time ON rated_events (tenant, customer_id, event_time);

CREATE TABLE usage_buckets (
  tenant      TEXT        NOT NULL,
  customer_id TEXT        NOT NULL,
  charge_id   TEXT        NOT NULL,
  dims_key    TEXT        NOT NULL,
  model       TEXT        NOT NULL,
  hour_start  TIMESTAMPTZ NOT NULL,
  dimensions  JSONB       NOT NULL,
  unit        TEXT        NOT NULL,
  cost_unit   TEXT        NOT NULL,
  quantity    BIGINT      NOT NULL,
  price_nanos BIGINT      NOT NULL,
  cost_nanos  BIGINT      NOT NULL,
  event_count BIGINT      NOT NULL,
  PRIMARY KEY (tenant, customer_id, hour_start, charge_id, dims_key, model)
);
CREATE INDEX usage_buckets_hour ON usage_buckets (tenant, hour_start);

-- Carried sub-nano residues: kind 'p' price, 'c' cost; |num/den| < 1 nano.
CREATE TABLE carries (
  tenant      TEXT    NOT NULL,
  customer_id TEXT    NOT NULL,
  charge_id   TEXT    NOT NULL,
  dims_key    TEXT    NOT NULL,
  kind        TEXT    NOT NULL CHECK (kind IN ('p', 'c')),
  residue_num NUMERIC NOT NULL,
  residue_den NUMERIC NOT NULL CHECK (residue_den > 0),
  PRIMARY KEY (tenant, customer_id, charge_id, dims_key, kind)
);

CREATE TABLE period_totals (
  tenant       TEXT        NOT NULL,
  customer_id  TEXT        NOT NULL,
  charge_id    TEXT        NOT NULL,
  period_start TIMESTAMPTZ NOT NULL,
  period_end   TIMESTAMPTZ NOT NULL,
  unit         TEXT        NOT NULL,
  quantity     NUMERIC     NOT NULL,
  booked_nanos BIGINT      NOT NULL,
  cost_nanos   BIGINT      NOT NULL,
  PRIMARY KEY (tenant, customer_id, charge_id, period_start)
);

CREATE TABLE outcome_tasks (
  tenant             TEXT   NOT NULL,
  customer_id        TEXT   NOT NULL,
  task_id            TEXT   NOT NULL,
  attempt_cost_nanos BIGINT NOT NULL,
  cost_unit          TEXT   NOT NULL,
  outcome            JSONB,
  PRIMARY KEY (tenant, customer_id, task_id)
);

CREATE TABLE consumer_cursor (
  name           TEXT        PRIMARY KEY,
  after_sequence BIGINT      NOT NULL,
  update_time    TIMESTAMPTZ NOT NULL
);

-- Amounts rated but not yet handed to credit-wallet Consume (drained after each batch).
CREATE TABLE wallet_outbox (
  tenant       TEXT        NOT NULL,
  item_id      TEXT        NOT NULL,
  customer_id  TEXT        NOT NULL,
  unit         TEXT        NOT NULL,
  amount_nanos BIGINT      NOT NULL CHECK (amount_nanos > 0),
  event_id     TEXT        NOT NULL,
  charge_id    TEXT        NOT NULL,
  model        TEXT        NOT NULL,
  occurred_at  TIMESTAMPTZ NOT NULL,
  traceparent  TEXT        NOT NULL DEFAULT '',
  tracestate   TEXT        NOT NULL DEFAULT '',
  attempts     INTEGER     NOT NULL DEFAULT 0,
  last_error   TEXT        NOT NULL DEFAULT '',
  PRIMARY KEY (tenant, item_id)
);

CREATE TABLE guardrail_rules (
  tenant         TEXT        NOT NULL,
  rule_id        TEXT        NOT NULL,
  kind           TEXT        NOT NULL CHECK (kind IN ('margin_below', 'cost_mix_shift')),
  threshold_bps  BIGINT      NOT NULL,
  window_seconds INTEGER     NOT NULL,
  customer_id    TEXT        NOT NULL,
  model          TEXT        NOT NULL,
  create_time    TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (tenant, rule_id)
);

CREATE TABLE alerts (
  tenant        TEXT        NOT NULL,
  alert_id      TEXT        NOT NULL,
  rule_id       TEXT        NOT NULL,
  customer_id   TEXT        NOT NULL,
  kind          TEXT        NOT NULL,
  observed_bps  BIGINT      NOT NULL,
  threshold_bps BIGINT      NOT NULL,
  revenue_nanos BIGINT      NOT NULL,
  cost_nanos    BIGINT      NOT NULL,
  unit          TEXT        NOT NULL,
  window_start  TIMESTAMPTZ NOT NULL,
  window_end    TIMESTAMPTZ NOT NULL,
  raise_time    TIMESTAMPTZ NOT NULL,
  message       TEXT        NOT NULL,
  PRIMARY KEY (tenant, alert_id)
);
CREATE INDEX alerts_raise_time ON alerts (tenant, raise_time);
