import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { MeteringService, StoredEvent } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { ConsumeResult, type CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { isDbError, type Db } from "@nanobill/db";
import { forTenant, type Clock, type Logger } from "@nanobill/service-kit";
import { ATTR, getTracer, nanosAttr, withBatchTrace, withTraceContext } from "@nanobill/telemetry";
import type { CatalogCache } from "./catalog-cache.js";
import { evaluateRule, isCreditUnit } from "./domain/margin.js";
import { propString } from "./domain/pricing.js";
import { rateEvent, type TenantCatalog } from "./domain/rate-event.js";
import { MemoryRatingState } from "./domain/state.js";
import { EVENTS_METRIC, METRIC, dimsKeyOf, type RatedEventResult, type UsageEvent } from "./domain/types.js";
import {
  CHECK_RATED_BATCHES_AFTER_OVERLAP,
  CONSUMER_BATCH_EVENTS_MAX,
  CONSUMER_ERROR_BACKOFF_MS,
  CONSUMER_ERROR_BACKOFF_MS_MAX,
  CONSUMER_IDLE_MS,
  CONSUMER_WAIT_MS,
  HANDOFF_BATCHES_QUEUED,
  OUTCOMES_CONFIRM_INTERVAL_MS,
  OUTCOMES_CONFIRM_MAX,
  OUTBOX_BATCHES_PER_DRAIN,
  WALLET_CONSUME_ITEMS_MAX,
} from "./limits.js";
import { storedEventOf, type RatingInput } from "./mapping.js";
import { decodeConsumeItemResult, decodeStoredEvent, encodeConsumeItems, type ViewClients } from "./wire.js";
import { LeaseLostError, type LeaseStore } from "./store/lease-store.js";
import type { RatedStore, WalletItem } from "./store/rated-store.js";

export interface ConsumerOptions {
  cursorName: string;
  batchEventsMax: number;
  waitMs: number;
  /** The customer partition of metering's feed this consumer reads (count 1 = the whole feed). */
  partitionCount: number;
  partition: number;
  /**
   * The partition's lease this consumer writes under (PartitionLeaseManager): every batch
   * transaction first checks it (LeaseStore.fence) and the cursor write carries its epoch. A lost
   * lease stops the running loop. Absent: an unleased consumer (one process, pollOnce, tools).
   */
  fence?: { owner: string; epoch: bigint };
}

export const CONSUMER_DEFAULTS: ConsumerOptions = { cursorName: "metering", batchEventsMax: CONSUMER_BATCH_EVENTS_MAX, waitMs: CONSUMER_WAIT_MS, partitionCount: 1, partition: 0 };

/** The cursor name of one partition ("metering" for the whole feed). */
export function partitionCursorName(count: number, index: number): string {
  return count <= 1 ? "metering" : `metering:p${index}/${count}`;
}

export interface ConsumerDeps {
  db: Db;
  rated: RatedStore;
  /** Required with options.fence. */
  leases?: LeaseStore;
  cache: CatalogCache;
  metering: Client<typeof MeteringService>;
  wallet: Client<typeof CreditWalletService>;
  /**
   * ReadEvents and Consume through the hand-written codecs (wire.ts; the same calls on the wire).
   * Absent: through `metering` and `wallet`.
   */
  views?: ViewClients;
  logger: Logger;
  clock: Clock;
  options?: Partial<ConsumerOptions>;
}

const tracer = getTracer("nanobill.rating");

/** walletItemsOf: what one rated event hands to credit-wallet Consume (one item per charge). */
export function walletItemsOf(tenant: string, r: RatedEventResult, traceparent: string, tracestate: string): WalletItem[] {
  const byCharge = new Map<string, { amount: bigint; unit: string }>();
  for (const l of r.lines) {
    if (l.chargeId === "" || (l.status !== "final" && l.status !== "provisional")) continue;
    const cur = byCharge.get(l.chargeId) ?? { amount: 0n, unit: l.unit };
    cur.amount += l.priceNanos;
    byCharge.set(l.chargeId, cur);
  }
  const out: WalletItem[] = [];
  for (const [chargeId, { amount, unit }] of byCharge) {
    if (amount <= 0n) continue; // negative provisional steps (volume tiers) are settled at period close
    out.push({ tenant, itemId: `${r.eventId}:${chargeId}`, customerId: r.customerId, unit, amountNanos: amount, eventId: r.eventId, chargeId, model: r.model, occurredMs: r.timestampMs, traceparent, tracestate });
  }
  return out;
}

/**
 * RatingConsumer: reads metering's cursor (internal key, long-poll), rates each event inside its
 * stored trace context, and in ONE transaction writes the rated rows, hour buckets, rating state,
 * wallet outbox and the advanced cursor; then drains the outbox to credit-wallet Consume (batched
 * per tenant, ids "<event_id>:<charge_id>") and evaluates guardrails for the touched customers.
 * At-least-once: a batch that fails before commit is read again; an event already rated is
 * skipped; Consume is idempotent on the item id, so a replayed outbox burns nothing twice.
 */
export class RatingConsumer {
  readonly #d: ConsumerDeps;
  readonly #o: ConsumerOptions;
  #running = false;
  #loop: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #cursor: bigint | undefined;
  /** Batches still to rate with the already-rated lookup (after a duplicate was refused). */
  #checkRatedBatches = 0;
  readonly #handOffs: HandOffQueue;

  constructor(deps: ConsumerDeps) {
    this.#d = deps;
    this.#o = { ...CONSUMER_DEFAULTS, ...deps.options };
    this.#handOffs = new HandOffQueue((b) => this.#handOff(b.items, b.batchId), deps.logger);
  }

  /** Whether the running loop is on (false after stop() or a lost lease). */
  get running(): boolean {
    return this.#running;
  }

  /** The cursor (partition) this consumer reads and writes. */
  get cursorName(): string {
    return this.#o.cursorName;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#abort?.abort();
    await this.#loop;
    this.#loop = undefined;
  }

  /**
   * The running loop, pipelined: the next page is read from metering while this one is rated and
   * written, and the wallet hand-off of a committed batch runs while the next batch is processed
   * (one hand-off at a time, in commit order; at most HANDOFF_BATCHES_QUEUED batches behind, then
   * the loop waits). Throughput is then bounded by the slowest stage instead of their sum. The
   * outbox stays the record of what the wallet has not acknowledged: a failed hand-off leaves its
   * items there and the loop drains it after a backoff (and once at start).
   */
  async #run(): Promise<void> {
    let backoff = CONSUMER_ERROR_BACKOFF_MS;
    let needsDrain = true;
    let drainAtMs = 0;
    let drainBackoff = CONSUMER_ERROR_BACKOFF_MS;
    let nextConfirmMs = 0;
    const read = (after: bigint, waitMs: number) => this.#read(after, waitMs);
    while (this.#running) {
      this.#abort = new AbortController();
      let prefetch: ReturnType<typeof read> | undefined;
      try {
        // The outbox is drained at start and after a failed hand-off. A wallet that is down does
        // not stop rating: the drain is retried with its own backoff while batches go on.
        if (needsDrain && Date.now() >= drainAtMs) {
          try {
            await this.#handOffs.idle();
            await this.drainOutbox();
            needsDrain = false;
            this.#handOffs.failed = false;
            drainBackoff = CONSUMER_ERROR_BACKOFF_MS;
          } catch (e) {
            if (!this.#running) break;
            drainAtMs = Date.now() + drainBackoff;
            drainBackoff = Math.min(drainBackoff * 2, CONSUMER_ERROR_BACKOFF_MS_MAX);
            this.#d.logger.warn("wallet hand-off failed; rating goes on, the outbox keeps the items", { error: String((e as Error)?.message ?? e), retryInMs: drainAtMs - Date.now() });
          }
        }
        let after = this.#cursor ?? (await this.#d.rated.cursor(this.#o.cursorName));
        prefetch = read(after, this.#o.waitMs);
        while (this.#running) {
          const t = Date.now();
          const resp = await prefetch;
          prefetch = undefined;
          const last = resp.lastSequence > after ? resp.lastSequence : after;
          const got = resp.events.length > 0 || last > after;
          // Read ahead while this page is processed (a long poll once caught up).
          prefetch = read(last, got ? 0 : this.#o.waitMs);
          prefetch.catch(() => {}); // observed when awaited; a failure there restarts the loop
          if (got) {
            const fresh: BatchHandOff = { items: [], batchId: null };
            await this.processBatch(resp.events, last, fresh);
            this.#cursor = after = last;
            if (fresh.batchId !== null) await this.#handOffs.push(fresh);
          } else if (Date.now() - t < this.#o.waitMs / 2) await sleep(CONSUMER_IDLE_MS, this.#abort.signal);
          // A failed hand-off leaves its items in the outbox (and the queue sends nothing more
          // until a drain succeeds): drain when due.
          if (this.#handOffs.failed) needsDrain = true;
          if (Date.now() >= nextConfirmMs) {
            nextConfirmMs = Date.now() + OUTCOMES_CONFIRM_INTERVAL_MS;
            if ((await this.#d.rated.confirmDueOutcomes(this.#d.clock.now().getTime(), OUTCOMES_CONFIRM_MAX)) > 0) needsDrain = true;
          }
          if (needsDrain && Date.now() >= drainAtMs) break;
          backoff = CONSUMER_ERROR_BACKOFF_MS;
        }
      } catch (e) {
        if (!this.#running) break;
        if (e instanceof LeaseLostError) {
          // Another process holds the partition now: this loop stops (nothing of the batch was written).
          this.#running = false;
          this.#d.logger.warn("partition lease lost; the consumer loop stops", { cursor: this.#o.cursorName, owner: e.owner, epoch: e.epoch.toString() });
          break;
        }
        this.#cursor = undefined; // re-read from the store
        needsDrain = true;
        this.#d.logger.warn("rating consumer batch failed; retrying", { error: String((e as Error)?.message ?? e), backoffMs: backoff });
        await sleep(backoff, this.#abort?.signal);
        backoff = Math.min(backoff * 2, CONSUMER_ERROR_BACKOFF_MS_MAX);
      } finally {
        this.#abort?.abort();
        await prefetch?.catch(() => {});
      }
    }
    await this.#handOffs.idle();
  }

  #readRequest(after: bigint, waitMs: number, maxEvents: number) {
    const { partitionCount, partition } = this.#o;
    return { afterSequence: after, maxEvents, waitMs, ...(partitionCount > 1 ? { partitionCount, partition } : {}) };
  }

  /**
   * Events asked per page: batchEventsMax, halved while pages come back ResourceExhausted (a page
   * of large events past a message limit: 2,000 events of up to ~16.5 KB each are 33 MB, over
   * the 16 MiB limits), doubled back after each page read.
   */
  #pageEvents = 0;

  /**
   * One ReadEvents call. Through the view, the page is decoded as soon as it arrives (in the
   * running loop that is while the previous batch's transaction waits on the database).
   */
  async #read(after: bigint, waitMs: number): Promise<{ events: PageEvents; lastSequence: bigint }> {
    const max = this.#o.batchEventsMax;
    if (this.#pageEvents === 0) this.#pageEvents = max;
    for (;;) {
      try {
        const page = await this.#readPage(after, waitMs, this.#pageEvents);
        this.#pageEvents = Math.min(max, this.#pageEvents * 2);
        return page;
      } catch (e) {
        if (ConnectError.from(e).code !== Code.ResourceExhausted || this.#pageEvents === 1) throw e;
        this.#pageEvents = Math.max(1, Math.floor(this.#pageEvents / 2));
        this.#d.logger.warn("metering page too large; asking for fewer events", { events: this.#pageEvents });
      }
    }
  }

  async #readPage(after: bigint, waitMs: number, maxEvents: number): Promise<{ events: PageEvents; lastSequence: bigint }> {
    const opts = { signal: this.#abort?.signal, timeoutMs: waitMs + 10_000 };
    const req = this.#readRequest(after, waitMs, maxEvents);
    if (this.#d.views === undefined) return this.#d.metering.readEvents(req, opts);
    const page = await this.#d.views.readEvents(req, opts);
    return { events: decodedPage(page.events), lastSequence: page.lastSequence };
  }

  /** pollOnce: one ReadEvents + rate + write + wallet hand-off + guardrails; returns events rated. */
  async pollOnce(waitMs: number): Promise<number> {
    const after = this.#cursor ?? (await this.#d.rated.cursor(this.#o.cursorName));
    this.#abort = new AbortController();
    const resp = await this.#read(after, waitMs);
    const fresh: BatchHandOff = { items: [], batchId: null };
    const n = resp.events.length === 0 && resp.lastSequence <= after ? 0 : await this.processBatch(resp.events, resp.lastSequence > after ? resp.lastSequence : after, fresh);
    this.#cursor = resp.lastSequence > after ? resp.lastSequence : after;
    // The batch's own items are handed over from memory (no re-read); leftovers from the store.
    if (fresh.batchId !== null) await this.#handOff(fresh.items, fresh.batchId);
    await this.drainOutbox();
    if ((await this.#d.rated.confirmDueOutcomes(this.#d.clock.now().getTime(), OUTCOMES_CONFIRM_MAX)) > 0) await this.drainOutbox();
    return n;
  }

  /**
   * processBatch: rates and stores one page of events and advances the cursor to lastSequence;
   * `handOff` receives the batch's wallet items and their outbox row (to hand over from memory).
   */
  async processBatch(events: PageEvents, lastSequence: bigint, handOff: BatchHandOff = { items: [], batchId: null }): Promise<number> {
    // An event whose rating throws (rating is pure and deterministic: a retry would throw again)
    // must not stop its partition: the batch is rated again from scratch with that event recorded
    // as unpriced, with the error as its reason, and everything else rated as usual.
    const poisoned = new Map<string, string>();
    for (;;) {
      try {
        return await this.#processBatchOnce(events, lastSequence, handOff, poisoned);
      } catch (e) {
        if (!(e instanceof PoisonEvent) || poisoned.size > events.length) throw e;
        poisoned.set(e.key, e.message);
        this.#d.logger.warn("an event could not be rated; it is recorded unpriced", { event: e.key.replace(SEP_KEY, "/"), error: e.message });
      }
    }
  }

  async #processBatchOnce(events: PageEvents, lastSequence: bigint, handOff: BatchHandOff, poisoned: ReadonlyMap<string, string>): Promise<number> {
    // Optimistic: a batch normally holds only events nobody rated (the cursor is committed with
    // the rows), so it skips the already-rated lookup; the unique index over each event's first
    // rated row (rated_events_event) still refuses a replay (or an event twice in the page),
    // whatever charges it is rated under, and then the batch is rated again with the lookup, which
    // also drops repeats within the page (and so are the next
    // CHECK_RATED_BATCHES_AFTER_OVERLAP batches: a change of partitioning, two consumers meeting).
    if (this.#checkRatedBatches > 0) {
      this.#checkRatedBatches--;
      return this.#rateBatch(events, lastSequence, handOff, true, poisoned);
    }
    try {
      return await this.#rateBatch(events, lastSequence, handOff, false, poisoned);
    } catch (e) {
      if (!isDbError(e, "unique_violation") || (e.constraint !== "rated_events_pkey" && e.constraint !== "rated_events_event")) throw e;
      this.#checkRatedBatches = CHECK_RATED_BATCHES_AFTER_OVERLAP;
      return this.#rateBatch(events, lastSequence, handOff, true, poisoned);
    }
  }

  async #rateBatch(events: PageEvents, lastSequence: bigint, handOff: BatchHandOff, checkRated: boolean, poisoned: ReadonlyMap<string, string>): Promise<number> {
    const d = this.#d;
    const now = d.clock.now().getTime();
    const inputs = inputsOf(events, now);
    const byTenant = new Map<string, RatingInput[]>();
    for (const i of inputs) {
      const l = byTenant.get(i.event.tenant);
      if (l === undefined) byTenant.set(i.event.tenant, [i]);
      else l.push(i);
    }
    const catalogs = new Map<string, TenantCatalog>();
    await d.cache.sync(byTenant.keys()); // catalog writes of other processes (the API replicas)
    for (const [tenant, list] of byTenant) catalogs.set(tenant, await d.cache.forCustomers(tenant, list.map((i) => i.event.customerId)));

    const touched = new Map<string, Set<string>>();
    let rated = 0;
    const batchCustomers = new Map<string, { tenant: string; customerId: string }>();
    for (const i of inputs) batchCustomers.set(`${i.event.tenant}\u0000${i.event.customerId}`, { tenant: i.event.tenant, customerId: i.event.customerId });
    await d.db.transaction(async (tx) => {
      rated = 0;
      const fence = this.#o.fence;
      if (fence !== undefined) await d.leases!.fence(tx, this.#o.cursorName, fence.owner, fence.epoch);
      await d.rated.lockCustomers(tx, [...batchCustomers.values()]);
      // Under the locks, the catalogs must still be current: a subscription or override write takes
      // the same customer lock and checks the customer's rated events (CatalogStore
      // #refuseRatedInside), so a write committed between loading the catalogs and these locks
      // would otherwise see none of this batch's events and have none of them priced under it.
      // Any catalog write of the tenant marks it stale; only its customers' own rows matter here,
      // and they are read again under the locks (no reload loop, no second rating).
      for (const tenant of await d.cache.stale(tx, catalogs)) {
        const ids = [...batchCustomers.values()].filter((c) => c.tenant === tenant).map((c) => c.customerId);
        catalogs.set(tenant, await d.cache.withCustomersIn(tx, catalogs.get(tenant)!, ids));
      }
      let todo = inputs;
      if (checkRated) {
        const done = await d.rated.alreadyRated(tx, inputs.map((i) => ({ tenant: i.event.tenant, eventId: i.event.eventId })));
        // Skip events already rated and repeats within the page (the first is kept): a page that
        // holds an event twice is refused by the unique index too, and would be refused forever.
        todo = inputs.filter((i) => {
          const k = `${i.event.tenant}\u0000${i.event.eventId}`;
          if (done.has(k)) return false;
          done.add(k);
          return true;
        });
      }
      const st = new MemoryRatingState();
      const customers = new Map<string, { tenant: string; customerId: string }>();
      const tasks = new Map<string, { tenant: string; customerId: string; taskId: string }>();
      let minTs = Number.POSITIVE_INFINITY;
      for (const i of todo) {
        const e = i.event;
        customers.set(`${e.tenant}\u0000${e.customerId}`, { tenant: e.tenant, customerId: e.customerId });
        if (e.timestampMs < minTs) minTs = e.timestampMs;
        const res = catalogs.get(e.tenant)!.resolve(e);
        if (!("reason" in res)) {
          for (const c of res.charges) {
            if (c.pricing.kind !== "outcome" || c.pricing.taskIdProperty === "") continue;
            const v = e.properties[c.pricing.taskIdProperty];
            if (v !== undefined) {
              const taskId = propString(v); // the same text rating keys the task by
              if (taskId === "") continue;
              tasks.set(`${e.tenant}\u0000${e.customerId}\u0000${taskId}`, { tenant: e.tenant, customerId: e.customerId, taskId });
            }
          }
        }
      }
      await d.rated.loadState(tx, st, [...customers.values()], [...tasks.values()], Number.isFinite(minTs) ? minTs : now);
      const out: Array<{ tenant: string; sequence: bigint; result: RatedEventResult }> = [];
      const wallet: WalletItem[] = [];
      for (const i of todo) {
        const key = `${i.event.tenant}${SEP_KEY}${i.event.eventId}`;
        const poison = poisoned.get(key);
        let result: RatedEventResult;
        if (poison !== undefined) result = unratedResult(i.event, poison);
        else {
          try {
            result = rateInTrace(catalogs.get(i.event.tenant)!, st, i);
          } catch (e) {
            throw new PoisonEvent(key, String((e as Error)?.message ?? e));
          }
        }
        out.push({ tenant: i.event.tenant, sequence: i.sequence, result });
        wallet.push(...walletItemsOf(i.event.tenant, result, i.traceparent, i.tracestate));
        let t = touched.get(i.event.tenant);
        if (t === undefined) touched.set(i.event.tenant, (t = new Set()));
        t.add(i.event.customerId);
      }
      const batchId = await d.rated.writeBatch(tx, { rated: out, wallet, cursor: { name: this.#o.cursorName, afterSequence: lastSequence, ...(this.#o.fence ? { fence: this.#o.fence } : {}) } }, st, now);
      rated = out.length;
      handOff.items = wallet;
      handOff.batchId = batchId;
    });
    if (rated > 0) {
      try {
        await this.evaluateGuardrails(touched);
      } catch (e) {
        d.logger.warn("guardrail evaluation failed", { error: String((e as Error)?.message ?? e) });
      }
    }
    return rated;
  }

  /** drainOutbox: hands pending amounts of the store's outbox to credit-wallet Consume. */
  async drainOutbox(): Promise<void> {
    for (;;) {
      const batches = await this.#d.rated.outboxBatches(OUTBOX_BATCHES_PER_DRAIN);
      for (const b of batches) await this.#handOff(b.items, b.batchId);
      if (batches.length < OUTBOX_BATCHES_PER_DRAIN) break;
    }
    for (;;) {
      const items = await this.#d.rated.outbox(WALLET_CONSUME_ITEMS_MAX * 4);
      if (items.length === 0) return;
      await this.#handOff(items);
      if (items.length < WALLET_CONSUME_ITEMS_MAX * 4) return;
    }
  }

  /**
   * handOff: Consume per tenant in chunks of WALLET_CONSUME_ITEMS_MAX, each in a batch span that
   * continues its first item's trace and links to its other items' traces. Items of an outbox
   * batch row (batchId) leave the outbox when the wallet answered for all of them; other items
   * (wallet_outbox rows) chunk by chunk. A transport failure keeps them (attempts + 1) and is
   * rethrown (the loop backs off).
   */
  async #handOff(items: WalletItem[], batchId: bigint | null = null): Promise<void> {
    const d = this.#d;
    const byTenant = new Map<string, WalletItem[]>();
    for (const it of items) {
      const l = byTenant.get(it.tenant);
      if (l === undefined) byTenant.set(it.tenant, [it]);
      else l.push(it);
    }
    for (const [tenant, list] of byTenant) {
      for (let off = 0; off < list.length; off += WALLET_CONSUME_ITEMS_MAX) {
        const chunk = list.slice(off, off + WALLET_CONSUME_ITEMS_MAX);
        try {
          const traces = chunk.map((w) => ({ traceparent: w.traceparent, tracestate: w.tracestate }));
          const results = await withBatchTrace("rating.wallet_handoff", traces, async () => {
            if (d.views !== undefined) return (await d.views.consume({ items: encodeConsumeItems(chunk) }, forTenant(tenant))).results.map((b) => decodeConsumeItemResult(b));
            const items = chunk.map((w) => ({ id: w.itemId, customerId: w.customerId, unit: w.unit, amountNanos: w.amountNanos, eventId: w.eventId, chargeId: w.chargeId, model: w.model, occurredAt: timestampFromMs(w.occurredMs) }));
            return (await d.wallet.consume({ items }, forTenant(tenant))).results;
          });
          results.forEach((r, i) => {
            if (r.result === ConsumeResult.ID_REUSED || r.result === ConsumeResult.INVALID) {
              d.logger.error("wallet refused a consume item", { tenant, id: chunk[i]?.itemId, result: ConsumeResult[r.result], error: r.error });
            }
          });
          if (batchId === null) await d.rated.outboxDone(chunk);
        } catch (e) {
          if (batchId === null) await d.rated.outboxFailed(chunk, String((e as Error)?.message ?? e));
          else await d.rated.outboxBatchFailed(batchId, String((e as Error)?.message ?? e));
          throw e;
        }
      }
    }
    if (batchId !== null) await d.rated.outboxBatchDone(batchId);
  }

  /** evaluateGuardrails: runs the tenants' rules over the touched customers; stores new alerts. */
  async evaluateGuardrails(touched: Map<string, Set<string>>): Promise<number> {
    const d = this.#d;
    let raised = 0;
    const now = d.clock.now().getTime();
    for (const [tenant, customers] of touched) {
      const rules = await d.cache.rules(tenant);
      if (rules.length === 0) continue;
      const ids = [...customers];
      const byWindow = new Map<number, typeof rules>();
      for (const r of rules) {
        if (r.customerId !== "" && !customers.has(r.customerId)) continue;
        const l = byWindow.get(r.windowSeconds) ?? [];
        l.push(r);
        byWindow.set(r.windowSeconds, l);
      }
      // The currency a credit type's value (price_value_nanos) is in: its exchange rates' ("" when unknown or mixed).
      const creditRates = await d.cache.creditRates(tenant);
      const valueUnit = (unit: string): string => {
        const cur = new Set((creditRates.get(unit) ?? []).map((x) => x.currency));
        return cur.size === 1 ? [...cur][0]! : "";
      };
      for (const [w, rs] of byWindow) {
        const sums = (await d.rated.windowSums(tenant, ids, now - w * 1000)).map((x) => (isCreditUnit(x.unit) ? { ...x, valueUnit: valueUnit(x.unit) } : x));
        for (const r of rs) raised += await d.rated.insertAlerts(tenant, evaluateRule(r, sums, now));
      }
    }
    return raised;
  }
}

function rateInTrace(cat: TenantCatalog, st: MemoryRatingState, i: RatingInput): RatedEventResult {
  const tc = i.traceparent === "" ? undefined : { traceparent: i.traceparent, tracestate: i.tracestate };
  return withTraceContext(tc, () =>
    tracer.startActiveSpan("rating.rate_event", (span) => {
      try {
        const r = rateEvent(cat, st, i.event);
        let price = 0n;
        let cost = 0n;
        let unit = "";
        for (const l of r.lines) {
          price += l.priceNanos;
          cost += l.costNanos;
          if (unit === "" && l.unit !== "") unit = l.unit;
        }
        span.setAttributes({
          [ATTR.TENANT]: i.event.tenant,
          [ATTR.EVENT_ID]: i.event.eventId,
          [ATTR.CUSTOMER_ID]: i.event.customerId,
          [ATTR.PRICE_NANOS]: nanosAttr(price),
          [ATTR.COST_NANOS]: nanosAttr(cost),
          [ATTR.UNIT]: unit,
        });
        return r;
      } finally {
        span.end();
      }
    }),
  );
}

const SEP_KEY = "\u0000";

/** A page's events as protobuf-es decoded them, or as the hand-written decoder read them ahead. */
export type PageEvents = readonly StoredEvent[] | DecodedPage;

/**
 * The inputs of a page read through the view. An event with neither a timestamp nor a receive
 * time has NaN as its time here: it gets the clock of the batch that rates it (as storedEventOf).
 */
export class DecodedPage {
  constructor(readonly inputs: readonly RatingInput[]) {}
  get length(): number {
    return this.inputs.length;
  }
}

function decodedPage(events: readonly Uint8Array[]): DecodedPage {
  const out = new Array<RatingInput>(events.length);
  for (let i = 0; i < events.length; i++) out[i] = decodeStoredEvent(events[i]!, Number.NaN);
  return new DecodedPage(out);
}

function inputsOf(events: PageEvents, nowMs: number): RatingInput[] {
  if (!(events instanceof DecodedPage)) return events.map((e) => storedEventOf(e, nowMs));
  return events.inputs.map((i) => (Number.isNaN(i.event.timestampMs) ? { ...i, event: { ...i.event, timestampMs: nowMs } } : i));
}

/** Thrown out of a batch's transaction when rating one of its events throws. */
class PoisonEvent extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
  }
}

/** unratedResult: the record of an event whose rating failed: one unpriced line giving the error. */
export function unratedResult(e: UsageEvent, error: string): RatedEventResult {
  return {
    eventId: e.eventId,
    customerId: e.customerId,
    eventType: e.type,
    timestampMs: e.timestampMs,
    subscriptionId: "",
    taskId: "",
    model: "",
    lines: [
      {
        chargeId: "",
        dimensions: { [METRIC]: EVENTS_METRIC },
        dimsKey: dimsKeyOf({ [METRIC]: EVENTS_METRIC }),
        quantity: 0n,
        priceNanos: 0n,
        unit: "",
        costNanos: 0n,
        costUnit: "",
        status: "unpriced",
        reason: `rating failed: ${error}`,
        attributedCostNanos: 0n,
        priceValueNanos: 0n,
      },
    ],
  };
}

/** A committed batch's wallet items and their outbox row (batchId null: no item). */
export interface BatchHandOff {
  items: WalletItem[];
  batchId: bigint | null;
}

/**
 * The wallet hand-offs of committed batches, one at a time in commit order. push() waits while
 * HANDOFF_BATCHES_QUEUED batches are already waiting (back-pressure on the loop). A failure is
 * logged and flagged (the items stay in the outbox; the loop drains it after a backoff).
 */
class HandOffQueue {
  #tail: Promise<void> = Promise.resolve();
  #queued = 0;
  failed = false;
  constructor(
    readonly send: (batch: BatchHandOff) => Promise<void>,
    readonly logger: Logger,
  ) {}

  async push(items: BatchHandOff): Promise<void> {
    while (this.#queued >= HANDOFF_BATCHES_QUEUED) await this.#tail;
    this.#queued++;
    this.#tail = this.#tail.then(async () => {
      try {
        if (!this.failed) await this.send(items);
      } catch (e) {
        this.failed = true;
        this.logger.warn("wallet hand-off failed; the outbox keeps the items", { error: String((e as Error)?.message ?? e) });
      } finally {
        this.#queued--;
      }
    });
  }

  idle(): Promise<void> {
    return this.#tail;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
