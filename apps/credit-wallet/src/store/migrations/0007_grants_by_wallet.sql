-- Every grant of a wallet by (tenant, wallet_id), closed ones included: GetBalance's sums and its
-- bounded list of grants, and the granted total of Grant / auto top-up / renewal (openGrants), read
-- them without scanning the whole table (grants_wallet_active covers the active ones only).
CREATE INDEX grants_wallet ON grants (tenant, wallet_id);
