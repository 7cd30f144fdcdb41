/** Environment -> typed config of the credit wallet; every limit explicit and validated. */
import { type Env, envBool, envInt, envString, envUrl } from "@nanobill/service-kit";
import { BACKGROUND_INTERVAL_MS, EXPIRY_GRACE_MS_DEFAULT, EXPIRY_NOTICE_MS_DEFAULT } from "./limits.js";

export interface CreditWalletConfig {
  /** redis:// URL of the real-time store; undefined = the in-process store (one process only). */
  redisUrl: string | undefined;
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
}

export const CREDIT_WALLET_CONFIG_DEFAULT: CreditWalletConfig = {
  redisUrl: undefined,
  redisPrefix: "nb:wallet:",
  rebuildOnStart: true,
  expiryNoticeMs: EXPIRY_NOTICE_MS_DEFAULT,
  expiryGraceMs: EXPIRY_GRACE_MS_DEFAULT,
  backgroundIntervalMs: BACKGROUND_INTERVAL_MS,
};

export interface CreditWalletProcessConfig {
  port: number;
  host: string;
  databaseUrl: string | undefined;
  dataDir: string;
  schema: string;
  apiKeys: string;
  poolMax: number;
  /** Base URL of the ledger service and the internal API key used to call it. */
  ledgerUrl: string;
  ledgerApiKey: string;
  wallet: CreditWalletConfig;
}

export function loadConfig(env: Env): CreditWalletProcessConfig {
  return {
    port: envInt(env, "PORT", 7004, { min: 0, max: 65_535 }),
    host: envString(env, "HOST", "0.0.0.0"),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "WALLET_DATA_DIR", "./.data/credit-wallet"),
    schema: envString(env, "WALLET_DB_SCHEMA", "credit_wallet"),
    apiKeys: envString(env, "NANOBILL_API_KEYS"),
    poolMax: envInt(env, "WALLET_DB_POOL_MAX", 10, { min: 2, max: 100 }),
    ledgerUrl: envUrl(env, "LEDGER_URL") ?? "http://127.0.0.1:7003",
    ledgerApiKey: envString(env, "LEDGER_API_KEY"),
    wallet: {
      redisUrl: envUrl(env, "REDIS_URL"),
      redisPrefix: envString(env, "WALLET_REDIS_PREFIX", CREDIT_WALLET_CONFIG_DEFAULT.redisPrefix),
      rebuildOnStart: envBool(env, "WALLET_REBUILD_ON_START", true),
      expiryNoticeMs: envInt(env, "WALLET_EXPIRY_NOTICE_MS", EXPIRY_NOTICE_MS_DEFAULT, { min: 0, max: 90 * 86_400_000 }),
      expiryGraceMs: envInt(env, "WALLET_EXPIRY_GRACE_MS", EXPIRY_GRACE_MS_DEFAULT, { min: 0, max: 90 * 86_400_000 }),
      backgroundIntervalMs: envInt(env, "WALLET_BACKGROUND_INTERVAL_MS", BACKGROUND_INTERVAL_MS, { min: 0, max: 3_600_000 }),
    },
  };
}
