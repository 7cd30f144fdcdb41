// Group commit: concurrent IngestEvents calls are written together in one transaction by a
// single writer, so the cost of a commit (WAL flush) is shared. A request's promise resolves
// only after its transaction committed (acknowledged = durable) and rejects when it did not.
import type { IngestItem, ItemOutcome, MeteringStore } from "./store.js";

export class IngestQueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`ingest queue is full (${limit} events waiting)`);
    this.name = "IngestQueueFullError";
  }
}

export class WriterClosedError extends Error {
  readonly code = "unavailable";
  constructor() {
    super("the ingest writer is shutting down");
    this.name = "WriterClosedError";
  }
}

interface Pending {
  items: IngestItem[];
  resolve(o: ItemOutcome[]): void;
  reject(e: unknown): void;
}

export interface GroupCommitter {
  /** Stores items (one request) in the next group; outcomes in item order after commit. */
  submit(items: IngestItem[]): Promise<ItemOutcome[]>;
  /** Events waiting or being written. */
  readonly queuedEvents: number;
  /** Stops taking new requests and waits for the queue to drain. */
  close(): Promise<void>;
}

export interface GroupCommitOptions {
  commitEventsMax: number;
  commitRequestsMax: number;
  queueEventsMax: number;
  nowUs: () => bigint;
  /** Called after each commit that stored at least one event, with its highest sequence (wakes ReadEvents waiters and the aggregator). */
  onCommit?: (maxSequence: bigint) => void;
  /** Awaited before each transaction (back-pressure: waits while usage aggregation is too far behind). */
  beforeWrite?: () => Promise<void>;
}

export function createGroupCommitter(store: MeteringStore, opts: GroupCommitOptions): GroupCommitter {
  const queue: Pending[] = [];
  let queuedEvents = 0;
  let running: Promise<void> | undefined;
  let closed = false;

  async function write(group: Pending[], waited = false): Promise<void> {
    // Back-pressure first, once per group: a failure here (aggregation too far behind) is the
    // same for every request of the group, so the whole group gets it (no per-request retry).
    if (!waited && opts.beforeWrite) {
      try {
        await opts.beforeWrite();
      } catch (e) {
        for (const p of group) p.reject(e);
        return;
      }
    }
    const all = group.flatMap((p) => p.items);
    try {
      const outcomes = await store.ingest(all, opts.nowUs());
      let at = 0;
      for (const p of group) {
        p.resolve(outcomes.slice(at, at + p.items.length));
        at += p.items.length;
      }
      let maxSequence = -1n;
      for (const o of outcomes) if (o.status === "accepted" && o.sequence > maxSequence) maxSequence = o.sequence;
      if (maxSequence >= 0n) opts.onCommit?.(maxSequence);
    } catch (e) {
      if (group.length === 1) {
        group[0]!.reject(e);
        return;
      }
      // Isolate: one request must not fail the others of its group. Each is retried alone.
      for (const p of group) await write([p], true);
    }
  }

  async function loop(): Promise<void> {
    while (queue.length > 0) {
      const group: Pending[] = [];
      let events = 0;
      while (queue.length > 0 && group.length < opts.commitRequestsMax) {
        const next = queue[0]!;
        if (group.length > 0 && events + next.items.length > opts.commitEventsMax) break;
        queue.shift();
        group.push(next);
        events += next.items.length;
      }
      try {
        await write(group);
      } finally {
        queuedEvents -= events;
      }
    }
    running = undefined;
  }

  return {
    get queuedEvents() {
      return queuedEvents;
    },
    submit(items) {
      if (items.length === 0) return Promise.resolve([]);
      if (closed) return Promise.reject(new WriterClosedError());
      if (queuedEvents + items.length > opts.queueEventsMax) return Promise.reject(new IngestQueueFullError(opts.queueEventsMax));
      queuedEvents += items.length;
      const p = new Promise<ItemOutcome[]>((resolve, reject) => queue.push({ items, resolve, reject }));
      running ??= loop();
      return p;
    },
    async close() {
      closed = true;
      while (running) await running;
    },
  };
}

/** Wakes long-polling readers when a commit lands (in-process; readers also poll as a fallback). */
export interface CommitSignal {
  notify(): void;
  /** Resolves on the next notify, after ms, or when signal aborts. */
  wait(ms: number, signal?: AbortSignal): Promise<void>;
  readonly waiters: number;
}

export function createCommitSignal(): CommitSignal {
  const waiters = new Set<() => void>();
  return {
    get waiters() {
      return waiters.size;
    },
    notify() {
      const all = [...waiters];
      waiters.clear();
      for (const w of all) w();
    },
    wait(ms, signal) {
      return new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          if (timer) clearTimeout(timer);
          waiters.delete(done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        if (signal?.aborted) return resolve();
        timer = setTimeout(done, ms);
        waiters.add(done);
        signal?.addEventListener("abort", done, { once: true });
      });
    },
  };
}
