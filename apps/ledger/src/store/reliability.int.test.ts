/**
 * Reliability of the store-backed ledger on both backends: a model-based property test against
 * an independent reference model, 64 concurrent clients racing for one wallet, and Verify after
 * everything.
 */
import { migrate, testBackends } from "@nanobill/db";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newAccount, newTransfer } from "../domain/test-helpers.js";
import type { NewTransfer } from "../domain/types.js";
import { migrationsDir } from "./migrations-dir.js";
import { createPgLedgerStore } from "./pg-store.js";
import { ReferenceLedger, type MTransfer } from "./reference-model.js";
import type { LedgerStore } from "./types.js";

const ACCOUNTS = ["A", "B", "W1", "W2", "H", "E"] as const;
// Transient failures spend ids (id_already_failed), so the pool is large enough for successes to
// keep happening while retries and reuse still collide often.
const IDS = Array.from({ length: 24 }, (_, i) => `x${i}`);

const amountArb = fc.oneof({ weight: 1, arbitrary: fc.constant(0n) }, { weight: 6, arbitrary: fc.bigInt({ min: 1n, max: 150n }) });

const plainArb: fc.Arbitrary<MTransfer> = fc.record({
  id: fc.constantFrom(...IDS),
  dr: fc.constantFrom(...ACCOUNTS),
  cr: fc.constantFrom(...ACCOUNTS),
  amount: amountArb,
  pending: fc.boolean(),
  balancing: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  timeout: fc.constantFrom(0, 0, 1, 2, 3),
  // Mostly none; a closing flag on a non-pending transfer is a shape error the model must match.
  closing: fc.constantFrom("none", "none", "none", "none", "none", "none", "debit", "credit"),
}).map(({ closing, ...r }) => ({
  ...r,
  timeout: r.pending ? r.timeout : 0,
  post: false,
  void: false,
  linked: false,
  pendingId: "",
  closingDebit: closing === "debit",
  closingCredit: closing === "credit",
}));

// pendingId "@n" is aimed at run time at the n-th transfer still pending (when there is one), so
// posts and voids mostly meet live pending transfers; a plain id tests the other outcomes.
const resolveArb: fc.Arbitrary<MTransfer> = fc.record({
  id: fc.constantFrom(...IDS),
  pendingId: fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...IDS) }, { weight: 2, arbitrary: fc.nat(50).map((n) => `@${n}`) }),
  amount: amountArb,
  post: fc.boolean(),
}).map((r) => ({
  id: r.id,
  dr: "",
  cr: "",
  amount: r.amount,
  pending: false,
  post: r.post,
  void: !r.post,
  balancing: false,
  linked: false,
  pendingId: r.pendingId,
  timeout: 0,
  closingDebit: false,
  closingCredit: false,
}));

const itemArb = fc.oneof({ weight: 3, arbitrary: plainArb }, { weight: 2, arbitrary: resolveArb });

const batchArb = fc.record({ items: fc.array(itemArb, { minLength: 1, maxLength: 4 }), chained: fc.boolean(), openEnd: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }) }).map(({ items, chained, openEnd }) =>
  items.map((t, i) => ({ ...t, linked: chained ? i < items.length - 1 || openEnd : false })),
);

type Cmd = { kind: "batch"; batch: MTransfer[] } | { kind: "retry" } | { kind: "advance"; seconds: number; sweep: boolean };
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: batchArb.map((batch) => ({ kind: "batch" as const, batch })) },
  { weight: 1, arbitrary: fc.constant({ kind: "retry" as const }) },
  { weight: 2, arbitrary: fc.record({ seconds: fc.integer({ min: 1, max: 3 }), sweep: fc.boolean() }).map((r) => ({ kind: "advance" as const, ...r })) },
);

function toNew(m: MTransfer): NewTransfer {
  const pv = m.post || m.void;
  return newTransfer(m.id, {
    debitAccountId: m.dr,
    creditAccountId: m.cr,
    amountNanos: m.amount,
    unit: pv ? "" : "USD",
    code: pv ? 0 : 20,
    pendingId: m.pendingId,
    timeoutSeconds: m.timeout,
    flags: {
      linked: m.linked,
      pending: m.pending,
      postPendingTransfer: m.post,
      voidPendingTransfer: m.void,
      balancingDebit: m.balancing,
      closingDebit: m.closingDebit,
      closingCredit: m.closingCredit,
    },
  });
}

for (const backend of testBackends()) {
  describe(`ledger reliability on ${backend.name}`, () => {
    let db: Awaited<ReturnType<typeof backend.open>>;
    let store: LedgerStore;
    const START_US = 1_800_000_000_000_000n;
    let nowUs = START_US;
    const tenantsUsed: string[] = [];

    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      // Every commit tries the optimistic path first, so retries exercise the conflict fallback.
      store = createPgLedgerStore({ db, nowUs: () => nowUs, fullLookupCommitsAfterConflict: 0 });
    });
    afterAll(async () => {
      // Verify after everything, for every tenant the tests used.
      for (const t of tenantsUsed) {
        const report = await store.verify(t);
        expect(report.violations, `tenant ${t}`).toEqual([]);
      }
      await store?.close();
      await db?.dispose();
    });

    it("matches the reference model on random sequences (linked chains, pending/post/void/expire, balancing, closing, retries, spent ids)", async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(cmdArb, { minLength: 5, maxLength: 25 }), async (cmds) => {
          const tenant = `tnt_prop_${run++}`;
          tenantsUsed.push(tenant);
          const model = new ReferenceLedger();
          // Whole seconds for the model; the ledger's clock is START_US + model seconds (+ its own 1 µs bumps).
          const baseSec = Number((nowUs - START_US) / 1_000_000n) + 1;
          model.nowSec = baseSec;
          nowUs = START_US + BigInt(baseSec) * 1_000_000n;
          const accts = await store.createAccounts(tenant, [
            newAccount("A"),
            newAccount("B"),
            newAccount("W1", { flags: { debitsMustNotExceedCredits: true } }),
            newAccount("W2", { flags: { debitsMustNotExceedCredits: true } }),
            newAccount("H", { flags: { creditsMustNotExceedDebits: true } }),
            newAccount("E", { unit: "EUR" }),
          ]);
          expect(accts.every((a) => a.result === "ok")).toBe(true);
          model.addAccount("A", "USD", false, false);
          model.addAccount("B", "USD", false, false);
          model.addAccount("W1", "USD", true, false);
          model.addAccount("W2", "USD", true, false);
          model.addAccount("H", "USD", false, true);
          model.addAccount("E", "EUR", false, false);
          const funding: MTransfer[] = [
            { id: "f1", dr: "A", cr: "W1", amount: 300n, pending: false, post: false, void: false, balancing: false, linked: false, pendingId: "", timeout: 0, closingDebit: false, closingCredit: false },
            { id: "f2", dr: "A", cr: "W2", amount: 300n, pending: false, post: false, void: false, balancing: false, linked: false, pendingId: "", timeout: 0, closingDebit: false, closingCredit: false },
            { id: "f3", dr: "H", cr: "B", amount: 300n, pending: false, post: false, void: false, balancing: false, linked: false, pendingId: "", timeout: 0, closingDebit: false, closingCredit: false },
          ];
          model.apply(funding);
          await store.createTransfers(tenant, funding.map(toNew));

          let last: MTransfer[] | null = null;
          for (const cmd of cmds) {
            if (cmd.kind === "advance") {
              // Never land exactly on a pending deadline (the ledger's µs bumps would make that instant ambiguous).
              let s = cmd.seconds;
              const deadlines = new Set(model.pendingDeadlines());
              while (deadlines.has(model.nowSec + s)) s++;
              model.nowSec += s;
              nowUs = START_US + BigInt(model.nowSec) * 1_000_000n;
              if (cmd.sweep) {
                const want = model.sweep();
                // The sweep covers every tenant; other tenants' runs left nothing overdue behind.
                expect(await store.expireDue()).toBe(want);
              }
              continue;
            }
            const live = model.pendingIds();
            const aim = (p: string) => (p.startsWith("@") ? (live.length > 0 ? live[Number(p.slice(1)) % live.length]! : IDS[Number(p.slice(1)) % IDS.length]!) : p);
            const batch: MTransfer[] | null = cmd.kind === "retry" ? last : cmd.batch.map((t) => ({ ...t, pendingId: aim(t.pendingId) }));
            if (!batch) continue;
            last = batch;
            const want = model.apply(batch);
            const got = await store.createTransfers(tenant, batch.map(toNew));
            expect(got.map((r) => [r.result, r.amountNanos])).toEqual(want.map((r) => [r.result, r.amount]));
            const accounts = await store.lookupAccounts(tenant, [...ACCOUNTS]);
            expect(accounts.map((a) => [a.id, a.debitsPendingNanos, a.debitsPostedNanos, a.creditsPendingNanos, a.creditsPostedNanos, a.flags.closed])).toEqual(
              ACCOUNTS.map((id) => [id, ...model.balances(id), model.closed(id)]),
            );
          }
          // Leave nothing overdue for the next run's sweeps: sweep at a time past every deadline.
          const maxDeadline = Math.max(model.nowSec, ...model.pendingDeadlines());
          model.nowSec = maxDeadline + 1;
          nowUs = START_US + BigInt(model.nowSec) * 1_000_000n;
          expect(await store.expireDue()).toBe(model.sweep());
          const report = await store.verify(tenant);
          expect(report.violations).toEqual([]);
        }),
        { numRuns: backend.name === "pglite" ? 12 : 20, endOnFailure: true },
      );
    });

    it("lets exactly N of 64 racing clients debit a wallet funded for N transfers", async () => {
      const tenant = "tnt_race";
      tenantsUsed.push(tenant);
      const N = 37;
      const AMOUNT = 1_000n;
      await store.createAccounts(tenant, [newAccount("acct_src"), newAccount("acct_dst"), newAccount("acct_wallet", { flags: { debitsMustNotExceedCredits: true, history: true } })]);
      const fund = await store.createTransfers(tenant, [newTransfer("xfer_fund", { debitAccountId: "acct_src", creditAccountId: "acct_wallet", amountNanos: BigInt(N) * AMOUNT })]);
      expect(fund[0]!.result).toBe("ok");
      const clients = Array.from({ length: 64 }, async (_, c) => {
        const results: string[] = [];
        for (let k = 0; k < 2; k++) {
          const [r] = await store.createTransfers(tenant, [newTransfer(`xfer_c${c}_${k}`, { debitAccountId: "acct_wallet", creditAccountId: "acct_dst", amountNanos: AMOUNT })]);
          results.push(r!.result);
        }
        return results;
      });
      const all = (await Promise.all(clients)).flat();
      expect(all.filter((r) => r === "ok").length).toBe(N);
      expect(all.filter((r) => r !== "ok").every((r) => r === "exceeds_credits")).toBe(true);
      const [w] = await store.lookupAccounts(tenant, ["acct_wallet"]);
      expect(w!.debitsPostedNanos).toBe(w!.creditsPostedNanos);
      // The balance was never negative: every snapshot of the history account respects the floor.
      const snaps = await store.getAccountBalances(tenant, { accountId: "acct_wallet", startUs: null, endUs: null, reversed: false, limit: 1000, afterUs: null });
      expect(snaps.length).toBe(N + 1);
      expect(snaps.every((s) => s.debitsPostedNanos + s.debitsPendingNanos <= s.creditsPostedNanos)).toBe(true);
      expect((await store.verify(tenant)).ok).toBe(true);
    });
  });
}
