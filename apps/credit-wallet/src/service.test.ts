import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { KEYS, openWalletHarness, walletBackends, type WalletHarness, code } from "./test-support.js";

const USD_1 = 1_000_000_000n;

describe.each(walletBackends({ cluster: true }))("credit wallet service ($name)", (b) => {
  let h: WalletHarness;
  beforeAll(async () => {
    h = await openWalletHarness(b);
  });
  afterAll(async () => {
    await h?.close();
  });

  /** Ledger balances of an account (posted credit balance, pending debits). */
  async function ledgerAccount(tenant: string, id: string) {
    const r = await h.ledgerClient(tenant).lookupAccounts({ ids: [id] });
    const a = r.accounts[0]!;
    return { balance: a.creditsPostedNanos - a.debitsPostedNanos, pendingDebits: a.debitsPendingNanos, debitsPosted: a.debitsPostedNanos, creditsPosted: a.creditsPostedNanos };
  }

  it("runs the one-event slice: prepaid USD wallet, $1.00 purchased, consume 8,755,000 nanos, ListConsumption shows it, ledger balanced", async () => {
    const c = h.client(KEYS.adminA);
    const w = await c.createWallet({ customerId: "cus_1", unit: "USD" });
    expect(w.created).toBe(true);
    expect(w.wallet!.kind).toBe(pb.WalletKind.PREPAID);
    const again = await c.createWallet({ customerId: "cus_1", unit: "USD" });
    expect([again.created, again.wallet!.id]).toEqual([false, w.wallet!.id]);

    const g = await c.grant({ id: "grt_1", walletId: w.wallet!.id, kind: pb.GrantKind.PURCHASED, amountNanos: USD_1 });
    expect(g.grant!.amountNanos).toBe(USD_1);
    expect(g.ledgerTransferId).toBe("xfer_w:g:grt_1");

    const rating = h.client(KEYS.internal, "tnt_a");
    const item = { id: "evt_1:chg_1", customerId: "cus_1", unit: "USD", amountNanos: 8_755_000n, eventId: "evt_1", chargeId: "chg_1", occurredAt: timestampFromDate(new Date("2026-11-01T00:00:00Z")) };
    const r = await rating.consume({ items: [item] });
    expect(r.results[0]).toMatchObject({ id: "evt_1:chg_1", result: pb.ConsumeResult.OK, consumedNanos: 8_755_000n, shortfallNanos: 0n, replayed: false });

    const replay = await rating.consume({ items: [item] });
    expect(replay.results[0]).toMatchObject({ result: pb.ConsumeResult.OK, consumedNanos: 8_755_000n, replayed: true });

    const lc = await h.client(KEYS.internal, "tnt_a").listConsumption({
      customerId: "cus_1",
      unit: "USD",
      from: timestampFromDate(new Date("2026-11-01T00:00:00Z")),
      to: timestampFromDate(new Date("2026-12-01T00:00:00Z")),
    });
    expect([lc.consumedNanos, lc.shortfallNanos, lc.entries.length, lc.walletId]).toEqual([8_755_000n, 0n, 1, w.wallet!.id]);
    expect(lc.byCharge).toEqual([expect.objectContaining({ chargeId: "chg_1", consumedNanos: 8_755_000n })]);

    const bal = await c.getBalance({ walletId: w.wallet!.id });
    expect([bal.balanceNanos, bal.availableNanos, bal.heldNanos]).toEqual([USD_1 - 8_755_000n, USD_1 - 8_755_000n, 0n]);

    const wallet = await ledgerAccount("tnt_a", "acct_wallet:cus_1:USD");
    expect(wallet.balance).toBe(USD_1 - 8_755_000n);
    const revenue = await ledgerAccount("tnt_a", "acct_revenue:USD");
    expect(revenue.balance).toBe(8_755_000n);
    const verify = await h.ledgerClient("tnt_a").verify({});
    expect(verify.violations).toEqual([]);
    expect(verify.ok).toBe(true);
  });

  /** Wallet (PostgreSQL), ledger and real-time state agree to the nano. */
  async function expectAgreement(tenant: string, walletId: string, customerId: string, unit: string) {
    await h.wallet.outbox.flush();
    const bal = await h.client(KEYS.internal, tenant).getBalance({ walletId });
    const grantsBalance = bal.grants.reduce((s, g) => s + g.amountNanos - g.burnedNanos - g.expiredNanos, 0n);
    const grantsHeld = bal.grants.reduce((s, g) => s + g.heldNanos, 0n);
    const acct = await ledgerAccount(tenant, `acct_wallet:${customerId}:${unit}`);
    expect(acct.balance).toBe(grantsBalance);
    expect(acct.pendingDebits).toBe(grantsHeld);
    const rt = await h.realtime.read({ tenant, walletId });
    if (rt) {
      for (const g of bal.grants.filter((x) => x.state === pb.GrantState.ACTIVE || x.state === pb.GrantState.EXHAUSTED)) {
        expect(rt.availableByGrant.get(g.grantId) ?? 0n).toBe(g.availableNanos);
      }
    }
    expect((await h.ledgerClient(tenant).verify({})).violations).toEqual([]);
    return bal;
  }

  async function fundedWallet(customerId: string, grants: Array<Omit<MessageInitShape<typeof pb.GrantRequestSchema>, "walletId">>, unit = "USD", policy?: pb.WalletPolicy) {
    const c = h.client(KEYS.adminA);
    const w = (await c.createWallet({ customerId, unit, policy })).wallet!;
    let n = 0;
    for (const g of grants) await c.grant(create(pb.GrantRequestSchema, { id: `grt_${customerId}_${n++}`, kind: pb.GrantKind.PURCHASED, ...(g as object), walletId: w.id }));
    return w;
  }

  it("lets exactly 100 of 1,000 concurrent Authorize calls succeed on a wallet funded for 100, and wallet, ledger and real-time agree after captures and releases", async () => {
    const w = await fundedWallet("cus_conc", [{ amountNanos: 60_000n }, { amountNanos: 40_000n, kind: pb.GrantKind.PROMOTIONAL }]);
    const agent = h.client(KEYS.ingestA);
    const results = await Promise.allSettled(
      Array.from({ length: 1_000 }, (_, i) => agent.authorize({ id: `hld_c_${i}`, customerId: "cus_conc", unit: "USD", amountNanos: 1_000n, ttlMs: 60_000n })),
    );
    const ok = results.filter((r) => r.status === "fulfilled") as Array<PromiseFulfilledResult<pb.AuthorizeResponse>>;
    expect(ok.length).toBe(100);
    for (const r of results) if (r.status === "rejected") expect(ConnectError.from(r.reason).code).toBe(Code.FailedPrecondition);
    for (const r of ok) expect(r.value.availableNanos >= 0n).toBe(true);
    const bal = await expectAgreement("tnt_a", w.id, "cus_conc", "USD");
    expect([bal.availableNanos, bal.heldNanos]).toEqual([0n, 100_000n]);
    // Promotional burns first: its 40 holds come before the paid grant's.
    expect(bal.grants.map((g) => g.heldNanos)).toEqual([40_000n, 60_000n]);

    // The same hold id sent 20 times at once: one hold, the same answer to every caller.
    await h.client(KEYS.adminA).grant({ id: "grt_conc_more", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
    const dup = await Promise.all(Array.from({ length: 20 }, () => agent.authorize({ id: "hld_c_dup", customerId: "cus_conc", unit: "USD", amountNanos: 1_000n, ttlMs: 60_000n })));
    expect(new Set(dup.map((d) => d.hold!.id)).size).toBe(1);
    await agent.release({ holdId: "hld_c_dup" });
    const ids = ok.map((r) => r.value.hold!.id);
    await Promise.all(ids.slice(0, 40).map((id, i) => agent.capture({ holdId: id, amountNanos: BigInt(500 + i), eventId: `evt_${i}` })));
    await Promise.all(ids.slice(40, 100).map((id) => agent.release({ holdId: id })));
    const after = await expectAgreement("tnt_a", w.id, "cus_conc", "USD");
    const captured = Array.from({ length: 40 }, (_, i) => BigInt(500 + i)).reduce((s, x) => s + x, 0n);
    expect([after.heldNanos, after.balanceNanos, after.availableNanos]).toEqual([0n, 101_000n - captured, 101_000n - captured]);
  });

  it("loses nothing and spends nothing twice when the real-time state is flushed mid-run and the process restarts", async () => {
    const w = await fundedWallet("cus_flush", [{ amountNanos: 100_000n }]);
    const agent = () => h.client(KEYS.ingestA);
    const first = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => agent().authorize({ id: `hld_f_${i}`, customerId: "cus_flush", unit: "USD", amountNanos: 1_000n })));
    // Flush this deployment's real-time keys while calls are in flight, then "kill" and restart.
    const inflight = Promise.allSettled(Array.from({ length: 40 }, (_, i) => agent().authorize({ id: `hld_f_${60 + i}`, customerId: "cus_flush", unit: "USD", amountNanos: 1_000n })));
    await h.realtime.invalidateAll();
    const second = await inflight;
    await h.restart();
    expect(await h.realtime.read({ tenant: "tnt_a", walletId: w.id })).toBeNull();
    const third = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => agent().authorize({ id: `hld_f_${100 + i}`, customerId: "cus_flush", unit: "USD", amountNanos: 1_000n })));
    const okCount = [...first, ...second, ...third].filter((r) => r.status === "fulfilled").length;
    expect(okCount).toBe(100);
    // Replaying a hold after the restart returns the same hold, spends nothing more.
    const replay = await agent().authorize({ id: "hld_f_0", customerId: "cus_flush", unit: "USD", amountNanos: 1_000n });
    expect(replay.hold!.id).toBe("hld_f_0");
    const bal = await expectAgreement("tnt_a", w.id, "cus_flush", "USD");
    expect([bal.heldNanos, bal.availableNanos]).toEqual([100_000n, 0n]);
  });

  if (b.full)
  it("burns the issue's vector B, A, C across grants as linked ledger transfers, one per slice", async () => {
    const w = await fundedWallet("cus_vec", [
      { id: "grt_A", amountNanos: 50n, priority: 1 },
      { id: "grt_B", amountNanos: 20n, priority: 1, kind: pb.GrantKind.PROMOTIONAL },
      { id: "grt_C", amountNanos: 100n, priority: 2 },
    ]);
    const r = await h.client(KEYS.internal, "tnt_a").consume({ items: [{ id: "vec_1", customerId: "cus_vec", unit: "USD", amountNanos: 120n, eventId: "evt_vec" }] });
    expect(r.results[0]!.consumedNanos).toBe(120n);
    const bal = await expectAgreement("tnt_a", w.id, "cus_vec", "USD");
    expect(bal.grants.map((g) => [g.grantId, g.burnedNanos])).toEqual([["grt_B", 20n], ["grt_A", 50n], ["grt_C", 50n]]);
    const ts = await h.ledgerClient("tnt_a").lookupTransfers({ ids: ["xfer_w:b:vec_1:0", "xfer_w:b:vec_1:1", "xfer_w:b:vec_1:2"] });
    expect(ts.transfers.map((t) => [t.amountNanos, t.references.grant_id, t.flags?.linked])).toEqual([
      [20n, "grt_B", true],
      [50n, "grt_A", true],
      [50n, "grt_C", false],
    ]);
    const mv = await h.client(KEYS.readA).listMovements({ walletId: w.id });
    expect(mv.movements.filter((m) => m.kind === pb.MovementKind.BURN).map((m) => [m.grantId, m.eventId, m.ledgerTransferId])).toEqual([
      ["grt_B", "evt_vec", "xfer_w:b:vec_1:0"],
      ["grt_A", "evt_vec", "xfer_w:b:vec_1:1"],
      ["grt_C", "evt_vec", "xfer_w:b:vec_1:2"],
    ]);
  });

  if (b.full)
  it("reports a partial burn's shortfall and refuses nothing else under hard stop", async () => {
    await fundedWallet("cus_short", [{ amountNanos: 100n }]);
    const r = await h.client(KEYS.internal, "tnt_a").consume({
      items: [
        { id: "s_1", customerId: "cus_short", unit: "USD", amountNanos: 80n },
        { id: "s_2", customerId: "cus_short", unit: "USD", amountNanos: 50n },
        { id: "s_3", customerId: "cus_short", unit: "USD", amountNanos: 10n },
        { id: "s_4", customerId: "cus_nobody", unit: "USD", amountNanos: 10n },
        { id: "s_5", customerId: "cus_short", unit: "USD", amountNanos: -1n },
      ],
    });
    expect(r.results.map((x) => [x.result, x.consumedNanos, x.shortfallNanos])).toEqual([
      [pb.ConsumeResult.OK, 80n, 0n],
      [pb.ConsumeResult.PARTIAL, 20n, 30n],
      [pb.ConsumeResult.INSUFFICIENT, 0n, 10n],
      [pb.ConsumeResult.WALLET_NOT_FOUND, 0n, 10n],
      [pb.ConsumeResult.INVALID, 0n, 0n],
    ]);
    expect(r.results[4]!.error).toMatch(/items\[4\]\.amount_nanos: must be > 0/);
  });

  if (b.full)
  it("captures less than held (rest released), more than held (overage burned from other grants), and follows soft-negative policy", async () => {
    const w = await fundedWallet("cus_cap", [{ amountNanos: 1_000n }], "USD", create(pb.WalletPolicySchema, { mode: pb.PolicyMode.SOFT_NEGATIVE, negativeLimitNanos: 200n }));
    const agent = h.client(KEYS.ingestA);
    await agent.authorize({ id: "cap_1", customerId: "cus_cap", unit: "USD", amountNanos: 300n });
    const less = await agent.capture({ holdId: "cap_1", amountNanos: 120n });
    expect([less.capturedNanos, less.releasedNanos, less.shortfallNanos, less.hold!.state]).toEqual([120n, 180n, 0n, pb.HoldState.CAPTURED]);
    await agent.authorize({ id: "cap_2", customerId: "cus_cap", unit: "USD", amountNanos: 100n });
    const more = await agent.capture({ holdId: "cap_2", amountNanos: 900n });
    // 880 was available: 100 held + 780 free, then 20 below zero (soft limit 200).
    expect([more.capturedNanos, more.shortfallNanos]).toEqual([900n, 0n]);
    const bal = await expectAgreement("tnt_a", w.id, "cus_cap", "USD");
    expect([bal.balanceNanos, bal.overdraftNanos, bal.availableNanos]).toEqual([-20n, 20n, -20n]);
    // Holds may go down to the floor (-200) and not one nano further.
    await expect(agent.authorize({ id: "cap_3", customerId: "cus_cap", unit: "USD", amountNanos: 181n })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await agent.authorize({ id: "cap_4", customerId: "cus_cap", unit: "USD", amountNanos: 180n });
    await agent.release({ holdId: "cap_4" });
    // A new grant repays the overdraft first.
    await h.client(KEYS.adminA).grant({ id: "grt_cap_repay", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 50n });
    const after = await expectAgreement("tnt_a", w.id, "cus_cap", "USD");
    expect([after.balanceNanos, after.overdraftNanos]).toEqual([30n, 0n]);
  });

  it("reports in ListConsumption the part of each burn that went below zero and the part burned by captures", async () => {
    await fundedWallet("cus_odsplit", [{ amountNanos: 100n }], "USD", create(pb.WalletPolicySchema, { mode: pb.PolicyMode.SOFT_NEGATIVE, negativeLimitNanos: 200n }));
    const at = timestampFromDate(new Date("2026-11-02T00:00:00Z"));
    const rating = h.client(KEYS.internal, "tnt_a");
    // 150 consumed: 100 from the grant, 50 below zero
    const r = await rating.consume({ items: [{ id: "evt_od:chg_a", customerId: "cus_odsplit", unit: "USD", amountNanos: 150n, eventId: "evt_od", chargeId: "chg_a", occurredAt: at }] });
    expect([r.results[0]!.consumedNanos, r.results[0]!.shortfallNanos]).toEqual([150n, 0n]);
    // a hold of 30 captured (all below zero: the wallet is at -50), naming charge chg_b
    const agent = h.client(KEYS.ingestA);
    await agent.authorize({ id: "hold_odsplit", customerId: "cus_odsplit", unit: "USD", amountNanos: 30n, chargeId: "chg_b" });
    await agent.capture({ holdId: "hold_odsplit", amountNanos: 30n, occurredAt: at });
    const lc = await rating.listConsumption({ customerId: "cus_odsplit", unit: "USD", from: timestampFromDate(new Date("2026-11-01T00:00:00Z")), to: timestampFromDate(new Date("2026-12-01T00:00:00Z")) });
    expect([lc.consumedNanos, lc.overdraftNanos, lc.capturedNanos, lc.shortfallNanos]).toEqual([180n, 80n, 30n, 0n]);
    expect(lc.byCharge.map((c) => [c.chargeId, c.consumedNanos, c.overdraftNanos, c.capturedNanos])).toEqual([
      ["chg_a", 150n, 50n, 0n],
      ["chg_b", 30n, 30n, 30n],
    ]);
    expect(lc.entries.map((e) => [e.id, e.consumedNanos, e.overdraftNanos, e.holdId])).toEqual([
      ["hold_odsplit", 30n, 30n, "hold_odsplit"],
      ["evt_od:chg_a", 150n, 50n, ""],
    ]);
  });

  if (b.full)
  it("records postpaid overage as shortfall instead of refusing", async () => {
    const w = await fundedWallet("cus_post", [{ amountNanos: 100n }], "USD", create(pb.WalletPolicySchema, { mode: pb.PolicyMode.POSTPAID_OVERAGE, overageRate: { value: "1" }, overageCurrency: "USD" }));
    const agent = h.client(KEYS.ingestA);
    const hold = await agent.authorize({ id: "post_1", customerId: "cus_post", unit: "USD", amountNanos: 150n });
    expect(hold.hold!.amountNanos).toBe(150n);
    const cap = await agent.capture({ holdId: "post_1", amountNanos: 150n });
    expect([cap.capturedNanos, cap.shortfallNanos]).toEqual([100n, 50n]);
    const bal = await expectAgreement("tnt_a", w.id, "cus_post", "USD");
    expect(bal.balanceNanos).toBe(0n);
  });

  it("answers bad input with a clear error and moves nothing", async () => {
    const w = await fundedWallet("cus_bad", [{ amountNanos: 1_000n }]);
    const agent = h.client(KEYS.ingestA);
    const admin = h.client(KEYS.adminA);
    const cases: Array<[() => Promise<unknown>, Code, RegExp]> = [
      [() => agent.authorize({ id: "bad_1", customerId: "cus_bad", unit: "USD", amountNanos: 0n }), Code.InvalidArgument, /amount_nanos: must be > 0/],
      [() => agent.authorize({ id: "bad_2", customerId: "cus_bad", unit: "USD", amountNanos: -5n }), Code.InvalidArgument, /amount_nanos: must be > 0/],
      [() => agent.authorize({ id: "bad_3", customerId: "cus_bad", unit: "USD", amountNanos: 10n ** 18n + 1n }), Code.InvalidArgument, /amount_nanos: must be at most/],
      [() => agent.authorize({ id: "", customerId: "cus_bad", unit: "USD", amountNanos: 5n }), Code.InvalidArgument, /^id: is required/],
      [() => agent.authorize({ id: "bad_4", customerId: "cus_bad", unit: "usd", amountNanos: 5n }), Code.InvalidArgument, /unit: must be an ISO 4217/],
      [() => agent.authorize({ id: "bad_5", customerId: "cus_bad", unit: "USD", amountNanos: 5n, ttlMs: 86_400_001n }), Code.InvalidArgument, /ttl_ms/],
      [() => agent.authorize({ id: "bad_6", customerId: "cus_bad", unit: "USD", amountNanos: 5n, chargeId: "a,b" }), Code.InvalidArgument, /charge_id/],
      [() => admin.grant({ id: "grt_bad", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 0n }), Code.InvalidArgument, /amount_nanos: must be > 0/],
      [() => admin.grant({ id: "grt_bad", walletId: w.id, kind: pb.GrantKind.UNSPECIFIED, amountNanos: 5n }), Code.InvalidArgument, /^kind: is required/],
      [() => admin.grant({ id: "grt_bad", walletId: "wal_nope", kind: pb.GrantKind.PURCHASED, amountNanos: 5n }), Code.NotFound, /wallet wal_nope not found/],
      [() => admin.createWallet({ customerId: "cus_bad", unit: "cr_unknown" }), Code.NotFound, /credit type cr_unknown not found/],
      [() => agent.capture({ holdId: "hld_missing", amountNanos: 5n }), Code.NotFound, /hold hld_missing not found/],
      [() => agent.consume({ items: [] }), Code.InvalidArgument, /^items: must not be empty/],
      [() => agent.authorize({ id: "bad_7", customerId: "cus_bad", unit: "USD", amountNanos: 1_001n }), Code.FailedPrecondition, /^wallet wal_[0-9a-f]+: insufficient balance \(available 1000 nanos\)/],
      [() => agent.consume({ items: Array.from({ length: 1_001 }, (_, i) => ({ id: `x${i}`, customerId: "cus_bad", unit: "USD", amountNanos: 1n })) }), Code.ResourceExhausted, /items: exceeds the limit of 1000/],
    ];
    for (const [p, c, m] of cases) {
      const e = await code(p());
      expect([e.code, e.message]).toEqual([c, expect.stringMatching(m)]);
    }
    // Capture after release, release after capture, capture of an expired hold, a foreign tenant's hold.
    await agent.authorize({ id: "hb_1", customerId: "cus_bad", unit: "USD", amountNanos: 10n, ttlMs: 1_000n });
    await agent.release({ holdId: "hb_1" });
    expect(await code(agent.capture({ holdId: "hb_1", amountNanos: 5n }))).toMatchObject({ code: Code.FailedPrecondition, message: expect.stringMatching(/hold hb_1 is released/) });
    await agent.authorize({ id: "hb_2", customerId: "cus_bad", unit: "USD", amountNanos: 10n, ttlMs: 1_000n });
    await agent.capture({ holdId: "hb_2", amountNanos: 10n });
    expect((await code(agent.release({ holdId: "hb_2" }))).code).toBe(Code.FailedPrecondition);
    expect((await code(agent.capture({ holdId: "hb_2", amountNanos: 9n }))).code).toBe(Code.AlreadyExists);
    await agent.authorize({ id: "hb_3", customerId: "cus_bad", unit: "USD", amountNanos: 10n, ttlMs: 1_000n });
    expect((await code(h.client(KEYS.adminB).capture({ holdId: "hb_3", amountNanos: 5n }))).code).toBe(Code.NotFound);
    h.clock.advance(1_000);
    expect(await code(agent.capture({ holdId: "hb_3", amountNanos: 5n }))).toMatchObject({ code: Code.FailedPrecondition, message: expect.stringMatching(/hold hb_3 has expired/) });
    // Same id, other content: AlreadyExists; nothing moved.
    expect((await code(agent.authorize({ id: "hb_1", customerId: "cus_bad", unit: "USD", amountNanos: 11n }))).code).toBe(Code.AlreadyExists);
    expect((await code(admin.grant({ id: "grt_cus_bad_0", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 7n }))).code).toBe(Code.AlreadyExists);
    const exp = await admin.runExpiry({ walletId: w.id });
    expect(exp.holdsExpired).toBe(1);
    const bal = await expectAgreement("tnt_a", w.id, "cus_bad", "USD");
    expect([bal.balanceNanos, bal.heldNanos]).toEqual([990n, 0n]);
  });

  if (b.full)
  it("never shows one tenant's wallet, hold or consumption to another", async () => {
    const b = h.client(KEYS.adminB);
    expect((await code(b.getBalance({ customerId: "cus_1", unit: "USD" }))).code).toBe(Code.NotFound);
    const lc = await b.listConsumption({ customerId: "cus_1", unit: "USD", from: timestampFromDate(new Date(0)), to: timestampFromDate(new Date("2030-01-01T00:00:00Z")) });
    expect([lc.consumedNanos, lc.entries.length, lc.walletId]).toEqual([0n, 0, ""]);
    expect((await code(h.client(KEYS.readA).grant({ id: "g", walletId: "w", kind: 1, amountNanos: 1n }))).code).toBe(Code.PermissionDenied);
  });

  if (b.full)
  it("expires grants to breakage with notices first, and burns soonest-expiring first", async () => {
    const now = h.clock.now().getTime();
    const day = 86_400_000;
    const w = await fundedWallet("cus_exp", [
      { id: "grt_late", amountNanos: 100n, expiresAt: timestampFromDate(new Date(now + 30 * day)) },
      { id: "grt_soon", amountNanos: 100n, expiresAt: timestampFromDate(new Date(now + 3 * day)) },
    ]);
    await h.client(KEYS.internal, "tnt_a").consume({ items: [{ id: "exp_1", customerId: "cus_exp", unit: "USD", amountNanos: 30n }] });
    const admin = h.client(KEYS.adminA);
    // A run's as_of is never after now: the clock moves to it.
    h.clock.set(new Date(now + day));
    const r1 = await admin.runExpiry({ walletId: w.id });
    expect([r1.grantsExpired, r1.alertsRaised]).toEqual([0, 1]);
    const alerts = await admin.listAlerts({ customerId: "cus_exp", kind: pb.AlertKind.CREDITS_EXPIRING });
    expect(alerts.alerts.map((a) => [a.grantId, a.amountNanos])).toEqual([["grt_soon", 70n]]);
    h.clock.set(new Date(now + 3 * day));
    const r2 = await admin.runExpiry({ walletId: w.id });
    expect([r2.grantsExpired, r2.breakageNanos]).toEqual([1, 70n]);
    const again = await admin.runExpiry({ walletId: w.id, asOf: timestampFromDate(new Date(now + 3 * day)) });
    expect(again.grantsExpired).toBe(0);
    const bal = await expectAgreement("tnt_a", w.id, "cus_exp", "USD");
    expect(bal.balanceNanos).toBe(100n);
    expect((await ledgerAccount("tnt_a", "acct_breakage:USD")).balance).toBeGreaterThanOrEqual(70n);
  });

  if (b.full)
  it("rolls over an allowance: 1,000/month, 600 used -> 1,300 next month with a 300 cap", async () => {
    const admin = h.client(KEYS.adminA);
    await admin.createCreditType({ id: "cr_tokens", name: "Tokens", currency: "USD", rate: { value: "0.01" } });
    const w = (await admin.createWallet({ customerId: "cus_roll", unit: "cr_tokens" })).wallet!;
    expect(w.kind).toBe(pb.WalletKind.CREDITS);
    const start = h.clock.now();
    const end = new Date(start.getTime() + 30 * 86_400_000);
    const K = 1_000_000_000n;
    await admin.grant({
      id: "alw_1",
      walletId: w.id,
      kind: pb.GrantKind.ALLOWANCE,
      amountNanos: 1_000n * K,
      effectiveAt: timestampFromDate(start),
      periodEnd: timestampFromDate(end),
      renew: true,
      rollover: { mode: pb.RolloverMode.CAPPED, capNanos: 300n * K },
    });
    await h.client(KEYS.internal, "tnt_a").consume({ items: [{ id: "roll_1", customerId: "cus_roll", unit: "cr_tokens", amountNanos: 600n * K }] });
    h.clock.set(end); // a run's as_of is never after now
    const r = await admin.runRollover({ walletId: w.id, asOf: timestampFromDate(end) });
    expect(r.outcomes.map((o) => [o.remainderNanos, o.rolledOverNanos, o.expiredNanos, o.rolloverGrantId, o.renewedGrantId])).toEqual([[400n * K, 300n * K, 100n * K, "alw_1:p0:ro", "alw_1:p1"]]);
    const bal = await expectAgreement("tnt_a", w.id, "cus_roll", "cr_tokens");
    expect(bal.availableNanos).toBe(1_300n * K);
    expect((await admin.runRollover({ walletId: w.id, asOf: timestampFromDate(end) })).outcomes).toEqual([]);
    // A maximum cost in USD converts at the credit type's rate (0.01 USD per credit), rounded up.
    const hold = await h.client(KEYS.ingestA).authorize({ id: "roll_h", customerId: "cus_roll", unit: "cr_tokens", maxCostNanos: 1_000_000_000n, maxCostCurrency: "USD" });
    expect(hold.hold!.amountNanos).toBe(100n * K);
  });

  if (b.full)
  it("tops up once per threshold crossing and respects the cooldown", async () => {
    const w = await fundedWallet("cus_top", [{ amountNanos: 1_000n }]);
    const admin = h.client(KEYS.adminA);
    await admin.setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 1_000n, cooldownMs: 60_000n, costBasis: { value: "0.97" }, costBasisCurrency: "USD" } });
    const rating = h.client(KEYS.internal, "tnt_a");
    await rating.consume({ items: [{ id: "top_1", customerId: "cus_top", unit: "USD", amountNanos: 600n }] });
    await rating.consume({ items: [{ id: "top_2", customerId: "cus_top", unit: "USD", amountNanos: 10n }] });
    let alerts = await admin.listAlerts({ customerId: "cus_top", kind: pb.AlertKind.AUTO_TOP_UP });
    expect(alerts.alerts.length).toBe(1);
    // The alert carries what the top-up was bought at (invoicing bills it from the alert).
    expect(alerts.alerts[0]).toMatchObject({ amountNanos: 1_000n, costBasis: { value: "0.97" }, costBasisCurrency: "USD" });
    // Back above the threshold (re-armed), then below again inside the cooldown: no second top-up.
    await rating.consume({ items: [{ id: "top_3", customerId: "cus_top", unit: "USD", amountNanos: 1_000n }] });
    alerts = await admin.listAlerts({ customerId: "cus_top", kind: pb.AlertKind.AUTO_TOP_UP });
    expect(alerts.alerts.length).toBe(1);
    h.clock.advance(60_000);
    await rating.consume({ items: [{ id: "top_4", customerId: "cus_top", unit: "USD", amountNanos: 1n }] });
    alerts = await admin.listAlerts({ customerId: "cus_top", kind: pb.AlertKind.AUTO_TOP_UP });
    expect(alerts.alerts.length).toBe(2);
    await expectAgreement("tnt_a", w.id, "cus_top", "USD");
  });

  if (b.full)
  it("authorizes a batch with one result per item", async () => {
    await fundedWallet("cus_batch", [{ amountNanos: 250n }]);
    const r = await h.client(KEYS.ingestA).authorizeBatch({
      items: [
        { id: "bt_1", customerId: "cus_batch", unit: "USD", amountNanos: 100n },
        { id: "bt_2", customerId: "cus_batch", unit: "USD", amountNanos: 100n },
        { id: "bt_3", customerId: "cus_batch", unit: "USD", amountNanos: 100n },
        { id: "bt_4", customerId: "cus_none", unit: "USD", amountNanos: 1n },
        { id: "bt_5", customerId: "cus_batch", unit: "USD", amountNanos: 0n },
      ],
    });
    expect(r.results.map((x) => x.result)).toEqual([pb.AuthorizeResult.OK, pb.AuthorizeResult.OK, pb.AuthorizeResult.INSUFFICIENT, pb.AuthorizeResult.WALLET_NOT_FOUND, pb.AuthorizeResult.INVALID]);
  });
});
