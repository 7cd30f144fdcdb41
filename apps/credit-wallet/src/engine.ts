/**
 * The wallet engine: one place that orders the three stores of a money movement.
 *
 *   debit (Authorize, Consume, capture overage):  real-time decision (Redis / in-process, atomic)
 *       -> PostgreSQL commit (guards: grants_within_amount CHECK, overdraft WHERE)  -> ledger outbox
 *   credit (Release, capture remainder, Grant, expiry, rollover):  PostgreSQL commit -> real-time
 *       credit under the generation read before the commit (or invalidate) -> ledger outbox
 *
 * So the real-time state never shows more than PostgreSQL has except transiently after a rebuild,
 * and then PostgreSQL's guard refuses the write: the item is retried on a freshly loaded state.
 * Concurrent writers are group-committed: a batch of items is applied in one transaction with a
 * few set-based statements; when the batch fails (a guard), items are retried one by one.
 * Pure rules live in domain/; SQL in store/; this file only sequences them.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Db, Queryable } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { isUnitCode } from "@nanobill/money";
import { decideAutoTopUp, type AutoTopUpConfig } from "./domain/auto-top-up.js";
import { breakageAt, expiryNoticeDue, remainderNanos } from "./domain/expiry.js";
import { planCapture, reservedNanos } from "./domain/holds.js";
import {
  burnTransfers,
  expiryTransfer,
  grantTransfers,
  holdTransfers,
  resolveHoldTransfers,
  burnTransferId,
  grantTransferId,
  holdTransferId,
  postTransferId,
  voidTransferId,
  walletAccounts,
  walletLedger,
  type PlannedTransfer,
} from "./domain/ledger-plan.js";
import { debitRoom, repayNanos } from "./domain/policy.js";
import { nextPeriod, planRollover, type RolloverRule } from "./domain/rollover.js";
import { sortForBurn } from "./domain/burn-order.js";
import type { GrantKind, Policy, Slice } from "./domain/types.js";
import { WalletError, invalid } from "./errors.js";
import type { LedgerOutbox } from "./ledger-outbox.js";
import type { LedgerPort } from "./ledger-port.js";
import {
  EXPIRY_GRACE_MS_DEFAULT,
  EXPIRY_NOTICE_MS_DEFAULT,
  GRANTS_PER_WALLET_OPEN_MAX,
  HOLD_LEDGER_GRACE_MS,
  RATES_PER_CREDIT_TYPE_MAX,
  REALTIME_RELOADS_MAX,
  RUN_WALLETS_MAX,
} from "./limits.js";
import type { DebitResult, RealtimeStore, WalletRef, WalletSnapshot } from "./realtime/types.js";
import * as S from "./store/store.js";
import type { ConsumptionRow, GrantRow, HoldRow, WalletRow } from "./store/store.js";

export interface EngineDeps {
  db: Db;
  realtime: RealtimeStore;
  ledger: LedgerPort;
  outbox: LedgerOutbox;
  clock: Clock;
  logger: Logger;
  /** Random generation ids for real-time state (injected for tests). */
  randomId?: () => string;
  expiryNoticeMs?: number;
  expiryGraceMs?: number;
}

export interface GrantInput {
  id: string;
  walletId: string;
  kind: GrantKind;
  amountNanos: bigint;
  costBasis: string;
  costBasisCurrency: string;
  priority: number;
  effectiveAt: Date;
  expiresAt: Date | null;
  scope: { chargeIds: string[]; models: string[] };
  rollover: RolloverRule | null;
  periodEnd: Date | null;
  renew: boolean;
  invoiceId: string;
  description: string;
}

export interface ConsumeInput {
  id: string;
  customerId: string;
  unit: string;
  amountNanos: bigint;
  eventId: string;
  chargeId: string;
  model: string;
  occurredAt: Date;
}

export type ConsumeResultKind = "ok" | "partial" | "insufficient" | "wallet_not_found" | "id_reused" | "invalid";
export interface ConsumeOutcome {
  id: string;
  result: ConsumeResultKind;
  consumedNanos: bigint;
  shortfallNanos: bigint;
  walletId: string;
  error: string;
  replayed: boolean;
}

export interface AuthorizeInput {
  id: string;
  customerId: string;
  unit: string;
  amountNanos: bigint;
  ttlMs: number;
  chargeId: string;
  model: string;
}

export type AuthorizeResultKind = "ok" | "insufficient" | "wallet_not_found" | "id_reused" | "invalid";
export interface AuthorizeOutcome {
  id: string;
  result: AuthorizeResultKind;
  hold: HoldRow | null;
  unit: string;
  /** The wallet decided on ("" when none was found). */
  walletId: string;
  availableNanos: bigint;
  error: string;
}

export interface CaptureInput {
  holdId: string;
  amountNanos: bigint;
  eventId: string;
  chargeId: string;
  occurredAt: Date | null;
}

export interface Balance {
  wallet: WalletRow;
  balanceNanos: bigint;
  heldNanos: bigint;
  availableNanos: bigint;
  overdraftNanos: bigint;
  grants: GrantRow[];
}

/** Canonical hash of a request's content (bigints as strings): the idempotency fingerprint. */
export function requestHash(v: unknown): string {
  return createHash("sha256")
    .update(JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x instanceof Date ? x.toISOString() : x)))
    .digest("hex")
    .slice(0, 32);
}

/** The deterministic wallet id of a customer's wallet for a unit. */
export function walletIdFor(tenant: string, customerId: string, unit: string): string {
  return "wal_" + createHash("sha256").update(`${tenant}\u0000${customerId}\u0000${unit}`).digest("hex").slice(0, 24);
}

/** Exact decimal string -> fraction num/den (den a power of ten). */
export function decimalFraction(s: string, field: string): { num: bigint; den: bigint } {
  const m = /^(\d{1,19})(?:\.(\d{1,18}))?$/.exec(s);
  if (!m) throw invalid(field, "must be a non-negative decimal such as \"0.01\"");
  const frac = m[2] ?? "";
  return { num: BigInt(m[1]! + frac), den: 10n ** BigInt(frac.length) };
}

type Reserved = Extract<DebitResult, { kind: "ok" | "insufficient" }>;

export function createEngine(deps: EngineDeps) {
  const { db, realtime: rt, clock, logger } = deps;
  const randomId = deps.randomId ?? (() => randomBytes(8).toString("hex"));
  const noticeMs = deps.expiryNoticeMs ?? EXPIRY_NOTICE_MS_DEFAULT;
  const graceMs = deps.expiryGraceMs ?? EXPIRY_GRACE_MS_DEFAULT;
  const ref = (tenant: string, walletId: string): WalletRef => ({ tenant, walletId });
  const L = (w: WalletRow) => walletLedger(w.customerId, w.unit, w.kind);

  // Wallet rows by (tenant, customer, unit): ids and units never change; policy and auto top-up are
  // refreshed by this process on change and expire after WALLET_CACHE_TTL_MS for other replicas'.
  const WALLET_CACHE_MAX = 100_000;
  const WALLET_CACHE_TTL_MS = 5_000;
  const walletCache = new Map<string, { row: WalletRow; at: number }>();
  const cacheKey = (tenant: string, customerId: string, unit: string) => `${tenant}\u0000${customerId}\u0000${unit}`;
  function remember(w: WalletRow) {
    if (walletCache.size >= WALLET_CACHE_MAX) walletCache.clear();
    walletCache.set(cacheKey(w.tenant, w.customerId, w.unit), { row: w, at: Date.now() });
  }
  async function resolveWallet(tenant: string, customerId: string, unit: string): Promise<WalletRow | null> {
    const hit = walletCache.get(cacheKey(tenant, customerId, unit));
    if (hit && Date.now() - hit.at < WALLET_CACHE_TTL_MS) return hit.row;
    const w = await S.findWallet(db, tenant, customerId, unit);
    if (w) remember(w);
    return w;
  }
  async function mustWallet(tenant: string, walletId: string, q: Queryable = db, forUpdate = false): Promise<WalletRow> {
    const w = await S.getWallet(q, tenant, walletId, forUpdate);
    if (!w) throw new WalletError({ kind: "not_found", what: "wallet", id: walletId });
    return w;
  }

  // ------------------------------------------------------------ real-time state

  const loading = new Map<string, Promise<void>>();
  async function loadState(tenant: string, walletId: string): Promise<void> {
    const k = `${tenant}\u0000${walletId}`;
    let p = loading.get(k);
    if (!p) {
      p = (async () => {
        const rows = await db.transaction((tx) => S.readSnapshotRows(tx, tenant, walletId), { isolation: "repeatable read" });
        if (!rows) throw new WalletError({ kind: "not_found", what: "wallet", id: walletId });
        const snap: WalletSnapshot = {
          grants: rows.grants.map(S.toBurnGrant),
          overdraftUsedNanos: rows.wallet.overdraftPostedNanos + rows.wallet.overdraftHeldNanos,
          overdraftLimitNanos: rows.wallet.policy.mode === "soft_negative" ? rows.wallet.policy.negativeLimitNanos : 0n,
          uncoveredAllowed: rows.wallet.policy.mode === "postpaid_overage",
        };
        await rt.load(ref(tenant, walletId), snap, randomId());
      })().finally(() => loading.delete(k));
      loading.set(k, p);
    }
    return p;
  }

  async function reserve(tenant: string, walletId: string, amountNanos: bigint, mode: "all" | "partial", chargeId: string, model: string): Promise<Reserved> {
    for (let i = 0; i <= REALTIME_RELOADS_MAX; i++) {
      const r = await rt.debit(ref(tenant, walletId), { amountNanos, mode, ctx: { nowMs: clock.now().getTime(), chargeId, model } });
      if (r.kind !== "no_state") return r;
      await loadState(tenant, walletId);
    }
    throw new WalletError({ kind: "unavailable", message: "real-time state could not be loaded; retry" });
  }

  /** Gives a reservation back (its commit failed or was a replay). */
  async function unreserve(tenant: string, walletId: string, r: Reserved): Promise<void> {
    if (r.kind !== "ok" || (r.slices.length === 0 && r.overdraftNanos === 0n)) return;
    await rt.credit(ref(tenant, walletId), r.gen, r.slices, r.overdraftNanos);
  }

  /** The generation in force before a credit-type commit (null: no state, nothing to credit). */
  async function genBefore(tenant: string, walletId: string): Promise<string | null> {
    return rt.gen(ref(tenant, walletId));
  }

  async function creditAfter(tenant: string, walletId: string, gen: string | null, slices: Slice[], overdraftNanos: bigint): Promise<void> {
    if (gen === null) return;
    const ss = slices.filter((s) => s.amountNanos > 0n);
    if (ss.length === 0 && overdraftNanos === 0n) return;
    await rt.credit(ref(tenant, walletId), gen, ss, overdraftNanos);
  }

  /** Group commit: all items in one transaction; on failure, one transaction per item. */
  async function commitGroup<T>(items: T[], apply: (tx: Queryable, items: T[]) => Promise<void>): Promise<Array<null | unknown>> {
    if (items.length === 0) return [];
    try {
      await db.transaction((tx) => apply(tx, items));
      return items.map(() => null);
    } catch (e) {
      if (items.length === 1) return [e];
    }
    const out: Array<null | unknown> = [];
    for (const it of items) {
      try {
        await db.transaction((tx) => apply(tx, [it]));
        out.push(null);
      } catch (e) {
        out.push(e);
      }
    }
    return out;
  }

  /** Starts an outbox flush without waiting for it (failures are retried by the background loop). */
  function kickOutbox(): void {
    deps.outbox.flush().catch((err) => logger.warn("ledger outbox flush failed; the background loop retries", { err: String(err) }));
  }

  // ------------------------------------------------------------ credit types

  async function createCreditType(tenant: string, ct: { id: string; name: string; currency: string; rate: string; effectiveAt: Date }) {
    if (!/^cr_[a-z0-9_]{1,61}$/.test(ct.id) || !isUnitCode(ct.id)) throw invalid("id", 'must be "cr_" followed by 1-61 of [a-z0-9_]');
    if (isUnitCode(ct.currency) === false || ct.currency.startsWith("cr_")) throw invalid("currency", "must be a supported ISO 4217 code");
    const f = decimalFraction(ct.rate, "rate.value");
    if (f.num === 0n) throw invalid("rate.value", "must be > 0");
    const created = await db.transaction((tx) => S.insertCreditType(tx, tenant, { ...ct, now: clock.now() }));
    const stored = (await S.getCreditType(db, tenant, ct.id))!;
    if (!created) {
      const first = stored.rates[0];
      if (stored.name !== ct.name || stored.currency !== ct.currency || !first || first.rate !== ct.rate) throw new WalletError({ kind: "id_reused", field: "id", id: ct.id });
    }
    return stored;
  }

  async function setExchangeRate(tenant: string, r: { creditTypeId: string; rate: string; effectiveAt: Date }) {
    const ct = await S.getCreditType(db, tenant, r.creditTypeId);
    if (!ct) throw new WalletError({ kind: "not_found", what: "credit type", id: r.creditTypeId });
    const f = decimalFraction(r.rate, "rate.value");
    if (f.num === 0n) throw invalid("rate.value", "must be > 0");
    if ((await S.countRates(db, tenant, r.creditTypeId)) >= RATES_PER_CREDIT_TYPE_MAX) throw new WalletError({ kind: "limit", field: "rates", limit: RATES_PER_CREDIT_TYPE_MAX });
    const res = await db.transaction((tx) => S.insertExchangeRate(tx, tenant, { ...r, currency: ct.currency }));
    if (res === "different") throw new WalletError({ kind: "id_reused", field: "effective_at", id: r.effectiveAt.toISOString() });
    return (await S.getCreditType(db, tenant, r.creditTypeId))!;
  }

  async function getCreditType(tenant: string, id: string) {
    const ct = await S.getCreditType(db, tenant, id);
    if (!ct) throw new WalletError({ kind: "not_found", what: "credit type", id });
    return ct;
  }

  /** Credits (nanos) a maximum cost buys at the rate in force, rounded up (named: ceil, the hold never falls short). */
  async function creditsForCost(tenant: string, unit: string, costNanos: bigint, currency: string): Promise<bigint> {
    if (unit === currency) return costNanos;
    if (!unit.startsWith("cr_")) throw invalid("max_cost_currency", `must be the wallet's currency ${unit}`);
    const r = await S.rateAt(db, tenant, unit, clock.now());
    if (!r) throw new WalletError({ kind: "not_found", what: "exchange rate of credit type", id: unit });
    if (r.currency !== currency) throw invalid("max_cost_currency", `must be ${r.currency}, the currency of ${unit}'s rate`);
    const f = decimalFraction(r.rate, "rate");
    // credits = cost / rate = cost * den / num
    const n = costNanos * f.den;
    return (n + f.num - 1n) / f.num;
  }

  // ------------------------------------------------------------ wallets

  async function createWallet(tenant: string, w: { customerId: string; unit: string; id: string; policy: Policy }) {
    if (!isUnitCode(w.unit)) throw invalid("unit", "must be an ISO 4217 code or a credit type id");
    const kind = w.unit.startsWith("cr_") ? "credits" : "prepaid";
    if (kind === "credits" && !(await S.getCreditType(db, tenant, w.unit))) throw new WalletError({ kind: "not_found", what: "credit type", id: w.unit });
    const id = w.id || walletIdFor(tenant, w.customerId, w.unit);
    const existing = await S.findWallet(db, tenant, w.customerId, w.unit);
    if (existing) {
      if (w.id && existing.id !== w.id) throw new WalletError({ kind: "id_reused", field: "customer_id+unit", id: `${w.customerId}/${w.unit}` });
      return { wallet: existing, created: false };
    }
    const l = walletLedger(w.customerId, w.unit, kind);
    await deps.ledger.createAccounts(tenant, walletAccounts(l));
    const res = await db.transaction((tx) =>
      S.insertWallet(tx, { tenant, id, customerId: w.customerId, unit: w.unit, kind, policy: w.policy, ledgerAccountId: l.wallet, now: clock.now() }),
    );
    if (res.wallet.customerId !== w.customerId || res.wallet.unit !== w.unit) throw new WalletError({ kind: "id_reused", field: "id", id });
    remember(res.wallet);
    return res;
  }

  async function setPolicy(tenant: string, walletId: string, p: Policy) {
    await db.transaction(async (tx) => {
      await mustWallet(tenant, walletId, tx, true);
      await S.updatePolicy(tx, tenant, walletId, p);
    });
    await rt.invalidate(ref(tenant, walletId));
    const w = await mustWallet(tenant, walletId);
    remember(w);
    return w;
  }

  async function setAutoTopUp(tenant: string, walletId: string, c: AutoTopUpConfig) {
    await db.transaction(async (tx) => {
      await mustWallet(tenant, walletId, tx, true);
      await S.updateAutoTopUp(tx, tenant, walletId, c);
    });
    const w = await mustWallet(tenant, walletId);
    remember(w);
    return w;
  }

  // ------------------------------------------------------------ grants

  function grantHash(g: GrantInput) {
    return requestHash({ ...g, effectiveAt: g.effectiveAt.getTime(), expiresAt: g.expiresAt?.getTime() ?? null, periodEnd: g.periodEnd?.getTime() ?? null });
  }

  /** Writes one grant inside tx: row, overdraft repay, movements, ledger chain. Returns the transfer id. */
  async function writeGrant(tx: Queryable, tenant: string, w: WalletRow, g: GrantInput & { rootId?: string; periodIndex?: number }, hash: string, now: Date, ledgerFunded: boolean): Promise<string> {
    const repay = ledgerFunded ? repayNanos(w.overdraftPostedNanos, g.amountNanos) : 0n;
    await S.insertGrant(tx, tenant, {
      id: g.id,
      walletId: w.id,
      kind: g.kind,
      amountNanos: g.amountNanos,
      burnedNanos: repay,
      priority: g.priority,
      effectiveAt: g.effectiveAt,
      expiresAt: g.expiresAt,
      createdAt: now,
      costBasis: g.costBasis,
      costBasisCurrency: g.costBasisCurrency,
      scope: g.scope,
      rollover: g.rollover,
      periodEnd: g.periodEnd,
      renew: g.renew,
      rootId: g.rootId ?? g.id,
      periodIndex: g.periodIndex ?? 0,
      invoiceId: g.invoiceId,
      description: g.description,
      requestHash: hash,
    });
    if (repay > 0n) {
      await S.addOverdraft(tx, tenant, w.id, { postedNanos: -repay, heldNanos: 0n, enforceLimit: false });
      w.overdraftPostedNanos -= repay;
    }
    const ts = ledgerFunded ? grantTransfers({ grantId: g.id, walletId: w.id, l: L(w), kind: g.kind, amountNanos: g.amountNanos, repayNanos: repay, invoiceId: g.invoiceId }) : [];
    await S.insertMovements(tx, tenant, [
      { id: `mv_g:${g.id}`, walletId: w.id, grantId: g.id, kind: g.kind === "rollover" && !ledgerFunded ? "rollover" : "grant", amountNanos: g.amountNanos, sourceId: g.id, invoiceId: g.invoiceId, ledgerTransferId: ts[0]?.id ?? "", occurredAt: now },
      { id: `mv_r:${g.id}`, walletId: w.id, grantId: g.id, kind: "burn", amountNanos: repay, sourceId: g.id, ledgerTransferId: ts[1]?.id ?? "", occurredAt: now },
    ]);
    await S.enqueueTransfers(tx, tenant, [ts], now);
    return ts[0]?.id ?? "";
  }

  async function grant(tenant: string, g: GrantInput): Promise<{ grant: GrantRow; transferId: string }> {
    const hash = grantHash(g);
    const prior = await S.getGrant(db, tenant, g.id);
    if (prior) {
      if (prior.requestHash !== hash || prior.walletId !== g.walletId) throw new WalletError({ kind: "id_reused", field: "id", id: g.id });
      return { grant: prior, transferId: grantTransferId(g.id) };
    }
    const now = clock.now();
    const w0 = await mustWallet(tenant, g.walletId);
    if (g.costBasisCurrency === "" && g.kind === "purchased" && w0.kind === "prepaid") g = { ...g, costBasisCurrency: w0.unit };
    let transferId = "";
    let inserted = true;
    await db.transaction(async (tx) => {
      const w = await mustWallet(tenant, g.walletId, tx, true);
      const again = await S.getGrant(tx, tenant, g.id);
      if (again) {
        inserted = false;
        return;
      }
      if ((await S.countOpenGrants(tx, tenant, w.id)) >= GRANTS_PER_WALLET_OPEN_MAX) throw new WalletError({ kind: "limit", field: "grants (open, per wallet)", limit: GRANTS_PER_WALLET_OPEN_MAX });
      transferId = await writeGrant(tx, tenant, w, g, hash, now, true);
      await rearmIfAbove(tx, tenant, w);
    });
    if (!inserted) return grant(tenant, g);
    await rt.invalidate(ref(tenant, g.walletId));
    await deps.outbox.flush();
    return { grant: (await S.getGrant(db, tenant, g.id))!, transferId };
  }

  /** Re-arms auto top-up / low-balance alerts when the balance is back at or above the threshold. */
  async function rearmIfAbove(tx: Queryable, tenant: string, w: WalletRow) {
    if (!w.autoTopUp || w.topUpArmed) return;
    const grants = await S.listGrants(tx, tenant, w.id, { activeOnly: true });
    let avail = -(w.overdraftPostedNanos + w.overdraftHeldNanos);
    for (const x of grants) avail += x.amountNanos - x.burnedNanos - x.heldNanos - x.expiredNanos;
    if (avail >= w.autoTopUp.thresholdNanos) await S.armTopUp(tx, tenant, w.id);
  }

  // ------------------------------------------------------------ authorize (holds)

  interface HoldWork {
    input: AuthorizeInput;
    wallet: WalletRow;
    r: Reserved;
    row: HoldRow;
    replay: boolean;
  }

  async function applyHolds(tx: Queryable, tenant: string, ws: HoldWork[]): Promise<void> {
    // Two concurrent calls with one id can meet in one group: only the first may be inserted.
    const firstById = new Map<string, HoldWork>();
    for (const w of ws) if (!firstById.has(w.row.id)) firstById.set(w.row.id, w);
    const unique = [...firstById.values()];
    const now = clock.now();
    const timeoutSeconds = (w: HoldWork) => Math.ceil((w.input.ttlMs + HOLD_LEDGER_GRACE_MS) / 1000);
    const inserted = await S.commitHolds(
      tx,
      tenant,
      unique.map((w) => w.row),
      unique.flatMap((w) => [
        ...w.row.slices.map((s, i) => ({ id: `mv_h:${w.row.id}:${i}`, walletId: w.wallet.id, grantId: s.grantId, kind: "hold" as const, amountNanos: s.amountNanos, sourceId: w.row.id, holdId: w.row.id, ledgerTransferId: holdTransferId(w.row.id, i), occurredAt: now })),
        { id: `mv_h:${w.row.id}:od`, walletId: w.wallet.id, grantId: "", kind: "overdraft" as const, amountNanos: w.row.overdraftNanos, sourceId: w.row.id, holdId: w.row.id, ledgerTransferId: holdTransferId(w.row.id, "od"), occurredAt: now },
      ]),
      unique.map((w) => ({ holdId: w.row.id, transfers: holdTransfers({ holdId: w.row.id, l: L(w.wallet), slices: w.row.slices, overdraftNanos: w.row.overdraftNanos, timeoutSeconds: timeoutSeconds(w) }) })),
      now,
    );
    for (const w of ws) w.replay = !(firstById.get(w.row.id) === w && inserted.has(w.row.id));
    const odByWallet = new Map<string, bigint>();
    for (const w of unique) if (inserted.has(w.row.id) && w.row.overdraftNanos > 0n) odByWallet.set(w.wallet.id, (odByWallet.get(w.wallet.id) ?? 0n) + w.row.overdraftNanos);
    for (const [wid, n] of odByWallet) await S.addOverdraft(tx, tenant, wid, { postedNanos: 0n, heldNanos: n, enforceLimit: true });
  }

  async function authorizeMany(tenant: string, inputs: AuthorizeInput[], attempt = 0): Promise<AuthorizeOutcome[]> {
    const out: AuthorizeOutcome[] = inputs.map((i) => ({ id: i.id, result: "invalid", hold: null, unit: i.unit, walletId: "", availableNanos: 0n, error: "" }));
    const wallets = await Promise.all(inputs.map((i) => resolveWallet(tenant, i.customerId, i.unit)));
    const now = clock.now();
    const work: Array<HoldWork & { index: number }> = [];
    await Promise.all(
      inputs.map(async (input, index) => {
        const wallet = wallets[index];
        if (!wallet) {
          out[index] = { ...out[index]!, result: "wallet_not_found", error: `no wallet for customer ${input.customerId} and unit ${input.unit}` };
          return;
        }
        const r = await reserve(tenant, wallet.id, input.amountNanos, "all", input.chargeId, input.model);
        if (r.kind === "insufficient") {
          out[index] = { ...out[index]!, result: "insufficient", walletId: wallet.id, availableNanos: r.availableAfterNanos, error: `insufficient balance (available ${r.availableAfterNanos} nanos)` };
          return;
        }
        const row: HoldRow = {
          id: input.id,
          walletId: wallet.id,
          amountNanos: input.amountNanos,
          slices: r.slices,
          overdraftNanos: r.overdraftNanos,
          uncoveredNanos: r.uncoveredNanos,
          state: "pending",
          expiresAt: new Date(now.getTime() + input.ttlMs),
          capturedNanos: 0n,
          chargeId: input.chargeId,
          model: input.model,
          requestHash: requestHash({ c: input.customerId, u: input.unit, a: input.amountNanos, t: input.ttlMs, ch: input.chargeId, m: input.model }),
          createdAt: now,
        };
        work.push({ input, wallet, r, row, replay: false, index });
        out[index] = { ...out[index]!, result: "ok", hold: row, walletId: wallet.id, availableNanos: r.availableAfterNanos };
      }),
    );
    work.sort((a, b) => a.index - b.index);
    // A refused item may be a replay of a hold placed when there was room: answer with that hold.
    const refused = out.map((o, i) => ({ o, i })).filter(({ o }) => o.result === "insufficient");
    if (refused.length > 0) {
      const prior = await S.getHolds(db, tenant, refused.map(({ o }) => o.id));
      for (const { o, i } of refused) {
        const p = prior.get(o.id);
        if (!p) continue;
        const input = inputs[i]!;
        const same = p.requestHash === requestHash({ c: input.customerId, u: input.unit, a: input.amountNanos, t: input.ttlMs, ch: input.chargeId, m: input.model }) && p.walletId === wallets[i]?.id;
        out[i] = same ? { ...o, result: "ok", hold: p, error: "" } : { ...o, result: "id_reused", error: `id ${o.id} was already used with different content` };
      }
    }
    const errs = await commitGroup(work, (tx, ws) => applyHolds(tx, tenant, ws));
    const retry: Array<{ index: number; input: AuthorizeInput }> = [];
    const replays: Array<HoldWork & { index: number }> = [];
    for (let k = 0; k < work.length; k++) {
      const w = work[k]!;
      const e = errs[k];
      if (e) {
        await unreserve(tenant, w.wallet.id, w.r);
        if (!(e instanceof S.GuardError)) throw e;
        await rt.invalidate(ref(tenant, w.wallet.id));
        retry.push({ index: w.index, input: w.input });
      } else if (w.replay) {
        await unreserve(tenant, w.wallet.id, w.r);
        replays.push(w);
      }
    }
    if (replays.length > 0) {
      const prior = await S.getHolds(db, tenant, replays.map((w) => w.row.id));
      for (const w of replays) {
        const p = prior.get(w.row.id);
        if (!p || p.requestHash !== w.row.requestHash || p.walletId !== w.wallet.id) out[w.index] = { ...out[w.index]!, result: "id_reused", hold: null, error: `id ${w.row.id} was already used with different content` };
        else out[w.index] = { ...out[w.index]!, result: "ok", hold: p };
      }
    }
    if (retry.length > 0) {
      if (attempt >= REALTIME_RELOADS_MAX) {
        for (const r of retry) out[r.index] = { ...out[r.index]!, result: "insufficient", hold: null, error: "insufficient balance" };
      } else {
        const again = await authorizeMany(tenant, retry.map((r) => r.input), attempt + 1);
        retry.forEach((r, j) => (out[r.index] = again[j]!));
      }
    }
    // Holds answer once PostgreSQL has them (durable, the source of truth); their pending ledger
    // transfers are posted right after by the outbox, off the caller's latency (a later Capture or
    // Release flushes the outbox first, so the ledger always sees pending before post/void).
    if (attempt === 0 && work.length > 0) kickOutbox();
    return out;
  }

  // ------------------------------------------------------------ consume (burns)

  interface BurnWork {
    input: ConsumeInput;
    wallet: WalletRow;
    r: Reserved;
    row: ConsumptionRow;
    replay: boolean;
    index: number;
  }

  async function applyBurns(tx: Queryable, tenant: string, ws: BurnWork[]): Promise<void> {
    const now = clock.now();
    const inserted = await S.insertConsumptions(tx, tenant, ws.map((w) => w.row), now);
    const fresh = ws.filter((w) => inserted.has(w.row.id));
    for (const w of ws) w.replay = !inserted.has(w.row.id);
    await S.applyGrantDeltas(tx, tenant, fresh.flatMap((w) => w.r.slices.map((s) => ({ grantId: s.grantId, burned: s.amountNanos }))));
    const odByWallet = new Map<string, bigint>();
    for (const w of fresh) if (w.r.overdraftNanos > 0n) odByWallet.set(w.wallet.id, (odByWallet.get(w.wallet.id) ?? 0n) + w.r.overdraftNanos);
    for (const [wid, n] of odByWallet) await S.addOverdraft(tx, tenant, wid, { postedNanos: n, heldNanos: 0n, enforceLimit: true });
    await S.insertMovements(
      tx,
      tenant,
      fresh.flatMap((w) => [
        ...w.r.slices.map((s, i) => ({ id: `mv_b:${w.row.id}:${i}`, walletId: w.wallet.id, grantId: s.grantId, kind: "burn" as const, amountNanos: s.amountNanos, sourceId: w.row.id, eventId: w.row.eventId, ledgerTransferId: burnTransferId("b", w.row.id, i), occurredAt: now })),
        { id: `mv_b:${w.row.id}:od`, walletId: w.wallet.id, grantId: "", kind: "overdraft" as const, amountNanos: w.r.overdraftNanos, sourceId: w.row.id, eventId: w.row.eventId, ledgerTransferId: burnTransferId("b", w.row.id, "od"), occurredAt: now },
      ]),
    );
    await S.enqueueTransfers(
      tx,
      tenant,
      fresh.map((w) => burnTransfers({ sourceId: w.row.id, l: L(w.wallet), slices: w.r.slices, overdraftNanos: w.r.overdraftNanos, eventId: w.row.eventId })),
      now,
    );
  }

  function consumeHash(i: ConsumeInput) {
    return requestHash({ c: i.customerId, u: i.unit, a: i.amountNanos, e: i.eventId, ch: i.chargeId, m: i.model, o: i.occurredAt.getTime() });
  }

  async function consumeMany(tenant: string, inputs: ConsumeInput[], attempt = 0): Promise<ConsumeOutcome[]> {
    const out: ConsumeOutcome[] = inputs.map((i) => ({ id: i.id, result: "invalid", consumedNanos: 0n, shortfallNanos: i.amountNanos, walletId: "", error: "", replayed: false }));
    // Replays first (cheap, one query): a replay must not burn again even transiently.
    const prior = await S.getConsumptions(db, tenant, inputs.map((i) => i.id));
    const wallets = await Promise.all(inputs.map((i) => resolveWallet(tenant, i.customerId, i.unit)));
    const work: BurnWork[] = [];
    await Promise.all(
      inputs.map(async (input, index) => {
        const p = prior.get(input.id);
        if (p) {
          out[index] = p.requestHash === consumeHash(input) ? outcomeOf(p, true) : { ...out[index]!, result: "id_reused", error: `id ${input.id} was already used with different content` };
          return;
        }
        const wallet = wallets[index];
        if (!wallet) {
          out[index] = { ...out[index]!, result: "wallet_not_found", error: `no wallet for customer ${input.customerId} and unit ${input.unit}` };
          return;
        }
        const r = await reserve(tenant, wallet.id, input.amountNanos, "partial", input.chargeId, input.model);
        const consumed = input.amountNanos - r.shortfallNanos;
        const row: ConsumptionRow = {
          source: "consume",
          id: input.id,
          walletId: wallet.id,
          customerId: input.customerId,
          unit: input.unit,
          amountNanos: input.amountNanos,
          consumedNanos: consumed,
          shortfallNanos: r.shortfallNanos,
          eventId: input.eventId,
          chargeId: input.chargeId,
          model: input.model,
          holdId: "",
          occurredAt: input.occurredAt,
          requestHash: consumeHash(input),
        };
        work.push({ input, wallet, r, row, replay: false, index });
      }),
    );
    work.sort((a, b) => a.index - b.index);
    const errs = await commitGroup(work, (tx, ws) => applyBurns(tx, tenant, ws));
    const retry: Array<{ index: number; input: ConsumeInput }> = [];
    const replays: BurnWork[] = [];
    for (let k = 0; k < work.length; k++) {
      const w = work[k]!;
      const e = errs[k];
      if (e) {
        await unreserve(tenant, w.wallet.id, w.r);
        if (!(e instanceof S.GuardError)) throw e;
        await rt.invalidate(ref(tenant, w.wallet.id));
        retry.push({ index: w.index, input: w.input });
      } else if (w.replay) {
        await unreserve(tenant, w.wallet.id, w.r);
        replays.push(w);
      } else {
        out[w.index] = outcomeOf(w.row, false);
      }
    }
    if (replays.length > 0) {
      const again = await S.getConsumptions(db, tenant, replays.map((w) => w.row.id));
      for (const w of replays) {
        const p = again.get(w.row.id)!;
        out[w.index] = p.requestHash === w.row.requestHash ? outcomeOf(p, true) : { ...out[w.index]!, result: "id_reused", error: `id ${w.row.id} was already used with different content` };
      }
    }
    if (retry.length > 0 && attempt < REALTIME_RELOADS_MAX) {
      const again = await consumeMany(tenant, retry.map((r) => r.input), attempt + 1);
      retry.forEach((r, j) => (out[r.index] = again[j]!));
    } else if (retry.length > 0) {
      throw new WalletError({ kind: "unavailable", message: "wallet state kept changing; retry" });
    }
    if (attempt === 0) {
      if (work.length > 0) await deps.outbox.flush();
      await autoTopUps(tenant, work.filter((w) => !w.replay).map((w) => ({ wallet: w.wallet, availableNanos: w.r.availableAfterNanos })));
    }
    return out;
  }

  function outcomeOf(c: ConsumptionRow, replayed: boolean): ConsumeOutcome {
    const result: ConsumeResultKind = c.shortfallNanos === 0n ? "ok" : c.consumedNanos === 0n ? "insufficient" : "partial";
    return { id: c.id, result, consumedNanos: c.consumedNanos, shortfallNanos: c.shortfallNanos, walletId: c.walletId, error: "", replayed };
  }

  // ------------------------------------------------------------ auto top-up and low balance

  async function autoTopUps(tenant: string, changes: Array<{ wallet: WalletRow; availableNanos: bigint }>): Promise<void> {
    const lowest = new Map<string, { wallet: WalletRow; availableNanos: bigint }>();
    for (const c of changes) {
      const cur = lowest.get(c.wallet.id);
      if (!cur || c.availableNanos < cur.availableNanos) lowest.set(c.wallet.id, c);
    }
    for (const { wallet, availableNanos } of lowest.values()) {
      const cfg = wallet.autoTopUp;
      if (!cfg || availableNanos >= cfg.thresholdNanos) continue;
      const now = clock.now();
      let topUp: { grantId: string; amount: bigint } | null = null;
      await db.transaction(async (tx) => {
        const w = await mustWallet(tenant, wallet.id, tx, true);
        const real = decideAutoTopUp(cfg, { armed: w.topUpArmed, lastTopUpAtMs: w.lastTopUpAt?.getTime() ?? null }, availableNanos, now.getTime());
        if (!real.crossed) return;
        if (real.topUpNanos > 0n) {
          const seq = await S.claimTopUp(tx, tenant, w.id, now, cfg.cooldownMs);
          if (seq === null) return;
          const grantId = `${w.id}:topup:${seq}`;
          topUp = { grantId, amount: real.topUpNanos };
          const g: GrantInput = {
            id: grantId,
            walletId: w.id,
            kind: "purchased",
            amountNanos: real.topUpNanos,
            costBasis: cfg.costBasis || "1",
            costBasisCurrency: cfg.costBasisCurrency || (w.kind === "prepaid" ? w.unit : ""),
            priority: 0,
            effectiveAt: now,
            expiresAt: null,
            scope: { chargeIds: [], models: [] },
            rollover: null,
            periodEnd: null,
            renew: false,
            invoiceId: "",
            description: "auto top-up",
          };
          await writeGrant(tx, tenant, w, g, grantHash(g), now, true);
          // Back at or above the threshold: the next downward crossing may top up again (after the cooldown).
          if (availableNanos + real.topUpNanos >= cfg.thresholdNanos) await S.armTopUp(tx, tenant, w.id);
          await S.insertAlert(tx, tenant, { id: `alr_topup_${grantId}`, kind: "auto_top_up", walletId: w.id, customerId: w.customerId, grantId, amountNanos: real.topUpNanos, unit: w.unit, expiresAt: null, createdAt: now });
        } else if (await S.disarmTopUp(tx, tenant, w.id)) {
          await S.insertAlert(tx, tenant, { id: `alr_low_${w.id}_${now.getTime()}`, kind: "low_balance", walletId: w.id, customerId: w.customerId, grantId: "", amountNanos: availableNanos, unit: w.unit, expiresAt: null, createdAt: now });
        }
      });
      if (topUp) {
        await rt.invalidate(ref(tenant, wallet.id));
        await deps.outbox.flush();
      }
    }
  }

  // ------------------------------------------------------------ capture / release / hold expiry

  async function mustHold(tenant: string, holdId: string): Promise<HoldRow> {
    const h = await S.getHold(db, tenant, holdId);
    if (!h) throw new WalletError({ kind: "not_found", what: "hold", id: holdId });
    return h;
  }

  async function capture(tenant: string, c: CaptureInput): Promise<{ hold: HoldRow; capturedNanos: bigint; releasedNanos: bigint; shortfallNanos: bigint }> {
    const h = await mustHold(tenant, c.holdId);
    const now = clock.now();
    const hash = requestHash({ a: c.amountNanos, e: c.eventId, ch: c.chargeId, o: c.occurredAt?.getTime() ?? null });
    if (h.state !== "pending") return replayCapture(tenant, h, hash);
    if (now.getTime() >= h.expiresAt.getTime()) throw new WalletError({ kind: "hold_expired", holdId: h.id });
    const wallet = await mustWallet(tenant, h.walletId);
    const plan = planCapture(h, c.amountNanos);
    const extra = plan.extraNanos > 0n ? await reserve(tenant, wallet.id, plan.extraNanos, "partial", h.chargeId, h.model) : null;
    const gen = await genBefore(tenant, wallet.id);
    let expiredRelease: Slice[] = [];
    let raced: HoldRow | null = null;
    try {
      await db.transaction(async (tx) => {
        const locked = (await S.getHold(tx, tenant, h.id, true))!;
        if (locked.state !== "pending") {
          raced = locked;
          return;
        }
        const grants = await grantStates(tx, tenant, h.slices.map((s) => s.grantId));
        expiredRelease = plan.releaseSlices.filter((s) => s.amountNanos > 0n && grants.get(s.grantId) !== "active");
        const extraSlices = extra?.slices ?? [];
        const extraOd = extra?.overdraftNanos ?? 0n;
        const shortfall = extra?.shortfallNanos ?? 0n;
        await S.resolveHold(tx, tenant, h.id, "captured", c.amountNanos - shortfall, now);
        await S.applyGrantDeltas(tx, tenant, [
          ...h.slices.map((s, i) => ({ grantId: s.grantId, held: -s.amountNanos, burned: plan.burnSlices[i]!.amountNanos })),
          ...expiredRelease.map((s) => ({ grantId: s.grantId, expired: s.amountNanos })),
          ...extraSlices.map((s) => ({ grantId: s.grantId, burned: s.amountNanos })),
        ]);
        await S.addOverdraft(tx, tenant, wallet.id, { postedNanos: plan.overdraftBurnNanos + extraOd, heldNanos: -h.overdraftNanos, enforceLimit: extraOd > 0n });
        const occurredAt = c.occurredAt ?? now;
        await S.insertConsumptions(
          tx,
          tenant,
          [{ source: "capture", id: h.id, walletId: wallet.id, customerId: wallet.customerId, unit: wallet.unit, amountNanos: c.amountNanos, consumedNanos: c.amountNanos - shortfall, shortfallNanos: shortfall, eventId: c.eventId, chargeId: c.chargeId || h.chargeId, model: h.model, holdId: h.id, occurredAt, requestHash: hash }],
          now,
        );
        const resolve = resolveHoldTransfers({ holdId: h.id, burn: plan.burnSlices, overdraftHeldNanos: h.overdraftNanos, overdraftBurnNanos: plan.overdraftBurnNanos });
        const extraTs = extraSlices.length + Number(extraOd > 0n) > 0 ? burnTransfers({ sourceId: h.id, l: L(wallet), slices: extraSlices, overdraftNanos: extraOd, eventId: c.eventId, prefix: "c" }) : [];
        const breakage = expiredRelease.map((s) => expiryTransfer({ grantId: s.grantId, l: L(wallet), amountNanos: s.amountNanos, suffix: `:${h.id}` }));
        await S.insertMovements(tx, tenant, [
          ...plan.burnSlices.map((s, i) => ({ id: `mv_c:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "burn" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, eventId: c.eventId, ledgerTransferId: postTransferId(h.id, i), occurredAt: now })),
          ...plan.releaseSlices.map((s, i) => ({ id: `mv_cr:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "release" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: voidTransferId(h.id, i), occurredAt: now })),
          ...breakage.map((t, i) => ({ id: `mv_cx:${h.id}:${i}`, walletId: wallet.id, grantId: expiredRelease[i]!.grantId, kind: "expire" as const, amountNanos: expiredRelease[i]!.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: t.id, occurredAt: now })),
          ...extraSlices.map((s, i) => ({ id: `mv_ce:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "burn" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, eventId: c.eventId, ledgerTransferId: burnTransferId("c", h.id, i), occurredAt: now })),
          { id: `mv_c:${h.id}:od`, walletId: wallet.id, grantId: "", kind: "overdraft" as const, amountNanos: plan.overdraftBurnNanos + extraOd, sourceId: h.id, holdId: h.id, occurredAt: now },
        ]);
        await S.enqueueTransfers(tx, tenant, [resolve, extraTs, breakage], now);
      });
    } catch (e) {
      if (extra) await unreserve(tenant, wallet.id, extra);
      if (e instanceof S.GuardError) {
        await rt.invalidate(ref(tenant, wallet.id));
        throw new WalletError({ kind: "unavailable", message: "wallet state changed during capture; retry" });
      }
      throw e;
    }
    if (raced) {
      if (extra) await unreserve(tenant, wallet.id, extra);
      return replayCapture(tenant, raced, hash);
    }
    const released = plan.releaseSlices.filter((s) => !expiredRelease.some((x) => x.grantId === s.grantId));
    await creditAfter(tenant, wallet.id, gen, released, plan.overdraftReleaseNanos);
    await deps.outbox.flush();
    if (extra) await autoTopUps(tenant, [{ wallet, availableNanos: extra.availableAfterNanos }]);
    const after = await mustHold(tenant, h.id);
    const shortfall = extra?.shortfallNanos ?? 0n;
    const releasedNanos = plan.releaseSlices.reduce((s, x) => s + x.amountNanos, 0n) + plan.overdraftReleaseNanos;
    return { hold: after, capturedNanos: c.amountNanos - shortfall, releasedNanos, shortfallNanos: shortfall };
  }

  async function replayCapture(tenant: string, h: HoldRow, hash: string) {
    if (h.state !== "captured") throw new WalletError({ kind: "hold_not_pending", holdId: h.id, state: h.state });
    const r = await db.query<{ request_hash: string; shortfall_nanos: bigint }>(`SELECT request_hash, shortfall_nanos FROM consumptions WHERE tenant = $1 AND source = 'capture' AND id = $2`, [tenant, h.id]);
    const row = r.rows[0];
    if (!row || row.request_hash !== hash) throw new WalletError({ kind: "id_reused", field: "hold_id", id: h.id });
    const shortfall = BigInt(row.shortfall_nanos);
    return { hold: h, capturedNanos: h.capturedNanos, releasedNanos: reservedNanos(h) > h.capturedNanos ? reservedNanos(h) - (h.capturedNanos < reservedNanos(h) ? h.capturedNanos : reservedNanos(h)) : 0n, shortfallNanos: shortfall };
  }

  async function grantStates(q: Queryable, tenant: string, ids: string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const r = await q.query<{ id: string; state: string }>(`SELECT id, state FROM grants WHERE tenant = $1 AND id = ANY($2::text[])`, [tenant, ids]);
    return new Map(r.rows.map((x) => [x.id, x.state]));
  }

  /** Release (or expiry) of a pending hold: everything goes back (to breakage for expired grants). */
  async function releaseHold(tenant: string, holdId: string, state: "released" | "expired"): Promise<{ hold: HoldRow; releasedNanos: bigint }> {
    const h = await mustHold(tenant, holdId);
    if (h.state !== "pending") {
      if (h.state === state || (state === "released" && h.state === "expired")) return { hold: h, releasedNanos: 0n };
      throw new WalletError({ kind: "hold_not_pending", holdId: h.id, state: h.state });
    }
    const wallet = await mustWallet(tenant, h.walletId);
    const now = clock.now();
    const gen = await genBefore(tenant, wallet.id);
    let expiredRelease: Slice[] = [];
    let raced = false;
    await db.transaction(async (tx) => {
      const locked = (await S.getHold(tx, tenant, h.id, true))!;
      if (locked.state !== "pending") {
        raced = true;
        return;
      }
      const grants = await grantStates(tx, tenant, h.slices.map((s) => s.grantId));
      expiredRelease = h.slices.filter((s) => grants.get(s.grantId) !== "active");
      await S.resolveHold(tx, tenant, h.id, state, 0n, now);
      await S.applyGrantDeltas(tx, tenant, [...h.slices.map((s) => ({ grantId: s.grantId, held: -s.amountNanos })), ...expiredRelease.map((s) => ({ grantId: s.grantId, expired: s.amountNanos }))]);
      await S.addOverdraft(tx, tenant, wallet.id, { postedNanos: 0n, heldNanos: -h.overdraftNanos, enforceLimit: false });
      const voids = resolveHoldTransfers({ holdId: h.id, burn: h.slices.map((s) => ({ grantId: s.grantId, amountNanos: 0n })), overdraftHeldNanos: h.overdraftNanos, overdraftBurnNanos: 0n });
      const breakage = expiredRelease.map((s) => expiryTransfer({ grantId: s.grantId, l: L(wallet), amountNanos: s.amountNanos, suffix: `:${h.id}` }));
      await S.insertMovements(tx, tenant, [
        ...h.slices.map((s, i) => ({ id: `mv_r:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "release" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: voidTransferId(h.id, i), occurredAt: now })),
        ...breakage.map((t, i) => ({ id: `mv_rx:${h.id}:${i}`, walletId: wallet.id, grantId: expiredRelease[i]!.grantId, kind: "expire" as const, amountNanos: expiredRelease[i]!.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: t.id, occurredAt: now })),
      ]);
      await S.enqueueTransfers(tx, tenant, [voids, breakage], now);
    });
    if (raced) return releaseHold(tenant, holdId, state);
    await creditAfter(tenant, wallet.id, gen, h.slices.filter((s) => !expiredRelease.some((x) => x.grantId === s.grantId)), h.overdraftNanos);
    await deps.outbox.flush();
    const released = h.slices.reduce((s, x) => s + x.amountNanos, 0n) + h.overdraftNanos;
    return { hold: await mustHold(tenant, h.id), releasedNanos: released };
  }

  // ------------------------------------------------------------ expiry, rollover

  async function runExpiry(tenant: string, asOf: Date, walletId: string) {
    let holdsExpired = 0;
    for (const h of await S.listExpiredHolds(db, tenant, walletId, asOf, RUN_WALLETS_MAX)) {
      const r = await releaseHold(tenant, h.id, "expired");
      if (r.hold.state === "expired") holdsExpired++;
    }
    let grantsExpired = 0;
    let breakageNanos = 0n;
    const touched = new Set<string>();
    for (const g of await S.listExpiredGrants(db, tenant, walletId, new Date(asOf.getTime() - graceMs), RUN_WALLETS_MAX)) {
      const wallet = await mustWallet(tenant, g.walletId);
      await db.transaction(async (tx) => {
        const cur = await tx.query(`SELECT 1 FROM grants WHERE tenant = $1 AND id = $2 AND state = 'active' FOR UPDATE`, [tenant, g.id]);
        if (cur.rowCount === 0) return;
        const fresh = (await S.getGrant(tx, tenant, g.id))!;
        const amount = breakageAt({ ...fresh, expiresAtMs: fresh.expiresAt!.getTime() }, asOf.getTime(), graceMs);
        await S.setGrantState(tx, tenant, g.id, "expired");
        grantsExpired++;
        touched.add(g.walletId);
        if (amount === 0n) return;
        breakageNanos += amount;
        await S.applyGrantDeltas(tx, tenant, [{ grantId: g.id, expired: amount }]);
        const t = expiryTransfer({ grantId: g.id, l: L(wallet), amountNanos: amount });
        await S.insertMovements(tx, tenant, [{ id: `mv_x:${g.id}`, walletId: wallet.id, grantId: g.id, kind: "expire", amountNanos: amount, sourceId: g.id, ledgerTransferId: t.id, occurredAt: asOf }]);
        await S.enqueueTransfers(tx, tenant, [[t]], clock.now());
      });
    }
    for (const w of touched) await rt.invalidate(ref(tenant, w));
    let alertsRaised = 0;
    for (const g of await S.listExpiringGrants(db, tenant, walletId, asOf, new Date(asOf.getTime() + noticeMs), RUN_WALLETS_MAX)) {
      if (!expiryNoticeDue({ ...g, expiresAtMs: g.expiresAt!.getTime() }, asOf.getTime(), noticeMs)) continue;
      const w = await mustWallet(tenant, g.walletId);
      const ok = await S.insertAlert(db, tenant, {
        id: `alr_exp_${g.id}`,
        kind: "credits_expiring",
        walletId: w.id,
        customerId: w.customerId,
        grantId: g.id,
        amountNanos: remainderNanos({ ...g, expiresAtMs: null }),
        unit: w.unit,
        expiresAt: g.expiresAt,
        createdAt: asOf,
      });
      if (ok) alertsRaised++;
    }
    await deps.outbox.flush();
    return { grantsExpired, breakageNanos, holdsExpired, alertsRaised };
  }

  async function runRollover(tenant: string, asOf: Date, walletId: string) {
    const outcomes: Array<{ grantId: string; remainderNanos: bigint; rolledOverNanos: bigint; expiredNanos: bigint; rolloverGrantId: string; renewedGrantId: string }> = [];
    for (const g of await S.listPeriodEndedGrants(db, tenant, walletId, asOf, RUN_WALLETS_MAX)) {
      const now = clock.now();
      await db.transaction(async (tx) => {
        const w = await mustWallet(tenant, g.walletId, tx, true);
        const lock = await tx.query(`SELECT 1 FROM grants WHERE tenant = $1 AND id = $2 AND state = 'active' FOR UPDATE`, [tenant, g.id]);
        if (lock.rowCount === 0) return;
        const fresh = (await S.getGrant(tx, tenant, g.id))!;
        const remainder = remainderNanos({ ...fresh, expiresAtMs: null });
        const rule = fresh.rollover ?? { mode: "none" as const, capNanos: 0n, percentBps: 0, expiresAfterMs: 0 };
        const plan = planRollover(rule, remainder > 0n ? remainder : 0n);
        const periodEnd = fresh.periodEnd!;
        await S.setGrantState(tx, tenant, fresh.id, "rolled_over");
        await S.applyGrantDeltas(tx, tenant, [{ grantId: fresh.id, expired: plan.rolledOverNanos + plan.expiredNanos }]);
        let rolloverGrantId = "";
        if (plan.rolledOverNanos > 0n) {
          rolloverGrantId = `${fresh.rootId}:p${fresh.periodIndex}:ro`;
          const rg: GrantInput = {
            id: rolloverGrantId,
            walletId: w.id,
            kind: "rollover",
            amountNanos: plan.rolledOverNanos,
            costBasis: fresh.costBasis,
            costBasisCurrency: fresh.costBasisCurrency,
            priority: fresh.priority,
            effectiveAt: periodEnd,
            expiresAt: rule.expiresAfterMs > 0 ? new Date(periodEnd.getTime() + rule.expiresAfterMs) : null,
            scope: fresh.scope,
            rollover: null,
            periodEnd: null,
            renew: false,
            invoiceId: "",
            description: `rollover of ${fresh.id}`,
          };
          // Same wallet account: the rollover moves no ledger money (ledgerFunded = false).
          await writeGrant(tx, tenant, w, { ...rg, rootId: fresh.rootId, periodIndex: fresh.periodIndex }, grantHash(rg), now, false);
        }
        const ts: PlannedTransfer[] = [];
        if (plan.expiredNanos > 0n) ts.push(expiryTransfer({ grantId: fresh.id, l: L(w), amountNanos: plan.expiredNanos }));
        await S.insertMovements(tx, tenant, [
          { id: `mv_ro:${fresh.id}`, walletId: w.id, grantId: fresh.id, kind: "rollover", amountNanos: plan.rolledOverNanos, sourceId: rolloverGrantId, occurredAt: periodEnd },
          { id: `mv_x:${fresh.id}`, walletId: w.id, grantId: fresh.id, kind: "expire", amountNanos: plan.expiredNanos, sourceId: fresh.id, ledgerTransferId: ts[0]?.id ?? "", occurredAt: periodEnd },
        ]);
        await S.enqueueTransfers(tx, tenant, [ts], now);
        let renewedGrantId = "";
        if (fresh.renew) {
          const np = nextPeriod(fresh.effectiveAt.getTime(), periodEnd.getTime());
          renewedGrantId = `${fresh.rootId}:p${fresh.periodIndex + 1}`;
          const ng: GrantInput = {
            id: renewedGrantId,
            walletId: w.id,
            kind: "allowance",
            amountNanos: fresh.amountNanos,
            costBasis: fresh.costBasis,
            costBasisCurrency: fresh.costBasisCurrency,
            priority: fresh.priority,
            effectiveAt: new Date(np.effectiveAtMs),
            expiresAt: null,
            scope: fresh.scope,
            rollover: fresh.rollover,
            periodEnd: new Date(np.periodEndMs),
            renew: true,
            invoiceId: "",
            description: fresh.description,
          };
          await writeGrant(tx, tenant, w, { ...ng, rootId: fresh.rootId, periodIndex: fresh.periodIndex + 1 }, grantHash(ng), now, true);
        }
        outcomes.push({ grantId: fresh.id, remainderNanos: remainder, rolledOverNanos: plan.rolledOverNanos, expiredNanos: plan.expiredNanos, rolloverGrantId, renewedGrantId });
      });
      await rt.invalidate(ref(tenant, g.walletId));
    }
    await deps.outbox.flush();
    return outcomes;
  }

  // ------------------------------------------------------------ reads

  async function balanceOf(tenant: string, w: WalletRow): Promise<Balance> {
    const grants = await S.listGrants(db, tenant, w.id, { activeOnly: false });
    let balance = -w.overdraftPostedNanos;
    let held = w.overdraftHeldNanos;
    for (const g of grants) {
      balance += g.amountNanos - g.burnedNanos - g.expiredNanos;
      held += g.heldNanos;
    }
    const sorted = sortForBurn(grants.map((g) => ({ ...S.toBurnGrant(g), row: g }))).map((x) => x.row);
    const active = sorted.filter((g) => g.state === "active");
    const closed = sorted.filter((g) => g.state !== "active");
    return { wallet: w, balanceNanos: balance, heldNanos: held, availableNanos: balance - held, overdraftNanos: w.overdraftPostedNanos + w.overdraftHeldNanos, grants: [...active, ...closed] };
  }

  async function getBalance(tenant: string, q: { walletId: string; customerId: string; unit: string }): Promise<Balance> {
    const w = q.walletId ? await S.getWallet(db, tenant, q.walletId) : await S.findWallet(db, tenant, q.customerId, q.unit);
    if (!w) throw new WalletError({ kind: "not_found", what: "wallet", id: q.walletId || `${q.customerId}/${q.unit}` });
    return balanceOf(tenant, w);
  }

  return {
    createCreditType,
    setExchangeRate,
    getCreditType,
    creditsForCost,
    createWallet,
    setPolicy,
    setAutoTopUp,
    grant,
    authorizeMany,
    consumeMany,
    capture,
    release: (tenant: string, holdId: string) => releaseHold(tenant, holdId, "released"),
    runExpiry,
    runRollover,
    getBalance,
    mustWallet,
    findWallet: (tenant: string, customerId: string, unit: string) => S.findWallet(db, tenant, customerId, unit),
    loadState,
    logger,
  };
}

export type Engine = ReturnType<typeof createEngine>;
