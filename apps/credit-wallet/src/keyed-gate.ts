/**
 * Calls in flight by key, in one process: `run(keys, fn)` waits until no call in flight holds any of
 * `keys`, then runs `fn` holding them all. A retried call whose first attempt is still committing
 * (same caller id) therefore runs after it and finds its committed row: it is answered as its
 * replay and never reserves the money a second time. A waiting call holds nothing, so calls with
 * overlapping keys cannot deadlock. (Another replica's attempt is not seen here: there the commit's
 * ON CONFLICT still makes it a replay, after a transient reservation.)
 */
export function createKeyedGate() {
  const running = new Map<string, Promise<void>>();
  return {
    async run<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
      const ks = [...new Set(keys)];
      for (;;) {
        const busy = ks.map((k) => running.get(k)).filter((p): p is Promise<void> => p !== undefined);
        if (busy.length === 0) break;
        await Promise.all(busy);
      }
      let done!: () => void;
      const mine = new Promise<void>((r) => (done = r));
      for (const k of ks) running.set(k, mine);
      try {
        return await fn();
      } finally {
        for (const k of ks) if (running.get(k) === mine) running.delete(k);
        done();
      }
    },
    /** Keys held now (tests). */
    size: () => running.size,
  };
}
