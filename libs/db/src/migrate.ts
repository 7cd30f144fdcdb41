import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { DbError, toDbError } from "./errors.js";
import { MIGRATION_FILE_BYTES_MAX, MIGRATION_FILES_MAX, MIGRATION_STATEMENT_TIMEOUT_MS } from "./limits.js";
import type { Db, Queryable } from "./types.js";

/** NNNN_name.sql */
const MIGRATION_FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

export interface MigrationFile {
  name: string;
  version: number;
  checksum: string;
  sql: string;
}

/** Reads and validates a migrations folder, sorted by version. */
export async function readMigrations(dir: string): Promise<MigrationFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw new DbError("migration", `migrations dir ${dir}: cannot read (${(e as Error).message})`, { cause: e });
  }
  const sqlNames = names.filter((n) => n.endsWith(".sql")).sort();
  if (sqlNames.length > MIGRATION_FILES_MAX) throw new DbError("migration", `migrations dir ${dir}: more than ${MIGRATION_FILES_MAX} files`);
  const files: MigrationFile[] = [];
  const seen = new Map<number, string>();
  for (const name of sqlNames) {
    const m = MIGRATION_FILE.exec(name);
    if (!m) throw new DbError("migration", `migration ${name}: file name must match NNNN_name.sql (4 digits, lower-case name)`);
    const version = Number(m[1]);
    const other = seen.get(version);
    if (other !== undefined) throw new DbError("migration", `migration ${name}: version ${m[1]} is also used by ${other}`);
    seen.set(version, name);
    const path = join(dir, name);
    const st = await stat(path);
    if (st.size > MIGRATION_FILE_BYTES_MAX) throw new DbError("migration", `migration ${name}: larger than ${MIGRATION_FILE_BYTES_MAX} bytes`);
    const bytes = await readFile(path);
    files.push({ name, version, checksum: createHash("sha256").update(bytes).digest("hex"), sql: bytes.toString("utf8") });
  }
  files.sort((a, b) => a.version - b.version);
  return files;
}

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  checksum_sha256 TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`;

/** Serialises migrate() of one schema across processes (pg); harmless on PGlite. */
async function lock(tx: Queryable): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('nanobill.migrate.' || current_schema()))");
}

/**
 * Applies the NNNN_name.sql files of `dir` not yet applied, in order, each in its own transaction,
 * recorded in schema_migrations (this Db's schema) with its sha256. An applied file whose content
 * changed is an error naming it. Safe to run from several processes at once.
 */
export async function migrate(db: Db, dir: string): Promise<{ applied: string[] }> {
  const files = await readMigrations(dir);
  await db.transaction(async (tx) => {
    await lock(tx);
    await tx.query(CREATE_TABLE);
  });
  const recorded = async (tx: Queryable): Promise<Map<number, { name: string; checksum: string }>> => {
    const { rows } = await tx.query<{ version: number; name: string; checksum_sha256: string }>(
      "SELECT version, name, checksum_sha256 FROM schema_migrations ORDER BY version",
    );
    return new Map(rows.map((r) => [Number(r.version), { name: r.name, checksum: r.checksum_sha256 }]));
  };
  const check = (f: MigrationFile, done: { name: string; checksum: string }): void => {
    if (done.checksum !== f.checksum) {
      throw new DbError(
        "migration",
        `migration ${f.name}: changed after it was applied to schema ${db.schema} (recorded sha256 ${done.checksum}, file now ${f.checksum}); add a new migration instead`,
      );
    }
  };
  // Fail before applying anything when an applied file changed.
  const before = await db.transaction(recorded);
  for (const f of files) {
    const done = before.get(f.version);
    if (done) check(f, done);
  }
  const applied: string[] = [];
  for (const f of files) {
    if (before.has(f.version)) continue;
    const didApply = await db.transaction(
      async (tx) => {
        await lock(tx);
        // Another process may have applied it while we waited for the lock.
        const done = (await recorded(tx)).get(f.version);
        if (done) {
          check(f, done);
          return false;
        }
        await tx.query(`SET LOCAL statement_timeout = ${MIGRATION_STATEMENT_TIMEOUT_MS}`);
        try {
          if (f.sql.trim() !== "") await tx.query(f.sql);
        } catch (e) {
          const d = toDbError(e);
          throw new DbError("migration", `migration ${f.name}: failed: ${d.message}`, { sqlState: d.sqlState, cause: d });
        }
        await tx.query("INSERT INTO schema_migrations (version, name, checksum_sha256) VALUES ($1, $2, $3)", [f.version, f.name, f.checksum]);
        return true;
      },
      { retriesMax: 0 },
    );
    if (didApply) applied.push(f.name);
  }
  return { applied };
}

/** Names of the migration files of `dir` not yet recorded (with the same checksum) in db's schema_migrations. */
export async function pendingMigrations(db: Db, dir: string): Promise<string[]> {
  const files = await readMigrations(dir);
  const exists = await db.query<{ present: boolean }>(
    "SELECT to_regclass(quote_ident(current_schema()) || '.schema_migrations') IS NOT NULL AS present",
  );
  if (exists.rows[0]?.present !== true) return files.map((f) => f.name);
  const { rows } = await db.query<{ version: number; checksum_sha256: string }>("SELECT version, checksum_sha256 FROM schema_migrations");
  const done = new Map(rows.map((r) => [Number(r.version), r.checksum_sha256]));
  return files.filter((f) => done.get(f.version) !== f.checksum).map((f) => f.name);
}

/**
 * A service's schema at start-up: `migrate()` when `migrateOnStart` (the default of every service,
 * NANOBILL_MIGRATE_ON_START), else only a check, with no DDL and no write, that every migration
 * file is applied with its checksum: a process whose migrations are run by a separate job (the
 * Kubernetes migrations Job) can then connect as a role without DDL rights. A pending or changed
 * file is an error naming it, and the service does not start.
 */
export async function prepareSchema(db: Db, dir: string, migrateOnStart: boolean): Promise<{ applied: string[] }> {
  if (migrateOnStart) return migrate(db, dir);
  const pending = await pendingMigrations(db, dir);
  if (pending.length > 0) {
    throw new DbError(
      "migration",
      `schema ${db.schema} is not current: ${pending.join(", ")} not applied (or changed since); NANOBILL_MIGRATE_ON_START=false leaves migrations to a separate job (infra/migrate.ts)`,
    );
  }
  return { applied: [] };
}
