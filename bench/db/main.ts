/**
 * bench/db: bulk-insert throughput on the real PostgreSQL (DATABASE_URL, default the local test
 * server) and on PGlite. Prints rows/s of copyRows() (COPY FROM STDIN on pg, multi-row INSERT on
 * PGlite) beside the alternatives it was chosen over: INSERT ... SELECT FROM unnest(typed arrays),
 * chunked multi-row VALUES, and a plain single-row INSERT loop (one statement per row, autocommit
 * and in one transaction). Figures, not pass/fail.
 *
 *   npx tsx bench/db/main.ts [rows]     (default 50,000; the single-row loops use rows/10)
 */
import { COPY_CHUNK_ROWS, QUERY_PARAMS_MAX, openDb, openEmbeddedPostgres, type Db, type Queryable } from "@nanobill/db";

const ROWS = Number(process.argv[2] ?? 50_000);
const URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const COLUMNS = ["id", "account_id", "amount_nanos", "unit", "created_at", "meta"];

function makeRows(n: number, offset: number): unknown[][] {
  const at = new Date("2026-01-01T00:00:00Z");
  return Array.from({ length: n }, (_, i) => [
    `xfer_${offset + i}`,
    `acct_${(offset + i) % 1000}`,
    BigInt(offset + i) * 1_000_000_007n,
    "USD",
    at,
    { k: i % 7 },
  ]);
}

async function reset(db: Db): Promise<void> {
  await db.query(`DROP TABLE IF EXISTS bench_rows;
    CREATE TABLE bench_rows (id text PRIMARY KEY, account_id text NOT NULL, amount_nanos bigint NOT NULL,
      unit text NOT NULL, created_at timestamptz NOT NULL, meta jsonb);
    CREATE INDEX bench_rows_account ON bench_rows (account_id, created_at)`);
}

async function unnestInsert(q: Queryable, rows: unknown[][]): Promise<void> {
  for (let s = 0; s < rows.length; s += COPY_CHUNK_ROWS) {
    const chunk = rows.slice(s, s + COPY_CHUNK_ROWS);
    const cols = COLUMNS.map((_, c) => chunk.map((r) => r[c]));
    await q.query(
      `INSERT INTO bench_rows (${COLUMNS.join(", ")})
       SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::timestamptz[], $6::jsonb[])`,
      [cols[0], cols[1], (cols[2] as bigint[]).map(String), cols[3], cols[4], (cols[5] as object[]).map((o) => JSON.stringify(o))],
    );
  }
}

async function valuesInsert(q: Queryable, rows: unknown[][]): Promise<void> {
  const per = Math.min(COPY_CHUNK_ROWS, Math.floor(QUERY_PARAMS_MAX / COLUMNS.length));
  for (let s = 0; s < rows.length; s += per) {
    const chunk = rows.slice(s, s + per);
    const params: unknown[] = [];
    const tuples = chunk.map((r) => `(${r.map((v) => (params.push(v), `$${params.length}`)).join(",")})`);
    await q.query(`INSERT INTO bench_rows (${COLUMNS.join(", ")}) VALUES ${tuples.join(",")}`, params);
  }
}

async function singleRows(q: Queryable, rows: unknown[][]): Promise<void> {
  for (const r of rows) await q.query(`INSERT INTO bench_rows (${COLUMNS.join(", ")}) VALUES ($1, $2, $3, $4, $5, $6)`, r);
}

async function measure(db: Db, label: string, n: number, run: (rows: unknown[][]) => Promise<void>): Promise<void> {
  await reset(db);
  await run(makeRows(Math.min(1000, n), 10_000_000)); // warm-up (plans, connections)
  const rows = makeRows(n, 0);
  const t0 = process.hrtime.bigint();
  await run(rows);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const check = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM bench_rows WHERE id NOT LIKE 'xfer_1000____'");
  const rate = Math.round((n / ms) * 1000);
  console.log(`${db.kind.padEnd(7)} ${label.padEnd(44)} ${String(n).padStart(7)} rows ${ms.toFixed(0).padStart(7)} ms ${String(rate).padStart(9)} rows/s  (${check.rows[0]!.n} in table)`);
}

async function suite(db: Db): Promise<void> {
  await measure(db, "copyRows()", ROWS, async (rows) => void (await db.copyRows("bench_rows", COLUMNS, rows)));
  await measure(db, "INSERT SELECT unnest(typed arrays), 1 tx", ROWS, (rows) => db.transaction((tx) => unnestInsert(tx, rows)));
  await measure(db, "multi-row INSERT VALUES, 1 tx", ROWS, (rows) => db.transaction((tx) => valuesInsert(tx, rows)));
  const few = Math.max(1, Math.floor(ROWS / 10));
  await measure(db, "single-row INSERT loop, 1 tx", few, (rows) => db.transaction((tx) => singleRows(tx, rows)));
  await measure(db, "single-row INSERT loop, autocommit", few, (rows) => singleRows(db, rows));
  await db.query("DROP TABLE bench_rows");
}

async function main(): Promise<void> {
  console.log(`rows per bulk run: ${ROWS}; COPY_CHUNK_ROWS ${COPY_CHUNK_ROWS}; node ${process.version}`);
  const schema = `bench_db_${process.pid}`;
  const pgDb = await openDb({ url: URL, schema, poolMax: 2 });
  try {
    await suite(pgDb);
  } finally {
    await pgDb.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await pgDb.close();
  }
  if (process.env.BENCH_PGLITE !== "0") {
    const embedded = await openEmbeddedPostgres({});
    try {
      await suite(await openDb({ embedded, schema }));
    } finally {
      await embedded.close();
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
