/**
 * TigerBeetle 0.16 parity on both backends: spent ids (id_already_failed) across commits and
 * store restarts, on the optimistic and the full-lookup path; closing accounts; imported
 * accounts and transfers; QueryAccounts / QueryTransfers.
 */
import { migrate, testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newAccount, newTransfer } from "../domain/test-helpers.js";
import type { NewTransfer } from "../domain/types.js";
import { migrationsDir } from "./migrations-dir.js";
import { createPgLedgerStore } from "./pg-store.js";
import type { LedgerStore, QueryAccountsQuery, QueryTransfersQuery } from "./types.js";

const voidOf = (id: string, pendingId: string): NewTransfer =>
  newTransfer(id, { pendingId, debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { voidPendingTransfer: true } });
const postOf = (id: string, pendingId: string): NewTransfer =>
  newTransfer(id, { pendingId, debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { postPendingTransfer: true } });

const qa = (over: Partial<QueryAccountsQuery> = {}): QueryAccountsQuery => ({
  unit: "",
  code: 0,
  metadata: {},
  startUs: null,
  endUs: null,
  reversed: false,
  limit: 100,
  afterUs: null,
  ...over,
});
const qt = (over: Partial<QueryTransfersQuery> = {}): QueryTransfersQuery => ({
  unit: "",
  code: 0,
  references: {},
  startUs: null,
  endUs: null,
  reversed: false,
  limit: 100,
  afterUs: null,
  ...over,
});

for (const backend of testBackends()) {
  describe(`ledger TigerBeetle parity on ${backend.name}`, () => {
    let db: Awaited<ReturnType<typeof backend.open>>;
    let now = 1_800_000_000_000_000n;
    const nowUs = () => now;
    /** Optimistic on every commit (spent ids are caught after applying). */
    let optimistic: LedgerStore;
    /** Looks every id up first after its first conflict (the default), here forced from the start by a conflict. */
    let fallback: LedgerStore;
    const tenants: string[] = [];

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      optimistic = createPgLedgerStore({ db, nowUs, fullLookupCommitsAfterConflict: 0 });
      fallback = createPgLedgerStore({ db, nowUs });
    });
    afterAll(async () => {
      for (const t of tenants) expect((await optimistic.verify(t)).violations, t).toEqual([]);
      await optimistic?.close();
      await fallback?.close();
      await db?.dispose();
    });

    const qAcc = async (t: string, q: QueryAccountsQuery) => (await optimistic.queryAccounts(t, q)).items;
    const qTr = async (t: string, q: QueryTransfersQuery) => (await optimistic.queryTransfers(t, q)).items;

    async function setup(tenant: string): Promise<void> {
      tenants.push(tenant);
      const r = await optimistic.createAccounts(tenant, [
        newAccount("acct_cash", { code: 1000 }),
        newAccount("acct_w", { code: 2100, flags: { debitsMustNotExceedCredits: true, history: true }, metadata: { customer_id: "cus_1", tier: "pro" } }),
        newAccount("acct_rev", { code: 4000, metadata: { customer_id: "cus_2" } }),
        newAccount("acct_eur", { code: 4000, unit: "EUR" }),
      ]);
      expect(r.map((x) => x.result)).toEqual(["ok", "ok", "ok", "ok"]);
    }

    for (const mode of ["optimistic", "fallback"] as const) {
      it(`remembers a transient failure's id across commits and answers id_already_failed (${mode} path)`, async () => {
        const store = mode === "optimistic" ? optimistic : fallback;
        const T = `tnt_spent_${mode}`;
        await setup(T);
        const spend = newTransfer("xfer_spend", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 50n });
        expect((await store.createTransfers(T, [spend])).map((r) => r.result)).toEqual(["exceeds_credits"]);
        // A retry that fails again, and one that would now succeed after a top-up: both are spent.
        expect((await store.createTransfers(T, [spend])).map((r) => r.result)).toEqual(["id_already_failed"]);
        expect((await store.createTransfers(T, [newTransfer("xfer_fund", { debitAccountId: "acct_cash", creditAccountId: "acct_w", amountNanos: 100n })]))[0]!.result).toBe("ok");
        expect((await store.createTransfers(T, [spend, { ...spend, id: "xfer_spend2" }])).map((r) => r.result)).toEqual(["id_already_failed", "ok"]);
        const [w] = await store.lookupAccounts(T, ["acct_w"]);
        expect(w!.debitsPostedNanos).toBe(50n);
        expect(await store.lookupTransfers(T, ["xfer_spend"])).toEqual([]);
        // Request-only failures are not remembered: the id works once the request is fixed.
        expect((await store.createTransfers(T, [newTransfer("xfer_fix", { debitAccountId: "acct_w", creditAccountId: "acct_eur" })]))[0]!.result).toBe(
          "accounts_must_have_the_same_unit",
        );
        expect((await store.createTransfers(T, [newTransfer("xfer_fix", { debitAccountId: "acct_cash", creditAccountId: "acct_rev" })]))[0]!.result).toBe("ok");
        // Another tenant's same id is unaffected.
        const other = `tnt_spent_${mode}_other`;
        await setup(other);
        expect((await store.createTransfers(other, [newTransfer("xfer_spend", { debitAccountId: "acct_cash", creditAccountId: "acct_rev" })]))[0]!.result).toBe("ok");
        expect((await store.verify(T)).ok).toBe(true);
      });
    }

    it("keeps spent ids when a new store opens the same database (restart)", async () => {
      const T = "tnt_spent_restart";
      await setup(T);
      expect((await optimistic.createTransfers(T, [newTransfer("xfer_nf", { debitAccountId: "acct_missing", creditAccountId: "acct_rev" })]))[0]!.result).toBe(
        "debit_account_not_found",
      );
      await optimistic.createAccounts(T, [newAccount("acct_missing", { code: 1000 })]);
      const restarted = createPgLedgerStore({ db, nowUs, fullLookupCommitsAfterConflict: 0 });
      try {
        expect((await restarted.createTransfers(T, [newTransfer("xfer_nf", { debitAccountId: "acct_missing", creditAccountId: "acct_rev" })]))[0]!.result).toBe(
          "id_already_failed",
        );
      } finally {
        await restarted.close();
      }
      const rows = await db.query<{ failed_result: string; amount_nanos: bigint }>("SELECT failed_result, amount_nanos FROM transfers WHERE tenant = $1 AND id = 'xfer_nf'", [T]);
      expect(rows.rows.map((r) => [r.failed_result, BigInt(r.amount_nanos)])).toEqual([["debit_account_not_found", 0n]]);
    });

    it("spends the failing item's id of a rolled-back chain but not the others'", async () => {
      const T = "tnt_spent_chain";
      await setup(T);
      const res = await optimistic.createTransfers(T, [
        newTransfer("xfer_c1", { debitAccountId: "acct_cash", creditAccountId: "acct_rev", flags: { linked: true } }),
        newTransfer("xfer_c2", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 1n }),
      ]);
      expect(res.map((r) => r.result)).toEqual(["linked_event_failed", "exceeds_credits"]);
      const again = await optimistic.createTransfers(T, [
        newTransfer("xfer_c1", { debitAccountId: "acct_cash", creditAccountId: "acct_rev" }),
        newTransfer("xfer_c2", { debitAccountId: "acct_cash", creditAccountId: "acct_rev" }),
      ]);
      expect(again.map((r) => r.result)).toEqual(["ok", "id_already_failed"]);
    });

    it("closes an account with a pending closing transfer, refuses transfers to it, and reopens it on void", async () => {
      const T = "tnt_close";
      await setup(T);
      await optimistic.createTransfers(T, [newTransfer("xfer_fund", { debitAccountId: "acct_cash", creditAccountId: "acct_w", amountNanos: 100n })]);
      const close = await optimistic.createTransfers(T, [
        newTransfer("xfer_close", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 100n, flags: { pending: true, balancingDebit: true, closingDebit: true } }),
      ]);
      expect(close.map((r) => [r.result, r.amountNanos])).toEqual([["ok", 100n]]);
      let [w] = await optimistic.lookupAccounts(T, ["acct_w"]);
      expect(w!.flags.closed).toBe(true);
      expect(w!.debitsPendingNanos).toBe(100n);
      const refused = await optimistic.createTransfers(T, [
        newTransfer("xfer_in", { debitAccountId: "acct_cash", creditAccountId: "acct_w", amountNanos: 5n }),
        postOf("xfer_post_close", "xfer_close"),
      ]);
      expect(refused.map((r) => r.result)).toEqual(["credit_account_already_closed", "debit_account_already_closed"]);
      expect((await optimistic.createTransfers(T, [voidOf("xfer_reopen", "xfer_close")]))[0]!.result).toBe("ok");
      [w] = await optimistic.lookupAccounts(T, ["acct_w"]);
      expect([w!.flags.closed, w!.debitsPendingNanos, w!.flags.debitsMustNotExceedCredits, w!.flags.history]).toEqual([false, 0n, true, true]);
      expect((await optimistic.createTransfers(T, [newTransfer("xfer_in2", { debitAccountId: "acct_cash", creditAccountId: "acct_w", amountNanos: 5n })]))[0]!.result).toBe("ok");
      expect((await optimistic.verify(T)).ok).toBe(true);
    });

    it("reopens an account when its closing transfer expires in the sweep", async () => {
      const T = "tnt_close_expire";
      await setup(T);
      await optimistic.createTransfers(T, [
        newTransfer("xfer_close", { debitAccountId: "acct_cash", creditAccountId: "acct_rev", amountNanos: 1n, timeoutSeconds: 2, flags: { pending: true, closingCredit: true } }),
      ]);
      expect((await optimistic.lookupAccounts(T, ["acct_rev"]))[0]!.flags.closed).toBe(true);
      now += 3_000_000n;
      expect(await optimistic.expireDue()).toBe(1);
      expect((await optimistic.lookupAccounts(T, ["acct_rev"]))[0]!.flags.closed).toBe(false);
    });

    it("imports accounts and transfers with past timestamps, strictly increasing, and refuses regressions", async () => {
      const T = "tnt_import";
      tenants.push(T);
      // Everything so far was stamped at or before `now`; imports land between it and the new clock.
      const base = now + 1_000_000n;
      now += 10_000_000n;
      const accts = await optimistic.createAccounts(T, [
        newAccount("acct_old_a", { timestampUs: base, flags: { imported: true } }),
        newAccount("acct_old_b", { timestampUs: base + 1n, flags: { imported: true } }),
      ]);
      expect(accts.map((r) => [r.result, r.timestampUs])).toEqual([["ok", base], ["ok", base + 1n]]);
      const imp = (id: string, us: bigint, over: Parameters<typeof newTransfer>[1] = {}) =>
        newTransfer(id, { debitAccountId: "acct_old_a", creditAccountId: "acct_old_b", amountNanos: 7n, ...over, timestampUs: us, flags: { ...over.flags, imported: true } });
      const res = await optimistic.createTransfers(T, [
        imp("xfer_i1", base + 10n),
        imp("xfer_i2", base + 5n),
        imp("xfer_i3", base + 20n, { flags: { pending: true, imported: true } }),
        { ...postOf("xfer_i4", "xfer_i3"), timestampUs: base + 30n, flags: { ...postOf("x", "y").flags, imported: true } },
      ]);
      expect(res.map((r) => [r.result, r.timestampUs])).toEqual([
        ["ok", base + 10n],
        ["imported_event_timestamp_must_not_regress", null],
        ["ok", base + 20n],
        ["ok", base + 30n],
      ]);
      const mixed = await optimistic.createTransfers(T, [imp("xfer_i5", base + 40n), newTransfer("xfer_t6", { debitAccountId: "acct_old_a", creditAccountId: "acct_old_b" })]);
      expect(mixed.map((r) => r.result)).toEqual(["ok", "imported_event_expected"]);
      expect((await optimistic.createTransfers(T, [imp("xfer_future", now)]))[0]!.result).toBe("imported_event_timestamp_must_not_advance");
      const live = await optimistic.createTransfers(T, [newTransfer("xfer_live", { debitAccountId: "acct_old_a", creditAccountId: "acct_old_b" })]);
      expect(live[0]!.timestampUs! > base + 40n).toBe(true);
      // Once the ledger's clock has moved past, the same history can no longer be imported.
      expect((await optimistic.createTransfers(T, [imp("xfer_i6", base + 50n)]))[0]!.result).toBe("imported_event_timestamp_must_not_regress");
      const stored = await optimistic.lookupTransfers(T, ["xfer_i1", "xfer_i4"]);
      expect(stored.map((t) => [t.timestampUs, t.flags.imported])).toEqual([[base + 10n, true], [base + 30n, true]]);
      const [a] = await optimistic.lookupAccounts(T, ["acct_old_a"]);
      // 7 (i1) + 7 (i3 posted by i4) + 7 (i5) + 10 (live).
      expect([a!.timestampUs, a!.flags.imported, a!.debitsPostedNanos]).toEqual([base, true, 31n]);
      expect((await optimistic.verify(T)).ok).toBe(true);
    });

    it("queries accounts by unit, code, metadata and creation time, paged by timestamp in either order", async () => {
      const T = "tnt_query_accounts";
      await setup(T);
      const all = await qAcc(T, qa());
      expect(all.map((a) => a.id)).toEqual(["acct_cash", "acct_w", "acct_rev", "acct_eur"]);
      expect((await qAcc(T, qa({ code: 4000 }))).map((a) => a.id)).toEqual(["acct_rev", "acct_eur"]);
      expect((await qAcc(T, qa({ code: 4000, unit: "EUR" }))).map((a) => a.id)).toEqual(["acct_eur"]);
      expect((await qAcc(T, qa({ metadata: { customer_id: "cus_1" } }))).map((a) => a.id)).toEqual(["acct_w"]);
      expect((await qAcc(T, qa({ metadata: { customer_id: "cus_1", tier: "free" } })))).toEqual([]);
      const p1 = await qAcc(T, qa({ reversed: true, limit: 2 }));
      expect(p1.map((a) => a.id)).toEqual(["acct_eur", "acct_rev"]);
      const p2 = await qAcc(T, qa({ reversed: true, limit: 2, afterUs: p1[1]!.timestampUs }));
      expect(p2.map((a) => a.id)).toEqual(["acct_w", "acct_cash"]);
      const range = await qAcc(T, qa({ startUs: all[1]!.timestampUs, endUs: all[3]!.timestampUs }));
      expect(range.map((a) => a.id)).toEqual(["acct_w", "acct_rev"]);
      expect(await qAcc("tnt_nobody", qa())).toEqual([]);
    });

    it("queries transfers by unit, code, references and time, paged by timestamp in either order", async () => {
      const T = "tnt_query_transfers";
      await setup(T);
      const res = await optimistic.createTransfers(T, [
        newTransfer("xfer_1", { debitAccountId: "acct_cash", creditAccountId: "acct_w", amountNanos: 100n, code: 10, references: { invoice_id: "inv_1" } }),
        newTransfer("xfer_2", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 5n, code: 20, references: { invoice_id: "inv_1", event_id: "evt_1" } }),
        newTransfer("xfer_3", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 6n, code: 20, references: { event_id: "evt_2" } }),
        newTransfer("xfer_4", { debitAccountId: "acct_w", creditAccountId: "acct_rev", amountNanos: 7n, code: 21, flags: { pending: true } }),
      ]);
      expect(res.every((r) => r.result === "ok")).toBe(true);
      expect((await qTr(T, qt({ references: { invoice_id: "inv_1" } }))).map((t) => t.id)).toEqual(["xfer_1", "xfer_2"]);
      expect((await qTr(T, qt({ references: { invoice_id: "inv_1", event_id: "evt_1" } }))).map((t) => t.id)).toEqual(["xfer_2"]);
      expect((await qTr(T, qt({ code: 20 }))).map((t) => t.id)).toEqual(["xfer_2", "xfer_3"]);
      expect(await qTr(T, qt({ unit: "EUR" }))).toEqual([]);
      const pendingOnes = await qTr(T, qt({ code: 21 }));
      expect(pendingOnes.map((t) => [t.id, t.state])).toEqual([["xfer_4", "pending"]]);
      const p1 = await qTr(T, qt({ reversed: true, limit: 3 }));
      expect(p1.map((t) => t.id)).toEqual(["xfer_4", "xfer_3", "xfer_2"]);
      const p2 = await qTr(T, qt({ reversed: true, limit: 3, afterUs: p1[2]!.timestampUs }));
      expect(p2.map((t) => t.id)).toEqual(["xfer_1"]);
      const range = await qTr(T, qt({ startUs: res[1]!.timestampUs, endUs: res[3]!.timestampUs }));
      expect(range.map((t) => t.id)).toEqual(["xfer_2", "xfer_3"]);
    });

    it("bounds a filtered query's scan: a window that ends before the page fills returns a short page and where to continue", async () => {
      const T = "tnt_query_transfers";
      const small = createPgLedgerStore({ db, nowUs, queryScanRowsMax: 2 });
      try {
        // Time order: xfer_1 (code 10), xfer_2 (20), xfer_3 (20), xfer_4 (21).
        const seen: string[] = [];
        const stops: (bigint | null)[] = [];
        let after: bigint | null = null;
        for (let i = 0; i < 5; i++) {
          const page = await small.queryTransfers(T, qt({ code: 20, limit: 100, afterUs: after }));
          seen.push(...page.items.map((t) => t.id));
          stops.push(page.scannedToUs);
          if (page.scannedToUs === null) break;
          after = page.scannedToUs;
        }
        expect(seen).toEqual(["xfer_2", "xfer_3"]);
        // Windows [xfer_1, xfer_2], [xfer_3, xfer_4], then the rest (nothing) without a window.
        expect(stops.length).toBe(3);
        expect(stops[2]).toBeNull();
        // Without filters the time index serves the page directly: no window.
        const plain = await small.queryTransfers(T, qt({ limit: 100 }));
        expect([plain.items.length, plain.scannedToUs]).toEqual([4, null]);
        const accts = await small.queryAccounts(T, qa({ code: 4000, limit: 100, reversed: true }));
        expect(accts.items.map((a) => a.id)).toEqual(["acct_eur", "acct_rev"]);
        expect(accts.scannedToUs).not.toBeNull();
      } finally {
        await small.close();
      }
    });
  });
}
