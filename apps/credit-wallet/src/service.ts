/**
 * RPC handlers of nanobill.wallet.v1.CreditWalletService: decode -> engine -> encode. Thin.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { requireScope, tenantOf } from "@nanobill/service-kit";
import type { Db } from "@nanobill/db";
import type { Clock } from "@nanobill/service-kit";
import { createCoalescer } from "./coalescer.js";
import type { AuthorizeInput, AuthorizeOutcome, CaptureInput, CaptureOutcome, ConsumeOutcome, Engine, ReleaseOutcome, Settled } from "./engine.js";
import { WalletError, invalid, toConnect } from "./errors.js";
import {
  AUTHORIZE_EXTRA_GROUP_MIN_ITEMS,
  AUTHORIZE_GROUPS_IN_FLIGHT,
  AUTHORIZE_ITEMS_MAX,
  AUTHORIZE_STREAM_IN_FLIGHT_MAX,
  AUTHORIZE_STREAM_ITEMS_MAX,
  AUTHORIZE_STREAM_DEADLINE_MARGIN_MS,
  AUTHORIZE_STREAM_LIFETIME_MS,
  BALANCE_GRANTS_MAX,
  COMMIT_BATCH_OPS_MAX,
  CONSUME_ITEMS_MAX,
  RUN_AS_OF_SKEW_MS_MAX,
} from "./limits.js";
import * as M from "./mapping.js";
import * as S from "./store/store.js";
import { webhookRpcs } from "@nanobill/webhooks";

const CONSUME_RESULT: Record<ConsumeOutcome["result"], pb.ConsumeResult> = {
  ok: pb.ConsumeResult.OK,
  partial: pb.ConsumeResult.PARTIAL,
  insufficient: pb.ConsumeResult.INSUFFICIENT,
  wallet_not_found: pb.ConsumeResult.WALLET_NOT_FOUND,
  id_reused: pb.ConsumeResult.ID_REUSED,
  invalid: pb.ConsumeResult.INVALID,
};
const AUTHORIZE_RESULT: Record<AuthorizeOutcome["result"], pb.AuthorizeResult> = {
  ok: pb.AuthorizeResult.OK,
  insufficient: pb.AuthorizeResult.INSUFFICIENT,
  wallet_not_found: pb.AuthorizeResult.WALLET_NOT_FOUND,
  id_reused: pb.AuthorizeResult.ID_REUSED,
  invalid: pb.AuthorizeResult.INVALID,
};

/** Runs a handler body, mapping wallet outcomes to Connect errors (everything else: the error boundary). */
async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof WalletError) throw toConnect(e);
    throw e;
  }
}

/** The bounds of one AuthorizeStream (limits.ts; overridable for tests at their edges). */
export interface AuthorizeStreamLimits {
  inFlightMax: number;
  itemsMax: number;
  lifetimeMs: number;
}

const STREAM_EXPIRED = Symbol("stream lifetime reached");

export function createWalletServiceImpl(deps: {
  engine: Engine;
  db: Db;
  clock: Clock;
  streamLimits?: Partial<AuthorizeStreamLimits>;
  /** Authorize group commits in flight per tenant (default AUTHORIZE_GROUPS_IN_FLIGHT). */
  authorizeGroupsInFlight?: number;
  /** CreateWebhookEndpoint accepts URLs on non-public addresses (config.webhooksAllowPrivateNetworks; default false). */
  webhooksAllowPrivateNetworks?: boolean;
}): ServiceImpl<typeof pb.CreditWalletService> {
  const { engine, db, clock } = deps;
  const streamLimits: AuthorizeStreamLimits = { inFlightMax: AUTHORIZE_STREAM_IN_FLIGHT_MAX, itemsMax: AUTHORIZE_STREAM_ITEMS_MAX, lifetimeMs: AUTHORIZE_STREAM_LIFETIME_MS, ...deps.streamLimits };
  const grantTo = (g: S.GrantRow) => M.grantTo(g, engine.expiryGraceMsDefault);

  /** Validates one Authorize item, converting a maximum cost to credits. */
  async function authorizeInput(tenant: string, r: pb.AuthorizeRequest, prefix: string): Promise<AuthorizeInput> {
    const v = M.authorizeInputOf(r, prefix);
    if (v.maxCost) v.amountNanos = M.positiveNanos(`${prefix}max_cost_nanos`, await engine.creditsForCost(tenant, v.unit, v.maxCost.nanos, v.maxCost.currency));
    return v;
  }

  // Group commit of unary calls (and stream messages): whatever arrives while a group commits forms the next.
  // Up to AUTHORIZE_GROUPS_IN_FLIGHT groups run at once (pipelined; a second one only once
  // AUTHORIZE_EXTRA_GROUP_MIN_ITEMS items wait), never two on one wallet: the
  // groups in flight touch disjoint rows (no lock waits or deadlocks between them). A retried hold
  // waits for its first attempt by any route (engine.authorizeMany's keyed gate by hold id, item by item,
  // at most GATE_WAIT_MS_MAX; AuthorizeBatch too).
  const authorizeOne = createCoalescer<AuthorizeInput, AuthorizeOutcome>((tenant, items) => engine.authorizeMany(tenant, items), AUTHORIZE_ITEMS_MAX, {
    inFlightMax: deps.authorizeGroupsInFlight ?? AUTHORIZE_GROUPS_IN_FLIGHT,
    extraBatchMin: AUTHORIZE_EXTRA_GROUP_MIN_ITEMS,
    keyOf: (i) => `${i.customerId}\u0000${i.unit}`,
  });
  /**
   * One Authorize (unary or stream message): through the group commit, except a retry whose first
   * attempt is still in flight here, which waits for it on its own (engine.authorizeMany: at most
   * GATE_WAIT_MS_MAX). In a group it would keep the group in flight while it waits, and with it the
   * next group of unrelated holds (head-of-line blocking).
   */
  const authorizeOneOf = async (tenant: string, input: AuthorizeInput): Promise<AuthorizeOutcome> =>
    engine.authorizeInFlight(tenant, input.id) ? (await engine.authorizeMany(tenant, [input]))[0]! : authorizeOne.submit(tenant, input);
  const captureOne = createCoalescer<CaptureInput, Settled<CaptureOutcome>>((tenant, items) => engine.captureMany(tenant, items), COMMIT_BATCH_OPS_MAX);
  const releaseOne = createCoalescer<string, Settled<ReleaseOutcome>>((tenant, ids) => engine.releaseMany(tenant, ids), COMMIT_BATCH_OPS_MAX);
  const settledValue = <T>(s: Settled<T>): T => {
    if (!s.ok) throw s.error;
    return s.value;
  };

  /** One AuthorizeStream message -> its answer (never rejects: a failure that ends the stream is returned as `error`). */
  async function answerStreamItem(tenant: string, req: pb.AuthorizeStreamRequest, sequence: bigint): Promise<{ res: pb.AuthorizeStreamResponse } | { error: unknown }> {
    const it = req.item;
    let input: AuthorizeInput;
    try {
      if (!it) throw invalid("item", "is required");
      input = await authorizeInput(tenant, it, "item.");
    } catch (e) {
      if (!(e instanceof WalletError)) return { error: e };
      return { res: create(pb.AuthorizeStreamResponseSchema, { sequence, result: { id: it?.id ?? "", result: pb.AuthorizeResult.INVALID, error: e.message } }) };
    }
    try {
      const o = await authorizeOneOf(tenant, input);
      if (o.unavailable) return { error: toConnect(new WalletError({ kind: "unavailable", message: o.unavailable })) };
      return {
        res: create(pb.AuthorizeStreamResponseSchema, {
          sequence,
          result: { id: o.id, result: AUTHORIZE_RESULT[o.result], hold: o.hold ? M.holdTo(o.hold, o.unit) : undefined, error: o.error, availableNanos: o.availableNanos },
        }),
      };
    } catch (e) {
      return { error: e instanceof WalletError ? toConnect(e) : e };
    }
  }

  /**
   * AuthorizeStream: a reader pulls request messages (at most inFlightMax read and not yet
   * answered: then it stops reading, which is HTTP/2 flow control back to the client) and submits
   * each to the same group commit as unary Authorize; the writer answers them in order. The stream
   * ends with an error after itemsMax messages or lifetimeMs, once everything read is answered.
   */
  async function* authorizeStream(reqs: AsyncIterable<pb.AuthorizeStreamRequest>, ctx: HandlerContext): AsyncGenerator<pb.AuthorizeStreamResponse> {
    const tenant = spender(ctx); // tenant and scope: once, at stream start
    const lim = streamLimits;
    const queue: Array<Promise<{ res: pb.AuthorizeStreamResponse } | { error: unknown }>> = [];
    let readerDone = false;
    let readerError: unknown = null;
    let stopped = false;
    let wakeWriter: (() => void) | null = null;
    let wakeReader: (() => void) | null = null;
    const notifyWriter = () => {
      const w = wakeWriter;
      wakeWriter = null;
      w?.();
    };
    const notifyReader = () => {
      const r = wakeReader;
      wakeReader = null;
      r?.();
    };
    // The lifetime ends a pending read: each read races a fresh promise (a long-lived one would
    // keep one reaction per message until the stream ends).
    let expired = false;
    let expireRead: ((v: typeof STREAM_EXPIRED) => void) | null = null;
    // The stream's life: its own bound, or until shortly before the call's deadline (half the
    // deadline when that is shorter than twice the margin), whichever comes first.
    const remaining = ctx.timeoutMs();
    const lifetimeMs = remaining === undefined ? lim.lifetimeMs : Math.min(lim.lifetimeMs, Math.max(Math.floor(remaining / 2), remaining - AUTHORIZE_STREAM_DEADLINE_MARGIN_MS));
    const timer = setTimeout(() => {
      expired = true;
      expireRead?.(STREAM_EXPIRED);
    }, lifetimeMs);
    const iterator = reqs[Symbol.asyncIterator]();
    const reader = (async () => {
      let n = 0n;
      try {
        for (;;) {
          while (queue.length >= lim.inFlightMax && !stopped) await new Promise<void>((r) => (wakeReader = r));
          if (stopped) return;
          const next = expired ? STREAM_EXPIRED : await Promise.race([iterator.next(), new Promise<typeof STREAM_EXPIRED>((r) => (expireRead = r))]);
          expireRead = null;
          if (next === STREAM_EXPIRED) {
            readerError = new ConnectError(`stream lifetime of ${lifetimeMs} ms reached (its bound or its deadline less ${AUTHORIZE_STREAM_DEADLINE_MARGIN_MS} ms); every message read was answered; open a new stream`, Code.DeadlineExceeded);
            return;
          }
          if (next.done || stopped) return;
          n++;
          if (n > BigInt(lim.itemsMax)) {
            readerError = new ConnectError(`stream exceeds the limit of ${lim.itemsMax} messages; every message read before was answered; open a new stream`, Code.ResourceExhausted);
            return;
          }
          queue.push(answerStreamItem(tenant, next.value, n));
          notifyWriter();
        }
      } catch (e) {
        readerError = e;
      } finally {
        readerDone = true;
        notifyWriter();
      }
    })();
    try {
      for (;;) {
        if (queue.length > 0) {
          const a = await queue[0]!;
          queue.shift();
          notifyReader();
          if ("error" in a) throw a.error;
          yield a.res;
          continue;
        }
        if (readerDone) break;
        await new Promise<void>((r) => (wakeWriter = r));
      }
      if (readerError) throw readerError instanceof WalletError ? toConnect(readerError) : readerError;
    } finally {
      stopped = true;
      clearTimeout(timer);
      notifyReader();
      void reader;
    }
  }

  const webhooks = webhookRpcs(db, () => clock.now(), { allowPrivateNetworks: deps.webhooksAllowPrivateNetworks ?? false });
  const writer = (ctx: HandlerContext) => {
    requireScope(ctx, "admin");
    return tenantOf(ctx);
  };
  const spender = (ctx: HandlerContext) => {
    requireScope(ctx, "ingest");
    return tenantOf(ctx);
  };
  const reader = (ctx: HandlerContext) => {
    requireScope(ctx, "read");
    return tenantOf(ctx);
  };

  return {
    createCreditType: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        if (req.name === "") throw invalid("name", "is required, at most 128 characters");
        M.textOf("name", req.name, 128);
        const ct = await engine.createCreditType(tenant, {
          id: req.id,
          name: req.name,
          currency: req.currency,
          rate: M.decimalOf("rate.value", req.rate?.value, ""),
          effectiveAt: M.dateOf(req.effectiveAt, clock.now(), "effective_at"),
          effectiveAtDefaulted: !req.effectiveAt,
        });
        return create(pb.CreateCreditTypeResponseSchema, { creditType: M.creditTypeTo(ct) });
      }),

    setExchangeRate: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        if (!req.effectiveAt) throw invalid("effective_at", "is required");
        const ct = await engine.setExchangeRate(tenant, { creditTypeId: M.unitOf("credit_type_id", req.creditTypeId), rate: M.decimalOf("rate.value", req.rate?.value, ""), effectiveAt: M.dateOf(req.effectiveAt, clock.now(), "effective_at") });
        return create(pb.SetExchangeRateResponseSchema, { creditType: M.creditTypeTo(ct) });
      }),

    getCreditType: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        return create(pb.GetCreditTypeResponseSchema, { creditType: M.creditTypeTo(await engine.getCreditType(tenant, M.unitOf("credit_type_id", req.creditTypeId))) });
      }),

    createWallet: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const customerId = M.customerIdOf("customer_id", req.customerId);
        const unit = M.unitOf("unit", req.unit);
        const id = req.id === "" ? "" : M.idOf("id", req.id);
        if (id && !id.startsWith("wal_")) throw invalid("id", 'must start with "wal_"');
        const res = await engine.createWallet(tenant, { customerId, unit, id, policy: M.policyOf("policy", req.policy) });
        return create(pb.CreateWalletResponseSchema, { wallet: M.walletTo(res.wallet), created: res.created });
      }),

    grant: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const w = await engine.mustWallet(tenant, M.idOf("wallet_id", req.walletId));
        const input = M.grantInputOf(req, clock.now(), w.unit, w.kind);
        // Only a replay of an allowance stored with expires_at before Grant refused it gets past this.
        if (M.allowanceExpiresAtRefused(input) && !(await engine.isGrantReplay(tenant, input))) throw M.ALLOWANCE_EXPIRES_AT_ERROR();
        const res = await engine.grant(tenant, input);
        return create(pb.GrantResponseSchema, { grant: grantTo(res.grant), ledgerTransferId: res.transferId });
      }),

    consume: (req, ctx) =>
      guard(async () => {
        const tenant = spender(ctx);
        if (req.items.length === 0) throw invalid("items", "must not be empty");
        if (req.items.length > CONSUME_ITEMS_MAX) throw new WalletError({ kind: "limit", field: "items", limit: CONSUME_ITEMS_MAX });
        const now = clock.now();
        const results: pb.ConsumeItemResult[] = new Array(req.items.length);
        const valid: Array<{ i: number; input: ReturnType<typeof M.consumeInputOf> }> = [];
        const seen = new Set<string>();
        req.items.forEach((it, i) => {
          try {
            const input = M.consumeInputOf(it, i, now);
            if (seen.has(input.id)) throw invalid(`items[${i}].id`, "is repeated in the request");
            seen.add(input.id);
            valid.push({ i, input });
          } catch (e) {
            if (!(e instanceof WalletError)) throw e;
            results[i] = create(pb.ConsumeItemResultSchema, { id: it.id, result: pb.ConsumeResult.INVALID, consumedNanos: 0n, shortfallNanos: it.amountNanos > 0n ? it.amountNanos : 0n, error: e.message });
          }
        });
        const out = await engine.consumeMany(tenant, valid.map((v) => v.input));
        // An item whose first attempt was still in flight past GATE_WAIT_MS_MAX was not run: the call
        // answers Unavailable (the items that ran are replays for the client's retry).
        const late = out.find((o) => o.unavailable);
        if (late) throw new WalletError({ kind: "unavailable", message: late.unavailable! });
        valid.forEach((v, k) => {
          const o = out[k]!;
          results[v.i] = create(pb.ConsumeItemResultSchema, { id: o.id, result: CONSUME_RESULT[o.result], consumedNanos: o.consumedNanos, shortfallNanos: o.shortfallNanos, walletId: o.walletId, error: o.error, replayed: o.replayed });
        });
        return create(pb.ConsumeResponseSchema, { results });
      }),

    authorize: (req, ctx) =>
      guard(async () => {
        const tenant = spender(ctx);
        const input = await authorizeInput(tenant, req, "");
        const o = await authorizeOneOf(tenant, input);
        if (o.unavailable) throw new WalletError({ kind: "unavailable", message: o.unavailable });
        switch (o.result) {
          case "ok":
            return create(pb.AuthorizeResponseSchema, { hold: M.holdTo(o.hold!, o.unit), availableNanos: o.availableNanos });
          case "insufficient":
            throw new WalletError({ kind: "insufficient", walletId: o.walletId, availableNanos: o.availableNanos });
          case "wallet_not_found":
            throw new WalletError({ kind: "not_found", what: "wallet of customer", id: `${input.customerId}/${input.unit}` });
          case "id_reused":
            throw new WalletError({ kind: "id_reused", field: "id", id: input.id });
          case "invalid":
            throw invalid("id", o.error);
        }
      }),

    authorizeBatch: (req, ctx) =>
      guard(async () => {
        const tenant = spender(ctx);
        if (req.items.length === 0) throw invalid("items", "must not be empty");
        if (req.items.length > AUTHORIZE_ITEMS_MAX) throw new WalletError({ kind: "limit", field: "items", limit: AUTHORIZE_ITEMS_MAX });
        const results: pb.AuthorizeItemResult[] = new Array(req.items.length);
        const valid: Array<{ i: number; input: AuthorizeInput }> = [];
        const seen = new Set<string>();
        for (let i = 0; i < req.items.length; i++) {
          const it = req.items[i]!;
          try {
            const input = await authorizeInput(tenant, it, `items[${i}].`);
            if (seen.has(input.id)) throw invalid(`items[${i}].id`, "is repeated in the request");
            seen.add(input.id);
            valid.push({ i, input });
          } catch (e) {
            if (!(e instanceof WalletError)) throw e;
            results[i] = create(pb.AuthorizeItemResultSchema, { id: it.id, result: pb.AuthorizeResult.INVALID, error: e.message });
          }
        }
        const out = await engine.authorizeMany(tenant, valid.map((v) => v.input));
        const late = out.find((o) => o.unavailable);
        if (late) throw new WalletError({ kind: "unavailable", message: late.unavailable! });
        valid.forEach((v, k) => {
          const o = out[k]!;
          results[v.i] = create(pb.AuthorizeItemResultSchema, { id: o.id, result: AUTHORIZE_RESULT[o.result], hold: o.hold ? M.holdTo(o.hold, o.unit) : undefined, error: o.error, availableNanos: o.availableNanos });
        });
        return create(pb.AuthorizeBatchResponseSchema, { results });
      }),

    capture: (req, ctx) =>
      guard(async () => {
        const tenant = spender(ctx);
        const r = settledValue(
          await captureOne.submit(tenant, {
            holdId: M.idOf("hold_id", req.holdId),
            amountNanos: M.nonNegativeNanos("amount_nanos", req.amountNanos),
            eventId: M.refOf("event_id", req.eventId),
            chargeId: M.refOf("charge_id", req.chargeId),
            occurredAt: req.occurredAt ? M.timeOf("occurred_at", req.occurredAt) : null,
          }),
        );
        const w = await engine.mustWallet(tenant, r.hold.walletId);
        return create(pb.CaptureResponseSchema, { hold: M.holdTo(r.hold, w.unit), capturedNanos: r.capturedNanos, releasedNanos: r.releasedNanos, shortfallNanos: r.shortfallNanos });
      }),

    release: (req, ctx) =>
      guard(async () => {
        const tenant = spender(ctx);
        const r = settledValue(await releaseOne.submit(tenant, M.idOf("hold_id", req.holdId)));
        const w = await engine.mustWallet(tenant, r.hold.walletId);
        return create(pb.ReleaseResponseSchema, { hold: M.holdTo(r.hold, w.unit), releasedNanos: r.releasedNanos });
      }),

    authorizeStream,

    getBalance: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        if (req.walletId === "" && (req.customerId === "" || req.unit === "")) throw invalid("wallet_id", "or customer_id and unit are required");
        const b = await engine.getBalance(
          tenant,
          req.walletId !== "" ? { walletId: M.idOf("wallet_id", req.walletId), customerId: "", unit: "" } : { walletId: "", customerId: M.customerIdOf("customer_id", req.customerId), unit: M.unitOf("unit", req.unit) },
        );
        return create(pb.GetBalanceResponseSchema, {
          wallet: M.walletTo(b.wallet),
          balanceNanos: b.balanceNanos,
          heldNanos: b.heldNanos,
          availableNanos: b.availableNanos,
          overdraftNanos: b.overdraftNanos,
          grants: b.grants.slice(0, BALANCE_GRANTS_MAX).map(grantTo),
        });
      }),

    listConsumption: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        const customerId = M.customerIdOf("customer_id", req.customerId);
        const unit = M.unitOf("unit", req.unit);
        if (!req.from || !req.to) throw invalid(req.from ? "to" : "from", "is required");
        const from = M.dateOf(req.from, clock.now(), "from");
        const to = M.dateOf(req.to, clock.now(), "to");
        if (to.getTime() <= from.getTime()) throw invalid("to", "must be after from");
        const size = M.pageSizeOf("page.page_size_max", req.page?.pageSizeMax ?? 0);
        const after = M.decodeToken<{ at: string; source: string; id: string }>("page.page_token", req.page?.pageToken ?? "", (v) => M.tokenTime(v.at) && M.tokenId(v.source) && M.tokenId(v.id));
        const wallet = await engine.findWallet(tenant, customerId, unit);
        const totals = await S.consumptionTotals(db, tenant, customerId, unit, from, to);
        const rows = await S.listConsumptionEntries(db, tenant, customerId, unit, from, to, after ? { at: new Date(after.at), source: after.source, id: after.id } : null, size + 1);
        const page = rows.slice(0, size);
        const last = page[page.length - 1];
        return create(pb.ListConsumptionResponseSchema, {
          unit,
          walletId: wallet?.id ?? "",
          consumedNanos: totals.consumed,
          shortfallNanos: totals.shortfall,
          overdraftNanos: totals.overdraft,
          capturedNanos: totals.captured,
          byCharge: totals.byCharge.map((c) => create(pb.ConsumptionByChargeSchema, { chargeId: c.chargeId, consumedNanos: c.consumed, shortfallNanos: c.shortfall, overdraftNanos: c.overdraft, capturedNanos: c.captured })),
          entries: page.map(M.consumptionEntryTo),
          page: { nextPageToken: rows.length > size && last ? M.encodeToken({ at: last.occurredAt.toISOString(), source: last.source, id: last.id }) : "" },
        });
      }),

    listMovements: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        const w = await engine.mustWallet(tenant, M.idOf("wallet_id", req.walletId));
        const from = M.dateOf(req.from, new Date(0), "from");
        const to = M.dateOf(req.to, new Date("9999-12-31T00:00:00Z"), "to");
        const size = M.pageSizeOf("page.page_size_max", req.page?.pageSizeMax ?? 0);
        const after = M.decodeToken<{ seq: string }>("page.page_token", req.page?.pageToken ?? "", (v) => M.tokenSeq(v.seq));
        const rows = await S.listMovements(db, tenant, w.id, from, to, after ? BigInt(after.seq) : 0n, size + 1);
        const page = rows.slice(0, size);
        const last = page[page.length - 1];
        return create(pb.ListMovementsResponseSchema, {
          movements: page.map((m) => M.movementTo(m, w.unit)),
          page: { nextPageToken: rows.length > size && last ? M.encodeToken({ seq: last.seq.toString() }) : "" },
        });
      }),

    runExpiry: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const walletId = req.walletId === "" ? "" : M.idOf("wallet_id", req.walletId);
        const r = await engine.runExpiry(tenant, runAsOf(req.asOf, clock.now()), walletId);
        return create(pb.RunExpiryResponseSchema, { grantsExpired: r.grantsExpired, breakageNanos: r.breakageNanos, holdsExpired: r.holdsExpired, alertsRaised: r.alertsRaised });
      }),

    runRollover: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const walletId = req.walletId === "" ? "" : M.idOf("wallet_id", req.walletId);
        const r = await engine.runRollover(tenant, runAsOf(req.asOf, clock.now()), walletId);
        return create(pb.RunRolloverResponseSchema, { outcomes: r.map((o) => create(pb.RolloverOutcomeSchema, o)) });
      }),

    setAutoTopUp: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const w = await engine.setAutoTopUp(tenant, M.idOf("wallet_id", req.walletId), M.autoTopUpOf("auto_top_up", req.autoTopUp));
        return create(pb.SetAutoTopUpResponseSchema, { wallet: M.walletTo(w) });
      }),

    setWalletPolicy: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const w = await engine.setPolicy(tenant, M.idOf("wallet_id", req.walletId), M.policyOf("policy", req.policy));
        return create(pb.SetWalletPolicyResponseSchema, { wallet: M.walletTo(w) });
      }),

    setLowBalanceAlert: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const w = await engine.setLowBalanceAlert(tenant, M.idOf("wallet_id", req.walletId), M.lowBalanceOf("low_balance_alert", req.lowBalanceAlert));
        return create(pb.SetLowBalanceAlertResponseSchema, { wallet: M.walletTo(w) });
      }),

    listAlerts: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        const kind = M.ALERT_KIND_FROM[req.kind];
        if (kind === undefined) throw invalid("kind", "unknown alert kind");
        const size = M.pageSizeOf("page.page_size_max", req.page?.pageSizeMax ?? 0);
        const after = M.decodeToken<{ seq: string }>("page.page_token", req.page?.pageToken ?? "", (v) => M.tokenSeq(v.seq));
        const rows = await S.listAlerts(db, tenant, { customerId: req.customerId === "" ? "" : M.customerIdOf("customer_id", req.customerId), kind, since: req.since ? M.timeOf("since", req.since) : null, afterSeq: after ? BigInt(after.seq) : 0n, limit: size + 1 });
        const page = rows.slice(0, size);
        const last = page[page.length - 1];
        return create(pb.ListAlertsResponseSchema, { alerts: page.map(M.alertTo), page: { nextPageToken: rows.length > size && last ? M.encodeToken({ seq: last.seq.toString() }) : "" } });
      }),

    // Webhooks: wallet alerts are queued by a trigger on alerts (migration 0004) and POSTed by the
    // dispatcher the service runs (libs/webhooks).
    createWebhookEndpoint: (req, ctx) => guard(() => webhooks.create(writer(ctx), req)),
    listWebhookEndpoints: (_req, ctx) => guard(() => webhooks.list(reader(ctx))),
    disableWebhookEndpoint: (req, ctx) => guard(() => webhooks.disable(writer(ctx), req)),
    listWebhookDeliveries: (req, ctx) => guard(() => webhooks.deliveries(reader(ctx), req)),
  };
}

/**
 * The as_of of an expiry or rollover run: now when absent; not after now (a later as_of would expire
 * or roll over credits that can still be spent now) and at most RUN_AS_OF_SKEW_MS_MAX before it.
 */
function runAsOf(ts: Parameters<typeof M.dateOf>[0], now: Date): Date {
  const asOf = M.dateOf(ts, now, "as_of");
  if (asOf.getTime() > now.getTime()) throw invalid("as_of", "must not be after now (a run closes only what is due)");
  if (!Number.isFinite(asOf.getTime()) || now.getTime() - asOf.getTime() > RUN_AS_OF_SKEW_MS_MAX) {
    throw invalid("as_of", "must be within 10 years before now");
  }
  return asOf;
}
