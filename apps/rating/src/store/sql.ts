import type { Queryable } from "@nanobill/db";
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

/**
 * insertUnnest: INSERT INTO table (columns) SELECT * FROM unnest($1::type[], ...) <suffix>: one
 * statement of one array per column, whatever the row count (a multi-row VALUES list of n rows
 * has n x columns parameters for PostgreSQL to parse and plan). types[i] is the i-th column's SQL
 * type; values go as text (bigint and number -> decimal, Date -> ISO 8601, null stays null).
 */
export async function insertUnnest(tx: Queryable, table: string, columns: string[], types: string[], rows: unknown[][], suffix = ""): Promise<number> {
  if (rows.length === 0) return 0;
  const arrays: unknown[][] = columns.map(() => new Array<unknown>(rows.length));
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    for (let c = 0; c < columns.length; c++) arrays[c]![r] = textOf(row[c]);
  }
  const args = types.map((t, i) => `$${i + 1}::${t}[]`).join(",");
  const res = await tx.query(`INSERT INTO ${table} (${columns.join(",")}) SELECT * FROM unnest(${args}) ${suffix}`, arrays);
  return res.rowCount;
}

function textOf(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") return v;
  if (typeof v === "bigint" || typeof v === "number") return v.toString();
  if (v instanceof Date) return v.toISOString();
  throw new Error(`insertUnnest: unsupported value ${typeof v}`);
}
