import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  COPY_ROWS_PER_CALL_MAX,
  DbError,
  PIPELINE_STATEMENTS_MAX,
  IDENTIFIER_LENGTH_MAX,
  POOL_MAX_LIMIT,
  QUERY_PARAMS_MAX,
  STATEMENT_TIMEOUT_MS_MAX,
  TRANSACTION_RETRIES_MAX,
  isDbError,
  openDb,
  type Db,
  type EmbeddedPostgres,
  testBackends,
  type Queryable,
  type TestDb,
  type Tx,
  unnestInsert,
} from "./index.js";
import { embeddedForTests } from "./testing.js";

const INT8_MIN = -(2n ** 63n);
const INT8_MAX = 2n ** 63n - 1n;

/** Resolves once every listed party has arrived: makes two transactions interleave for real. */
function barrier(parties: number): () => Promise<void> {
  let arrived = 0;
  let release!: () => void;
  const all = new Promise<void>((r) => (release = r));
  return () => {
    arrived += 1;
    if (arrived === parties) release();
    return all;
  };
}

async function expectDbError(p: Promise<unknown>, code: string, message?: RegExp): Promise<DbError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected DbError ${code}`).toBeInstanceOf(DbError);
  const d = e as DbError;
  expect(d.code).toBe(code);
  if (message) expect(d.message).toMatch(message);
  return d;
}

const yieldTurns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

describe.each(testBackends())("@nanobill/db on $name", (backend) => {
  let db: TestDb;
  beforeAll(async () => {
    db = await backend.open();
  });
  afterAll(async () => {
    await db?.dispose();
  });

  describe("types", () => {
    it("passes arrays of strings and nulls as text[] parameters unchanged (quotes, backslashes, commas, braces, 'NULL', empty, non-ASCII), in queries and pipelines", async () => {
      const tricky = ['a"b', "c\\d", "e,f", "{g}", "NULL", "", " sp ", "é😀", null, '\\"', "x".repeat(300)];
      const r = await db.query<{ a: (string | null)[] }>("SELECT $1::text[] AS a", [tricky]);
      expect(r.rows[0]!.a).toEqual(tricky);
      await db.transaction(async (tx) => {
        const [p] = await tx.pipeline([{ sql: "SELECT $1::text[] AS a, cardinality($2::text[]) AS n", params: [tricky, []] }]);
        expect(p!.rows[0]!.a).toEqual(tricky);
        expect(p!.rows[0]!.n).toBe(0);
      });
    });

    it("returns int8 extremes -2^63 and 2^63-1 as bigint, as parameters and from a table", async () => {
      const r = await db.query<{ a: bigint; b: bigint; zero: bigint; small: bigint; arr: bigint[]; cnt: bigint }>(
        "SELECT $1::int8 AS a, $2::int8 AS b, 0::int8 AS zero, 42::int8 AS small, $3::int8[] AS arr, count(*) AS cnt FROM (VALUES (1)) v(x)",
        [INT8_MIN, INT8_MAX, [INT8_MIN, 7n, INT8_MAX]],
      );
      const row = r.rows[0]!;
      expect(row.a).toBe(INT8_MIN);
      expect(row.b).toBe(INT8_MAX);
      expect(row.zero).toBe(0n);
      expect(row.small).toBe(42n);
      expect(row.arr).toEqual([INT8_MIN, 7n, INT8_MAX]);
      expect(row.cnt).toBe(1n);

      await db.query("CREATE TABLE t_int8 (id int8 PRIMARY KEY, v int8)");
      await db.query("INSERT INTO t_int8 VALUES ($1, $2), ($3, $4), (3, NULL)", [1n, INT8_MIN, 2n, INT8_MAX]);
      const t = await db.query<{ id: bigint; v: bigint | null }>("SELECT id, v FROM t_int8 ORDER BY id");
      expect(t.rows).toEqual([
        { id: 1n, v: INT8_MIN },
        { id: 2n, v: INT8_MAX },
        { id: 3n, v: null },
      ]);
    });

    it("rejects an int8 parameter past 2^63-1 instead of wrapping it", async () => {
      const e = await expectDbError(db.query("SELECT $1::int8 AS a", [INT8_MAX + 1n]), "query", /out of range/);
      expect(e.sqlState).toBe("22003");
    });

    it("returns numeric as an exact string, also past the int64 range", async () => {
      const big = "123456789012345678901234567890.000000001";
      const r = await db.query<{ n: string; s: string; b: string }>(
        "SELECT $1::numeric AS n, sum(x) AS s, $2::numeric AS b FROM (VALUES (9223372036854775807::int8), (9223372036854775807::int8)) v(x)",
        [big, 10n ** 30n],
      );
      expect(r.rows[0]).toEqual({ n: big, s: "18446744073709551614", b: "1000000000000000000000000000000" });
    });

    it("round-trips timestamptz as Date, jsonb as object and bytea as Buffer", async () => {
      await db.query("CREATE TABLE t_types (ts timestamptz, j jsonb, b bytea, t text, f boolean, i int4)");
      const ts = new Date("2026-03-04T05:06:07.891Z");
      const j = { amount_nanos: "9223372036854775807", nested: { list: [1, "two", null], quote: 'a"b\\c' } };
      const b = Buffer.from([0, 1, 2, 254, 255]);
      await db.query("INSERT INTO t_types VALUES ($1, $2, $3, $4, $5, $6)", [ts, j, b, "héllo\t\n", true, 7]);
      const r = await db.query("SELECT * FROM t_types");
      const row = r.rows[0]!;
      expect(row.ts).toBeInstanceOf(Date);
      expect((row.ts as Date).toISOString()).toBe(ts.toISOString());
      expect(row.j).toEqual(j);
      expect(Buffer.isBuffer(row.b)).toBe(true);
      expect(Buffer.compare(row.b as Buffer, b)).toBe(0);
      expect(row.t).toBe("héllo\t\n");
      expect(row.f).toBe(true);
      expect(row.i).toBe(7);
    });

    it("maps undefined parameters to NULL", async () => {
      const r = await db.query<{ x: string | null }>("SELECT $1::text AS x", [undefined]);
      expect(r.rows[0]!.x).toBeNull();
    });

    it("runs several statements without parameters and returns the last result", async () => {
      const r = await db.query<{ two: number }>("CREATE TABLE t_multi (x int); INSERT INTO t_multi VALUES (1); SELECT 2 AS two");
      expect(r.rows).toEqual([{ two: 2 }]);
      const c = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM t_multi");
      expect(c.rows[0]!.n).toBe(1n);
    });

    it("reports rowCount of updates and inserts", async () => {
      await db.query("CREATE TABLE t_rc (x int)");
      expect((await db.query("INSERT INTO t_rc SELECT generate_series(1, 5)")).rowCount).toBe(5);
      expect((await db.query("UPDATE t_rc SET x = x + 1 WHERE x > $1", [2])).rowCount).toBe(3);
      expect((await db.query("SELECT * FROM t_rc")).rowCount).toBe(5);
    });
  });

  describe("errors", () => {
    it("maps a unique violation to unique_violation with the constraint name", async () => {
      await db.query("CREATE TABLE t_uniq (id text CONSTRAINT t_uniq_pk PRIMARY KEY)");
      await db.query("INSERT INTO t_uniq VALUES ('a')");
      const e = await expectDbError(db.query("INSERT INTO t_uniq VALUES ($1)", ["a"]), "unique_violation");
      expect(e.constraint).toBe("t_uniq_pk");
      expect(e.sqlState).toBe("23505");
    });

    it("maps other SQL errors to query with their SQLSTATE", async () => {
      const e = await expectDbError(db.query("SELECT * FROM no_such_table"), "query", /no_such_table/);
      expect(e.sqlState).toBe("42P01");
    });
  });

  describe("transactions", () => {
    beforeAll(async () => {
      await db.query("CREATE TABLE t_tx (id int PRIMARY KEY, v text)");
    });

    it("commits what the callback wrote and returns its value", async () => {
      const out = await db.transaction(async (tx) => {
        await tx.query("INSERT INTO t_tx VALUES (1, 'one')");
        return (await tx.query<{ v: string }>("SELECT v FROM t_tx WHERE id = 1")).rows[0]!.v;
      });
      expect(out).toBe("one");
      expect((await db.query("SELECT v FROM t_tx WHERE id = 1")).rows).toEqual([{ v: "one" }]);
    });

    it("refuses a query a callback's stray async step issues after the callback threw: never run after ROLLBACK on its own", async () => {
      let stray: Promise<unknown> | undefined;
      await expect(
        db.transaction(async (tx) => {
          stray = (async () => {
            await tx.query("SELECT pg_sleep(0.05)");
            return tx.query("INSERT INTO t_tx VALUES (90, 'stray')");
          })();
          stray.catch(() => undefined);
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      await expect(stray).rejects.toThrow(/already finished/);
      expect((await db.query("SELECT count(*)::int AS n FROM t_tx WHERE id = 90")).rows).toEqual([{ n: 0 }]);
    });

    it("rolls back everything when the callback throws, and rethrows the callback's error unchanged", async () => {
      const boom = new Error("boom");
      const e = await db
        .transaction(async (tx) => {
          await tx.query("INSERT INTO t_tx VALUES (2, 'two')");
          throw boom;
        })
        .catch((x: unknown) => x);
      expect(e).toBe(boom);
      expect((await db.query("SELECT * FROM t_tx WHERE id = 2")).rows).toEqual([]);
    });

    it("releases the connection / instance after each failed transaction", async () => {
      for (let i = 0; i < 12; i++) {
        await expectDbError(
          db.transaction(async (tx) => {
            await tx.query("INSERT INTO t_tx VALUES (3, 'x')");
            await tx.query("INSERT INTO t_tx VALUES (3, 'dup')");
          }),
          "unique_violation",
        );
      }
      expect((await db.query("SELECT * FROM t_tx WHERE id = 3")).rows).toEqual([]);
      await db.transaction(async (tx) => tx.query("INSERT INTO t_tx VALUES (3, 'ok')"));
      expect((await db.query("SELECT v FROM t_tx WHERE id = 3")).rows).toEqual([{ v: "ok" }]);
    });

    it("refuses to report success when a statement failed inside and its error was swallowed", async () => {
      await expectDbError(
        db.transaction(async (tx) => {
          await tx.query("INSERT INTO t_tx VALUES (4, 'four')");
          await tx.query("SELECT * FROM no_such_table").catch(() => undefined);
          return "looks fine";
        }),
        "query",
        /rolled back/,
      );
      expect((await db.query("SELECT * FROM t_tx WHERE id = 4")).rows).toEqual([]);
    });

    it("rejects a nested transaction() with a clear error and rolls back the outer one", async () => {
      await expectDbError(
        db.transaction(async (tx) => {
          await tx.query("INSERT INTO t_tx VALUES (5, 'five')");
          await db.transaction(async (inner) => inner.query("SELECT 1"));
        }),
        "nested_transaction",
        /nested transactions are not supported/,
      );
      expect((await db.query("SELECT * FROM t_tx WHERE id = 5")).rows).toEqual([]);
    });

    it("rejects db.query() and db.copyRows() without tx inside transaction()", async () => {
      await expectDbError(
        db.transaction(async () => db.query("SELECT 1")),
        "nested_transaction",
        /use the tx argument/,
      );
      await expectDbError(
        db.transaction(async () => db.copyRows("t_tx", ["id", "v"], [[6, "six"]])),
        "nested_transaction",
      );
    });

    it("rejects a tx used after its transaction finished", async () => {
      let leaked: Queryable | undefined;
      await db.transaction(async (tx) => {
        leaked = tx;
      });
      await expectDbError(leaked!.query("SELECT 1"), "invalid_argument", /already finished/);
    });

    it("retries a transaction that hits a real 40001 and then succeeds", async () => {
      let attempts = 0;
      const out = await db.transaction(
        async (tx) => {
          attempts += 1;
          if (attempts <= 2) {
            await tx.query("DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '40001'; END $$");
          }
          await tx.query("INSERT INTO t_tx VALUES (7, 'seven')");
          return attempts;
        },
        { isolation: "serializable", retriesMax: 2 },
      );
      expect(out).toBe(3);
      expect((await db.query("SELECT v FROM t_tx WHERE id = 7")).rows).toEqual([{ v: "seven" }]);
    });

    it("retries deadlocks (40P01) too", async () => {
      let attempts = 0;
      await db.transaction(async (tx) => {
        attempts += 1;
        if (attempts === 1) await tx.query("DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '40P01'; END $$");
      });
      expect(attempts).toBe(2);
    });

    it("gives up after retriesMax retries with DbError serialization", async () => {
      let attempts = 0;
      const e = await expectDbError(
        db.transaction(
          async (tx) => {
            attempts += 1;
            await tx.query("INSERT INTO t_tx VALUES (8, 'eight')");
            await tx.query("DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '40001'; END $$");
          },
          { retriesMax: 3 },
        ),
        "serialization",
        /4 time\(s\)/,
      );
      expect(e.sqlState).toBe("40001");
      expect(attempts).toBe(4);
      expect((await db.query("SELECT * FROM t_tx WHERE id = 8")).rows).toEqual([]);
    });

    it("does not retry when retriesMax is 0", async () => {
      let attempts = 0;
      await expectDbError(
        db.transaction(
          async (tx) => {
            attempts += 1;
            await tx.query("DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '40001'; END $$");
          },
          { retriesMax: 0 },
        ),
        "serialization",
      );
      expect(attempts).toBe(1);
    });

    it("accepts retriesMax up to TRANSACTION_RETRIES_MAX and refuses more, negative or fractional", async () => {
      expect(await db.transaction(async () => 1, { retriesMax: TRANSACTION_RETRIES_MAX })).toBe(1);
      for (const bad of [TRANSACTION_RETRIES_MAX + 1, -1, 1.5]) {
        await expectDbError(db.transaction(async () => 1, { retriesMax: bad }), "invalid_argument", /retriesMax/);
      }
    });

    it("refuses an unknown isolation level", async () => {
      await expectDbError(
        db.transaction(async () => 1, { isolation: "chaos" as never }),
        "invalid_argument",
        /isolation/,
      );
    });

    it("runs each isolation level", async () => {
      for (const isolation of ["read committed", "repeatable read", "serializable"] as const) {
        const r = await db.transaction(async (tx) => (await tx.query<{ l: string }>("SELECT current_setting('transaction_isolation') AS l")).rows[0], {
          isolation,
        });
        expect(r!.l).toBe(isolation);
      }
    });

    it("runs each isolation level also when the first statement has parameters (it carries the BEGIN)", async () => {
      for (const isolation of ["read committed", "repeatable read", "serializable"] as const) {
        const r = await db.transaction(async (tx) => (await tx.query<{ l: string; x: number }>("SELECT current_setting('transaction_isolation') AS l, $1::int AS x", [7])).rows[0], {
          isolation,
        });
        expect(r).toEqual({ l: isolation, x: 7 });
      }
    });

    it("commits nothing and fails nothing when the callback runs no statement", async () => {
      expect(await db.transaction(async () => "nothing")).toBe("nothing");
      await expect(db.transaction(async () => Promise.reject(new Error("before any statement")))).rejects.toThrow("before any statement");
      expect((await db.query<{ x: number }>("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
    });

    it("keeps a first statement with parameters, a first text of several statements and a first COPY inside the transaction (rolled back together)", async () => {
      await db.query("CREATE TABLE t_first (id int PRIMARY KEY)");
      for (const first of [
        (tx: Tx) => tx.query("INSERT INTO t_first VALUES ($1)", [1]),
        (tx: Tx) => tx.query("INSERT INTO t_first VALUES (1); INSERT INTO t_first VALUES (2)"),
        (tx: Tx) => db.copyRows("t_first", ["id"], [[1], [2]], tx),
        (tx: Tx) => tx.pipeline([{ sql: "INSERT INTO t_first VALUES ($1)", params: [1] }]),
      ]) {
        await expect(
          db.transaction(async (tx) => {
            await first(tx);
            throw new Error("roll back");
          }),
        ).rejects.toThrow("roll back");
        expect((await db.query("SELECT id FROM t_first")).rows).toEqual([]);
      }
    });
  });

  describe("pipeline", () => {
    beforeAll(async () => {
      await db.query("CREATE TABLE t_pipe (id int PRIMARY KEY, n bigint NOT NULL)");
    });

    it("runs the statements in order and returns one result per statement, types parsed", async () => {
      const rs = await db.transaction((tx) =>
        tx.pipeline([
          { sql: "INSERT INTO t_pipe VALUES ($1, $2), ($3, $4)", params: [1, 2n ** 62n, 2, 5n] },
          { sql: "UPDATE t_pipe SET n = n + $1 WHERE id = $2", params: [1n, 2] },
          { sql: "SELECT id, n FROM t_pipe WHERE id = ANY($1::int[]) ORDER BY id", params: [[1, 2]] },
          { sql: "SELECT $1::text AS empty WHERE false", params: ["x"] },
        ]),
      );
      expect(rs.map((r) => r.rowCount)).toEqual([2, 1, 2, 0]);
      expect(rs[2]!.rows).toEqual([
        { id: 1, n: 2n ** 62n },
        { id: 2, n: 6n },
      ]);
      expect(rs[3]!.rows).toEqual([]);
      // A pipeline after the first statement of a transaction, and a second one.
      const [a, b] = await db.transaction(async (tx) => {
        await tx.query("UPDATE t_pipe SET n = $1 WHERE id = 1", [10n]);
        const [r1] = await tx.pipeline([{ sql: "SELECT n FROM t_pipe WHERE id = $1", params: [1] }]);
        const [r2] = await tx.pipeline([{ sql: "SELECT n FROM t_pipe WHERE id = $1", params: [2] }]);
        return [r1!.rows, r2!.rows];
      });
      expect([a, b]).toEqual([[{ n: 10n }], [{ n: 6n }]]);
      await db.query("DELETE FROM t_pipe");
    });

    it("fails with the failing statement's error: nothing after it runs, nothing before it stays", async () => {
      await db.query("INSERT INTO t_pipe VALUES (1, 1)");
      const e = await db
        .transaction(
          (tx) =>
            tx.pipeline([
              { sql: "UPDATE t_pipe SET n = $1 WHERE id = 1", params: [100n] },
              { sql: "INSERT INTO t_pipe VALUES ($1, $2)", params: [1, 2n] },
              { sql: "INSERT INTO t_pipe VALUES ($1, $2)", params: [3, 3n] },
            ]),
          { retriesMax: 0 },
        )
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(DbError);
      expect((e as DbError).code).toBe("unique_violation");
      expect((await db.query("SELECT id, n FROM t_pipe ORDER BY id")).rows).toEqual([{ id: 1, n: 1n }]);
      await db.query("DELETE FROM t_pipe");
    });

    it("refuses a value it cannot send before sending anything, and bad arguments naming the field", async () => {
      const circular: Record<string, unknown> = {};
      circular["self"] = circular;
      await expect(
        db.transaction((tx) =>
          tx.pipeline([
            { sql: "INSERT INTO t_pipe VALUES ($1, $2)", params: [9, 9n] },
            { sql: "SELECT $1::jsonb AS j", params: [circular] },
          ]),
        ),
      ).rejects.toBeInstanceOf(DbError);
      expect((await db.query("SELECT id FROM t_pipe WHERE id = 9")).rows).toEqual([]);
      await db.transaction(async (tx) => {
        await expect(tx.pipeline([])).rejects.toMatchObject({ code: "invalid_argument", message: /statements/ });
        const many = Array.from({ length: PIPELINE_STATEMENTS_MAX + 1 }, () => ({ sql: "SELECT $1::int", params: [1] }));
        await expect(tx.pipeline(many)).rejects.toMatchObject({ code: "invalid_argument", message: /statements/ });
        expect(await tx.pipeline(many.slice(1))).toHaveLength(PIPELINE_STATEMENTS_MAX);
        await expect(tx.pipeline([{ sql: "SELECT 1", params: undefined as unknown as unknown[] }])).rejects.toMatchObject({ code: "invalid_argument", message: /statements\[0\]\.params/ });
        await expect(tx.pipeline([{ sql: " ", params: [] }])).rejects.toMatchObject({ code: "invalid_argument", message: /statements\[0\]\.sql/ });
      });
    });
  });

  describe("unnestInsert", () => {
    it("inserts every value kind as its column's type (NULL, empty string, JSON text, int8 extremes, Date), alone or in a pipeline", async () => {
      await db.query("CREATE TABLE t_unnest (id text PRIMARY KEY, n bigint, j jsonb, at timestamptz, k int)");
      const at = new Date("2026-11-29T12:00:00.123Z");
      const st = unnestInsert("t_unnest", ["id", "n", "j", "at", "k"], ["text", "bigint", "jsonb", "timestamptz", "int"], [
        ["a", INT8_MAX, JSON.stringify({ q: 'say "hi" \\ {x}' }), at, 1],
        ["", INT8_MIN, "null", null, null],
        ["NULL", 0n, undefined, at, -2],
      ]);
      const [r] = await db.transaction((tx) => tx.pipeline([st]));
      expect(r!.rowCount).toBe(3);
      expect((await db.query("SELECT id, n, j, at, k FROM t_unnest ORDER BY id")).rows).toEqual([
        { id: "", n: INT8_MIN, j: null, at: null, k: null },
        { id: "NULL", n: 0n, j: null, at, k: -2 },
        { id: "a", n: INT8_MAX, j: { q: 'say "hi" \\ {x}' }, at, k: 1 },
      ]);
      expect((await db.query<{ isnull: boolean }>("SELECT j IS NULL AS isnull FROM t_unnest WHERE id = ''")).rows[0]!.isnull).toBe(false);
    });

    it("refuses types that do not match the columns and values it cannot write, naming them", () => {
      expect(() => unnestInsert("t", ["a", "b"], ["text"], [])).toThrow(/types/);
      expect(() => unnestInsert("t", ["a"], ["text; DROP TABLE t"], [])).toThrow(/types/);
      expect(() => unnestInsert("t", ["a"], ["jsonb"], [[{ x: 1 }]])).toThrow(/rows\[0\]\[0\]/);
      expect(() => unnestInsert("t", ["a"], ["text"], [["x", "y"]])).toThrow(/rows\[0\]/);
    });
  });

  describe("pipeline and the BEGIN sent with the first statement: edges (review findings)", () => {
    beforeAll(async () => {
      await db.query("CREATE TABLE t_edge (id int PRIMARY KEY)");
    });

    it("keeps the transaction atomic when its first statement's value cannot be sent and the callback goes on", async () => {
      const e = await db
        .transaction(async (tx) => {
          await tx.query("SELECT $1::jsonb AS j", [{ big: 1n }]).catch(() => undefined);
          await tx.query("INSERT INTO t_edge VALUES ($1)", [1]);
          await tx.pipeline([{ sql: "INSERT INTO t_edge VALUES ($1)", params: [2] }]);
          throw new Error("roll back");
        })
        .catch((x: unknown) => x);
      expect((e as Error).message).toBe("roll back");
      expect((await db.query("SELECT id FROM t_edge")).rows).toEqual([]);
    });

    it("runs concurrent statements of one transaction in call order, the first one without parameters", async () => {
      await db.transaction(async (tx) => {
        await Promise.all([tx.query("INSERT INTO t_edge VALUES (1)"), tx.query("INSERT INTO t_edge VALUES ($1)", [2]), tx.query("INSERT INTO t_edge VALUES (3)")]);
        const { rows } = await tx.query<{ id: number }>("SELECT id FROM t_edge ORDER BY xmin::text::bigint, ctid");
        expect(rows.map((r) => r.id)).toEqual([1, 2, 3]);
        throw new Error("roll back");
      }).catch(() => undefined);
      expect((await db.query("SELECT id FROM t_edge")).rows).toEqual([]);
    });

    it("fails a COPY FROM STDIN sent in a pipeline or a query, and the transaction and the connection come back", async () => {
      await expect(db.transaction((tx) => tx.query("COPY t_edge (id) FROM STDIN"), { retriesMax: 0 })).rejects.toBeInstanceOf(DbError);
      const started = Date.now();
      const e = await db
        .transaction((tx) => tx.pipeline([{ sql: "COPY t_edge (id) FROM STDIN", params: [] }]), { retriesMax: 0 })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(DbError);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect((await db.query<{ x: number }>("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
    });
  });

  describe("copyRows", () => {
    beforeAll(async () => {
      await db.query(`CREATE TABLE t_copy (
        id int8 PRIMARY KEY, amount_nanos int8 NOT NULL, label text, meta jsonb, raw bytea,
        at timestamptz, rate numeric, tags text[], ok boolean)`);
    });

    it("inserts 20,000 rows with every type intact", async () => {
      const at = new Date("2026-01-02T03:04:05.678Z");
      const rows: unknown[][] = [];
      for (let i = 0; i < 20_000; i++) {
        rows.push([
          BigInt(i),
          i === 0 ? INT8_MIN : i === 1 ? INT8_MAX : BigInt(i) * 1_000_000_007n,
          i % 7 === 0 ? null : `label ${i}\t"q"\\ \n é`,
          { i, s: "x\ty\"z\\" },
          Buffer.from([i & 255, 0, 255]),
          at,
          "0.000000001",
          ["a", 'b"c', "d\\e", null, "f,g"],
          i % 2 === 0,
        ]);
      }
      const n = await db.copyRows("t_copy", ["id", "amount_nanos", "label", "meta", "raw", "at", "rate", "tags", "ok"], rows);
      expect(n).toBe(20_000);
      const c = await db.query<{ n: bigint; s: string }>("SELECT count(*) AS n, sum(amount_nanos) AS s FROM t_copy WHERE id >= 2");
      expect(c.rows[0]!.n).toBe(19_998n);
      let sum = 0n;
      for (let i = 2; i < 20_000; i++) sum += BigInt(i) * 1_000_000_007n;
      expect(c.rows[0]!.s).toBe(sum.toString());
      const r = await db.query("SELECT * FROM t_copy WHERE id IN (0, 1, 7, 12345) ORDER BY id");
      expect(r.rows.map((x) => x.amount_nanos)).toEqual([INT8_MIN, INT8_MAX, 7n * 1_000_000_007n, 12345n * 1_000_000_007n]);
      const x = r.rows[3]!;
      expect(x.label).toBe(`label 12345\t"q"\\ \n é`);
      expect(x.meta).toEqual({ i: 12345, s: "x\ty\"z\\" });
      expect(Buffer.compare(x.raw as Buffer, Buffer.from([12345 & 255, 0, 255]))).toBe(0);
      expect((x.at as Date).toISOString()).toBe(at.toISOString());
      expect(x.rate).toBe("0.000000001");
      expect(x.tags).toEqual(["a", 'b"c', "d\\e", null, "f,g"]);
      expect(x.ok).toBe(false);
      expect(r.rows[2]!.label).toBeNull();
    });

    it("inserts nothing when one row fails (atomic without tx)", async () => {
      const rows = Array.from({ length: 12_000 }, (_, i) => [BigInt(100_000 + i), 1n]);
      rows.push([100_000n, 1n]); // duplicate key in the last chunk
      await expectDbError(db.copyRows("t_copy", ["id", "amount_nanos"], rows), "unique_violation");
      const c = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM t_copy WHERE id >= 100000");
      expect(c.rows[0]!.n).toBe(0n);
    });

    it("writes inside the given transaction and disappears with its rollback", async () => {
      const e = await db
        .transaction(async (tx) => {
          const n = await db.copyRows("t_copy", ["id", "amount_nanos"], [[200_000n, 5n], [200_001n, 6n]], tx);
          expect(n).toBe(2);
          const seen = await tx.query<{ n: bigint }>("SELECT count(*) AS n FROM t_copy WHERE id >= 200000");
          expect(seen.rows[0]!.n).toBe(2n);
          throw new Error("abort");
        })
        .catch((x: unknown) => x);
      expect((e as Error).message).toBe("abort");
      expect((await db.query("SELECT * FROM t_copy WHERE id >= 200000")).rows).toEqual([]);
    });

    it("chunks a wide insert past the 65,535-parameter limit", async () => {
      const cols = Array.from({ length: 30 }, (_, i) => `c${i}`);
      await db.query(`CREATE TABLE t_wide (${cols.map((c) => `${c} int8`).join(", ")})`);
      const rowsCount = Math.ceil(QUERY_PARAMS_MAX / cols.length) + 500;
      const rows = Array.from({ length: rowsCount }, (_, r) => cols.map((_, c) => BigInt(r * 100 + c)));
      expect(rowsCount * cols.length).toBeGreaterThan(QUERY_PARAMS_MAX);
      expect(await db.copyRows("t_wide", cols, rows)).toBe(rowsCount);
      const s = await db.query<{ n: bigint; m: bigint }>("SELECT count(*) AS n, max(c29) AS m FROM t_wide");
      expect(s.rows[0]).toEqual({ n: BigInt(rowsCount), m: BigInt((rowsCount - 1) * 100 + 29) });
    });

    it("returns 0 for no rows and refuses bad shapes, naming the field", async () => {
      expect(await db.copyRows("t_copy", ["id"], [])).toBe(0);
      await expectDbError(db.copyRows("t_copy", ["id", "amount_nanos"], [[1n, 1n], [2n]]), "invalid_argument", /rows\[1\]/);
      await expectDbError(db.copyRows("t_copy; drop", ["id"], [[1n]]), "invalid_argument", /table/);
      await expectDbError(db.copyRows("t_copy", ['id"'], [[1n]]), "invalid_argument", /columns\[0\]/);
      await expectDbError(db.copyRows("t_copy", [], [[]]), "invalid_argument", /columns/);
      await expectDbError(db.copyRows("t_copy", ["id", "id"], [[1n, 1n]]), "invalid_argument", /duplicate/);
    });

    it("refuses a value it cannot encode, naming row and column, and inserts nothing", async () => {
      const rows: unknown[][] = Array.from({ length: 7000 }, (_, i) => [BigInt(300_000 + i), 1n]);
      rows[6500] = [306_500n, Symbol("not a value")];
      await expectDbError(db.copyRows("t_copy", ["id", "amount_nanos"], rows), "invalid_argument", /rows\[6500\]\[1\]/);
      expect((await db.query("SELECT * FROM t_copy WHERE id >= 300000")).rows).toEqual([]);
      // The Db is still usable afterwards.
      expect(await db.copyRows("t_copy", ["id", "amount_nanos"], [[300_000n, 1n]])).toBe(1);
    });

    it("refuses more than COPY_ROWS_PER_CALL_MAX rows in one call", async () => {
      const row = [1n];
      const rows = new Array<unknown[]>(COPY_ROWS_PER_CALL_MAX + 1).fill(row);
      await expectDbError(db.copyRows("t_copy", ["id"], rows), "invalid_argument", /at most/);
    });

    it("refuses a tx that does not belong to this Db", async () => {
      const fake: Queryable = { query: async () => ({ rows: [], rowCount: 0 }) };
      await expectDbError(db.copyRows("t_copy", ["id", "amount_nanos"], [[1n, 1n]], fake), "invalid_argument", /tx/);
    });
  });

  describe("schemas", () => {
    it("keeps two Dbs in their own schemas (same table name, own rows), interleaved", async () => {
      const other = await backend.open();
      try {
        expect(other.schema).not.toBe(db.schema);
        for (const [d, v] of [
          [db, "mine"],
          [other, "theirs"],
        ] as const) {
          await d.query("CREATE TABLE items (v text)");
          await d.query("INSERT INTO items VALUES ($1)", [v]);
        }
        const [a, b, a2] = await Promise.all([
          db.query("SELECT v FROM items"),
          other.query("SELECT v FROM items"),
          db.transaction((tx) => tx.query("SELECT v, current_schema() AS s FROM items")),
        ]);
        expect(a.rows).toEqual([{ v: "mine" }]);
        expect(b.rows).toEqual([{ v: "theirs" }]);
        expect(a2.rows).toEqual([{ v: "mine", s: db.schema }]);
      } finally {
        await other.dispose();
      }
    });

    it("drops the schema on dispose()", async () => {
      const tmp = await backend.open();
      await tmp.query("CREATE TABLE gone (x int)");
      await tmp.dispose();
      const r = await db.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [tmp.schema]);
      expect(r.rows).toEqual([]);
      await expectDbError(tmp.query("SELECT 1"), "unavailable", /closed/);
    });

    it("refuses bad schema names before connecting", async () => {
      const url = "postgres://postgres@127.0.0.1:1/none";
      for (const schema of ["Bad", "a-b", "pg_x", "1abc", "x".repeat(IDENTIFIER_LENGTH_MAX + 1), "", 'a"b']) {
        await expectDbError(openDb({ url, schema }), "invalid_argument", /schema/);
      }
    });
  });

  if (backend.name === "postgres") {
    const url = process.env.DATABASE_URL!;

    it("retries a real serialization failure between two concurrent serializable transactions", async () => {
      await db.query("CREATE TABLE t_oncall (doctor text PRIMARY KEY, on_call boolean NOT NULL)");
      await db.query("INSERT INTO t_oncall VALUES ('alice', true), ('bob', true)");
      const meet = barrier(2);
      let attempts = 0;
      // Write skew: each sees two on call and takes one off; serializable must abort one.
      const goOff = (doctor: string) =>
        db.transaction(
          async (tx) => {
            attempts += 1;
            const first = attempts <= 2;
            const n = await tx.query<{ n: bigint }>("SELECT count(*) AS n FROM t_oncall WHERE on_call");
            if (first) await meet();
            if (n.rows[0]!.n >= 2n) await tx.query("UPDATE t_oncall SET on_call = false WHERE doctor = $1", [doctor]);
          },
          { isolation: "serializable", retriesMax: 5 },
        );
      await Promise.all([goOff("alice"), goOff("bob")]);
      expect(attempts).toBeGreaterThanOrEqual(3);
      const left = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM t_oncall WHERE on_call");
      expect(left.rows[0]!.n).toBe(1n);
    });

    it("throws DbError serialization for a real conflict when retriesMax is 0", async () => {
      await db.query("CREATE TABLE t_skew (k text PRIMARY KEY, v int8 NOT NULL)");
      await db.query("INSERT INTO t_skew VALUES ('a', 0), ('b', 0)");
      const meet = barrier(2);
      const run = (read: string, write: string) =>
        db.transaction(
          async (tx) => {
            const r = await tx.query<{ v: bigint }>("SELECT v FROM t_skew WHERE k = $1", [read]);
            await meet();
            await tx.query("UPDATE t_skew SET v = $1 WHERE k = $2", [r.rows[0]!.v + 1n, write]);
          },
          { isolation: "serializable", retriesMax: 0 },
        );
      const results = await Promise.allSettled([run("a", "b"), run("b", "a")]);
      const failed = results.filter((r) => r.status === "rejected");
      expect(failed).toHaveLength(1);
      const reason = (failed[0] as PromiseRejectedResult).reason as DbError;
      expect(isDbError(reason, "serialization")).toBe(true);
      expect(reason.sqlState).toBe("40001");
    });

    it("maps a statement timeout to DbError timeout", async () => {
      const slow = await openDb({ url, schema: db.schema, poolMax: 1, statementTimeoutMs: 50 });
      try {
        await expectDbError(slow.query("SELECT pg_sleep(5)"), "timeout");
        const t = await slow.query<{ s: string; p: string }>("SELECT current_setting('statement_timeout') AS s, current_setting('search_path') AS p");
        expect(t.rows[0]).toEqual({ s: "50ms", p: db.schema });
      } finally {
        await slow.close();
      }
    });

    it("accepts a schema name of exactly IDENTIFIER_LENGTH_MAX characters", async () => {
      const schema = `z${db.schema}`.padEnd(IDENTIFIER_LENGTH_MAX, "x").slice(0, IDENTIFIER_LENGTH_MAX);
      const d = await openDb({ url, schema, poolMax: 1 });
      try {
        const r = await d.query<{ s: string }>("SELECT current_schema() AS s");
        expect(r.rows[0]!.s).toBe(schema);
      } finally {
        await d.query(`DROP SCHEMA "${schema}" CASCADE`);
        await d.close();
      }
    });

    it("maps a connection killed inside a transaction to unavailable, discards it, and keeps the Db usable", async () => {
      const one = await openDb({ url, schema: db.schema, poolMax: 1 });
      try {
        await expectDbError(
          one.transaction(async (tx) => {
            await tx.query("SELECT pg_terminate_backend(pg_backend_pid())");
          }),
          "unavailable",
        );
        expect((await one.query<{ x: number }>("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
        await expectDbError(one.query("SELECT pg_terminate_backend(pg_backend_pid())"), "unavailable");
        expect((await one.query<{ x: number }>("SELECT 2 AS x")).rows).toEqual([{ x: 2 }]);
      } finally {
        await one.close();
      }
    });

    it("survives every session being terminated from outside: idle pooled ones and one mid-query (named nanobill:<schema>)", async () => {
      // its own schema, so its application_name is its own and the cuts leave `db`'s sessions alone
      const schema = `${db.schema}_cut`;
      const d = await openDb({ url, schema, poolMax: 4 });
      try {
        // fill the pool with idle connections
        await Promise.all([1, 2, 3, 4].map((i) => d.query("SELECT pg_sleep(0.05), $1::int AS i", [i])));
        const killAll = (): Promise<{ rows: Array<{ ok: boolean }> }> =>
          db.query<{ ok: boolean }>(
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
            [`nanobill:${schema}`],
          );
        // the idle clients' "error" events must not crash the process; the next query reconnects
        const idle = await killAll();
        expect(idle.rows.filter((r) => r.ok).length).toBeGreaterThanOrEqual(1);
        await new Promise((r) => setTimeout(r, 50));
        expect((await d.query<{ x: number }>("SELECT 3 AS x")).rows).toEqual([{ x: 3 }]);
        // a query running when its session is cut fails as unavailable, in a transaction too
        const running = expectDbError(d.query("SELECT pg_sleep(5)"), "unavailable");
        const inTx = expectDbError(
          d.transaction(async (tx) => tx.query("SELECT pg_sleep(5)")),
          "unavailable",
        );
        await new Promise((r) => setTimeout(r, 300));
        const mid = await killAll();
        expect(mid.rows.filter((r) => r.ok).length).toBeGreaterThanOrEqual(2);
        await running;
        await inTx;
        const after = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => d.query<{ i: number }>("SELECT $1::int AS i", [i])));
        expect(after.map((r) => r.rows[0]!.i)).toEqual([1, 2, 3, 4, 5, 6]);
        expect(await d.transaction(async (tx) => (await tx.query<{ x: number }>("SELECT 4 AS x")).rows[0]!.x)).toBe(4);
      } finally {
        await d.query(`DROP SCHEMA "${schema}" CASCADE`).catch(() => undefined);
        await d.close();
      }
    });

    it("a client whose session is cut before its holder listens for errors neither crashes the process nor is handed out again", async () => {
      const d = await openDb({ url, schema: db.schema, poolMax: 1 });
      try {
        // the moment between pg-pool handing out a new client and transaction() attaching its own
        // "error" listener (a session cut as it connects lands there): nobody but the Db listens
        const pool = (d as unknown as { pool: pg.Pool }).pool;
        await d.query("SELECT 1");
        const client = await pool.connect();
        const pid = (client as unknown as { processID: number }).processID;
        const lost = new Promise<void>((res) => client.once("end", () => res()));
        expect((await db.query<{ ok: boolean }>("SELECT pg_terminate_backend($1::int) AS ok", [pid])).rows[0]!.ok).toBe(true);
        await lost; // the FATAL was delivered and emitted as "error" on the client: the process lives
        client.release();
        expect((await d.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid).not.toBe(pid);
        expect(await d.transaction(async (tx) => (await tx.query<{ x: number }>("SELECT 5 AS x")).rows[0]!.x)).toBe(5);
      } finally {
        await d.close();
      }
    });

    it("maps an unreachable server to DbError unavailable", async () => {
      await expectDbError(openDb({ url: "postgres://postgres@127.0.0.1:1/test", schema: "x_unreachable" }), "unavailable");
    });

    it("refuses poolMax and statementTimeoutMs outside their limits", async () => {
      for (const poolMax of [0, POOL_MAX_LIMIT + 1]) {
        await expectDbError(openDb({ url, schema: db.schema, poolMax }), "invalid_argument", /poolMax/);
      }
      for (const statementTimeoutMs of [0, STATEMENT_TIMEOUT_MS_MAX + 1]) {
        await expectDbError(openDb({ url, schema: db.schema, statementTimeoutMs }), "invalid_argument", /statementTimeoutMs/);
      }
      const max = await openDb({ url, schema: db.schema, poolMax: POOL_MAX_LIMIT, statementTimeoutMs: STATEMENT_TIMEOUT_MS_MAX });
      expect((await max.query<{ x: number }>("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
      await max.close();
    });
  }
});

describe("embedded PostgreSQL shared by several Dbs (PGlite)", () => {
  let embedded: EmbeddedPostgres;
  let a: Db;
  let b: Db;
  beforeAll(async () => {
    // The same in-memory instance as the "pglite" test backend: one PGlite start per test file.
    embedded = await embeddedForTests();
    a = await openDb({ embedded, schema: "svc_a" });
    b = await openDb({ embedded, schema: "svc_b" });
    await a.query("CREATE TABLE items (v text)");
    await b.query("CREATE TABLE items (v text)");
  });
  afterAll(async () => {
    await a?.query(
      `DROP SCHEMA IF EXISTS svc_a CASCADE; DROP SCHEMA IF EXISTS svc_b CASCADE; DROP SCHEMA IF EXISTS svc_c CASCADE; DROP SCHEMA IF EXISTS ${"s".repeat(IDENTIFIER_LENGTH_MAX)} CASCADE`,
    );
  });

  it("keeps each Db in its schema when their queries interleave", async () => {
    const work: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      work.push(a.query("INSERT INTO items VALUES ($1)", [`a${i}`]));
      work.push(b.query("INSERT INTO items VALUES ($1)", [`b${i}`]));
    }
    await Promise.all(work);
    const ra = await a.query<{ v: string }>("SELECT v FROM items");
    const rb = await b.query<{ v: string }>("SELECT v FROM items");
    expect(ra.rows.every((r) => r.v.startsWith("a"))).toBe(true);
    expect(rb.rows.every((r) => r.v.startsWith("b"))).toBe(true);
    expect(ra.rows).toHaveLength(20);
    expect(rb.rows).toHaveLength(20);
  });

  it("makes another Db's query wait until a transaction holding the instance commits", async () => {
    const events: string[] = [];
    let finish!: () => void;
    const held = new Promise<void>((r) => (finish = r));
    const tx = a.transaction(async (t) => {
      await t.query("INSERT INTO items VALUES ('held')");
      events.push("a-inserted");
      await held;
      events.push("a-done");
    });
    await yieldTurns(20);
    const other = b.query<{ n: bigint }>("SELECT count(*) AS n FROM items").then((r) => {
      events.push("b-answered");
      return r;
    });
    await yieldTurns(50);
    events.push("releasing");
    finish();
    await Promise.all([tx, other]);
    expect(events).toEqual(["a-inserted", "releasing", "a-done", "b-answered"]);
    expect((await other).rows[0]!.n).toBe(20n);
  });

  it("rejects a transaction of another Db on the same instance started inside a transaction (it would wait forever)", async () => {
    const e = await a
      .transaction(async () => b.transaction(async (t) => t.query("SELECT 1")))
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DbError);
    expect((e as DbError).code).toBe("nested_transaction");
    expect((e as DbError).message).toMatch(/same embedded instance/);
    // The instance is free again.
    expect((await b.query<{ x: number }>("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
  });

  it("releases the instance after a failed transaction so other Dbs proceed", async () => {
    await expect(
      a.transaction(async (t) => {
        await t.query("INSERT INTO items VALUES ('rolled back')");
        await t.query("SELECT * FROM no_such_table");
      }),
    ).rejects.toMatchObject({ code: "query", sqlState: "42P01" });
    expect((await b.query("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
    expect((await a.query("SELECT * FROM items WHERE v = 'rolled back'")).rows).toEqual([]);
  });

  it("accepts a schema name of exactly IDENTIFIER_LENGTH_MAX characters", async () => {
    const schema = "s".repeat(IDENTIFIER_LENGTH_MAX);
    const d = await openDb({ embedded, schema });
    expect((await d.query<{ s: string }>("SELECT current_schema() AS s")).rows[0]!.s).toBe(schema);
    await d.close();
  });

  it("refuses an embedded object that did not come from openEmbeddedPostgres()", async () => {
    const fake = { pglite: embedded.pglite, close: async () => {} };
    await expect(openDb({ embedded: fake, schema: "x" })).rejects.toMatchObject({ code: "invalid_argument" });
  });

  it("closes a Db (others keep working) and refuses its later queries as unavailable", async () => {
    const c = await openDb({ embedded, schema: "svc_c" });
    await c.close();
    await expect(c.query("SELECT 1")).rejects.toMatchObject({ code: "unavailable" });
    expect((await a.query("SELECT 1 AS x")).rows).toEqual([{ x: 1 }]);
  });
});
