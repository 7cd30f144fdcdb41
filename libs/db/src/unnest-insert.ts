import { DbError } from "./errors.js";
import { checkCopyArgs } from "./common.js";
import type { PipelineStatement } from "./types.js";

/**
 * INSERT INTO table (columns) SELECT * FROM unnest($1::type[], ...) <suffix>: one statement of one
 * array per column, whatever the row count (a multi-row VALUES list of n rows has n x columns
 * parameters for PostgreSQL to parse and plan), so it fits in a Tx.pipeline() beside the statements
 * around it (copyRows is a round trip of its own). types[i] is the i-th column's SQL type; values
 * go as text: bigint and number -> decimal, Date -> ISO 8601, null / undefined -> NULL, strings as
 * they are (JSON columns take their JSON text).
 */
export function unnestInsert(table: string, columns: string[], types: string[], rows: unknown[][], suffix = ""): PipelineStatement {
  const { tableSql, columnsSql } = checkCopyArgs(table, columns, rows);
  if (types.length !== columns.length || !types.every((t) => /^[a-z][a-z0-9 ]*$/.test(t))) {
    throw new DbError("invalid_argument", "types: must name one SQL type ([a-z][a-z0-9 ]*) per column");
  }
  const arrays: (string | null)[][] = columns.map(() => new Array<string | null>(rows.length));
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    for (let c = 0; c < columns.length; c++) arrays[c]![r] = textOf(row[c], r, c);
  }
  const args = types.map((t, i) => `$${i + 1}::${t}[]`).join(",");
  return { sql: `INSERT INTO ${tableSql} (${columnsSql.join(",")}) SELECT * FROM unnest(${args}) ${suffix}`.trimEnd(), params: arrays };
}

function textOf(v: unknown, r: number, c: number): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") return v;
  if (typeof v === "bigint" || typeof v === "number") return v.toString();
  if (v instanceof Date) return v.toISOString();
  throw new DbError("invalid_argument", `rows[${r}][${c}]: unsupported value of type ${typeof v} (string, number, bigint, Date or null)`);
}
