-- Account and transfer codes are uint32 in the proto (nanobill.ledger.v1: `uint32 code`) but were
-- INTEGER (int32) here: a code above 2,147,483,647 passed the domain and then failed the whole
-- group commit at COPY (every request of every tenant in it). BIGINT holds every uint32. No index
-- holds a code; the filters (QueryAccounts / QueryTransfers / GetAccountTransfers `code = $n`)
-- compare with a bigint parameter. The CHECK (code > 0) of accounts stays.
-- Cost: int4 -> int8 rewrites both tables and their indexes under an ACCESS EXCLUSIVE lock (no
-- row triggers fire, so the transfers immutability trigger is not involved): on a large ledger,
-- apply it in a maintenance window.
ALTER TABLE accounts ALTER COLUMN code TYPE BIGINT;
ALTER TABLE transfers ALTER COLUMN code TYPE BIGINT;
