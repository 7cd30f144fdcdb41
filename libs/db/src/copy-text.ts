/**
 * COPY text format (the default of COPY ... FROM): one encoder for both backends, so that
 * copyRows() turns a JS value into the same SQL value on pg (COPY FROM STDIN) and on PGlite
 * (COPY FROM '/dev/blob').
 *   null/undefined -> NULL; bigint/number -> decimal; boolean -> t/f; string -> itself;
 *   Date -> ISO 8601 UTC; Buffer/Uint8Array -> bytea hex; JS array -> PostgreSQL array literal;
 *   other objects -> JSON (for a jsonb column holding a JSON array, pass JSON.stringify(array)).
 */
import { DbError } from "./errors.js";

/** PostgreSQL array literal: every element double-quoted, NULL for null. */
export function arrayLiteral(a: unknown[]): string {
  const parts: string[] = new Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (v === null || v === undefined) parts[i] = "NULL";
    else if (Array.isArray(v)) parts[i] = arrayLiteral(v);
    else {
      let s: string;
      if (typeof v === "string") s = v;
      else if (typeof v === "bigint" || typeof v === "number") s = String(v);
      else if (typeof v === "boolean") s = v ? "t" : "f";
      else if (v instanceof Date) s = v.toISOString();
      else if (ArrayBuffer.isView(v)) s = "\\x" + Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex");
      else if (typeof v === "object") s = JSON.stringify(v);
      else throw new DbError("invalid_argument", `rows: cannot encode an array element of type ${typeof v}`);
      parts[i] = '"' + s.replace(/[\\"]/g, (c) => "\\" + c) + '"';
    }
  }
  return "{" + parts.join(",") + "}";
}

/** One value in COPY text format (already escaped); `\N` for NULL. */
export function copyText(v: unknown): string {
  if (v === null || v === undefined) return "\\N";
  switch (typeof v) {
    case "bigint":
      return v.toString();
    case "number":
      if (Number.isNaN(v)) return "NaN";
      return String(v);
    case "boolean":
      return v ? "t" : "f";
    case "string":
      return escapeCopy(v);
    case "object": {
      if (v instanceof Date) {
        if (Number.isNaN(v.getTime())) throw new DbError("invalid_argument", "rows: invalid Date");
        return v.toISOString();
      }
      if (ArrayBuffer.isView(v)) {
        const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
        return "\\\\x" + b.toString("hex");
      }
      if (Array.isArray(v)) {
        return escapeCopy(arrayLiteral(v));
      }
      return escapeCopy(JSON.stringify(v));
    }
    default:
      throw new DbError("invalid_argument", `rows: cannot encode a value of type ${typeof v}`);
  }
}

const NEEDS_ESCAPE = /[\\\n\r\t]/;
function escapeCopy(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return s;
  let out = "";
  for (const ch of s) {
    if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else out += ch;
  }
  return out;
}

/** Rows [start, end) as COPY text: tab-separated, one line each, newline-terminated. */
export function encodeCopyChunk(rows: unknown[][], start: number, end: number): Buffer {
  const lines: string[] = new Array(end - start);
  for (let i = start; i < end; i++) {
    const row = rows[i]!;
    let line = "";
    for (let c = 0; c < row.length; c++) {
      if (c > 0) line += "\t";
      try {
        line += copyText(row[c]);
      } catch (e) {
        throw new DbError("invalid_argument", `rows[${i}][${c}]: ${(e as Error).message.replace(/^rows: /, "")}`, { cause: e });
      }
    }
    lines[i - start] = line;
  }
  return Buffer.from(lines.join("\n") + "\n", "utf8");
}
