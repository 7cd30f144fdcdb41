-- TigerBeetle 0.16 parity: spent transfer ids, closed/imported accounts, query indexes.

-- Spent ids (id_already_failed): a transfer that failed with a transient result (debit/credit
-- account not found, pending transfer not found, exceeds credits/debits, debit/credit account
-- already closed) leaves an id-only row in transfers, flag bit 512, no accounts, amount 0, with
-- the result here and the failure time in timestamp_us. Like TigerBeetle's orphaned ids (which
-- live in the transfers' id tree), this makes the transfers primary key refuse the id again for
-- free; every read of transfers skips these rows. NULL on every real transfer.
ALTER TABLE transfers ADD COLUMN failed_result TEXT;

-- Account flags gain 16 imported and 32 closed (closed changes with closing transfers, their void
-- or expiry). Transfer flags gain 64 closing_debit, 128 closing_credit, 256 imported, and 512 on
-- spent-id rows. The bitmasks need no schema change.

-- QueryAccounts / QueryTransfers: one page in timestamp order per tenant, the filters (unit,
-- code, metadata / references containment) applied along a bounded scan of the time index
-- (QUERY_SCAN_ROWS_MAX rows per call). Spent-id rows are left out of the time index. Transfers get
-- no GIN index on references: measured, it cost ~25% of the store's batched write rate (the time
-- index ~15%, see apps/ledger/README.md); accounts are written rarely, so they get one for metadata.
CREATE INDEX transfers_time ON transfers (tenant, timestamp_us) WHERE (flags & 512) = 0;
CREATE INDEX accounts_time ON accounts (tenant, timestamp_us);
CREATE INDEX accounts_metadata ON accounts USING GIN (metadata jsonb_path_ops);
