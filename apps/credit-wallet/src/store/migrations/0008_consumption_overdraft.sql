-- overdraft_nanos: the part of a burn's consumed_nanos that went below zero (SOFT_NEGATIVE: booked
-- receivable -> revenue, not paid by any grant). ListConsumption reports it apart, so invoicing
-- applies as credits only what grants paid. Rows written before take it from the burn's overdraft
-- movement (`mv_b:<item>:od` for a Consume item, `mv_c:<hold>:od` for a capture).
ALTER TABLE consumptions ADD COLUMN overdraft_nanos BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_nanos >= 0);
UPDATE consumptions c SET overdraft_nanos = m.amount_nanos
  FROM movements m
 WHERE m.tenant = c.tenant AND m.kind = 'overdraft'
   AND m.id = CASE c.source WHEN 'consume' THEN 'mv_b:' || c.id || ':od' ELSE 'mv_c:' || c.id || ':od' END;
