import { migrate, testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newAccount, newTransfer } from "../domain/test-helpers.js";
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
