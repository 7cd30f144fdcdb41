import { describe, expect, it } from "vitest";
import { DbError, testBackends } from "./index.js";
import { toDbError } from "./errors.js";
import { Mutex } from "./mutex.js";
import { backoffMs } from "./common.js";
import { RETRY_BACKOFF_MS_MAX } from "./limits.js";
import { arrayLiteral, copyText } from "./copy-text.js";

describe("toDbError", () => {
  const cases: Array<[string, unknown, string]> = [
    ["serialization failure", { code: "40001", message: "could not serialize" }, "serialization"],
    ["deadlock", { code: "40P01", message: "deadlock detected" }, "serialization"],
    ["unique violation", { code: "23505", message: "dup", constraint: "c" }, "unique_violation"],
    ["foreign key violation", { code: "23503", message: "fk" }, "foreign_key_violation"],
    ["check violation", { code: "23514", message: "check" }, "check_violation"],
    ["not null violation", { code: "23502", message: "null" }, "not_null_violation"],
    ["statement timeout", { code: "57014", message: "canceling statement" }, "timeout"],
    ["admin shutdown", { code: "57P01", message: "terminating connection" }, "unavailable"],
    ["connection exception class 08", { code: "08006", message: "connection failure" }, "unavailable"],
    ["too many connections", { code: "53300", message: "too many clients" }, "unavailable"],
    ["refused", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), "unavailable"],
    ["reset", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }), "unavailable"],
    ["all addresses refused", Object.assign(new AggregateError([{ code: "ECONNREFUSED" }], ""), {}), "unavailable"],
    ["pool connect timeout", new Error("timeout exceeded when trying to connect"), "unavailable"],
    ["connection lost", new Error("Connection terminated unexpectedly"), "unavailable"],
    ["syntax error", { code: "42601", message: "syntax error" }, "query"],
    ["unknown", new Error("weird"), "query"],
  ];
  it.each(cases)("maps %s to its code", (_name, input, code) => {
    expect(toDbError(input).code).toBe(code);
  });

  it("keeps the SQLSTATE, constraint and cause", () => {
    const raw = { code: "23505", message: "duplicate key", constraint: "accounts_pkey", table: "accounts", detail: "Key (id)=(1)" };
    const e = toDbError(raw);
    expect(e).toMatchObject({ sqlState: "23505", constraint: "accounts_pkey", table: "accounts", detail: "Key (id)=(1)", message: "duplicate key" });
    expect(e.cause).toBe(raw);
  });

  it("passes a DbError through unchanged", () => {
    const e = new DbError("nested_transaction", "x");
    expect(toDbError(e)).toBe(e);
  });
});

describe("retry backoff", () => {
  it("stays within [cap/2, cap] and never above RETRY_BACKOFF_MS_MAX", () => {
    for (let attempt = 0; attempt < 30; attempt++) {
      const ms = backoffMs(attempt);
      expect(ms).toBeGreaterThan(0);
      expect(ms).toBeLessThanOrEqual(RETRY_BACKOFF_MS_MAX);
    }
  });
});

describe("Mutex", () => {
  it("runs holders one at a time in FIFO order", async () => {
    const m = new Mutex();
    const order: string[] = [];
    let release!: () => void;
    let started!: () => void;
    const isHeld = new Promise<void>((r) => (started = r));
    const first = m.run(
      () =>
        new Promise<void>((r) => {
          release = r;
          started();
        }).then(() => order.push("1")),
      1000,
      "t",
    );
    const second = m.run(async () => order.push("2"), 1000, "t");
    const third = m.run(async () => order.push("3"), 1000, "t");
    await isHeld;
    expect(order).toEqual([]);
    release();
    await Promise.all([first, second, third]);
    expect(order).toEqual(["1", "2", "3"]);
  });

  it("gives up waiting with DbError unavailable after waitMsMax and stays usable", async () => {
    const m = new Mutex();
    let release!: () => void;
    let started!: () => void;
    const isHeld = new Promise<void>((r) => (started = r));
    const holder = m.run(
      () =>
        new Promise<void>((r) => {
          release = r;
          started();
        }),
      1000,
      "holder",
    );
    await isHeld;
    await expect(m.run(async () => 1, 5, "waiter")).rejects.toMatchObject({ code: "unavailable" });
    release();
    await holder;
    expect(await m.run(async () => 2, 5, "after")).toBe(2);
  });
});

describe("COPY text encoding", () => {
  it("escapes backslash, tab, newline and carriage return, and writes NULL as \\N", () => {
    expect(copyText("a\\b\tc\nd\re")).toBe("a\\\\b\\tc\\nd\\re");
    expect(copyText(null)).toBe("\\N");
    expect(copyText(undefined)).toBe("\\N");
    expect(copyText(-(2n ** 63n))).toBe("-9223372036854775808");
    expect(copyText(true)).toBe("t");
    expect(copyText(Buffer.from([1, 255]))).toBe("\\\\x01ff");
    expect(copyText(new Date("2026-01-01T00:00:00.000Z"))).toBe("2026-01-01T00:00:00.000Z");
    expect(copyText({ a: "x\ty" })).toBe('{"a":"x\\\\ty"}');
  });

  it("builds array literals with quoted elements and NULL", () => {
    expect(arrayLiteral(["a", 'b"c', "d\\e", null, 1n, [2, 3]])).toBe('{"a","b\\"c","d\\\\e",NULL,"1",{"2","3"}}');
  });

  it("refuses values it cannot encode, naming rows", () => {
    expect(() => copyText(Symbol("x"))).toThrow(/rows/);
    expect(() => copyText(new Date(Number.NaN))).toThrow(/rows/);
  });
});

describe("testBackends", () => {
  it("throws when CI=true and DATABASE_URL is unset (never a skip)", () => {
    expect(() => testBackends({ CI: "true" })).toThrow(/DATABASE_URL/);
  });

  it("gives PGlite only without DATABASE_URL, and PGlite + PostgreSQL with it", () => {
    expect(testBackends({}).map((b) => b.name)).toEqual(["pglite"]);
    expect(testBackends({ DATABASE_URL: "postgres://x@127.0.0.1/db" }).map((b) => b.name)).toEqual(["pglite", "postgres"]);
  });
});
