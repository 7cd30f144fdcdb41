-- Partition leases: several rating processes split the partitions of metering's feed between them.
-- One row per partition (name = the partition's cursor name, "metering:p<k>/<n>" or "metering").
-- owner '' = free. epoch is the fencing token: +1 on every acquisition, so a process that lost its
-- lease (expired, taken over) is refused by the batch transaction's fence and by the cursor write.
-- Times are the database's clock (now()), never a process's: pods' clocks may disagree.
CREATE TABLE consumer_leases (
  name            TEXT        PRIMARY KEY,
  partition_count INTEGER     NOT NULL CHECK (partition_count >= 1),
  partition       INTEGER     NOT NULL CHECK (partition >= 0 AND partition < partition_count),
  owner           TEXT        NOT NULL DEFAULT '',
  epoch           BIGINT      NOT NULL DEFAULT 0,
  expires_at      TIMESTAMPTZ NOT NULL,
  update_time     TIMESTAMPTZ NOT NULL
);

-- The live consumer processes (heartbeat): each takes about partitions / members of the leases.
CREATE TABLE consumer_members (
  owner           TEXT        PRIMARY KEY,
  partition_count INTEGER     NOT NULL,
  expires_at      TIMESTAMPTZ NOT NULL,
  join_time       TIMESTAMPTZ NOT NULL
);

-- The epoch of the lease that last advanced the cursor (0 = written without a lease). A fenced
-- write with a lower epoch than the stored one is refused.
ALTER TABLE consumer_cursor ADD COLUMN fence_epoch BIGINT NOT NULL DEFAULT 0;
