// The usage aggregator: moves the usage buckets forward along the event sequence, exactly once
// (store.aggregateStep advances the cursor in the transaction that writes the buckets). Ingestion
// only appends events; buckets follow within one aggregation round. Queries call catchUp() first,
// so an answer always includes every event committed before the query began.
import type { Logger } from "@nanobill/service-kit";
import { singleFlight } from "./single-flight.js";
import type { MeteringStore } from "./store.js";

export class AggregationBehindError extends Error {
  readonly code = "unavailable";
  constructor(readonly waitedMs: number) {
    super(`usage aggregation did not catch up within ${waitedMs} ms`);
    this.name = "AggregationBehindError";
  }
}

export interface AggregatorOptions {
  /** Most events per aggregation transaction. */
  chunkEvents: number;
  /** Most ms a caller of catchUp() waits. */
  catchUpMsMax: number;
  logger: Logger;
}

export interface Aggregator {
  /** Starts a round unless one runs (after each commit, on a timer for other replicas' commits). */
  kick(): void;
  /** Runs rounds until the cursor has passed every event committed before the call. */
  catchUp(): Promise<void>;
  /** Notes a commit of this process (its highest sequence), for lag(). */
  committed(sequence: bigint): void;
  /** Events committed by this process that are not in the buckets yet (a lower bound of the lag). */
  lag(): bigint;
  /** Waits for the running round. */
  close(): Promise<void>;
}

export function createAggregator(store: MeteringStore, opts: AggregatorOptions): Aggregator {
  let through = -1n;
  let lastCommitted = 0n;
  const flight = singleFlight(async () => {
    for (;;) {
      const step = await store.aggregateStep(opts.chunkEvents);
      through = step.through;
      for (const f of step.failed ?? [])
        opts.logger.error("meter set aside: computing its usage failed (QueryUsage on it answers FailedPrecondition; other meters continue)", {
          tenant: f.tenant,
          meter_id: f.meterId,
          err: f.error,
        });
      if (step.events < opts.chunkEvents) break;
    }
  });
  const run = () => flight.run();

  return {
    kick() {
      run().catch((e) => opts.logger.error("usage aggregation failed", { err: e }));
    },
    async catchUp() {
      const target = await store.highWaterSequence();
      const deadline = Date.now() + opts.catchUpMsMax;
      while (through < target) {
        if (Date.now() > deadline) throw new AggregationBehindError(opts.catchUpMsMax);
        await run();
      }
    },
    committed(sequence) {
      if (sequence > lastCommitted) lastCommitted = sequence;
    },
    lag() {
      return through < 0n ? lastCommitted : lastCommitted > through ? lastCommitted - through : 0n;
    },
    async close() {
      while (flight.running) await flight.running.catch(() => {});
    },
  };
}

/** Runs aggregation steps until the cursor reaches the end (tests, tools). */
export async function aggregateAll(store: MeteringStore, chunkEvents: number): Promise<void> {
  while ((await store.aggregateStep(chunkEvents)).events >= chunkEvents) {}
}
