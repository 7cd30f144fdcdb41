import { CarryAccumulator } from "@nanobill/money";
import type { Db, Queryable, Row } from "@nanobill/db";
import type { AlertRow } from "../domain/margin.js";
import { CARRY_ROUNDING, MemoryRatingState, type PeriodTotal, type TaskState } from "../domain/state.js";
import type { LineStatus, RatedEventResult, RatedLine } from "../domain/types.js";
import { LeaseLostError } from "./lease-store.js";
import { big, insertMany, insertUnnest, lockCustomers, msOfNN, ts } from "./sql.js";

const SEP = "\u0000";
const HOUR_MS = 3_600_000;

/** WalletItem: one amount to hand to credit-wallet Consume (id "<event_id>:<charge_id>"). */
export interface WalletItem {
  tenant: string;
  itemId: string;
  customerId: string;
  unit: string;
  amountNanos: bigint;
  eventId: string;
  chargeId: string;
  model: string;
  occurredMs: number;
  traceparent: string;
  tracestate: string;
}

/** RatedBatch: everything one consumer batch writes in one transaction. */
export interface RatedBatch {
  rated: Array<{ tenant: string; sequence: bigint; result: RatedEventResult }>;
  wallet: WalletItem[];
  /** fence: the writer's lease (owner, epoch); absent = an unleased writer (pollOnce, tools). */
  cursor: { name: string; afterSequence: bigint; fence?: { owner: string; epoch: bigint } };
}

export interface BucketRow {
  chargeId: string;
  dimensions: Record<string, string>;
  hourStartMs: number;
  quantity: bigint;
  priceNanos: bigint;
  unit: string;
  costNanos: bigint;
  costUnit: string;
  eventCount: bigint;
}

export interface PeriodTotalRow {
  chargeId: string;
  unit: string;
  quantity: bigint;
  bookedNanos: bigint;
  costNanos: bigint;
}

/** ChargedEventRow: one rated event under one charge (sums of its lines for the charge). */
export interface ChargedEventRow {
  eventId: string;
  timestampMs: number;
  eventType: string;
  subscriptionId: string;
  quantity: bigint;
  priceNanos: bigint;
  unit: string;
  costNanos: bigint;
  costUnit: string;
  status: LineStatus;
}

export interface MarginSumRow {
  customerId: string;
  model: string;
  chargeId: string;
  windowStartMs: number;
  unit: string;
  costUnit: string;
  priceNanos: bigint;
  costNanos: bigint;
}

/** The items of an outbox batch row: a JSON array of tuples (amounts as decimal strings). */
export function encodeWalletItems(items: WalletItem[]): string {
  return JSON.stringify(items.map((w) => [w.tenant, w.itemId, w.customerId, w.unit, w.amountNanos.toString(), w.eventId, w.chargeId, w.model, w.occurredMs, w.traceparent, w.tracestate]));
}

export function decodeWalletItems(text: string): WalletItem[] {
  return (JSON.parse(text) as Array<[string, string, string, string, string, string, string, string, number, string, string]>).map(
    ([tenant, itemId, customerId, unit, amount, eventId, chargeId, model, occurredMs, traceparent, tracestate]) => ({ tenant, itemId, customerId, unit, amountNanos: BigInt(amount), eventId, chargeId, model, occurredMs, traceparent, tracestate }),
  );
}

function lineJson(l: RatedLine): unknown {
  return {
    dimensions: l.dimensions,
    quantity: l.quantity.toString(),
    priceNanos: l.priceNanos.toString(),
    unit: l.unit,
    costNanos: l.costNanos.toString(),
    costUnit: l.costUnit,
    status: l.status,
    reason: l.reason,
    attributedCostNanos: l.attributedCostNanos.toString(),
    priceValueNanos: l.priceValueNanos.toString(),
  };
}

function lineOf(chargeId: string, j: Record<string, unknown>): RatedLine {
  const dims = j.dimensions as Record<string, string>;
  return {
    chargeId,
    dimensions: dims,
    dimsKey: "",
    quantity: BigInt(j.quantity as string),
    priceNanos: BigInt(j.priceNanos as string),
    unit: j.unit as string,
    costNanos: BigInt(j.costNanos as string),
    costUnit: j.costUnit as string,
    status: j.status as LineStatus,
    reason: j.reason as string,
    attributedCostNanos: BigInt(j.attributedCostNanos as string),
    priceValueNanos: BigInt((j.priceValueNanos as string | undefined) ?? "0"),
  };
}

/**
 * RatedStore: rated events, hour buckets, rating state (carries, period totals, outcome tasks),
 * the consumer cursor, the wallet outbox and alerts.
 */
export class RatedStore {
  constructor(readonly db: Db) {}

  async cursor(name: string): Promise<bigint> {
    // A cursor not stored yet (a new partitioning of the feed) starts at the lowest cursor of any
    // earlier partitioning: every event up to it was rated; events above it that were rated are
    // skipped again (alreadyRated), so nothing is missed and nothing is rated twice.
    // (The cursors of the current partitioning itself are not "earlier": a sibling partition that
    // already advanced says nothing about this one.)
    const m = /^metering:p\d+\/(\d+)$/.exec(name);
    const siblings = m ? `metering:p%/${m[1]}` : name;
    const r = await this.db.query(
      `SELECT COALESCE((SELECT after_sequence FROM consumer_cursor WHERE name = $1),
                       (SELECT min(after_sequence) FROM consumer_cursor WHERE (name = 'metering' OR name LIKE 'metering:p%') AND name NOT LIKE $2), 0)::bigint AS s`,
      [name, siblings],
    );
    return big(r.rows[0]!.s);
  }

  /**
   * lockCustomers: transaction-scoped advisory locks on the batch's customers, in hash order (no
   * deadlock). Carries and period totals are read and written back whole, so two consumers rating
   * the same customer at once (two partitionings during a change, a second replica) would lose an
   * update; with the lock the second waits, then sees the first's events as already rated. The
   * same lock as the catalog writes that check rated events (sql.ts, CatalogStore).
   */
  lockCustomers(q: Queryable, customers: Array<{ tenant: string; customerId: string }>): Promise<void> {
    return lockCustomers(q, customers);
  }

  /** alreadyRated: the (tenant, event id) pairs of `events` that have rated rows. */
  async alreadyRated(q: Queryable, events: Array<{ tenant: string; eventId: string }>): Promise<Set<string>> {
    const out = new Set<string>();
    if (events.length === 0) return out;
    const r = await q.query(
      `SELECT DISTINCT tenant, event_id FROM rated_events WHERE (tenant, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [events.map((e) => e.tenant), events.map((e) => e.eventId)],
    );
    for (const row of r.rows) out.add(`${row.tenant as string}${SEP}${row.event_id as string}`);
    return out;
  }

  /**
   * loadState: loads into `st` the carries and open period totals of the given customers and the
   * tasks of the given task ids (keys not loaded start at zero).
   */
  async loadState(q: Queryable, st: MemoryRatingState, customers: Array<{ tenant: string; customerId: string }>, tasks: Array<{ tenant: string; customerId: string; taskId: string }>, minEventMs: number): Promise<void> {
    if (customers.length > 0) {
      const tn = customers.map((c) => c.tenant);
      const cu = customers.map((c) => c.customerId);
      const carries = await q.query(
        `SELECT * FROM carries WHERE (tenant, customer_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
        [tn, cu],
      );
      for (const r of carries.rows) {
        const key = [r.tenant, r.customer_id, r.charge_id, r.dims_key, r.kind].join(SEP);
        st.setCarry(key, new CarryAccumulator(CARRY_ROUNDING, { num: BigInt(r.residue_num as string), den: BigInt(r.residue_den as string) }));
      }
      const periods = await q.query(
        `SELECT * FROM period_totals WHERE (tenant, customer_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND period_end > $3`,
        [tn, cu, ts(minEventMs)],
      );
      for (const r of periods.rows) {
        const key = [r.tenant, r.customer_id, r.charge_id, msOfNN(r.period_start)].join(SEP);
        st.periods.set(key, { quantity: BigInt(r.quantity as string), bookedNanos: big(r.booked_nanos), costNanos: big(r.cost_nanos), unit: r.unit as string, periodEndMs: msOfNN(r.period_end) });
      }
    }
    if (tasks.length > 0) {
      const r = await q.query(
        `SELECT * FROM outcome_tasks WHERE (tenant, customer_id, task_id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))`,
        [tasks.map((t) => t.tenant), tasks.map((t) => t.customerId), tasks.map((t) => t.taskId)],
      );
      for (const row of r.rows) {
        const o = row.outcome as (Omit<NonNullable<TaskState["outcome"]>, "priceNanos"> & { priceNanos: string }) | null;
        st.tasks.set([row.tenant, row.customer_id, row.task_id].join(SEP), {
          attemptCostNanos: big(row.attempt_cost_nanos),
          costUnit: row.cost_unit as string,
          outcome: o === null ? null : { ...o, priceNanos: BigInt(o.priceNanos) },
        });
      }
    }
  }

  /**
   * writeBatch: rated rows, buckets, dirty state, the batch's wallet items (one outbox row) and
   * the cursor, in `tx`. Returns the outbox batch id (null when the batch has no wallet item).
   */
  async writeBatch(tx: Queryable, b: RatedBatch, st: MemoryRatingState, nowMs: number): Promise<bigint | null> {
    // The rating state goes first and is not awaited until the rated rows and buckets are built:
    // PostgreSQL runs these upserts while this process builds the rows (same transaction).
    const writeState = async (): Promise<void> => {
      const carryRows: unknown[][] = [];
      for (const k of st.dirtyCarries) {
        const [tenant, customerId, chargeId, dimsKey, kind] = k.split(SEP);
        const c = st.carries.get(k)!.carried;
        carryRows.push([tenant, customerId, chargeId, dimsKey, kind, c.num.toString(), c.den.toString()]);
      }
      if (carryRows.length > 0) {
        await insertUnnest(tx, "carries", ["tenant", "customer_id", "charge_id", "dims_key", "kind", "residue_num", "residue_den"], ["text", "text", "text", "text", "text", "numeric", "numeric"], carryRows,
          `ON CONFLICT (tenant, customer_id, charge_id, dims_key, kind) DO UPDATE SET residue_num = EXCLUDED.residue_num, residue_den = EXCLUDED.residue_den`);
      }
      const periodRows: unknown[][] = [];
      for (const k of st.dirtyPeriods) {
        const [tenant, customerId, chargeId, start] = k.split(SEP);
        const p: PeriodTotal = st.periods.get(k)!;
        periodRows.push([tenant, customerId, chargeId, new Date(Number(start)), new Date(p.periodEndMs), p.unit, p.quantity.toString(), p.bookedNanos, p.costNanos]);
      }
      if (periodRows.length > 0) {
        await insertUnnest(tx, "period_totals", ["tenant", "customer_id", "charge_id", "period_start", "period_end", "unit", "quantity", "booked_nanos", "cost_nanos"], ["text", "text", "text", "timestamptz", "timestamptz", "text", "numeric", "bigint", "bigint"], periodRows,
          `ON CONFLICT (tenant, customer_id, charge_id, period_start) DO UPDATE SET quantity = EXCLUDED.quantity, booked_nanos = EXCLUDED.booked_nanos, cost_nanos = EXCLUDED.cost_nanos`);
      }
      const taskRows: unknown[][] = [];
      for (const k of st.dirtyTasks) {
        const [tenant, customerId, taskId] = k.split(SEP);
        const t = st.tasks.get(k)!;
        taskRows.push([tenant, customerId, taskId, t.attemptCostNanos, t.costUnit, t.outcome === null ? null : JSON.stringify({ ...t.outcome, priceNanos: t.outcome.priceNanos.toString() })]);
      }
      if (taskRows.length > 0) {
        await insertMany(tx, "outcome_tasks", ["tenant", "customer_id", "task_id", "attempt_cost_nanos", "cost_unit", "outcome"], taskRows,
          `ON CONFLICT (tenant, customer_id, task_id) DO UPDATE SET attempt_cost_nanos = EXCLUDED.attempt_cost_nanos, cost_unit = EXCLUDED.cost_unit, outcome = EXCLUDED.outcome`);
      }
    };
    const stateWritten = writeState();
    stateWritten.catch(() => {}); // awaited below; this only keeps a failure from being reported as unhandled meanwhile
    const rows: unknown[][] = [];
    const buckets = new Map<string, unknown[]>();
    const rateTime = new Date(nowMs);
    // Building the rows must not throw past the state statements still in flight: the wrapper
    // would queue ROLLBACK behind them and a later one would run after it, committing on its own.
    try {
      for (const { tenant, sequence, result: r } of b.rated) {
        const byCharge = new Map<string, RatedLine[]>();
        for (const l of r.lines) {
          const list = byCharge.get(l.chargeId);
          if (list === undefined) byCharge.set(l.chargeId, [l]);
          else list.push(l);
          const hour = Math.floor(r.timestampMs / HOUR_MS) * HOUR_MS;
          const bk = [tenant, r.customerId, hour, l.chargeId, l.dimsKey, r.model].join(SEP);
          const cur = buckets.get(bk);
          if (cur === undefined) {
            buckets.set(bk, [tenant, r.customerId, l.chargeId, l.dimsKey, r.model, new Date(hour), JSON.stringify(l.dimensions), l.unit, l.costUnit, l.quantity, l.priceNanos, l.costNanos, 1n]);
          } else {
            cur[9] = (cur[9] as bigint) + l.quantity;
            cur[10] = (cur[10] as bigint) + l.priceNanos;
            cur[11] = (cur[11] as bigint) + l.costNanos;
            cur[12] = (cur[12] as bigint) + 1n;
            if (cur[8] === "" && l.costUnit !== "") cur[8] = l.costUnit;
          }
        }
        let eventRow = 0;
        for (const [chargeId, ls] of byCharge) {
          let price = 0n;
          let cost = 0n;
          let costUnit = "";
          for (const l of ls) {
            price += l.priceNanos;
            cost += l.costNanos;
            if (l.costUnit !== "") costUnit = l.costUnit;
          }
          rows.push([tenant, r.eventId, chargeId, r.customerId, r.eventType, new Date(r.timestampMs), r.subscriptionId, r.model, r.taskId, ls[0]!.unit, price, costUnit, cost, JSON.stringify(ls.map(lineJson)), sequence, rateTime, eventRow++]);
        }
      }
    } catch (e) {
      await stateWritten.catch(() => {});
      throw e;
    }
    // The state first (a failure there is reported as itself, not as the aborted transaction the
    // next statement would meet), then the rated rows.
    await stateWritten;
    if (rows.length > 0) {
      await this.db.copyRows(
        "rated_events",
        ["tenant", "event_id", "charge_id", "customer_id", "event_type", "event_time", "subscription_id", "model", "task_id", "unit", "price_nanos", "cost_unit", "cost_nanos", "lines", "sequence", "rate_time", "event_row"],
        rows,
        tx,
      );
    }
    if (buckets.size > 0) {
      await insertUnnest(
        tx,
        "usage_buckets",
        ["tenant", "customer_id", "charge_id", "dims_key", "model", "hour_start", "dimensions", "unit", "cost_unit", "quantity", "price_nanos", "cost_nanos", "event_count"],
        ["text", "text", "text", "text", "text", "timestamptz", "jsonb", "text", "text", "bigint", "bigint", "bigint", "bigint"],
        [...buckets.values()],
        `ON CONFLICT (tenant, customer_id, hour_start, charge_id, dims_key, model) DO UPDATE SET
           quantity = usage_buckets.quantity + EXCLUDED.quantity,
           price_nanos = usage_buckets.price_nanos + EXCLUDED.price_nanos,
           cost_nanos = usage_buckets.cost_nanos + EXCLUDED.cost_nanos,
           event_count = usage_buckets.event_count + EXCLUDED.event_count,
           cost_unit = CASE WHEN usage_buckets.cost_unit = '' THEN EXCLUDED.cost_unit ELSE usage_buckets.cost_unit END`,
      );
    }
    let outboxBatchId: bigint | null = null;
    if (b.wallet.length > 0) {
      // The batch's items as one row (new events only: already-rated ones were skipped).
      const r = await tx.query(`INSERT INTO wallet_outbox_batches (item_count, items, create_time) VALUES ($1, $2, $3) RETURNING batch_id`, [b.wallet.length, encodeWalletItems(b.wallet), new Date(nowMs)]);
      outboxBatchId = big(r.rows[0]!.batch_id);
    }
    // The cursor never moves back (GREATEST), and a leased writer whose epoch is below the one
    // that last wrote the cursor is refused: the second fence, in the same transaction as the rows.
    const fence = b.cursor.fence;
    const c = await tx.query(
      `INSERT INTO consumer_cursor (name, after_sequence, update_time, fence_epoch) VALUES ($1,$2,$3,COALESCE($4::bigint, 0))
       ON CONFLICT (name) DO UPDATE SET after_sequence = GREATEST(consumer_cursor.after_sequence, EXCLUDED.after_sequence), update_time = EXCLUDED.update_time,
         fence_epoch = GREATEST(consumer_cursor.fence_epoch, EXCLUDED.fence_epoch)
       WHERE $4::bigint IS NULL OR consumer_cursor.fence_epoch <= $4::bigint`,
      [b.cursor.name, b.cursor.afterSequence, new Date(nowMs), fence === undefined ? null : fence.epoch],
    );
    if (c.rowCount !== 1 && fence !== undefined) throw new LeaseLostError(b.cursor.name, fence.owner, fence.epoch);
    return outboxBatchId;
  }

  /** outboxBatches: the oldest batches of wallet items not yet acknowledged by the wallet. */
  async outboxBatches(limit: number): Promise<Array<{ batchId: bigint; items: WalletItem[] }>> {
    const r = await this.db.query(`SELECT batch_id, items FROM wallet_outbox_batches ORDER BY batch_id LIMIT $1`, [limit]);
    return r.rows.map((row) => ({ batchId: big(row.batch_id), items: decodeWalletItems(row.items as string) }));
  }

  async outboxBatchDone(batchId: bigint): Promise<void> {
    await this.db.query(`DELETE FROM wallet_outbox_batches WHERE batch_id = $1`, [batchId]);
  }

  async outboxBatchFailed(batchId: bigint, error: string): Promise<void> {
    await this.db.query(`UPDATE wallet_outbox_batches SET attempts = attempts + 1, last_error = $2 WHERE batch_id = $1`, [batchId, error.slice(0, 1000)]);
  }

  /** outbox: the oldest pending wallet items. */
  async outbox(limit: number): Promise<WalletItem[]> {
    const r = await this.db.query(`SELECT * FROM wallet_outbox ORDER BY occurred_at, tenant, item_id LIMIT $1`, [limit]);
    return r.rows.map((row) => ({
      tenant: row.tenant as string,
      itemId: row.item_id as string,
      customerId: row.customer_id as string,
      unit: row.unit as string,
      amountNanos: big(row.amount_nanos),
      eventId: row.event_id as string,
      chargeId: row.charge_id as string,
      model: row.model as string,
      occurredMs: msOfNN(row.occurred_at),
      traceparent: row.traceparent as string,
      tracestate: row.tracestate as string,
    }));
  }

  async outboxDone(items: Array<{ tenant: string; itemId: string }>): Promise<void> {
    if (items.length === 0) return;
    await this.db.query(`DELETE FROM wallet_outbox WHERE (tenant, item_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, [items.map((i) => i.tenant), items.map((i) => i.itemId)]);
  }

  async outboxFailed(items: Array<{ tenant: string; itemId: string }>, error: string): Promise<void> {
    if (items.length === 0) return;
    await this.db.query(`UPDATE wallet_outbox SET attempts = attempts + 1, last_error = $3 WHERE (tenant, item_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, [items.map((i) => i.tenant), items.map((i) => i.itemId), error.slice(0, 1000)]);
  }

  async outboxSize(): Promise<number> {
    const r = await this.db.query<{ n: bigint }>(`SELECT ((SELECT count(*) FROM wallet_outbox) + COALESCE((SELECT sum(item_count) FROM wallet_outbox_batches), 0))::bigint AS n`);
    return Number(r.rows[0]!.n);
  }

  /** ratedEvent: the rows of one event (one per charge). */
  async ratedEvent(tenant: string, eventId: string): Promise<(RatedEventResult & { rateTimeMs: number }) | null> {
    const r = await this.db.query(`SELECT * FROM rated_events WHERE tenant=$1 AND event_id=$2 ORDER BY charge_id`, [tenant, eventId]);
    if (r.rows.length === 0) return null;
    const f = r.rows[0]!;
    const lines: RatedLine[] = [];
    for (const row of r.rows) for (const j of row.lines as Array<Record<string, unknown>>) lines.push(lineOf(row.charge_id as string, j));
    return {
      eventId,
      customerId: f.customer_id as string,
      eventType: f.event_type as string,
      timestampMs: msOfNN(f.event_time),
      subscriptionId: f.subscription_id as string,
      taskId: f.task_id as string,
      model: f.model as string,
      lines,
      rateTimeMs: msOfNN(f.rate_time),
    };
  }

  /** buckets: a customer's hour buckets in [from, to), merged over models. */
  async buckets(tenant: string, customerId: string, fromMs: number, toMs: number, chargeId: string, limit: number): Promise<BucketRow[]> {
    const r = await this.db.query(
      `SELECT charge_id, dims_key, hour_start, min(dimensions::text) AS dimensions, unit, max(cost_unit) AS cost_unit,
              sum(quantity)::bigint AS quantity, sum(price_nanos)::bigint AS price_nanos, sum(cost_nanos)::bigint AS cost_nanos, sum(event_count)::bigint AS event_count
         FROM usage_buckets
        WHERE tenant=$1 AND customer_id=$2 AND hour_start >= $3 AND hour_start < $4 AND ($5 = '' OR charge_id = $5)
        GROUP BY hour_start, charge_id, dims_key, unit
        ORDER BY hour_start, charge_id, dims_key
        LIMIT $6`,
      [tenant, customerId, ts(fromMs), ts(toMs), chargeId, limit],
    );
    return r.rows.map((row) => ({
      chargeId: row.charge_id as string,
      dimensions: JSON.parse(row.dimensions as string) as Record<string, string>,
      hourStartMs: msOfNN(row.hour_start),
      quantity: big(row.quantity),
      priceNanos: big(row.price_nanos),
      unit: row.unit as string,
      costNanos: big(row.cost_nanos),
      costUnit: row.cost_unit as string,
      eventCount: big(row.event_count),
    }));
  }

  /** periodTotals: a customer's per-charge totals of the period starting at periodStartMs. */
  async periodTotals(tenant: string, customerId: string, periodStartMs: number): Promise<PeriodTotalRow[]> {
    const r = await this.db.query(`SELECT * FROM period_totals WHERE tenant=$1 AND customer_id=$2 AND period_start=$3 ORDER BY charge_id`, [tenant, customerId, ts(periodStartMs)]);
    return r.rows.map((row) => ({ chargeId: row.charge_id as string, unit: row.unit as string, quantity: BigInt(row.quantity as string), bookedNanos: big(row.booked_nanos), costNanos: big(row.cost_nanos) }));
  }

  /**
   * chargedEvents: a customer's rated events of one charge with event time in [from, to), in
   * (event time, event id) order after `after` (exclusive), at most `limit`.
   */
  async chargedEvents(tenant: string, customerId: string, chargeId: string, fromMs: number, toMs: number, after: { ms: number; eventId: string } | null, limit: number): Promise<ChargedEventRow[]> {
    const r = await this.db.query(
      `SELECT event_id, event_time, event_type, subscription_id, unit, price_nanos, cost_unit, cost_nanos, lines
         FROM rated_events
        WHERE tenant=$1 AND customer_id=$2 AND charge_id=$3 AND event_time >= $4 AND event_time < $5
          AND ($6::timestamptz IS NULL OR (event_time, event_id) > ($6::timestamptz, $7::text))
        ORDER BY event_time, event_id
        LIMIT $8`,
      [tenant, customerId, chargeId, ts(fromMs), ts(toMs), after === null ? null : ts(after.ms), after?.eventId ?? "", limit],
    );
    return r.rows.map((row) => {
      const lines = row.lines as Array<Record<string, unknown>>;
      let quantity = 0n;
      for (const j of lines) quantity += BigInt(j.quantity as string);
      return {
        eventId: row.event_id as string,
        timestampMs: msOfNN(row.event_time),
        eventType: row.event_type as string,
        subscriptionId: row.subscription_id as string,
        quantity,
        priceNanos: big(row.price_nanos),
        unit: row.unit as string,
        costNanos: big(row.cost_nanos),
        costUnit: row.cost_unit as string,
        status: ((lines[0]?.status as LineStatus | undefined) ?? "final"),
      };
    });
  }

  /**
   * quantitiesBefore: for each (charge, time) pair, the quantity of the customer's rated lines of
   * that charge with event time in [periodStart, at) — the running period quantity a charge's
   * pricing reached by then (RatePeriod across a plan migration). In pair order.
   */
  async quantitiesBefore(tenant: string, customerId: string, periodStartMs: number, pairs: Array<{ chargeId: string; atMs: number }>): Promise<bigint[]> {
    if (pairs.length === 0) return [];
    const r = await this.db.query(
      `SELECT b.i, COALESCE(sum((l.value->>'quantity')::numeric), 0)::text AS q
         FROM unnest($3::text[], $4::timestamptz[]) WITH ORDINALITY AS b(charge_id, at, i)
         LEFT JOIN rated_events r ON r.tenant = $1 AND r.customer_id = $2 AND r.charge_id = b.charge_id AND r.event_time >= $5 AND r.event_time < b.at
         LEFT JOIN LATERAL jsonb_array_elements(r.lines) AS l(value) ON true
        GROUP BY b.i ORDER BY b.i`,
      [tenant, customerId, pairs.map((p) => p.chargeId), pairs.map((p) => new Date(p.atMs).toISOString()), ts(periodStartMs)],
    );
    return r.rows.map((row) => BigInt(row.q as string));
  }

  /**
   * ratedSums: per (charge, unit), the prices of a customer's rated events with event time in
   * [from, to) (after the real-time spending cap), for the given charges.
   */
  async ratedSums(tenant: string, customerId: string, fromMs: number, toMs: number, chargeIds: string[]): Promise<Array<{ chargeId: string; unit: string; priceNanos: bigint }>> {
    if (chargeIds.length === 0) return [];
    const r = await this.db.query(
      `SELECT charge_id, unit, sum(price_nanos)::bigint AS price_nanos FROM rated_events
        WHERE tenant=$1 AND customer_id=$2 AND event_time >= $3 AND event_time < $4 AND charge_id = ANY($5::text[])
        GROUP BY charge_id, unit`,
      [tenant, customerId, ts(fromMs), ts(toMs), chargeIds],
    );
    return r.rows.map((row) => ({ chargeId: row.charge_id as string, unit: row.unit as string, priceNanos: big(row.price_nanos) }));
  }

  /** marginSums: bucket sums in [from, to) grouped by the requested keys (others collapsed). */
  async marginSums(tenant: string, fromMs: number, toMs: number, customerId: string, by: { customer: boolean; model: boolean; charge: boolean; windowSeconds: number }, limit: number): Promise<MarginSumRow[]> {
    const w = by.windowSeconds;
    const cols = [
      by.customer ? "customer_id" : "''::text",
      by.model ? "model" : "''::text",
      by.charge ? "charge_id" : "''::text",
      w > 0 ? `to_timestamp(floor(extract(epoch from hour_start) / ${w}) * ${w})` : "$2::timestamptz",
    ];
    const r = await this.db.query(
      `SELECT ${cols[0]} AS customer_id, ${cols[1]} AS model, ${cols[2]} AS charge_id, ${cols[3]} AS window_start, unit, cost_unit,
              sum(price_nanos)::bigint AS price_nanos, sum(cost_nanos)::bigint AS cost_nanos
         FROM usage_buckets
        WHERE tenant=$1 AND hour_start >= $2 AND hour_start < $3 AND ($4 = '' OR customer_id = $4)
        GROUP BY 1, 2, 3, 4, unit, cost_unit
        ORDER BY 1, 2, 3, 4, unit, cost_unit
        LIMIT $5`,
      [tenant, ts(fromMs), ts(toMs), customerId, limit],
    );
    return r.rows.map((row: Row) => ({
      customerId: row.customer_id as string,
      model: row.model as string,
      chargeId: row.charge_id as string,
      windowStartMs: msOfNN(row.window_start),
      unit: row.unit as string,
      costUnit: row.cost_unit as string,
      priceNanos: big(row.price_nanos),
      costNanos: big(row.cost_nanos),
    }));
  }

  /** windowSums: per (customer, model, unit, cost unit) sums of rated events at or after sinceMs. */
  /**
   * windowSums: per (customer, model, price unit, cost unit) the rated events' price and cost since
   * sinceMs; for credit-priced rows also the credits' currency value (the lines' price_value_nanos).
   */
  async windowSums(tenant: string, customerIds: string[], sinceMs: number): Promise<Array<{ customerId: string; model: string; unit: string; costUnit: string; priceNanos: bigint; costNanos: bigint; valueNanos: bigint }>> {
    if (customerIds.length === 0) return [];
    const r = await this.db.query(
      `SELECT customer_id, model, unit, cost_unit, sum(price_nanos)::bigint AS price_nanos, sum(cost_nanos)::bigint AS cost_nanos,
              COALESCE(sum(CASE WHEN left(unit, 3) = 'cr_' THEN (SELECT sum((x->>'priceValueNanos')::numeric) FROM jsonb_array_elements(lines) x) END), 0)::bigint AS value_nanos
         FROM rated_events WHERE tenant=$1 AND customer_id = ANY($2::text[]) AND event_time >= $3
        GROUP BY customer_id, model, unit, cost_unit`,
      [tenant, customerIds, ts(sinceMs)],
    );
    return r.rows.map((row) => ({ customerId: row.customer_id as string, model: row.model as string, unit: row.unit as string, costUnit: row.cost_unit as string, priceNanos: big(row.price_nanos), costNanos: big(row.cost_nanos), valueNanos: big(row.value_nanos) }));
  }

  /** insertAlerts: stores alerts (an existing alert id is kept: idempotent). Returns the new ones. */
  async insertAlerts(tenant: string, alerts: AlertRow[]): Promise<number> {
    if (alerts.length === 0) return 0;
    return insertMany(
      this.db,
      "alerts",
      ["tenant", "alert_id", "rule_id", "customer_id", "kind", "observed_bps", "threshold_bps", "revenue_nanos", "cost_nanos", "unit", "window_start", "window_end", "raise_time", "message"],
      alerts.map((a) => [tenant, a.alertId, a.ruleId, a.customerId, a.kind, a.observedBps, a.thresholdBps, a.revenueNanos, a.costNanos, a.unit, new Date(a.windowStartMs), new Date(a.windowEndMs), new Date(a.raiseTimeMs), a.message]),
      "ON CONFLICT (tenant, alert_id) DO NOTHING",
    );
  }

  /** alerts: alerts raised at or after sinceMs, newest first. */
  async alerts(tenant: string, sinceMs: number, customerId: string, limit: number): Promise<AlertRow[]> {
    const r = await this.db.query(
      `SELECT * FROM alerts WHERE tenant=$1 AND raise_time >= $2 AND ($3 = '' OR customer_id = $3) ORDER BY raise_time DESC, alert_id LIMIT $4`,
      [tenant, ts(sinceMs), customerId, limit],
    );
    return r.rows.map((row) => ({
      alertId: row.alert_id as string,
      ruleId: row.rule_id as string,
      customerId: row.customer_id as string,
      kind: row.kind as AlertRow["kind"],
      observedBps: big(row.observed_bps),
      thresholdBps: big(row.threshold_bps),
      revenueNanos: big(row.revenue_nanos),
      costNanos: big(row.cost_nanos),
      unit: row.unit as string,
      windowStartMs: msOfNN(row.window_start),
      windowEndMs: msOfNN(row.window_end),
      raiseTimeMs: msOfNN(row.raise_time),
      message: row.message as string,
    }));
  }

  /** task: one outcome task (null when unknown). */
  async task(tenant: string, customerId: string, taskId: string): Promise<TaskState | null> {
    const st = new MemoryRatingState();
    await this.loadState(this.db, st, [], [{ tenant, customerId, taskId }], 0);
    return st.tasks.get([tenant, customerId, taskId].join(SEP)) ?? null;
  }

  /**
   * confirmDueOutcomes: pending outcomes whose verification window has passed become confirmed
   * and their price goes to the wallet outbox (id "<event_id>:<charge_id>"), in one transaction.
   * Returns how many were confirmed.
   */
  async confirmDueOutcomes(nowMs: number, limit: number): Promise<number> {
    return this.db.transaction(async (tx) => {
      // The customers' batch locks first (the same advisory locks a rating batch takes before it
      // loads their tasks): a batch that is clawing one of these outcomes back either committed
      // before (the task is no longer pending) or waits; a confirmation never overwrites it.
      const due = await tx.query<{ tenant: string; customer_id: string }>(
        `SELECT DISTINCT tenant, customer_id FROM (SELECT tenant, customer_id FROM outcome_tasks
           WHERE outcome->>'status' = 'pending' AND (outcome->>'verifyUntilMs')::bigint < $1
           ORDER BY tenant, customer_id, task_id LIMIT $2) AS d`,
        [nowMs, limit],
      );
      if (due.rows.length === 0) return 0;
      const customers = due.rows.map((x) => ({ tenant: x.tenant, customerId: x.customer_id }));
      await this.lockCustomers(tx, customers);
      const r = await tx.query(
        `SELECT * FROM outcome_tasks WHERE outcome->>'status' = 'pending' AND (outcome->>'verifyUntilMs')::bigint < $1
           AND (tenant, customer_id) IN (SELECT * FROM unnest($3::text[], $4::text[]))
          ORDER BY tenant, customer_id, task_id LIMIT $2 FOR UPDATE`,
        [nowMs, limit, customers.map((c) => c.tenant), customers.map((c) => c.customerId)],
      );
      if (r.rows.length === 0) return 0;
      const items: unknown[][] = [];
      for (const row of r.rows) {
        const o = row.outcome as Record<string, unknown>;
        await tx.query(`UPDATE outcome_tasks SET outcome = jsonb_set(outcome, '{status}', '"confirmed"') WHERE tenant=$1 AND customer_id=$2 AND task_id=$3`, [row.tenant, row.customer_id, row.task_id]);
        const amount = BigInt(o.priceNanos as string);
        if (amount > 0n) {
          items.push([row.tenant, `${o.eventId as string}:${o.chargeId as string}`, row.customer_id, o.unit, amount, o.eventId, o.chargeId, (o.model as string | undefined) ?? "", new Date(Number(o.eventTimeMs ?? o.verifyUntilMs)), "", ""]);
        }
      }
      if (items.length > 0) {
        await insertMany(tx, "wallet_outbox", ["tenant", "item_id", "customer_id", "unit", "amount_nanos", "event_id", "charge_id", "model", "occurred_at", "traceparent", "tracestate"], items, "ON CONFLICT (tenant, item_id) DO NOTHING");
      }
      return r.rows.length;
    });
  }
}
