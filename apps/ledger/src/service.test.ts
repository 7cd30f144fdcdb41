import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  CreateAccountResult,
  CreateTransferResult,
  TransferState,
  type NewTransferSchema,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CREATE_ACCOUNT_RESULTS, CREATE_TRANSFER_RESULTS } from "./domain/results.js";
import { TRANSFERS_PER_REQUEST_MAX } from "./limits.js";
import { accountResultToPb, timestampToUs, transferResultToPb, usToTimestamp } from "./mapping.js";
import { createClient } from "@connectrpc/connect";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { closeClientSessions, createApiKeyAuthenticator, createClientTransport, silentLogger, startServer } from "@nanobill/service-kit";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LEDGER_SERVER_LIMITS } from "./server.js";
import { KEYS, openLedgerHarness, type LedgerHarness } from "./test-support.js";

type Tx = MessageInitShape<typeof NewTransferSchema> & { id: string };
const tx = (t: Tx): Tx => ({ unit: "USD", code: 20, amountNanos: 10n, debitAccountId: "acct_cash", creditAccountId: "acct_wallet", ...t });

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (e) {
    const ce = ConnectError.from(e);
    return { code: ce.code, message: ce.rawMessage };
  }
  throw new Error("expected the call to fail");
}

describe("mapping", () => {
  it("maps every domain result to the proto value of the same name; values are never renumbered", () => {
    CREATE_TRANSFER_RESULTS.forEach((r) => expect(CreateTransferResult[transferResultToPb(r)]).toBe(r.toUpperCase()));
    CREATE_ACCOUNT_RESULTS.forEach((r) => expect(CreateAccountResult[accountResultToPb(r)]).toBe(r.toUpperCase()));
    // The first 52 / 13 values were numbered in precedence order; later ones are appended.
    CREATE_TRANSFER_RESULTS.filter((r) => transferResultToPb(r) <= 52).forEach((r, i) => expect(transferResultToPb(r)).toBe(i + 1));
    // Accounts' EXISTS* (9-13) moved ahead of the item checks (5-8) with TigerBeetle 0.16.4: the
    // numbers stay, the order is results.ts's (and each value's comment in the proto).
    expect(CREATE_ACCOUNT_RESULTS.filter((r) => accountResultToPb(r) <= 13).map(accountResultToPb)).toEqual([1, 2, 3, 4, 9, 10, 11, 12, 13, 5, 6, 7, 8]);
    expect(transferResultToPb("id_already_failed")).toBe(CreateTransferResult.ID_ALREADY_FAILED);
    expect(CreateTransferResult.ID_ALREADY_FAILED).toBe(53);
    expect(CreateTransferResult.CREDIT_ACCOUNT_ALREADY_CLOSED).toBe(65);
    expect(CreateAccountResult.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS).toBe(19);
    expect(Object.keys(CreateTransferResult).filter((k) => isNaN(Number(k))).length).toBe(CREATE_TRANSFER_RESULTS.length + 1);
    expect(Object.keys(CreateAccountResult).filter((k) => isNaN(Number(k))).length).toBe(CREATE_ACCOUNT_RESULTS.length + 1);
  });
  it("round-trips microsecond timestamps, before and after the epoch", () => {
    for (const us of [0n, 1n, 1_795_921_498_349_001n, -1n, -1_500_000n]) expect(timestampToUs(usToTimestamp(us))).toBe(us);
  });
});

const [pglite] = testBackends();

describe("LedgerService through createRouterTransport", () => {
  let h: LedgerHarness;
  beforeAll(async () => {
    h = await openLedgerHarness(pglite!);
    const res = await h.client().createAccounts({
      accounts: [
        { id: "acct_cash", unit: "USD", code: 1000 },
        { id: "acct_wallet", unit: "USD", code: 2100, flags: { debitsMustNotExceedCredits: true, history: true }, metadata: { customer_id: "cus_1" } },
        { id: "acct_revenue", unit: "USD", code: 4000 },
        { id: "acct_eur", unit: "EUR", code: 4000 },
      ],
    });
    expect(res.results.map((r) => r.result)).toEqual(Array(4).fill(CreateAccountResult.OK));
  });
  afterAll(async () => {
    const report = await h.client().verify({});
    expect(report.violations).toEqual([]);
    expect(report.ok).toBe(true);
    await h.close();
  });

  it("creates transfers, returning one result per item with amount and time, and moves balances", async () => {
    const c = h.client();
    const res = await c.createTransfers({
      transfers: [
        tx({ id: "xfer_fund", amountNanos: 1_000_000n, code: 10 }),
        tx({ id: "xfer_use", debitAccountId: "acct_wallet", creditAccountId: "acct_revenue", amountNanos: 8_755_000n, references: { event_id: "evt_1" } }),
      ],
    });
    expect(res.results.map((r) => [r.id, r.result])).toEqual([
      ["xfer_fund", CreateTransferResult.OK],
      ["xfer_use", CreateTransferResult.EXCEEDS_CREDITS],
    ]);
    expect(res.results[0]!.amountNanos).toBe(1_000_000n);
    expect(res.results[0]!.createTime).toBeDefined();
    expect(res.results[1]!.createTime).toBeUndefined();
    const { accounts } = await c.lookupAccounts({ ids: ["acct_wallet", "acct_missing", "acct_cash"] });
    expect(accounts.map((a) => [a.id, a.creditsPostedNanos, a.debitsPostedNanos])).toEqual([
      ["acct_wallet", 1_000_000n, 0n],
      ["acct_cash", 0n, 1_000_000n],
    ]);
    expect(accounts[0]!.metadata).toEqual({ customer_id: "cus_1" });
    expect(accounts[0]!.flags?.debitsMustNotExceedCredits).toBe(true);
  });

  it("holds, posts part of a hold, and reports states on LookupTransfers", async () => {
    const c = h.client();
    const res = await c.createTransfers({
      transfers: [
        tx({ id: "xfer_hold", debitAccountId: "acct_wallet", creditAccountId: "acct_revenue", amountNanos: 500n, timeoutSeconds: 30, flags: { pending: true }, code: 21 }),
        { id: "xfer_capture", pendingId: "xfer_hold", amountNanos: 300n, flags: { postPendingTransfer: true } },
        { id: "xfer_capture_again", pendingId: "xfer_hold", flags: { voidPendingTransfer: true } },
      ],
    });
    expect(res.results.map((r) => r.result)).toEqual([CreateTransferResult.OK, CreateTransferResult.OK, CreateTransferResult.PENDING_TRANSFER_ALREADY_POSTED]);
    const { transfers } = await c.lookupTransfers({ ids: ["xfer_hold", "xfer_capture"] });
    expect(transfers.map((t) => [t.id, t.state, t.amountNanos])).toEqual([
      ["xfer_hold", TransferState.PENDING_POSTED, 500n],
      ["xfer_capture", TransferState.POSTED, 300n],
    ]);
    expect(transfers[0]!.expireTime).toBeDefined();
    expect(transfers[0]!.resolveTime).toBeDefined();
    expect(transfers[1]!.debitAccountId).toBe("acct_wallet");
    expect(transfers[1]!.code).toBe(21);
  });

  it("answers a retried batch with EXISTS per item and changes nothing", async () => {
    const c = h.client();
    const batch = [
      tx({ id: "xfer_r1", amountNanos: 7n, flags: { linked: true } }),
      tx({ id: "xfer_r2", debitAccountId: "acct_wallet", creditAccountId: "acct_revenue", amountNanos: 7n }),
    ];
    const first = await c.createTransfers({ transfers: batch });
    expect(first.results.map((r) => r.result)).toEqual([CreateTransferResult.OK, CreateTransferResult.OK]);
    const before = await c.lookupAccounts({ ids: ["acct_wallet", "acct_cash", "acct_revenue"] });
    const again = await c.createTransfers({ transfers: batch });
    expect(again.results.map((r) => r.result)).toEqual([CreateTransferResult.EXISTS, CreateTransferResult.EXISTS]);
    expect(again.results.map((r) => r.createTime)).toEqual(first.results.map((r) => r.createTime));
    expect((await c.lookupAccounts({ ids: ["acct_wallet", "acct_cash", "acct_revenue"] })).accounts).toEqual(before.accounts);
  });

  it("gives each bad item its documented result and writes nothing for it", async () => {
    const c = h.client();
    const before = await c.lookupAccounts({ ids: ["acct_wallet", "acct_cash", "acct_revenue", "acct_eur"] });
    const res = await c.createTransfers({
      transfers: [
        tx({ id: "xfer_bad_zero", amountNanos: 0n }),
        tx({ id: "xfer_bad_neg", amountNanos: -1n }),
        tx({ id: "xfer_bad_same", creditAccountId: "acct_cash" }),
        tx({ id: "xfer_bad_unit", creditAccountId: "acct_eur" }),
        tx({ id: "xfer_bad_unit2", unit: "EUR" }),
        tx({ id: "xfer_bad_unknown", debitAccountId: "acct_nope" }),
        tx({ id: "xfer_bad_flags", flags: { pending: true, voidPendingTransfer: true } }),
        tx({ id: "xfer_fund", amountNanos: 999n, code: 10 }),
        tx({ id: "xfer bad id" }),
        tx({ id: "xfer_bad_big", amountNanos: 10n ** 18n + 1n }),
        tx({ id: "xfer_bad_timeout", timeoutSeconds: 5 }),
        tx({ id: "xfer_bad_code", code: 0 }),
      ],
    });
    expect(res.results.map((r) => CreateTransferResult[r.result])).toEqual([
      "AMOUNT_MUST_NOT_BE_ZERO",
      "AMOUNT_MUST_NOT_BE_NEGATIVE",
      "ACCOUNTS_MUST_BE_DIFFERENT",
      "ACCOUNTS_MUST_HAVE_THE_SAME_UNIT",
      "TRANSFER_MUST_HAVE_THE_SAME_UNIT_AS_ACCOUNTS",
      "DEBIT_ACCOUNT_NOT_FOUND",
      "FLAGS_ARE_MUTUALLY_EXCLUSIVE",
      "EXISTS_WITH_DIFFERENT_AMOUNT",
      "ID_INVALID",
      "AMOUNT_EXCEEDS_MAX",
      "TIMEOUT_RESERVED_FOR_PENDING_TRANSFER",
      "CODE_MUST_NOT_BE_ZERO",
    ]);
    expect((await c.lookupTransfers({ ids: res.results.map((r) => r.id).filter((id) => id !== "xfer_fund") })).transfers).toEqual([]);
    expect((await c.lookupAccounts({ ids: ["acct_wallet", "acct_cash", "acct_revenue", "acct_eur"] })).accounts).toEqual(before.accounts);
  });

  it("refuses an oversize or empty batch as InvalidArgument naming the field, writing nothing", async () => {
    const c = h.client();
    const many = Array.from({ length: TRANSFERS_PER_REQUEST_MAX + 1 }, (_, i) => tx({ id: `xfer_many_${i}`, amountNanos: 1n }));
    const e = await codeOf(c.createTransfers({ transfers: many }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toMatch(/^transfers: must hold 1\.\.8190 items, got 8191/);
    expect((await c.lookupTransfers({ ids: ["xfer_many_0"] })).transfers).toEqual([]);
    expect((await codeOf(c.createTransfers({ transfers: [] }))).code).toBe(Code.InvalidArgument);
    expect((await codeOf(c.createAccounts({ accounts: [] }))).message).toMatch(/^accounts:/);
    expect((await codeOf(c.lookupAccounts({ ids: [] }))).message).toMatch(/^ids:/);
  });

  it("accepts a batch of exactly 8,190 transfers", async () => {
    const c = h.client();
    const batch = Array.from({ length: TRANSFERS_PER_REQUEST_MAX }, (_, i) => tx({ id: `xfer_full_${i}`, debitAccountId: "acct_cash", creditAccountId: "acct_revenue", amountNanos: 1n }));
    const res = await c.createTransfers({ transfers: batch });
    expect(res.results.length).toBe(TRANSFERS_PER_REQUEST_MAX);
    expect(res.results.every((r) => r.result === CreateTransferResult.OK)).toBe(true);
  });

  it("reports account item results (idempotent create, differences, bad input)", async () => {
    const res = await h.client().createAccounts({
      accounts: [
        { id: "acct_cash", unit: "USD", code: 1000 },
        { id: "acct_cash", unit: "USD", code: 1001 },
        { id: "acct_x", unit: "usd", code: 1 },
        { id: "acct_y", unit: "USD", code: 1, flags: { debitsMustNotExceedCredits: true, creditsMustNotExceedDebits: true } },
      ],
    });
    expect(res.results.map((r) => CreateAccountResult[r.result])).toEqual(["EXISTS", "EXISTS_WITH_DIFFERENT_CODE", "UNIT_INVALID", "FLAGS_ARE_MUTUALLY_EXCLUSIVE"]);
  });

  it("scopes everything by tenant: another tenant neither sees nor moves tenant a's accounts", async () => {
    const b = h.client(KEYS.adminB);
    expect((await b.lookupAccounts({ ids: ["acct_cash"] })).accounts).toEqual([]);
    const res = await b.createTransfers({ transfers: [tx({ id: "xfer_b1" })] });
    expect(res.results[0]!.result).toBe(CreateTransferResult.DEBIT_ACCOUNT_NOT_FOUND);
    // The same ids are free in tenant b.
    const acc = await b.createAccounts({ accounts: [{ id: "acct_cash", unit: "EUR", code: 1000 }] });
    expect(acc.results[0]!.result).toBe(CreateAccountResult.OK);
  });

  it("serves an internal key acting for a tenant named in x-nanobill-tenant", async () => {
    const c = h.client(KEYS.internal, "tnt_a");
    expect((await c.lookupAccounts({ ids: ["acct_cash"] })).accounts[0]!.unit).toBe("USD");
    expect((await codeOf(h.client(KEYS.internal).lookupAccounts({ ids: ["acct_cash"] }))).code).toBe(Code.InvalidArgument);
  });

  it("refuses calls without a key (Unauthenticated) and writes with a read key (PermissionDenied)", async () => {
    expect((await codeOf(h.client("").lookupAccounts({ ids: ["acct_cash"] }))).code).toBe(Code.Unauthenticated);
    expect((await codeOf(h.client(KEYS.readA).createTransfers({ transfers: [tx({ id: "xfer_ro" })] }))).code).toBe(Code.PermissionDenied);
    expect((await h.client(KEYS.readA).lookupAccounts({ ids: ["acct_cash"] })).accounts.length).toBe(1);
  });

  it("pages an account's transfers with next_page_token, filtered by code", async () => {
    const c = h.client();
    const seen: string[] = [];
    let token = "";
    for (let i = 0; i < 10; i++) {
      const page = await c.getAccountTransfers({ accountId: "acct_wallet", pageSizeMax: 2, pageToken: token });
      seen.push(...page.transfers.map((t) => t.id));
      token = page.nextPageToken;
      if (!token) break;
    }
    expect(seen).toEqual(["xfer_fund", "xfer_hold", "xfer_capture", "xfer_r1", "xfer_r2"]);
    const only21 = await c.getAccountTransfers({ accountId: "acct_wallet", code: 21 });
    expect(only21.transfers.map((t) => t.id)).toEqual(["xfer_hold", "xfer_capture"]);
    const creditsOnly = await c.getAccountTransfers({ accountId: "acct_wallet", credits: true, reversed: true });
    expect(creditsOnly.transfers.map((t) => t.id)).toEqual(["xfer_r1", "xfer_fund"]);
    expect((await codeOf(c.getAccountTransfers({ accountId: "acct_wallet", pageToken: "garbage" }))).message).toMatch(/^page_token:/);
    expect((await codeOf(c.getAccountTransfers({ accountId: "" }))).message).toMatch(/^account_id:/);
  });

  it("answers the balance of a history account at a past time, and refuses accounts without history", async () => {
    const c = h.client();
    const all = await c.getAccountBalances({ accountId: "acct_wallet" });
    expect(all.balances.length).toBe(5);
    const afterHold = all.balances[1]!;
    expect(afterHold.debitsPendingNanos).toBe(500n);
    const at = await c.getAccountBalances({ accountId: "acct_wallet", atTime: afterHold.time });
    expect(at.balances).toEqual([afterHold]);
    const beforeAll = await c.getAccountBalances({ accountId: "acct_wallet", atTime: usToTimestamp(0n) });
    expect(beforeAll.balances[0]!.creditsPostedNanos).toBe(0n);
    expect((await codeOf(c.getAccountBalances({ accountId: "acct_cash" }))).code).toBe(Code.FailedPrecondition);
    expect((await codeOf(c.getAccountBalances({ accountId: "acct_nope" }))).code).toBe(Code.NotFound);
  });

  /** The ledger's routes on a real h2c server (fast path and generic path), tenant tnt_a's admin key. */
  const realServer = () =>
    startServer({
      name: "ledger-test",
      host: "127.0.0.1",
      port: 0,
      routes: h.service.routes,
      authenticator: createApiKeyAuthenticator([{ tenant: "tnt_a", scopes: ["admin"], key: KEYS.adminA }]),
      logger: silentLogger,
      limits: LEDGER_SERVER_LIMITS,
    });

  it("serves gRPC on a real h2c server; a request over the byte limit is ResourceExhausted and writes nothing", async () => {
    const server = await realServer();
    try {
      const c = createClient(LedgerService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.adminA, protocol: "grpc" }));
      const ok = await c.createTransfers({ transfers: [tx({ id: "xfer_grpc_1", amountNanos: 1n })] });
      expect(ok.results[0]!.result).toBe(CreateTransferResult.OK);
      const fat = Object.fromEntries(Array.from({ length: 8 }, (_, k) => [`ref_${k}`, "v".repeat(256)]));
      const big = Array.from({ length: 4_000 }, (_, i) => tx({ id: `xfer_fat_${i}`, amountNanos: 1n, references: fat }));
      expect((await codeOf(c.createTransfers({ transfers: big }))).code).toBe(Code.ResourceExhausted);
      expect((await c.lookupTransfers({ ids: ["xfer_fat_0", "xfer_fat_3999"] })).transfers).toEqual([]);

      // CreateTransfers answers the same through the fast path's hand codec (binary Connect and
      // gRPC) and through the generated messages (Connect JSON), including a replay across them.
      const before = server.fastPathCalls;
      const connect = createClient(LedgerService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.adminA }));
      const json = createClient(LedgerService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: false }));
      const auth = { headers: { authorization: `Bearer ${KEYS.adminA}` } };
      const viaBinary = await connect.createTransfers({ transfers: [tx({ id: "xfer_path_1", amountNanos: 3n, references: { order: "o-1" } }), tx({ id: "xfer_path_bad", amountNanos: 0n })] });
      expect(server.fastPathCalls - before).toBe(1);
      const viaJson = await json.createTransfers({ transfers: [tx({ id: "xfer_path_1", amountNanos: 3n, references: { order: "o-1" } }), tx({ id: "xfer_path_bad", amountNanos: 0n })] }, auth);
      expect(server.fastPathCalls - before).toBe(1);
      expect(viaJson.results.map((r) => r.result)).toEqual([CreateTransferResult.EXISTS, viaBinary.results[1]!.result]);
      expect(viaBinary.results[0]!.result).toBe(CreateTransferResult.OK);
      expect(viaJson.results[0]!.createTime).toEqual(viaBinary.results[0]!.createTime);
      expect((await json.createTransfers({ transfers: [tx({ id: "xfer_path_2", amountNanos: 4n })] }, auth)).results[0]!.result).toBe(CreateTransferResult.OK);
      expect((await connect.lookupTransfers({ ids: ["xfer_path_2"] })).transfers[0]!.amountNanos).toBe(4n);
    } finally {
      closeClientSessions();
      await server.close();
    }
  });

  it("refuses a Timestamp whose nanos is outside 0..999,999,999 as InvalidArgument naming the field, on the generated and the hand-decoded path", async () => {
    const c = h.client();
    const bad = [{ seconds: 1n, nanos: -5 }, { seconds: 1n, nanos: 1_000_000_000 }];
    for (const ts of bad) {
      const imported = tx({ id: "xfer_ts_bad", amountNanos: 1n, flags: { imported: true }, timestamp: ts });
      const e = await codeOf(c.createTransfers({ transfers: [tx({ id: "xfer_ts_ok", amountNanos: 1n }), imported] }));
      expect([e.code, e.message]).toEqual([Code.InvalidArgument, `transfers[1].timestamp: nanos must be in 0..999999999, got ${ts.nanos}`]);
      const a = await codeOf(c.createAccounts({ accounts: [{ id: "acct_ts_bad", unit: "USD", code: 1, flags: { imported: true }, timestamp: ts }] }));
      expect([a.code, a.message]).toEqual([Code.InvalidArgument, `accounts[0].timestamp: nanos must be in 0..999999999, got ${ts.nanos}`]);
      expect((await codeOf(c.getAccountTransfers({ accountId: "acct_cash", startTime: ts }))).message).toMatch(/^start_time: nanos must be/);
      expect((await codeOf(c.queryTransfers({ endTime: ts }))).message).toMatch(/^end_time: nanos must be/);
      expect((await codeOf(c.getAccountBalances({ accountId: "acct_wallet", atTime: ts }))).message).toMatch(/^at_time: nanos must be/);
    }
    // Seconds beyond int64 µs (fuzz finding: Internal from PostgreSQL) and outside years 1..9999.
    for (const seconds of [2n ** 62n, -(2n ** 62n), 253_402_300_800n, -62_135_596_801n]) {
      const far = { seconds, nanos: 0 };
      expect((await codeOf(c.queryTransfers({ startTime: far }))).message).toMatch(/^start_time: must be a time in years 1\.\.9999 UTC/);
      expect((await codeOf(c.queryAccounts({ endTime: far }))).message).toMatch(/^end_time: must be a time in years 1\.\.9999 UTC/);
      expect((await codeOf(c.getAccountBalances({ accountId: "acct_wallet", atTime: far }))).message).toMatch(/^at_time: must be a time/);
    }
    await c.queryTransfers({ startTime: { seconds: -62_135_596_800n, nanos: 0 }, endTime: { seconds: 253_402_300_799n, nanos: 999_999_999 } }); // the edges are answered, not refused
    // Page tokens past int64 µs (review finding: Internal from PostgreSQL).
    for (const pageToken of ["t1:9999999999999999999", "t1:-9999999999999999999", "t1:9223372036854775808"]) {
      expect((await codeOf(c.queryTransfers({ pageToken }))).message).toMatch(/^page_token: must be a next_page_token/);
      expect((await codeOf(c.getAccountTransfers({ accountId: "acct_cash", pageToken }))).message).toMatch(/^page_token: must be a next_page_token/);
    }
    expect((await c.queryTransfers({ pageToken: "t1:9223372036854775807" })).transfers).toEqual([]);
    expect((await c.lookupTransfers({ ids: ["xfer_ts_ok", "xfer_ts_bad"] })).transfers).toEqual([]);
    expect((await c.lookupAccounts({ ids: ["acct_ts_bad"] })).accounts).toEqual([]);
    // The fast path (binary Connect / gRPC: the hand decoder of wire.ts) answers the same.
    const server = await realServer();
    try {
      const grpc = createClient(LedgerService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.adminA, protocol: "grpc" }));
      const before = server.fastPathCalls;
      const e = await codeOf(grpc.createTransfers({ transfers: [tx({ id: "xfer_ts_ok", amountNanos: 1n }), tx({ id: "xfer_ts_bad", flags: { imported: true }, timestamp: { seconds: 1n, nanos: -5 } })] }));
      expect(server.fastPathCalls - before).toBe(1);
      expect([e.code, e.message]).toEqual([Code.InvalidArgument, "transfers[1].timestamp: nanos must be in 0..999999999, got -5"]);
    } finally {
      closeClientSessions();
      await server.close();
    }
  });

  it("expires a hold after its timeout through the sweep", async () => {
    const c = h.client();
    const res = await c.createTransfers({ transfers: [tx({ id: "xfer_hold_exp", debitAccountId: "acct_wallet", creditAccountId: "acct_revenue", amountNanos: 5n, timeoutSeconds: 10, flags: { pending: true } })] });
    expect(res.results[0]!.result).toBe(CreateTransferResult.OK);
    h.clock.advance(11_000);
    expect(await h.service.store.expireDue()).toBe(1);
    const post = await c.createTransfers({ transfers: [{ id: "xfer_late_post", pendingId: "xfer_hold_exp", flags: { postPendingTransfer: true } }] });
    expect(post.results[0]!.result).toBe(CreateTransferResult.PENDING_TRANSFER_EXPIRED);
    const { transfers } = await c.lookupTransfers({ ids: ["xfer_hold_exp"] });
    expect(transfers[0]!.state).toBe(TransferState.PENDING_EXPIRED);
  });
});

describe("LedgerService TigerBeetle 0.16 parity through createRouterTransport", () => {
  let h: LedgerHarness;
  beforeAll(async () => {
    h = await openLedgerHarness(pglite!);
    const res = await h.client().createAccounts({
      accounts: [
        { id: "acct_cash", unit: "USD", code: 1000 },
        { id: "acct_wallet", unit: "USD", code: 2100, flags: { debitsMustNotExceedCredits: true }, metadata: { customer_id: "cus_1" } },
        { id: "acct_revenue", unit: "USD", code: 4000, metadata: { customer_id: "cus_2" } },
        { id: "acct_eur", unit: "EUR", code: 4000 },
      ],
    });
    expect(res.results.map((r) => r.result)).toEqual(Array(4).fill(CreateAccountResult.OK));
  });
  afterAll(async () => {
    expect((await h.client().verify({})).violations).toEqual([]);
    await h.close();
  });

  it("answers ID_ALREADY_FAILED to a retry of an id that failed with EXCEEDS_CREDITS, even after a top-up", async () => {
    const c = h.client();
    const spend = tx({ id: "xfer_spend", debitAccountId: "acct_wallet", creditAccountId: "acct_revenue", amountNanos: 5n });
    expect((await c.createTransfers({ transfers: [spend] })).results[0]!.result).toBe(CreateTransferResult.EXCEEDS_CREDITS);
    expect((await c.createTransfers({ transfers: [tx({ id: "xfer_top", creditAccountId: "acct_wallet", amountNanos: 100n })] })).results[0]!.result).toBe(CreateTransferResult.OK);
    const again = await c.createTransfers({ transfers: [spend, { ...spend, id: "xfer_spend_new" }] });
    expect(again.results.map((r) => r.result)).toEqual([CreateTransferResult.ID_ALREADY_FAILED, CreateTransferResult.OK]);
  });

  it("closes an account with a pending closing_debit transfer; the flag shows on LookupAccounts and a void reopens it", async () => {
    const c = h.client();
    const close = await c.createTransfers({
      transfers: [tx({ id: "xfer_close", debitAccountId: "acct_cash", creditAccountId: "acct_revenue", amountNanos: 1n, flags: { pending: true, closingDebit: true } })],
    });
    expect(close.results[0]!.result).toBe(CreateTransferResult.OK);
    expect((await c.lookupAccounts({ ids: ["acct_cash"] })).accounts[0]!.flags?.closed).toBe(true);
    const refused = await c.createTransfers({
      transfers: [tx({ id: "xfer_from_closed" }), tx({ id: "xfer_plain_close", flags: { closingCredit: true } })],
    });
    expect(refused.results.map((r) => r.result)).toEqual([CreateTransferResult.DEBIT_ACCOUNT_ALREADY_CLOSED, CreateTransferResult.CLOSING_TRANSFER_MUST_BE_PENDING]);
    expect((await c.createTransfers({ transfers: [{ id: "xfer_reopen", pendingId: "xfer_close", flags: { voidPendingTransfer: true } }] })).results[0]!.result).toBe(
      CreateTransferResult.OK,
    );
    const { transfers } = await c.lookupTransfers({ ids: ["xfer_close"] });
    expect([transfers[0]!.flags?.closingDebit, transfers[0]!.state]).toEqual([true, TransferState.PENDING_VOIDED]);
    expect((await c.lookupAccounts({ ids: ["acct_cash"] })).accounts[0]!.flags?.closed).toBe(false);
  });

  it("imports an account and a transfer with past timestamps and returns them as create_time", async () => {
    const c = h.client();
    // The harness clock stands at 2026-11-01; nothing was stamped after it.
    const past = new Date("2026-11-01T00:00:00Z").getTime() * 1000;
    h.clock.set(new Date("2026-11-02T00:00:00Z"));
    const at = (us: number) => usToTimestamp(BigInt(us));
    const acc = await c.createAccounts({ accounts: [{ id: "acct_hist", unit: "USD", code: 1000, flags: { imported: true }, timestamp: at(past + 1_000_000) }] });
    expect(acc.results.map((r) => [r.result, r.createTime && timestampToUs(r.createTime)])).toEqual([[CreateAccountResult.OK, BigInt(past + 1_000_000)]]);
    const res = await c.createTransfers({
      transfers: [
        tx({ id: "xfer_hist", debitAccountId: "acct_hist", creditAccountId: "acct_revenue", flags: { imported: true }, timestamp: at(past + 2_000_000) }),
        tx({ id: "xfer_hist_live", debitAccountId: "acct_hist", creditAccountId: "acct_revenue" }),
      ],
    });
    expect(res.results.map((r) => r.result)).toEqual([CreateTransferResult.OK, CreateTransferResult.IMPORTED_EVENT_EXPECTED]);
    expect(timestampToUs(res.results[0]!.createTime!)).toBe(BigInt(past + 2_000_000));
    const late = await c.createTransfers({ transfers: [tx({ id: "xfer_ts", timestamp: at(past) })] });
    expect(late.results[0]!.result).toBe(CreateTransferResult.TIMESTAMP_MUST_BE_ZERO);
    const { accounts } = await c.lookupAccounts({ ids: ["acct_hist"] });
    expect([accounts[0]!.flags?.imported, timestampToUs(accounts[0]!.createTime!)]).toEqual([true, BigInt(past + 1_000_000)]);
  });

  it("queries accounts and transfers by filter, pages with next_page_token, and refuses bad filters as InvalidArgument", async () => {
    const c = h.client(KEYS.readA);
    const byCode = await c.queryAccounts({ code: 4000 });
    expect(byCode.accounts.map((a) => a.id)).toEqual(["acct_revenue", "acct_eur"]);
    expect((await c.queryAccounts({ metadata: { customer_id: "cus_1" } })).accounts.map((a) => a.id)).toEqual(["acct_wallet"]);
    expect((await c.queryAccounts({ unit: "EUR" })).accounts.map((a) => a.id)).toEqual(["acct_eur"]);
    const seen: string[] = [];
    let token = "";
    for (let i = 0; i < 10; i++) {
      const page = await c.queryTransfers({ unit: "USD", pageSizeMax: 2, reversed: true, pageToken: token });
      seen.push(...page.transfers.map((t) => t.id));
      token = page.nextPageToken;
      if (!token) break;
    }
    const all = await c.queryTransfers({ pageSizeMax: 1000 });
    expect(seen).toEqual(all.transfers.map((t) => t.id).reverse());
    expect(seen.length).toBeGreaterThan(3);
    const h1 = await h.client().createTransfers({ transfers: [tx({ id: "xfer_ref", creditAccountId: "acct_revenue", references: { invoice_id: "inv_9" } })] });
    expect(h1.results[0]!.result).toBe(CreateTransferResult.OK);
    expect((await c.queryTransfers({ references: { invoice_id: "inv_9" } })).transfers.map((t) => t.id)).toEqual(["xfer_ref"]);
    expect((await codeOf(c.queryAccounts({ unit: "usd" }))).message).toMatch(/^unit:/);
    expect((await codeOf(c.queryTransfers({ references: Object.fromEntries([...Array(9).keys()].map((i) => [`k${i}`, "v"])) }))).message).toMatch(/^references:/);
    expect((await codeOf(c.queryAccounts({ metadata: { k: "v".repeat(257) } }))).code).toBe(Code.InvalidArgument);
    // JSONB cannot hold NUL: a filter with one is InvalidArgument, not a database error.
    expect((await codeOf(c.queryAccounts({ metadata: { k: "x\u0000" } }))).message).toMatch(/^metadata: /);
    expect((await codeOf(c.queryTransfers({ references: { "\u0000": "x" } }))).message).toMatch(/^references: /);
    expect((await codeOf(c.queryTransfers({ pageToken: "nope" }))).message).toMatch(/^page_token:/);
    expect((await codeOf(c.queryTransfers({ startTime: usToTimestamp(10n), endTime: usToTimestamp(5n) }))).message).toMatch(/^end_time:/);
    // Another tenant sees none of it.
    expect((await h.client(KEYS.adminB).queryAccounts({})).accounts).toEqual([]);
  });
});

describe("LedgerService commit queue limit", () => {
  it("refuses requests beyond the commit queue with ResourceExhausted", async () => {
    const h = await openLedgerHarness(pglite!, { commitQueueItemsMax: 3 });
    try {
      const c = h.client();
      await c.createAccounts({ accounts: [{ id: "acct_1", unit: "USD", code: 1 }, { id: "acct_2", unit: "USD", code: 1 }] });
      const calls = Array.from({ length: 6 }, (_, i) =>
        c.createTransfers({ transfers: [tx({ id: `xfer_q${i}a`, debitAccountId: "acct_1", creditAccountId: "acct_2", amountNanos: 1n }), tx({ id: `xfer_q${i}b`, debitAccountId: "acct_1", creditAccountId: "acct_2", amountNanos: 1n })] }).then(
          () => "ok",
          (e) => ConnectError.from(e).code,
        ),
      );
      const outcomes = await Promise.all(calls);
      expect(outcomes).toContain("ok");
      expect(outcomes).toContain(Code.ResourceExhausted);
      expect((await c.verify({})).ok).toBe(true);
    } finally {
      await h.close();
    }
  });
});
