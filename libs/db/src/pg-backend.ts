import pg from "pg";
import {
  assertNotInTransaction,
  beginSql,
  checkChannelName,
  checkCopyArgs,
  checkPipeline,
  checkIntOption,
  checkSchemaName,
  normalizeParams,
  quoteIdent,
  retriesOf,
  txContext,
  withRetries,
  type TxContext,
} from "./common.js";
import { copyIn, type PgCopyClient } from "./pg-copy.js";
import { prepareValue, preparePipeline, runPipeline } from "./pg-pipeline.js";
import { DbError, toDbError } from "./errors.js";
import {
  CONNECT_TIMEOUT_MS,
  LISTEN_CHANNELS_MAX,
  LISTEN_RECONNECT_MS,
  POOL_IDLE_TIMEOUT_MS,
  POOL_MAX_DEFAULT,
  POOL_MAX_LIMIT,
  STATEMENT_TIMEOUT_MS_DEFAULT,
  STATEMENT_TIMEOUT_MS_MAX,
} from "./limits.js";
import type { Db, PipelineStatement, Queryable, Row, TransactionOptions, Tx } from "./types.js";

const OID_INT8 = 20;
const OID_INT8_ARRAY = 1016;

const parseBigInt = (v: string): bigint => BigInt(v);
const defaultInt8ArrayParser = (pg.types.getTypeParser as (oid: number, format: string) => (v: string) => unknown)(OID_INT8_ARRAY, "text");
const bigIntDeep = (v: unknown): unknown =>
  Array.isArray(v) ? v.map(bigIntDeep) : typeof v === "string" || typeof v === "number" ? BigInt(v) : v;
/** pg's own int8[] parser gives strings; make them bigints. */
const parseBigIntArray = (v: string): unknown => bigIntDeep(defaultInt8ArrayParser(v));

/** Type parsers of our Pools only (pg's global defaults stay untouched). */
export const pgTypes = {
  getTypeParser(oid: number, format?: "text" | "binary"): (v: string) => unknown {
    if (format === undefined || format === "text") {
      if (oid === OID_INT8) return parseBigInt;
      if (oid === OID_INT8_ARRAY) return parseBigIntArray;
    }
    // NUMERIC stays a string, TIMESTAMPTZ a Date, JSONB an object, BYTEA a Buffer: pg's defaults.
    return (pg.types.getTypeParser as (oid: number, format?: string) => (v: string) => unknown)(oid, format ?? "text");
  },
};

type PgResult = { rows: Row[]; rowCount: number | null; command?: string };

function lastResult(r: PgResult | PgResult[]): PgResult | undefined {
  return Array.isArray(r) ? r[r.length - 1] : r;
}

async function runQuery<R extends Row>(
  client: pg.Pool | pg.PoolClient,
  sql: string,
  params: unknown[] | undefined,
): Promise<{ rows: R[]; rowCount: number; command: string | undefined }> {
  let res: PgResult | PgResult[];
  try {
    const p = normalizeParams(params);
    res = (await (p === undefined || p.length === 0 ? client.query(sql) : client.query(sql, p.map((v) => (Array.isArray(v) ? prepareValue(v) : v))))) as unknown as PgResult | PgResult[];
  } catch (e) {
    throw toDbError(e);
  }
  const last = lastResult(res);
  if (last === undefined) return { rows: [], rowCount: 0, command: undefined };
  return { rows: last.rows as R[], rowCount: last.rowCount ?? last.rows.length, command: last.command };
}

class PgTx implements Tx {
  active = true;
  /** BEGIN goes out with the transaction's first statement (one round trip less per transaction). */
  begun = false;
  constructor(
    readonly db: PgDb,
    readonly client: pg.PoolClient,
    private readonly beginSql: string,
  ) {}

  private checkActive(): void {
    if (!this.active) throw new DbError("invalid_argument", "tx: this transaction has already finished (a query outlived its transaction() callback)");
  }

  /** Sends BEGIN on its own (before a statement that cannot carry it: COPY, a text without parameters). */
  async begin(): Promise<void> {
    if (this.begun) return;
    this.begun = true;
    await runQuery(this.client, this.beginSql, undefined);
  }

  async query<R extends Row = Row>(sql: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }> {
    this.checkActive();
    const p = normalizeParams(params);
    if (!this.begun && p !== undefined && p.length > 0) {
      // One statement with parameters: it goes out with the BEGIN (a text without parameters may
      // hold several statements, which the extended protocol refuses: those get their own BEGIN).
      const [r] = await this.pipeline<R>([{ sql, params: p }]);
      return r!;
    }
    if (!this.begun) {
      // BEGIN and the statement are queued together: a concurrent call on this tx cannot run between them.
      this.begun = true;
      const [, r] = await Promise.all([runQuery(this.client, this.beginSql, undefined), runQuery<R>(this.client, sql, params)]);
      return { rows: r.rows, rowCount: r.rowCount };
    }
    const { rows, rowCount } = await runQuery<R>(this.client, sql, params);
    return { rows, rowCount };
  }

  async pipeline<R extends Row = Row>(statements: PipelineStatement[]): Promise<{ rows: R[]; rowCount: number }[]> {
    this.checkActive();
    checkPipeline(statements);
    // Converted before BEGIN counts as sent: a value pg cannot send fails here with nothing sent,
    // and the transaction's next statement still carries the BEGIN.
    const prepared = preparePipeline(statements);
    const withBegin = !this.begun;
    this.begun = true;
    const all = withBegin ? [{ sql: this.beginSql, values: [] }, ...prepared] : prepared;
    const results = await runPipeline(this.client, all, pgTypes);
    return (withBegin ? results.slice(1) : results).map((r) => ({ rows: r.rows as R[], rowCount: r.rowCount }));
  }
}

export class PgDb implements Db {
  readonly kind = "pg" as const;
  private closed = false;

  private readonly listeners = new Set<() => Promise<void>>();

  private constructor(
    readonly schema: string,
    private readonly pool: pg.Pool,
    private readonly url: string,
  ) {}

  static async open(opts: { url: string; schema: string; poolMax?: number; statementTimeoutMs?: number }): Promise<PgDb> {
    checkSchemaName(opts.schema);
    const max = checkIntOption(opts.poolMax, "poolMax", 1, POOL_MAX_LIMIT, POOL_MAX_DEFAULT);
    const timeout = checkIntOption(opts.statementTimeoutMs, "statementTimeoutMs", 1, STATEMENT_TIMEOUT_MS_MAX, STATEMENT_TIMEOUT_MS_DEFAULT);
    const pool = new pg.Pool({
      connectionString: opts.url,
      max,
      options: `-c search_path=${opts.schema} -c statement_timeout=${timeout}`,
      types: pgTypes,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: POOL_IDLE_TIMEOUT_MS,
      application_name: `nanobill:${opts.schema}`,
    } as pg.PoolConfig);
    // A client losing its connection (pg_terminate_backend, a failover, a proxy restart) emits
    // "error"; an "error" without a listener kills the process. pg-pool listens only while a client
    // is idle (then re-emits on the pool, heard here) and pool.query() while its query runs;
    // transaction() adds its own listener, but only after `await pool.connect()`, and a session
    // cut as it connects delivers ReadyForQuery and the FATAL in one read, i.e. before that.
    // So every client gets a permanent listener as it is created; a client that lost its
    // connection is not queryable any more and pg-pool discards it on release.
    pool.on("error", () => {});
    pool.on("connect", (client) => {
      client.on("error", () => {});
    });
    const db = new PgDb(opts.schema, pool, opts.url);
    try {
      await db.createSchema();
    } catch (e) {
      await pool.end().catch(() => {});
      throw e;
    }
    return db;
  }

  private async createSchema(): Promise<void> {
    // An existing schema is not created again: a role without CREATE on the database (a
    // DML-only runtime role, NANOBILL_MIGRATE_ON_START=false) can open it.
    const found = await runQuery(this.pool, "SELECT 1 FROM pg_namespace WHERE nspname = $1", [this.schema]);
    if (found.rowCount === 1) return;
    try {
      await runQuery(this.pool, `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema, "schema")}`, undefined);
    } catch (e) {
      // Two processes creating the same schema at once: one of them sees a duplicate; fine.
      const d = toDbError(e);
      if (d.sqlState !== "23505" && d.sqlState !== "42P06") throw d;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new DbError("unavailable", `db (${this.schema}): closed`);
  }

  async query<R extends Row = Row>(sql: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }> {
    this.checkOpen();
    assertNotInTransaction(this, undefined, "db.query()");
    const { rows, rowCount } = await runQuery<R>(this.pool, sql, params);
    return { rows, rowCount };
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>, opts?: TransactionOptions): Promise<T> {
    this.checkOpen();
    assertNotInTransaction(this, undefined, "db.transaction()");
    const begin = beginSql(opts);
    return withRetries(retriesOf(opts), () => this.runTransaction(fn, begin));
  }

  private async runTransaction<T>(fn: (tx: PgTx) => Promise<T>, begin: string): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (e) {
      throw toDbError(e);
    }
    const tx = new PgTx(this, client, begin);
    const ctx: TxContext = { owner: this, instance: undefined, active: true };
    let broken = false;
    // A checked-out client whose connection dies emits "error"; pg-pool only listens on idle
    // clients, and an unheard "error" would crash the process. The running query fails anyway.
    const onError = (): void => {
      broken = true;
    };
    client.on("error", onError);
    try {
      const out = await txContext.run(ctx, () => fn(tx));
      // From here on a query through tx (a stray async step of the callback) is refused instead of
      // being queued behind COMMIT / ROLLBACK and run on its own, in autocommit (as on PGlite).
      tx.active = false;
      // A callback that ran no statement began nothing: nothing to commit.
      const commit = tx.begun ? await runQuery(client, "COMMIT", undefined) : undefined;
      if (commit?.command === "ROLLBACK") {
        throw new DbError("query", "transaction rolled back at COMMIT: a statement inside it failed and its error was caught and ignored");
      }
      return out;
    } catch (e) {
      tx.active = false;
      if (tx.begun) {
        try {
          await client.query("ROLLBACK");
        } catch {
          broken = true;
        }
      }
      throw e;
    } finally {
      tx.active = false;
      ctx.active = false;
      client.off("error", onError);
      client.release(broken ? new Error("connection broken; discarding it") : undefined);
    }
  }

  async copyRows(table: string, columns: string[], rows: unknown[][], tx?: Queryable): Promise<number> {
    this.checkOpen();
    const { tableSql, columnsSql } = checkCopyArgs(table, columns, rows);
    if (rows.length === 0) return 0;
    if (tx !== undefined) {
      if (!(tx instanceof PgTx) || tx.db !== this) throw new DbError("invalid_argument", "tx: must be the tx argument of a transaction() of this Db");
      if (!tx.active) throw new DbError("invalid_argument", "tx: this transaction has already finished");
      await tx.begin();
      return copyIn(tx.client as unknown as PgCopyClient, tableSql, columnsSql, rows);
    }
    return this.transaction(
      async (t) => {
        await (t as PgTx).begin();
        return copyIn((t as PgTx).client as unknown as PgCopyClient, tableSql, columnsSql, rows);
      },
      { retriesMax: 0 },
    );
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    this.checkOpen();
    checkChannelName(channel);
    if (this.listeners.size >= LISTEN_CHANNELS_MAX) throw new DbError("invalid_argument", `listen: at most ${LISTEN_CHANNELS_MAX} channels per Db`);
    let client: pg.Client | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    const open = async (first: boolean): Promise<void> => {
      const c = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, application_name: `nanobill:${this.schema}:listen` } as pg.ClientConfig);
      const lost = (): void => {
        if (client === c) client = undefined;
        c.removeAllListeners("end");
        c.end().catch(() => {});
        if (!stopped && timer === undefined) {
          timer = setTimeout(() => {
            timer = undefined;
            if (!stopped) open(false).catch(() => {});
          }, LISTEN_RECONNECT_MS);
          timer.unref();
        }
      };
      c.on("error", lost);
      c.on("end", lost);
      c.on("notification", (m) => {
        if (m.channel === channel) onNotify(m.payload ?? "");
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${quoteIdent(channel, "channel")}`);
      } catch (e) {
        // The first connection's failure is the caller's (nothing is left running); later ones retry.
        if (first) stopped = true;
        lost();
        throw toDbError(e);
      }
      if (stopped) return void c.end().catch(() => {});
      client = c;
    };
    await open(true);
    const stop = async (): Promise<void> => {
      stopped = true;
      this.listeners.delete(stop);
      clearTimeout(timer);
      const c = client;
      client = undefined;
      if (c) {
        c.removeAllListeners("end");
        await c.end().catch(() => {});
      }
    };
    this.listeners.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.listeners].map((stop) => stop()));
    await this.pool.end();
  }
}
