/** A call that waited longer than its bound for its keys (it took none of them and ran nothing). */
export class GateWaitTimeout extends Error {
  constructor(waitMs: number) {
    super(`waited ${waitMs} ms for a call in flight with the same id`);
    this.name = "GateWaitTimeout";
  }
}

/**
 * Calls in flight by key, in one process: `run(keys, fn)` runs `fn` holding all `keys` once no
 * earlier call holds or waits for any of them. A retried call whose first attempt is still
 * committing (same caller id) therefore runs after it and finds its committed row: it is answered
 * as its replay and never reserves the money a second time.
 *
 * FIFO per key: a call joins the queue of every one of its keys at once (synchronously, when
 * called) and runs when it is first in all of them, so a later call never takes a key an earlier
 * waiter is queued for (before, a waiter on several keys looped until all were free at once and
 * could starve while single-key calls kept taking them). No deadlock: joining all queues at once
 * orders the calls globally (the earliest waiter is next in each of its queues once the calls
 * holding them end). `waitMs` bounds the wait: past it the call leaves its queues and rejects with
 * GateWaitTimeout. (Another replica's attempt is not seen here: there the commit's ON CONFLICT
 * still makes it a replay, after a transient reservation.)
 */
export function createKeyedGate() {
  interface Waiter {
    keys: string[];
    go: () => void;
  }
  /** Per key: the call holding it (first), then the calls waiting for it, in arrival order. */
  const queues = new Map<string, Waiter[]>();
  const isFirst = (w: Waiter) => w.keys.every((k) => queues.get(k)![0] === w);
  function leave(w: Waiter) {
    for (const k of w.keys) {
      const q = queues.get(k)!;
      q.splice(q.indexOf(w), 1);
      if (q.length === 0) queues.delete(k);
    }
    // Only the queues w left have a new first call: wake those that are now first everywhere.
    for (const k of w.keys) {
      const next = queues.get(k)?.[0];
      if (next && isFirst(next)) next.go();
    }
  }
  return {
    async run<T>(keys: readonly string[], fn: () => Promise<T>, waitMs?: number): Promise<T> {
      const w: Waiter = { keys: [...new Set(keys)], go: () => {} };
      const ready = new Promise<void>((r) => (w.go = r));
      for (const k of w.keys) {
        const q = queues.get(k);
        if (q) q.push(w);
        else queues.set(k, [w]);
      }
      if (!isFirst(w)) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const bound = waitMs === undefined ? null : new Promise<"late">((r) => (timer = setTimeout(() => r("late"), waitMs)));
        const got = await (bound ? Promise.race([ready, bound]) : ready);
        clearTimeout(timer);
        if (got === "late") {
          leave(w);
          throw new GateWaitTimeout(waitMs!);
        }
      }
      try {
        return await fn();
      } finally {
        leave(w);
      }
    },
    /** Some call holds or waits for `key` now: a new call with it would wait. */
    busy: (key: string) => queues.has(key),
    /** Keys held or waited for now (tests). */
    size: () => queues.size,
  };
}
