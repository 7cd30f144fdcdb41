import type { PGlite } from "@electric-sql/pglite";

/** One result row: BIGINT -> bigint, NUMERIC -> string, TIMESTAMPTZ -> Date, JSONB -> object, BYTEA -> Buffer. */
export type Row = Record<string, unknown>;

export interface Queryable {
  /**
   * Runs one statement with $1..$n parameters; without parameters the text may hold several
   * statements (simple protocol) and the result is the last one's.
   */
  query<R extends Row = Row>(sql: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }>;
}

/** One statement of Tx.pipeline(): a single statement (never several) and its $1..$n values. */
export interface PipelineStatement {
  sql: string;
  params: unknown[];
}

/** The `tx` of Db.transaction(). */
export interface Tx extends Queryable {
  /**
   * Runs the statements in order and returns one result per statement: on PostgreSQL in ONE round
   * trip (the first statement of a transaction also carries its BEGIN). A failing statement fails
   * the call (and the transaction, as any failed statement does); the ones after it do not run.
   * At most PIPELINE_STATEMENTS_MAX statements; each a single statement.
   */
  pipeline<R extends Row = Row>(statements: PipelineStatement[]): Promise<{ rows: R[]; rowCount: number }[]>;
}

export type IsolationLevel = "read committed" | "repeatable read" | "serializable";

export interface TransactionOptions {
  isolation?: IsolationLevel;
  /** Retries after the first attempt on 40001/40P01 (default TRANSACTION_RETRIES_DEFAULT). */
  retriesMax?: number;
}

export interface Db extends Queryable {
  readonly kind: "pg" | "pglite";
  /** Every query runs with search_path = schema. */
  readonly schema: string;
  /**
   * Runs fn in one transaction: commit when it resolves, rollback when it throws. Retries the whole
   * fn on 40001/40P01 with jittered backoff, then throws DbError { code: "serialization" }.
   * fn must use `tx`, never the Db (that is rejected: DbError "nested_transaction").
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>, opts?: TransactionOptions): Promise<T>;
  /** Bulk insert (COPY on pg; multi-row INSERT on PGlite). Atomic: inside `tx` when given, else in its own transaction. */
  copyRows(table: string, columns: string[], rows: unknown[][], tx?: Queryable): Promise<number>;
  /**
   * Calls onNotify with the payload of every NOTIFY on `channel` ([a-z_][a-z0-9_]*, at most 63
   * characters): on pg through a dedicated connection that is reopened after a loss, on PGlite
   * through the instance. Best effort (nothing arrives while reconnecting): a wake-up, never the
   * only signal. Resolves once listening; the returned function stops (close() stops them all).
   */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface EmbeddedPostgres {
  readonly pglite: PGlite;
  close(): Promise<void>;
}

export interface OpenDbOptions {
  /** postgres:// URL: a pg Pool of its own. */
  url?: string;
  /** The shared embedded instance (used when url is absent). */
  embedded?: EmbeddedPostgres;
  /** Schema of this Db: [a-z_][a-z0-9_]*, at most 63 characters; created if missing. */
  schema: string;
  /** pg only: Pool size (default POOL_MAX_DEFAULT). */
  poolMax?: number;
  /** pg only: statement_timeout of every session (default STATEMENT_TIMEOUT_MS_DEFAULT). */
  statementTimeoutMs?: number;
}
