import { AsyncLocalStorage } from "node:async_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { DbError, isRetryableSqlState, toDbError } from "./errors.js";
import {
  IDENTIFIER_LENGTH_MAX,
  RETRY_BACKOFF_MS_BASE,
  RETRY_BACKOFF_MS_MAX,
  TRANSACTION_RETRIES_DEFAULT,
  TRANSACTION_RETRIES_MAX,
  COLUMNS_MAX,
  COPY_ROWS_PER_CALL_MAX,
  PIPELINE_STATEMENTS_MAX,
} from "./limits.js";
import type { IsolationLevel, PipelineStatement, TransactionOptions } from "./types.js";

const IDENT = /^[a-z_][a-z0-9_]*$/;

/** Accepts a plain lower-case identifier; returns it double-quoted. */
export function quoteIdent(name: string, field: string): string {
  if (typeof name !== "string" || !IDENT.test(name) || name.length > IDENTIFIER_LENGTH_MAX) {
    throw new DbError(
      "invalid_argument",
      `${field}: must match [a-z_][a-z0-9_]* and be at most ${IDENTIFIER_LENGTH_MAX} characters, got ${JSON.stringify(name)}`,
    );
  }
  return `"${name}"`;
}

/** "table" or "schema.table", each part a plain identifier; returns the quoted form. */
export function quoteTable(name: string, field: string): string {
  if (typeof name !== "string") return quoteIdent(name, field);
  const parts = name.split(".");
  if (parts.length > 2) return quoteIdent(name, field);
  return parts.map((p) => quoteIdent(p, field)).join(".");
}

export function checkSchemaName(schema: string): void {
  quoteIdent(schema, "schema");
  if (schema.startsWith("pg_")) throw new DbError("invalid_argument", `schema: names starting with pg_ are reserved, got "${schema}"`);
}

/** listen()/NOTIFY channels follow the schema-name rule ([a-z_][a-z0-9_]*, at most 63 characters). */
export function checkChannelName(channel: string): void {
  quoteIdent(channel, "channel");
}

export function checkIntOption(value: number | undefined, field: string, min: number, max: number, def: number): number {
  if (value === undefined) return def;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new DbError("invalid_argument", `${field}: must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

const ISOLATIONS: ReadonlySet<string> = new Set(["read committed", "repeatable read", "serializable"]);

export function beginSql(opts: TransactionOptions | undefined): string {
  const iso: IsolationLevel = opts?.isolation ?? "read committed";
  if (!ISOLATIONS.has(iso)) {
    throw new DbError("invalid_argument", `isolation: must be "read committed", "repeatable read" or "serializable", got ${JSON.stringify(iso)}`);
  }
  return `BEGIN ISOLATION LEVEL ${iso.toUpperCase()}`;
}

export function retriesOf(opts: TransactionOptions | undefined): number {
  return checkIntOption(opts?.retriesMax, "retriesMax", 0, TRANSACTION_RETRIES_MAX, TRANSACTION_RETRIES_DEFAULT);
}

/** Full-jitter exponential backoff for retry `attempt` (0-based). */
export function backoffMs(attempt: number): number {
  const cap = Math.min(RETRY_BACKOFF_MS_MAX, RETRY_BACKOFF_MS_BASE * 2 ** attempt);
  return cap / 2 + Math.random() * (cap / 2);
}

function isRetryable(e: unknown): boolean {
  if (e instanceof DbError) return e.code === "serialization" || isRetryableSqlState(e.sqlState);
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && isRetryableSqlState(code);
}

/** Runs attempt() and retries it on serialization failure / deadlock up to retriesMax times. */
export async function withRetries<T>(retriesMax: number, attempt: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (e) {
      if (!isRetryable(e)) throw e;
      if (i >= retriesMax) {
        const d = toDbError(e);
        throw new DbError(
          "serialization",
          `transaction aborted by ${d.sqlState === "40P01" ? "deadlock" : "serialization failure"} ${i + 1} time(s) (retriesMax ${retriesMax}): ${d.message}`,
          { sqlState: d.sqlState, cause: e },
        );
      }
      await sleep(backoffMs(i));
    }
  }
}

/** What is running in the current async context: which transaction of which Db / instance. */
export interface TxContext {
  readonly owner: object; // the Db
  readonly instance: object | undefined; // the shared embedded instance, when embedded
  active: boolean;
}

export const txContext = new AsyncLocalStorage<TxContext>();

/** Throws when called from inside a live transaction() of `owner` (or of any Db on the same embedded instance). */
export function assertNotInTransaction(owner: object, instance: object | undefined, what: string): void {
  const ctx = txContext.getStore();
  if (ctx === undefined || !ctx.active) return;
  if (ctx.owner === owner) {
    throw new DbError(
      "nested_transaction",
      `${what} called inside transaction() of the same Db: nested transactions are not supported; use the tx argument of the running transaction`,
    );
  }
  if (instance !== undefined && ctx.instance === instance) {
    throw new DbError(
      "nested_transaction",
      `${what} called inside a transaction() of another Db on the same embedded instance: the instance is held by that transaction, this would wait forever`,
    );
  }
}

/** Validates the shape of copyRows() arguments; returns the quoted table and column list. */
/** Checks Tx.pipeline()'s argument: 1..PIPELINE_STATEMENTS_MAX statements, each text with a params array. */
export function checkPipeline(statements: PipelineStatement[]): void {
  if (!Array.isArray(statements) || statements.length === 0 || statements.length > PIPELINE_STATEMENTS_MAX) {
    throw new DbError("invalid_argument", `statements: must hold 1..${PIPELINE_STATEMENTS_MAX} statements`);
  }
  statements.forEach((s, i) => {
    if (typeof s?.sql !== "string" || s.sql.trim() === "") throw new DbError("invalid_argument", `statements[${i}].sql: must be a statement`);
    if (!Array.isArray(s.params)) throw new DbError("invalid_argument", `statements[${i}].params: must be an array`);
  });
}

export function checkCopyArgs(table: string, columns: string[], rows: unknown[][]): { tableSql: string; columnsSql: string[] } {
  const tableSql = quoteTable(table, "table");
  if (!Array.isArray(columns) || columns.length === 0 || columns.length > COLUMNS_MAX) {
    throw new DbError("invalid_argument", `columns: must be 1..${COLUMNS_MAX} column names`);
  }
  const columnsSql = columns.map((c, i) => quoteIdent(c, `columns[${i}]`));
  if (new Set(columns).size !== columns.length) throw new DbError("invalid_argument", "columns: duplicate column name");
  if (!Array.isArray(rows)) throw new DbError("invalid_argument", "rows: must be an array of rows");
  if (rows.length > COPY_ROWS_PER_CALL_MAX) {
    throw new DbError("invalid_argument", `rows: at most ${COPY_ROWS_PER_CALL_MAX} rows per copyRows() call, got ${rows.length}`);
  }
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (!Array.isArray(r) || r.length !== columns.length) {
      throw new DbError("invalid_argument", `rows[${i}]: must be an array of ${columns.length} values (one per column)`);
    }
  }
  return { tableSql, columnsSql };
}

/** Replaces undefined by null (pg does it; PGlite would not). */
export function normalizeParams(params: unknown[] | undefined): unknown[] | undefined {
  if (params === undefined) return undefined;
  if (!Array.isArray(params)) throw new DbError("invalid_argument", "params: must be an array");
  let out: unknown[] | undefined;
  for (let i = 0; i < params.length; i++) {
    if (params[i] === undefined) {
      out ??= params.slice();
      out[i] = null;
    }
  }
  return out ?? params;
}
