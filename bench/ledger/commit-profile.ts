// Where one small commit's time goes: single-transfer createTransfers calls in sequence against
// the real store on PostgreSQL, each statement timed (wraps tx.query / db.copyRows).
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/ledger/commit-profile.ts
import { migrate, openDb, type Db, type Queryable } from "@nanobill/db";
import { createPgLedgerStore } from "../../apps/ledger/src/store/pg-store.js";
import { migrationsDir } from "../../apps/ledger/src/index.js";
import { newAccount, newTransfer } from "../../apps/ledger/src/domain/test-helpers.js";

const url = process.env["DATABASE_URL"];
if (!url) throw new Error("DATABASE_URL is required");
const schema = `bench_ledger_prof_${process.pid}`;
const db = await openDb({ url, schema, poolMax: 4 });
await migrate(db, migrationsDir);
const stats = new Map<string, number[]>();
const rec = (k: string, ms: number) => (stats.get(k) ?? stats.set(k, []).get(k)!).push(ms);
const now = () => performance.now();
const wrapTx = (tx: Queryable): Queryable =>
  new Proxy(tx, {
    get(t, p) {
      if (p !== "query") return Reflect.get(t, p);
      return async (sql: string, params?: unknown[]) => {
        const s = now();
        try {
          return await t.query(sql, params);
        } finally {
          rec(sql.replace(/\s+/g, " ").slice(0, 40), now() - s);
        }
      };
    },
  });
const unwrap = new WeakMap<object, Queryable>();
const timed: Db = new Proxy(db, {
  get(t, p) {
    if (p === "transaction")
      return async (fn: (tx: Queryable) => Promise<unknown>, o?: unknown) => {
        const s = now();
        try {
          return await t.transaction(async (tx) => {
            const w = wrapTx(tx);
            unwrap.set(w, tx);
            return fn(w);
          }, o as never);
        } finally {
          rec("(whole transaction)", now() - s);
        }
      };
    if (p === "copyRows")
      return async (table: string, cols: string[], rows: unknown[][], tx?: Queryable) => {
        const s = now();
        try {
          return await t.copyRows(table, cols, rows, tx ? unwrap.get(tx) ?? tx : tx);
        } finally {
          rec(`copyRows ${table}`, now() - s);
        }
      };
    const v = Reflect.get(t, p);
    return typeof v === "function" ? v.bind(t) : v;
  },
});
const store = createPgLedgerStore({ db: timed, nowUs: () => BigInt(Date.now()) * 1000n });
await store.createAccounts("t", Array.from({ length: 1000 }, (_, i) => newAccount(`acct_${i}`, { unit: "USD", code: 1 })));
stats.clear();
const calls: number[] = [];
for (let i = 0; i < 300; i++) {
  const s = now();
  const [r] = await store.createTransfers("t", [
    newTransfer(`xfer_${i}`, { debitAccountId: `acct_${i % 1000}`, creditAccountId: "acct_999", amountNanos: 1n, unit: "USD", code: 1 }),
  ]);
  if (r!.result !== "ok") throw new Error(JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
  calls.push(now() - s);
}
rec("(whole call)", 0);
stats.set("(whole call)", calls);
for (const [k, v] of stats) {
  v.sort((a, b) => a - b);
  const avg = v.reduce((a, b) => a + b, 0) / v.length;
  console.log(`${k.padEnd(42)} n=${String(v.length).padStart(4)} p50 ${v[v.length >> 1]!.toFixed(2)} avg ${avg.toFixed(2)} ms`);
}
// 32 concurrent single-transfer submitters for 3 s: commits/s and transfers/s of the store alone.
for (const random of [true, false]) {
  stats.clear();
  let done = 0;
  let n = 0;
  const end = now() + 3000;
  const s0 = now();
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (now() < end) {
        const k = n++;
        const [r] = await store.createTransfers("t", [
          newTransfer(`xfer_c${random}${k}`, { debitAccountId: `acct_${Math.floor(Math.random() * 998)}`, creditAccountId: random ? `acct_${Math.floor(Math.random() * 998)}` : "acct_999", amountNanos: 1n, unit: "USD", code: 1 }),
        ]);
        if (r!.result !== "ok" && r!.result !== "accounts_must_be_different") throw new Error(JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
        done++;
      }
    }),
  );
  const secs = (now() - s0) / 1000;
  const commits = stats.get("(whole transaction)")?.length ?? 0;
  console.log(`32 submitters (${random ? "random" : "hot"}): ${Math.round(done / secs)} transfers/s, ${Math.round(commits / secs)} commits/s, ${(done / commits).toFixed(1)} per commit`);
  for (const [k, v] of stats) {
    v.sort((a, b) => a - b);
    console.log(`  ${k.padEnd(42)} p50 ${v[v.length >> 1]!.toFixed(2)} ms`);
  }
}
await store.close();
await db.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
await db.close();
