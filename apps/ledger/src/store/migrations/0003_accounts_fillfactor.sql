-- Account balances are updated in place by every commit that touches them (one UPDATE per touched
-- account per commit). With the default fillfactor (100) a page has no room for the new row
-- version, so almost every update was a non-HOT update that also inserted into every index of
-- accounts (primary key, accounts_time, the GIN metadata index): measured 4% HOT updates over
-- 98,000 hot-account transfers. With half of each page free, the new version lands on the same page
-- and no index is touched (100% HOT in the same run; the accounts UPDATE of an 8,190-transfer
-- commit took a third to a half of the time). Only new pages get the setting: run
-- `VACUUM FULL accounts` in a maintenance window to rewrite an existing table.
ALTER TABLE accounts SET (fillfactor = 50);
