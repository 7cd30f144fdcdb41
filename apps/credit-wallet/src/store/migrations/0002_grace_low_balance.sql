-- credit-wallet: per-grant expiry grace, per-wallet low-balance alert (separate from auto top-up).

-- The grant's own grace after expires_at before breakage (NULL: the deployment default).
ALTER TABLE grants ADD COLUMN expiry_grace_ms BIGINT CHECK (expiry_grace_ms IS NULL OR (expiry_grace_ms >= 0 AND expiry_grace_ms <= 7776000000));

-- Low-balance alert: threshold on the available balance (NULL: disabled), armed while the
-- available balance is at or above it, and a counter of crossings (the alert id of each crossing).
ALTER TABLE wallets ADD COLUMN low_balance_threshold_nanos BIGINT;
ALTER TABLE wallets ADD COLUMN low_balance_armed BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE wallets ADD COLUMN low_balance_seq INTEGER NOT NULL DEFAULT 0;
