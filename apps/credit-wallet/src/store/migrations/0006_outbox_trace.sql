-- A ledger outbox row remembers the trace of the call that wrote it (W3C traceparent/tracestate;
-- empty when none was active), so the ledger transfer continues that trace whoever posts the row:
-- the caller's own flush, a flush already running for another call, or the background retry loop.
ALTER TABLE ledger_outbox ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
ALTER TABLE ledger_outbox ADD COLUMN tracestate TEXT NOT NULL DEFAULT '';
