import { DbError } from "./errors.js";
import { PgDb } from "./pg-backend.js";
import { PgliteDb } from "./pglite-backend.js";
import type { Db, OpenDbOptions } from "./types.js";

/**
 * Opens a Db in `schema` (created if missing): on PostgreSQL when `url` is given (a Pool of its
 * own, search_path and statement_timeout set per session), else on the shared `embedded` instance.
 */
export async function openDb(opts: OpenDbOptions): Promise<Db> {
  if (opts === null || typeof opts !== "object") throw new DbError("invalid_argument", "opts: required");
  if (opts.url !== undefined && opts.url !== "") {
    if (!/^postgres(ql)?:\/\//.test(opts.url)) throw new DbError("invalid_argument", "url: must start with postgres:// or postgresql://");
    return PgDb.open({ url: opts.url, schema: opts.schema, poolMax: opts.poolMax, statementTimeoutMs: opts.statementTimeoutMs });
  }
  if (opts.embedded !== undefined) return PgliteDb.open({ embedded: opts.embedded, schema: opts.schema });
  throw new DbError("invalid_argument", "url/embedded: one of them is required (a postgres:// url, or an instance from openEmbeddedPostgres())");
}
