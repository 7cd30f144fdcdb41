/**
 * Group commit for unary calls: concurrent single-item calls are queued and handed to a batch
 * function together (one real-time round trip each, but one PostgreSQL transaction and one ledger
 * call per batch). One batch runs at a time per tenant; whatever queues meanwhile forms the next.
 */
export function createCoalescer<I, O>(run: (tenant: string, items: I[]) => Promise<O[]>, batchMax: number) {
  interface Waiter {
    item: I;
    resolve: (o: O) => void;
    reject: (e: unknown) => void;
  }
  const queues = new Map<string, Waiter[]>();
  const running = new Set<string>();

  async function drain(tenant: string): Promise<void> {
    running.add(tenant);
    try {
      for (;;) {
        const q = queues.get(tenant);
        if (!q || q.length === 0) break;
        const batch = q.splice(0, batchMax);
        try {
          const out = await run(tenant, batch.map((w) => w.item));
          batch.forEach((w, i) => w.resolve(out[i]!));
        } catch (e) {
          for (const w of batch) w.reject(e);
        }
      }
    } finally {
      running.delete(tenant);
      queues.delete(tenant);
    }
  }

  return {
    submit(tenant: string, item: I): Promise<O> {
      return new Promise<O>((resolve, reject) => {
        let q = queues.get(tenant);
        if (!q) queues.set(tenant, (q = []));
        q.push({ item, resolve, reject });
        if (!running.has(tenant)) void drain(tenant);
      });
    },
  };
}
