/** Environment -> typed config of the credit wallet; every limit explicit and validated. */
import { POOL_MAX_DEFAULT, POOL_MAX_LIMIT } from "@nanobill/db";
import { type Env, type LogLevel, LOG_LEVELS, envBool, envEnum, envFraction, envInt, envRetired, envString, envUrl } from "@nanobill/service-kit";
import { BACKGROUND_INTERVAL_MS, EXPIRY_GRACE_MS_DEFAULT, EXPIRY_NOTICE_MS_DEFAULT } from "./limits.js";

export interface CreditWalletConfig {
  /** redis:// URL of the real-time store; undefined = the in-process store (one process only). */
  redisUrl: string | undefined;
  /** redisUrl is one seed node of a Redis Cluster (CREDIT_WALLET_REDIS_CLUSTER), not a standalone server. */
  redisCluster: boolean;
  /** Prefix of every Redis key of this deployment. */
  redisPrefix: string;
  /** Drop the real-time state at start so it is rebuilt from PostgreSQL. */
  rebuildOnStart: boolean;
  /** credits_expiring alerts are raised this long before expiry. */
  expiryNoticeMs: number;
  /** Grace after expiry before the remainder goes to breakage. */
  expiryGraceMs: number;
  /** Background loop period (ledger outbox retry, hold and grant expiry); 0 disables it. */
  backgroundIntervalMs: number;
  /**
   * Webhook endpoints may point to non-public addresses (loopback, private, link-local):
   * CreateWebhookEndpoint and the dispatcher's connect-time check stop refusing them
   * (NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS; local development and tests only).
   */
  webhooksAllowPrivateNetworks: boolean;
}

export const CREDIT_WALLET_CONFIG_DEFAULT: CreditWalletConfig = {
  redisUrl: undefined,
  redisCluster: false,
  redisPrefix: "nb:wallet:",
  rebuildOnStart: true,
  expiryNoticeMs: EXPIRY_NOTICE_MS_DEFAULT,
  expiryGraceMs: EXPIRY_GRACE_MS_DEFAULT,
  backgroundIntervalMs: BACKGROUND_INTERVAL_MS,
  webhooksAllowPrivateNetworks: false,
};

/** The process settings of the standalone server (main.ts); variables as in docs/deployment.md ("Environment"). */
export interface CreditWalletProcessConfig {
  /** CREDIT_WALLET_PORT (0 = any free port). */
  port: number;
  /** CREDIT_WALLET_HOST. */
  host: string;
  /** DATABASE_URL; undefined = embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  /** CREDIT_WALLET_DATA_DIR. */
  dataDir: string;
  /** CREDIT_WALLET_DB_SCHEMA. */
  schema: string;
  /** CREDIT_WALLET_DB_POOL_MAX. */
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
  /** LEDGER_URL: base URL of the ledger service. */
  ledgerUrl: string;
  /** NANOBILL_INTERNAL_API_KEY: the internal-scope key this service calls the ledger with. */
  internalApiKey: string;
  wallet: CreditWalletConfig;
}

/** Names this service read before the one scheme (docs/deployment.md): set, they are a ConfigError. */
export const CREDIT_WALLET_RETIRED_VARIABLES: Readonly<Record<string, string>> = {
  LEDGER_API_KEY: "NANOBILL_INTERNAL_API_KEY",
  WALLET_DATA_DIR: "CREDIT_WALLET_DATA_DIR",
  WALLET_DB_SCHEMA: "CREDIT_WALLET_DB_SCHEMA",
  WALLET_DB_POOL_MAX: "CREDIT_WALLET_DB_POOL_MAX",
  WALLET_REDIS_PREFIX: "CREDIT_WALLET_REDIS_PREFIX",
  WALLET_REBUILD_ON_START: "CREDIT_WALLET_REBUILD_ON_START",
  WALLET_EXPIRY_NOTICE_MS: "CREDIT_WALLET_EXPIRY_NOTICE_MS",
  WALLET_EXPIRY_GRACE_MS: "CREDIT_WALLET_EXPIRY_GRACE_MS",
  WALLET_BACKGROUND_INTERVAL_MS: "CREDIT_WALLET_BACKGROUND_INTERVAL_MS",
};

export function loadConfig(env: Env): CreditWalletProcessConfig {
  envRetired(env, CREDIT_WALLET_RETIRED_VARIABLES);
  return {
    port: envInt(env, "CREDIT_WALLET_PORT", 7004, { min: 0, max: 65_535 }),
    host: envString(env, "CREDIT_WALLET_HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "CREDIT_WALLET_DATA_DIR", "./.data/credit-wallet"),
    schema: envString(env, "CREDIT_WALLET_DB_SCHEMA", "credit_wallet"),
    poolMax: envInt(env, "CREDIT_WALLET_DB_POOL_MAX", POOL_MAX_DEFAULT, { min: 2, max: POOL_MAX_LIMIT }),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    logLevel: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info"),
    migrateOnStart: envBool(env, "NANOBILL_MIGRATE_ON_START", true),
    otlpTracesEndpoint: envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    tracesSampleRatio: envFraction(env, "OTEL_TRACES_SAMPLER_ARG", 1),
    ledgerUrl: envUrl(env, "LEDGER_URL") ?? "http://127.0.0.1:7003",
    internalApiKey: envString(env, "NANOBILL_INTERNAL_API_KEY"),
    wallet: {
      redisUrl: envUrl(env, "REDIS_URL"),
      redisCluster: envBool(env, "CREDIT_WALLET_REDIS_CLUSTER", false),
      redisPrefix: envString(env, "CREDIT_WALLET_REDIS_PREFIX", CREDIT_WALLET_CONFIG_DEFAULT.redisPrefix),
      rebuildOnStart: envBool(env, "CREDIT_WALLET_REBUILD_ON_START", true),
      expiryNoticeMs: envInt(env, "CREDIT_WALLET_EXPIRY_NOTICE_MS", EXPIRY_NOTICE_MS_DEFAULT, { min: 0, max: 90 * 86_400_000 }),
      expiryGraceMs: envInt(env, "CREDIT_WALLET_EXPIRY_GRACE_MS", EXPIRY_GRACE_MS_DEFAULT, { min: 0, max: 90 * 86_400_000 }),
      backgroundIntervalMs: envInt(env, "CREDIT_WALLET_BACKGROUND_INTERVAL_MS", BACKGROUND_INTERVAL_MS, { min: 0, max: 3_600_000 }),
      webhooksAllowPrivateNetworks: envBool(env, "NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", false),
    },
  };
}
