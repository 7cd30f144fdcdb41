/** Environment -> typed LedgerConfig; every limit explicit and validated. */
import { type Env, envInt, envString, envUrl } from "@nanobill/service-kit";
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

export interface LedgerProcessConfig {
  port: number;
  host: string;
  /** postgres:// URL; undefined = embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  dataDir: string;
  schema: string;
  apiKeys: string;
  poolMax: number;
  ledger: LedgerConfig;
}

export function loadConfig(env: Env): LedgerProcessConfig {
  return {
    port: envInt(env, "PORT", 7003, { min: 0, max: 65_535 }),
    host: envString(env, "HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "LEDGER_DATA_DIR", "./.data/ledger"),
    schema: envString(env, "LEDGER_DB_SCHEMA", "ledger"),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    poolMax: envInt(env, "LEDGER_DB_POOL_MAX", 10, { min: 2, max: 100 }),
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
