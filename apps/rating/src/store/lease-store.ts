import type { Db, Queryable } from "@nanobill/db";
import { big } from "./sql.js";

/** LeaseLostError: this process no longer holds the partition's lease (fenced); the batch is refused. */
export class LeaseLostError extends Error {
  constructor(
    readonly lease: string,
    readonly owner: string,
    readonly epoch: bigint,
  ) {
    super(`lease of ${lease} lost by ${owner} (epoch ${epoch})`);
    this.name = "LeaseLostError";
  }
}

export interface HeldLease {
  name: string;
  partition: number;
  epoch: bigint;
}

export interface LeaseRow extends HeldLease {
  partitionCount: number;
  owner: string;
  expiresMs: number;
}

const TTL = `($3::bigint * interval '1 millisecond')`;

/**
 * LeaseStore: partition leases and consumer members (migration 0002). Every time is the
 * database's now(), so the pods' clocks do not matter. Acquisition bumps the epoch (the fencing
 * token); `fence` is called first in every batch transaction of a leased consumer.
 */
export class LeaseStore {
  constructor(readonly db: Db) {}

  /** ensure: one (free) lease row per partition of this partitioning. */
  async ensure(names: Array<{ name: string; partition: number }>, partitionCount: number): Promise<void> {
    await this.db.query(
      `INSERT INTO consumer_leases (name, partition_count, partition, owner, epoch, expires_at, update_time)
       SELECT n, $2, p, '', 0, to_timestamp(0), now() FROM unnest($1::text[], $3::int[]) AS u(n, p)
       ON CONFLICT (name) DO NOTHING`,
      [names.map((n) => n.name), partitionCount, names.map((n) => n.partition)],
    );
  }

  /**
   * heartbeat: marks `owner` live for ttlMs, forgets expired members, and returns the live members
   * of the same partitioning (owner ids).
   */
  async heartbeat(owner: string, partitionCount: number, ttlMs: number): Promise<string[]> {
    await this.db.query(
      `INSERT INTO consumer_members (owner, partition_count, expires_at, join_time) VALUES ($1, $2, now() + ${TTL}, now())
       ON CONFLICT (owner) DO UPDATE SET partition_count = EXCLUDED.partition_count, expires_at = EXCLUDED.expires_at`,
      [owner, partitionCount, ttlMs],
    );
    await this.db.query(`DELETE FROM consumer_members WHERE expires_at <= now()`);
    const r = await this.db.query(`SELECT owner FROM consumer_members WHERE partition_count = $1 ORDER BY owner`, [partitionCount]);
    return r.rows.map((row) => row.owner as string);
  }

  /** renew: extends the leases `owner` still holds at their epoch; returns those (the others were lost). */
  async renew(owner: string, held: HeldLease[], ttlMs: number): Promise<Set<string>> {
    if (held.length === 0) return new Set();
    const r = await this.db.query(
      `UPDATE consumer_leases SET expires_at = now() + ${TTL}, update_time = now()
        WHERE owner = $1 AND (name, epoch) IN (SELECT * FROM unnest($2::text[], $4::bigint[]))
        RETURNING name`,
      [owner, held.map((h) => h.name), ttlMs, held.map((h) => h.epoch)],
    );
    return new Set(r.rows.map((row) => row.name as string));
  }

  /**
   * acquire: takes up to `count` free or expired leases of the partitioning (lowest partitions
   * first), each with its epoch + 1. Rows locked by a batch of their current owner are skipped.
   */
  async acquire(owner: string, partitionCount: number, count: number, ttlMs: number): Promise<HeldLease[]> {
    if (count <= 0) return [];
    const r = await this.db.query(
      `UPDATE consumer_leases l SET owner = $1, epoch = l.epoch + 1, expires_at = now() + ${TTL}, update_time = now()
        WHERE l.name IN (SELECT name FROM consumer_leases WHERE partition_count = $2 AND (owner = '' OR expires_at <= now())
                          ORDER BY partition LIMIT $4 FOR UPDATE SKIP LOCKED)
        RETURNING l.name, l.partition, l.epoch`,
      [owner, partitionCount, ttlMs, count],
    );
    return r.rows.map((row) => ({ name: row.name as string, partition: Number(row.partition), epoch: big(row.epoch) })).sort((a, b) => a.partition - b.partition);
  }

  /** release: gives a lease back (free at once) if `owner` still holds it at `epoch`. */
  async release(owner: string, lease: HeldLease): Promise<boolean> {
    const r = await this.db.query(`UPDATE consumer_leases SET owner = '', expires_at = now(), update_time = now() WHERE name = $1 AND owner = $2 AND epoch = $3`, [lease.name, owner, lease.epoch]);
    return r.rowCount === 1;
  }

  /** leave: forgets the member (the others' shares grow at their next heartbeat). */
  async leave(owner: string): Promise<void> {
    await this.db.query(`DELETE FROM consumer_members WHERE owner = $1`, [owner]);
  }

  /**
   * fence: in a batch transaction, locks the partition's lease row (FOR SHARE: a takeover waits
   * until this transaction ends) and throws LeaseLostError unless `owner` holds it at `epoch`.
   */
  async fence(tx: Queryable, name: string, owner: string, epoch: bigint): Promise<void> {
    const r = await tx.query(`SELECT owner, epoch FROM consumer_leases WHERE name = $1 FOR SHARE`, [name]);
    const row = r.rows[0];
    if (row === undefined || row.owner !== owner || big(row.epoch) !== epoch) throw new LeaseLostError(name, owner, epoch);
  }

  /** leases: every lease row (tests, tools), by partitioning and partition. */
  async leases(): Promise<LeaseRow[]> {
    const r = await this.db.query(`SELECT * FROM consumer_leases ORDER BY partition_count, partition`);
    return r.rows.map((row) => ({
      name: row.name as string,
      partition: Number(row.partition),
      partitionCount: Number(row.partition_count),
      owner: row.owner as string,
      epoch: big(row.epoch),
      expiresMs: (row.expires_at as Date).getTime(),
    }));
  }
}
