/** Environment -> typed config of the invoicing service; every value validated, named on error. */
import { envInt, envString, envUrl, type Env } from "@nanobill/service-kit";

export interface InvoicingConfig {
  /** port of the standalone server (INVOICING_PORT). */
  port: number;
  /** databaseUrl: PostgreSQL URL (DATABASE_URL); unset = embedded PGlite. */
  databaseUrl: string | undefined;
  /** dataDir of the embedded database (NANOBILL_DATA_DIR). */
  dataDir: string;
  /** schema of this service's tables (INVOICING_DB_SCHEMA). */
  schema: string;
  /** ratingUrl / walletUrl / ledgerUrl: base URLs of the services invoicing calls. */
  ratingUrl: string;
  walletUrl: string;
  ledgerUrl: string;
  /** internalApiKey: the "internal"-scope key used to call them (NANOBILL_INTERNAL_API_KEY). */
  internalApiKey: string;
  /** ledgerRetryMs: how often pending ledger postings are retried (INVOICING_LEDGER_RETRY_MS). */
  ledgerRetryMs: number;
}

export const INVOICING_CONFIG_DEFAULT: InvoicingConfig = {
  port: 7005,
  databaseUrl: undefined,
  dataDir: "./.data",
  schema: "invoicing",
  ratingUrl: "http://127.0.0.1:7002",
  walletUrl: "http://127.0.0.1:7004",
  ledgerUrl: "http://127.0.0.1:7003",
  internalApiKey: "",
  ledgerRetryMs: 10_000,
};

export function loadConfig(env: Env): InvoicingConfig {
  const d = INVOICING_CONFIG_DEFAULT;
  return {
    port: envInt(env, "INVOICING_PORT", d.port, { min: 0, max: 65_535 }),
    databaseUrl: envUrl(env, "DATABASE_URL"),
    dataDir: envString(env, "NANOBILL_DATA_DIR", d.dataDir),
    schema: envString(env, "INVOICING_DB_SCHEMA", d.schema),
    ratingUrl: envUrl(env, "RATING_URL") ?? d.ratingUrl,
    walletUrl: envUrl(env, "WALLET_URL") ?? d.walletUrl,
    ledgerUrl: envUrl(env, "LEDGER_URL") ?? d.ledgerUrl,
    internalApiKey: envString(env, "NANOBILL_INTERNAL_API_KEY", ""),
    ledgerRetryMs: envInt(env, "INVOICING_LEDGER_RETRY_MS", d.ledgerRetryMs, { min: 100, max: 3_600_000 }),
  };
}
