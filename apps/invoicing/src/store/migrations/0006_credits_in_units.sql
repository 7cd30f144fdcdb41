-- Credits of each credit type consumed for the period (informational; not in the totals):
-- [{"t": credit type, "n": name, "c": credits nanos, "r": rate, "rc": rate currency, "v": value nanos}].
ALTER TABLE invoices ADD COLUMN credits_in_units JSONB;
