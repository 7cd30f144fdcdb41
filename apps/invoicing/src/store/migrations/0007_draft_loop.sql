-- The draft loop (INVOICING_DRAFT_LOOP_MS): the service refreshes drafts inside their grace period
-- and, when the customer's auto_finalize is on, finalizes drafts whose grace period has ended.
ALTER TABLE billing_settings ADD COLUMN auto_finalize BOOLEAN NOT NULL DEFAULT false;
-- draft_checked_at: when the loop last claimed the draft (a claim sets it, so two replicas take
-- disjoint drafts: FOR UPDATE SKIP LOCKED, and a draft is not claimed again within one interval).
ALTER TABLE invoices ADD COLUMN draft_checked_at TIMESTAMPTZ;
CREATE INDEX invoices_drafts ON invoices (draft_checked_at NULLS FIRST, period_end) WHERE status = 'draft';
