import { migrate, testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newAccount, newTransfer } from "../domain/test-helpers.js";
import { PIPELINED_INSERT_ROWS_MAX } from "../limits.js";
import { ACCOUNT_COLUMNS, ACCOUNT_COLUMN_TYPES, BALANCE_COLUMNS, BALANCE_COLUMN_TYPES, PENDING_COLUMNS, PENDING_COLUMN_TYPES, TRANSFER_COLUMNS, TRANSFER_COLUMN_TYPES } from "./codec.js";
import { migrationsDir } from "./migrations-dir.js";
import { createPgLedgerStore } from "./pg-store.js";
import type { LedgerStore } from "./types.js";

for (const backend of testBackends()) {
  describe(`pg ledger store on ${backend.name}`, () => {
    let db: Awaited<ReturnType<typeof backend.open>>;
    let store: LedgerStore;
    let now = 1_700_000_000_000_000n;
    const T = "tnt_a";

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      store = createPgLedgerStore({ db, nowUs: () => now });
    });
    afterAll(async () => {
      await store?.close();
      await db?.dispose();
    });

    it("knows the SQL type of every column it inserts with unnest (the migrations' types)", async () => {
      const sqlType: Record<string, string> = { text: "text", bigint: "bigint", integer: "int", jsonb: "jsonb" };
      for (const [table, columns, types] of [
        ["accounts", ACCOUNT_COLUMNS, ACCOUNT_COLUMN_TYPES],
        ["transfers", TRANSFER_COLUMNS, TRANSFER_COLUMN_TYPES],
        ["pending_transfers", PENDING_COLUMNS, PENDING_COLUMN_TYPES],
        ["account_balances", BALANCE_COLUMNS, BALANCE_COLUMN_TYPES],
      ] as const) {
        const { rows } = await db.query<{ column_name: string; data_type: string }>(
          "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
          [table],
        );
        const actual = new Map(rows.map((r) => [r.column_name, sqlType[r.data_type] ?? r.data_type]));
        expect(columns.map((c) => actual.get(c)), table).toEqual([...types]);
      }
    });

    it("stores a commit of more than PIPELINED_INSERT_ROWS_MAX rows (COPY) like a small one (unnest), history snapshots and pending states included", async () => {
      await store.createAccounts("tnt_big", [
        newAccount("acct_src", { code: 1 }),
        newAccount("acct_dst", { code: 2, flags: { history: true } }),
      ]);
      const n = PIPELINED_INSERT_ROWS_MAX + 1;
      const big = Array.from({ length: n }, (_, i) => newTransfer(`xfer_big_${i}`, { debitAccountId: "acct_src", creditAccountId: "acct_dst", amountNanos: 1n, flags: { pending: i % 2 === 0 }, timeoutSeconds: i % 2 === 0 ? 60 : 0 }));
      now += 1_000_000n;
      expect((await store.createTransfers("tnt_big", big)).every((r) => r.result === "ok")).toBe(true);
      now += 1_000_000n;
      const small = [newTransfer("xfer_small", { debitAccountId: "acct_src", creditAccountId: "acct_dst", amountNanos: 5n }), newTransfer("xfer_post", { debitAccountId: "acct_src", creditAccountId: "acct_dst", amountNanos: 1n, pendingId: "xfer_big_0", flags: { postPendingTransfer: true } })];
      expect((await store.createTransfers("tnt_big", small)).map((r) => r.result)).toEqual(["ok", "ok"]);
      const [src, dst] = await store.lookupAccounts("tnt_big", ["acct_src", "acct_dst"]);
      const pending = BigInt(Math.ceil(n / 2));
      expect([dst!.creditsPostedNanos, dst!.creditsPendingNanos]).toEqual([BigInt(n) - pending + 5n + 1n, pending - 1n]);
      expect([src!.debitsPostedNanos, src!.debitsPendingNanos]).toEqual([BigInt(n) - pending + 5n + 1n, pending - 1n]);
      const snapshots = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM account_balances WHERE tenant = 'tnt_big'");
      expect(snapshots.rows[0]!.n).toBe(BigInt(n + 2));
      expect((await store.verify("tnt_big")).ok).toBe(true);
    });

    it("creates accounts idempotently and looks them up in request order", async () => {
      const res = await store.createAccounts(T, [
        newAccount("acct_rev", { code: 4000 }),
        newAccount("acct_w1", { code: 2100, flags: { debitsMustNotExceedCredits: true, history: true }, metadata: { customer_id: "cus_1" } }),
        newAccount("acct_cash", { code: 1000 }),
      ]);
      expect(res.map((r) => r.result)).toEqual(["ok", "ok", "ok"]);
      const again = await store.createAccounts(T, [newAccount("acct_rev", { code: 4000 }), newAccount("acct_cash", { code: 1001 })]);
      expect(again.map((r) => r.result)).toEqual(["exists", "exists_with_different_code"]);
      const found = await store.lookupAccounts(T, ["acct_w1", "nope", "acct_rev"]);
      expect(found.map((a) => a.id)).toEqual(["acct_w1", "acct_rev"]);
      expect(found[0]!.metadata).toEqual({ customer_id: "cus_1" });
      expect(found[0]!.flags.history).toBe(true);
      // Another tenant sees nothing.
      expect(await store.lookupAccounts("tnt_b", ["acct_w1"])).toEqual([]);
    });

    it("applies transfers, pending/post/void, and keeps balances equal to their transfers", async () => {
      const res = await store.createTransfers(T, [
        newTransfer("xfer_fund", { debitAccountId: "acct_cash", creditAccountId: "acct_w1", amountNanos: 1_000n }),
        newTransfer("xfer_hold", { debitAccountId: "acct_w1", creditAccountId: "acct_rev", amountNanos: 300n, timeoutSeconds: 60, flags: { pending: true } }),
        newTransfer("xfer_post", { pendingId: "xfer_hold", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 200n, flags: { postPendingTransfer: true } }),
        newTransfer("xfer_hold2", { debitAccountId: "acct_w1", creditAccountId: "acct_rev", amountNanos: 100n, flags: { pending: true } }),
        newTransfer("xfer_over", { debitAccountId: "acct_w1", creditAccountId: "acct_rev", amountNanos: 701n }),
      ]);
      expect(res.map((r) => r.result)).toEqual(["ok", "ok", "ok", "ok", "exceeds_credits"]);
      now += 1000n;
      const res2 = await store.createTransfers(T, [
        newTransfer("xfer_void", { pendingId: "xfer_hold2", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { voidPendingTransfer: true } }),
        newTransfer("xfer_post", { pendingId: "xfer_hold", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 200n, flags: { postPendingTransfer: true } }),
      ]);
      expect(res2.map((r) => r.result)).toEqual(["ok", "exists"]);
      const [w] = await store.lookupAccounts(T, ["acct_w1"]);
      expect([w!.creditsPostedNanos, w!.debitsPostedNanos, w!.debitsPendingNanos]).toEqual([1000n, 200n, 0n]);
      const ts = await store.lookupTransfers(T, ["xfer_hold", "xfer_hold2", "xfer_post", "xfer_fund"]);
      expect(ts.map((t) => [t.id, t.state])).toEqual([
        ["xfer_hold", "pending_posted"],
        ["xfer_hold2", "pending_voided"],
        ["xfer_post", "posted"],
        ["xfer_fund", "posted"],
      ]);
      expect(ts[2]!.debitAccountId).toBe("acct_w1");
      const report = await store.verify(T);
      expect(report.violations).toEqual([]);
      expect(report.ok).toBe(true);
    });

    it("pages an account's transfers by time, filtered by code and side", async () => {
      await store.createTransfers(T, [
        newTransfer("xfer_c1", { debitAccountId: "acct_cash", creditAccountId: "acct_w1", amountNanos: 5n, code: 11 }),
        newTransfer("xfer_c2", { debitAccountId: "acct_cash", creditAccountId: "acct_w1", amountNanos: 6n, code: 11 }),
      ]);
      const all = await store.getAccountTransfers(T, { accountId: "acct_w1", debits: false, credits: false, code: 0, startUs: null, endUs: null, reversed: false, limit: 100, afterUs: null });
      expect(all.map((t) => t.id)).toEqual(["xfer_fund", "xfer_hold", "xfer_post", "xfer_hold2", "xfer_void", "xfer_c1", "xfer_c2"]);
      const page1 = await store.getAccountTransfers(T, { accountId: "acct_w1", debits: false, credits: true, code: 11, startUs: null, endUs: null, reversed: true, limit: 1, afterUs: null });
      expect(page1.map((t) => t.id)).toEqual(["xfer_c2"]);
      const page2 = await store.getAccountTransfers(T, { accountId: "acct_w1", debits: false, credits: true, code: 11, startUs: null, endUs: null, reversed: true, limit: 1, afterUs: page1[0]!.timestampUs });
      expect(page2.map((t) => t.id)).toEqual(["xfer_c1"]);
      const debitsOnly = await store.getAccountTransfers(T, { accountId: "acct_w1", debits: true, credits: false, code: 0, startUs: all[1]!.timestampUs, endUs: all[4]!.timestampUs, reversed: false, limit: 100, afterUs: null });
      expect(debitsOnly.map((t) => t.id)).toEqual(["xfer_hold", "xfer_post", "xfer_hold2"]);
    });

    it("keeps the balance history of history accounts and answers the balance at a past time", async () => {
      const snaps = await store.getAccountBalances(T, { accountId: "acct_w1", startUs: null, endUs: null, reversed: false, limit: 100, afterUs: null });
      expect(snaps.length).toBe(7);
      expect(snaps[0]!.creditsPostedNanos).toBe(1000n);
      const fundTime = snaps[0]!.timestampUs;
      const at = await store.getBalanceAt(T, "acct_w1", fundTime);
      expect(at!.creditsPostedNanos).toBe(1000n);
      expect(at!.debitsPendingNanos).toBe(0n);
      expect(await store.getBalanceAt(T, "acct_w1", fundTime - 1n)).toBeNull();
      const afterHold = await store.getBalanceAt(T, "acct_w1", snaps[1]!.timestampUs);
      expect(afterHold!.debitsPendingNanos).toBe(300n);
    });

    it("expires overdue pending transfers in a sweep", async () => {
      await store.createTransfers(T, [newTransfer("xfer_exp", { debitAccountId: "acct_w1", creditAccountId: "acct_rev", amountNanos: 50n, timeoutSeconds: 2, flags: { pending: true } })]);
      expect(await store.expireDue()).toBe(0);
      now += 3_000_000n;
      expect(await store.expireDue()).toBe(1);
      const [t] = await store.lookupTransfers(T, ["xfer_exp"]);
      expect(t!.state).toBe("pending_expired");
      const [w] = await store.lookupAccounts(T, ["acct_w1"]);
      expect(w!.debitsPendingNanos).toBe(0n);
      expect((await store.verify(T)).ok).toBe(true);
    });

    it("refuses to modify a stored transfer (trigger)", async () => {
      await expect(db.query("UPDATE transfers SET amount_nanos = 1 WHERE tenant = $1 AND id = 'xfer_fund'", [T])).rejects.toThrow(/immutable/);
    });

    it("stores, looks up and filters by a uint32 code above int32 (4,294,967,295): accounts and transfers", async () => {
      const CODE_MAX = 4_294_967_295;
      const TC = "tnt_code";
      const acc = await store.createAccounts(TC, [newAccount("acct_cmax", { code: CODE_MAX }), newAccount("acct_c1", { code: 2_147_483_648 })]);
      expect(acc.map((r) => r.result)).toEqual(["ok", "ok"]);
      const tr = await store.createTransfers(TC, [
        newTransfer("xfer_cmax", { debitAccountId: "acct_cmax", creditAccountId: "acct_c1", amountNanos: 7n, code: CODE_MAX }),
        newTransfer("xfer_c20", { debitAccountId: "acct_cmax", creditAccountId: "acct_c1", amountNanos: 1n, code: 20 }),
      ]);
      expect(tr.map((r) => r.result)).toEqual(["ok", "ok"]);
      // Idempotency compares the stored code.
      expect((await store.createTransfers(TC, [newTransfer("xfer_cmax", { debitAccountId: "acct_cmax", creditAccountId: "acct_c1", amountNanos: 7n, code: CODE_MAX })]))[0]!.result).toBe("exists");
      expect((await store.createAccounts(TC, [newAccount("acct_cmax", { code: CODE_MAX - 1 })]))[0]!.result).toBe("exists_with_different_code");
      expect((await store.lookupAccounts(TC, ["acct_cmax", "acct_c1"])).map((a) => a.code)).toEqual([CODE_MAX, 2_147_483_648]);
      expect((await store.lookupTransfers(TC, ["xfer_cmax"]))[0]!.code).toBe(CODE_MAX);
      const page = { startUs: null, endUs: null, reversed: false, limit: 10, afterUs: null };
      expect((await store.queryAccounts(TC, { unit: "", code: CODE_MAX, metadata: {}, ...page })).items.map((a) => a.id)).toEqual(["acct_cmax"]);
      expect((await store.queryTransfers(TC, { unit: "", code: CODE_MAX, references: {}, ...page })).items.map((t) => t.id)).toEqual(["xfer_cmax"]);
      const byCode = await store.getAccountTransfers(TC, { accountId: "acct_c1", debits: false, credits: false, code: CODE_MAX, ...page });
      expect(byCode.map((t) => [t.id, t.code])).toEqual([["xfer_cmax", CODE_MAX]]);
      // A pending transfer with that code, posted with code 0 (the pending one's is used) and with the code given.
      await store.createTransfers(TC, [
        newTransfer("xfer_cp", { debitAccountId: "acct_cmax", creditAccountId: "acct_c1", amountNanos: 3n, code: CODE_MAX, flags: { pending: true } }),
        newTransfer("xfer_cpp", { pendingId: "xfer_cp", debitAccountId: "", creditAccountId: "", unit: "", code: CODE_MAX, amountNanos: 0n, flags: { postPendingTransfer: true } }),
      ]);
      expect((await store.lookupTransfers(TC, ["xfer_cp", "xfer_cpp"])).map((t) => [t.state, t.code])).toEqual([["pending_posted", CODE_MAX], ["posted", CODE_MAX]]);
      expect((await store.verify(TC)).violations).toEqual([]);
    });

    it("answers references_invalid / metadata_invalid for a NUL or an unpaired surrogate, and the other requests of the commit succeed", async () => {
      await store.createAccounts("tnt_nul_a", [newAccount("acct_a", { code: 1000 }), newAccount("acct_b", { code: 4000 })]);
      await store.createAccounts("tnt_nul_b", [newAccount("acct_a", { code: 1000 }), newAccount("acct_b", { code: 4000 })]);
      const [good, bad, badSurrogate, badAccount] = await Promise.all([
        store.createTransfers("tnt_nul_b", [newTransfer("xfer_good", { amountNanos: 5n })]),
        store.createTransfers("tnt_nul_a", [newTransfer("xfer_nul", { amountNanos: 5n, references: { event_id: "a\u0000b" } })]),
        store.createTransfers("tnt_nul_a", [newTransfer("xfer_sur", { amountNanos: 5n, references: { "\ud800": "v" } })]),
        store.createAccounts("tnt_nul_a", [newAccount("acct_c", { metadata: { k: "x\u0000" } })]),
      ]);
      expect([good[0]!.result, bad[0]!.result, badSurrogate[0]!.result, badAccount[0]!.result]).toEqual(["ok", "references_invalid", "references_invalid", "metadata_invalid"]);
    });

    it("isolates a request the database refuses: the other requests of its commit (any tenant) succeed, only its caller fails", async () => {
      // A poison that passes the domain and fails in the database, at the COPY of transfers.
      await db.query(`CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id LIKE 'xfer_poison%' THEN RAISE EXCEPTION 'poisoned row %', NEW.id; END IF; RETURN NEW; END; $$`);
      await db.query("CREATE TRIGGER test_poison BEFORE INSERT ON transfers FOR EACH ROW EXECUTE FUNCTION test_poison()");
      try {
        await store.createAccounts("tnt_iso_a", [newAccount("acct_a", { code: 1000 }), newAccount("acct_b", { code: 4000 })]);
        await store.createAccounts("tnt_iso_b", [newAccount("acct_a", { code: 1000 }), newAccount("acct_b", { code: 4000 })]);
        // Submitted in the same tick: one commit.
        const settled = await Promise.allSettled([
          store.createTransfers("tnt_iso_b", [newTransfer("xfer_b1", { amountNanos: 5n })]),
          store.createTransfers("tnt_iso_a", [newTransfer("xfer_a1", { amountNanos: 1n }), newTransfer("xfer_poison_1", { amountNanos: 2n })]),
          store.createTransfers("tnt_iso_a", [newTransfer("xfer_a2", { amountNanos: 3n })]),
          store.createAccounts("tnt_iso_b", [newAccount("acct_c", { code: 1000 })]),
        ]);
        expect(settled.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
        expect(String((settled[1] as PromiseRejectedResult).reason)).toMatch(/poisoned row xfer_poison_1/);
        expect((settled[0] as PromiseFulfilledResult<{ result: string }[]>).value.map((r) => r.result)).toEqual(["ok"]);
        expect((settled[2] as PromiseFulfilledResult<{ result: string }[]>).value.map((r) => r.result)).toEqual(["ok"]);
        // The poisoned request wrote nothing (its transaction rolled back whole); the others are stored.
        expect((await store.lookupTransfers("tnt_iso_a", ["xfer_a1", "xfer_poison_1", "xfer_a2"])).map((t) => t.id)).toEqual(["xfer_a2"]);
        expect((await store.lookupTransfers("tnt_iso_b", ["xfer_b1"])).map((t) => t.id)).toEqual(["xfer_b1"]);
        expect((await store.lookupAccounts("tnt_iso_b", ["acct_c"])).map((a) => a.id)).toEqual(["acct_c"]);
        const [a] = await store.lookupAccounts("tnt_iso_a", ["acct_a"]);
        expect(a!.debitsPostedNanos).toBe(3n);
        // Alone in its commit, the poisoned request gets the error; the ledger goes on.
        await expect(store.createTransfers("tnt_iso_a", [newTransfer("xfer_poison_2", { amountNanos: 1n })])).rejects.toThrow(/poisoned row xfer_poison_2/);
        expect((await store.createTransfers("tnt_iso_a", [newTransfer("xfer_a3", { amountNanos: 1n })]))[0]!.result).toBe("ok");
        for (const t of ["tnt_iso_a", "tnt_iso_b"]) expect((await store.verify(t)).violations).toEqual([]);
      } finally {
        await db.query("DROP TRIGGER test_poison ON transfers");
        await db.query("DROP FUNCTION test_poison()");
      }
    });

    it("group-commits concurrent requests and keeps timestamps strictly increasing", async () => {
      const calls = Array.from({ length: 20 }, (_, i) =>
        store.createTransfers(T, [newTransfer(`xfer_g${i}`, { debitAccountId: "acct_cash", creditAccountId: "acct_rev", amountNanos: 1n })]),
      );
      const res = await Promise.all(calls);
      expect(res.every((r) => r[0]!.result === "ok")).toBe(true);
      const times = res.map((r) => r[0]!.timestampUs!);
      expect(new Set(times.map(String)).size).toBe(20);
      // Spent-id rows (flag 512) carry their failure time, not a ledger timestamp.
      const rows = await db.query<{ n: bigint; d: bigint }>("SELECT COUNT(*)::bigint AS n, COUNT(DISTINCT timestamp_us)::bigint AS d FROM transfers WHERE (flags & 512) = 0");
      expect(rows.rows[0]!.n).toBe(rows.rows[0]!.d);
      expect((await store.verify(T)).ok).toBe(true);
    });
  });
}
