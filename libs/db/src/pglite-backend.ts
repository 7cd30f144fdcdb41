import { randomBytes } from "node:crypto";
import { readFileSync, unlinkSync } from "node:fs";
import { chmod, link, mkdir, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { PGlite, type Transaction } from "@electric-sql/pglite";
import {
  assertNotInTransaction,
  beginSql,
  checkChannelName,
  checkCopyArgs,
  checkPipeline,
  checkSchemaName,
  normalizeParams,
  quoteIdent,
  retriesOf,
  txContext,
  withRetries,
  type TxContext,
} from "./common.js";
import { DbError, toDbError } from "./errors.js";
import { Mutex } from "./mutex.js";
import { COPY_CHUNK_ROWS, EMBEDDED_LOCK_WAIT_MS_MAX, LISTEN_CHANNELS_MAX } from "./limits.js";
import { encodeCopyChunk } from "./copy-text.js";
import type { Db, EmbeddedPostgres, PipelineStatement, Queryable, Row, TransactionOptions, Tx } from "./types.js";

const OID_BYTEA = 17;
const OID_INT8 = 20;
const OID_INT8_ARRAY = 1016;
const OID_BYTEA_ARRAY = 1001;

const toBigInt = (v: unknown): unknown => (typeof v === "number" ? BigInt(v) : v);
const toBuffer = (v: unknown): unknown =>
  v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v;
function mapDeep(v: unknown, f: (x: unknown) => unknown): unknown {
  return Array.isArray(v) ? v.map((x) => mapDeep(x, f)) : f(v);
}

/** The shared instance's private state: one mutex for all Dbs on it, and the search_path in force. */
interface EmbeddedState {
  readonly pglite: PGlite;
  readonly mutex: Mutex;
  currentSchema: string | undefined;
  closed: boolean;
}

const states = new WeakMap<EmbeddedPostgres, EmbeddedState>();

/** Opens (or creates) the one embedded PostgreSQL of this process; dataDir undefined = in memory. */
export async function openEmbeddedPostgres(opts: { dataDir?: string } = {}): Promise<EmbeddedPostgres> {
  if (opts.dataDir === undefined) return openEmbedded(opts);
  if (typeof opts.dataDir !== "string" || opts.dataDir === "") throw new DbError("invalid_argument", "dataDir: must be a non-empty path");
  // Owner only, as PostgreSQL insists for its data directories (it holds webhook secrets, keys).
  await ensureOwnerOnlyDir(opts.dataDir);
  const release = await lockDataDir(opts.dataDir);
  let embedded: EmbeddedPostgres;
  try {
    embedded = await openEmbedded(opts);
  } catch (e) {
    await release();
    throw e;
  }
  const close = embedded.close.bind(embedded);
  embedded.close = async () => {
    try {
      await close();
    } finally {
      await release();
    }
  };
  return embedded;
}

/**
 * Creates `dir` (and its parents) for its owner only (0700), and tightens an existing one (earlier
 * versions left data directories 0755); a directory this process may not change (another owner's
 * mount) is left as it is.
 */
export async function ensureOwnerOnlyDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "EPERM") throw e;
  });
}

/** Lock files this process holds (its own pid in a lock it does not hold is a leftover: stale). */
const heldLocks = new Set<string>();
let exitHookInstalled = false;

/** How long a stale-lock takeover waits before checking that it, not a racing opener, owns the lock. */
const LOCK_TAKEOVER_SETTLE_MS = 100;

/**
 * One process at a time per data directory: PGlite keeps no postmaster.pid, and two processes on
 * one directory each run their own copy of the database and overwrite each other's files (a second
 * `npm start` lost events the first had acknowledged). `<dataDir>.lock` (next to the directory,
 * absolute path) holds the owner's pid and only ever appears with it (written to a temporary file,
 * then linked into place). A lock whose process is gone (crash, SIGKILL), or that names this
 * process without being held by it (a pid reused after a restart), is replaced by rename, and the
 * opener checks after a moment that the lock is still its own (two openers replacing the same stale
 * lock at once: one wins). The lock is removed on close and, synchronously, on process exit.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const path = `${resolve(dataDir)}.lock`;
  const mine = `${process.pid}\n`;
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, mine, { mode: 0o600 });
  try {
    try {
      await link(tmp, path); // atomic: fails with EEXIST when a lock is there
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw new DbError("unavailable", `embedded postgres: cannot lock ${dataDir} (${path}): ${(e as Error).message}`, { cause: e });
      const owner = Number((await readFile(path, "utf8").catch(() => "")).trim());
      if (Number.isSafeInteger(owner) && owner > 0 && processAlive(owner, path)) {
        throw new DbError("unavailable", `embedded postgres: ${dataDir} is in use by process ${owner} (another npm start or service on the same data directory?); stop it first, or use another data directory (lock: ${path})`);
      }
      await rename(tmp, path); // stale: replace it atomically
      await new Promise((r) => setTimeout(r, LOCK_TAKEOVER_SETTLE_MS));
      const now = await readFile(path, "utf8").catch(() => "");
      if (now !== mine) throw new DbError("unavailable", `embedded postgres: ${dataDir} was taken by process ${now.trim() || "?"} at the same moment (lock: ${path}); stop it first`);
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
  heldLocks.add(path);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const l of heldLocks) {
        try {
          if (readFileSync(l, "utf8") === `${process.pid}\n`) unlinkSync(l);
        } catch {
          // gone already
        }
      }
    });
  }
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    heldLocks.delete(path);
    if ((await readFile(path, "utf8").catch(() => "")) === mine) await unlink(path).catch(() => {});
  };
}

function processAlive(pid: number, lockPath: string): boolean {
  if (pid === process.pid) return heldLocks.has(lockPath);
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Internal: also accepts loadDataDir (an initialised data dir as a tarball: no initdb, ~3x faster start). */
export async function openEmbedded(opts: { dataDir?: string; loadDataDir?: Blob }): Promise<EmbeddedPostgres> {
  let pglite: PGlite;
  try {
    pglite = await PGlite.create({
      ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
      ...(opts.loadDataDir !== undefined ? { loadDataDir: opts.loadDataDir } : {}),
      parsers: {
        [OID_INT8]: (v: string) => BigInt(v),
        // NUMERIC stays an exact decimal string.
        1700: (v: string) => v,
      },
    });
  } catch (e) {
    throw new DbError("unavailable", `embedded postgres: cannot open${opts.dataDir ? ` ${opts.dataDir}` : ""}: ${(e as Error)?.message ?? e}`, { cause: e });
  }
  const state: EmbeddedState = { pglite, mutex: new Mutex(), currentSchema: undefined, closed: false };
  const embedded: EmbeddedPostgres = {
    pglite,
    async close() {
      if (state.closed) return;
      await state.mutex.run(
        async () => {
          state.closed = true;
          await pglite.close();
        },
        EMBEDDED_LOCK_WAIT_MS_MAX,
        "embedded.close()",
      );
    },
  };
  states.set(embedded, state);
  return embedded;
}

type PgliteRunner = PGlite | Transaction;

/** Normalises a PGlite result: int8 always bigint (it may come back as number), bytea as Buffer. */
function normalizeRows(res: { rows: Row[]; fields: { name: string; dataTypeID: number }[] }): Row[] {
  const fix: Array<[string, (v: unknown) => unknown]> = [];
  for (const f of res.fields) {
    if (f.dataTypeID === OID_INT8) fix.push([f.name, toBigInt]);
    else if (f.dataTypeID === OID_INT8_ARRAY) fix.push([f.name, (v) => mapDeep(v, toBigInt)]);
    else if (f.dataTypeID === OID_BYTEA) fix.push([f.name, toBuffer]);
    else if (f.dataTypeID === OID_BYTEA_ARRAY) fix.push([f.name, (v) => mapDeep(v, toBuffer)]);
  }
  if (fix.length === 0) return res.rows;
  for (const row of res.rows) {
    for (const [name, f] of fix) {
      const v = row[name];
      if (v !== null && v !== undefined) row[name] = f(v);
    }
  }
  return res.rows;
}

/** A COPY reading from the client (anywhere in a text: it may hold several statements). */
const COPY_FROM_STDIN = /\bCOPY\b[\s\S]*?\bFROM\s+STDIN\b/i;

async function runPglite<R extends Row>(
  runner: PgliteRunner,
  sql: string,
  params: unknown[] | undefined,
): Promise<{ rows: R[]; rowCount: number; command: string | undefined }> {
  // PGlite would wait for COPY data synchronously and freeze the process (every embedded service).
  if (COPY_FROM_STDIN.test(sql)) throw new DbError("invalid_argument", "sql: COPY ... FROM STDIN is not supported here; use copyRows()");
  try {
    const p = normalizeParams(params);
    if (p === undefined || p.length === 0) {
      // Simple protocol: several statements allowed; the last one's result is returned (as pg does).
      const all = await runner.exec(sql);
      const last = all[all.length - 1];
      if (last === undefined) return { rows: [], rowCount: 0, command: undefined };
      const rows = normalizeRows(last as { rows: Row[]; fields: { name: string; dataTypeID: number }[] }) as R[];
      return { rows, rowCount: last.rowCount ?? last.affectedRows ?? rows.length, command: last.command };
    }
    const res = await runner.query<Row>(sql, p);
    const rows = normalizeRows(res) as R[];
    return { rows, rowCount: res.rowCount ?? res.affectedRows ?? rows.length, command: res.command };
  } catch (e) {
    throw toDbError(e);
  }
}

class PgliteTx implements Tx {
  active = true;
  constructor(
    readonly db: PgliteDb,
    readonly runner: PGlite,
  ) {}

  async query<R extends Row = Row>(sql: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }> {
    if (!this.active) throw new DbError("invalid_argument", "tx: this transaction has already finished (a query outlived its transaction() callback)");
    const { rows, rowCount } = await runPglite<R>(this.runner, sql, params);
    return { rows, rowCount };
  }

  /** In order, one after the other (no network: nothing to save); stops at the first error. */
  async pipeline<R extends Row = Row>(statements: PipelineStatement[]): Promise<{ rows: R[]; rowCount: number }[]> {
    if (!this.active) throw new DbError("invalid_argument", "tx: this transaction has already finished (a query outlived its transaction() callback)");
    checkPipeline(statements);
    const out: { rows: R[]; rowCount: number }[] = [];
    for (const s of statements) out.push(await this.query<R>(s.sql, s.params));
    return out;
  }
}

export class PgliteDb implements Db {
  readonly kind = "pglite" as const;
  private closed = false;
  private readonly listeners = new Set<() => Promise<void>>();

  private constructor(
    readonly schema: string,
    private readonly embedded: EmbeddedPostgres,
    private readonly state: EmbeddedState,
  ) {}

  static async open(opts: { embedded: EmbeddedPostgres; schema: string }): Promise<PgliteDb> {
    checkSchemaName(opts.schema);
    const state = states.get(opts.embedded);
    if (state === undefined) throw new DbError("invalid_argument", "embedded: must come from openEmbeddedPostgres()");
    const db = new PgliteDb(opts.schema, opts.embedded, state);
    await db.exclusive("openDb()", () => runPglite(state.pglite, `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(opts.schema, "schema")}`, undefined));
    return db;
  }

  private checkOpen(): void {
    if (this.closed) throw new DbError("unavailable", `db (${this.schema}): closed`);
    if (this.state.closed) throw new DbError("unavailable", `db (${this.schema}): the embedded instance is closed`);
  }

  /** Runs fn holding the instance, with search_path = this schema. */
  private exclusive<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.state.mutex.run(
      async () => {
        if (this.state.closed) throw new DbError("unavailable", `db (${this.schema}): the embedded instance is closed`);
        if (this.state.currentSchema !== this.schema) {
          this.state.currentSchema = undefined;
          await runPglite(this.state.pglite, "SELECT set_config('search_path', $1, false)", [quoteIdent(this.schema, "schema")]);
          this.state.currentSchema = this.schema;
        }
        return fn();
      },
      EMBEDDED_LOCK_WAIT_MS_MAX,
      `${what} (${this.schema})`,
    );
  }

  async query<R extends Row = Row>(sql: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }> {
    this.checkOpen();
    assertNotInTransaction(this, this.embedded, "db.query()");
    const { rows, rowCount } = await this.exclusive("db.query()", () => runPglite<R>(this.state.pglite, sql, params));
    return { rows, rowCount };
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>, opts?: TransactionOptions): Promise<T> {
    this.checkOpen();
    assertNotInTransaction(this, this.embedded, "db.transaction()");
    const begin = beginSql(opts);
    return withRetries(retriesOf(opts), () => this.exclusive("db.transaction()", () => this.runTransaction(fn, begin)));
  }

  private async runTransaction<T>(fn: (tx: PgliteTx) => Promise<T>, begin: string): Promise<T> {
    const pglite = this.state.pglite;
    const tx = new PgliteTx(this, pglite);
    const ctx: TxContext = { owner: this, instance: this.embedded, active: true };
    try {
      await runPglite(pglite, begin, undefined);
      const out = await txContext.run(ctx, () => fn(tx));
      tx.active = false;
      const commit = await runPglite(pglite, "COMMIT", undefined);
      if (commit.command === "ROLLBACK") {
        throw new DbError("query", "transaction rolled back at COMMIT: a statement inside it failed and its error was caught and ignored");
      }
      return out;
    } catch (e) {
      tx.active = false;
      try {
        await runPglite(pglite, "ROLLBACK", undefined);
      } catch {
        // Nothing to roll back (BEGIN failed) or the instance is gone; the original error matters.
      }
      throw e;
    } finally {
      tx.active = false;
      ctx.active = false;
    }
  }

  async copyRows(table: string, columns: string[], rows: unknown[][], tx?: Queryable): Promise<number> {
    this.checkOpen();
    const { tableSql, columnsSql } = checkCopyArgs(table, columns, rows);
    if (rows.length === 0) return 0;
    // COPY ... FROM '/dev/blob' (PGlite's COPY input) with the same text encoding as COPY FROM STDIN
    // on pg: a value means the same thing on both backends, and no bind-parameter limit applies.
    const sql = `COPY ${tableSql} (${columnsSql.join(", ")}) FROM '/dev/blob'`;
    const copyAll = async (t: Queryable): Promise<number> => {
      const runner = (t as PgliteTx).runner;
      let n = 0;
      for (let start = 0; start < rows.length; start += COPY_CHUNK_ROWS) {
        const end = Math.min(rows.length, start + COPY_CHUNK_ROWS);
        const blob = new Blob([encodeCopyChunk(rows, start, end)]);
        let res;
        try {
          res = await runner.query(sql, [], { blob });
        } catch (e) {
          throw toDbError(e);
        }
        n += res.rowCount ?? res.affectedRows ?? 0;
      }
      return n;
    };
    if (tx !== undefined) {
      if (!(tx instanceof PgliteTx) || tx.db !== this) throw new DbError("invalid_argument", "tx: must be the tx argument of a transaction() of this Db");
      if (!tx.active) throw new DbError("invalid_argument", "tx: this transaction has already finished");
      return copyAll(tx);
    }
    return this.transaction(copyAll, { retriesMax: 0 });
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    this.checkOpen();
    checkChannelName(channel);
    if (this.listeners.size >= LISTEN_CHANNELS_MAX) throw new DbError("invalid_argument", `listen: at most ${LISTEN_CHANNELS_MAX} channels per Db`);
    // LISTEN runs holding the instance: between another Db's statements it would join (and could
    // be rolled back with) that Db's transaction.
    const unlisten = await this.exclusive("db.listen()", () => this.state.pglite.listen(channel, onNotify));
    const stop = async (): Promise<void> => {
      if (!this.listeners.delete(stop) || this.state.closed) return;
      await this.exclusive("db.listen() stop", () => unlisten()).catch(() => {});
    };
    this.listeners.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.all([...this.listeners].map((stop) => stop()));
    // Wait for work already queued on the instance, then refuse new work. The instance stays open.
    if (!this.state.closed) await this.state.mutex.run(async () => {}, EMBEDDED_LOCK_WAIT_MS_MAX, `db.close() (${this.schema})`);
    this.closed = true;
  }
}
