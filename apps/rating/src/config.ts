import { POOL_MAX_DEFAULT, POOL_MAX_LIMIT } from "@nanobill/db";
import { envBool, envEnum, envFraction, envInt, envRetired, envString, envUrl, LOG_LEVELS, type Env, type LogLevel } from "@nanobill/service-kit";
import { ConfigError } from "@nanobill/service-kit";
import {
  CONSUMER_BATCH_EVENTS_MAX,
  CONSUMER_LEASE_HEARTBEAT_MS,
  CONSUMER_LEASE_HEARTBEAT_MS_MIN,
  CONSUMER_LEASE_TTL_MS,
  CONSUMER_LEASE_TTL_MS_MAX,
  CONSUMER_LEASE_TTL_MS_MIN,
  CONSUMER_OWNER_CHARS_MAX,
  CONSUMER_PARTITIONS_MAX,
  CONSUMER_WAIT_MS,
  CONTEXT_CACHE_TTL_MS,
} from "./limits.js";

/** RatingConfig: the service's tunables (limits.ts holds the hard caps). */
export interface RatingConfig {
  /** Run the metering consumer (start()). */
  consumerEnabled: boolean;
  /** Events per ReadEvents call (1..CONSUMER_BATCH_EVENTS_MAX). */
  consumerBatchEvents: number;
  /** Long-poll wait of ReadEvents. */
  consumerWaitMs: number;
  /**
   * Consumer loops per process, each reading one customer partition of metering's feed with its own
   * cursor (1 = one loop over the whole feed). Loops of different partitions rate disjoint
   * customers; two loops that meet on a customer (another replica, a change of partitioning)
   * serialize on its advisory lock and skip what the other rated.
   */
  consumerPartitions: number;
  /**
   * Split the partitions between the running processes through leases in PostgreSQL
   * (PartitionLeaseManager): any number of replicas may run the consumer. Off: this process runs
   * every partition's loop (only one consumer process may then run).
   */
  consumerLeases: boolean;
  /** Lease / membership lifetime without a heartbeat: a crashed process's partitions move after it. */
  consumerLeaseTtlMs: number;
  /** Heartbeat period (<= consumerLeaseTtlMs / 3). */
  consumerLeaseHeartbeatMs: number;
  /** This process's member id ("" = host-pid-random). */
  consumerOwner: string;
  /** How long catalog data (customers, plans, cost rates) is cached by the consumer. */
  cacheTtlMs: number;
  /** Check usage charge meters against metering's GetMeter when plans are written. */
  validateMeters: boolean;
  /**
   * Webhook endpoints may point to non-public addresses (loopback, private, link-local):
   * CreateWebhookEndpoint and the dispatcher's connect-time check stop refusing them
   * (NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS; local development and tests only).
   */
  webhooksAllowPrivateNetworks: boolean;
}

export const RATING_CONFIG_DEFAULT: RatingConfig = {
  consumerEnabled: true,
  consumerBatchEvents: CONSUMER_BATCH_EVENTS_MAX,
  consumerWaitMs: CONSUMER_WAIT_MS,
  consumerPartitions: 1,
  consumerLeases: true,
  consumerLeaseTtlMs: CONSUMER_LEASE_TTL_MS,
  consumerLeaseHeartbeatMs: CONSUMER_LEASE_HEARTBEAT_MS,
  consumerOwner: "",
  cacheTtlMs: CONTEXT_CACHE_TTL_MS,
  validateMeters: true,
  webhooksAllowPrivateNetworks: false,
};

/** ratingConfigFromEnv: RATING_* variables (and the shared NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS); a bad value throws ConfigError naming it. */
export function ratingConfigFromEnv(env: Env): RatingConfig {
  const consumerLeaseTtlMs = envInt(env, "RATING_CONSUMER_LEASE_TTL_MS", CONSUMER_LEASE_TTL_MS, { min: CONSUMER_LEASE_TTL_MS_MIN, max: CONSUMER_LEASE_TTL_MS_MAX });
  const consumerLeaseHeartbeatMs = envInt(env, "RATING_CONSUMER_LEASE_HEARTBEAT_MS", Math.min(CONSUMER_LEASE_HEARTBEAT_MS, Math.floor(consumerLeaseTtlMs / 3)), { min: CONSUMER_LEASE_HEARTBEAT_MS_MIN, max: CONSUMER_LEASE_TTL_MS_MAX });
  if (consumerLeaseHeartbeatMs * 3 > consumerLeaseTtlMs) {
    throw new ConfigError("RATING_CONSUMER_LEASE_HEARTBEAT_MS", `must be at most a third of RATING_CONSUMER_LEASE_TTL_MS (${consumerLeaseTtlMs}), got ${consumerLeaseHeartbeatMs}`);
  }
  const consumerOwner = envString(env, "RATING_CONSUMER_OWNER", "");
  if (consumerOwner.length > CONSUMER_OWNER_CHARS_MAX) throw new ConfigError("RATING_CONSUMER_OWNER", `must be at most ${CONSUMER_OWNER_CHARS_MAX} characters, got ${consumerOwner.length}`);
  return {
    consumerLeases: envBool(env, "RATING_CONSUMER_LEASES", true),
    consumerLeaseTtlMs,
    consumerLeaseHeartbeatMs,
    consumerOwner,
    consumerEnabled: envBool(env, "RATING_CONSUMER_ENABLED", true),
    consumerBatchEvents: envInt(env, "RATING_CONSUMER_BATCH_EVENTS", RATING_CONFIG_DEFAULT.consumerBatchEvents, { min: 1, max: CONSUMER_BATCH_EVENTS_MAX }),
    consumerWaitMs: envInt(env, "RATING_CONSUMER_WAIT_MS", CONSUMER_WAIT_MS, { min: 0, max: 30_000 }),
    consumerPartitions: envInt(env, "RATING_CONSUMER_PARTITIONS", RATING_CONFIG_DEFAULT.consumerPartitions, { min: 1, max: CONSUMER_PARTITIONS_MAX }),
    cacheTtlMs: envInt(env, "RATING_CACHE_TTL_MS", CONTEXT_CACHE_TTL_MS, { min: 0, max: 600_000 }),
    validateMeters: envBool(env, "RATING_VALIDATE_METERS", true),
    webhooksAllowPrivateNetworks: envBool(env, "NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", false),
  };
}

/** The process settings of the standalone server (main.ts); variables as in docs/deployment.md ("Environment"). */
export interface RatingProcessConfig {
  /** RATING_PORT (0 = any free port). */
  port: number;
  /** RATING_HOST. */
  host: string;
  /** DATABASE_URL; undefined = embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  /** RATING_DATA_DIR. */
  dataDir: string;
  /** RATING_DB_SCHEMA. */
  schema: string;
  /** RATING_DB_POOL_MAX. */
  poolMax: number;
  /** NANOBILL_API_KEYS (required; the authenticator parses it). */
  apiKeys: string;
  /** NANOBILL_LOG_LEVEL. */
  logLevel: LogLevel;
  /** NANOBILL_MIGRATE_ON_START (default true): false = only check at start that the schema is current (a separate job migrates). */
  migrateOnStart: boolean;
  /** OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: full OTLP/HTTP traces URL; undefined = no export. */
  otlpTracesEndpoint: string | undefined;
  /** OTEL_TRACES_SAMPLER_ARG: fraction of new root traces sampled, 0..1 (default 1; children follow their parent). */
  tracesSampleRatio: number;
  /** METERING_URL / CREDIT_WALLET_URL: base URLs of the services rating calls. */
  meteringUrl: string;
  walletUrl: string;
  /** NANOBILL_INTERNAL_API_KEY: the internal-scope key rating calls them with. */
  internalApiKey: string;
  rating: RatingConfig;
}

/** Names this service read before the one scheme (docs/deployment.md): set, they are a ConfigError. */
export const RATING_RETIRED_VARIABLES: Readonly<Record<string, string>> = {
  NANOBILL_INTERNAL_KEY: "NANOBILL_INTERNAL_API_KEY",
};

export function loadConfig(env: Env): RatingProcessConfig {
  envRetired(env, RATING_RETIRED_VARIABLES);
  return {
    port: envInt(env, "RATING_PORT", 7002, { min: 0, max: 65_535 }),
    host: envString(env, "RATING_HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "RATING_DATA_DIR", "./.data/rating"),
    schema: envString(env, "RATING_DB_SCHEMA", "rating"),
    poolMax: envInt(env, "RATING_DB_POOL_MAX", POOL_MAX_DEFAULT, { min: 2, max: POOL_MAX_LIMIT }),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    logLevel: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info"),
    migrateOnStart: envBool(env, "NANOBILL_MIGRATE_ON_START", true),
    otlpTracesEndpoint: envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    tracesSampleRatio: envFraction(env, "OTEL_TRACES_SAMPLER_ARG", 1),
    meteringUrl: envUrl(env, "METERING_URL") ?? "http://127.0.0.1:7001",
    walletUrl: envUrl(env, "CREDIT_WALLET_URL") ?? "http://127.0.0.1:7004",
    internalApiKey: envString(env, "NANOBILL_INTERNAL_API_KEY"),
    rating: ratingConfigFromEnv(env),
  };
}
