// Environment -> typed config. Every limit explicit and validated; a bad value names the variable.
import { envInt, envString, envUrl, type Env } from "@nanobill/service-kit";
import {
  COMMIT_EVENTS_MAX,
  INGEST_QUEUE_EVENTS_MAX,
  LATE_EVENT_AGE_MS_DEFAULT,
  LATE_EVENT_AGE_MS_MAX,
  LATE_EVENT_AGE_MS_MIN,
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
}

export const METERING_CONFIG_DEFAULT: MeteringConfig = {
  lateEventAgeMs: LATE_EVENT_AGE_MS_DEFAULT,
  commitEventsMax: COMMIT_EVENTS_MAX,
  queueEventsMax: INGEST_QUEUE_EVENTS_MAX,
  readPollIntervalMs: READ_POLL_INTERVAL_MS,
  backfillIntervalMs: 1_000,
};

export function meteringConfigFromEnv(env: Env): MeteringConfig {
  return {
    lateEventAgeMs: envInt(env, "METERING_LATE_EVENT_AGE_MS", LATE_EVENT_AGE_MS_DEFAULT, { min: LATE_EVENT_AGE_MS_MIN, max: LATE_EVENT_AGE_MS_MAX }),
    commitEventsMax: envInt(env, "METERING_COMMIT_EVENTS_MAX", COMMIT_EVENTS_MAX, { min: 1, max: 100_000 }),
    queueEventsMax: envInt(env, "METERING_QUEUE_EVENTS_MAX", INGEST_QUEUE_EVENTS_MAX, { min: 10_000, max: 10_000_000 }),
    readPollIntervalMs: envInt(env, "METERING_READ_POLL_INTERVAL_MS", READ_POLL_INTERVAL_MS, { min: 10, max: 10_000 }),
    backfillIntervalMs: envInt(env, "METERING_BACKFILL_INTERVAL_MS", 1_000, { min: 0, max: 3_600_000 }),
  };
}

/** The process settings of the standalone server (main.ts). */
export interface MeteringProcessConfig {
  port: number;
  host: string;
  databaseUrl: string | undefined;
  dataDir: string;
  schema: string;
  apiKeys: string;
  /** OTLP/HTTP receiver port (-1 = off, 0 = any free port). */
  otlpPort: number;
  service: MeteringConfig;
}

export function processConfigFromEnv(env: Env): MeteringProcessConfig {
  return {
    port: envInt(env, "METERING_PORT", 7101, { min: 0, max: 65_535 }),
    host: envString(env, "METERING_HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "NANOBILL_DATA_DIR", "./.data"),
    schema: envString(env, "METERING_DB_SCHEMA", "metering"),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    otlpPort: envInt(env, "METERING_OTLP_PORT", 7102, { min: -1, max: 65_535 }),
    service: meteringConfigFromEnv(env),
  };
}
