// @nanobill/rating: the rating service as a library (see docs/platform-apis.md).
import { fileURLToPath } from "node:url";
import type { Client, ConnectRouter } from "@connectrpc/connect";
import type { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import type { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { Db } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { CatalogCache } from "./catalog-cache.js";
import { RATING_CONFIG_DEFAULT, type RatingConfig } from "./config.js";
import { partitionCursorName, RatingConsumer } from "./consumer.js";
import { createRatingRoutes } from "./server.js";
import { defaultLeaseOwner, PartitionLeaseManager } from "./partition-leases.js";
import { CatalogStore } from "./store/catalog-store.js";
import { LeaseStore } from "./store/lease-store.js";
import { RatedStore } from "./store/rated-store.js";
import type { ViewClients } from "./wire.js";
import { createWebhookDispatcher, type DispatchStats } from "@nanobill/webhooks";

export { RATING_CONFIG_DEFAULT, ratingConfigFromEnv, type RatingConfig } from "./config.js";
export { createViewClients, type ViewClients } from "./wire.js";
export * as limits from "./limits.js";
export { RATING_SERVER_LIMITS } from "./limits.js";

/** Absolute path of the SQL migrations (apply with migrate(db, migrationsDir) before start). */
export const migrationsDir: string = fileURLToPath(new URL("./store/migrations", import.meta.url));

export interface RatingDeps {
  db: Db;
  logger: Logger;
  clock: Clock;
  /** Connect clients (internal key) of the services rating calls. */
  clients: {
    metering: Client<typeof MeteringService>;
    wallet: Client<typeof CreditWalletService>;
    /**
     * The consumer's ReadEvents and Consume through hand-written codecs (createViewClients over
     * the same two transports; wire.ts). Absent: the consumer uses `metering` and `wallet`.
     */
    views?: ViewClients;
  };
  config?: Partial<RatingConfig>;
  /** Shorthand for config.consumerWaitMs (the platform passes it). */
  consumerWaitMs?: number;
}

export interface RatingServiceHandle {
  routes(router: ConnectRouter): void;
  /** Starts the metering consumer (idempotent). */
  start(): Promise<void>;
  /** Stops the consumer and waits for the batch in flight. */
  stop(): Promise<void>;
  /** The first consumer (partition 0; the only one unless consumerPartitions > 1). */
  readonly consumer: RatingConsumer;
  /** One unleased consumer per partition of metering's feed (pollOnce, tools; the loops when consumerLeases is off). */
  readonly consumers: readonly RatingConsumer[];
  /** With consumerLeases: the lease manager start() runs (its loops are its own consumers). */
  readonly leases: PartitionLeaseManager | undefined;
  readonly catalog: CatalogStore;
  readonly rated: RatedStore;
  /** The webhook dispatcher of guardrail alerts (started by start(); tests run rounds). */
  readonly webhooks: { runOnce(): Promise<DispatchStats> };
}

export async function createRatingService(deps: RatingDeps): Promise<RatingServiceHandle> {
  const config: RatingConfig = { ...RATING_CONFIG_DEFAULT, ...(deps.config ?? {}) };
  if (deps.consumerWaitMs !== undefined) config.consumerWaitMs = deps.consumerWaitMs;
  const catalog = new CatalogStore(deps.db);
  const rated = new RatedStore(deps.db);
  const cache = new CatalogCache(catalog, deps.clock, config.cacheTtlMs, deps.clients.wallet, deps.logger);
  const leaseStore = new LeaseStore(deps.db);
  const consumerOf = (k: number, fence?: { owner: string; epoch: bigint }) =>
    new RatingConsumer({
      db: deps.db,
      rated,
      leases: leaseStore,
      cache,
      metering: deps.clients.metering,
      wallet: deps.clients.wallet,
      ...(deps.clients.views !== undefined ? { views: deps.clients.views } : {}),
      logger: deps.logger,
      clock: deps.clock,
      options: {
        batchEventsMax: config.consumerBatchEvents,
        waitMs: config.consumerWaitMs,
        partitionCount: config.consumerPartitions,
        partition: k,
        cursorName: partitionCursorName(config.consumerPartitions, k),
        ...(fence ? { fence } : {}),
      },
    });
  const consumers = Array.from({ length: config.consumerPartitions }, (_, k) => consumerOf(k));
  const leases = config.consumerLeases
    ? new PartitionLeaseManager(
        leaseStore,
        {
          partitionCount: config.consumerPartitions,
          owner: config.consumerOwner === "" ? defaultLeaseOwner() : config.consumerOwner,
          ttlMs: config.consumerLeaseTtlMs,
          heartbeatMs: Math.max(1, Math.min(config.consumerLeaseHeartbeatMs, Math.floor(config.consumerLeaseTtlMs / 3))),
        },
        consumerOf,
        deps.logger,
      )
    : undefined;
  const consumer = consumers[0]!;
  // Guardrail alerts are queued for webhook endpoints by a trigger (migration 0005); every rating
  // process sends them (claims are SKIP LOCKED, so replicas share the work).
  // Egress: non-public addresses are refused unless config.webhooksAllowPrivateNetworks (the RPCs
  // get the same switch through config).
  const webhooks = createWebhookDispatcher({ db: deps.db, clock: deps.clock, logger: deps.logger, allowPrivateNetworks: config.webhooksAllowPrivateNetworks });
  const routes = createRatingRoutes({ catalog, rated, cache, clock: deps.clock, logger: deps.logger, config, metering: deps.clients.metering });
  return {
    routes,
    consumer,
    consumers,
    leases,
    catalog,
    rated,
    webhooks,
    async start() {
      webhooks.start();
      if (!config.consumerEnabled) return;
      if (leases !== undefined) await leases.start();
      else for (const c of consumers) c.start();
    },
    async stop() {
      await Promise.all([leases?.stop(), ...consumers.map((c) => c.stop()), webhooks.stop()]);
    },
  };
}
