/**
 * Several statements in one round trip on a pg client: Parse/Bind/Describe/Execute for each, then
 * one Sync (PostgreSQL's extended protocol allows any number before the Sync). pg runs one query
 * per round trip; this Submittable (the extension point pg-copy.ts uses too) sends them all at once.
 * The statements run in order; after an error the server skips the rest up to the Sync, so the
 * call fails with that error and nothing after it ran (a returned row our type parsers refuse is
 * reported at the end, after the others ran: as on pg's own path, inside a transaction that then
 * rolls back). Values are converted (pg's prepareValue, preparePipeline) before anything is sent,
 * so a bad value fails the call with nothing sent. A COPY FROM STDIN in a pipeline fails.
 */
import { createRequire } from "node:module";
import pg from "pg";
import { toDbError } from "./errors.js";
import type { PipelineStatement, Row } from "./types.js";

interface PgConnection {
  parse(msg: { text: string; name?: string; types?: number[] }): void;
  bind(msg: { portal?: string; statement?: string; values?: unknown[] }): void;
  describe(msg: { type: "P" | "S"; name?: string }): void;
  execute(msg: { portal?: string; rows?: number }): void;
  sync(): void;
  sendCopyFail(msg: string): void;
  stream: { cork?: () => void; uncork?: () => void };
}

interface PgResultLike {
  rows: Row[];
  rowCount: number | null;
  command: string;
  addFields(fields: unknown[]): void;
  parseRow(fields: unknown[]): Row;
  addRow(row: Row): void;
  addCommandComplete(msg: unknown): void;
}

type ResultCtor = new (rowMode: undefined, types: unknown) => PgResultLike;
const Result = (pg as unknown as { Result: ResultCtor }).Result;
/** pg's own conversion of a parameter (what pg.Client#query applies), so values mean the same here. */
const { prepareValue: pgPrepareValue } = createRequire(import.meta.url)("pg/lib/utils.js") as { prepareValue: (v: unknown) => unknown };

const ARRAY_ELEMENT_ESCAPED = /[\\"]/;
/**
 * pg's conversion of a parameter, with its commonest case done cheaper: an array of strings (and
 * nulls), the unnest() parameters of every batch write, becomes the same array literal text as
 * pg's arrayString builds, in half the time and without its chain of concatenated strings (pg's
 * array encoding was a ninth of the bytes metering's server allocated per event: heap profile of
 * bench/ingest, 2026-11-30). Anything else goes to pg's prepareValue.
 */
export function prepareValue(v: unknown): unknown {
  if (!Array.isArray(v)) return pgPrepareValue(v);
  const parts = new Array<string>(v.length);
  for (let i = 0; i < v.length; i++) {
    const e: unknown = v[i];
    if (typeof e === "string") parts[i] = ARRAY_ELEMENT_ESCAPED.test(e) ? '"' + e.replace(/[\\"]/g, "\\$&") + '"' : '"' + e + '"';
    else if (e === null || e === undefined) parts[i] = "NULL";
    else return pgPrepareValue(v);
  }
  return "{" + parts.join(",") + "}";
}

/** A statement with its values converted (pg's prepareValue), ready to send. */
export interface PreparedStatement {
  sql: string;
  values: unknown[];
}

export interface PipelineResult {
  rows: Row[];
  rowCount: number;
  command: string | undefined;
}

class PipelineQuery {
  callback: ((err: unknown, results?: PipelineResult[]) => void) | undefined;
  private readonly results: PipelineResult[] = [];
  private current: PgResultLike;
  private rowError: unknown;

  constructor(
    private readonly statements: PreparedStatement[],
    private readonly types: unknown,
  ) {
    this.current = new Result(undefined, types);
  }

  submit(connection: PgConnection): void {
    connection.stream.cork?.();
    try {
      for (const s of this.statements) {
        connection.parse({ text: s.sql, types: [] });
        connection.bind({ values: s.values });
        connection.describe({ type: "P" });
        connection.execute({ rows: 0 });
      }
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
  }

  handleRowDescription(msg: { fields: unknown[] }): void {
    this.current.addFields(msg.fields);
  }

  handleDataRow(msg: { fields: unknown[] }): void {
    if (this.rowError !== undefined) return;
    try {
      this.current.addRow(this.current.parseRow(msg.fields));
    } catch (e) {
      this.rowError = e;
    }
  }

  handleCommandComplete(msg: unknown): void {
    this.current.addCommandComplete(msg);
    const r = this.current;
    this.results.push({ rows: r.rows, rowCount: r.rowCount ?? r.rows.length, command: r.command });
    this.current = new Result(undefined, this.types);
  }

  handleEmptyQuery(): void {
    this.results.push({ rows: [], rowCount: 0, command: undefined });
  }

  handleReadyForQuery(): void {
    if (this.rowError !== undefined) this.callback?.(this.rowError);
    else this.callback?.(null, this.results);
  }

  handleError(err: unknown): void {
    this.callback?.(this.rowError ?? err);
  }

  handlePortalSuspended(): void {}
  handleCopyInResponse(connection: PgConnection): void {
    connection.sendCopyFail("COPY FROM STDIN is not supported in a pipeline");
    // The server read (and ignored) the pipeline's Sync while copying in, and after the CopyFail
    // it skips everything up to the next Sync: without this one the connection would hang.
    connection.sync();
  }
  handleCopyData(): void {}
}

/** Converts every value first: one pg cannot send throws here, before anything is sent. */
export function preparePipeline(statements: PipelineStatement[]): PreparedStatement[] {
  try {
    return statements.map((s) => ({ sql: s.sql, values: s.params.map((v) => prepareValue(v === undefined ? null : v)) }));
  } catch (e) {
    throw toDbError(e);
  }
}

/** Runs the statements in order in one round trip; one result per statement. */
export async function runPipeline(client: { query(submittable: object): unknown }, statements: PreparedStatement[], types: unknown): Promise<PipelineResult[]> {
  const q = new PipelineQuery(statements, types);
  try {
    return await new Promise<PipelineResult[]>((resolve, reject) => {
      q.callback = (err, results) => (err ? reject(err) : resolve(results ?? []));
      client.query(q);
    });
  } catch (e) {
    throw toDbError(e);
  }
}
