import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { DbError, migrate, openDb, pendingMigrations, prepareSchema, readMigrations, testBackends, type TestDb } from "./index.js";

async function migrationsDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "nanobill-migrations-"));
  for (const [name, sql] of Object.entries(files)) await writeFile(join(dir, name), sql);
  return dir;
}

const dirs: string[] = [];
async function dirWith(files: Record<string, string>): Promise<string> {
  const d = await migrationsDir(files);
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe("readMigrations", () => {
  it("sorts by version and checksums each file with sha256", async () => {
    const dir = await dirWith({ "0010_c.sql": "SELECT 3;", "0002_b.sql": "SELECT 2;", "0001_a.sql": "SELECT 1;", "README.md": "ignored" });
    const files = await readMigrations(dir);
    expect(files.map((f) => f.name)).toEqual(["0001_a.sql", "0002_b.sql", "0010_c.sql"]);
    expect(files[0]!.checksum).toMatch(/^[0-9a-f]{64}$/);
  });

  it("refuses a badly named file and a duplicate version, naming the file", async () => {
    await expect(readMigrations(await dirWith({ "1_init.sql": "" }))).rejects.toThrow(/1_init\.sql/);
    await expect(readMigrations(await dirWith({ "0001_Init.sql": "" }))).rejects.toThrow(/0001_Init\.sql/);
    await expect(readMigrations(await dirWith({ "0001_a.sql": "", "0001_b.sql": "" }))).rejects.toThrow(/0001_b\.sql.*0001_a\.sql/);
  });

  it("refuses a folder that does not exist", async () => {
    await expect(readMigrations("/nonexistent/nanobill")).rejects.toMatchObject({ code: "migration" });
  });
});

describe.each(testBackends())("migrate on $name", (backend) => {
  let db: TestDb;
  beforeEach(async () => {
    db = await backend.open();
  });
  afterEach(async () => {
    await db?.dispose();
  });

  it("applies files in version order once, recording name and checksum in the Db's schema", async () => {
    const dir = await dirWith({
      "0002_add_amount.sql": "ALTER TABLE accounts ADD COLUMN amount_nanos BIGINT NOT NULL DEFAULT 0;",
      "0001_accounts.sql": "CREATE TABLE accounts (id TEXT PRIMARY KEY);\nCREATE INDEX accounts_id ON accounts (id);",
      "0010_seed.sql": "INSERT INTO accounts (id, amount_nanos) VALUES ('acct_1', 9223372036854775807);",
    });
    expect(await migrate(db, dir)).toEqual({ applied: ["0001_accounts.sql", "0002_add_amount.sql", "0010_seed.sql"] });
    expect(await migrate(db, dir)).toEqual({ applied: [] });
    expect((await db.query("SELECT id, amount_nanos FROM accounts")).rows).toEqual([{ id: "acct_1", amount_nanos: 9223372036854775807n }]);
    const rec = await db.query<{ version: number; name: string; checksum_sha256: string; s: string }>(
      "SELECT version, name, checksum_sha256, current_schema() AS s FROM schema_migrations ORDER BY version",
    );
    expect(rec.rows.map((r) => [r.version, r.name])).toEqual([
      [1, "0001_accounts.sql"],
      [2, "0002_add_amount.sql"],
      [10, "0010_seed.sql"],
    ]);
    const files = await readMigrations(dir);
    expect(rec.rows.map((r) => r.checksum_sha256)).toEqual(files.map((f) => f.checksum));
    const where = await db.query("SELECT 1 FROM pg_tables WHERE tablename = 'schema_migrations' AND schemaname = $1", [db.schema]);
    expect(where.rowCount).toBe(1);
  });

  it("applies only new files on a later run", async () => {
    const files: Record<string, string> = { "0001_a.sql": "CREATE TABLE a (x int);" };
    const dir = await dirWith(files);
    expect((await migrate(db, dir)).applied).toEqual(["0001_a.sql"]);
    await writeFile(join(dir, "0002_b.sql"), "CREATE TABLE b (x int);");
    expect((await migrate(db, dir)).applied).toEqual(["0002_b.sql"]);
  });

  it("fails naming the file when an applied migration changed, and applies nothing new", async () => {
    const dir = await dirWith({ "0001_a.sql": "CREATE TABLE a (x int);" });
    await migrate(db, dir);
    await writeFile(join(dir, "0001_a.sql"), "CREATE TABLE a (x int, y int);");
    await writeFile(join(dir, "0002_b.sql"), "CREATE TABLE b (x int);");
    const e = await migrate(db, dir).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DbError);
    expect((e as DbError).code).toBe("migration");
    expect((e as DbError).message).toMatch(/0001_a\.sql.*changed/);
    expect((await db.query("SELECT 1 FROM pg_tables WHERE tablename = 'b' AND schemaname = $1", [db.schema])).rowCount).toBe(0);
  });

  it("rolls back a failing migration, records nothing for it, keeps earlier ones, and names it", async () => {
    const dir = await dirWith({
      "0001_ok.sql": "CREATE TABLE ok (x int);",
      "0002_bad.sql": "CREATE TABLE half (x int);\nSELECT * FROM no_such_table;",
    });
    const e = await migrate(db, dir).catch((x: unknown) => x);
    expect((e as DbError).code).toBe("migration");
    expect((e as DbError).message).toMatch(/0002_bad\.sql.*no_such_table/);
    const tables = await db.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", [db.schema]);
    expect(tables.rows.map((r) => r.tablename)).toEqual(["ok", "schema_migrations"]);
    expect((await db.query("SELECT name FROM schema_migrations")).rows).toEqual([{ name: "0001_ok.sql" }]);
  });

  it("applies each file exactly once when several migrate() calls run at once", async () => {
    const dir = await dirWith({
      "0001_a.sql": "CREATE TABLE a (x int);",
      "0002_b.sql": "CREATE TABLE b (x int);",
      "0003_c.sql": "INSERT INTO a VALUES (1);",
    });
    const results = await Promise.all([migrate(db, dir), migrate(db, dir), migrate(db, dir)]);
    const all = results.flatMap((r) => r.applied).sort();
    expect(all).toEqual(["0001_a.sql", "0002_b.sql", "0003_c.sql"]);
    expect((await db.query<{ n: bigint }>("SELECT count(*) AS n FROM a")).rows[0]!.n).toBe(1n);
  });

  it("treats an empty folder as nothing to apply", async () => {
    expect(await migrate(db, await dirWith({}))).toEqual({ applied: [] });
  });

  it("prepareSchema without migrating: names every pending or changed file and writes nothing; passes once current", async () => {
    const dir = await dirWith({ "0001_a.sql": "CREATE TABLE a (x int);", "0002_b.sql": "CREATE TABLE b (x int);" });
    const fresh = await prepareSchema(db, dir, false).catch((x: unknown) => x);
    expect(fresh).toBeInstanceOf(DbError);
    expect((fresh as DbError).code).toBe("migration");
    expect((fresh as DbError).message).toContain("0001_a.sql, 0002_b.sql not applied");
    expect((fresh as DbError).message).toContain("NANOBILL_MIGRATE_ON_START=false");
    // Not even the bookkeeping table was created.
    expect((await db.query("SELECT 1 FROM pg_tables WHERE schemaname = $1", [db.schema])).rowCount).toBe(0);
    expect(await prepareSchema(db, dir, true)).toEqual({ applied: ["0001_a.sql", "0002_b.sql"] });
    expect(await prepareSchema(db, dir, false)).toEqual({ applied: [] });
    // A new file, then a changed one: each named, nothing applied.
    await writeFile(join(dir, "0003_c.sql"), "CREATE TABLE c (x int);");
    expect(await prepareSchema(db, dir, false).catch((x: unknown) => (x as Error).message)).toMatch(/: 0003_c\.sql not applied/);
    await writeFile(join(dir, "0003_c.sql"), "");
    await writeFile(join(dir, "0001_a.sql"), "CREATE TABLE a (x int, y int);");
    expect(await pendingMigrations(db, dir)).toEqual(["0001_a.sql", "0003_c.sql"]);
    expect((await db.query("SELECT 1 FROM pg_tables WHERE tablename = 'c' AND schemaname = $1", [db.schema])).rowCount).toBe(0);
  });

  // Registered for PostgreSQL only (roles and grants are PostgreSQL's; PGlite has one user).
  const postgresOnly = backend.name === "postgres" ? it : undefined;
  postgresOnly?.("prepareSchema without migrating works for a role that can neither create nor write the schema (postgres)", async () => {
    const dir = await dirWith({ "0001_a.sql": "CREATE TABLE a (x int);" });
    await migrate(db, dir);
    const role = `nb_dml_${randomBytes(4).toString("hex")}`;
    await db.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await db.query(`GRANT USAGE ON SCHEMA "${db.schema}" TO ${role}`);
      await db.query(`GRANT SELECT ON schema_migrations TO ${role}`);
      const url = new URL(process.env.DATABASE_URL!);
      url.username = role;
      url.password = "";
      const dml = await openDb({ url: url.toString(), schema: db.schema, poolMax: 2 });
      try {
        expect(await prepareSchema(dml, dir, false)).toEqual({ applied: [] });
        // migrate() on start needs rights this role lacks: the reason for the switch.
        await expect(migrate(dml, dir)).rejects.toThrow(/permission denied/);
      } finally {
        await dml.close();
      }
    } finally {
      await db.query(`DROP OWNED BY ${role}`);
      await db.query(`DROP ROLE ${role}`);
    }
  });
});
