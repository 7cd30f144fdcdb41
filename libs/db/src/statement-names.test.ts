import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDb, type Db } from "./index.js";
import { PREPARE_AFTER_USES, PREPARED_SQL_CHARS_MAX, PREPARED_STATEMENTS_MAX, STATEMENT_USES_TRACKED_MAX } from "./limits.js";
import { StatementNames } from "./statement-names.js";

describe("StatementNames", () => {
  const limits = { afterUses: 3, max: 2, sqlCharsMax: 20, trackedMax: 3 };

  it("names a text from its afterUses-th use on, the same name every time", () => {
    const n = new StatementNames("p_", limits);
    expect([n.nameOf("SELECT $1"), n.nameOf("SELECT $1")]).toEqual([undefined, undefined]);
    expect(n.nameOf("SELECT $1")).toBe("p_0");
    expect(n.nameOf("SELECT $1")).toBe("p_0");
    expect(n.issuedCount).toBe(1);
  });

  it("never names more than max texts, nor a text longer than sqlCharsMax", () => {
    const n = new StatementNames("p_", limits);
    const use = (sql: string) => [n.nameOf(sql), n.nameOf(sql), n.nameOf(sql)][2];
    expect(use("a".repeat(21))).toBeUndefined();
    expect(use("b".repeat(20))).toBe("p_0");
    expect(use("c")).toBe("p_1");
    expect(use("d")).toBeUndefined();
    expect(n.nameOf("c")).toBe("p_1");
  });

  it("forgets counts when more than trackedMax texts wait for a name (bounded memory)", () => {
    const n = new StatementNames("p_", limits);
    n.nameOf("a"), n.nameOf("a"); // a: 2 uses
    n.nameOf("b"), n.nameOf("c"), n.nameOf("d"); // the 4th tracked text clears the counts
    expect(n.nameOf("a")).toBeUndefined();
    expect(n.nameOf("a")).toBeUndefined();
    expect(n.nameOf("a")).toBe("p_0");
  });

  it("gives a retired text a new name on its next use, never the old one again", () => {
    const n = new StatementNames("p_", { ...limits, max: 3 });
    for (let i = 0; i < 3; i++) n.nameOf("s");
    expect(n.nameOf("s")).toBe("p_0");
    n.retire("s");
    expect(n.nameOf("s")).toBe("p_1");
    n.retire("never named");
    expect(n.issuedCount).toBe(2);
  });

  it("has sane defaults", () => {
    expect(PREPARE_AFTER_USES).toBeGreaterThan(1);
    expect(PREPARED_STATEMENTS_MAX).toBeGreaterThan(0);
    expect(PREPARED_SQL_CHARS_MAX).toBeGreaterThan(1000);
    expect(STATEMENT_USES_TRACKED_MAX).toBeGreaterThan(PREPARED_STATEMENTS_MAX);
  });
});

const url = process.env["DATABASE_URL"];
if (!url && process.env["CI"] === "true") throw new Error("DATABASE_URL: must be set when CI=true (never skipped)");
describe.runIf(url)("named statements on PostgreSQL", () => {
  let db: Db;
  const schema = `nb_prep_${process.pid}_${Date.now()}`;
  beforeAll(async () => {
    db = await openDb({ url: url!, schema, poolMax: 1 });
    await db.query("CREATE TABLE t (id int PRIMARY KEY, a text)");
    await db.query("INSERT INTO t VALUES (1, 'x'), (2, 'y')");
  });
  afterAll(async () => {
    await db.query(`DROP SCHEMA ${schema} CASCADE`);
    await db.close();
  });

  const prepared = async (): Promise<string[]> =>
    (await db.query<{ statement: string }>("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")).rows.map((r) => r.statement);

  it("prepares a text with parameters on the connection from its PREPARE_AFTER_USES-th use, with the same results", async () => {
    const sql = "SELECT a FROM t WHERE id = $1";
    for (let i = 1; i < PREPARE_AFTER_USES; i++) expect((await db.query(sql, [1])).rows).toEqual([{ a: "x" }]);
    expect(await prepared()).not.toContain(sql);
    expect((await db.query(sql, [2])).rows).toEqual([{ a: "y" }]);
    expect(await prepared()).toContain(sql);
    await db.transaction(async (tx) => expect((await tx.query(sql, [1])).rows).toEqual([{ a: "x" }]));
    expect((await prepared()).filter((s) => s === sql)).toHaveLength(1);
  });

  it("never prepares a text without parameters (it may hold several statements)", async () => {
    for (let i = 0; i <= PREPARE_AFTER_USES; i++) await db.query("SELECT 1; SELECT 2");
    expect(await prepared()).not.toContain("SELECT 1; SELECT 2");
  });

  it("answers a named SELECT * whose table another process altered (a rolling migration): outside and inside a transaction", async () => {
    const sql = "SELECT * FROM t WHERE id = $1";
    for (let i = 0; i < PREPARE_AFTER_USES; i++) await db.query(sql, [1]);
    expect(await prepared()).toContain(sql);
    // Another connection (another process) migrates.
    const other = await openDb({ url: url!, schema, poolMax: 1 });
    await other.query("ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 7");
    expect((await db.query(sql, [1])).rows).toEqual([{ id: 1, a: "x", b: 7 }]);
    await other.query("ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 8");
    // In a transaction the stale plan aborts it; transaction() runs it again on the new name.
    let attempts = 0;
    const rows = await db.transaction(async (tx) => {
      attempts++;
      return (await tx.query(sql, [2])).rows;
    });
    expect(rows).toEqual([{ id: 2, a: "y", b: 7, c: 8 }]);
    expect(attempts).toBe(2);
    await other.close();
  });

  it("prepares nothing with preparedStatements: false (a pooler in transaction mode), and refuses a non-boolean", async () => {
    const plain = await openDb({ url: url!, schema, poolMax: 1, preparedStatements: false });
    for (let i = 0; i <= PREPARE_AFTER_USES; i++) expect((await plain.query("SELECT a FROM t WHERE id = $1 AND $2::int = 0", [1, 0])).rows).toEqual([{ a: "x" }]);
    expect((await plain.query<{ n: bigint }>("SELECT count(*) AS n FROM pg_prepared_statements")).rows[0]!.n).toBe(0n);
    await plain.close();
    await expect(openDb({ url: url!, schema, preparedStatements: "no" as unknown as boolean })).rejects.toMatchObject({ code: "invalid_argument", message: /preparedStatements/ });
  });
});
