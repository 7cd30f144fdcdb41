import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { migrate, testBackends, type Queryable, type TestDb } from "@nanobill/db";
import { currentTraceContext, getTracer, initTelemetry, type Telemetry } from "@nanobill/telemetry";
import { HARD_STOP } from "../domain/types.js";
import * as S from "./store.js";

const T = "tnt_s";
const now = new Date("2026-11-01T00:00:00Z");

let telemetry: Telemetry;
beforeAll(() => {
  telemetry = initTelemetry({ serviceName: "wallet-store-test", exporter: new InMemorySpanExporter() });
});
afterAll(async () => {
  await telemetry?.shutdown();
});

describe.each(testBackends())("wallet store ($name)", (backend) => {
  let db: TestDb;
  beforeAll(async () => {
    db = await backend.open();
    await migrate(db, S.migrationsDir);
    await S.insertWallet(db, { tenant: T, id: "wal_1", customerId: "cus_1", unit: "USD", kind: "prepaid", policy: { ...HARD_STOP, mode: "soft_negative", negativeLimitNanos: 10n }, ledgerAccountId: "acct_wallet:cus_1:USD", now });
    await S.insertGrant(db, T, {
      id: "g1", walletId: "wal_1", kind: "purchased", amountNanos: 100n, priority: 0, effectiveAt: now, expiresAt: null, createdAt: now, costBasis: "1", costBasisCurrency: "USD",
      scope: { chargeIds: ["c1"], models: [] }, rollover: null, periodEnd: null, renew: false, rootId: "g1", periodIndex: 0, invoiceId: "", description: "", requestHash: "h", expiryGraceMs: null,
    });
  });
  afterAll(async () => {
    await db?.dispose();
  });

  it("refuses, as a GuardError, any delta that would spend a grant past its amount (and applies nothing)", async () => {
    await S.applyGrantDeltas(db, T, [{ grantId: "g1", held: 60n }, { grantId: "g1", burned: 40n }]);
    await expect(db.transaction((tx) => S.applyGrantDeltas(tx, T, [{ grantId: "g1", burned: 1n }]))).rejects.toBeInstanceOf(S.GuardError);
    await expect(db.transaction((tx) => S.applyGrantDeltas(tx, T, [{ grantId: "g1", held: -61n }]))).rejects.toBeInstanceOf(S.GuardError);
    await expect(db.transaction((tx) => S.applyGrantDeltas(tx, T, [{ grantId: "nope", burned: 1n }]))).rejects.toBeInstanceOf(S.GuardError);
    const g = (await S.getGrant(db, T, "g1"))!;
    expect([g.burnedNanos, g.heldNanos, g.scope.chargeIds]).toEqual([40n, 60n, ["c1"]]);
    await S.applyGrantDeltas(db, T, [{ grantId: "g1", held: -60n, burned: 10n }]);
  });

  it("reads many wallets' real-time snapshots and finds many wallets by customer and unit, each in one statement", async () => {
    await S.insertWallet(db, { tenant: T, id: "wal_snap_empty", customerId: "cus_snap", unit: "EUR", kind: "prepaid", policy: HARD_STOP, ledgerAccountId: "acct_wallet:cus_snap:EUR", now });
    const snaps = await S.readSnapshotRowsMany(db, T, ["wal_1", "wal_snap_empty", "wal_missing"]);
    expect([...snaps.keys()].sort()).toEqual(["wal_1", "wal_snap_empty"]);
    const one = snaps.get("wal_1")!;
    expect([one.wallet.id, one.wallet.policy.negativeLimitNanos, one.grants.map((g) => [g.id, g.amountNanos, g.scope.chargeIds])]).toEqual(["wal_1", 10n, [["g1", 100n, ["c1"]]]]);
    expect(snaps.get("wal_snap_empty")!.grants).toEqual([]);
    // The same as the one-wallet read, grant by grant.
    expect(await S.readSnapshotRows(db, T, "wal_1")).toEqual(one);
    expect(one.grants).toEqual(await S.listGrants(db, T, "wal_1", { activeOnly: true }));
    expect(await S.readSnapshotRows(db, T, "wal_missing")).toBeNull();
    const found = await S.findWallets(db, T, [{ customerId: "cus_1", unit: "USD" }, { customerId: "cus_snap", unit: "EUR" }, { customerId: "cus_1", unit: "EUR" }]);
    expect([...found.entries()].map(([k, w]) => [k, w.id]).sort()).toEqual([["cus_1\u0000USD", "wal_1"], ["cus_snap\u0000EUR", "wal_snap_empty"]]);
    expect((await S.findWallets(db, "tnt_other", [{ customerId: "cus_1", unit: "USD" }])).size).toBe(0);
  });

  it("keeps the overdraft within the negative limit", async () => {
    await S.addOverdraft(db, T, "wal_1", { postedNanos: 6n, heldNanos: 4n, enforceLimit: true });
    await expect(db.transaction((tx) => S.addOverdraft(tx, T, "wal_1", { postedNanos: 1n, heldNanos: 0n, enforceLimit: true }))).rejects.toBeInstanceOf(S.GuardError);
    const w = (await S.getWallet(db, T, "wal_1"))!;
    expect([w.overdraftPostedNanos, w.overdraftHeldNanos]).toEqual([6n, 4n]);
  });

  it("inserts holds and consumptions once: a replayed id is reported as not inserted", async () => {
    const hold: S.HoldRow = { id: "h1", walletId: "wal_1", amountNanos: 5n, slices: [{ grantId: "g1", amountNanos: 5n }], overdraftNanos: 0n, uncoveredNanos: 0n, state: "pending", expiresAt: now, capturedNanos: 0n, chargeId: "", model: "", requestHash: "x", createdAt: now };
    expect([...(await S.insertHolds(db, T, [hold]))]).toEqual(["h1"]);
    expect([...(await S.insertHolds(db, T, [hold, { ...hold, id: "h2" }]))]).toEqual(["h2"]);
    expect((await S.getHold(db, T, "h1"))!.slices).toEqual([{ grantId: "g1", amountNanos: 5n }]);
    const c: S.ConsumptionRow = { source: "consume", id: "c1", walletId: "wal_1", customerId: "cus_1", unit: "USD", amountNanos: 9n, consumedNanos: 7n, overdraftNanos: 3n, shortfallNanos: 2n, eventId: "e", chargeId: "ch", model: "", holdId: "", occurredAt: now, requestHash: "y" };
    expect((await S.insertConsumptions(db, T, [c], now)).size).toBe(1);
    expect((await S.insertConsumptions(db, T, [c], now)).size).toBe(0);
    // a capture's burn: counted in consumed, and apart as captured (its overdraft part too)
    expect((await S.insertConsumptions(db, T, [{ ...c, source: "capture", id: "h1", holdId: "h1", amountNanos: 4n, consumedNanos: 4n, overdraftNanos: 1n, shortfallNanos: 0n }], now)).size).toBe(1);
    const tot = await S.consumptionTotals(db, T, "cus_1", "USD", now, new Date(now.getTime() + 1));
    expect([tot.consumed, tot.overdraft, tot.captured, tot.shortfall, tot.byCharge.length]).toEqual([11n, 4n, 4n, 2n, 1]);
    expect((await S.listConsumptionEntries(db, T, "cus_1", "USD", now, new Date(now.getTime() + 1), null, 10)).map((x) => [x.source, x.overdraftNanos])).toEqual([["capture", 1n], ["consume", 3n]]);
  });

  it("commits a group of holds in one statement, and refuses the whole group when one over-spends", async () => {
    const base: S.HoldRow = { id: "", walletId: "wal_1", amountNanos: 1n, slices: [], overdraftNanos: 0n, uncoveredNanos: 0n, state: "pending", expiresAt: now, capturedNanos: 0n, chargeId: "", model: "", requestHash: "z", createdAt: now };
    const h = (id: string, n: bigint): S.HoldRow => ({ ...base, id, amountNanos: n, slices: [{ grantId: "g1", amountNanos: n }] });
    const mv = (id: string, n: bigint): S.MovementRow => ({ id: `mv_${id}`, walletId: "wal_1", grantId: "g1", kind: "hold", amountNanos: n, sourceId: id, holdId: id, occurredAt: now });
    const tr = (id: string) => ({ holdId: id, transfers: [{ id: `x_${id}`, debit: "a", credit: "b", amount: "1", unit: "USD", code: 21 }] });
    const before = (await S.getGrant(db, T, "g1"))!;
    const free = before.amountNanos - before.burnedNanos - before.heldNanos - before.expiredNanos;
    await expect(db.transaction((tx) => S.commitHolds(tx, T, [h("gh1", 1n), h("gh2", free)], [mv("gh1", 1n), mv("gh2", free)], [tr("gh1"), tr("gh2")], now))).rejects.toBeInstanceOf(S.GuardError);
    expect(await S.getHold(db, T, "gh1")).toBeNull();
    const ok = await db.transaction((tx) => S.commitHolds(tx, T, [h("gh1", 1n), h("gh2", 2n)], [mv("gh1", 1n), mv("gh2", 2n)], [tr("gh1"), tr("gh2")], now));
    expect([...ok].sort()).toEqual(["gh1", "gh2"]);
    const again = await db.transaction((tx) => S.commitHolds(tx, T, [h("gh1", 1n), h("gh3", 1n)], [mv("gh1", 1n), mv("gh3", 1n)], [tr("gh1"), tr("gh3")], now));
    expect([...again]).toEqual(["gh3"]);
    expect((await S.getGrant(db, T, "g1"))!.heldNanos).toBe(before.heldNanos + 4n);
    // Without an explicit transaction (how Authorize sends it): an over-spend or a slice naming a
    // grant that is not there fails the statement itself, and nothing of it is written.
    const held = (await S.getGrant(db, T, "g1"))!.heldNanos;
    await expect(S.commitHolds(db, T, [h("gh4", 1n), h("gh5", free)], [mv("gh4", 1n), mv("gh5", free)], [tr("gh4"), tr("gh5")], now)).rejects.toBeInstanceOf(S.GuardError);
    const ghost = { ...h("gh6", 1n), slices: [{ grantId: "g_missing", amountNanos: 1n }] };
    await expect(S.commitHolds(db, T, [h("gh4", 1n), ghost], [mv("gh4", 1n), mv("gh6", 1n)], [tr("gh4"), tr("gh6")], now)).rejects.toBeInstanceOf(S.GuardError);
    expect(await S.getHolds(db, T, ["gh4", "gh5", "gh6"])).toEqual(new Map());
    expect((await S.getGrant(db, T, "g1"))!.heldNanos).toBe(held);
    // The outbox row keeps the trace of the call that wrote it (none outside a span).
    const traceparent = await getTracer("store-test").startActiveSpan("commit", async (span) => {
      expect([...(await S.commitHolds(db, T, [h("gh4", 1n)], [mv("gh4", 1n)], [tr("gh4")], now))]).toEqual(["gh4"]);
      span.end();
      return currentTraceContext()!.traceparent;
    });
    const out = await S.nextOutbox(db, 100);
    expect(out.map((o) => o.transfers[0]!.id)).toEqual(["x_gh1", "x_gh2", "x_gh3", "x_gh4"]);
    expect(out.map((o) => o.trace.traceparent)).toEqual(["", "", "", traceparent]);
    await S.markOutbox(db, out.map((o) => o.seq), [], [], now);
  });

  it("alerts a low-balance crossing once (from the given or the computed available balance) and re-arms only at or above the threshold", async () => {
    await S.insertWallet(db, { tenant: T, id: "wal_low", customerId: "cus_low", unit: "USD", kind: "prepaid", policy: HARD_STOP, ledgerAccountId: "acct_wallet:cus_low:USD", now });
    await S.insertGrant(db, T, {
      id: "g_low", walletId: "wal_low", kind: "purchased", amountNanos: 100n, priority: 0, effectiveAt: now, expiresAt: null, createdAt: now, costBasis: "1", costBasisCurrency: "USD",
      scope: { chargeIds: [], models: [] }, rollover: null, periodEnd: null, renew: false, rootId: "g_low", periodIndex: 0, invoiceId: "", description: "", requestHash: "h", expiryGraceMs: null,
    });
    // No threshold: nothing. Threshold 50, available 60 (given): nothing; 40: one alert; again: none.
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_low", availableNanos: 0n }], now)).toEqual([]);
    await S.updateLowBalance(db, T, "wal_low", 50n);
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_low", availableNanos: 60n }], now)).toEqual([]);
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_low", availableNanos: 40n }, { walletId: "wal_low", availableNanos: 30n }], now)).toEqual(["wal_low"]);
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_low", availableNanos: 10n }], now)).toEqual([]);
    // Re-arm needs PostgreSQL's available (100 - 60 held = 40) at or above 50.
    await S.applyGrantDeltas(db, T, [{ grantId: "g_low", held: 60n }]);
    await S.rearmLowBalance(db, T, ["wal_low"], now);
    expect((await S.getWallet(db, T, "wal_low"))!.lowBalanceArmed).toBe(false);
    await S.applyGrantDeltas(db, T, [{ grantId: "g_low", held: -10n }]);
    await S.rearmLowBalance(db, T, ["wal_low"], now);
    expect((await S.getWallet(db, T, "wal_low"))!.lowBalanceArmed).toBe(true);
    // Computed from PostgreSQL (null): 50 is not below 50; 49 is.
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_low", availableNanos: null }], now)).toEqual([]);
    await S.applyGrantDeltas(db, T, [{ grantId: "g_low", burned: 1n }]);
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_low", availableNanos: null }], now)).toEqual(["wal_low"]);
    const alerts = await S.listAlerts(db, T, { customerId: "cus_low", kind: "low_balance", since: null, afterSeq: 0n, limit: 10 });
    expect(alerts.map((a) => [a.id, a.amountNanos])).toEqual([["alr_lowb_wal_low_1", 30n], ["alr_lowb_wal_low_2", 49n]]);
    expect((await S.availableOf(db, T, ["wal_low"], now)).get("wal_low")).toBe(49n);
  });

  it("counts only grants that can burn now in the available balance (not a future grant, not one past expires_at in its grace)", async () => {
    await S.insertWallet(db, { tenant: T, id: "wal_spn", customerId: "cus_spn", unit: "USD", kind: "prepaid", policy: HARD_STOP, ledgerAccountId: "acct_wallet:cus_spn:USD", now });
    const g = (id: string, amountNanos: bigint, effectiveAt: Date, expiresAt: Date | null) =>
      S.insertGrant(db, T, {
        id, walletId: "wal_spn", kind: "purchased", amountNanos, priority: 0, effectiveAt, expiresAt, createdAt: now, costBasis: "1", costBasisCurrency: "USD",
        scope: { chargeIds: [], models: [] }, rollover: null, periodEnd: null, renew: false, rootId: id, periodIndex: 0, invoiceId: "", description: "", requestHash: "h", expiryGraceMs: expiresAt ? 86_400_000 : null,
      });
    await g("g_spn_now", 100n, now, null);
    await g("g_spn_future", 1_000n, new Date(now.getTime() + 3_600_000), null);
    await g("g_spn_grace", 10_000n, new Date(now.getTime() - 7_200_000), new Date(now.getTime() - 3_600_000));
    expect((await S.availableOf(db, T, ["wal_spn"], now)).get("wal_spn")).toBe(100n);
    expect((await S.availableOf(db, T, ["wal_spn"], new Date(now.getTime() + 3_600_000))).get("wal_spn")).toBe(1_100n);
    await S.updateLowBalance(db, T, "wal_spn", 500n);
    expect(await S.crossLowBalance(db, T, [{ walletId: "wal_spn", availableNanos: null }], now)).toEqual(["wal_spn"]);
  });

  it("lists a grant as expired only after its own grace, or the default grace when it has none", async () => {
    const exp = new Date(now.getTime() + 1_000);
    const grant = (id: string, expiryGraceMs: number | null) =>
      S.insertGrant(db, T, {
        id, walletId: "wal_1", kind: "purchased", amountNanos: 5n, priority: 0, effectiveAt: now, expiresAt: exp, createdAt: now, costBasis: "1", costBasisCurrency: "USD",
        scope: { chargeIds: [], models: [] }, rollover: null, periodEnd: null, renew: false, rootId: id, periodIndex: 0, invoiceId: "", description: "", requestHash: "h", expiryGraceMs,
      });
    await grant("gx_def", null);
    await grant("gx_0", 0);
    await grant("gx_500", 500);
    const at = async (ms: number, def: number) => (await S.listExpiredGrants(db, T, "wal_1", new Date(exp.getTime() + ms), def, 100)).map((g) => g.id).filter((id) => id.startsWith("gx_")).sort();
    expect(await at(-1, 0)).toEqual([]);
    expect(await at(0, 0)).toEqual(["gx_0", "gx_def"]);
    expect(await at(0, 200)).toEqual(["gx_0"]);
    expect(await at(200, 200)).toEqual(["gx_0", "gx_def"]);
    expect(await at(499, 0)).toEqual(["gx_0", "gx_def"]);
    expect(await at(500, 0)).toEqual(["gx_0", "gx_500", "gx_def"]);
    expect((await S.getGrant(db, T, "gx_500"))!.expiryGraceMs).toBe(500);
    await expect(grant("gx_bad", 90 * 86_400_000 + 1)).rejects.toThrow();
  });

  it("keeps linked chains whole in the outbox, in order", async () => {
    await S.enqueueTransfers(db, T, [[{ id: "x1", debit: "a", credit: "b", amount: "1", unit: "USD", code: 20, linked: true }, { id: "x2", debit: "a", credit: "b", amount: "2", unit: "USD", code: 20 }]], now);
    const rows = await S.nextOutbox(db, 10);
    expect(rows.map((r) => r.transfers.map((t) => t.id))).toEqual([["x1", "x2"]]);
    await S.markOutbox(db, [rows[0]!.seq], [], [], now);
    expect(await S.countOutbox(db)).toEqual({ unposted: 0, failed: 0 });
  });
});

// Lock order of the grant updates of Authorize (commitHolds) and Consume / captures / releases
// (applyGrantDeltas): grants in id order, like the capture / release group commits (grantStates),
// so two of them never wait for each other's grant rows in a cycle (a deadlock). PostgreSQL only
// (PGlite runs one transaction at a time).
describe.each(testBackends().filter((b) => b.name === "postgres"))("wallet store grant lock order ($name)", (backend) => {
  let db: TestDb;
  beforeAll(async () => {
    db = await backend.open();
    await migrate(db, S.migrationsDir);
    await S.insertWallet(db, { tenant: T, id: "wal_lo", customerId: "cus_lo", unit: "USD", kind: "prepaid", policy: HARD_STOP, ledgerAccountId: "acct_wallet:cus_lo:USD", now });
    // Ids chosen so that neither insertion order nor a hash of the delta list is likely to give id order by accident.
    for (const id of ["g_lo_m", "g_lo_a", "g_lo_z", "g_lo_c", "g_lo_x", "g_lo_b"]) {
      await S.insertGrant(db, T, {
        id, walletId: "wal_lo", kind: "purchased", amountNanos: 1_000n, priority: 0, effectiveAt: now, expiresAt: null, createdAt: now, costBasis: "1", costBasisCurrency: "USD",
        scope: { chargeIds: [], models: [] }, rollover: null, periodEnd: null, renew: false, rootId: id, periodIndex: 0, invoiceId: "", description: "", requestHash: "h", expiryGraceMs: null,
      });
    }
  });
  afterAll(async () => {
    await db?.dispose();
  });

  /**
   * Holds the lock of grant `first` (the lowest id of the write) in another transaction, starts
   * `write` (which must then wait for it), and reports whether `write` had locked any of `others`
   * meanwhile (a FOR UPDATE NOWAIT on them fails then).
   */
  async function othersLockedWhileWaiting(first: string, others: string[], write: () => Promise<unknown>): Promise<boolean> {
    let locked!: (pid: number) => void;
    const lockedP = new Promise<number>((r) => (locked = r));
    let release!: () => void;
    const releaseP = new Promise<void>((r) => (release = r));
    const holder = db.transaction(async (tx) => {
      await tx.query(`SELECT 1 FROM grants WHERE tenant = $1 AND id = $2 FOR UPDATE`, [T, first]);
      locked(Number((await tx.query<{ pid: number }>(`SELECT pg_backend_pid() AS pid`)).rows[0]!.pid));
      await releaseP;
    });
    const holderPid = await lockedP;
    const w = write();
    w.catch(() => undefined);
    try {
      // Wait until the write waits for the holder's lock.
      for (let i = 0; ; i++) {
        const r = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`, [holderPid]);
        if (Number(r.rows[0]!.n) > 0) break;
        if (i > 500) throw new Error("the write never waited for the held grant");
        await new Promise((r) => setTimeout(r, 10));
      }
      try {
        await db.transaction(async (tx) => {
          await tx.query(`SELECT 1 FROM grants WHERE tenant = $1 AND id = ANY($2::text[]) FOR UPDATE NOWAIT`, [T, others]);
        });
        return false;
      } catch {
        return true;
      }
    } finally {
      release();
      await holder;
      await w;
    }
  }

  const ids = ["g_lo_m", "g_lo_z", "g_lo_x", "g_lo_c", "g_lo_b", "g_lo_a"];
  const sorted = [...ids].sort();
  /**
   * Runs fn in a transaction whose planner may not use indexes: on this small table it would walk the
   * primary key (id order by luck); a sequential scan takes the rows in their physical order, as a
   * plan over a large table may (hash or nested-loop order).
   */
  const withoutIndexes = <R>(fn: (tx: Queryable) => Promise<R>) =>
    db.transaction(async (tx) => {
      await tx.query(`SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexonlyscan = off`);
      return fn(tx);
    });

  it("Consume / capture grant deltas lock the grants in id order", async () => {
    // Waiting for grant X, the write holds no grant after X (whatever order the deltas came in).
    for (const x of sorted.slice(0, -1)) {
      const after = sorted.filter((i) => i > x);
      const blocked = await othersLockedWhileWaiting(x, after, () => withoutIndexes((tx) => S.applyGrantDeltas(tx, T, ids.map((grantId) => ({ grantId, burned: 1n })))));
      expect(blocked, `waiting for ${x}, a later grant was locked`).toBe(false);
    }
  });

  it("Authorize's one-statement group commit locks the grants in id order", async () => {
    for (const x of sorted.slice(0, -1)) {
      const after = sorted.filter((i) => i > x);
      const hold: S.HoldRow = {
        id: `h_lo_${x}`, walletId: "wal_lo", amountNanos: BigInt(ids.length), slices: ids.map((grantId) => ({ grantId, amountNanos: 1n })), overdraftNanos: 0n, uncoveredNanos: 0n,
        state: "pending", expiresAt: now, capturedNanos: 0n, chargeId: "", model: "", requestHash: "z", createdAt: now,
      };
      const blocked = await othersLockedWhileWaiting(x, after, () => withoutIndexes((tx) => S.commitHolds(tx, T, [hold], [], [], now)));
      expect(blocked, `waiting for ${x}, a later grant was locked`).toBe(false);
    }
  });
});

describe.each(testBackends())("wallet store migration 0008 ($name)", (backend) => {
  let db: TestDb;
  let dir = "";
  beforeAll(async () => {
    db = await backend.open();
    // the migrations before 0008, as a deployment had them
    dir = await mkdtemp(join(tmpdir(), "wallet-mig-"));
    for (const f of await readdir(S.migrationsDir)) if (f.endsWith(".sql") && f < "0008") await copyFile(join(S.migrationsDir, f), join(dir, f));
    await migrate(db, dir);
  });
  afterAll(async () => {
    await db?.dispose();
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  it("fills overdraft_nanos of rows written before it from their burn's overdraft movement (Consume item and capture)", async () => {
    const cons = `INSERT INTO consumptions (tenant, source, id, wallet_id, customer_id, unit, amount_nanos, consumed_nanos, shortfall_nanos, event_id, charge_id, model, hold_id, occurred_at, request_hash, created_at)
                  VALUES ($1, $2, $3, 'wal_1', 'cus_1', 'USD', $4, $4, 0, '', 'ch', '', $5, $6, 'h', $6)`;
    await db.query(cons, [T, "consume", "c_od", 150n, "", now]);
    await db.query(cons, [T, "capture", "h_od", 30n, "h_od", now]);
    await db.query(cons, [T, "consume", "c_paid", 20n, "", now]);
    const mv = `INSERT INTO movements (tenant, id, wallet_id, kind, amount_nanos, source_id, occurred_at) VALUES ($1, $2, 'wal_1', $3, $4, $5, $6)`;
    await db.query(mv, [T, "mv_b:c_od:od", "overdraft", 50n, "c_od", now]);
    await db.query(mv, [T, "mv_c:h_od:od", "overdraft", 30n, "h_od", now]);
    await db.query(mv, [T, "mv_b:c_paid:0", "burn", 20n, "c_paid", now]);
    await migrate(db, S.migrationsDir);
    const rows = await S.listConsumptionEntries(db, T, "cus_1", "USD", now, new Date(now.getTime() + 1), null, 10);
    expect(rows.map((r) => [r.id, r.consumedNanos, r.overdraftNanos])).toEqual([
      ["h_od", 30n, 30n],
      ["c_od", 150n, 50n],
      ["c_paid", 20n, 0n],
    ]);
  });
});
