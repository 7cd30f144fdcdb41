-- Ledger schema: accounts with running balances, immutable transfers, the state of pending
-- transfers, balance history of `history` accounts, and the ledger's last timestamp.
-- Amounts are BIGINT nano-units; timestamps are BIGINT microseconds since the Unix epoch
-- (strictly increasing across the ledger). Every row is scoped by tenant.

-- One row: the last ledger timestamp handed out. Every write transaction locks it first
-- (SELECT ... FOR UPDATE), which makes the group-commit writer the only writer even when
-- several processes share the database, and keeps timestamps strictly increasing.
CREATE TABLE ledger_meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last_timestamp_us BIGINT NOT NULL
);
INSERT INTO ledger_meta (id, last_timestamp_us) VALUES (1, 0);

-- flags bitmask: 1 linked, 2 debits_must_not_exceed_credits, 4 credits_must_not_exceed_debits, 8 history.
CREATE TABLE accounts (
  tenant TEXT NOT NULL,
  id TEXT NOT NULL,
  unit TEXT NOT NULL,
  code INTEGER NOT NULL CHECK (code > 0),
  flags INTEGER NOT NULL,
  metadata JSONB NOT NULL,
  debits_pending_nanos BIGINT NOT NULL CHECK (debits_pending_nanos >= 0),
  debits_posted_nanos BIGINT NOT NULL CHECK (debits_posted_nanos >= 0),
  credits_pending_nanos BIGINT NOT NULL CHECK (credits_pending_nanos >= 0),
  credits_posted_nanos BIGINT NOT NULL CHECK (credits_posted_nanos >= 0),
  timestamp_us BIGINT NOT NULL,
  PRIMARY KEY (tenant, id),
  -- The balance flags hold in the database too (a second line of defence behind the domain).
  CONSTRAINT accounts_debits_must_not_exceed_credits
    CHECK ((flags & 2) = 0 OR debits_pending_nanos + debits_posted_nanos <= credits_posted_nanos),
  CONSTRAINT accounts_credits_must_not_exceed_debits
    CHECK ((flags & 4) = 0 OR credits_pending_nanos + credits_posted_nanos <= debits_posted_nanos)
);

-- flags bitmask: 1 linked, 2 pending, 4 post_pending_transfer, 8 void_pending_transfer,
-- 16 balancing_debit, 32 balancing_credit. Rows are never updated or deleted (trigger below).
CREATE TABLE transfers (
  tenant TEXT NOT NULL,
  id TEXT NOT NULL,
  debit_account_id TEXT NOT NULL,
  credit_account_id TEXT NOT NULL,
  amount_nanos BIGINT NOT NULL CHECK (amount_nanos >= 0),
  amount_requested_nanos BIGINT NOT NULL,
  unit TEXT NOT NULL,
  pending_id TEXT,
  timeout_seconds BIGINT NOT NULL,
  code INTEGER NOT NULL,
  flags INTEGER NOT NULL,
  refs JSONB,
  timestamp_us BIGINT NOT NULL,
  expires_at_us BIGINT,
  PRIMARY KEY (tenant, id)
);
CREATE INDEX transfers_debit_account ON transfers (tenant, debit_account_id, timestamp_us);
CREATE INDEX transfers_credit_account ON transfers (tenant, credit_account_id, timestamp_us);

CREATE FUNCTION ledger_transfers_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger transfers are immutable (% of %)', TG_OP, OLD.id USING ERRCODE = 'P0001';
END;
$$;
CREATE TRIGGER transfers_immutable BEFORE UPDATE OR DELETE ON transfers
  FOR EACH ROW EXECUTE FUNCTION ledger_transfers_are_immutable();

-- The state of each pending transfer: pending, then once posted / voided / expired.
CREATE TABLE pending_transfers (
  tenant TEXT NOT NULL,
  id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'voided', 'expired')),
  expires_at_us BIGINT,
  resolved_at_us BIGINT,
  PRIMARY KEY (tenant, id)
);
CREATE INDEX pending_transfers_due ON pending_transfers (expires_at_us)
  WHERE state = 'pending' AND expires_at_us IS NOT NULL;

-- Balances of `history` accounts just after each change.
CREATE TABLE account_balances (
  tenant TEXT NOT NULL,
  account_id TEXT NOT NULL,
  timestamp_us BIGINT NOT NULL,
  debits_pending_nanos BIGINT NOT NULL,
  debits_posted_nanos BIGINT NOT NULL,
  credits_pending_nanos BIGINT NOT NULL,
  credits_posted_nanos BIGINT NOT NULL,
  PRIMARY KEY (tenant, account_id, timestamp_us)
);
