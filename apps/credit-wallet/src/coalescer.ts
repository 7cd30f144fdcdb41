/**
 * Group commit for unary calls: concurrent single-item calls are queued and handed to a batch
 * function together (one real-time round, one PostgreSQL transaction and one ledger flush per
 * batch). Up to `inFlightMax` batches run at a time per tenant (pipelining: the next batch's
 * real-time reservations and statement overlap the previous batch's commit); whatever queues
 * meanwhile forms the next batch.
 *
 * With `keyOf`, batches in flight at once never share a key: an item whose key is in a running
 * batch waits in the queue, in order, for a later batch (items with one key may share a batch).
 * Keyed by wallet, two pipelined group commits never touch the same rows (no lock waits or
 * deadlocks between them), and a retried call whose first attempt is still committing is answered
 * after it (as a replay).
 */
export interface CoalescerOptions<I> {
  /** Batches running at once per tenant (default 1). */
  inFlightMax?: number;
  /** Batches in flight together never share a key (default: no key). */
  keyOf?: (item: I) => string;
  /**
   * A batch beyond the first in flight starts only once this many items wait (default 1): small
   * extra batches would cost a commit each for little overlap.
   */
  extraBatchMin?: number;
}

export function createCoalescer<I, O>(run: (tenant: string, items: I[]) => Promise<O[]>, batchMax: number, opts: CoalescerOptions<I> = {}) {
  const inFlightMax = opts.inFlightMax ?? 1;
  if (!Number.isSafeInteger(inFlightMax) || inFlightMax < 1) throw new Error("inFlightMax must be a positive integer");
  if (!Number.isSafeInteger(batchMax) || batchMax < 1) throw new Error("batchMax must be a positive integer");
  const keyOf = opts.keyOf;
  const extraBatchMin = opts.extraBatchMin ?? 1;
  if (!Number.isSafeInteger(extraBatchMin) || extraBatchMin < 1) throw new Error("extraBatchMin must be a positive integer");
  interface Waiter {
    item: I;
    key: string;
    resolve: (o: O) => void;
    reject: (e: unknown) => void;
  }
  interface TenantState {
    queue: Waiter[];
    running: number;
    /** Keys of the items in running batches. */
    keys: Set<string>;
  }
  const tenants = new Map<string, TenantState>();

  /** Takes the next batch off the queue: at most batchMax items, none whose key is in a running batch. */
  function take(st: TenantState): Waiter[] {
    if (!keyOf) return st.queue.splice(0, batchMax);
    const batch: Waiter[] = [];
    const rest: Waiter[] = [];
    for (const w of st.queue) {
      if (batch.length < batchMax && !st.keys.has(w.key)) batch.push(w);
      else rest.push(w);
    }
    st.queue = rest;
    for (const w of batch) st.keys.add(w.key);
    return batch;
  }

  function pump(tenant: string, st: TenantState): void {
    while (st.running < inFlightMax && st.queue.length > 0 && (st.running === 0 || st.queue.length >= extraBatchMin)) {
      const batch = take(st);
      if (batch.length === 0) return; // everything queued waits for a running key
      st.running++;
      void runBatch(tenant, st, batch);
    }
    if (st.running === 0 && st.queue.length === 0) tenants.delete(tenant);
  }

  async function runBatch(tenant: string, st: TenantState, batch: Waiter[]): Promise<void> {
    try {
      const out = await run(tenant, batch.map((w) => w.item));
      batch.forEach((w, i) => w.resolve(out[i]!));
    } catch (e) {
      for (const w of batch) w.reject(e);
    } finally {
      st.running--;
      if (keyOf) for (const w of batch) st.keys.delete(w.key);
      pump(tenant, st);
    }
  }

  return {
    submit(tenant: string, item: I): Promise<O> {
      return new Promise<O>((resolve, reject) => {
        let st = tenants.get(tenant);
        if (!st) tenants.set(tenant, (st = { queue: [], running: 0, keys: new Set() }));
        st.queue.push({ item, key: keyOf ? keyOf(item) : "", resolve, reject });
        pump(tenant, st);
      });
    },
  };
}
