// Regression tests of the review of 2026-11-29 (auto top-up, late capture posts, idempotency
// fingerprints, spendable balance, input validation, derived ids). Each runs on every backend of
// walletBackends() (PGlite + in-process store; PostgreSQL + Redis when DATABASE_URL is set).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { createApiKeyAuthenticator, createAuthInterceptor, createErrorBoundary, fixedClock, silentLogger } from "@nanobill/service-kit";
import { migrate } from "@nanobill/db";
import { createLedgerService, migrationsDir as ledgerMigrations } from "@nanobill/ledger";
import { createCreditWalletService, migrationsDir } from "./index.js";
import { KEYS, openWalletHarness, walletBackends, type WalletHarness, code } from "./test-support.js";
import { WALLET_GRANTED_NANOS_MAX } from "./limits.js";

describe.each(walletBackends())("credit wallet review fixes ($name)", (b) => {
  let h: WalletHarness;
  beforeAll(async () => {
    h = await openWalletHarness(b);
  });
  afterAll(async () => {
    await h?.close();
  });

  const admin = () => h.client(KEYS.adminA);
  const ingest = () => h.client(KEYS.internal, "tnt_a");

  async function wallet(customerId: string, grants: Array<{ id: string; amountNanos: bigint; kind?: pb.GrantKind; expiresAt?: Date; expiryGraceMs?: bigint }>, unit = "USD") {
    const w = (await admin().createWallet({ customerId, unit })).wallet!;
    for (const g of grants) {
      await admin().grant({ id: g.id, walletId: w.id, kind: g.kind ?? pb.GrantKind.PURCHASED, amountNanos: g.amountNanos, expiresAt: g.expiresAt ? timestampFromDate(g.expiresAt) : undefined, expiryGraceMs: g.expiryGraceMs });
    }
    return w;
  }

  async function topUps(customerId: string) {
    return (await admin().listAlerts({ customerId, kind: pb.AlertKind.AUTO_TOP_UP })).alerts;
  }

  /** Ledger wallet account = PostgreSQL's grants (amount - burned - expired), pending = held, ledger Verify clean. */
  async function expectBooksAgree(walletId: string, customerId: string, unit = "USD") {
    await h.wallet.outbox.flush();
    const bal = await admin().getBalance({ walletId });
    const acct = (await h.ledgerClient("tnt_a").lookupAccounts({ ids: [`acct_wallet:${customerId}:${unit}`] })).accounts[0]!;
    expect(acct.creditsPostedNanos - acct.debitsPostedNanos).toBe(bal.grants.reduce((s, g) => s + g.amountNanos - g.burnedNanos - g.expiredNanos, 0n));
    expect(acct.debitsPendingNanos).toBe(bal.grants.reduce((s, g) => s + g.heldNanos, 0n));
    expect((await h.ledgerClient("tnt_a").verify({})).violations).toEqual([]);
    return bal;
  }

  // ------------------------------------------------------------------ 1, 5: auto top-up once per crossing

  it("tops up once when 10 concurrent Consume calls cross the threshold with cooldown 0, and again at the next crossing", async () => {
    const w = await wallet("cus_d1", [{ id: "g_d1", amountNanos: 520n }]);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, cooldownMs: 0n } });
    await Promise.all(Array.from({ length: 10 }, (_, i) => ingest().consume({ items: [{ id: `c_d1_${i}`, customerId: "cus_d1", unit: "USD", amountNanos: 10n }] })));
    expect((await topUps("cus_d1")).length).toBe(1);
    let bal = await expectBooksAgree(w.id, "cus_d1");
    expect(bal.balanceNanos).toBe(1_420n);
    // Back above the threshold after the top-up: the next downward crossing tops up again (cooldown 0).
    await ingest().consume({ items: [{ id: "c_d1_big", customerId: "cus_d1", unit: "USD", amountNanos: 1_000n }] });
    expect((await topUps("cus_d1")).length).toBe(2);
    bal = await expectBooksAgree(w.id, "cus_d1");
    expect(bal.balanceNanos).toBe(1_420n);
  });

  it("answers a group's Authorize calls when the auto top-up after their commit fails (best effort; the next debit tops up)", async () => {
    const wa = await wallet("cus_bestfx_a", [{ id: "g_bestfx_a", amountNanos: 1000n }]);
    await wallet("cus_bestfx_b", [{ id: "g_bestfx_b", amountNanos: 1000n }]);
    await admin().setAutoTopUp({ walletId: wa.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1000n, targetBalanceNanos: 0n, cooldownMs: 0n, costBasisCurrency: "" } as never });
    await ingest().authorize({ id: "hw_bestfx_a", customerId: "cus_bestfx_a", unit: "USD", amountNanos: 1n });
    await ingest().authorize({ id: "hw_bestfx_b", customerId: "cus_bestfx_b", unit: "USD", amountNanos: 1n });
    const rt = h.realtime as unknown as { invalidate: (...a: unknown[]) => Promise<void> };
    const orig = rt.invalidate;
    let fail = true;
    rt.invalidate = async (...a: unknown[]) => {
      if (fail) {
        fail = false;
        throw new Error("redis blip");
      }
      return orig.apply(h.realtime, a);
    };
    try {
      const filler = Array.from({ length: 5 }, (_, k) => ingest().authorize({ id: `hf_bestfx_${k}`, customerId: "cus_bestfx_b", unit: "USD", amountNanos: 1n }));
      const [a, bb] = await Promise.all([
        ingest().authorize({ id: "h_bestfx_a", customerId: "cus_bestfx_a", unit: "USD", amountNanos: 600n }),
        ingest().authorize({ id: "h_bestfx_b", customerId: "cus_bestfx_b", unit: "USD", amountNanos: 10n }),
      ]);
      await Promise.all(filler);
      expect(a.hold?.id).toBe("h_bestfx_a");
      expect(bb.hold?.id).toBe("h_bestfx_b");
    } finally {
      rt.invalidate = orig;
    }
  });

  it("decides an auto top-up from the wallet row's settings, not a replica's cached copy", async () => {
    const w = await wallet("cus_d5", [{ id: "g_d5", amountNanos: 1_000n }]);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 5_000n, cooldownMs: 0n } });
    await ingest().consume({ items: [{ id: "c_d5_0", customerId: "cus_d5", unit: "USD", amountNanos: 10n }] }); // caches the row on this replica
    // Replica B shares the real-time store (its stop must not close the harness's connection).
    const shared = new Proxy(h.realtime, { get: (o, k) => (k === "close" ? async () => undefined : (o as unknown as Record<string | symbol, unknown>)[k]) });
    const replicaB = await createCreditWalletService({ db: h.db, logger: silentLogger, clock: h.clock, clients: { ledger: h.ledgerClient("tnt_a") }, realtime: shared, config: { backgroundIntervalMs: 0, rebuildOnStart: false } });
    try {
      const off = await h.clientWith({ engine: replicaB.engine }).setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: false, thresholdNanos: 0n } });
      expect(off.wallet!.autoTopUp!.enabled).toBe(false);
    } finally {
      await replicaB.stop();
    }
    await ingest().consume({ items: [{ id: "c_d5_1", customerId: "cus_d5", unit: "USD", amountNanos: 800n }] });
    expect((await topUps("cus_d5")).length).toBe(0);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(190n);
  });

  // ------------------------------------------------------------------ 4: Authorize -> Capture

  it("tops up a wallet spent through Authorize and Capture", async () => {
    const w = await wallet("cus_d4", [{ id: "g_d4", amountNanos: 1_000n }]);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, cooldownMs: 0n } });
    await ingest().authorize({ id: "h_d4", customerId: "cus_d4", unit: "USD", amountNanos: 800n });
    expect((await topUps("cus_d4")).length).toBe(1);
    await ingest().capture({ holdId: "h_d4", amountNanos: 800n });
    expect((await topUps("cus_d4")).length).toBe(1);
    const bal = await expectBooksAgree(w.id, "cus_d4");
    expect([bal.balanceNanos, bal.availableNanos]).toEqual([1_200n, 1_200n]);
  });

  it("tops up after a capture when the Authorize's own check did not (the capture looks at PostgreSQL)", async () => {
    const w = await wallet("cus_d4b", [{ id: "g_d4b", amountNanos: 1_000n }]);
    await ingest().authorize({ id: "h_d4b", customerId: "cus_d4b", unit: "USD", amountNanos: 800n });
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, cooldownMs: 0n } });
    await ingest().capture({ holdId: "h_d4b", amountNanos: 700n });
    expect((await topUps("cus_d4b")).length).toBe(1);
    await expectBooksAgree(w.id, "cus_d4b");
  });

  // ------------------------------------------------------------------ 3: fingerprints of what was sent

  it("answers a retried Grant / Consume with effective_at / occurred_at unset as a replay, later", async () => {
    const w = (await admin().createWallet({ customerId: "cus_d3", unit: "USD" })).wallet!;
    const greq = { id: "g_d3", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n };
    const g1 = await admin().grant(greq);
    h.clock.advance(1_000);
    const g2 = await admin().grant(greq);
    expect(g2.grant!.effectiveAt).toEqual(g1.grant!.effectiveAt); // the stored row keeps the time it was filled with
    // Other content under the same id is still refused.
    expect((await code(admin().grant({ ...greq, amountNanos: 999n }))).code).toBe(Code.AlreadyExists);
    const item = { id: "c_d3", customerId: "cus_d3", unit: "USD", amountNanos: 100n };
    const r1 = await ingest().consume({ items: [item] });
    h.clock.advance(1_000);
    const r2 = await ingest().consume({ items: [item] });
    expect([r1.results[0]!.result, r2.results[0]!.result, r2.results[0]!.replayed]).toEqual([pb.ConsumeResult.OK, pb.ConsumeResult.OK, true]);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(900n);
  });

  it("answers a retried Authorize with max_cost as a replay after the exchange rate changed", async () => {
    await admin().createCreditType({ id: "cr_d3", name: "d3 credits", currency: "USD", rate: { value: "0.01" } });
    const w = (await admin().createWallet({ customerId: "cus_d3c", unit: "cr_d3" })).wallet!;
    await admin().grant({ id: "g_d3c", walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 1_000_000_000_000n });
    const req = { id: "h_d3c", customerId: "cus_d3c", unit: "cr_d3", maxCostNanos: 1_000_000_000n, maxCostCurrency: "USD" };
    const a1 = await ingest().authorize(req);
    expect(a1.hold!.amountNanos).toBe(100_000_000_000n);
    h.clock.advance(1_000);
    await admin().setExchangeRate({ creditTypeId: "cr_d3", rate: { value: "0.02" }, effectiveAt: timestampFromDate(h.clock.now()) });
    h.clock.advance(1_000);
    const a2 = await ingest().authorize(req);
    expect(a2.hold!.amountNanos).toBe(100_000_000_000n);
    expect((await code(ingest().authorize({ ...req, maxCostNanos: 2_000_000_000n }))).code).toBe(Code.AlreadyExists);
  });

  // ------------------------------------------------------------------ 6: only spendable grants count

  it("counts a grant past expires_at (in its grace) out of the available balance: the auto top-up fires", async () => {
    const t0 = h.clock.now();
    const w = await wallet("cus_d6", [
      { id: "g_d6_exp", amountNanos: 1_000n, expiresAt: new Date(t0.getTime() + 3_600_000), expiryGraceMs: 86_400_000n },
      { id: "g_d6_keep", amountNanos: 100n },
    ]);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, cooldownMs: 0n } });
    h.clock.advance(2 * 3_600_000);
    const r = await ingest().consume({ items: [{ id: "c_d6", customerId: "cus_d6", unit: "USD", amountNanos: 90n }] });
    expect(r.results[0]!.consumedNanos).toBe(90n);
    expect((await topUps("cus_d6")).length).toBe(1);
    const refused = await code(ingest().authorize({ id: "h_d6", customerId: "cus_d6", unit: "USD", amountNanos: 2_000n }));
    expect(refused.message).toMatch(/available 1010 nanos/);
  });

  // ------------------------------------------------------------------ 7: timestamps and page tokens

  it("refuses timestamps before 1970 or past 9999 naming the field, and the wallet keeps working", async () => {
    const w = await wallet("cus_d7", [{ id: "g_d7", amountNanos: 1_000n }]);
    const before1970 = await code(admin().grant({ id: "g_d7_1969", walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 10n, effectiveAt: { seconds: -100_000n, nanos: 0 }, expiresAt: { seconds: -1_000n, nanos: 0 } }));
    expect([before1970.code, before1970.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^effective_at: /)]);
    for (const seconds of [2_000_000_000_000n, 8_000_000_000_000n, 1_000_000_000_000_000n]) {
      const far = await code(admin().grant({ id: `g_d7_far_${seconds}`, walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 10n, expiresAt: { seconds, nanos: 0 } }));
      expect([far.code, far.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^expires_at: /)]);
    }
    const r = await ingest().consume({
      items: [
        { id: "c_d7_good", customerId: "cus_d7", unit: "USD", amountNanos: 100n },
        { id: "c_d7_bad", customerId: "cus_d7", unit: "USD", amountNanos: 100n, occurredAt: { seconds: 1_000_000_000_000_000n, nanos: 0 } },
      ],
    });
    expect(r.results.map((x) => x.result)).toEqual([pb.ConsumeResult.OK, pb.ConsumeResult.INVALID]);
    expect(r.results[1]!.error).toMatch(/^items\[1\]\.occurred_at: /);
    await ingest().authorize({ id: "h_d7", customerId: "cus_d7", unit: "USD", amountNanos: 5n });
    const cap = await code(ingest().capture({ holdId: "h_d7", amountNanos: 5n, occurredAt: { seconds: -5n, nanos: 0 } }));
    expect([cap.code, cap.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^occurred_at: /)]);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(900n);
  });

  it("refuses malformed page tokens as InvalidArgument naming page.page_token", async () => {
    const w = await wallet("cus_d7p", [{ id: "g_d7p", amountNanos: 10n }]);
    const tok = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const bad = [tok({ seq: "abc" }), tok({ seq: 5 }), tok([1]), tok(null), tok({}), "!!!"];
    for (const t of bad) {
      for (const call of [() => admin().listMovements({ walletId: w.id, page: { pageToken: t } }), () => admin().listAlerts({ page: { pageToken: t } })]) {
        const e = await code(call());
        expect([e.code, e.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^page\.page_token: /)]);
      }
    }
    const range = { customerId: "cus_d7p", unit: "USD", from: timestampFromDate(new Date("2026-01-01T00:00:00Z")), to: timestampFromDate(new Date("2027-01-01T00:00:00Z")) };
    for (const t of [tok({ at: "not a time", source: "consume", id: "x" }), tok({ at: "2026-11-01T00:00:00Z", source: 1, id: "x" }), tok({ at: "+275760-09-13T00:00:00.000Z", source: "consume", id: "x" })]) {
      const e = await code(admin().listConsumption({ ...range, page: { pageToken: t } }));
      expect([e.code, e.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^page\.page_token: /)]);
    }
  });

  // ------------------------------------------------------------------ 8: auto top-up of credits needs its cost basis

  it("refuses an auto top-up of credits without cost_basis or cost_basis_currency, like a purchased Grant", async () => {
    await admin().createCreditType({ id: "cr_d8", name: "d8 credits", currency: "USD", rate: { value: "0.002" } });
    const w = (await admin().createWallet({ customerId: "cus_d8", unit: "cr_d8" })).wallet!;
    const noBasis = await code(admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n } }));
    expect([noBasis.code, noBasis.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^auto_top_up\.cost_basis\.value: /)]);
    const noCurrency = await code(admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, costBasis: { value: "0.002" } } }));
    expect([noCurrency.code, noCurrency.message]).toEqual([Code.InvalidArgument, expect.stringMatching(/^auto_top_up\.cost_basis_currency: /)]);
    expect((await admin().getBalance({ walletId: w.id })).wallet!.autoTopUp).toBeUndefined();
    const ok = await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, costBasis: { value: "0.002" }, costBasisCurrency: "USD" } });
    expect(ok.wallet!.autoTopUp).toMatchObject({ costBasis: { value: "0.002" }, costBasisCurrency: "USD" });
    // Prepaid: 1 in the wallet's currency when unset.
    const p = (await admin().createWallet({ customerId: "cus_d8p", unit: "EUR" })).wallet!;
    const pp = await admin().setAutoTopUp({ walletId: p.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n } });
    expect(pp.wallet!.autoTopUp).toMatchObject({ costBasis: { value: "1" }, costBasisCurrency: "EUR" });
  });

  // ------------------------------------------------------------------ 9: a Grant replay drops the real-time state

  it("makes a grant spendable when its first call failed to drop the real-time state and the retry is a replay", async () => {
    const w = (await admin().createWallet({ customerId: "cus_d9", unit: "USD" })).wallet!;
    const t0 = timestampFromDate(h.clock.now());
    await admin().grant({ id: "g_d9a", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 100n, effectiveAt: t0 });
    await ingest().consume({ items: [{ id: "c_d9", customerId: "cus_d9", unit: "USD", amountNanos: 10n }] }); // state loaded
    const rt = h.realtime as { invalidate: (...a: unknown[]) => Promise<void> };
    const orig = rt.invalidate;
    let fail = true;
    rt.invalidate = async (...a: unknown[]) => {
      if (fail) {
        fail = false;
        throw new Error("redis blip");
      }
      return orig.apply(h.realtime, a as never);
    };
    try {
      const req = { id: "g_d9b", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n, effectiveAt: t0 };
      expect((await code(admin().grant(req))).code).toBe(Code.Internal);
      await admin().grant(req);
    } finally {
      rt.invalidate = orig;
    }
    const a = await ingest().authorize({ id: "h_d9", customerId: "cus_d9", unit: "USD", amountNanos: 500n });
    expect(a.hold!.amountNanos).toBe(500n);
  });

  // ------------------------------------------------------------------ 10: allowances stop burning at their period end

  it("stops burning an allowance at its period end; the renewed allowance burns after RunRollover", async () => {
    const w = (await admin().createWallet({ customerId: "cus_d10a", unit: "USD" })).wallet!;
    const end = new Date(h.clock.now().getTime() + 3_600_000);
    await admin().grant({ id: "al_d10a", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1_000n, periodEnd: timestampFromDate(end), renew: true, rollover: { mode: pb.RolloverMode.NONE } });
    await ingest().consume({ items: [{ id: "c_d10a_0", customerId: "cus_d10a", unit: "USD", amountNanos: 100n }] });
    h.clock.advance(5_400_000); // half an hour past the period end (inside the renewed period)
    const r = await ingest().consume({ items: [{ id: "c_d10a_1", customerId: "cus_d10a", unit: "USD", amountNanos: 900n }] });
    expect([r.results[0]!.result, r.results[0]!.consumedNanos]).toEqual([pb.ConsumeResult.INSUFFICIENT, 0n]);
    const ro = await admin().runRollover({ walletId: w.id });
    expect(ro.outcomes.map((o) => [o.remainderNanos, o.expiredNanos, o.renewedGrantId])).toEqual([[900n, 900n, "al_d10a:p1"]]);
    const r2 = await ingest().consume({ items: [{ id: "c_d10a_2", customerId: "cus_d10a", unit: "USD", amountNanos: 900n }] });
    expect([r2.results[0]!.result, r2.results[0]!.consumedNanos]).toEqual([pb.ConsumeResult.OK, 900n]);
    const bal = await expectBooksAgree(w.id, "cus_d10a");
    expect(bal.balanceNanos).toBe(100n);
  });

  // ------------------------------------------------------------------ 11: amounts held at the period end follow the rollover rule

  it("rolls over (rule ALL) what holds placed before the period end give back after it, instead of sending it to breakage", async () => {
    const w = (await admin().createWallet({ customerId: "cus_d11", unit: "USD" })).wallet!;
    const end = new Date(h.clock.now().getTime() + 3_600_000);
    await admin().grant({ id: "al_d11", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1_000n, periodEnd: timestampFromDate(end), rollover: { mode: pb.RolloverMode.ALL } });
    await ingest().authorize({ id: "h_d11_r", customerId: "cus_d11", unit: "USD", amountNanos: 300n, ttlMs: 86_400_000n });
    await ingest().authorize({ id: "h_d11_c", customerId: "cus_d11", unit: "USD", amountNanos: 200n, ttlMs: 86_400_000n });
    h.clock.advance(3_600_000);
    const ro = await admin().runRollover({ walletId: w.id });
    expect(ro.outcomes.map((o) => [o.remainderNanos, o.rolledOverNanos, o.expiredNanos])).toEqual([[500n, 500n, 0n]]);
    expect((await ingest().release({ holdId: "h_d11_r" })).releasedNanos).toBe(300n);
    const cap = await ingest().capture({ holdId: "h_d11_c", amountNanos: 50n });
    expect([cap.capturedNanos, cap.releasedNanos]).toEqual([50n, 150n]);
    const bal = await expectBooksAgree(w.id, "cus_d11");
    expect(bal.grants.map((g) => [g.grantId, g.amountNanos, g.burnedNanos, g.heldNanos, g.expiredNanos])).toEqual([
      ["al_d11:p0:ro", 950n, 0n, 0n, 0n],
      ["al_d11", 1_000n, 50n, 0n, 950n],
    ]);
    expect([bal.balanceNanos, bal.availableNanos]).toEqual([950n, 950n]);
    // The grown rollover grant is spendable (the real-time state was rebuilt).
    const r = await ingest().consume({ items: [{ id: "c_d11", customerId: "cus_d11", unit: "USD", amountNanos: 950n }] });
    expect([r.results[0]!.result, r.results[0]!.consumedNanos]).toEqual([pb.ConsumeResult.OK, 950n]);
    await expectBooksAgree(w.id, "cus_d11");
  });

  // ------------------------------------------------------------------ 12: derived ids never collide with caller ids

  // Tenant B, one unit per wallet: 10^18-nano grants add up in the tenant's shared ledger accounts
  // (per unit), which count in int64 too; tenant A's tests must not see them.
  const adminB = () => h.client(KEYS.adminB);
  async function bigWallet(customerId: string, unit: string, n: number, expiresAt?: Date) {
    const w = (await adminB().createWallet({ customerId, unit })).wallet!;
    for (let i = 0; i < n; i++) {
      await adminB().grant({ id: `g_${customerId}_${i}`, walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 10n ** 18n, expiresAt: expiresAt ? timestampFromDate(expiresAt) : undefined });
    }
    return w;
  }
  async function expectLedgerAgreesB(walletId: string) {
    await h.wallet.outbox.flush();
    const bal = await adminB().getBalance({ walletId });
    const acct = (await h.ledgerClient("tnt_b").lookupAccounts({ ids: [bal.wallet!.ledgerAccountId] })).accounts[0]!;
    expect(acct.creditsPostedNanos - acct.debitsPostedNanos).toBe(bal.balanceNanos);
    expect((await h.ledgerClient("tnt_b").verify({})).violations).toEqual([]);
  }

  it("refuses a grant past WALLET_GRANTED_NANOS_MAX granted to the wallet in all (probe and review findings: GetBalance answered Internal past int64, and the ledger refused the credits the wallet had accepted)", async () => {
    const big = 10n ** 18n;
    expect(WALLET_GRANTED_NANOS_MAX).toBe(9n * big);
    const w = await bigWallet("cus_sum", "USD", 9);
    const e = await code(adminB().grant({ id: "g_sum_9", walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 1n }));
    expect([e.code, e.message]).toEqual([Code.ResourceExhausted, `amount_nanos (all granted to the wallet): exceeds the limit of ${WALLET_GRANTED_NANOS_MAX}`]);
    // Spent value does not free room: the ledger account counts every credit it was ever given.
    await h.client(KEYS.internal, "tnt_b").consume({ items: [{ id: "use_sum", customerId: "cus_sum", unit: "USD", amountNanos: big }] });
    expect((await code(adminB().grant({ id: "g_sum_9", walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 1n }))).code).toBe(Code.ResourceExhausted);
    expect((await adminB().getBalance({ walletId: w.id })).balanceNanos).toBe(8n * big);
    await expectLedgerAgreesB(w.id);
  });

  it("keeps a RunExpiry's breakage total within int64: a run stops before it would pass, the next goes on (review finding: Internal after the expiries committed)", async () => {
    const soon = new Date(h.clock.now().getTime() + 3_600_000);
    const ws = [await bigWallet("cus_exp_eur", "EUR", 9, soon), await bigWallet("cus_exp_gbp", "GBP", 9, soon), await bigWallet("cus_exp_jpy", "JPY", 9, soon)];
    const totals: bigint[] = [];
    h.clock.set(new Date(soon.getTime() + 1)); // a run's as_of is never after now
    for (let run = 0; run < 10; run++) {
      const r = await adminB().runExpiry({});
      if (r.grantsExpired === 0) break;
      totals.push(r.breakageNanos);
    }
    expect(totals.length).toBeGreaterThan(2); // 2.7 x 10^19 in all: at least three runs
    expect(totals.every((t) => t <= 2n ** 63n - 1n)).toBe(true);
    expect(totals.reduce((a, b) => a + b, 0n)).toBe(27n * 10n ** 18n);
    for (const x of ws) await expectLedgerAgreesB(x.id);
  });

  it("gives an auto top-up a free grant id when a caller's grant took the derived one", async () => {
    const w = (await admin().createWallet({ customerId: "cus_d12", unit: "USD" })).wallet!;
    await admin().grant({ id: `${w.id}:topup:1`, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 5_000n, cooldownMs: 0n } });
    await ingest().consume({ items: [{ id: "c_d12", customerId: "cus_d12", unit: "USD", amountNanos: 800n }] });
    const alerts = await topUps("cus_d12");
    expect(alerts.map((a) => [a.grantId, a.amountNanos])).toEqual([[`${w.id}:topup:1:=2`, 5_000n]]);
    const bal = await expectBooksAgree(w.id, "cus_d12");
    expect(bal.balanceNanos).toBe(5_200n);
    expect(bal.grants.find((g) => g.grantId === alerts[0]!.grantId)?.amountNanos).toBe(5_000n);
  });

  it("keeps a released hold's breakage apart from the breakage of a grant named <grant>:<hold>", async () => {
    const w = (await admin().createWallet({ customerId: "cus_d10", unit: "USD" })).wallet!;
    const exp = timestampFromDate(new Date(h.clock.now().getTime() + 60_000));
    await admin().grant({ id: "gA_d10", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n, expiresAt: exp });
    await ingest().authorize({ id: "h1_d10", customerId: "cus_d10", unit: "USD", amountNanos: 300n, ttlMs: 3_600_000n });
    await admin().grant({ id: "gA_d10:h1_d10", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 300n, expiresAt: exp });
    h.clock.advance(120_000);
    await admin().runExpiry({ walletId: w.id });
    await ingest().release({ holdId: "h1_d10" });
    const bal = await expectBooksAgree(w.id, "cus_d10");
    expect(bal.balanceNanos).toBe(0n);
    const failed = await h.db.query(`SELECT error FROM ledger_outbox WHERE error <> ''`);
    expect(failed.rows).toEqual([]);
  });

  // ------------------------------------------------------------------ second review (wallet.md)

  it("refuses a RunExpiry / RunRollover as_of after now (InvalidArgument naming as_of): credits that can still be spent are not expired", async () => {
    const t0 = h.clock.now().getTime();
    const w = (await admin().createWallet({ customerId: "cus_r2_asof", unit: "USD" })).wallet!;
    await admin().grant({ id: "g_r2_asof", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n, expiresAt: timestampFromDate(new Date(t0 + 30 * 86_400_000)) });
    await admin().grant({ id: "g_r2_asof_alw", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 500n, periodEnd: timestampFromDate(new Date(t0 + 30 * 86_400_000)) });
    const later = timestampFromDate(new Date(t0 + 31 * 86_400_000));
    for (const call of [admin().runExpiry({ walletId: w.id, asOf: later }), admin().runRollover({ walletId: w.id, asOf: later }), admin().runExpiry({ asOf: timestampFromDate(new Date(t0 + 1)) })]) {
      const e = await code(call);
      expect([e.code, e.message.startsWith("as_of:")]).toEqual([Code.InvalidArgument, true]);
    }
    const c = await ingest().consume({ items: [{ id: "c_r2_asof", customerId: "cus_r2_asof", unit: "USD", amountNanos: 1_500n }] });
    expect([c.results[0]!.result, c.results[0]!.consumedNanos]).toEqual([pb.ConsumeResult.OK, 1_500n]);
    // as_of now or earlier still runs (unset: now).
    expect((await admin().runExpiry({ walletId: w.id, asOf: timestampFromDate(new Date(t0)) })).grantsExpired).toBe(0);
    expect((await admin().runRollover({ walletId: w.id })).outcomes).toEqual([]);
    await expectBooksAgree(w.id, "cus_r2_asof");
  });

  it("shows as GetBalance available_nanos what the grants that can burn now have left (not one in its expiry grace, effective later or past its period end), which Authorize accepts", async () => {
    const t0 = h.clock.now().getTime();
    const T = (ms: number) => timestampFromDate(new Date(t0 + ms));
    const w = (await admin().createWallet({ customerId: "cus_r2_av", unit: "USD" })).wallet!;
    await admin().grant({ id: "g_r2_av_grace", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n, expiresAt: T(600_000), expiryGraceMs: 86_400_000n });
    await admin().grant({ id: "g_r2_av_later", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 500n, effectiveAt: T(7 * 86_400_000) });
    await admin().grant({ id: "g_r2_av_alw", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 300n, periodEnd: T(600_000) });
    await admin().grant({ id: "g_r2_av_now", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 200n });
    h.clock.advance(1_200_000); // g_r2_av_grace past expires_at (in its grace), the allowance past its period end
    await ingest().authorize({ id: "h_r2_av", customerId: "cus_r2_av", unit: "USD", amountNanos: 50n, ttlMs: 3_600_000n });
    const bal = await admin().getBalance({ walletId: w.id });
    expect([bal.balanceNanos, bal.heldNanos, bal.availableNanos]).toEqual([2_000n, 50n, 150n]);
    const over = await code(ingest().authorize({ id: "h_r2_av_151", customerId: "cus_r2_av", unit: "USD", amountNanos: 151n }));
    expect([over.code, over.message.endsWith("(available 150 nanos)")]).toEqual([Code.FailedPrecondition, true]);
    const ok = await ingest().authorize({ id: "h_r2_av_150", customerId: "cus_r2_av", unit: "USD", amountNanos: 150n });
    expect(ok.availableNanos).toBe(0n);
    expect((await admin().getBalance({ walletId: w.id })).availableNanos).toBe(0n);
  });

  it("answers a CreateCreditType retry by its creation rate with its effective_at: another effective_at is AlreadyExists, the same request a replay even after an earlier-dated rate", async () => {
    const t0 = h.clock.now().getTime();
    const T = (ms: number) => timestampFromDate(new Date(t0 + ms));
    const req = { id: "cr_r2_ct", name: "R2", currency: "USD", rate: { value: "0.01" }, effectiveAt: T(0) };
    await admin().createCreditType(req);
    const other = await code(admin().createCreditType({ ...req, effectiveAt: T(86_400_000) }));
    expect([other.code, other.message.startsWith("id:")]).toEqual([Code.AlreadyExists, true]);
    await admin().setExchangeRate({ creditTypeId: "cr_r2_ct", rate: { value: "0.02" }, effectiveAt: T(-86_400_000) });
    const again = await admin().createCreditType(req);
    expect(again.creditType!.rates.map((r) => r.rate!.value)).toEqual(["0.02", "0.01"]);
    expect((await code(admin().createCreditType({ ...req, rate: { value: "0.02" } }))).code).toBe(Code.AlreadyExists);
    // effective_at unset: a retry (unset) later, after an earlier-dated rate, is a replay; one naming a time is not.
    await admin().createCreditType({ id: "cr_r2_ct2", name: "R2b", currency: "USD", rate: { value: "0.5" } });
    h.clock.advance(60_000);
    await admin().setExchangeRate({ creditTypeId: "cr_r2_ct2", rate: { value: "0.7" }, effectiveAt: T(-86_400_000) });
    expect((await admin().createCreditType({ id: "cr_r2_ct2", name: "R2b", currency: "USD", rate: { value: "0.5" } })).creditType!.rates.length).toBe(2);
    expect((await code(admin().createCreditType({ id: "cr_r2_ct2", name: "R2b", currency: "USD", rate: { value: "0.5" }, effectiveAt: T(60_000) }))).code).toBe(Code.AlreadyExists);
    // Created with a later effective_at: a retry leaving it unset (now) is other content.
    await admin().createCreditType({ id: "cr_r2_ct3", name: "R2c", currency: "USD", rate: { value: "0.5" }, effectiveAt: T(86_400_000) });
    expect((await code(admin().createCreditType({ id: "cr_r2_ct3", name: "R2c", currency: "USD", rate: { value: "0.5" } }))).code).toBe(Code.AlreadyExists);
  });

  it("refuses an Authorize giving both amount_nanos and max_cost_nanos (or a max_cost_currency without max_cost_nanos), naming the field, holding nothing", async () => {
    const w = (await admin().createWallet({ customerId: "cus_r2_mc", unit: "USD" })).wallet!;
    await admin().grant({ id: "g_r2_mc", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 10_000n });
    const base = { customerId: "cus_r2_mc", unit: "USD", amountNanos: 5_000n };
    const both = await code(ingest().authorize({ ...base, id: "h_r2_mc", maxCostNanos: 10n, maxCostCurrency: "USD" }));
    expect([both.code, both.message.startsWith("max_cost_nanos:")]).toEqual([Code.InvalidArgument, true]);
    const cur = await code(ingest().authorize({ ...base, id: "h_r2_mc", maxCostCurrency: "EUR" }));
    expect([cur.code, cur.message.startsWith("max_cost_currency:")]).toEqual([Code.InvalidArgument, true]);
    const batch = await ingest().authorizeBatch({ items: [{ ...base, id: "h_r2_mc_b", maxCostNanos: 10n, maxCostCurrency: "USD" }] });
    expect([batch.results[0]!.result, batch.results[0]!.error.startsWith("items[0].max_cost_nanos:")]).toEqual([pb.AuthorizeResult.INVALID, true]);
    const bal = await admin().getBalance({ walletId: w.id });
    expect([bal.heldNanos, bal.availableNanos]).toEqual([0n, 10_000n]);
    // Either one alone still holds.
    expect((await ingest().authorize({ ...base, id: "h_r2_mc_ok" })).hold!.amountNanos).toBe(5_000n);
    expect((await ingest().authorize({ customerId: "cus_r2_mc", unit: "USD", id: "h_r2_mc_ok2", maxCostNanos: 10n, maxCostCurrency: "USD" })).hold!.amountNanos).toBe(10n);
  });

  it("refuses a NUL or other control character in free text (Grant description, CreateCreditType name) and in the ids of reads as InvalidArgument naming the field, writing nothing", async () => {
    const w = (await admin().createWallet({ customerId: "cus_r2_nul", unit: "USD" })).wallet!;
    const cases: Array<[string, () => Promise<unknown>]> = [
      ["description", () => admin().grant({ id: "g_r2_nul", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 100n, description: "top\u0000up" })],
      ["description", () => admin().grant({ id: "g_r2_nul", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 100n, description: "top\u001bup" })],
      ["name", () => admin().createCreditType({ id: "cr_r2_nul", name: "To\u0000kens", currency: "USD", rate: { value: "0.01" } })],
      ["wallet_id", () => admin().getBalance({ walletId: "wal_\u0000" })],
      ["customer_id", () => admin().getBalance({ customerId: "cus\u0000", unit: "USD" })],
      ["unit", () => admin().getBalance({ customerId: "cus_r2_nul", unit: "US\u0000" })],
      ["credit_type_id", () => admin().getCreditType({ creditTypeId: "cr_\u0000" })],
      ["customer_id", () => admin().listAlerts({ customerId: "cus\u0000" })],
    ];
    for (const [field, call] of cases) {
      const e = await code(call());
      expect([field, e.code, e.message.split(":")[0]]).toEqual([field, Code.InvalidArgument, field]);
    }
    const bal = await admin().getBalance({ walletId: w.id });
    expect(bal.grants.length).toBe(0);
    expect((await code(admin().getCreditType({ creditTypeId: "cr_r2_nul" }))).code).toBe(Code.NotFound);
    // Plain text with spaces and punctuation stays accepted.
    const g = await admin().grant({ id: "g_r2_txt", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 100n, description: "Q4 top-up, invoice #12 | EU" });
    expect(g.grant!.grantId).toBe("g_r2_txt");
  });

  it("keeps a hold's release lines and a grant's overdraft-repay line apart on the statement when the grant is named <hold>:<slice>", async () => {
    const w = (await admin().createWallet({ customerId: "cus_r2_mv", unit: "USD", policy: { mode: pb.PolicyMode.SOFT_NEGATIVE, negativeLimitNanos: 1_000n } })).wallet!;
    await admin().grant({ id: "g_r2_mv", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 500n });
    await ingest().authorize({ id: "hx_r2", customerId: "cus_r2_mv", unit: "USD", amountNanos: 200n }); // slice 0 on g_r2_mv
    await ingest().consume({ items: [{ id: "c_r2_mv", customerId: "cus_r2_mv", unit: "USD", amountNanos: 400n }] }); // 300 burned, 100 overdraft
    await admin().grant({ id: "hx_r2:0", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 500n }); // repays the 100
    const rel = await ingest().release({ holdId: "hx_r2" });
    expect(rel.releasedNanos).toBe(200n);
    const mv = (await admin().listMovements({ walletId: w.id, page: { pageSizeMax: 1_000 } })).movements;
    const releases = mv.filter((m) => m.kind === pb.MovementKind.RELEASE && m.holdId === "hx_r2");
    const repays = mv.filter((m) => m.kind === pb.MovementKind.BURN && m.sourceId === "hx_r2:0");
    expect(releases.map((m) => [m.grantId, m.amountNanos])).toEqual([["g_r2_mv", 200n]]);
    expect(repays.map((m) => [m.grantId, m.amountNanos])).toEqual([["hx_r2:0", 100n]]);
    expect(new Set(mv.map((m) => m.id)).size).toBe(mv.length);
    await expectBooksAgree(w.id, "cus_r2_mv");
  });
});

// ------------------------------------------------------------------ 2: a capture posted after the hold's ledger timeout

describe("a capture whose post reaches the ledger after the hold's ledger timeout", () => {
  it("books the burn as a plain transfer (xfer_w:p:<hold>:<i>:late), so the ledger matches the wallet", async () => {
    const { testBackends } = await import("@nanobill/db");
    const lite = testBackends().find((x) => x.name === "pglite")!;
    const db = await lite.open();
    const ldb = await lite.open();
    await migrate(db, migrationsDir);
    await migrate(ldb, ledgerMigrations);
    const clock = fixedClock(new Date("2026-11-01T00:00:00Z"));
    const ledger = await createLedgerService({ db: ldb, logger: silentLogger, clock, config: { expirySweepIntervalMs: 0 } });
    const auth = createApiKeyAuthenticator([{ tenant: "*", scopes: ["internal"], key: KEYS.internal }]);
    const t = createRouterTransport(ledger.routes, {
      router: { interceptors: [createErrorBoundary(silentLogger), createAuthInterceptor(auth)] },
      transport: {
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${KEYS.internal}`);
            return next(req);
          },
        ],
      },
    });
    const real = createClient(LedgerService, t);
    let down = false;
    const flaky = new Proxy(real, {
      get(o, k) {
        const f = (o as unknown as Record<string | symbol, unknown>)[k];
        return typeof f === "function"
          ? (...a: unknown[]) => {
              if (down && k === "createTransfers") throw new Error("ledger down");
              return (f as (...x: unknown[]) => unknown).apply(o, a);
            }
          : f;
      },
    });
    const w = await createCreditWalletService({ db, logger: silentLogger, clock, clients: { ledger: flaky }, config: { backgroundIntervalMs: 0 } });
    await w.start();
    try {
      const e = w.engine;
      const wal = (await e.createWallet("tnt_a", { customerId: "cus_late", unit: "USD", id: "", policy: { mode: "hard_stop", negativeLimitNanos: 0n, overageRate: "", overageCurrency: "" } })).wallet;
      await e.grant("tnt_a", { id: "g_late", walletId: wal.id, kind: "purchased", amountNanos: 1_000n, costBasis: "1", costBasisCurrency: "USD", priority: 0, effectiveAt: clock.now(), expiresAt: null, scope: { chargeIds: [], models: [] }, rollover: null, periodEnd: null, renew: false, invoiceId: "", description: "", expiryGraceMs: null });
      await e.authorizeMany("tnt_a", [{ id: "h_late", customerId: "cus_late", unit: "USD", amountNanos: 600n, ttlMs: 10_000, chargeId: "", model: "" }]);
      await w.outbox.flush();
      clock.advance(9_000);
      down = true; // the ledger is unreachable from just before the capture ...
      const cap = await e.capture("tnt_a", { holdId: "h_late", amountNanos: 400n, eventId: "", chargeId: "", occurredAt: null });
      expect([cap.capturedNanos, cap.releasedNanos]).toEqual([400n, 200n]);
      clock.advance(70_000); // ... until past the hold's ledger timeout (ttl + 60 s)
      down = false;
      await w.outbox.flush();
      const failed = await db.query<{ error: string }>(`SELECT error FROM ledger_outbox WHERE error <> '' AND posted_at IS NOT NULL`);
      expect(failed.rows).toEqual([]);
      expect(w.outbox.failures).toBe(0);
      const lc = createClient(LedgerService, t);
      const opts = { headers: { "x-nanobill-tenant": "tnt_a" } };
      const [acct, rev] = (await lc.lookupAccounts({ ids: ["acct_wallet:cus_late:USD", "acct_revenue:USD"] }, opts)).accounts;
      expect([acct!.creditsPostedNanos - acct!.debitsPostedNanos, acct!.debitsPendingNanos]).toEqual([600n, 0n]);
      expect(rev!.creditsPostedNanos - rev!.debitsPostedNanos).toBe(400n);
      expect((await e.getBalance("tnt_a", { walletId: wal.id, customerId: "", unit: "" })).balanceNanos).toBe(600n);
      const late = (await lc.lookupTransfers({ ids: ["xfer_w:p:h_late:0:late"] }, opts)).transfers;
      expect(late.map((x) => x.amountNanos)).toEqual([400n]);
      // Flushing again sends nothing new (the row is done).
      await w.outbox.flush();
      expect((await lc.lookupAccounts({ ids: ["acct_revenue:USD"] }, opts)).accounts[0]!.creditsPostedNanos).toBe(400n);
      expect((await lc.verify({}, opts)).violations).toEqual([]);
    } finally {
      await w.stop();
      await ledger.stop();
      await db.dispose();
      await ldb.dispose();
    }
  });
});
