/**
 * DbError: the one error type @nanobill/db throws for database failures.
 * Services map `code` to a Connect code (serialization -> Aborted, unavailable -> Unavailable,
 * unique_violation -> AlreadyExists or a domain result, timeout -> DeadlineExceeded, ...).
 */
export type DbErrorCode =
  | "serialization" // 40001 / 40P01 after the retries of transaction() (or outside one)
  | "unavailable" // cannot reach / lost the database, pool or instance closed, lock wait timed out
  | "unique_violation" // 23505; `constraint` names the constraint
  | "foreign_key_violation" // 23503
  | "check_violation" // 23514
  | "not_null_violation" // 23502
  | "timeout" // 57014 statement_timeout / query canceled
  | "nested_transaction" // transaction() or db.query() inside transaction() of the same database
  | "invalid_argument" // bad identifier, row shape, option value (names the field)
  | "migration" // a migration file is malformed, changed after being applied, or failed
  | "query"; // any other SQL error; see `sqlState`

export class DbError extends Error {
  readonly code: DbErrorCode;
  /** SQLSTATE of the server error when there was one (e.g. "23505"). */
  readonly sqlState: string | undefined;
  /** Constraint name for constraint violations. */
  readonly constraint: string | undefined;
  /** Table name reported by the server, when it reported one. */
  readonly table: string | undefined;
  /** Server detail line, when there was one. */
  readonly detail: string | undefined;

  constructor(
    code: DbErrorCode,
    message: string,
    extra: { sqlState?: string; constraint?: string; table?: string; detail?: string; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "DbError";
    this.code = code;
    this.sqlState = extra.sqlState;
    this.constraint = extra.constraint;
    this.table = extra.table;
    this.detail = extra.detail;
  }
}

export function isDbError(e: unknown, code?: DbErrorCode): e is DbError {
  return e instanceof DbError && (code === undefined || e.code === code);
}

const NETWORK_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ECONNABORTED",
]);

const UNAVAILABLE_MESSAGES = [
  "connection terminated",
  "timeout exceeded when trying to connect",
  "client has encountered a connection error",
  "client was closed and is not queryable",
  "cannot use a pool after calling end",
  "connection ended",
  "pglite is closed",
];

/** SQLSTATEs that mean "try the whole transaction again". */
export function isRetryableSqlState(s: string | undefined): boolean {
  return s === "40001" || s === "40P01";
}

/** Turn anything a driver threw into a DbError (a DbError passes through unchanged). */
export function toDbError(e: unknown): DbError {
  if (e instanceof DbError) return e;
  const err = (e ?? {}) as {
    code?: unknown;
    message?: unknown;
    constraint?: unknown;
    table?: unknown;
    detail?: unknown;
    errors?: unknown;
  };
  const message = typeof err.message === "string" && err.message !== "" ? err.message : String(e);
  const rawCode = typeof err.code === "string" ? err.code : undefined;
  const sqlState = rawCode !== undefined && /^[0-9A-Z]{5}$/.test(rawCode) ? rawCode : undefined;
  const extra = {
    sqlState,
    constraint: typeof err.constraint === "string" ? err.constraint : undefined,
    table: typeof err.table === "string" ? err.table : undefined,
    detail: typeof err.detail === "string" ? err.detail : undefined,
    cause: e,
  };
  if (sqlState !== undefined) {
    if (isRetryableSqlState(sqlState)) return new DbError("serialization", message, extra);
    if (sqlState === "23505") return new DbError("unique_violation", message, extra);
    if (sqlState === "23503") return new DbError("foreign_key_violation", message, extra);
    if (sqlState === "23514") return new DbError("check_violation", message, extra);
    if (sqlState === "23502") return new DbError("not_null_violation", message, extra);
    if (sqlState === "57014") return new DbError("timeout", message, extra);
    if (sqlState.startsWith("08") || sqlState === "57P01" || sqlState === "57P02" || sqlState === "57P03" || sqlState === "53300") {
      return new DbError("unavailable", message, extra);
    }
    return new DbError("query", message, extra);
  }
  if (rawCode !== undefined && NETWORK_ERRNOS.has(rawCode)) return new DbError("unavailable", message, extra);
  // AggregateError from net.connect when every address failed (e.g. localhost v4 + v6).
  if (Array.isArray(err.errors) && err.errors.some((x) => NETWORK_ERRNOS.has((x as { code?: string })?.code ?? ""))) {
    return new DbError("unavailable", message, extra);
  }
  const lower = message.toLowerCase();
  if (UNAVAILABLE_MESSAGES.some((m) => lower.includes(m))) return new DbError("unavailable", message, extra);
  return new DbError("query", message, extra);
}
