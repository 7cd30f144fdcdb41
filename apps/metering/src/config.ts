// Environment -> typed config. Every limit explicit and validated; a bad value names the variable.
import { POOL_MAX_DEFAULT, POOL_MAX_LIMIT } from "@nanobill/db";
import { envBool, envEnum, envFraction, envInt, envString, envUrl, LOG_LEVELS, type Env, type LogLevel } from "@nanobill/service-kit";
import {
  COMMIT_EVENTS_MAX,
  INGEST_QUEUE_EVENTS_MAX,
  LATE_EVENT_AGE_MS_DEFAULT,
  LATE_EVENT_AGE_MS_MAX,
  LATE_EVENT_AGE_MS_MIN,
  READ_PAGE_BYTES_MAX,
  READ_POLL_INTERVAL_MS,
} from "./limits.js";

export interface MeteringConfig {
  /** Events older than this are rejected (period_closed). */
  lateEventAgeMs: number;
  /** Most events written in one group-commit transaction. */
  commitEventsMax: number;
  /** Most events waiting for the writer (then Unavailable: overloaded, retry). */
  queueEventsMax: number;
  /** Fallback poll interval of long-polling ReadEvents (commits in this process wake them at once). */
  readPollIntervalMs: number;
  /** How often pending meter backfills are looked for (ms; 0 = only when a meter is created). */
  backfillIntervalMs: number;
  /** Most bytes of a ReadEvents page (READ_PAGE_BYTES_MAX; tests lower it). */
  readPageBytesMax: number;
}

export const METERING_CONFIG_DEFAULT: MeteringConfig = {
  lateEventAgeMs: LATE_EVENT_AGE_MS_DEFAULT,
  commitEventsMax: COMMIT_EVENTS_MAX,
  queueEventsMax: INGEST_QUEUE_EVENTS_MAX,
  readPollIntervalMs: READ_POLL_INTERVAL_MS,
  backfillIntervalMs: 1_000,
  readPageBytesMax: READ_PAGE_BYTES_MAX,
};

export function meteringConfigFromEnv(env: Env): MeteringConfig {
  return {
    lateEventAgeMs: envInt(env, "METERING_LATE_EVENT_AGE_MS", LATE_EVENT_AGE_MS_DEFAULT, { min: LATE_EVENT_AGE_MS_MIN, max: LATE_EVENT_AGE_MS_MAX }),
    commitEventsMax: envInt(env, "METERING_COMMIT_EVENTS_MAX", COMMIT_EVENTS_MAX, { min: 1, max: 100_000 }),
    queueEventsMax: envInt(env, "METERING_QUEUE_EVENTS_MAX", INGEST_QUEUE_EVENTS_MAX, { min: 10_000, max: 10_000_000 }),
    readPollIntervalMs: envInt(env, "METERING_READ_POLL_INTERVAL_MS", READ_POLL_INTERVAL_MS, { min: 10, max: 10_000 }),
    backfillIntervalMs: envInt(env, "METERING_BACKFILL_INTERVAL_MS", 1_000, { min: 0, max: 3_600_000 }),
    readPageBytesMax: READ_PAGE_BYTES_MAX,
  };
}

/** The process settings of the standalone server (main.ts); variables as in docs/deployment.md ("Environment"). */
export interface MeteringProcessConfig {
  /** METERING_PORT (0 = any free port). */
  port: number;
  /** METERING_HOST (also the OTLP/HTTP receiver's). */
  host: string;
  /** DATABASE_URL; undefined = embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  /** METERING_DATA_DIR. */
  dataDir: string;
  /** METERING_DB_SCHEMA. */
  schema: string;
  /** METERING_DB_POOL_MAX. */
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
  /** METERING_OTLP_PORT: OTLP/HTTP receiver port (-1 = off, 0 = any free port). */
  otlpPort: number;
  metering: MeteringConfig;
}

export function loadConfig(env: Env): MeteringProcessConfig {
  return {
    port: envInt(env, "METERING_PORT", 7001, { min: 0, max: 65_535 }),
    host: envString(env, "METERING_HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "METERING_DATA_DIR", "./.data/metering"),
    schema: envString(env, "METERING_DB_SCHEMA", "metering"),
    poolMax: envInt(env, "METERING_DB_POOL_MAX", POOL_MAX_DEFAULT, { min: 2, max: POOL_MAX_LIMIT }),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    logLevel: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info"),
    migrateOnStart: envBool(env, "NANOBILL_MIGRATE_ON_START", true),
    otlpTracesEndpoint: envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    tracesSampleRatio: envFraction(env, "OTEL_TRACES_SAMPLER_ARG", 1),
    otlpPort: envInt(env, "METERING_OTLP_PORT", 4318, { min: -1, max: 65_535 }),
    metering: meteringConfigFromEnv(env),
  };
}
