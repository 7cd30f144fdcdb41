/**
 * Group commit: concurrent write requests are queued and applied by one writer, many requests per
 * database transaction. Requests arriving while a commit runs form the next commit; a request is
 * never split across commits. The queue is bounded (LedgerBusyError beyond).
 */
import { LedgerBusyError, LedgerClosedError } from "./types.js";

/**
 * A request of a commit that failed on its own while the others of the commit succeeded (apply
 * retried them one by one): its caller alone gets `error`.
 */
export class JobFailed {
  constructor(readonly error: unknown) {}
}

interface Queued<P, R> {
  payload: P;
  size: number;
  resolve(r: R): void;
  reject(e: unknown): void;
}

export interface GroupCommitterOptions {
  /** Most items waiting (not yet in a commit). */
  queueItemsMax: number;
  /** Most items per commit (a single larger request still goes alone). */
  itemsPerCommitMax: number;
}

export class GroupCommitter<P, R> {
  private queue: Queued<P, R>[] = [];
  private queuedItems = 0;
  private scheduled = false;
  private draining: Promise<void> | null = null;
  private closed = false;

  constructor(
    /** One result per payload, or JobFailed for a payload that failed alone; throws when the whole commit failed. */
    private readonly apply: (payloads: P[]) => Promise<(R | JobFailed)[]>,
    private readonly opts: GroupCommitterOptions,
  ) {}

  /** Queues one request; resolves with its result once its commit is durable. */
  submit(payload: P, size: number): Promise<R> {
    if (this.closed) return Promise.reject(new LedgerClosedError());
    if (this.queuedItems + size > this.opts.queueItemsMax && this.queue.length > 0) {
      return Promise.reject(new LedgerBusyError(this.queuedItems, this.opts.queueItemsMax));
    }
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ payload, size, resolve, reject });
      this.queuedItems += size;
      this.schedule();
    });
  }

  /** Items waiting for a commit. */
  get pendingItems(): number {
    return this.queuedItems;
  }

  private schedule(): void {
    if (this.scheduled || this.draining) return;
    this.scheduled = true;
    // Let every request of this tick join the first commit.
    setImmediate(() => {
      this.scheduled = false;
      this.draining = this.drain().finally(() => {
        this.draining = null;
        if (this.queue.length > 0) this.schedule();
      });
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch: Queued<P, R>[] = [];
      let items = 0;
      while (this.queue.length > 0) {
        const next = this.queue[0]!;
        if (batch.length > 0 && items + next.size > this.opts.itemsPerCommitMax) break;
        batch.push(next);
        items += next.size;
        this.queue.shift();
      }
      this.queuedItems -= items;
      try {
        const results = await this.apply(batch.map((q) => q.payload));
        for (let i = 0; i < batch.length; i++) {
          const r = results[i]!;
          if (r instanceof JobFailed) batch[i]!.reject(r.error);
          else batch[i]!.resolve(r);
        }
      } catch (e) {
        for (const q of batch) q.reject(e);
      }
    }
  }

  /** Refuses new requests and waits until the queued ones are committed (or failed). */
  async close(): Promise<void> {
    this.closed = true;
    while (this.scheduled || this.draining || this.queue.length > 0) {
      if (this.draining) await this.draining;
      else await new Promise((r) => setImmediate(r));
    }
  }
}
