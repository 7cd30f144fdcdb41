/**
 * Verify against tables corrupted by hand (as a bug or an operator could): each test stores a
 * small ledger through the store, checks that Verify is ok, breaks one invariant in SQL while
 * keeping every balance equal to the sum of its rows (so the balance checks alone see nothing),
 * and expects the specific violation. On both backends, in a schema of its own (the corruptions
 * would break other files' ledger-wide checks).
 */
import { migrate, testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newAccount, newTransfer } from "../domain/test-helpers.js";
import { VERIFY_VIOLATIONS_MAX } from "../limits.js";
import { migrationsDir } from "./migrations-dir.js";
import { createPgLedgerStore } from "./pg-store.js";
import type { LedgerStore } from "./types.js";

const pv = { debitAccountId: "", creditAccountId: "", unit: "", code: 0 };
/** A timestamp far after anything the tests' clock hands out. */
const FUTURE_US = 9_000_000_000_000_000_000n;

for (const backend of testBackends()) {
  describe(`ledger Verify on corrupted tables, on ${backend.name}`, () => {
    let db: Awaited<ReturnType<typeof backend.open>>;
    let store: LedgerStore;
    let now = 1_700_000_000_000_000n;
    let n = 0;

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      store = createPgLedgerStore({ db, nowUs: () => now });
    });
    afterAll(async () => {
      await store?.close();
      await db?.dispose();
    });

    /** A fresh tenant: a wallet funded with 100, a source and a revenue account. */
    async function ledger(): Promise<string> {
      const t = `tnt_verify_${n++}`;
      now += 1000n;
      await store.createAccounts(t, [
        newAccount("acct_w", { flags: { debitsMustNotExceedCredits: true, history: true } }),
        newAccount("acct_src", { code: 3000 }),
        newAccount("acct_rev", { code: 4000 }),
      ]);
      await ok(t, [newTransfer("fund", { debitAccountId: "acct_src", creditAccountId: "acct_w", amountNanos: 100n })]);
      return t;
    }
    async function ok(t: string, items: Parameters<LedgerStore["createTransfers"]>[1]): Promise<void> {
      now += 1000n;
      expect((await store.createTransfers(t, items)).map((r) => r.result)).toEqual(items.map(() => "ok"));
    }
    /** A plain transfer, so the ledger's last timestamp moves past the ones the test forges. */
    async function tick(t: string, id: string): Promise<void> {
      await ok(t, [newTransfer(id, { debitAccountId: "acct_src", creditAccountId: "acct_rev", amountNanos: 1n })]);
    }
    async function ts(t: string, id: string): Promise<bigint> {
      const [x] = await store.lookupTransfers(t, [id]);
      return x!.timestampUs;
    }
    async function violations(t: string): Promise<string[]> {
      const r = await store.verify(t);
      expect(r.ok).toBe(r.violations.length === 0);
      return r.violations;
    }
    /** Inserts a transfer row by hand (flags: 0 plain, 4 post, 8 void) and moves the posted balances with it. */
    async function forge(t: string, f: { id: string; amount: bigint; flags: number; ts: bigint; pendingId?: string; dr?: string; cr?: string }): Promise<void> {
      const dr = f.dr ?? "acct_w";
      const cr = f.cr ?? "acct_rev";
      await db.query(
        `INSERT INTO transfers (tenant, id, debit_account_id, credit_account_id, amount_nanos, amount_requested_nanos, unit, pending_id, timeout_seconds, code, flags, refs, timestamp_us, expires_at_us)
         VALUES ($1, $2, $3, $4, $5, 0, 'USD', $6, 0, 20, $7, NULL, $8, NULL)`,
        [t, f.id, dr, cr, f.amount.toString(), f.pendingId ?? null, f.flags, f.ts.toString()],
      );
      if ((f.flags & 8) === 0) await moveBalances(t, dr, cr, "posted", f.amount);
    }
    async function moveBalances(t: string, dr: string, cr: string, kind: "posted" | "pending", amount: bigint): Promise<void> {
      await db.query(`UPDATE accounts SET debits_${kind}_nanos = debits_${kind}_nanos + $3 WHERE tenant = $1 AND id = $2`, [t, dr, amount.toString()]);
      await db.query(`UPDATE accounts SET credits_${kind}_nanos = credits_${kind}_nanos + $3 WHERE tenant = $1 AND id = $2`, [t, cr, amount.toString()]);
    }
    async function setState(t: string, id: string, state: string, resolvedAt: bigint | null): Promise<void> {
      await db.query("UPDATE pending_transfers SET state = $3, resolved_at_us = $4 WHERE tenant = $1 AND id = $2", [t, id, state, resolvedAt?.toString() ?? null]);
    }

    it("reports a second resolution of a pending transfer: a post of a voided pending, above its amount, timestamped before it and its accounts", async () => {
      const t = await ledger();
      await ok(t, [newTransfer("p1", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 40n, flags: { pending: true } })]);
      await ok(t, [newTransfer("v1", { ...pv, pendingId: "p1", amountNanos: 0n, flags: { voidPendingTransfer: true } })]);
      expect(await violations(t)).toEqual([]);
      const p1 = await ts(t, "p1");
      // The review's probe: a post of 90 for p1 at timestamp 1, both posted balances raised by 90.
      await forge(t, { id: "forged_post", amount: 90n, flags: 4, ts: 1n, pendingId: "p1" });
      const [w, rev] = await store.lookupAccounts(t, ["acct_w", "acct_rev"]);
      expect(await violations(t)).toEqual([
        `tenant ${t}: post transfer forged_post of pending transfer p1: the pending transfer's state is voided, not posted`,
        `tenant ${t}: post transfer forged_post of pending transfer p1 posts 90 nanos, more than the pending amount 40`,
        `tenant ${t}: post transfer forged_post of pending transfer p1 has timestamp 1, not after the pending transfer's ${p1}`,
        `tenant ${t}: pending transfer p1 (state voided) is resolved 2 times (1 posts, 1 voids: forged_post ... v1)`,
        `tenant ${t}: transfer forged_post has timestamp 1, not after the creation of its account acct_rev at ${rev!.timestampUs}`,
        `tenant ${t}: transfer forged_post has timestamp 1, not after the creation of its account acct_w at ${w!.timestampUs}`,
      ]);
    });

    it("reports a void that releases less than the pending amount, and a post of a pending transfer still pending", async () => {
      const t = await ledger();
      await ok(t, [
        newTransfer("p1", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 40n, flags: { pending: true } }),
        newTransfer("p2", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 20n, flags: { pending: true } }),
      ]);
      await tick(t, "tick");
      const [p1, p2] = [await ts(t, "p1"), await ts(t, "p2")];
      // A void of 30 resolving p1 at the next µs: p1's state and pending balances follow it.
      await forge(t, { id: "v1", amount: 30n, flags: 8, ts: p1 + 500n, pendingId: "p1" });
      await setState(t, "p1", "voided", p1 + 500n);
      await moveBalances(t, "acct_w", "acct_rev", "pending", -40n);
      expect(await violations(t)).toEqual([`tenant ${t}: void transfer v1 of pending transfer p1 releases 30 nanos, not the pending amount 40`]);
      // A post of p2 while its state stays pending (its pending amount stays counted).
      await forge(t, { id: "post2", amount: 20n, flags: 4, ts: p2 + 500n, pendingId: "p2" });
      expect(await violations(t)).toEqual([
        `tenant ${t}: void transfer v1 of pending transfer p1 releases 30 nanos, not the pending amount 40`,
        `tenant ${t}: post transfer post2 of pending transfer p2: the pending transfer's state is pending, not posted`,
      ]);
    });

    it("reports a pending state that disagrees with the post/void rows", async () => {
      const t = await ledger();
      await ok(t, [
        newTransfer("p1", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 40n, flags: { pending: true } }),
        newTransfer("p2", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 10n, flags: { pending: true } }),
      ]);
      await ok(t, [
        newTransfer("post1", { ...pv, pendingId: "p1", amountNanos: 25n, flags: { postPendingTransfer: true } }),
        newTransfer("void2", { ...pv, pendingId: "p2", amountNanos: 0n, flags: { voidPendingTransfer: true } }),
      ]);
      await tick(t, "tick");
      expect(await violations(t)).toEqual([]);
      // Posted p1 marked expired (it has no timeout), voided p2 marked posted: no balance changes.
      await setState(t, "p1", "expired", (await ts(t, "post1")) + 500n);
      await setState(t, "p2", "posted", await ts(t, "void2"));
      expect(await violations(t)).toEqual([
        `tenant ${t}: post transfer post1 of pending transfer p1: the pending transfer's state is expired, not posted`,
        `tenant ${t}: void transfer void2 of pending transfer p2: the pending transfer's state is posted, not voided`,
        `tenant ${t}: pending transfer p1 (state expired) has no timeout, so it cannot expire`,
        `tenant ${t}: pending transfer p2 (state posted) has no post transfer`,
      ]);
    });

    it("reports an expiry timestamped before its pending transfer, shared with a transfer, or after the ledger's last timestamp", async () => {
      const t = await ledger();
      await ok(t, [newTransfer("p1", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 40n, timeoutSeconds: 1, flags: { pending: true } })]);
      now += 2_000_000n;
      expect(await store.expireDue()).toBe(1);
      expect(await violations(t)).toEqual([]);
      const [p1, fund] = [await ts(t, "p1"), await ts(t, "fund")];
      await setState(t, "p1", "expired", p1 - 1n);
      expect(await violations(t)).toEqual([`tenant ${t}: pending transfer p1 (state expired) expired at ${p1 - 1n}, not after its own timestamp ${p1}`]);
      await setState(t, "p1", "expired", fund);
      expect(await violations(t)).toEqual([`tenant ${t}: pending transfer p1 (state expired) expired at ${fund}, not after its own timestamp ${p1}`, `tenant ${t}: timestamp ${fund} is not unique: 2 events have it (the expiry of p1, transfer fund)`]);
      const last = (await db.query<{ l: bigint }>("SELECT last_timestamp_us AS l FROM ledger_meta")).rows[0]!.l;
      await setState(t, "p1", "expired", FUTURE_US);
      expect(await violations(t)).toEqual([`tenant ${t}: timestamp ${FUTURE_US} (the expiry of p1) is after the ledger's last timestamp ${last}`]);
    });

    it("reports transfer timestamps that are not unique or are after the ledger's last timestamp", async () => {
      const t = await ledger();
      await ok(t, [newTransfer("x1", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 5n })]);
      const x1 = await ts(t, "x1");
      await forge(t, { id: "dup", amount: 1n, flags: 0, ts: x1 });
      expect(await violations(t)).toEqual([`tenant ${t}: timestamp ${x1} is not unique: 2 events have it (transfer dup, transfer x1)`]);
      const last = (await db.query<{ l: bigint }>("SELECT last_timestamp_us AS l FROM ledger_meta")).rows[0]!.l;
      await forge(t, { id: "future", amount: 1n, flags: 0, ts: FUTURE_US });
      expect(await violations(t)).toEqual([
        `tenant ${t}: timestamp ${x1} is not unique: 2 events have it (transfer dup, transfer x1)`,
        `tenant ${t}: timestamp ${FUTURE_US} (transfer future) is after the ledger's last timestamp ${last}`,
      ]);
    });

    it("reports an account whose closed flag disagrees with its pending closing transfers; an account created closed is fine", async () => {
      const t = await ledger();
      await store.createAccounts(t, [newAccount("acct_shut", { flags: { closed: true } })]);
      await ok(t, [newTransfer("close", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 100n, flags: { pending: true, balancingDebit: true, closingDebit: true } })]);
      expect((await store.lookupAccounts(t, ["acct_w"]))[0]!.flags.closed).toBe(true);
      expect(await violations(t)).toEqual([]);
      await db.query("UPDATE accounts SET flags = flags & ~32 WHERE tenant = $1 AND id = 'acct_w'", [t]);
      expect(await violations(t)).toEqual([`tenant ${t}: account acct_w is open, but pending closing transfer close closes it`]);
      await db.query("UPDATE accounts SET flags = flags | 32 WHERE tenant = $1 AND id = 'acct_w'", [t]);
      await ok(t, [newTransfer("reopen", { ...pv, pendingId: "close", amountNanos: 0n, flags: { voidPendingTransfer: true } })]);
      expect(await violations(t)).toEqual([]);
      await db.query("UPDATE accounts SET flags = flags | 32 WHERE tenant = $1 AND id IN ('acct_w', 'acct_src')", [t]);
      expect(await violations(t)).toEqual([
        `tenant ${t}: account acct_src is closed, but no pending closing transfer closes it (and transfers name it, so it was not created closed)`,
        `tenant ${t}: account acct_w is closed, but no pending closing transfer closes it (and transfers name it, so it was not created closed)`,
      ]);
    });

    it("caps the violations it reports", async () => {
      const t = await ledger();
      for (let i = 0; i < VERIFY_VIOLATIONS_MAX + 20; i++) await forge(t, { id: `late_${i}`, amount: 1n, flags: 0, ts: FUTURE_US + BigInt(i), dr: "acct_src" });
      const r = await store.verify(t);
      expect(r.ok).toBe(false);
      expect(r.violations.length).toBe(VERIFY_VIOLATIONS_MAX);
      expect(r.violations.every((v) => /is after the ledger's last timestamp/.test(v))).toBe(true);
    });
  });
}
