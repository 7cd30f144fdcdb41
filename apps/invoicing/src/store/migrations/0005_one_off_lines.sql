-- One-off lines (wallet auto top-ups, charge_id = the grant id) are billed once, ever: the close
-- skips grants already on an invoice (void included), and this index is the final guard.
CREATE UNIQUE INDEX invoice_lines_one_off ON invoice_lines (tenant, charge_id) WHERE kind = 'one_off';
