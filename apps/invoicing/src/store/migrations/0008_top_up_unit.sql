-- The wallet unit of an auto top-up line (one_off): a prepaid-money top-up in the invoice's unit
-- is not revenue; the invoice's ledger legs move it to the wallet's receivable instead
-- (src/ledger.ts, `_topup`). '' on other lines and on lines stored before (their legs unchanged).
ALTER TABLE invoice_lines ADD COLUMN top_up_unit TEXT NOT NULL DEFAULT '';
