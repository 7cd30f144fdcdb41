// The events a metering store committed, kept for its aggregator until the usage cursor passes
// them: aggregateStep takes the run of them that starts right after the cursor (sequences
// cursor+1, cursor+2, ...) instead of reading those rows back (measured: ~100 ms of the statement
// per 20,000-event step, PostgreSQL's JSONB output, plus the row and JSON parsing in the server,
// ~6% of its CPU at 1,000-event batches). Exact: a sequence belongs to one row only (primary
// key), an event is remembered only after its COMMIT returned, and rows never change; any other
// event (another replica's, one committed before a restart, one past a gap left by a rollback,
// one evicted beyond the bound) is read from the table as before.
//
// Each block carries the database's epoch (its server's start time, read in the committing
// transaction): a database that restarted or failed over since (an asynchronous replica
// promoted, a restore) may have lost acknowledged commits and reissued their sequences, so a block
// of another epoch is dropped and its sequences are read from the table like any other.
import type { MeteredEvent } from "../domain/usage.js";

interface Block {
  epoch: string;
  events: MeteredEvent[];
}

export class RecentEvents {
  /** Blocks of consecutive sequences (one per commit: first, first + 1, ...), in sequence order. */
  #blocks: Block[] = [];
  #count = 0;

  constructor(private readonly max: number) {}

  /** Events held. */
  get size(): number {
    return this.#count;
  }

  /** Remembers one commit's events (consecutive sequences), committed under `epoch`. */
  remember(events: MeteredEvent[], epoch: string): void {
    if (events.length === 0) return;
    // Kept in sequence order (commits resolve in that order in practice; this makes it certain).
    let at = this.#blocks.length;
    while (at > 0 && this.#blocks[at - 1]!.events[0]!.sequence > events[0]!.sequence) at--;
    this.#blocks.splice(at, 0, { epoch, events });
    this.#count += events.length;
    if (this.#count > this.max) {
      let drop = 0;
      while (this.#count > this.max) this.#count -= this.#blocks[drop++]!.events.length;
      this.#blocks = this.#blocks.slice(drop);
    }
  }

  /** Forgets the blocks wholly at or before the usage cursor (already in the buckets). */
  forgetThrough(through: bigint): void {
    this.#keep((b) => b.events[b.events.length - 1]!.sequence > through);
  }

  /**
   * The remembered events with sequences after+1, after+2, ... (at most max; none when after+1 is
   * not remembered), from blocks of `epoch` only: blocks of another epoch are dropped first.
   */
  runAfter(after: bigint, max: number, epoch: string): MeteredEvent[] {
    this.#keep((b) => b.epoch === epoch);
    const run: MeteredEvent[] = [];
    let next = after + 1n;
    // One pass over the blocks in sequence order (single-event commits make many blocks).
    const blocks = this.#blocks;
    for (let i = blocks.findIndex((b) => b.events[b.events.length - 1]!.sequence >= next); i >= 0 && i < blocks.length && run.length < max; i++) {
      const b = blocks[i]!.events;
      const first = b[0]!.sequence;
      if (next < first) break; // a gap (another writer's or a rollback's): the rest is read
      const from = Number(next - first);
      const take = Math.min(b.length - from, max - run.length);
      for (let k = from; k < from + take; k++) run.push(b[k]!);
      next += BigInt(take);
    }
    return run;
  }

  #keep(f: (b: Block) => boolean): void {
    const kept = this.#blocks.filter(f);
    if (kept.length === this.#blocks.length) return;
    this.#blocks = kept;
    this.#count = kept.reduce((n, b) => n + b.events.length, 0);
  }
}
