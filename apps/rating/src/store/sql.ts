import { unnestInsert, type Queryable } from "@nanobill/db";
import { SQL_ROWS_PER_STATEMENT_MAX } from "../limits.js";

/**
 * insertMany: multi-row INSERT ... VALUES (...), (...) <suffix> in chunks of
 * SQL_ROWS_PER_STATEMENT_MAX rows (suffix: e.g. an ON CONFLICT clause). casts[i] (optional) is
 * appended to the i-th placeholder ("::numeric").
 */
export async function insertMany(tx: Queryable, table: string, columns: string[], rows: unknown[][], suffix = "", casts: string[] = []): Promise<number> {
  let n = 0;
  for (let off = 0; off < rows.length; off += SQL_ROWS_PER_STATEMENT_MAX) {
    const chunk = rows.slice(off, off + SQL_ROWS_PER_STATEMENT_MAX);
    const params: unknown[] = [];
    const tuples: string[] = [];
    for (const r of chunk) {
      const ph: string[] = [];
      for (let i = 0; i < columns.length; i++) {
        params.push(r[i]);
        ph.push(`$${params.length}${casts[i] ?? ""}`);
      }
      tuples.push(`(${ph.join(",")})`);
    }
    const res = await tx.query(`INSERT INTO ${table} (${columns.join(",")}) VALUES ${tuples.join(",")} ${suffix}`, params);
    n += res.rowCount;
  }
  return n;
}

/** ms -> Date for TIMESTAMPTZ parameters (null stays null). */
export function ts(ms: number | null): Date | null {
  return ms === null ? null : new Date(ms);
}

/** Date (or null) -> ms. */
export function msOf(d: unknown): number | null {
  if (d === null || d === undefined) return null;
  return (d as Date).getTime();
}

/** msOf for NOT NULL columns. */
export function msOfNN(d: unknown): number {
  return (d as Date).getTime();
}

/** BIGINT column -> bigint (pg and PGlite already give bigint; strings are accepted defensively). */
export function big(v: unknown): bigint {
  return typeof v === "bigint" ? v : BigInt(v as string);
}

/** insertUnnest: @nanobill/db's unnestInsert (one array per column), run on tx; returns rows inserted. */
export async function insertUnnest(tx: Queryable, table: string, columns: string[], types: string[], rows: unknown[][], suffix = ""): Promise<number> {
  if (rows.length === 0) return 0;
  const st = unnestInsert(table, columns, types, rows, suffix);
  return (await tx.query(st.sql, st.params)).rowCount;
}

/**
 * lockCustomers: transaction-scoped advisory locks on customers, in hash order (no deadlock). The
 * one lock per customer that rating's batch transactions and the catalog writes that must agree
 * with them take: a consumer batch (its carries and period totals are read and written back
 * whole) and a subscription or override write (which checks the customer's rated events) never
 * interleave on one customer.
 */
export async function lockCustomers(q: Queryable, customers: ReadonlyArray<{ tenant: string; customerId: string }>): Promise<void> {
  if (customers.length === 0) return;
  await q.query(
    `SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(t || '/' || c, 7) AS h FROM unnest($1::text[], $2::text[]) AS u(t, c) ORDER BY h) AS s`,
    [customers.map((c) => c.tenant), customers.map((c) => c.customerId)],
  );
}
