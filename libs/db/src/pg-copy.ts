/**
 * COPY ... FROM STDIN (text format) over a pg client without pg-copy-streams: pg accepts any
 * "Submittable" (the documented extension point pg-cursor and pg-query-stream use), and its
 * Connection has sendCopyFromChunk / endCopyFrom / sendCopyFail.
 */
import { once } from "node:events";
import { toDbError } from "./errors.js";
import { encodeCopyChunk } from "./copy-text.js";
import { COPY_CHUNK_ROWS } from "./limits.js";

interface PgConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  sendCopyFail(msg: string): void;
  stream: NodeJS.WritableStream & { writableNeedDrain?: boolean; writable?: boolean };
}

/** The part of pg.PoolClient used here. */
export interface PgCopyClient {
  query(submittable: object): unknown;
}

/** Waits for the socket to drain (backpressure), or to close (the query then fails through handleError). */
async function drainOrClose(stream: NodeJS.WritableStream): Promise<void> {
  const ac = new AbortController();
  try {
    await Promise.race([once(stream, "drain", { signal: ac.signal }), once(stream, "close", { signal: ac.signal })]);
  } finally {
    ac.abort();
  }
}

class CopyInQuery {
  callback: ((err: unknown, rowCount?: number) => void) | undefined;
  private rowCount = 0;
  private failed = false;

  constructor(
    private readonly text: string,
    private readonly rows: unknown[][],
  ) {}

  submit(connection: PgConnection): void {
    connection.query(this.text);
  }

  handleCopyInResponse(connection: PgConnection): void {
    void this.send(connection);
  }

  private async send(connection: PgConnection): Promise<void> {
    try {
      for (let start = 0; start < this.rows.length && !this.failed; start += COPY_CHUNK_ROWS) {
        const end = Math.min(this.rows.length, start + COPY_CHUNK_ROWS);
        connection.sendCopyFromChunk(encodeCopyChunk(this.rows, start, end));
        if (connection.stream.writableNeedDrain) await drainOrClose(connection.stream);
      }
      if (!this.failed) connection.endCopyFrom();
    } catch (e) {
      // Encoding failed: make the server abort the COPY; its error reaches handleError.
      this.encodeError = e;
      connection.sendCopyFail(e instanceof Error ? e.message : String(e));
    }
  }

  private encodeError: unknown;

  handleCommandComplete(msg: { text?: string }): void {
    const m = /^COPY (\d+)/.exec(msg.text ?? "");
    if (m) this.rowCount = Number(m[1]);
  }

  handleReadyForQuery(): void {
    this.callback?.(null, this.rowCount);
  }

  handleError(err: unknown): void {
    this.failed = true;
    this.callback?.(this.encodeError ?? err);
  }

  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyData(): void {}
}

/** COPY rows into table (quoted names given) on this client; returns rows copied. */
export async function copyIn(client: PgCopyClient, tableSql: string, columnsSql: string[], rows: unknown[][]): Promise<number> {
  const q = new CopyInQuery(`COPY ${tableSql} (${columnsSql.join(", ")}) FROM STDIN`, rows);
  try {
    return await new Promise<number>((resolve, reject) => {
      q.callback = (err, n) => (err ? reject(err) : resolve(n ?? 0));
      client.query(q);
    });
  } catch (e) {
    throw toDbError(e);
  }
}
