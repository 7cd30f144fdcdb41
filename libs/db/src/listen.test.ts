// Db.listen(): NOTIFY wake-ups on both backends (committed notifications only, stop, bad channel
// names) and, on PostgreSQL, a listen connection that is cut comes back by itself.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DbError, LISTEN_RECONNECT_MS, openDb, testBackends, type TestDb } from "./index.js";

const waitFor = async (cond: () => boolean, ms: number): Promise<boolean> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return cond();
};

describe.each(testBackends())("Db.listen on $name", (backend) => {
  let db: TestDb;
  beforeAll(async () => {
    db = await backend.open();
  });
  afterAll(async () => {
    await db?.dispose();
  });

  it("delivers committed notifications of its channel only, and none after stop", async () => {
    const channel = `chan_${db.schema}`.slice(0, 63);
    const got: string[] = [];
    const stop = await db.listen(channel, (p) => got.push(p));
    await db.query("SELECT pg_notify($1, $2)", [channel, "one"]);
    await db.query("SELECT pg_notify($1, $2)", [`${channel.slice(0, 60)}_x`, "other channel"]);
    await db.transaction(async (tx) => {
      await tx.query("SELECT pg_notify($1, $2)", [channel, "rolled back"]);
      throw new Error("roll back");
    }).catch(() => undefined);
    await db.transaction(async (tx) => {
      await tx.query("SELECT pg_notify($1, $2)", [channel, "two"]);
    });
    expect(await waitFor(() => got.length >= 2, 5_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual(["one", "two"]);
    await stop();
    await db.query("SELECT pg_notify($1, $2)", [channel, "after stop"]);
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual(["one", "two"]);
  });

  it("refuses a channel name that is not an identifier", async () => {
    await expect(db.listen("Bad-Channel", () => undefined)).rejects.toBeInstanceOf(DbError);
    await expect(db.listen("x; DROP TABLE t", () => undefined)).rejects.toMatchObject({ code: "invalid_argument" });
  });
});

describe.runIf(process.env.DATABASE_URL)("Db.listen on PostgreSQL: a cut connection", () => {
  it("comes back after its connection is terminated, and close() stops it", async () => {
    const db = await openDb({ url: process.env.DATABASE_URL!, schema: `listen_${process.pid}`, poolMax: 2 });
    try {
      const channel = `chan_cut_${process.pid}`;
      const got: string[] = [];
      await db.listen(channel, (p) => got.push(p));
      await db.query("SELECT pg_notify($1, 'before')", [channel]);
      expect(await waitFor(() => got.includes("before"), 5_000)).toBe(true);
      const cut = await db.query<{ n: number }>(
        "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
        [`nanobill:${db.schema}:listen`],
      );
      expect(cut.rows[0]!.n).toBe(1);
      // Notifications sent until the listener is back are lost (best effort); keep sending.
      const ok = await waitFor(() => got.includes("after"), LISTEN_RECONNECT_MS * 10);
      if (!ok) {
        for (let i = 0; i < 50 && !got.includes("after"); i++) {
          await db.query("SELECT pg_notify($1, 'after')", [channel]);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      expect(got).toContain("after");
    } finally {
      await db.query(`DROP SCHEMA IF EXISTS "${db.schema}" CASCADE`);
      await db.close();
    }
    // close() ended the listen connection too.
    const check = await openDb({ url: process.env.DATABASE_URL!, schema: `listen_chk_${process.pid}`, poolMax: 1 });
    try {
      const left = await check.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1", [`nanobill:listen_${process.pid}:listen`]);
      expect(left.rows[0]!.n).toBe(0);
    } finally {
      await check.query(`DROP SCHEMA IF EXISTS "${check.schema}" CASCADE`);
      await check.close();
    }
  });
});
