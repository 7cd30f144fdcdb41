/** Environment -> typed config of the invoicing service; every value validated, named on error. */
import { POOL_MAX_DEFAULT, POOL_MAX_LIMIT } from "@nanobill/db";
import { envBool, envEnum, envFraction, envInt, envRetired, envString, envUrl, LOG_LEVELS, type Env, type LogLevel } from "@nanobill/service-kit";
import { DRAFT_LOOP_BATCH_DEFAULT, DRAFT_LOOP_BATCH_MAX, DRAFT_LOOP_MS_DEFAULT, DRAFT_LOOP_MS_MAX, LATE_EVENT_AGE_MS, LATE_EVENT_AGE_MS_MAX, LATE_EVENT_AGE_MS_MIN } from "./limits.js";

/** InvoicingConfig: the service's tunables (createInvoicingService). */
export interface InvoicingConfig {
  /** ledgerRetryMs: how often pending ledger postings are retried (INVOICING_LEDGER_RETRY_MS). */
  ledgerRetryMs: number;
  /**
   * lateEventAgeMs: how long after a period ends late usage can still arrive for it
   * (INVOICING_LATE_EVENT_AGE_MS): set it to metering's METERING_LATE_EVENT_AGE_MS, so every
   * late event metering accepts is billed as an adjustment. Default: metering's default (35 days).
   */
  lateEventAgeMs: number;
  /**
   * draftLoopMs: how often the draft loop runs (INVOICING_DRAFT_LOOP_MS, 0 = off): each pass
   * refreshes drafts inside their grace period and finalizes drafts past it whose customer has
   * auto_finalize on; a draft is looked at most once per interval (across replicas).
   */
  draftLoopMs: number;
  /** draftLoopBatch: drafts one pass looks at, at most (INVOICING_DRAFT_LOOP_BATCH). */
  draftLoopBatch: number;
}

export const INVOICING_CONFIG_DEFAULT: InvoicingConfig = {
  ledgerRetryMs: 10_000,
  lateEventAgeMs: LATE_EVENT_AGE_MS,
  draftLoopMs: DRAFT_LOOP_MS_DEFAULT,
  draftLoopBatch: DRAFT_LOOP_BATCH_DEFAULT,
};

/** The process settings of the standalone server (main.ts); variables as in docs/deployment.md ("Environment"). */
export interface InvoicingProcessConfig {
  /** INVOICING_PORT (0 = any free port). */
  port: number;
  /** INVOICING_HOST. */
  host: string;
  /** DATABASE_URL: PostgreSQL URL; undefined = embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  /** INVOICING_DATA_DIR. */
  dataDir: string;
  /** INVOICING_DB_SCHEMA. */
  schema: string;
  /** INVOICING_DB_POOL_MAX. */
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
  /** RATING_URL / CREDIT_WALLET_URL / LEDGER_URL: base URLs of the services invoicing calls. */
  ratingUrl: string;
  walletUrl: string;
  ledgerUrl: string;
  /** NANOBILL_INTERNAL_API_KEY: the internal-scope key invoicing calls them with. */
  internalApiKey: string;
  invoicing: InvoicingConfig;
}

/** Names this service read before the one scheme (docs/deployment.md): set, they are a ConfigError. */
export const INVOICING_RETIRED_VARIABLES: Readonly<Record<string, string>> = {
  WALLET_URL: "CREDIT_WALLET_URL",
};

export function loadConfig(env: Env): InvoicingProcessConfig {
  envRetired(env, INVOICING_RETIRED_VARIABLES);
  return {
    port: envInt(env, "INVOICING_PORT", 7005, { min: 0, max: 65_535 }),
    host: envString(env, "INVOICING_HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "INVOICING_DATA_DIR", "./.data/invoicing"),
    schema: envString(env, "INVOICING_DB_SCHEMA", "invoicing"),
    poolMax: envInt(env, "INVOICING_DB_POOL_MAX", POOL_MAX_DEFAULT, { min: 2, max: POOL_MAX_LIMIT }),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    logLevel: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info"),
    migrateOnStart: envBool(env, "NANOBILL_MIGRATE_ON_START", true),
    otlpTracesEndpoint: envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    tracesSampleRatio: envFraction(env, "OTEL_TRACES_SAMPLER_ARG", 1),
    ratingUrl: envUrl(env, "RATING_URL") ?? "http://127.0.0.1:7002",
    walletUrl: envUrl(env, "CREDIT_WALLET_URL") ?? "http://127.0.0.1:7004",
    ledgerUrl: envUrl(env, "LEDGER_URL") ?? "http://127.0.0.1:7003",
    internalApiKey: envString(env, "NANOBILL_INTERNAL_API_KEY"),
    invoicing: {
      ledgerRetryMs: envInt(env, "INVOICING_LEDGER_RETRY_MS", INVOICING_CONFIG_DEFAULT.ledgerRetryMs, { min: 100, max: 3_600_000 }),
      lateEventAgeMs: envInt(env, "INVOICING_LATE_EVENT_AGE_MS", LATE_EVENT_AGE_MS, { min: LATE_EVENT_AGE_MS_MIN, max: LATE_EVENT_AGE_MS_MAX }),
      draftLoopMs: envInt(env, "INVOICING_DRAFT_LOOP_MS", DRAFT_LOOP_MS_DEFAULT, { min: 0, max: DRAFT_LOOP_MS_MAX }),
      draftLoopBatch: envInt(env, "INVOICING_DRAFT_LOOP_BATCH", DRAFT_LOOP_BATCH_DEFAULT, { min: 1, max: DRAFT_LOOP_BATCH_MAX }),
    },
  };
}
