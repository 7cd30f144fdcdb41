-- The wallet items of one consumer batch as ONE row (a JSON array), written in the batch's
-- transaction and deleted when credit-wallet has answered for all of them: one insert and one
-- delete per batch instead of a row per item (the per-item COPY and DELETE were the largest SQL
-- cost of a batch after the rated rows). A failed hand-off keeps the row (attempts + 1); a drain
-- sends its items again (Consume is idempotent on the item id). wallet_outbox keeps the items
-- that are not a batch's (confirmed outcomes).
CREATE TABLE wallet_outbox_batches (
  batch_id    BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item_count  INTEGER     NOT NULL CHECK (item_count > 0),
  -- [[tenant, item_id, customer_id, unit, amount_nanos (decimal string), event_id, charge_id,
  --   model, occurred_ms, traceparent, tracestate], ...]
  items       TEXT        NOT NULL,
  create_time TIMESTAMPTZ NOT NULL,
  attempts    INTEGER     NOT NULL DEFAULT 0,
  last_error  TEXT
);
