import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openDb, openEmbeddedPostgres } from "./index.js";

describe("embedded PostgreSQL on disk", () => {
  // Two PGlite starts from disk (initdb, then a reopen): seconds each, far more on a loaded machine.
  it("keeps data in dataDir across a close and a reopen, refuses work after close, and one opener at a time (owner-only directory)", { timeout: 240_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "nanobill-db-"));
    try {
      const dataDir = join(dir, "nested", "pgdata");
      const first = await openEmbeddedPostgres({ dataDir });
      const db1 = await openDb({ embedded: first, schema: "ledger" });
      await db1.query("CREATE TABLE kept (amount_nanos int8)");
      await db1.query("INSERT INTO kept VALUES ($1)", [9_223_372_036_854_775_807n]);
      await first.close();
      await expect(db1.query("SELECT 1")).rejects.toMatchObject({ code: "unavailable" });

      // Owner-only directory; no lock left behind by a clean close.
      expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
      await expect(stat(`${dataDir}.lock`)).rejects.toMatchObject({ code: "ENOENT" });

      const second = await openEmbeddedPostgres({ dataDir });
      // While it is open, a second opener of the same directory is refused, naming the owner.
      expect(await readFile(`${dataDir}.lock`, "utf8")).toBe(`${process.pid}\n`);
      await expect(openEmbeddedPostgres({ dataDir })).rejects.toThrow(new RegExp(`in use by process ${process.pid}`));
      const db2 = await openDb({ embedded: second, schema: "ledger" });
      expect((await db2.query("SELECT amount_nanos FROM kept")).rows).toEqual([{ amount_nanos: 9_223_372_036_854_775_807n }]);
      await second.close();

      // A lock left by a process that is gone (crash, SIGKILL) is taken over.
      const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout;
      await writeFile(`${dataDir}.lock`, `${gone}\n`);
      const third = await openEmbeddedPostgres({ dataDir });
      expect(await readFile(`${dataDir}.lock`, "utf8")).toBe(`${process.pid}\n`);
      await third.close();
      // A lock naming this very process that it does not hold (a pid reused after a kill and a
      // restart in a container) is stale too.
      await writeFile(`${dataDir}.lock`, `${process.pid}\n`);
      const fourth = await openEmbeddedPostgres({ dataDir });
      await fourth.close();
      await expect(stat(`${dataDir}.lock`)).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
