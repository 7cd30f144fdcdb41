// Follow-ups of the credit-wallet review (2026-11-30): SetAutoTopUp keeps a disarmed wallet
// disarmed, captures and releases retry on a deadlock, GetBalance reads a bounded list of grants,
// CreateWebhookEndpoint refuses control characters. Then: a release or capture racing a real-time
// state load leaves the real-time balance right, an allowance is closed by its period end (rollover,
// renewal) and not by an expires_at, a Consume retried during its first attempt waits for it, and so
// does a hold retried by AuthorizeBatch (or a batch's hold retried by any route), holding up no
// unrelated hold and for at most GATE_WAIT_MS_MAX; two low-balance crossings of a disabled auto
// top-up in one millisecond give two alerts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import * as M from "./mapping.js";
import { BALANCE_GRANTS_MAX, GATE_WAIT_MS_MAX } from "./limits.js";
import type { DebitRequest, DebitResult, WalletRef } from "./realtime/types.js";
import { KEYS, code, interceptTransactionQueries, openWalletHarness, walletBackends, type WalletHarness } from "./test-support.js";

describe.each(walletBackends())("credit wallet review follow-ups ($name)", (b) => {
  let h: WalletHarness;
  beforeAll(async () => {
    h = await openWalletHarness(b);
  });
  afterAll(async () => {
    await h?.close();
  });

  const admin = () => h.client(KEYS.adminA);
  const ingest = () => h.client(KEYS.internal, "tnt_a");

  async function wallet(customerId: string, amountNanos: bigint) {
    const w = (await admin().createWallet({ customerId, unit: "USD" })).wallet!;
    await admin().grant({ id: `g_${customerId}`, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos });
    return w;
  }
  const topUps = async (customerId: string) => (await admin().listAlerts({ customerId, kind: pb.AlertKind.AUTO_TOP_UP })).alerts.length;
  const consume = (customerId: string, id: string, amountNanos: bigint) => ingest().consume({ items: [{ id, customerId, unit: "USD", amountNanos }] });
  /**
   * Pauses the first real-time debit of `amountNanos` (Consume's debit or Authorize's debitMany)
   * right after its reservation, before its commit: `reached` resolves then; `release()` lets it go
   * on and puts the store's methods back.
   */
  function pauseRealtimeDebitOf(amountNanos: bigint): { reached: Promise<void>; release: () => void } {
    const rt = h.realtime as unknown as {
      debit: (w: WalletRef, r: DebitRequest) => Promise<DebitResult>;
      debitMany: (w: WalletRef, r: DebitRequest[]) => Promise<DebitResult[]>;
    };
    const orig = { debit: rt.debit, debitMany: rt.debitMany };
    let reached!: () => void;
    const reachedP = new Promise<void>((r) => (reached = r));
    let proceed!: () => void;
    const proceedP = new Promise<void>((r) => (proceed = r));
    let paused = false;
    const hold = async <T>(out: T, hit: boolean): Promise<T> => {
      if (!paused && hit) {
        paused = true;
        reached();
        await proceedP;
      }
      return out;
    };
    rt.debit = async (w, r) => hold(await orig.debit.call(h.realtime, w, r), r.amountNanos === amountNanos);
    rt.debitMany = async (w, rs) => hold(await orig.debitMany.call(h.realtime, w, rs), rs.some((x) => x.amountNanos === amountNanos));
    return {
      reached: reachedP,
      release: () => {
        proceed();
        rt.debit = orig.debit;
        rt.debitMany = orig.debitMany;
      },
    };
  }

  // ------------------------------------------------------------------ 1: SetAutoTopUp and the armed flag

  it("does not top up a second time below the threshold after the auto top-up config is edited", async () => {
    const w = await wallet("cus_atu_edit", 1_000n);
    // A top-up of 50 does not bring the wallet back to the threshold: it stays disarmed after it.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_edit", "c_atu_edit_1", 600n); // 400 < 500: top-up 50 -> 450, disarmed
    expect(await topUps("cus_atu_edit")).toBe(1);
    // Editing the config (same threshold, another amount) while below it and disarmed keeps it disarmed.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 60n, cooldownMs: 0n } });
    await consume("cus_atu_edit", "c_atu_edit_2", 10n);
    expect(await topUps("cus_atu_edit")).toBe(1);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(440n);
    // Raising the threshold while below does not re-arm either.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 900n, amountNanos: 60n, cooldownMs: 0n } });
    await consume("cus_atu_edit", "c_atu_edit_3", 10n);
    expect(await topUps("cus_atu_edit")).toBe(1);
  });

  it("arms the auto top-up when it is enabled from disabled, even below the threshold", async () => {
    const w = await wallet("cus_atu_enable", 1_000n);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_enable", "c_atu_enable_1", 600n); // top-up 50 -> 450, disarmed
    expect(await topUps("cus_atu_enable")).toBe(1);
    // Disabling while below and disarmed keeps it disarmed; enabling again (from disabled) arms it.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: false, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_enable", "c_atu_enable_2", 10n);
    expect(await topUps("cus_atu_enable")).toBe(1);
    const on = await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    expect(on.wallet!.autoTopUp!.enabled).toBe(true);
    await consume("cus_atu_enable", "c_atu_enable_3", 10n); // 430 -> top-up 50 -> 480
    expect(await topUps("cus_atu_enable")).toBe(2);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(480n);
  });

  it("re-arms the auto top-up when the threshold is lowered to or below the available balance", async () => {
    const w = await wallet("cus_atu_lower", 1_000n);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_lower", "c_atu_lower_1", 600n); // top-up 50 -> 450, disarmed
    expect(await topUps("cus_atu_lower")).toBe(1);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 450n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_lower", "c_atu_lower_2", 100n); // 350 < 450: the next crossing tops up
    expect(await topUps("cus_atu_lower")).toBe(2);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(400n);
  });

  // ------------------------------------------------------------------ 3: GetBalance over many grants

  it("sums every grant of a wallet with more grants than GetBalance lists, reading a bounded list of them", async () => {
    const n = BALANCE_GRANTS_MAX + 20;
    const w = (await admin().createWallet({ customerId: "cus_many_grants", unit: "USD" })).wallet!;
    // Many closed grants (as years of renewals and rollovers leave), written directly: the sums, not the ledger, are under test.
    await h.db.query(
      `INSERT INTO grants (tenant, id, wallet_id, kind, amount_nanos, burned_nanos, held_nanos, expired_nanos, priority, effective_at, expires_at, created_at,
         cost_basis, cost_basis_currency, scope_charge_ids, scope_models, rollover, period_end, renew, root_id, period_index, state, invoice_id, description, request_hash)
       SELECT 'tnt_a', 'g_old_' || lpad(i::text, 5, '0'), $1, 'promotional', 100, 30, CASE WHEN i = 1 THEN 5 ELSE 0 END, CASE WHEN i = 1 THEN 65 ELSE 70 END, 0,
         '2025-01-01', '2025-06-01', '2025-01-01'::timestamptz + make_interval(secs => i), '0', '', '{}', '{}', NULL, NULL, false, 'g_old_' || i, 0, 'expired', '', '', ''
       FROM generate_series(1, $2::int) AS i`,
      [w.id, n],
    );
    // Active grants: two spendable (one with a hold), one effective later (in the balance, not available).
    await admin().grant({ id: "g_many_a", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n, priority: 5 });
    await admin().grant({ id: "g_many_b", walletId: w.id, kind: pb.GrantKind.PROMOTIONAL, amountNanos: 200n, priority: 1 });
    await admin().grant({ id: "g_many_later", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 300n, effectiveAt: { seconds: BigInt(Math.floor(h.clock.now().getTime() / 1000) + 86_400), nanos: 0 } });
    await ingest().consume({ items: [{ id: "c_many", customerId: "cus_many_grants", unit: "USD", amountNanos: 250n }] }); // b 200, a 50
    await ingest().authorize({ id: "h_many", customerId: "cus_many_grants", unit: "USD", amountNanos: 100n, ttlMs: 600_000n }); // a 100

    // Count the grant rows GetBalance reads.
    type QueryFn = (sql: string, params?: unknown[]) => Promise<{ rows: unknown[]; rowCount: number }>;
    const db = h.db as unknown as { query: QueryFn };
    const orig = db.query;
    let grantRowsRead = 0;
    db.query = async (sql: string, params?: unknown[]) => {
      const r = await orig.call(h.db, sql, params);
      if (/\bFROM grants\b/.test(sql)) grantRowsRead += r.rows.length;
      return r;
    };
    let bal: pb.GetBalanceResponse;
    try {
      bal = await admin().getBalance({ walletId: w.id });
    } finally {
      db.query = orig;
    }
    expect(grantRowsRead).toBeLessThanOrEqual(BALANCE_GRANTS_MAX + 1);
    // Closed grants: only the one still holding 5 counts (100 - 30 - 65 = 5, held); the others are 0.
    // Active: a 1000 - 50 = 950 (100 held), b 0, later 300. Balance 5 + 950 + 300; held 5 + 100.
    expect(bal.balanceNanos).toBe(1_255n);
    expect(bal.heldNanos).toBe(105n);
    expect(bal.availableNanos).toBe(850n);
    expect(bal.overdraftNanos).toBe(0n);
    expect(bal.grants.length).toBe(BALANCE_GRANTS_MAX);
    // Active grants first, in burn-down order, then closed ones.
    expect(bal.grants.slice(0, 3).map((g) => g.grantId)).toEqual(["g_many_later", "g_many_b", "g_many_a"]);
    expect(bal.grants[3]!.grantId).toBe("g_old_00001");
  });

  // ------------------------------------------------------------------ 5: webhook endpoint free text

  it("refuses control characters in CreateWebhookEndpoint's free text with InvalidArgument naming the field, writing nothing", async () => {
    const desc = await code(admin().createWebhookEndpoint({ id: "ep_ctl", url: "https://hooks.example.com/x", description: "ops\u0000team" }));
    expect(desc.code).toBe(Code.InvalidArgument);
    expect(desc.message).toMatch(/^description: /);
    const nl = await code(admin().createWebhookEndpoint({ id: "ep_ctl", url: "https://hooks.example.com/x", description: "ops\nteam" }));
    expect(nl.code).toBe(Code.InvalidArgument);
    expect(nl.message).toMatch(/^description: /);
    const url = await code(admin().createWebhookEndpoint({ id: "ep_ctl", url: "https://hooks.example.com/a\u0000b" }));
    expect(url.code).toBe(Code.InvalidArgument);
    expect(url.message).toMatch(/^url: /);
    const dis = await code(admin().disableWebhookEndpoint({ id: "ep\u0000ctl" }));
    expect(dis.code).toBe(Code.InvalidArgument);
    expect(dis.message).toMatch(/^id: /);
    const del = await code(admin().listWebhookDeliveries({ endpointId: "ep\u0000ctl" }));
    expect(del.code).toBe(Code.InvalidArgument);
    expect(del.message).toMatch(/^endpoint_id: /);
    const ev = await code(admin().listWebhookDeliveries({ eventId: "ev\u0000" }));
    expect(ev.code).toBe(Code.InvalidArgument);
    expect(ev.message).toMatch(/^event_id: /);
    expect((await admin().listWebhookEndpoints({})).endpoints.some((e) => e.id === "ep_ctl")).toBe(false);
    // Printable text (non-ASCII included) is still fine.
    const ok = await admin().createWebhookEndpoint({ id: "ep_ctl", url: "https://hooks.example.com/x", description: "équipe ops — finance" });
    expect(ok.endpoint!.description).toBe("équipe ops — finance");
  });

  // ------------------------------------------------------------------ 6: a credit racing a real-time state load

  for (const op of ["release", "capture"] as const) {
    it(`leaves the real-time balance no lower than PostgreSQL's when a ${op} commits while another call loads the wallet's state`, async () => {
      const cus = `cus_sl_${op}`;
      const w = await wallet(cus, 100_000n);
      await ingest().authorize({ id: `h_sl_${op}`, customerId: cus, unit: "USD", amountNanos: 60_000n });
      await admin().grant({ id: `g_sl2_${op}`, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1n }); // drops the real-time state
      // Right after the release / capture read the generation (none: null) and before its commit,
      // another Authorize loads the state from PostgreSQL, still counting the hold.
      const rt = h.realtime as unknown as { gen: (w: WalletRef) => Promise<string | null> };
      const orig = rt.gen;
      let once = true;
      rt.gen = async (r: WalletRef) => {
        const g = await orig.call(h.realtime, r);
        if (once && r.walletId === w.id) {
          once = false;
          expect((await ingest().authorize({ id: `h_sl_other_${op}`, customerId: cus, unit: "USD", amountNanos: 1n })).hold?.id).toBe(`h_sl_other_${op}`);
        }
        return g;
      };
      try {
        if (op === "release") await ingest().release({ holdId: `h_sl_${op}` });
        else await ingest().capture({ holdId: `h_sl_${op}`, amountNanos: 10_000n });
      } finally {
        rt.gen = orig;
      }
      expect(once).toBe(false);
      const bal = await admin().getBalance({ walletId: w.id });
      expect(bal.availableNanos).toBe(op === "release" ? 100_000n : 90_000n);
      // The state is dropped (rebuilt from PostgreSQL on next use) or right; never lower (before: 40,000).
      const st = await h.realtime.read({ tenant: "tnt_a", walletId: w.id });
      if (st) expect([...st.availableByGrant.values()].reduce((s, x) => s + x, 0n) - st.overdraftUsedNanos).toBe(bal.availableNanos);
      // All that PostgreSQL says is available can be held (before: refused, 40,000 available).
      const all = await ingest().authorize({ id: `h_sl_all_${op}`, customerId: cus, unit: "USD", amountNanos: bal.availableNanos });
      expect(all.hold?.amountNanos).toBe(bal.availableNanos);
    });
  }

  // ------------------------------------------------------------------ 7: a Consume retried while its first attempt is in flight

  it("answers a Consume retried during its first attempt as its replay, without reserving again, so another item is not refused", async () => {
    const cus = "cus_rr";
    await wallet(cus, 150n);
    await consume(cus, "c_rr_warm", 1n); // real-time state loaded: 149 left
    // The first attempt pauses right after its real-time reservation (before its commit).
    const pause = pauseRealtimeDebitOf(100n);
    const item = { id: "c_rr_first", customerId: cus, unit: "USD", amountNanos: 100n, eventId: "ev_rr_1" };
    let first: Promise<pb.ConsumeResponse>;
    let retry: Promise<pb.ConsumeResponse>;
    let other: pb.ConsumeResponse;
    try {
      first = ingest().consume({ items: [item] });
      await pause.reached; // 100 reserved, not committed
      retry = ingest().consume({ items: [item] }); // the client's retry: same id, same content
      await new Promise((r) => setTimeout(r, 200)); // (before: it reserved the 49 left and committed PARTIAL)
      other = await ingest().consume({ items: [{ id: "c_rr_other", customerId: cus, unit: "USD", amountNanos: 49n, eventId: "ev_rr_2" }] });
    } finally {
      pause.release();
    }
    const [f, rr] = await Promise.all([first, retry]);
    expect([other.results[0]!.result, other.results[0]!.consumedNanos, other.results[0]!.shortfallNanos]).toEqual([pb.ConsumeResult.OK, 49n, 0n]);
    expect([f.results[0]!.result, f.results[0]!.consumedNanos, f.results[0]!.replayed]).toEqual([pb.ConsumeResult.OK, 100n, false]);
    expect([rr.results[0]!.result, rr.results[0]!.consumedNanos, rr.results[0]!.replayed]).toEqual([pb.ConsumeResult.OK, 100n, true]);
    const w = (await admin().getBalance({ customerId: cus, unit: "USD" }));
    expect([w.balanceNanos, w.availableNanos]).toEqual([0n, 0n]);
  });

  // ------------------------------------------------------------------ 9: an AuthorizeBatch retried while its first attempt is in flight

  // The first attempt of hold h (AuthorizeBatch, or Authorize) pauses right after its real-time
  // reservation; its retry (same id, same content) comes meanwhile by another route.
  for (const [firstBy, retryBy] of [["batch", "batch"], ["batch", "stream"], ["authorize", "batch"]] as const) {
    it(`answers a hold retried by ${retryBy} during its first attempt by ${firstBy} as its replay, without reserving again, so another hold is not refused`, async () => {
      const cus = `cus_ar_${firstBy}_${retryBy}`;
      await wallet(cus, 250n);
      await ingest().authorize({ id: `h_ar_warm_${firstBy}_${retryBy}`, customerId: cus, unit: "USD", amountNanos: 1n }); // state loaded: 249 left
      const pause = pauseRealtimeDebitOf(100n);
      const item = { id: `h_ar_${firstBy}_${retryBy}`, customerId: cus, unit: "USD", amountNanos: 100n, ttlMs: 60_000n };
      const send = async (by: "batch" | "stream" | "authorize"): Promise<pb.AuthorizeItemResult> => {
        if (by === "batch") return (await ingest().authorizeBatch({ items: [item] })).results[0]!;
        if (by === "authorize") {
          const r = await ingest().authorize(item);
          return create(pb.AuthorizeItemResultSchema, { id: item.id, result: pb.AuthorizeResult.OK, hold: r.hold, availableNanos: r.availableNanos });
        }
        async function* one() {
          yield { item };
        }
        for await (const r of ingest().authorizeStream(one())) return r.result!;
        throw new Error("no stream answer");
      };
      let first: Promise<pb.AuthorizeItemResult>;
      let retry: Promise<pb.AuthorizeItemResult>;
      let other: pb.AuthorizeItemResult;
      try {
        first = send(firstBy);
        await pause.reached; // 100 reserved, not committed
        retry = send(retryBy);
        await new Promise((r) => setTimeout(r, 200)); // (before: it reserved another 100, leaving 49)
        // By AuthorizeBatch: a unary Authorize of the wallet would queue behind the paused group.
        other = (await ingest().authorizeBatch({ items: [{ id: `h_ar_other_${firstBy}_${retryBy}`, customerId: cus, unit: "USD", amountNanos: 120n, ttlMs: 60_000n }] })).results[0]!;
      } finally {
        pause.release();
      }
      const [f, rr] = await Promise.all([first, retry]);
      expect([other.result, other.hold?.amountNanos]).toEqual([pb.AuthorizeResult.OK, 120n]);
      expect([f.result, f.hold?.id, f.hold?.amountNanos]).toEqual([pb.AuthorizeResult.OK, item.id, 100n]);
      expect([rr.result, rr.hold?.id, rr.hold?.amountNanos, rr.hold?.createdAt]).toEqual([pb.AuthorizeResult.OK, item.id, 100n, f.hold?.createdAt]);
      const w = await admin().getBalance({ customerId: cus, unit: "USD" });
      expect([w.balanceNanos, w.heldNanos, w.availableNanos]).toEqual([250n, 221n, 29n]);
    });
  }

  // ------------------------------------------------------------------ 9b: a retry waiting for its first attempt holds up nothing else, and not forever

  it("lets unrelated holds through while a retried hold waits for its first attempt, and answers the retry Unavailable after GATE_WAIT_MS_MAX", async () => {
    // (Before, the keyed gate took a whole group: an unrelated hold in the retry's group, or in the
    // next unary group, waited for the retry's first attempt, and forever if that never ended.)
    await wallet("cus_hol_a", 1_000n);
    await wallet("cus_hol_b", 1_000n);
    await ingest().authorize({ id: "h_hol_warm_a", customerId: "cus_hol_a", unit: "USD", amountNanos: 1n });
    await ingest().authorize({ id: "h_hol_warm_b", customerId: "cus_hol_b", unit: "USD", amountNanos: 1n });
    const pause = pauseRealtimeDebitOf(100n);
    const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<"late">((r) => setTimeout(() => r("late"), ms))]);
    const item = { id: "h_hol_x", customerId: "cus_hol_a", unit: "USD", amountNanos: 100n, ttlMs: 60_000n };
    const input = (id: string, customerId: string, amountNanos: bigint) => ({ id, customerId, unit: "USD", amountNanos, ttlMs: 60_000, chargeId: "", model: "" });
    let first: Promise<pb.AuthorizeBatchResponse>;
    let retry: Promise<{ code: Code; message: string }>;
    let group: Promise<Awaited<ReturnType<typeof h.wallet.engine.authorizeMany>>>;
    const t0 = Date.now();
    try {
      first = ingest().authorizeBatch({ items: [item] }); // first attempt: paused after its reservation
      await pause.reached;
      retry = code(ingest().authorize(item)); // the client's retry by unary Authorize waits for it
      await new Promise((r) => setTimeout(r, 50));
      // An unrelated unary Authorize is answered at once (before: it queued behind the waiting group).
      const other = await within(ingest().authorize({ id: "h_hol_other", customerId: "cus_hol_b", unit: "USD", amountNanos: 5n, ttlMs: 60_000n }), 1_500);
      expect(other === "late" ? "late" : other.hold?.amountNanos).toBe(5n);
      // One group holding the retry and an unrelated hold: the unrelated one commits at once.
      group = h.wallet.engine.authorizeMany("tnt_a", [input("h_hol_x", "cus_hol_a", 100n), input("h_hol_same_group", "cus_hol_b", 7n)]);
      let held = 0n;
      for (let i = 0; i < 30 && held !== 13n; i++) {
        await new Promise((r) => setTimeout(r, 50));
        held = (await admin().getBalance({ customerId: "cus_hol_b", unit: "USD" })).heldNanos;
      }
      expect(held).toBe(13n); // 1 + 5 + 7
      // The first attempt never ends: the retry is answered Unavailable after GATE_WAIT_MS_MAX, not never.
      const r = await within(retry, GATE_WAIT_MS_MAX + 3_000);
      expect(r === "late" ? "late" : [r.code, r.message]).toEqual([Code.Unavailable, expect.stringContaining("first attempt is still in flight")]);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(GATE_WAIT_MS_MAX);
      const g = await within(group, 3_000);
      expect(g === "late" ? "late" : g.map((o) => [o.id, o.result, o.unavailable !== undefined])).toEqual([
        ["h_hol_x", "invalid", true],
        ["h_hol_same_group", "ok", false],
      ]);
    } finally {
      pause.release();
    }
    expect((await first).results[0]!.result).toBe(pb.AuthorizeResult.OK);
    // Retried again once the first attempt is done: its replay, nothing reserved twice.
    const again = await ingest().authorize(item);
    expect(again.hold?.amountNanos).toBe(100n);
    const a = await admin().getBalance({ customerId: "cus_hol_a", unit: "USD" });
    expect([a.heldNanos, a.availableNanos]).toEqual([101n, 899n]);
  });

  // ------------------------------------------------------------------ 10: two low-balance crossings in one millisecond

  it("records one low-balance alert per crossing of a disabled auto top-up, even two crossings in the same millisecond", async () => {
    const cus = "cus_low_ms";
    const w = await wallet(cus, 1_000n);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: false, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    const at = h.clock.now().getTime(); // the test clock stands still: both crossings happen at this millisecond
    await consume(cus, "c_low_ms_1", 600n); // 400 < 500: crossing 1
    await admin().grant({ id: "g_low_ms_2", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n }); // 1,400: re-armed
    await consume(cus, "c_low_ms_2", 1_000n); // 400 < 500: crossing 2
    expect(h.clock.now().getTime()).toBe(at);
    const alerts = (await admin().listAlerts({ customerId: cus, kind: pb.AlertKind.LOW_BALANCE })).alerts;
    // Before: both were alr_low_<wallet>_<ms>, and the second was dropped by ON CONFLICT DO NOTHING.
    expect(alerts.map((a) => [a.id, a.amountNanos])).toEqual([[`alr_lowb_${w.id}_1`, 400n], [`alr_lowb_${w.id}_2`, 400n]]);
    // A replay of the call that crossed does not alert again.
    await consume(cus, "c_low_ms_2", 1_000n);
    expect((await admin().listAlerts({ customerId: cus, kind: pb.AlertKind.LOW_BALANCE })).alerts).toHaveLength(2);
  });

  // ------------------------------------------------------------------ 8: an allowance ends at its period end

  it("refuses expires_at on an ALLOWANCE grant with InvalidArgument naming the field, writing nothing", async () => {
    const w = (await admin().createWallet({ customerId: "cus_al_exp", unit: "USD" })).wallet!;
    const end = new Date(h.clock.now().getTime() + 3_600_000);
    const e = await code(admin().grant({ id: "al_exp", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1_000n, periodEnd: timestampFromDate(end), expiresAt: timestampFromDate(end), renew: true }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toMatch(/^expires_at: /);
    expect((await admin().getBalance({ walletId: w.id })).grants).toEqual([]);
  });

  // Last in this block: it moves the clock past the period end.
  it("rolls over and renews a stored allowance whose expires_at is its period end when RunExpiry runs before RunRollover (the background loop's order)", async () => {
    const w = (await admin().createWallet({ customerId: "cus_al_end", unit: "USD" })).wallet!;
    const end = new Date(h.clock.now().getTime() + 3_600_000);
    await admin().grant({ id: "al_end", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1_000n, periodEnd: timestampFromDate(end), renew: true, rollover: { mode: pb.RolloverMode.ALL } });
    // A row written before Grant refused expires_at on allowances ("expires at the end of the month").
    await h.db.query(`UPDATE grants SET expires_at = period_end WHERE tenant = 'tnt_a' AND id = 'al_end'`);
    await consume("cus_al_end", "c_al_end", 600n);
    h.clock.advance(3_600_000 + 1_000);
    const ex = await admin().runExpiry({ walletId: w.id });
    expect(ex.grantsExpired).toBe(0);
    const ro = await admin().runRollover({ walletId: w.id });
    expect(ro.outcomes.map((o) => [o.grantId, o.rolledOverNanos, o.expiredNanos, o.renewedGrantId !== ""])).toEqual([["al_end", 400n, 0n, true]]);
    // 1,000 a period, 600 used, full rollover: 1,400 in the next period (before: 0, all 400 to breakage, not renewed).
    const bal = await admin().getBalance({ walletId: w.id });
    expect(bal.balanceNanos).toBe(1_400n);
    expect(bal.grants.find((g) => g.grantId === "al_end")!.state).toBe(pb.GrantState.ROLLED_OVER);
  });

  it("answers a replay of an ALLOWANCE grant stored with expires_at before Grant refused it with the first result, writing nothing", async () => {
    const w = (await admin().createWallet({ customerId: "cus_al_old", unit: "USD" })).wallet!;
    const end = new Date(h.clock.now().getTime() + 3_600_000);
    const req = { id: "al_old", walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1_000n, periodEnd: timestampFromDate(end), expiresAt: timestampFromDate(end), renew: true, rollover: { mode: pb.RolloverMode.ALL } };
    // Stored the way the code before the refusal stored it: the same engine behind the mapping without the check.
    const input = { ...M.grantInputOf(create(pb.GrantRequestSchema, { ...req, expiresAt: undefined }), h.clock.now(), "USD", "prepaid"), expiresAt: end };
    const first = await h.wallet.engine.grant("tnt_a", input);
    expect(first.grant.expiresAt?.getTime()).toBe(end.getTime());
    const writes = async () => (await h.db.query<{ n: string }>(`SELECT (SELECT count(*) FROM grants WHERE tenant = 'tnt_a') + (SELECT count(*) FROM movements WHERE tenant = 'tnt_a') + (SELECT count(*) FROM ledger_outbox WHERE tenant = 'tnt_a') AS n`)).rows[0]!.n;
    const before = await writes();
    // The replay (same id, same content) is the first result (before: InvalidArgument naming expires_at).
    const again = await admin().grant(req);
    expect(again.grant!.grantId).toBe("al_old");
    expect(again.grant!.amountNanos).toBe(1_000n);
    expect(again.ledgerTransferId).toBe(first.transferId);
    expect(await writes()).toBe(before);
    // Other content under that id, or a new allowance with expires_at, is still refused.
    for (const other of [{ ...req, amountNanos: 2_000n }, { ...req, id: "al_old_2" }]) {
      const e = await code(admin().grant(other));
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.message).toMatch(/^expires_at: /);
    }
    expect(await writes()).toBe(before);
  });

  it("leaves a stored allowance whose expires_at is before its period end to RunExpiry after its grace, in either order with RunRollover: breakage once, no rollover, no renewal", async () => {
    const t0 = h.clock.now().getTime();
    const end = new Date(t0 + 3_600_000);
    const ws: Record<string, string> = {};
    for (const o of ["xr", "rx"]) {
      const w = (await admin().createWallet({ customerId: `cus_al_gr_${o}`, unit: "USD" })).wallet!;
      ws[o] = w.id;
      await admin().grant({ id: `al_gr_${o}`, walletId: w.id, kind: pb.GrantKind.ALLOWANCE, amountNanos: 1_000n, periodEnd: timestampFromDate(end), renew: true, rollover: { mode: pb.RolloverMode.ALL } });
      // Stored before the refusal: expires 10 minutes before its period end, with a grace of an hour,
      // so its breakage (expires_at + grace) falls 50 minutes after the period end.
      await h.db.query(`UPDATE grants SET expires_at = period_end - interval '10 minutes', expiry_grace_ms = 3600000 WHERE tenant = 'tnt_a' AND id = $1`, [`al_gr_${o}`]);
      await consume(`cus_al_gr_${o}`, `c_al_gr_${o}`, 600n);
    }
    const run = async (o: string) => {
      const walletId = ws[o]!;
      if (o === "xr") {
        const ex = await admin().runExpiry({ walletId });
        const ro = await admin().runRollover({ walletId });
        return { expired: ex.grantsExpired, breakage: ex.breakageNanos, rolled: ro.outcomes.length };
      }
      const ro = await admin().runRollover({ walletId });
      const ex = await admin().runExpiry({ walletId });
      return { expired: ex.grantsExpired, breakage: ex.breakageNanos, rolled: ro.outcomes.length };
    };
    // Past the period end, inside the grace: nobody closes it (it stopped burning at expires_at).
    h.clock.advance(3_600_000 + 1_000);
    for (const o of ["xr", "rx"]) expect(await run(o)).toEqual({ expired: 0, breakage: 0n, rolled: 0 });
    // Past expires_at + grace: RunExpiry moves the remainder to breakage, RunRollover leaves it.
    h.clock.advance(50 * 60_000);
    for (const o of ["xr", "rx"]) {
      expect(await run(o)).toEqual({ expired: 1, breakage: 400n, rolled: 0 });
      const bal = await admin().getBalance({ walletId: ws[o]! });
      expect(bal.balanceNanos).toBe(0n);
      expect(bal.grants.map((g) => [g.grantId, g.state, g.expiredNanos])).toEqual([[`al_gr_${o}`, pb.GrantState.EXPIRED, 400n]]);
    }
  });
});

// ------------------------------------------------------------------ 2: deadlocks in capture / release group commits

const pg = walletBackends().filter((b) => b.name === "postgres+redis");

describe.each(pg)("capture and release retry on a deadlock ($name)", (b) => {
  let h: WalletHarness;
  /** Set by a test: the next capture/release transaction fails its hold lock with a real 40P01 this many times. */
  let deadlocks = 0;
  let injected = 0;

  beforeAll(async () => {
    h = await openWalletHarness(b);
    interceptTransactionQueries(h.db, async (t, sql, params) => {
      if (deadlocks > 0 && sql.startsWith("SELECT id FROM holds")) {
        deadlocks--;
        injected++;
        // A real PostgreSQL error with SQLSTATE 40P01, through the driver like a detected deadlock.
        await t.query(`DO $$ BEGIN RAISE EXCEPTION 'deadlock detected (injected by the test)' USING ERRCODE = '40P01'; END $$`);
      }
      return t.query(sql, params);
    });
  });
  afterAll(async () => {
    await h?.close();
  });
  const admin = () => h.client(KEYS.adminA);
  const ingest = () => h.client(KEYS.internal, "tnt_a");

  it("captures and releases despite a deadlock on the first attempt of their group commit", async () => {
    const w = (await admin().createWallet({ customerId: "cus_dl", unit: "USD" })).wallet!;
    await admin().grant({ id: "g_dl", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
    await ingest().authorize({ id: "h_dl_c", customerId: "cus_dl", unit: "USD", amountNanos: 300n, ttlMs: 600_000n });
    await ingest().authorize({ id: "h_dl_r", customerId: "cus_dl", unit: "USD", amountNanos: 200n, ttlMs: 600_000n });

    deadlocks = 1;
    injected = 0;
    const cap = await ingest().capture({ holdId: "h_dl_c", amountNanos: 250n });
    expect(injected).toBe(1);
    expect(cap.capturedNanos).toBe(250n);
    expect(cap.hold!.state).toBe(pb.HoldState.CAPTURED);

    deadlocks = 1;
    injected = 0;
    const rel = await ingest().release({ holdId: "h_dl_r" });
    expect(injected).toBe(1);
    expect(rel.releasedNanos).toBe(200n);

    deadlocks = 0;
    const bal = await admin().getBalance({ walletId: w.id });
    expect(bal.balanceNanos).toBe(750n);
    expect(bal.heldNanos).toBe(0n);
    await h.wallet.outbox.flush();
    expect((await h.ledgerClient("tnt_a").verify({})).violations).toEqual([]);
  });
});
