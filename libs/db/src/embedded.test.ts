import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openDb, openEmbeddedPostgres } from "./index.js";

describe("embedded PostgreSQL on disk", () => {
  // Two PGlite starts from disk (initdb, then a reopen): seconds each, far more on a loaded machine.
  it("keeps data in dataDir across a close and a reopen, and refuses work after close", { timeout: 240_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "nanobill-db-"));
    try {
      const dataDir = join(dir, "nested", "pgdata");
      const first = await openEmbeddedPostgres({ dataDir });
      const db1 = await openDb({ embedded: first, schema: "ledger" });
      await db1.query("CREATE TABLE kept (amount_nanos int8)");
      await db1.query("INSERT INTO kept VALUES ($1)", [9_223_372_036_854_775_807n]);
      await first.close();
      await expect(db1.query("SELECT 1")).rejects.toMatchObject({ code: "unavailable" });

      const second = await openEmbeddedPostgres({ dataDir });
      const db2 = await openDb({ embedded: second, schema: "ledger" });
      expect((await db2.query("SELECT amount_nanos FROM kept")).rows).toEqual([{ amount_nanos: 9_223_372_036_854_775_807n }]);
      await second.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
