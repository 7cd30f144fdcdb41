/** Limits of @nanobill/db: every one named, enforced and tested at its edge. */

/** Connections per pg Pool (one Pool per Db) when openDb() is given no poolMax. */
export const POOL_MAX_DEFAULT = 10;
/** Upper bound accepted for poolMax. */
export const POOL_MAX_LIMIT = 100;
/** statement_timeout of every pg session when openDb() is given no statementTimeoutMs. */
export const STATEMENT_TIMEOUT_MS_DEFAULT = 30_000;
/** Upper bound accepted for statementTimeoutMs. */
export const STATEMENT_TIMEOUT_MS_MAX = 600_000;
/** statement_timeout for the statements of one migration (index builds can be slow). */
export const MIGRATION_STATEMENT_TIMEOUT_MS = 600_000;
/** How long a new pg connection (or a wait for a free pooled one) may take before "unavailable". */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Idle pg connections are closed after this long. */
export const POOL_IDLE_TIMEOUT_MS = 30_000;
/** How long work on the shared embedded instance may wait for the instance before "unavailable". */
export const EMBEDDED_LOCK_WAIT_MS_MAX = 60_000;

/** transaction(): retries on 40001/40P01 when no retriesMax is given. */
export const TRANSACTION_RETRIES_DEFAULT = 5;
/** Upper bound accepted for retriesMax. */
export const TRANSACTION_RETRIES_MAX = 20;
/** First retry waits up to this long; doubles per attempt (full jitter). */
export const RETRY_BACKOFF_MS_BASE = 5;
/** Cap of one backoff wait. */
export const RETRY_BACKOFF_MS_MAX = 250;

/** PostgreSQL's protocol limit on bind parameters in one statement. */
export const QUERY_PARAMS_MAX = 65_535;
/** copyRows(): rows sent per COPY chunk / INSERT statement (multi-row VALUES also obeys QUERY_PARAMS_MAX). */
export const COPY_CHUNK_ROWS = 5_000;
/** copyRows(): rows accepted by one call. */
export const COPY_ROWS_PER_CALL_MAX = 1_000_000;
/** PostgreSQL's limit on columns of one table. */
export const COLUMNS_MAX = 1_600;
/** Identifiers (schema, table, column): PostgreSQL truncates past 63 bytes; we refuse instead. */
export const IDENTIFIER_LENGTH_MAX = 63;
/** migrate(): files accepted in one migrations folder. */
export const MIGRATION_FILES_MAX = 10_000;
/** migrate(): bytes of one migration file. */
export const MIGRATION_FILE_BYTES_MAX = 10 * 1024 * 1024;
/** listen(): a lost LISTEN connection is reopened after this long (notifications are missed meanwhile). */
export const LISTEN_RECONNECT_MS = 1_000;
/** listen(): most channels one Db listens on (each is a connection on pg). */
export const LISTEN_CHANNELS_MAX = 8;
/** Tx.pipeline(): statements sent in one round trip. */
export const PIPELINE_STATEMENTS_MAX = 64;
