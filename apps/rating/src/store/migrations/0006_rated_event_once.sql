-- An event is rated once, whatever charges it is rated under. The rated rows' primary key
-- (tenant, event_id, charge_id) refuses a replay only when it produces the same charge ids; a
-- replay rated under a changed catalog (a subscription created, a plan migrated) produces other
-- charge ids and would slip past it. event_row numbers an event's rows (0 = the first): the
-- partial unique index below holds one entry per event, so any replay of a rated event fails the
-- batch's COPY and the consumer rates the batch again with the already-rated lookup.
ALTER TABLE rated_events ADD COLUMN event_row SMALLINT NOT NULL DEFAULT 0;
UPDATE rated_events r SET event_row = 1
  FROM (SELECT tenant, event_id, min(charge_id) AS first_charge FROM rated_events GROUP BY tenant, event_id) f
  WHERE r.tenant = f.tenant AND r.event_id = f.event_id AND r.charge_id <> f.first_charge;
CREATE UNIQUE INDEX rated_events_event ON rated_events (tenant, event_id) WHERE event_row = 0;
