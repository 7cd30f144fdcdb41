// Service tests of AuthorizeStream, group-committed Capture / Release, per-grant expiry grace and
// the per-wallet low-balance alert: through createRouterTransport with the real ledger, on every
// backend of walletBackends() (postgres + Redis, pglite + the in-process store).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { silentLogger } from "@nanobill/service-kit";
import { createEngine, type Engine } from "./engine.js";
import { KEYS, openWalletHarness, walletBackends, type WalletHarness, code } from "./test-support.js";

type AuthorizeInit = MessageInitShape<typeof pb.AuthorizeRequestSchema>;
const DAY = 86_400_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends msgs on one AuthorizeStream (then keeps it open until holdOpen settles) and collects every answer and the final error. */
async function runStream(client: Client<typeof pb.CreditWalletService>, msgs: AuthorizeInit[], holdOpen?: Promise<void>) {
  async function* requests() {
    for (const m of msgs) yield { item: m };
    if (holdOpen) await holdOpen;
  }
  const out: pb.AuthorizeStreamResponse[] = [];
  let error: ConnectError | null = null;
  try {
    for await (const r of client.authorizeStream(requests())) out.push(r);
  } catch (e) {
    error = ConnectError.from(e);
  }
  return { out, error };
}

describe.each(walletBackends())("credit wallet streams, group commits, grace, low balance ($name)", (b) => {
  let h: WalletHarness;
  beforeAll(async () => {
    h = await openWalletHarness(b);
  });
  afterAll(async () => {
    await h?.close();
  });

  async function ledgerAccount(tenant: string, id: string) {
    const r = await h.ledgerClient(tenant).lookupAccounts({ ids: [id] });
    const a = r.accounts[0]!;
    return { balance: a.creditsPostedNanos - a.debitsPostedNanos, pendingDebits: a.debitsPendingNanos };
  }

  /** Wallet (PostgreSQL), ledger and real-time state agree to the nano. */
  async function expectAgreement(walletId: string, customerId: string, unit = "USD") {
    await h.wallet.outbox.flush();
    const bal = await h.client(KEYS.internal, "tnt_a").getBalance({ walletId });
    const acct = await ledgerAccount("tnt_a", `acct_wallet:${customerId}:${unit}`);
    expect(acct.balance).toBe(bal.grants.reduce((s, g) => s + g.amountNanos - g.burnedNanos - g.expiredNanos, 0n));
    expect(acct.pendingDebits).toBe(bal.grants.reduce((s, g) => s + g.heldNanos, 0n));
    const rt = await h.realtime.read({ tenant: "tnt_a", walletId });
    if (rt) for (const g of bal.grants.filter((x) => x.state === pb.GrantState.ACTIVE || x.state === pb.GrantState.EXHAUSTED)) expect(rt.availableByGrant.get(g.grantId) ?? 0n).toBe(g.availableNanos);
    expect((await h.ledgerClient("tnt_a").verify({})).violations).toEqual([]);
    return bal;
  }

  async function funded(customerId: string, amountNanos: bigint) {
    const admin = h.client(KEYS.adminA);
    const w = (await admin.createWallet({ customerId, unit: "USD" })).wallet!;
    await admin.grant({ id: `grt_${customerId}`, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos });
    return w;
  }

  // ------------------------------------------------------------------ AuthorizeStream

  it("answers every AuthorizeStream message in order, one per message, with Authorize's semantics and idempotency", async () => {
    const w = await funded("cus_st1", 1_000n);
    const agent = h.client(KEYS.ingestA);
    const base = { customerId: "cus_st1", unit: "USD", ttlMs: 60_000n };
    const { out, error } = await runStream(agent, [
      { ...base, id: "st1_a", amountNanos: 100n },
      { ...base, id: "st1_b", amountNanos: 200n },
      { ...base, id: "st1_c", amountNanos: 0n },
      { ...base, id: "st1_d", customerId: "cus_nobody", amountNanos: 1n },
      { ...base, id: "st1_a", amountNanos: 100n },
      { ...base, id: "st1_b", amountNanos: 201n },
      { ...base, id: "st1_e", amountNanos: 701n },
      { ...base, id: "st1_f", amountNanos: 700n },
    ]);
    expect(error).toBeNull();
    const R = pb.AuthorizeResult;
    expect(out.map((r) => [r.sequence, r.result!.id, r.result!.result])).toEqual([
      [1n, "st1_a", R.OK],
      [2n, "st1_b", R.OK],
      [3n, "st1_c", R.INVALID],
      [4n, "st1_d", R.WALLET_NOT_FOUND],
      [5n, "st1_a", R.OK],
      [6n, "st1_b", R.ID_REUSED],
      [7n, "st1_e", R.INSUFFICIENT],
      [8n, "st1_f", R.OK],
    ]);
    expect(out[2]!.result!.error).toMatch(/^item\.amount_nanos: must be > 0/);
    // The replay answers with the first hold (same creation time), and places nothing more.
    expect(out[4]!.result!.hold!.createdAt).toEqual(out[0]!.result!.hold!.createdAt);
    expect([out[6]!.result!.availableNanos, out[7]!.result!.availableNanos]).toEqual([700n, 0n]);
    // A unary Authorize with a stream message's id is a replay too.
    const u = await agent.authorize({ ...base, id: "st1_a", amountNanos: 100n });
    expect([u.hold!.id, u.hold!.amountNanos, u.availableNanos]).toEqual(["st1_a", 100n, 0n]);
    const bal = await expectAgreement(w.id, "cus_st1");
    expect([bal.heldNanos, bal.availableNanos]).toEqual([1_000n, 0n]);
  });

  it("never overdraws with three streams and 100 unary calls at once: exactly 100 of 400 holds, sharing group commits", async () => {
    const w = await funded("cus_st2", 100_000n);
    const agent = h.client(KEYS.ingestA);
    const base = { customerId: "cus_st2", unit: "USD", amountNanos: 1_000n, ttlMs: 60_000n };
    const before = { ...h.wallet.engine.stats };
    const streams = [0, 1, 2].map((s) => runStream(agent, Array.from({ length: 100 }, (_, i) => ({ ...base, id: `st2_${s}_${i}` }))));
    const unary = Array.from({ length: 100 }, (_, i) =>
      agent.authorize({ ...base, id: `st2_u_${i}` }).then(
        () => true,
        (e) => {
          expect(ConnectError.from(e).code).toBe(Code.FailedPrecondition);
          return false;
        },
      ),
    );
    const [ss, us] = await Promise.all([Promise.all(streams), Promise.all(unary)]);
    for (const s of ss) {
      expect(s.error).toBeNull();
      expect(s.out.map((r) => r.sequence)).toEqual(Array.from({ length: 100 }, (_, i) => BigInt(i + 1)));
      for (const r of s.out) expect([pb.AuthorizeResult.OK, pb.AuthorizeResult.INSUFFICIENT]).toContain(r.result!.result);
    }
    const okStream = ss.flatMap((s) => s.out).filter((r) => r.result!.result === pb.AuthorizeResult.OK).length;
    expect(okStream + us.filter(Boolean).length).toBe(100);
    const items = h.wallet.engine.stats.authorizeItems - before.authorizeItems;
    const groups = h.wallet.engine.stats.authorizeGroups - before.authorizeGroups;
    expect(items).toBe(400);
    expect(groups).toBeLessThan(items / 2);
    const bal = await expectAgreement(w.id, "cus_st2");
    expect([bal.heldNanos, bal.availableNanos]).toEqual([100_000n, 0n]);
  });

  it("checks the stream's scope once at start and ends it at its message limit and lifetime, after answering every message read", async () => {
    const w = await funded("cus_st3", 1_000n);
    const base = { customerId: "cus_st3", unit: "USD", amountNanos: 10n, ttlMs: 60_000n };
    const denied = await runStream(h.client(KEYS.readA), [{ ...base, id: "st3_x" }]);
    expect([denied.out.length, denied.error?.code]).toEqual([0, Code.PermissionDenied]);

    const five = await runStream(h.clientWith({ key: KEYS.ingestA, streamLimits: { itemsMax: 5 } }), Array.from({ length: 7 }, (_, i) => ({ ...base, id: `st3_n_${i}` })));
    expect(five.out.map((r) => r.result!.result)).toEqual(Array(5).fill(pb.AuthorizeResult.OK));
    expect(five.error?.code).toBe(Code.ResourceExhausted);
    expect(five.error?.rawMessage).toMatch(/limit of 5 messages/);

    let close!: () => void;
    const open = new Promise<void>((r) => (close = r));
    const t0 = Date.now();
    const life = await runStream(h.clientWith({ key: KEYS.ingestA, streamLimits: { lifetimeMs: 300 } }), [{ ...base, id: "st3_l_0" }, { ...base, id: "st3_l_1" }], open);
    close();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(life.out.map((r) => r.result!.result)).toEqual([pb.AuthorizeResult.OK, pb.AuthorizeResult.OK]);
    expect(life.error?.code).toBe(Code.DeadlineExceeded);
    // 5 + 2 holds placed, nothing for the messages past the limit.
    const bal = await expectAgreement(w.id, "cus_st3");
    expect(bal.heldNanos).toBe(70n);
  });

  it("ends a stream shortly before its call's deadline, after answering every message read (not cut by the deadline)", async () => {
    await funded("cus_st9", 1_000n);
    const base = { customerId: "cus_st9", unit: "USD", amountNanos: 10n, ttlMs: 60_000n };
    let close!: () => void;
    const open = new Promise<void>((r) => (close = r));
    async function* requests() {
      yield { item: { ...base, id: "st9_0" } };
      yield { item: { ...base, id: "st9_1" } };
      await open;
    }
    const out: pb.AuthorizeStreamResponse[] = [];
    let error: ConnectError | null = null;
    const t0 = Date.now();
    try {
      for await (const r of h.client(KEYS.ingestA).authorizeStream(requests(), { timeoutMs: 3_000 })) out.push(r);
    } catch (e) {
      error = ConnectError.from(e);
    }
    close();
    const ms = Date.now() - t0;
    expect(out.map((r) => r.result!.result)).toEqual([pb.AuthorizeResult.OK, pb.AuthorizeResult.OK]);
    expect(error?.code).toBe(Code.DeadlineExceeded);
    expect(error?.rawMessage).toMatch(/every message read was answered/);
    expect(ms).toBeLessThan(2_900); // 3 s deadline - 2 s margin = 1 s
  });

  it("stops reading a stream at its in-flight bound while earlier messages are unanswered", async () => {
    await funded("cus_st4", 1_000n);
    const base = { customerId: "cus_st4", unit: "USD", amountNanos: 1n, ttlMs: 60_000n };
    /** Batch sizes the group commit saw when its first group takes 500 ms, and how many items reached it while that first group ran. */
    const batchSizes = async (inFlightMax: number, tag: string) => {
      const eng = h.wallet.engine;
      const sizes: number[] = [];
      let first = true;
      let firstRunning = false;
      let duringFirst = 0;
      const slow: Engine = {
        ...eng,
        authorizeMany: async (tenant, items) => {
          sizes.push(items.length);
          if (firstRunning) duringFirst += items.length;
          if (first) {
            first = false;
            firstRunning = true;
            await sleep(500);
            firstRunning = false;
          }
          return eng.authorizeMany(tenant, items);
        },
      };
      const r = await runStream(h.clientWith({ key: KEYS.ingestA, engine: slow, streamLimits: { inFlightMax } }), Array.from({ length: 10 }, (_, i) => ({ ...base, id: `st4_${tag}_${i}` })));
      expect(r.error).toBeNull();
      expect(r.out.filter((x) => x.result!.result === pb.AuthorizeResult.OK).length).toBe(10);
      return { sizes, duringFirst };
    };
    // One wallet: its groups never overlap (pipelined groups are on disjoint wallets), so what is
    // read during the first commit forms the next group.
    const bounded = await batchSizes(2, "b");
    // While the first message's group commits, only the second is read; then one at a time.
    expect(bounded.sizes.slice(0, 2)).toEqual([1, 1]);
    expect(bounded.duringFirst).toBe(0);
    expect(Math.max(...bounded.sizes)).toBeLessThanOrEqual(2);
    expect(bounded.sizes.reduce((s, x) => s + x, 0)).toBe(10);
    // Control: with room for 16, all nine others were read during the first commit.
    const roomy = await batchSizes(16, "r");
    expect(roomy.sizes.slice(0, 2)).toEqual([1, 9]);
    expect(roomy.duringFirst).toBe(0);
  });

  // ------------------------------------------------------------------ Capture / Release group commit

  it("group-commits concurrent captures and releases, stays idempotent on the hold id, and one bad item never fails the others", async () => {
    const w = await funded("cus_grp", 100_000n);
    const agent = h.client(KEYS.ingestA);
    const base = { customerId: "cus_grp", unit: "USD", amountNanos: 100n };
    const ids = Array.from({ length: 40 }, (_, i) => `grp_${i}`);
    await agent.authorizeBatch({ items: ids.map((id) => ({ ...base, id, ttlMs: 600_000n })) });
    await agent.authorize({ ...base, id: "grp_short", ttlMs: 1_000n });
    await agent.authorize({ ...base, id: "grp_rel", ttlMs: 600_000n });
    await agent.release({ holdId: "grp_rel" });
    h.clock.advance(1_000);
    const before = { ...h.wallet.engine.stats };
    const caps = ids.slice(0, 20).map((id, i) => agent.capture({ holdId: id, amountNanos: BigInt(50 + i), eventId: `evt_grp_${i}` }));
    const rels = ids.slice(20).map((id) => agent.release({ holdId: id }));
    const bad = [
      code(agent.capture({ holdId: "grp_missing", amountNanos: 1n })),
      code(agent.capture({ holdId: "grp_short", amountNanos: 1n })),
      code(agent.capture({ holdId: "grp_rel", amountNanos: 1n })),
      code(agent.release({ holdId: "grp_missing" })),
    ];
    const dup = agent.capture({ holdId: "grp_0", amountNanos: 50n, eventId: "evt_grp_0" });
    const [c, r, x, d] = await Promise.all([Promise.all(caps), Promise.all(rels), Promise.all(bad), dup]);
    expect(c.map((v) => [v.capturedNanos, v.releasedNanos, v.hold!.state])).toEqual(Array.from({ length: 20 }, (_, i) => [BigInt(50 + i), BigInt(50 - i), pb.HoldState.CAPTURED]));
    expect(r.map((v) => [v.releasedNanos, v.hold!.state])).toEqual(Array(20).fill([100n, pb.HoldState.RELEASED]));
    expect(x.map((e) => e.code)).toEqual([Code.NotFound, Code.FailedPrecondition, Code.FailedPrecondition, Code.NotFound]);
    expect(x[1]!.message).toMatch(/hold grp_short has expired/);
    expect(x[2]!.message).toMatch(/hold grp_rel is released/);
    expect([d.capturedNanos, d.hold!.state]).toEqual([50n, pb.HoldState.CAPTURED]);
    const stats = h.wallet.engine.stats;
    // 24 captures and 21 releases arrived together: a few shared transactions, not one each.
    expect(stats.captureGroups - before.captureGroups).toBeLessThan(10);
    expect(stats.releaseGroups - before.releaseGroups).toBeLessThan(10);
    // Replays: the same capture answers the same; other content is refused; a second release moves nothing.
    const again = await agent.capture({ holdId: "grp_1", amountNanos: 51n, eventId: "evt_grp_1" });
    expect([again.capturedNanos, again.releasedNanos]).toEqual([51n, 49n]);
    expect((await code(agent.capture({ holdId: "grp_1", amountNanos: 52n, eventId: "evt_grp_1" }))).code).toBe(Code.AlreadyExists);
    expect((await agent.release({ holdId: "grp_20" })).releasedNanos).toBe(0n);
    expect((await code(agent.release({ holdId: "grp_0" }))).code).toBe(Code.FailedPrecondition);
    const captured = Array.from({ length: 20 }, (_, i) => BigInt(50 + i)).reduce((s, v) => s + v, 0n);
    const bal = await expectAgreement(w.id, "cus_grp");
    expect([bal.balanceNanos, bal.heldNanos]).toEqual([100_000n - captured, 100n]);
    const mv = await h.client(KEYS.readA).listMovements({ walletId: w.id, page: { pageSizeMax: 1_000 } });
    expect(mv.movements.filter((m) => m.kind === pb.MovementKind.BURN).length).toBe(20);
  });

  // ------------------------------------------------------------------ per-grant expiry grace

  it("lets a grant carry its own expiry grace, overriding the deployment default, bounded and shown on the grant", async () => {
    const admin = h.client(KEYS.adminA);
    const w = (await admin.createWallet({ customerId: "cus_grace", unit: "USD" })).wallet!;
    const T = h.clock.now().getTime() + DAY;
    const g = (id: string, amountNanos: bigint, expiryGraceMs?: bigint, at = T) =>
      admin.grant({ id, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos, expiresAt: timestampFromDate(new Date(at)), expiryGraceMs });
    await g("grc_own", 100n, 2n * BigInt(DAY));
    await g("grc_def", 50n);
    await g("grc_zero", 30n, 0n);
    const shown = new Map((await admin.getBalance({ walletId: w.id })).grants.map((x) => [x.grantId, x]));
    expect([shown.get("grc_own")!.expiryGraceMs, timestampDate(shown.get("grc_own")!.breakageAt!).getTime()]).toEqual([2n * BigInt(DAY), T + 2 * DAY]);
    expect([shown.get("grc_def")!.expiryGraceMs, timestampDate(shown.get("grc_def")!.breakageAt!).getTime()]).toEqual([undefined, T]);
    expect(shown.get("grc_zero")!.expiryGraceMs).toBe(0n);
    // A run's as_of is never after now: the clock moves to it.
    const at = (ms: number) => (h.clock.set(new Date(ms)), admin.runExpiry({ walletId: w.id, asOf: timestampFromDate(new Date(ms)) }));
    expect(await at(T)).toMatchObject({ grantsExpired: 2, breakageNanos: 80n });
    expect(await at(T + 2 * DAY - 1)).toMatchObject({ grantsExpired: 0 });
    expect(await at(T + 2 * DAY)).toMatchObject({ grantsExpired: 1, breakageNanos: 100n });

    // A deployment default of one day (a second engine on the same stores): grants without their
    // own grace wait for it; a grant's own grace (0 or 3 days) wins.
    const eng = createEngine({ db: h.db, realtime: h.realtime, ledger: h.wallet.ledger, outbox: h.wallet.outbox, clock: h.clock, logger: silentLogger, expiryGraceMs: DAY });
    const T2 = T + 10 * DAY;
    await g("grc2_def", 7n, undefined, T2);
    await g("grc2_zero", 5n, 0n, T2);
    await g("grc2_three", 3n, 3n * BigInt(DAY), T2);
    const viaDefault = (await h.clientWith({ engine: eng }).getBalance({ walletId: w.id })).grants.find((x) => x.grantId === "grc2_def")!;
    expect(timestampDate(viaDefault.breakageAt!).getTime()).toBe(T2 + DAY);
    expect(await eng.runExpiry("tnt_a", new Date(T2), w.id)).toMatchObject({ grantsExpired: 1, breakageNanos: 5n });
    expect(await eng.runExpiry("tnt_a", new Date(T2 + DAY), w.id)).toMatchObject({ grantsExpired: 1, breakageNanos: 7n });
    expect(await eng.runExpiry("tnt_a", new Date(T2 + 3 * DAY), w.id)).toMatchObject({ grantsExpired: 1, breakageNanos: 3n });
    await expectAgreement(w.id, "cus_grace");

    // A grant expiring at the end of 9999: its breakage would pass year 9999, which no Timestamp
    // JSON can hold (review finding: every JSON read of the wallet answered Internal); shown as
    // the last instant.
    const END = Date.UTC(9999, 11, 31, 23, 59, 59);
    await g("grc_end", 1n, 60_000n, END);
    const end = (await admin.getBalance({ walletId: w.id })).grants.find((x) => x.grantId === "grc_end")!;
    expect(timestampDate(end.breakageAt!).toISOString()).toBe("9999-12-31T23:59:59.999Z");
    expect(toJsonString(pb.GrantBalanceSchema, end)).toContain('"breakageAt":"9999-12-31T23:59:59.999Z"');

    // Bounded, only with an expiry, part of the grant's idempotency.
    const max = 90n * BigInt(DAY);
    expect(await code(g("grc_bad", 1n, max + 1n, T + 100 * DAY))).toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(/^expiry_grace_ms: must be in \[0, 7776000000\]/) });
    expect((await code(g("grc_bad", 1n, -1n, T + 100 * DAY))).code).toBe(Code.InvalidArgument);
    expect(await code(admin.grant({ id: "grc_bad", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1n, expiryGraceMs: 5n }))).toMatchObject({
      code: Code.InvalidArgument,
      message: expect.stringMatching(/^expiry_grace_ms: applies only to a grant with expires_at/),
    });
    await g("grc_max", 1n, max, T + 100 * DAY);
    expect((await code(g("grc_max", 1n, max - 1n, T + 100 * DAY))).code).toBe(Code.AlreadyExists);
  });

  // ------------------------------------------------------------------ low-balance alert

  it("raises one low_balance alert per downward crossing of the wallet's own threshold, re-armed above it, separate from auto top-up", async () => {
    const admin = h.client(KEYS.adminA);
    const agent = h.client(KEYS.ingestA);
    const rating = h.client(KEYS.internal, "tnt_a");
    const w = await funded("cus_low", 1_000n);
    // A disabled auto top-up with its own threshold: its legacy low_balance alert must not double this one.
    await admin.setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: false, thresholdNanos: 300n } });
    const set = await admin.setLowBalanceAlert({ walletId: w.id, lowBalanceAlert: { enabled: true, thresholdNanos: 300n } });
    expect(set.wallet!.lowBalanceAlert).toMatchObject({ enabled: true, thresholdNanos: 300n, armed: true });
    const lows = async () => (await admin.listAlerts({ customerId: "cus_low", kind: pb.AlertKind.LOW_BALANCE })).alerts;
    const armed = async () => (await admin.getBalance({ walletId: w.id })).wallet!.lowBalanceAlert!.armed;
    const base = { customerId: "cus_low", unit: "USD", ttlMs: 600_000n };

    await agent.authorize({ ...base, id: "low_1", amountNanos: 600n });
    expect(await lows()).toEqual([]);
    // 20 holds at once cross it together (400 -> 200): one alert.
    await Promise.all(Array.from({ length: 20 }, (_, i) => agent.authorize({ ...base, id: `low_c_${i}`, amountNanos: 10n })));
    let a = await lows();
    expect(a.length).toBe(1);
    expect(a[0]!.walletId).toBe(w.id);
    expect(a[0]!.amountNanos < 300n && a[0]!.amountNanos >= 200n).toBe(true);
    await rating.consume({ items: [{ id: "low_k1", customerId: "cus_low", unit: "USD", amountNanos: 50n }] });
    expect((await lows()).length).toBe(1);
    expect(await armed()).toBe(false);
    // Back above (a release), then below again (a consume): a second alert.
    await agent.release({ holdId: "low_1" });
    expect(await armed()).toBe(true);
    await rating.consume({ items: [{ id: "low_k2", customerId: "cus_low", unit: "USD", amountNanos: 500n }] });
    a = await lows();
    expect(a.map((x) => x.amountNanos)).toEqual([a[0]!.amountNanos, 250n]);
    expect(new Set(a.map((x) => x.id)).size).toBe(2);
    // A grant re-arms it; a capture overage crosses again.
    await admin.grant({ id: "grt_low_2", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
    expect(await armed()).toBe(true);
    await agent.authorize({ ...base, id: "low_2", amountNanos: 10n });
    await agent.capture({ holdId: "low_2", amountNanos: 1_000n });
    a = await lows();
    expect(a.length).toBe(3);
    expect(a[2]!.amountNanos).toBe(250n);

    // Set when already below: one alert now; disabled: none after.
    const off = await funded("cus_low_off", 100n);
    await admin.setLowBalanceAlert({ walletId: off.id, lowBalanceAlert: { enabled: true, thresholdNanos: 500n } });
    const offAlerts = async () => (await admin.listAlerts({ customerId: "cus_low_off", kind: pb.AlertKind.LOW_BALANCE })).alerts.length;
    expect(await offAlerts()).toBe(1);
    const cleared = await admin.setLowBalanceAlert({ walletId: off.id, lowBalanceAlert: { enabled: false } });
    expect(cleared.wallet!.lowBalanceAlert).toBeUndefined();
    await admin.grant({ id: "grt_low_off_2", walletId: off.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
    await rating.consume({ items: [{ id: "low_off_k", customerId: "cus_low_off", unit: "USD", amountNanos: 1_050n }] });
    expect(await offAlerts()).toBe(1);

    // Bad input.
    expect(await code(admin.setLowBalanceAlert({ walletId: w.id, lowBalanceAlert: { enabled: true, thresholdNanos: 10n ** 18n + 1n } }))).toMatchObject({
      code: Code.InvalidArgument,
      message: expect.stringMatching(/^low_balance_alert\.threshold_nanos/),
    });
    expect((await code(admin.setLowBalanceAlert({ walletId: w.id }))).code).toBe(Code.InvalidArgument);
    expect((await code(admin.setLowBalanceAlert({ walletId: "wal_nope", lowBalanceAlert: { enabled: true } }))).code).toBe(Code.NotFound);
    expect((await code(h.client(KEYS.readA).setLowBalanceAlert({ walletId: w.id, lowBalanceAlert: { enabled: true } }))).code).toBe(Code.PermissionDenied);
    await expectAgreement(w.id, "cus_low");
  });

  // ------------------------------------------------------------------ pipelined group commits

  it("never overdraws with pipelined Authorize groups: random amounts over three grants from unary calls and streams, refused only past what is left, all stores agree", async () => {
    const admin = h.client(KEYS.adminA);
    const w = (await admin.createWallet({ customerId: "cus_pipe", unit: "USD" })).wallet!;
    await admin.grant({ id: "grt_pipe_a", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 700n });
    await admin.grant({ id: "grt_pipe_b", walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 500n, priority: 2 });
    await admin.grant({ id: "grt_pipe_c", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 300n, priority: 3 });
    const funded = 1_500n;
    // A seeded generator: the same amounts every run (1..40 nanos each, ~3x what the wallet holds).
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
    const amounts = Array.from({ length: 220 }, () => BigInt(1 + Math.floor(rnd() * 40)));
    const agent = h.clientWith({ key: KEYS.ingestA, authorizeGroupsInFlight: 4 });
    const base = { customerId: "cus_pipe", unit: "USD", ttlMs: 600_000n };
    const before = { ...h.wallet.engine.stats };
    const unary = amounts.slice(0, 140).map((a, i) =>
      agent.authorize({ ...base, id: `pipe_u_${i}`, amountNanos: a }).then(
        () => ({ a, ok: true }),
        () => ({ a, ok: false }),
      ),
    );
    const streams = [amounts.slice(140, 180), amounts.slice(180)].map((as, s) =>
      runStream(agent, as.map((a, i) => ({ ...base, id: `pipe_s${s}_${i}`, amountNanos: a }))).then((r) => {
        expect(r.error).toBeNull();
        return r.out.map((x, i) => ({ a: as[i]!, ok: x.result!.result === pb.AuthorizeResult.OK }));
      }),
    );
    const all = [...(await Promise.all(unary)), ...(await Promise.all(streams)).flat()];
    const held = all.filter((x) => x.ok).reduce((s, x) => s + x.a, 0n);
    const bal = await expectAgreement(w.id, "cus_pipe");
    expect(bal.heldNanos).toBe(held);
    expect(held).toBeLessThanOrEqual(funded);
    // Nothing was released meanwhile, so what is left only shrank: every refusal asked for more than that.
    for (const x of all.filter((y) => !y.ok)) expect(x.a > bal.availableNanos).toBe(true);
    expect(all.some((x) => !x.ok)).toBe(true);
    // The groups did share: far fewer group commits than items.
    expect(h.wallet.engine.stats.authorizeGroups - before.authorizeGroups).toBeLessThan(all.length);
  });

  it("never lets a replay refuse another item of its group, though the replay lookup runs beside the real-time step", async () => {
    const w = await funded("cus_rp", 10n);
    const base = { customerId: "cus_rp", unit: "USD", ttlMs: 60_000, chargeId: "", model: "" };
    const eng = h.wallet.engine;
    expect((await eng.authorizeMany("tnt_a", [{ ...base, id: "rp_a", amountNanos: 3n }]))[0]!.result).toBe("ok");
    // 7 left. In one group the replay of rp_a is decided first (it takes 3 for a moment), then rp_b
    // (5) would not fit beside it; the replay gives its 3 back and rp_b is decided again: it fits.
    const out = await eng.authorizeMany("tnt_a", [
      { ...base, id: "rp_a", amountNanos: 3n },
      { ...base, id: "rp_b", amountNanos: 5n },
      { ...base, id: "rp_c", amountNanos: 3n },
    ]);
    expect(out.map((o) => [o.result, o.hold?.amountNanos])).toEqual([["ok", 3n], ["ok", 5n], ["insufficient", undefined]]);
    const bal = await expectAgreement(w.id, "cus_rp");
    expect([bal.heldNanos, bal.availableNanos]).toEqual([8n, 2n]);
  });

  it("checks every hold of an Authorize group against the low-balance threshold, the rerun of a repeated id included", async () => {
    const admin = h.client(KEYS.adminA);
    const w = await funded("cus_low_rep", 100n);
    await admin.setLowBalanceAlert({ walletId: w.id, lowBalanceAlert: { enabled: true, thresholdNanos: 50n } });
    const base = { customerId: "cus_low_rep", unit: "USD", ttlMs: 60_000, chargeId: "", model: "" };
    // One group: the first "lr_1" is refused (200 > 100), so its repeat gets its own decision: held, 40 left.
    const out = await h.wallet.engine.authorizeMany("tnt_a", [
      { ...base, id: "lr_1", amountNanos: 200n },
      { ...base, id: "lr_1", amountNanos: 60n },
    ]);
    expect(out.map((o) => o.result)).toEqual(["insufficient", "ok"]);
    const lows = (await admin.listAlerts({ customerId: "cus_low_rep", kind: pb.AlertKind.LOW_BALANCE })).alerts;
    expect(lows.map((a) => a.amountNanos)).toEqual([40n]);
    await expectAgreement(w.id, "cus_low_rep");
  });

  it("captures a hold named twice in one group after its first occurrence: a replay when it captured, its own try when it failed", async () => {
    const w = await funded("cus_cap2", 1_000n);
    const agent = h.client(KEYS.ingestA);
    const base = { customerId: "cus_cap2", unit: "USD", amountNanos: 10n, ttlMs: 600_000n };
    await agent.authorize({ ...base, id: "cap2_a" });
    await agent.authorize({ ...base, id: "cap2_b" });
    await agent.authorize({ ...base, id: "cap2_r" });
    // Same content twice: one capture, the repeat answers it; other content: ALREADY_EXISTS.
    const eng = h.wallet.engine;
    const c = { amountNanos: 8n, eventId: "evt_cap2", chargeId: "", occurredAt: null };
    const r1 = await eng.captureMany("tnt_a", [{ ...c, holdId: "cap2_a" }, { ...c, holdId: "cap2_a" }, { ...c, holdId: "cap2_a", amountNanos: 9n }]);
    expect(r1.map((x) => (x.ok ? [x.value.capturedNanos, x.value.releasedNanos] : (x.error as Error).message))).toEqual([[8n, 2n], [8n, 2n], expect.stringMatching(/already/)]);
    // The first occurrence fails (its overage reservation hits a real-time failure): the repeat still captures.
    let failOnce = true;
    const flaky = {
      ...h.realtime,
      debit: async (...args: Parameters<typeof h.realtime.debit>) => {
        if (failOnce) {
          failOnce = false;
          throw new Error("real-time store unavailable");
        }
        return h.realtime.debit(...args);
      },
    };
    const eng2 = createEngine({ db: h.db, realtime: flaky, ledger: h.wallet.ledger, outbox: h.wallet.outbox, clock: h.clock, logger: silentLogger });
    const over = { ...c, amountNanos: 15n, eventId: "evt_cap2_b" };
    const r2 = await eng2.captureMany("tnt_a", [{ ...over, holdId: "cap2_b" }, { ...over, holdId: "cap2_b" }]);
    expect(r2[0]!.ok).toBe(false);
    expect(r2[1]).toMatchObject({ ok: true, value: { capturedNanos: 15n, shortfallNanos: 0n } });
    // A release named twice: released once, the repeat moves nothing.
    const r3 = await eng.releaseMany("tnt_a", ["cap2_r", "cap2_r"]);
    expect(r3.map((x) => x.ok && x.value.releasedNanos)).toEqual([10n, 0n]);
    const bal = await expectAgreement(w.id, "cus_cap2");
    expect([bal.balanceNanos, bal.heldNanos]).toEqual([1_000n - 8n - 15n, 0n]);
  });
});
