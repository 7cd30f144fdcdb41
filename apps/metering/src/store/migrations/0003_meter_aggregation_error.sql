-- A meter whose usage cannot be computed (its definition makes the aggregation throw, e.g. a
-- definition stored before a validation rule existed) is set aside instead of stopping the shared
-- usage cursor for every tenant: the aggregator (or the backfill) records why here, in the
-- transaction that would have added its usage, and no longer applies it. QueryUsage on such a
-- meter answers FailedPrecondition with this text; the other meters keep advancing.
ALTER TABLE meters ADD COLUMN aggregation_error TEXT;
