// PostgreSQL store of the metering service (via @nanobill/db: pg or PGlite). All SQL lives here.
import type { Db, Queryable } from "@nanobill/db";
import { formatDecimal, ONE, SCALE, type Scaled } from "../domain/decimal.js";
import { decodeProperties, echoText, type PropertyValue, type Rejection, type ValidEvent } from "../domain/event.js";
import type { MeterDefinition } from "../domain/meter.js";
import { bucketDeltas, type Bucket, type Level, type MeteredEvent, type UniqueValue } from "../domain/usage.js";
import { BACKFILL_CHUNK_EVENTS, METERS_PER_TENANT_MAX, READ_PARTITION_SCAN_MAX, RECENT_EVENTS_MAX } from "../limits.js";
import { RecentEvents } from "./recent-events.js";

/** One event of a group commit. */
export interface IngestItem {
  tenant: string;
  event: ValidEvent;
  /** Too old to store: answered DUPLICATE/CONFLICT if the id exists, else rejected with this. */
  late?: Rejection;
}

export type ItemOutcome =
  | { status: "accepted"; sequence: bigint }
  | { status: "duplicate"; sequence: bigint }
  | { status: "conflict"; sequence: bigint }
  | { status: "rejected"; field: string; reason: string; message: string };

/** An event as stored (the downstream cursor's item). */
export interface StoredEvent {
  tenant: string;
  sequence: bigint;
  id: string;
  customerId: string;
  type: string;
  timestampUs: bigint;
  properties: Record<string, PropertyValue>;
  traceparent: string;
  tracestate: string;
  receivedUs: bigint;
}

export interface StoredMeter {
  tenant: string;
  definition: MeterDefinition;
  createdUs: bigint;
  backfillThroughSequence: bigint;
  backfillDoneSequence: bigint;
  backfillEventsDone: bigint;
  /** Why the meter's usage stopped being computed (its definition made aggregation throw); null when fine. */
  aggregationError: string | null;
}

export type CreateMeterOutcome =
  | { status: "created"; meter: StoredMeter }
  | { status: "exists"; meter: StoredMeter }
  | { status: "conflict"; meter: StoredMeter }
  | { status: "too_many" };

/** Parses a NUMERIC text (any integer digits, at most SCALE fraction digits) to a scaled bigint. */
export function parseStoredDecimal(s: string): Scaled {
  const m = /^(-)?(\d+)(?:\.(\d+))?$/.exec(s);
  if (!m) throw new Error(`stored NUMERIC is not a decimal: ${s}`);
  const frac = (m[3] ?? "").replace(/0+$/, "");
  if (frac.length > SCALE) throw new Error(`stored NUMERIC has more than ${SCALE} fraction digits: ${s}`);
  const v = BigInt(m[2]!) * ONE + BigInt(frac.padEnd(SCALE, "0") || "0");
  return m[1] ? -v : v;
}

const KEY_SEP = "\u0000";
const keyOf = (tenant: string, id: string) => `${tenant}${KEY_SEP}${id}`;

/** Serializes writers of events (and the readers of the sequence high-water mark). */
const LOCK_EVENTS = "LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE";
/** The database's epoch: its server's start time (recent-events.ts). */
const EPOCH_SQL = "pg_postmaster_start_time()::text";

/** The NOTIFY channel of new events in a schema (every replica of metering on it listens). */
export function eventsChannel(schema: string): string {
  return `metering_events_${schema}`.slice(0, 63);
}

function meterFromRow(r: Record<string, unknown>): StoredMeter {
  return {
    tenant: r.tenant as string,
    definition: r.definition as MeterDefinition,
    createdUs: r.created_us as bigint,
    backfillThroughSequence: r.backfill_through_sequence as bigint,
    backfillDoneSequence: r.backfill_done_sequence as bigint,
    backfillEventsDone: r.backfill_events_done as bigint,
    aggregationError: (r.aggregation_error as string | null | undefined) ?? null,
  };
}

function eventFromRow(r: Record<string, unknown>): StoredEvent {
  return {
    tenant: r.tenant as string,
    sequence: r.sequence as bigint,
    id: r.event_id as string,
    customerId: r.customer_id as string,
    type: r.type as string,
    timestampUs: r.timestamp_us as bigint,
    properties: decodeProperties(r.properties),
    traceparent: r.traceparent as string,
    tracestate: r.tracestate as string,
    receivedUs: r.received_us as bigint,
  };
}

const EVENT_COLUMNS = "sequence, tenant, event_id, customer_id, type, timestamp_us, properties, traceparent, tracestate, received_us";
const EVENT_COPY_COLUMNS = ["sequence", "tenant", "event_id", "customer_id", "type", "timestamp_us", "properties", "traceparent", "tracestate", "content_hash", "received_us"];

/** Primary key order of usage buckets (tenant, meter, level, start, customer, group key; strings by UTF-16 code units). */
export function bucketKeyOrder(a: Bucket, b: Bucket): number {
  if (a.tenant !== b.tenant) return a.tenant < b.tenant ? -1 : 1;
  if (a.meterId !== b.meterId) return a.meterId < b.meterId ? -1 : 1;
  if (a.level !== b.level) return a.level < b.level ? -1 : 1;
  if (a.startUs !== b.startUs) return a.startUs < b.startUs ? -1 : 1;
  if (a.customerId !== b.customerId) return a.customerId < b.customerId ? -1 : 1;
  if (a.groupKey !== b.groupKey) return a.groupKey < b.groupKey ? -1 : 1;
  return 0;
}

/** A meter set aside because computing its usage threw (recorded in meters.aggregation_error). */
export interface FailedMeter {
  tenant: string;
  meterId: string;
  error: string;
}

export interface AggregateStepResult {
  through: bigint;
  events: number;
  /** Meters set aside in this step (their usage stops at the previous step; the others advance). */
  failed?: FailedMeter[];
}

/**
 * The bucket deltas of events for meters, isolating a meter whose definition makes the computation
 * throw: such a meter contributes nothing to this step and is returned in `failed` (its error), so
 * one bad definition cannot stop the usage of every other meter. The normal path runs once.
 */
export function isolatedDeltas(
  meters: Array<{ tenant: string; meterId: string; def: MeterDefinition; after: bigint }>,
  events: MeteredEvent[],
): { buckets: Bucket[]; uniques: UniqueValue[]; failed: FailedMeter[] } {
  const byTenant = (list: typeof meters) => {
    const map = new Map<string, typeof meters>();
    for (const m of list) {
      const l = map.get(m.tenant);
      if (l) l.push(m);
      else map.set(m.tenant, [m]);
    }
    // The usual event is after every backfill of its tenant's meters: the same list, not a new one.
    const all = new Map<string, { defs: MeterDefinition[]; afterMax: bigint }>();
    for (const [t, l] of map) all.set(t, { defs: l.map((m) => m.def), afterMax: l.reduce((x, m) => (m.after > x ? m.after : x), -1n) });
    return (t: string, seq: bigint) => {
      const a = all.get(t);
      if (a === undefined) return [];
      return seq > a.afterMax ? a.defs : map.get(t)!.filter((m) => seq > m.after).map((m) => m.def);
    };
  };
  try {
    return { ...bucketDeltas(byTenant(meters), events), failed: [] };
  } catch {
    // Find the meters that throw on their own, then compute the others together.
    const failed: FailedMeter[] = [];
    const ok = meters.filter((m) => {
      try {
        bucketDeltas(byTenant([m]), events);
        return true;
      } catch (e) {
        failed.push({ tenant: m.tenant, meterId: m.meterId, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
        return false;
      }
    });
    return { ...bucketDeltas(byTenant(ok), events), failed };
  }
}

export interface MeteringStore {
  readonly db: Db;
  /** Stores a group of events in one transaction; one outcome per item, in order. */
  ingest(items: IngestItem[], receivedUs: bigint): Promise<ItemOutcome[]>;
  /**
   * Adds the next (at most max) events after the usage cursor to the usage buckets and advances
   * the cursor, in one transaction (exactly once). Returns the new cursor and the events read.
   */
  aggregateStep(max: number): Promise<AggregateStepResult>;
  /** The greatest committed event sequence (0 when none). */
  highWaterSequence(): Promise<bigint>;
  /** Events after a sequence, in sequence order (all tenants). */
  readEvents(afterSequence: bigint, max: number): Promise<StoredEvent[]>;
  /**
   * The events of one partition (by tenant and customer) after a sequence (at most max, examining at most
   * READ_PARTITION_SCAN_MAX sequences) and the highest sequence examined: every event up to it
   * that belongs to the partition is in `events`.
   */
  readPartition(afterSequence: bigint, max: number, count: number, index: number): Promise<{ events: StoredEvent[]; through: bigint }>;
  /** All events of a tenant (tests and tools; bounded by max). */
  listTenantEvents(tenant: string, max: number): Promise<StoredEvent[]>;
  createMeter(tenant: string, def: MeterDefinition, nowUs: bigint, same: (a: MeterDefinition, b: MeterDefinition) => boolean): Promise<CreateMeterOutcome>;
  getMeter(tenant: string, meterId: string): Promise<StoredMeter | undefined>;
  /** Deletes a meter and its usage (buckets, unique values); the number of buckets deleted, or undefined when there is no such meter. */
  deleteMeter(tenant: string, meterId: string): Promise<bigint | undefined>;
  listMeters(tenant: string, afterId: string, limit: number): Promise<StoredMeter[]>;
  /** Meters whose backfill is not finished (all tenants). */
  pendingBackfills(limit: number): Promise<Array<{ tenant: string; meterId: string }>>;
  /** Backfills one chunk; true when the meter's backfill is complete. */
  backfillStep(tenant: string, meterId: string, chunk?: number): Promise<boolean>;
  readBuckets(tenant: string, meterId: string, level: Level, startUs: bigint, endUs: bigint, customerIds: string[], limit: number): Promise<Bucket[]>;
  readUniqueValues(tenant: string, meterId: string, level: Level, startUs: bigint, endUs: bigint, customerIds: string[], limit: number): Promise<UniqueValue[]>;
  /** Raises a customer's closed-through time (never lowers it); returns the stored value. */
  closePeriod(tenant: string, customerId: string, closeUs: bigint): Promise<bigint>;
  getGenAiMapping(tenant: string): Promise<unknown | undefined>;
  setGenAiMapping(tenant: string, mapping: unknown): Promise<void>;
}

export function createMeteringStore(db: Db): MeteringStore {
  // The events this store committed, for its aggregator (recent-events.ts: exact, and dropped
  // when the database's epoch changed).
  const recent = new RecentEvents(RECENT_EVENTS_MAX);

  async function writeUsage(tx: Queryable, buckets: Bucket[], uniques: UniqueValue[]): Promise<void> {
    if (buckets.length > 0) {
      // Deterministic order (primary key order) keeps concurrent writers from deadlocking.
      buckets.sort(bucketKeyOrder);
      const dec = (v: Scaled | null) => (v === null ? null : formatDecimal(v));
      // Typed arrays (unnest) rather than one JSON document: ~1.5x cheaper per row on the server.
      const col = <T>(f: (b: Bucket) => T) => buckets.map(f);
      await tx.query(
        `INSERT INTO usage_buckets AS b (tenant, meter_id, level, bucket_start_us, customer_id, group_key, event_count,
           value_sum, value_min, value_max, latest_value, latest_timestamp_us, latest_sequence)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[],
           $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[], $12::bigint[], $13::bigint[])
         ON CONFLICT (tenant, meter_id, level, bucket_start_us, customer_id, group_key) DO UPDATE SET
           event_count = b.event_count + excluded.event_count,
           value_sum = b.value_sum + excluded.value_sum,
           value_min = LEAST(b.value_min, excluded.value_min),
           value_max = GREATEST(b.value_max, excluded.value_max),
           latest_value = CASE WHEN b.latest_timestamp_us IS NULL OR (excluded.latest_timestamp_us IS NOT NULL AND
               (excluded.latest_timestamp_us, excluded.latest_sequence) > (b.latest_timestamp_us, b.latest_sequence))
             THEN excluded.latest_value ELSE b.latest_value END,
           latest_sequence = CASE WHEN b.latest_timestamp_us IS NULL OR (excluded.latest_timestamp_us IS NOT NULL AND
               (excluded.latest_timestamp_us, excluded.latest_sequence) > (b.latest_timestamp_us, b.latest_sequence))
             THEN excluded.latest_sequence ELSE b.latest_sequence END,
           latest_timestamp_us = CASE WHEN b.latest_timestamp_us IS NULL OR (excluded.latest_timestamp_us IS NOT NULL AND
               (excluded.latest_timestamp_us, excluded.latest_sequence) > (b.latest_timestamp_us, b.latest_sequence))
             THEN excluded.latest_timestamp_us ELSE b.latest_timestamp_us END`,
        [
          col((b) => b.tenant),
          col((b) => b.meterId),
          col((b) => b.level),
          col((b) => b.startUs.toString()),
          col((b) => b.customerId),
          col((b) => b.groupKey),
          col((b) => b.eventCount.toString()),
          col((b) => formatDecimal(b.sum)),
          col((b) => dec(b.min)),
          col((b) => dec(b.max)),
          col((b) => (b.latest ? formatDecimal(b.latest.value) : null)),
          col((b) => (b.latest ? b.latest.timestampUs.toString() : null)),
          col((b) => (b.latest ? b.latest.sequence.toString() : null)),
        ],
      );
    }
    if (uniques.length > 0) {
      await tx.query(
        `INSERT INTO usage_unique_values (tenant, meter_id, level, bucket_start_us, customer_id, group_key, value)
         SELECT t, m, l, s::bigint, c, g, v
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(t, m, l, s, c, g, v)
         ORDER BY 1, 2, 3, 4, 5, 6, 7
         ON CONFLICT DO NOTHING`,
        [
          uniques.map((u) => u.tenant),
          uniques.map((u) => u.meterId),
          uniques.map((u) => u.level),
          uniques.map((u) => u.startUs.toString()),
          uniques.map((u) => u.customerId),
          uniques.map((u) => u.groupKey),
          uniques.map((u) => u.value),
        ],
      );
    }
  }

  async function recordFailure(tx: Queryable, f: FailedMeter, where: string): Promise<void> {
    await tx.query(`UPDATE meters SET aggregation_error = $3 WHERE tenant = $1 AND meter_id = $2 AND aggregation_error IS NULL`, [
      f.tenant,
      f.meterId,
      echoText(`usage aggregation failed ${where}: ${f.error}`, 1000),
    ]);
  }

  const store: MeteringStore = {
    db,

    async ingest(items, receivedUs) {
      if (items.length === 0) return [];
      let committed: MeteredEvent[] = [];
      let epoch = "";
      const outcomes = await db.transaction(async (tx) => {
        committed = [];
        // 1. The distinct (tenant, id)s of the group, and the (tenant, customer)s of all its items.
        const ids = new Map<string, [string, string]>();
        const pairs = new Map<string, [string, string]>();
        for (const it of items) {
          ids.set(keyOf(it.tenant, it.event.id), [it.tenant, it.event.id]);
          pairs.set(keyOf(it.tenant, it.event.customerId), [it.tenant, it.event.customerId]);
        }

        // 2. One round trip with the BEGIN and the lock (read after it, so it sees every committed
        // event, and no other writer can insert until we commit): the stored hash of the ids that
        // exist, and the closed periods of the customers.
        const [, found] = await tx.pipeline([
          { sql: LOCK_EVENTS, params: [] },
          {
            // "IN (SELECT unnest)" plans as index probes at any table size (a join on unnest may
            // plan as a hash join over the whole events table).
            sql: `SELECT 'e' AS k, e.tenant, e.event_id AS key, e.sequence AS n, e.content_hash AS v
             FROM events e WHERE (e.tenant, e.event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
           UNION ALL
           SELECT 'c', cp.tenant, cp.customer_id, cp.closed_through_us, NULL
             FROM closed_periods cp WHERE (cp.tenant, cp.customer_id) IN (SELECT * FROM unnest($3::text[], $4::text[]))`,
            params: [
              [...ids.values()].map((p) => p[0]),
              [...ids.values()].map((p) => p[1]),
              [...pairs.values()].map((p) => p[0]),
              [...pairs.values()].map((p) => p[1]),
            ],
          },
        ]);
        const rows = found!.rows;
        const stored = new Map<string, { hash: string; sequence: bigint }>();
        const closedThrough = new Map<string, bigint>();
        for (const r of rows) {
          if (r.k === "e") stored.set(keyOf(r.tenant as string, r.key as string), { hash: r.v as string, sequence: r.n as bigint });
          else closedThrough.set(keyOf(r.tenant as string, r.key as string), r.n as bigint);
        }

        // 3. The new events: for each id not stored before, the first occurrence in the group that
        // may be stored (neither too old nor in a closed period) is the candidate; an earlier
        // occurrence that may not be stored is rejected on its own, later ones compare with the
        // candidate, exactly as if each had come in its own request, in order. Candidates get
        // consecutive sequences reserved under the lock (so sequence order is commit order) and are
        // written with COPY: no per-row conflict check is needed, the lock and step 2 decided.
        const storable = (it: IngestItem) => {
          if (it.late) return false;
          if (closedThrough.size === 0) return true;
          const closed = closedThrough.get(keyOf(it.tenant, it.event.customerId));
          return closed === undefined || it.event.timestampUs >= closed;
        };
        const keys = items.map((it) => keyOf(it.tenant, it.event.id));
        const candidateIndex = new Map<string, number>();
        items.forEach((it, i) => {
          const k = keys[i]!;
          if (!candidateIndex.has(k) && !stored.has(k) && storable(it)) candidateIndex.set(k, i);
        });
        const fresh = [...candidateIndex.values()];
        const inserted = new Map<string, bigint>();
        if (fresh.length > 0) {
          // The NOTIFY is delivered at commit: it wakes ReadEvents long polls of every replica (listen
          // in index.ts); those of this process are woken by the group committer directly.
          const { rows: sq } = await tx.query(
            `SELECT setval('events_sequence_seq', nextval('events_sequence_seq') + $1::bigint - 1) AS last, pg_notify($2, ''), ${EPOCH_SQL} AS epoch`,
            [fresh.length, eventsChannel(db.schema)],
          );
          epoch = sq[0]!.epoch as string;
          const first = (sq[0]!.last as bigint) - BigInt(fresh.length) + 1n;
          const copyRows = fresh.map((i, j) => {
            const seq = first + BigInt(j);
            const c = items[i]!;
            inserted.set(keys[i]!, seq);
            const e = c.event;
            committed.push({ tenant: c.tenant, sequence: seq, customerId: e.customerId, type: e.type, timestampUs: e.timestampUs, properties: e.properties });
            return [seq, c.tenant, e.id, e.customerId, e.type, e.timestampUs, e.propertiesJson, e.traceparent, e.tracestate, e.contentHash, receivedUs];
          });
          await db.copyRows("events", EVENT_COPY_COLUMNS, copyRows, tx);
        }

        // 4. One outcome per item. Usage buckets follow from the cursor (aggregateStep).
        return items.map((it, i): ItemOutcome => {
          const k = keys[i]!;
          const seq = inserted.get(k);
          const candidate = candidateIndex.get(k);
          if (seq !== undefined && candidate !== undefined && i >= candidate) {
            if (candidate === i) return { status: "accepted", sequence: seq };
            return items[candidate]!.event.contentHash === it.event.contentHash ? { status: "duplicate", sequence: seq } : { status: "conflict", sequence: seq };
          }
          const prev = stored.get(k);
          if (prev) return prev.hash === it.event.contentHash ? { status: "duplicate", sequence: prev.sequence } : { status: "conflict", sequence: prev.sequence };
          // Not storable itself, and no occurrence before it was stored.
          if (it.late) return { status: "rejected", ...it.late };
          return { status: "rejected", field: "timestamp", reason: "period_closed", message: "timestamp: falls in a closed (invoiced) period of the customer" };
        });
      });
      recent.remember(committed, epoch);
      return outcomes;
    },

    async aggregateStep(max) {
      return db.transaction(async (tx) => {
        // One aggregator at a time (across replicas): the cursor row is the lock.
        const { rows: cur } = await tx.query(`SELECT through_sequence, ${EPOCH_SQL} AS epoch FROM usage_cursor WHERE id = 1 FOR UPDATE`);
        const from = cur[0]!.through_sequence as bigint;
        recent.forgetThrough(from);
        // Writers reserve sequences under the events lock and hold it until commit, so every
        // event with a sequence below a committed one is committed: reading in sequence order
        // never skips an event that commits later. The run of events this store committed right
        // after the cursor comes from memory (see `recent`); the rest of the step is read.
        const run = recent.runAfter(from, max, cur[0]!.epoch as string);
        const after = run.length > 0 ? run[run.length - 1]!.sequence : from;
        const rows =
          run.length < max
            ? (
                await tx.query(
                  `SELECT sequence, tenant, customer_id, type, timestamp_us, properties FROM events WHERE sequence > $1::bigint ORDER BY sequence LIMIT $2::int`,
                  [after.toString(), max - run.length],
                )
              ).rows
            : [];
        const count = run.length + rows.length;
        if (count === 0) return { through: from, events: 0 };
        const first = run.length > 0 ? run[0]!.sequence : (rows[0]!.sequence as bigint);
        const through = rows.length > 0 ? (rows[rows.length - 1]!.sequence as bigint) : after;
        // Meters are read after the events: a meter committed after an event was read was created
        // after that event committed, so its backfill (sequence <= backfill_through) covers it.
        const tenants = new Set(run.map((e) => e.tenant));
        for (const r of rows) tenants.add(r.tenant as string);
        const { rows: mr } = await tx.query(
          `SELECT tenant, meter_id, definition, backfill_through_sequence FROM meters WHERE tenant = ANY($1::text[]) AND aggregation_error IS NULL`,
          [[...tenants]],
        );
        const meters = mr.map((r) => ({ tenant: r.tenant as string, meterId: r.meter_id as string, def: r.definition as MeterDefinition, after: r.backfill_through_sequence as bigint }));
        let failed: FailedMeter[] = [];
        if (meters.length > 0) {
          const withMeters = new Set(meters.map((m) => m.tenant));
          const events: MeteredEvent[] = run.filter((e) => withMeters.has(e.tenant));
          for (const r of rows) {
            if (!withMeters.has(r.tenant as string)) continue;
            events.push({
              tenant: r.tenant as string,
              sequence: r.sequence as bigint,
              customerId: r.customer_id as string,
              type: r.type as string,
              timestampUs: r.timestamp_us as bigint,
              properties: decodeProperties(r.properties),
            });
          }
          // Events up to a meter's backfill_through_sequence are the backfill's to count. A meter
          // whose computation throws is set aside (recorded with the cursor, in this transaction)
          // rather than failing the step, which would stop the shared cursor for every tenant.
          const deltas = isolatedDeltas(meters, events);
          failed = deltas.failed;
          await writeUsage(tx, deltas.buckets, deltas.uniques);
          for (const f of failed) await recordFailure(tx, f, `at event sequence ${first}..${through}`);
        }
        await tx.query(`UPDATE usage_cursor SET through_sequence = $1::bigint WHERE id = 1`, [through.toString()]);
        return failed.length > 0 ? { through, events: count, failed } : { through, events: count };
      });
    },

    async highWaterSequence() {
      const { rows } = await db.query(`SELECT COALESCE(max(sequence), 0)::bigint AS s FROM events`);
      return rows[0]!.s as bigint;
    },

    async readEvents(afterSequence, max) {
      const { rows } = await db.query(`SELECT ${EVENT_COLUMNS} FROM events WHERE sequence > $1::bigint ORDER BY sequence LIMIT $2::int`, [afterSequence.toString(), max]);
      return rows.map(eventFromRow);
    },

    async readPartition(afterSequence, max, count, index) {
      return db.transaction(async (tx) => {
        // Every sequence up to the committed high-water mark is committed (writers reserve
        // sequences under the events lock until they commit), so after reading the mark, the
        // range (after, mark] is final and may be skipped over by this partition.
        const { rows: hw } = await tx.query(`SELECT COALESCE(max(sequence), 0)::bigint AS s FROM events`);
        const limit = afterSequence + BigInt(READ_PARTITION_SCAN_MAX);
        const upTo = (hw[0]!.s as bigint) < limit ? (hw[0]!.s as bigint) : limit;
        if (upTo <= afterSequence) return { events: [], through: afterSequence };
        const { rows } = await tx.query(
          `SELECT ${EVENT_COLUMNS} FROM events
           WHERE sequence > $1::bigint AND sequence <= $2::bigint AND (hashtext(tenant || '/' || customer_id) & 2147483647) % $3::int = $4::int
           ORDER BY sequence LIMIT $5::int`,
          [afterSequence.toString(), upTo.toString(), count, index, max],
        );
        const events = rows.map(eventFromRow);
        return { events, through: events.length === max ? events[events.length - 1]!.sequence : upTo };
      });
    },

    async listTenantEvents(tenant, max) {
      const { rows } = await db.query(`SELECT ${EVENT_COLUMNS} FROM events WHERE tenant = $1 ORDER BY sequence LIMIT $2::int`, [tenant, max]);
      return rows.map(eventFromRow);
    },

    async createMeter(tenant, def, nowUs, same) {
      return db.transaction(async (tx): Promise<CreateMeterOutcome> => {
        await tx.query(LOCK_EVENTS);
        const { rows: found } = await tx.query(`SELECT * FROM meters WHERE tenant = $1 AND meter_id = $2`, [tenant, def.id]);
        if (found[0]) {
          const m = meterFromRow(found[0]);
          return same(m.definition, def) ? { status: "exists", meter: m } : { status: "conflict", meter: m };
        }
        const { rows: cnt } = await tx.query(`SELECT count(*)::bigint AS n FROM meters WHERE tenant = $1`, [tenant]);
        if ((cnt[0]!.n as bigint) >= BigInt(METERS_PER_TENANT_MAX)) return { status: "too_many" };
        // Every writer of events is blocked by the lock: all events up to max(sequence) are
        // committed, and every later event gets a greater sequence and sees this meter.
        const { rows: hw } = await tx.query(`SELECT COALESCE(max(sequence), 0)::bigint AS s FROM events`);
        const through = hw[0]!.s as bigint;
        const { rows } = await tx.query(
          `INSERT INTO meters (tenant, meter_id, event_type, definition, created_us, backfill_through_sequence, backfill_done_sequence)
           VALUES ($1, $2, $3, $4::jsonb, $5::bigint, $6::bigint, 0) RETURNING *`,
          [tenant, def.id, def.eventType, JSON.stringify(def), nowUs.toString(), through.toString()],
        );
        return { status: "created", meter: meterFromRow(rows[0]!) };
      });
    },

    async deleteMeter(tenant, meterId) {
      return db.transaction(async (tx) => {
        // The aggregator's lock (it reads meters and writes their buckets under the cursor row),
        // then the writers' lock (backfill steps hold it with the meter row): neither can write
        // this meter's usage after the delete, and a meter created again under the id starts from
        // an empty slate (its backfill counts every stored event).
        await tx.query(`SELECT through_sequence FROM usage_cursor WHERE id = 1 FOR UPDATE`);
        await tx.query(LOCK_EVENTS);
        const { rows } = await tx.query(`DELETE FROM meters WHERE tenant = $1 AND meter_id = $2 RETURNING meter_id`, [tenant, meterId]);
        if (rows.length === 0) return undefined;
        const b = await tx.query(`DELETE FROM usage_buckets WHERE tenant = $1 AND meter_id = $2`, [tenant, meterId]);
        await tx.query(`DELETE FROM usage_unique_values WHERE tenant = $1 AND meter_id = $2`, [tenant, meterId]);
        return BigInt(b.rowCount);
      });
    },

    async getMeter(tenant, meterId) {
      const { rows } = await db.query(`SELECT * FROM meters WHERE tenant = $1 AND meter_id = $2`, [tenant, meterId]);
      return rows[0] ? meterFromRow(rows[0]) : undefined;
    },

    async listMeters(tenant, afterId, limit) {
      const { rows } = await db.query(`SELECT * FROM meters WHERE tenant = $1 AND meter_id > $2 ORDER BY meter_id LIMIT $3::int`, [tenant, afterId, limit]);
      return rows.map(meterFromRow);
    },

    async pendingBackfills(limit) {
      const { rows } = await db.query(
        `SELECT tenant, meter_id FROM meters WHERE backfill_done_sequence < backfill_through_sequence AND aggregation_error IS NULL ORDER BY created_us LIMIT $1::int`,
        [limit],
      );
      return rows.map((r) => ({ tenant: r.tenant as string, meterId: r.meter_id as string }));
    },

    async backfillStep(tenant, meterId, chunk = BACKFILL_CHUNK_EVENTS) {
      return db.transaction(async (tx) => {
        await tx.query(LOCK_EVENTS);
        const { rows: mr } = await tx.query(`SELECT * FROM meters WHERE tenant = $1 AND meter_id = $2 FOR UPDATE`, [tenant, meterId]);
        if (!mr[0]) return true;
        const m = meterFromRow(mr[0]);
        if (m.backfillDoneSequence >= m.backfillThroughSequence || m.aggregationError !== null) return true;
        const { rows } = await tx.query(
          `SELECT ${EVENT_COLUMNS} FROM events
           WHERE sequence > $1::bigint AND sequence <= $2::bigint AND tenant = $3 AND type = $4
           ORDER BY sequence LIMIT $5::int`,
          [m.backfillDoneSequence.toString(), m.backfillThroughSequence.toString(), tenant, m.definition.eventType, chunk],
        );
        const events = rows.map(eventFromRow);
        const deltas = isolatedDeltas([{ tenant, meterId, def: m.definition, after: -1n }], events);
        if (deltas.failed.length > 0) {
          // Set aside (as the aggregator does): the backfill stops for this meter only.
          await recordFailure(tx, deltas.failed[0]!, "in its backfill");
          return true;
        }
        await writeUsage(tx, deltas.buckets, deltas.uniques);
        const done = events.length < chunk ? m.backfillThroughSequence : events[events.length - 1]!.sequence;
        await tx.query(
          `UPDATE meters SET backfill_done_sequence = $3::bigint, backfill_events_done = backfill_events_done + $4::bigint
           WHERE tenant = $1 AND meter_id = $2`,
          [tenant, meterId, done.toString(), events.length.toString()],
        );
        return done >= m.backfillThroughSequence;
      });
    },

    async readBuckets(tenant, meterId, level, startUs, endUs, customerIds, limit) {
      const { rows } = await db.query(
        `SELECT customer_id, bucket_start_us, group_key, event_count, value_sum, value_min, value_max, latest_value, latest_timestamp_us, latest_sequence
         FROM usage_buckets
         WHERE tenant = $1 AND meter_id = $2 AND level = $3 AND bucket_start_us >= $4::bigint AND bucket_start_us < $5::bigint
           AND (cardinality($6::text[]) = 0 OR customer_id = ANY($6::text[]))
         LIMIT $7::int`,
        [tenant, meterId, level, startUs.toString(), endUs.toString(), customerIds, limit],
      );
      return rows.map((r): Bucket => ({
        tenant,
        meterId,
        level,
        customerId: r.customer_id as string,
        startUs: r.bucket_start_us as bigint,
        groupKey: r.group_key as string,
        eventCount: r.event_count as bigint,
        sum: parseStoredDecimal(r.value_sum as string),
        min: r.value_min === null ? null : parseStoredDecimal(r.value_min as string),
        max: r.value_max === null ? null : parseStoredDecimal(r.value_max as string),
        latest:
          r.latest_timestamp_us === null
            ? null
            : { timestampUs: r.latest_timestamp_us as bigint, sequence: r.latest_sequence as bigint, value: parseStoredDecimal(r.latest_value as string) },
      }));
    },

    async readUniqueValues(tenant, meterId, level, startUs, endUs, customerIds, limit) {
      const { rows } = await db.query(
        `SELECT customer_id, bucket_start_us, group_key, value FROM usage_unique_values
         WHERE tenant = $1 AND meter_id = $2 AND level = $3 AND bucket_start_us >= $4::bigint AND bucket_start_us < $5::bigint
           AND (cardinality($6::text[]) = 0 OR customer_id = ANY($6::text[]))
         LIMIT $7::int`,
        [tenant, meterId, level, startUs.toString(), endUs.toString(), customerIds, limit],
      );
      return rows.map((r): UniqueValue => ({
        tenant,
        meterId,
        level,
        customerId: r.customer_id as string,
        startUs: r.bucket_start_us as bigint,
        groupKey: r.group_key as string,
        value: r.value as string,
      }));
    },

    async closePeriod(tenant, customerId, closeUs) {
      return db.transaction(async (tx) => {
        // Serialized with ingestion: no event of this customer is half-way through a write.
        await tx.query(LOCK_EVENTS);
        const { rows } = await tx.query(
          `INSERT INTO closed_periods (tenant, customer_id, closed_through_us) VALUES ($1, $2, $3::bigint)
           ON CONFLICT (tenant, customer_id) DO UPDATE SET closed_through_us = GREATEST(closed_periods.closed_through_us, excluded.closed_through_us)
           RETURNING closed_through_us`,
          [tenant, customerId, closeUs.toString()],
        );
        return rows[0]!.closed_through_us as bigint;
      });
    },

    async getGenAiMapping(tenant) {
      const { rows } = await db.query(`SELECT mapping FROM genai_mappings WHERE tenant = $1`, [tenant]);
      return rows[0]?.mapping;
    },

    async setGenAiMapping(tenant, mapping) {
      await db.query(
        `INSERT INTO genai_mappings (tenant, mapping) VALUES ($1, $2::jsonb) ON CONFLICT (tenant) DO UPDATE SET mapping = excluded.mapping`,
        [tenant, JSON.stringify(mapping)],
      );
    },
  };
  return store;
}
