/** Environment -> typed LedgerConfig; every limit explicit and validated. */
import { POOL_MAX_DEFAULT, POOL_MAX_LIMIT } from "@nanobill/db";
import { type Env, type LogLevel, LOG_LEVELS, envBool, envEnum, envFraction, envInt, envString, envUrl } from "@nanobill/service-kit";
import {
  COMMIT_ITEMS_PER_TRANSACTION_MAX,
  COMMIT_QUEUE_ITEMS_MAX,
  EXPIRY_SWEEP_INTERVAL_MS,
} from "./limits.js";

export interface LedgerConfig {
  /** How often the expiry sweep runs (ms); 0 disables it. */
  expirySweepIntervalMs: number;
  /** Most items waiting in the group-commit queue. */
  commitQueueItemsMax: number;
  /** Most items per group-commit transaction. */
  commitItemsPerTransactionMax: number;
}

export const LEDGER_CONFIG_DEFAULT: LedgerConfig = {
  expirySweepIntervalMs: EXPIRY_SWEEP_INTERVAL_MS,
  commitQueueItemsMax: COMMIT_QUEUE_ITEMS_MAX,
  commitItemsPerTransactionMax: COMMIT_ITEMS_PER_TRANSACTION_MAX,
};

/** The process settings of the standalone server (main.ts); variables as in docs/deployment.md ("Environment"). */
export interface LedgerProcessConfig {
  /** LEDGER_PORT (0 = any free port). */
  port: number;
  /** LEDGER_HOST. */
  host: string;
  /** DATABASE_URL: postgres:// URL; undefined = embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  /** LEDGER_DATA_DIR. */
  dataDir: string;
  /** LEDGER_DB_SCHEMA. */
  schema: string;
  /** LEDGER_DB_POOL_MAX. */
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
  ledger: LedgerConfig;
}

export function loadConfig(env: Env): LedgerProcessConfig {
  return {
    port: envInt(env, "LEDGER_PORT", 7003, { min: 0, max: 65_535 }),
    host: envString(env, "LEDGER_HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "LEDGER_DATA_DIR", "./.data/ledger"),
    schema: envString(env, "LEDGER_DB_SCHEMA", "ledger"),
    poolMax: envInt(env, "LEDGER_DB_POOL_MAX", POOL_MAX_DEFAULT, { min: 2, max: POOL_MAX_LIMIT }),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    logLevel: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info"),
    migrateOnStart: envBool(env, "NANOBILL_MIGRATE_ON_START", true),
    otlpTracesEndpoint: envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    tracesSampleRatio: envFraction(env, "OTEL_TRACES_SAMPLER_ARG", 1),
    ledger: {
      expirySweepIntervalMs: envInt(env, "LEDGER_EXPIRY_SWEEP_INTERVAL_MS", EXPIRY_SWEEP_INTERVAL_MS, { min: 0, max: 3_600_000 }),
      commitQueueItemsMax: envInt(env, "LEDGER_COMMIT_QUEUE_ITEMS_MAX", COMMIT_QUEUE_ITEMS_MAX, { min: 8_190, max: 4_194_304 }),
      commitItemsPerTransactionMax: envInt(env, "LEDGER_COMMIT_ITEMS_PER_TRANSACTION_MAX", COMMIT_ITEMS_PER_TRANSACTION_MAX, {
        min: 8_190,
        max: 1_000_000,
      }),
    },
  };
}
