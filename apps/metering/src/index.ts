// @nanobill/metering: the metering service as a library (see docs/platform-apis.md).
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Db } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { METERING_CONFIG_DEFAULT, type MeteringConfig } from "./config.js";
import { AGGREGATE_CATCH_UP_MS_MAX, AGGREGATE_CHUNK_EVENTS, AGGREGATION_LAG_EVENTS_MAX, COMMIT_REQUESTS_MAX, LISTEN_RETRY_MS } from "./limits.js";
import { createAggregator } from "./store/aggregator.js";
import { singleFlight } from "./store/single-flight.js";
import { createMeteringRoutes } from "./server.js";
import { genAiMappingOf, ingestInputs, type HandlerDeps } from "./service.js";
import type { GenAiMapping } from "./domain/genai.js";
import { createCommitSignal, createGroupCommitter } from "./store/group-commit.js";
import { createMeteringStore, eventsChannel, type MeteringStore } from "./store/store.js";
import type { EventInput } from "./domain/event.js";
import type { IngestResult } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";

export { METERING_CONFIG_DEFAULT, meteringConfigFromEnv, type MeteringConfig } from "./config.js";
export * as limits from "./limits.js";
export { METERING_SERVER_LIMITS } from "./limits.js";
export { createOtlpHandler, startOtlpServer, parseOtlpJson } from "./otlp-http.js";
export { GENAI_MAPPING_DEFAULT, spansToEvents, type GenAiMapping } from "./domain/genai.js";

/** Absolute path of the SQL migrations (apply with migrate(db, migrationsDir) before start). */
export const migrationsDir: string = fileURLToPath(new URL("./store/migrations", import.meta.url));

export interface MeteringDeps {
  db: Db;
  logger: Logger;
  clock: Clock;
  clients?: Record<string, never>;
  config?: Partial<MeteringConfig>;
}

export interface MeteringServiceHandle {
  routes(router: ConnectRouter): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Runs pending meter backfills to completion (tests, tools). */
  runBackfills(): Promise<void>;
  /** Brings the usage buckets up to every committed event (tests, tools; QueryUsage does it itself). */
  catchUpUsage(): Promise<void>;
  /** Ingests already-decoded events for a tenant (the OTLP receiver uses this). */
  ingest(tenant: string, events: EventInput[]): Promise<IngestResult[]>;
  /** The tenant's GenAI span mapping (the default when none is set). */
  genAiMapping(tenant: string): Promise<GenAiMapping>;
  readonly store: MeteringStore;
}

export async function createMeteringService(deps: MeteringDeps): Promise<MeteringServiceHandle> {
  const config: MeteringConfig = { ...METERING_CONFIG_DEFAULT, ...(deps.config ?? {}) };
  const store = createMeteringStore(deps.db);
  const signal = createCommitSignal();
  const aggregator = createAggregator(store, { chunkEvents: AGGREGATE_CHUNK_EVENTS, catchUpMsMax: AGGREGATE_CATCH_UP_MS_MAX, logger: deps.logger });
  const committer = createGroupCommitter(store, {
    commitEventsMax: config.commitEventsMax,
    commitRequestsMax: COMMIT_REQUESTS_MAX,
    queueEventsMax: config.queueEventsMax,
    nowUs: () => BigInt(deps.clock.now().getTime()) * 1000n,
    onCommit: (maxSequence) => {
      signal.notify();
      aggregator.committed(maxSequence);
      // Aggregation runs every backfillIntervalMs (1 s) or once a full chunk waits: bigger steps
      // merge more events per bucket row (QueryUsage catches up by itself when it needs to).
      if (aggregator.lag() >= BigInt(AGGREGATE_CHUNK_EVENTS)) aggregator.kick();
    },
    beforeWrite: async () => {
      if (aggregator.lag() > BigInt(AGGREGATION_LAG_EVENTS_MAX)) await aggregator.catchUp();
    },
  });

  const backfills = singleFlight(async () => {
    for (;;) {
      const pending = await store.pendingBackfills(100);
      if (pending.length === 0) break;
      for (const p of pending) while (!(await store.backfillStep(p.tenant, p.meterId))) {}
    }
  });
  const runBackfills = () => backfills.run();
  const kickBackfill = () => {
    runBackfills().catch((e) => deps.logger.error("meter backfill failed", { err: e }));
  };

  let stopping = false;
  const handlerDeps: HandlerDeps = { store, committer, aggregator, signal, clock: deps.clock, logger: deps.logger, config, kickBackfill, isStopping: () => stopping };
  const routes = createMeteringRoutes(handlerDeps);
  let timer: NodeJS.Timeout | undefined;
  let unlisten: (() => Promise<void>) | undefined;
  let listenRetry: NodeJS.Timeout | undefined;
  // LISTEN for other replicas' commits; when it cannot start (the database is briefly away at
  // start-up), ReadEvents polls and the LISTEN is retried in the background until it works.
  const listenForReplicas = async (): Promise<void> => {
    if (unlisten || stopping) return;
    try {
      unlisten = await deps.db.listen(eventsChannel(deps.db.schema), () => signal.notify());
    } catch (e) {
      deps.logger.warn("cannot LISTEN for other replicas' events yet; ReadEvents polls every readPollIntervalMs, retrying", { err: String(e), retry_ms: LISTEN_RETRY_MS });
      listenRetry = setTimeout(() => void listenForReplicas(), LISTEN_RETRY_MS);
      listenRetry.unref();
    }
  };

  return {
    store,
    routes,
    runBackfills,
    catchUpUsage: () => aggregator.catchUp(),
    ingest: (tenant, events) => ingestInputs(handlerDeps, tenant, events),
    genAiMapping: (tenant) => genAiMappingOf(store, tenant),
    async start() {
      // Events committed by other replicas wake this process's ReadEvents long polls at once
      // (readPollIntervalMs stays as the fallback when a notification is lost).
      await listenForReplicas();
      // Events committed before this process started (another replica, a crash) are aggregated now.
      aggregator.kick();
      if (timer || config.backfillIntervalMs === 0) return;
      kickBackfill();
      timer = setInterval(() => {
        kickBackfill();
        aggregator.kick();
      }, config.backfillIntervalMs);
      timer.unref();
    },
    async stop() {
      stopping = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      clearTimeout(listenRetry);
      await unlisten?.();
      unlisten = undefined;
      await committer.close();
      await aggregator.close();
      signal.notify();
      while (backfills.running) await backfills.running.catch(() => {});
    },
  };
}
