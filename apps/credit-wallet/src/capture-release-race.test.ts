// A Capture or Release whose transaction has read its grants' states while RunExpiry / RunRollover
// of one of those grants runs (review of 2026-11-29, defect 1). Before the fix the states were read
// without a lock: the expiry / rollover committed in between, and the hold then gave its released
// part back to a grant that was no longer active (held down, neither spendable nor broken: stuck).
// Deterministic: the capture/release transaction is paused right after its grant-state read; the run
// starts during the pause and the test waits until the run has either finished or is blocked by the
// paused transaction, then lets the capture/release go on. PostgreSQL + Redis only (PGlite runs one
// transaction at a time, so there is no race to show there).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { KEYS, interceptTransactionQueries, openWalletHarness, walletBackends, type WalletHarness } from "./test-support.js";

const pg = walletBackends().filter((b) => b.name === "postgres+redis");

describe.each(pg)("Capture / Release racing RunExpiry / RunRollover of the hold's grant ($name)", (b) => {
  let h: WalletHarness;
  /** One-shot: set by a test, taken by the next capture/release transaction at its grant-state read. */
  let pause: { reached: (pid: number) => void; proceed: Promise<void> } | null = null;

  beforeAll(async () => {
    h = await openWalletHarness(b);
    interceptTransactionQueries(h.db, async (t, sql, params) => {
      const r = await t.query(sql, params);
      if (pause && sql.startsWith("SELECT id, state FROM grants")) {
        const p0 = pause;
        pause = null;
        const pid = Number((await t.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid);
        p0.reached(pid);
        await p0.proceed;
      }
      return r;
    });
  });
  afterAll(async () => {
    await h?.close();
  });
  const admin = () => h.client(KEYS.adminA);
  const ingest = () => h.client(KEYS.internal, "tnt_a");

  /**
   * Runs `op` (a capture or release) paused after its grant-state read, runs `run` during the pause
   * until it has finished or waits on a lock the paused transaction holds, then lets `op` go on.
   */
  async function race<A, B>(op: () => Promise<A>, run: () => Promise<B>): Promise<{ op: A; run: B; runWaitedForOp: boolean }> {
    let reached!: (pid: number) => void;
    const reachedP = new Promise<number>((r) => (reached = r));
    let proceed!: () => void;
    pause = { reached, proceed: new Promise<void>((r) => (proceed = r)) };
    const opP = op();
    opP.catch(() => undefined);
    const pid = await reachedP;
    let runDone = false;
    const runP = run().finally(() => (runDone = true));
    runP.catch(() => undefined);
    let runWaitedForOp = false;
    for (let i = 0; i < 500 && !runDone; i++) {
      const r = await h.db.query<{ n: string }>(`SELECT count(*)::text AS n FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`, [pid]);
      if (Number(r.rows[0]!.n) > 0) {
        runWaitedForOp = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(runDone || runWaitedForOp).toBe(true);
    proceed();
    return { op: await opP, run: await runP, runWaitedForOp };
  }

  /** Ledger wallet account = PostgreSQL's grants (amount - burned - expired), pending = held, ledger Verify clean. */
  async function expectBooksAgree(walletId: string, customerId: string) {
    await h.wallet.outbox.flush();
    const bal = await admin().getBalance({ walletId });
    const acct = (await h.ledgerClient("tnt_a").lookupAccounts({ ids: [`acct_wallet:${customerId}:USD`] })).accounts[0]!;
    expect(acct.creditsPostedNanos - acct.debitsPostedNanos).toBe(bal.grants.reduce((s, g) => s + g.amountNanos - g.burnedNanos - g.expiredNanos, 0n));
    expect(acct.debitsPendingNanos).toBe(bal.grants.reduce((s, g) => s + g.heldNanos, 0n));
    expect((await h.ledgerClient("tnt_a").verify({})).violations).toEqual([]);
    return bal;
  }

  for (const op of ["capture", "release"] as const) {
    it(`sends to breakage everything a ${op} gives back on a grant RunExpiry expires meanwhile (nothing stays stuck on the expired grant)`, async () => {
      const cus = `cus_race_x_${op}`;
      const t0 = h.clock.now().getTime();
      const w = (await admin().createWallet({ customerId: cus, unit: "USD" })).wallet!;
      await admin().grant({ id: `g_race_x_${op}`, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1000n, expiresAt: timestampFromDate(new Date(t0 + 600_000)) });
      const hold = (await ingest().authorize({ id: `h_race_x_${op}`, customerId: cus, unit: "USD", amountNanos: 600n, ttlMs: 3_600_000n })).hold!;
      h.clock.advance(1_200_000); // the grant expired 10 min ago; the hold has 40 min left
      const r = await race(
        async (): Promise<{ releasedNanos: bigint }> => (op === "capture" ? ingest().capture({ holdId: hold.id, amountNanos: 100n }) : ingest().release({ holdId: hold.id })),
        () => admin().runExpiry({ walletId: w.id }),
      );
      expect(r.op.releasedNanos).toBe(op === "capture" ? 500n : 600n);
      const again = await admin().runExpiry({ walletId: w.id });
      const bal = await expectBooksAgree(w.id, cus);
      const g = bal.grants.find((x) => x.grantId === `g_race_x_${op}`)!;
      const burned = op === "capture" ? 100n : 0n;
      expect(g.state).toBe(pb.GrantState.EXPIRED);
      expect({ burned: g.burnedNanos, held: g.heldNanos, expired: g.expiredNanos, available: g.availableNanos }).toEqual({ burned, held: 0n, expired: 1000n - burned, available: 0n });
      expect(r.run.breakageNanos + again.breakageNanos).toBe(1000n - burned);
      expect(bal.balanceNanos).toBe(0n);
      const brk = (await h.ledgerClient("tnt_a").lookupAccounts({ ids: ["acct_breakage:USD"] })).accounts[0]!;
      expect(brk.creditsPostedNanos).toBeGreaterThanOrEqual(1000n - burned);
    });
  }

  it("rolls over (rule ALL) everything a capture gives back on an allowance RunRollover closes meanwhile", async () => {
    const cus = "cus_race_ro";
    const t0 = h.clock.now().getTime();
    const w = (await admin().createWallet({ customerId: cus, unit: "USD" })).wallet!;
    await admin().grant({ id: "g_race_ro", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1000n, periodEnd: timestampFromDate(new Date(t0 + 600_000)), rollover: { mode: pb.RolloverMode.ALL } });
    const hold = (await ingest().authorize({ id: "h_race_ro", customerId: cus, unit: "USD", amountNanos: 600n, ttlMs: 3_600_000n })).hold!;
    h.clock.advance(1_200_000);
    const r = await race(
      () => ingest().capture({ holdId: hold.id, amountNanos: 100n }),
      () => admin().runRollover({ walletId: w.id }),
    );
    expect(r.op.releasedNanos).toBe(500n);
    const bal = await expectBooksAgree(w.id, cus);
    const a = bal.grants.find((g) => g.grantId === "g_race_ro")!;
    expect(a.state).toBe(pb.GrantState.ROLLED_OVER);
    expect(a.amountNanos - a.burnedNanos - a.heldNanos - a.expiredNanos).toBe(0n);
    // 900 unused in all (1000 - 100 captured) ends in the rollover grant, spendable.
    const ro = bal.grants.filter((g) => g.kind === pb.GrantKind.ROLLOVER);
    expect(ro.reduce((s, g) => s + g.availableNanos, 0n)).toBe(900n);
    expect(bal.balanceNanos).toBe(900n);
    const c = await ingest().consume({ items: [{ id: "c_race_ro", customerId: cus, unit: "USD", amountNanos: 900n }] });
    expect(c.results[0]!.result).toBe(pb.ConsumeResult.OK);
  });
});
