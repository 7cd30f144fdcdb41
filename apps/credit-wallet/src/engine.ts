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
import { isDbError, type Db, type Queryable } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { INT64_MAX, isUnitCode } from "@nanobill/money";
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
import { createKeyedGate, GateWaitTimeout } from "./keyed-gate.js";
import type { LedgerOutbox } from "./ledger-outbox.js";
import type { LedgerPort } from "./ledger-port.js";
import {
  BALANCE_GRANTS_MAX,
  COMMIT_BATCH_OPS_MAX,
  EXPIRY_GRACE_MS_DEFAULT,
  EXPIRY_NOTICE_MS_DEFAULT,
  GRANTS_PER_WALLET_OPEN_MAX,
  WALLET_GRANTED_NANOS_MAX,
  HOLD_LEDGER_GRACE_MS,
  RATES_PER_CREDIT_TYPE_MAX,
  ONE_STATEMENT_RETRIES_MAX,
  REALTIME_RELOADS_MAX,
  RUN_WALLETS_MAX,
  GATE_WAIT_MS_MAX,
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
  /** How long an item waits for its id's first attempt in flight here (default GATE_WAIT_MS_MAX; tests shorten it). */
  gateWaitMs?: number;
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
  /** The grant's own expiry grace (null: the deployment default at expiry). */
  expiryGraceMs: number | null;
  /** effective_at was unset in the request and filled with now (fingerprinted as unset). */
  effectiveAtDefaulted?: boolean;
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
  /** occurred_at was unset in the request and filled with now (fingerprinted as unset). */
  occurredAtDefaulted?: boolean;
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
  /** Set when the item was not run: its id's first attempt was still in flight after GATE_WAIT_MS_MAX (the call answers Unavailable). */
  unavailable?: string;
}

export interface AuthorizeInput {
  id: string;
  customerId: string;
  unit: string;
  amountNanos: bigint;
  ttlMs: number;
  chargeId: string;
  model: string;
  /** The request gave max_cost_nanos in a currency (amountNanos is its conversion): fingerprinted as sent. */
  maxCost?: { nanos: bigint; currency: string } | null;
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
  /** Set when the item was not run: its id's first attempt was still in flight after GATE_WAIT_MS_MAX (the call answers Unavailable). */
  unavailable?: string;
}

export interface CaptureInput {
  holdId: string;
  amountNanos: bigint;
  eventId: string;
  chargeId: string;
  occurredAt: Date | null;
}

export interface CaptureOutcome {
  hold: HoldRow;
  capturedNanos: bigint;
  releasedNanos: bigint;
  shortfallNanos: bigint;
}

export interface ReleaseOutcome {
  hold: HoldRow;
  releasedNanos: bigint;
}

/** Part of a hold's release on a rolled-over allowance that followed its rollover rule into the rollover grant. */
interface RolledPart {
  grantId: string;
  amountNanos: bigint;
  rolloverGrantId: string;
}

/** One item's outcome in a group: a value, or the error it alone failed with. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };
const fail = (error: unknown): { ok: false; error: unknown } => ({ ok: false, error });
/**
 * When some key repeats in `inputs`: runs `fn` on the first occurrence of each key, then (again
 * through this split) on the repeats, and returns the outcomes in input order; null when no key
 * repeats. So a repeat always sees what its first occurrence did.
 */
async function firstsThenRepeats<I, O>(inputs: I[], keyOf: (i: I) => string, fn: (items: I[]) => Promise<O[]>): Promise<O[] | null> {
  const seen = new Set<string>();
  const firsts: number[] = [];
  const repeats: number[] = [];
  inputs.forEach((x, i) => {
    const k = keyOf(x);
    if (seen.has(k)) repeats.push(i);
    else {
      seen.add(k);
      firsts.push(i);
    }
  });
  if (repeats.length === 0) return null;
  const out: O[] = new Array(inputs.length);
  const a = await fn(firsts.map((i) => inputs[i]!));
  firsts.forEach((i, k) => (out[i] = a[k]!));
  const b = await fn(repeats.map((i) => inputs[i]!));
  repeats.forEach((i, k) => (out[i] = b[k]!));
  return out;
}

function unwrap<T>(s: Settled<T>): T {
  if (!s.ok) throw s.error;
  return s.value;
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
  const gateWaitMs = deps.gateWaitMs ?? GATE_WAIT_MS_MAX;
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
  /** Wallet rows of many (customer, unit) pairs: cached ones, the others in one statement. */
  async function resolveWallets(tenant: string, keys: Array<{ customerId: string; unit: string }>): Promise<Array<WalletRow | null>> {
    const out: Array<WalletRow | null> = new Array(keys.length).fill(null);
    const miss = new Map<string, number[]>();
    const now = Date.now();
    keys.forEach((k, i) => {
      const ck = cacheKey(tenant, k.customerId, k.unit);
      const hit = walletCache.get(ck);
      if (hit && now - hit.at < WALLET_CACHE_TTL_MS) out[i] = hit.row;
      else {
        const l = miss.get(ck);
        if (l) l.push(i);
        else miss.set(ck, [i]);
      }
    });
    if (miss.size === 0) return out;
    const found = await S.findWallets(db, tenant, [...miss.values()].map((ix) => keys[ix[0]!]!));
    for (const ix of miss.values()) {
      const k = keys[ix[0]!]!;
      const w = found.get(`${k.customerId}\u0000${k.unit}`) ?? null;
      if (w) remember(w);
      for (const i of ix) out[i] = w;
    }
    return out;
  }
  /** Drops a wallet row from the cache (its alert or top-up state changed): the next use reads it again. */
  function forget(tenant: string, w: WalletRow) {
    walletCache.delete(cacheKey(tenant, w.customerId, w.unit));
  }
  /** Group commits done (tests and benchmarks: concurrent calls share one). */
  const stats = { authorizeGroups: 0, authorizeItems: 0, captureGroups: 0, releaseGroups: 0 };
  async function mustWallet(tenant: string, walletId: string, q: Queryable = db, forUpdate = false): Promise<WalletRow> {
    const w = await S.getWallet(q, tenant, walletId, forUpdate);
    if (!w) throw new WalletError({ kind: "not_found", what: "wallet", id: walletId });
    return w;
  }

  // ------------------------------------------------------------ real-time state

  const loading = new Map<string, Promise<void>>();
  /**
   * Loads the real-time state of wallets from PostgreSQL: one snapshot statement for all of them,
   * then one load script each (installed only where no other replica did first). Concurrent callers
   * share the load of a wallet already in progress.
   */
  async function loadStates(tenant: string, walletIds: string[]): Promise<void> {
    const waits: Array<Promise<void>> = [];
    const todo: string[] = [];
    for (const id of new Set(walletIds)) {
      const p = loading.get(`${tenant}\u0000${id}`);
      if (p) waits.push(p);
      else todo.push(id);
    }
    if (todo.length > 0) {
      const p = (async () => {
        const snaps = await S.readSnapshotRowsMany(db, tenant, todo);
        await Promise.all(
          todo.map(async (walletId) => {
            const rows = snaps.get(walletId);
            if (!rows) throw new WalletError({ kind: "not_found", what: "wallet", id: walletId });
            const snap: WalletSnapshot = {
              grants: rows.grants.map(S.toBurnGrant),
              overdraftUsedNanos: rows.wallet.overdraftPostedNanos + rows.wallet.overdraftHeldNanos,
              overdraftLimitNanos: rows.wallet.policy.mode === "soft_negative" ? rows.wallet.policy.negativeLimitNanos : 0n,
              uncoveredAllowed: rows.wallet.policy.mode === "postpaid_overage",
            };
            await rt.load(ref(tenant, walletId), snap, randomId());
          }),
        );
      })().finally(() => {
        for (const id of todo) loading.delete(`${tenant}\u0000${id}`);
      });
      for (const id of todo) loading.set(`${tenant}\u0000${id}`, p);
      waits.push(p);
    }
    await Promise.all(waits);
  }
  const loadState = (tenant: string, walletId: string) => loadStates(tenant, [walletId]);

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

  /** The generation in force before a credit-type commit (null: no state loaded then). */
  async function genBefore(tenant: string, walletId: string): Promise<string | null> {
    return rt.gen(ref(tenant, walletId));
  }

  /**
   * Gives a committed credit back to the real-time state, under the generation read before the
   * commit. With no state then (null) there is nothing to add to, but a debit may have loaded one
   * from PostgreSQL since, from a snapshot taken before this commit (still counting what is given
   * back): the state is dropped, so the next call rebuilds it from PostgreSQL. (It returned without
   * doing anything: the amount never reached the real-time state, which stayed too low until a rebuild.)
   */
  async function creditAfter(tenant: string, walletId: string, gen: string | null, slices: Slice[], overdraftNanos: bigint): Promise<void> {
    const ss = slices.filter((s) => s.amountNanos > 0n);
    if (ss.length === 0 && overdraftNanos === 0n) return;
    if (gen === null) return rt.invalidate(ref(tenant, walletId));
    await rt.credit(ref(tenant, walletId), gen, ss, overdraftNanos);
  }

  /**
   * Group commit: all items in one transaction; on failure, one transaction per item. When
   * `oneStatement(items)` says apply issues a single statement for them, it runs without an explicit
   * transaction (a statement is atomic on its own: one round trip instead of BEGIN, it, COMMIT),
   * retried like a transaction on a deadlock or serialization failure.
   */
  async function commitGroup<T>(items: T[], apply: (tx: Queryable, items: T[]) => Promise<void>, oneStatement?: (items: T[]) => boolean): Promise<Array<null | unknown>> {
    const commit = async (its: T[]) => {
      if (!oneStatement?.(its)) return db.transaction((tx) => apply(tx, its));
      for (let i = 0; ; i++) {
        try {
          return await apply(db, its);
        } catch (e) {
          if (i >= ONE_STATEMENT_RETRIES_MAX || !isDbError(e) || !(e.code === "serialization" || e.sqlState === "40001" || e.sqlState === "40P01")) throw e;
        }
      }
    };
    if (items.length === 0) return [];
    try {
      await commit(items);
      return items.map(() => null);
    } catch (e) {
      if (items.length === 1) return [e];
    }
    const out: Array<null | unknown> = [];
    for (const it of items) {
      try {
        await commit([it]);
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

  /**
   * Creates a credit type with its first rate. Idempotent on id: a retry is compared with the name,
   * currency and the creation rate — the rate row at the effective_at the retry names, or (left unset:
   * now) the rate in force at the type's creation, whose rate row a defaulted effective_at dates at
   * created_at. (It compared the earliest rate row only, without its effective_at: a retry with
   * another effective_at was accepted, and an exact retry refused once an earlier-dated rate existed.)
   */
  async function createCreditType(tenant: string, ct: { id: string; name: string; currency: string; rate: string; effectiveAt: Date; effectiveAtDefaulted?: boolean }) {
    if (!/^cr_[a-z0-9_]{1,61}$/.test(ct.id) || !isUnitCode(ct.id)) throw invalid("id", 'must be "cr_" followed by 1-61 of [a-z0-9_]');
    if (isUnitCode(ct.currency) === false || ct.currency.startsWith("cr_")) throw invalid("currency", "must be a supported ISO 4217 code");
    const f = decimalFraction(ct.rate, "rate.value");
    if (f.num === 0n) throw invalid("rate.value", "must be > 0");
    const now = clock.now();
    const effectiveAt = ct.effectiveAtDefaulted ? now : ct.effectiveAt;
    const created = await db.transaction((tx) => S.insertCreditType(tx, tenant, { ...ct, effectiveAt, now }));
    const stored = (await S.getCreditType(db, tenant, ct.id))!;
    if (!created) {
      const creation = ct.effectiveAtDefaulted
        ? stored.rates.filter((r) => r.effectiveAt.getTime() <= stored.createdAt.getTime()).at(-1)
        : stored.rates.find((r) => r.effectiveAt.getTime() === ct.effectiveAt.getTime());
      if (stored.name !== ct.name || stored.currency !== ct.currency || !creation || creation.rate !== ct.rate) throw new WalletError({ kind: "id_reused", field: "id", id: ct.id });
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

  /**
   * Sets a wallet's auto top-up. A top-up is a PURCHASED grant billed at the configured cost basis,
   * so, as for a PURCHASED Grant: on a credits wallet cost_basis and cost_basis_currency are
   * required (when enabled); on a prepaid wallet they default to 1 in the wallet's currency.
   */
  async function setAutoTopUp(tenant: string, walletId: string, c0: AutoTopUpConfig, field = "auto_top_up") {
    await db.transaction(async (tx) => {
      const w = await mustWallet(tenant, walletId, tx, true);
      const c = { ...c0 };
      if (w.kind === "credits" && c.enabled) {
        if (c.costBasis === "") throw invalid(`${field}.cost_basis.value`, "is required for an auto top-up of credits (what a top-up is bought at)");
        if (c.costBasisCurrency === "") throw invalid(`${field}.cost_basis_currency`, "is required for an auto top-up of credits");
      }
      if (c.costBasis === "") c.costBasis = "1";
      if (c.costBasisCurrency === "" && w.kind === "prepaid") c.costBasisCurrency = w.unit;
      await S.updateAutoTopUp(tx, tenant, walletId, c, clock.now());
    });
    const w = await mustWallet(tenant, walletId);
    remember(w);
    return w;
  }

  /** Sets (null: clears) a wallet's low-balance alert threshold; armed again, then checked against the balance now. */
  async function setLowBalanceAlert(tenant: string, walletId: string, thresholdNanos: bigint | null) {
    await db.transaction(async (tx) => {
      await mustWallet(tenant, walletId, tx, true);
      await S.updateLowBalance(tx, tenant, walletId, thresholdNanos);
    });
    let w = await mustWallet(tenant, walletId);
    // Already below when set: that is a crossing too (one alert now).
    await lowBalanceCrossings(tenant, [{ wallet: w, availableNanos: null }]);
    w = await mustWallet(tenant, walletId);
    remember(w);
    return w;
  }

  // ------------------------------------------------------------ grants

  /**
   * The idempotency fingerprint of a grant: the request as sent. An effective_at the caller left
   * unset is null here (the row keeps the time it was filled with), so a retry of the same request
   * later is a replay, not "different content". (With effective_at given the hash is what it
   * always was: rows stored before keep matching.)
   */
  function grantHash(g: GrantInput) {
    const { effectiveAtDefaulted, ...sent } = g;
    return requestHash({ ...sent, effectiveAt: effectiveAtDefaulted ? null : g.effectiveAt.getTime(), expiresAt: g.expiresAt?.getTime() ?? null, periodEnd: g.periodEnd?.getTime() ?? null });
  }

  /**
   * A grant id the wallet derives (auto top-up, rollover, renewal) that no grant has yet: `base`,
   * else `base:=2`, `base:=3`, ... (a caller's grant may already use `base`; checked under the
   * wallet's lock, and insertGrant's result is checked again by writeGrant).
   */
  async function freeGrantId(tx: Queryable, tenant: string, base: string): Promise<string> {
    for (let k = 1; k <= 16; k++) {
      const id = k === 1 ? base : `${base}:=${k}`;
      if (!(await S.getGrant(tx, tenant, id))) return id;
    }
    throw new WalletError({ kind: "unavailable", message: `no free grant id derived from ${base}; retry` });
  }

  /**
   * Whether `amountNanos` more may be granted to the wallet (all it was ever granted stays at most
   * WALLET_GRANTED_NANOS_MAX: the ledger account's credits and the balance fit int64). Every path
   * that adds money checks it: Grant refuses, an auto top-up or a renewal is skipped (logged).
   * Under the wallet's lock.
   */
  async function roomFor(tx: Queryable, tenant: string, walletId: string, amountNanos: bigint): Promise<boolean> {
    return (await S.openGrants(tx, tenant, walletId)).grantedNanos + amountNanos <= WALLET_GRANTED_NANOS_MAX;
  }

  /**
   * Writes one grant inside tx: row, overdraft repay, movements, ledger chain. Returns the transfer
   * id, or null when a grant with that id exists already (nothing written).
   */
  async function writeGrant(tx: Queryable, tenant: string, w: WalletRow, g: GrantInput & { rootId?: string; periodIndex?: number }, hash: string, now: Date, ledgerFunded: boolean): Promise<string | null> {
    const repay = ledgerFunded ? repayNanos(w.overdraftPostedNanos, g.amountNanos) : 0n;
    const inserted = await S.insertGrant(tx, tenant, {
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
      expiryGraceMs: g.expiryGraceMs,
    });
    if (!inserted) return null;
    if (repay > 0n) {
      await S.addOverdraft(tx, tenant, w.id, { postedNanos: -repay, heldNanos: 0n, enforceLimit: false });
      w.overdraftPostedNanos -= repay;
    }
    const ts = ledgerFunded ? grantTransfers({ grantId: g.id, walletId: w.id, l: L(w), kind: g.kind, amountNanos: g.amountNanos, repayNanos: repay, invoiceId: g.invoiceId }) : [];
    await S.insertMovements(tx, tenant, [
      { id: `mv_g:${g.id}`, walletId: w.id, grantId: g.id, kind: g.kind === "rollover" && !ledgerFunded ? "rollover" : "grant", amountNanos: g.amountNanos, sourceId: g.id, invoiceId: g.invoiceId, ledgerTransferId: ts[0]?.id ?? "", occurredAt: now },
      // The repay line's id: mv_rp:<grant> (before, mv_r:<grant>, which a release line mv_r:<hold>:<i>
      // could take when the grant was named <hold>:<i>; rows written before keep their ids).
      { id: `mv_rp:${g.id}`, walletId: w.id, grantId: g.id, kind: "burn", amountNanos: repay, sourceId: g.id, ledgerTransferId: ts[1]?.id ?? "", occurredAt: now },
    ]);
    await S.enqueueTransfers(tx, tenant, [ts], now);
    return ts[0]?.id ?? "";
  }

  /** Whether a grant with g's id is stored with g's content (wallet and fingerprint): a Grant of g is its replay. */
  async function isGrantReplay(tenant: string, g: GrantInput): Promise<boolean> {
    const prior = await S.getGrant(db, tenant, g.id);
    return prior !== null && prior !== undefined && prior.requestHash === grantHash(g) && prior.walletId === g.walletId;
  }

  async function grant(tenant: string, g: GrantInput): Promise<{ grant: GrantRow; transferId: string }> {
    const hash = grantHash(g);
    const prior = await S.getGrant(db, tenant, g.id);
    if (prior) {
      if (prior.requestHash !== hash || prior.walletId !== g.walletId) throw new WalletError({ kind: "id_reused", field: "id", id: g.id });
      // A replay may follow a first call that committed and then failed before (or while) dropping
      // the real-time state: drop it again (the next debit rebuilds it from PostgreSQL, grant
      // included) and post what the outbox still holds.
      await rt.invalidate(ref(tenant, prior.walletId));
      kickOutbox();
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
      const open = await S.openGrants(tx, tenant, w.id);
      if (open.count >= GRANTS_PER_WALLET_OPEN_MAX) throw new WalletError({ kind: "limit", field: "grants (open, per wallet)", limit: GRANTS_PER_WALLET_OPEN_MAX });
      if (open.grantedNanos + g.amountNanos > WALLET_GRANTED_NANOS_MAX) throw new WalletError({ kind: "limit", field: "amount_nanos (all granted to the wallet)", limit: WALLET_GRANTED_NANOS_MAX });
      const t = await writeGrant(tx, tenant, w, g, hash, now, true);
      if (t === null) {
        inserted = false; // inserted meanwhile (under another wallet's lock): answered as a replay or ID_REUSED
        return;
      }
      transferId = t;
      await rearmIfAbove(tx, tenant, w, now);
      if (w.lowBalanceThresholdNanos !== null && !w.lowBalanceArmed) await S.rearmLowBalance(tx, tenant, [w.id], now);
    });
    if (!inserted) return grant(tenant, g);
    forget(tenant, w0);
    await rt.invalidate(ref(tenant, g.walletId));
    await deps.outbox.flush();
    return { grant: (await S.getGrant(db, tenant, g.id))!, transferId };
  }

  /** Re-arms auto top-up / low-balance alerts when the balance is back at or above the threshold. */
  async function rearmIfAbove(tx: Queryable, tenant: string, w: WalletRow, now: Date) {
    if (!w.autoTopUp || w.topUpArmed) return;
    await S.armTopUpIfAbove(tx, tenant, [w.id], now);
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

  /** What one authorizeMany call did across its rounds (retries, reruns of repeated ids). */
  interface AuthorizeRun {
    /** Every hold placed (not a replay), for the low-balance check after the call. */
    debits: Array<{ wallet: WalletRow; availableNanos: bigint }>;
    /** Something was written (the outbox has holds to post). */
    wrote: boolean;
  }

  /**
   * Places many holds with one group commit: wallets resolved (cache, else one lookup), the items
   * reserved in the real-time store (one debitMany per wallet) beside the replay lookup (one
   * indexed SELECT; replays give their reservation back), then ONE statement in
   * PostgreSQL (holds, grant counters, statement lines, outbox chains; a transaction only when an
   * overdraft counter moves too). One outcome per input. Safe to run concurrently (pipelined groups).
   *
   * Every route (Authorize's group commit, AuthorizeStream's, AuthorizeBatch) comes through here, and
   * a hold id whose first attempt is still in flight in this process (a client's retry after a
   * timeout, by any route) waits for it and is answered as its replay, as Consume does. (Before,
   * AuthorizeBatch called this without waiting: its retry reserved the money again in real time
   * until its commit turned out a replay, and another hold decided meanwhile was refused.)
   */
  function authorizeMany(tenant: string, inputs: AuthorizeInput[]): Promise<AuthorizeOutcome[]> {
    return gated(authorizing, tenant, inputs, (items) => authorizeGroup(tenant, items), (i, unavailable) => ({ id: i.id, result: "invalid", hold: null, unit: i.unit, walletId: "", availableNanos: 0n, error: unavailable, unavailable }));
  }

  /**
   * Runs a group through a keyed gate by (tenant, id), item by item: the items whose ids are free
   * run at once as one group; only those whose id is held (or waited for) by a call in flight here
   * wait, then run as their own group, and the results are merged back in input order. (Before,
   * the whole group waited: an unrelated item coalesced beside a retry waited for the retry's first
   * attempt, forever if that never ended.) The wait is bounded by GATE_WAIT_MS_MAX: past it the
   * waiting items are not run and answer `unavailable` (the caller answers Unavailable: retry).
   */
  async function gated<I extends { id: string }, O>(
    gate: ReturnType<typeof createKeyedGate>,
    tenant: string,
    inputs: I[],
    runGroup: (items: I[]) => Promise<O[]>,
    unavailableOutcome: (i: I, message: string) => O,
  ): Promise<O[]> {
    const key = (i: I) => `${tenant}\u0000${i.id}`;
    const free: number[] = [];
    const busy: number[] = [];
    inputs.forEach((i, n) => (gate.busy(key(i)) ? busy : free).push(n));
    const out: O[] = new Array(inputs.length);
    const part = (idx: number[], waitMs?: number) =>
      idx.length === 0
        ? undefined
        : gate.run(idx.map((n) => key(inputs[n]!)), () => runGroup(idx.map((n) => inputs[n]!)), waitMs).then(
            (r) => idx.forEach((n, j) => (out[n] = r[j]!)),
            (e) => {
              if (!(e instanceof GateWaitTimeout)) throw e;
              for (const n of idx) out[n] = unavailableOutcome(inputs[n]!, `id ${inputs[n]!.id}: its first attempt is still in flight after ${gateWaitMs} ms; retry`);
            },
          );
    await Promise.all([part(free), part(busy, gateWaitMs)]);
    return out;
  }

  /** Holds in flight here, by (tenant, hold id). */
  const authorizing = createKeyedGate();

  async function authorizeGroup(tenant: string, inputs: AuthorizeInput[]): Promise<AuthorizeOutcome[]> {
    stats.authorizeGroups++;
    stats.authorizeItems += inputs.length;
    const run: AuthorizeRun = { debits: [], wrote: false };
    const out = await authorizeRound(tenant, inputs, 0, run);
    // Holds answer once PostgreSQL has them (durable, the source of truth); their pending ledger
    // transfers are posted right after by the outbox, off the caller's latency (a later Capture or
    // Release flushes the outbox first, so the ledger always sees pending before post/void).
    if (run.wrote) {
      kickOutbox();
      // Every hold this call placed, retried and rerun ones included, is checked against the threshold.
      await lowBalanceCrossings(tenant, run.debits);
      await autoTopUpsAfterCommit(tenant, run.debits);
    }
    return out;
  }

  // The request as sent: with max_cost, the cost and its currency (not the credits it converted to
  // at the rate in force, which a later rate would change); with amount_nanos, as always.
  const holdHash = (i: AuthorizeInput) =>
    i.maxCost
      ? requestHash({ c: i.customerId, u: i.unit, mc: i.maxCost.nanos, mcc: i.maxCost.currency, t: i.ttlMs, ch: i.chargeId, m: i.model })
      : requestHash({ c: i.customerId, u: i.unit, a: i.amountNanos, t: i.ttlMs, ch: i.chargeId, m: i.model });

  async function authorizeRound(tenant: string, inputs: AuthorizeInput[], attempt: number, run: AuthorizeRun): Promise<AuthorizeOutcome[]> {
    const out: AuthorizeOutcome[] = inputs.map((i) => ({ id: i.id, result: "invalid", hold: null, unit: i.unit, walletId: "", availableNanos: 0n, error: "" }));
    // The replay lookup (one indexed SELECT for the group) runs BESIDE the real-time step instead
    // of before it (one round trip less per group). A replay's reservation is given back before the
    // commit and the other items of its wallet are decided again, so a retried hold never refuses
    // another item of its group that fits. (Groups in flight at once never share a wallet: see
    // service.ts. Another replica may see the transient reservation for that one round trip.)
    const placedP = S.getHolds(db, tenant, [...new Set(inputs.map((i) => i.id))]);
    placedP.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
    const wallets = await resolveWallets(tenant, inputs);
    const hashes = inputs.map(holdHash); // the idempotency fingerprint, once per item
    const now = clock.now();
    const work: Array<HoldWork & { index: number }> = [];
    // An id repeated in one group (concurrent calls, stream messages) reserves nothing: it is answered
    // after the group from the hold its first occurrence placed (replay or ID_REUSED), so a repeat
    // never holds money even transiently.
    const firstOf = new Map<string, number>();
    const repeats: number[] = [];
    inputs.forEach((input, index) => (firstOf.has(input.id) ? repeats.push(index) : firstOf.set(input.id, index)));
    const repeated = new Set(repeats);
    const reserved: Array<Reserved | undefined> = new Array(inputs.length);
    /**
     * One real-time step per wallet for all of the listed items (decided in input order); wallets
     * without state are loaded together (one snapshot statement) and tried again.
     */
    const reserveAll = async (indexes: number[]) => {
      const byWallet = new Map<string, number[]>();
      for (const index of indexes) {
        const id = wallets[index]!.id;
        const l = byWallet.get(id);
        if (l) l.push(index);
        else byWallet.set(id, [index]);
      }
      let pending = [...byWallet.keys()];
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > REALTIME_RELOADS_MAX) throw new WalletError({ kind: "unavailable", message: "real-time state could not be loaded; retry" });
        const nowMs = clock.now().getTime();
        const missing: string[] = [];
        const settled = await Promise.allSettled(
          pending.map(async (walletId) => {
            const ix = byWallet.get(walletId)!;
            const rs = await rt.debitMany(
              ref(tenant, walletId),
              ix.map((i) => ({ amountNanos: inputs[i]!.amountNanos, mode: "all" as const, ctx: { nowMs, chargeId: inputs[i]!.chargeId, model: inputs[i]!.model } })),
            );
            if (rs.length === 1 && rs[0]!.kind === "no_state") missing.push(walletId);
            else ix.forEach((index, k) => (reserved[index] = rs[k] as Reserved));
          }),
        );
        const failed = settled.find((x) => x.status === "rejected");
        if (failed) throw failed.reason;
        if (missing.length > 0) await loadStates(tenant, missing);
        pending = missing;
      }
    };
    const toReserve = inputs.map((_, i) => i).filter((i) => !repeated.has(i) && wallets[i]);
    let placed: Map<string, HoldRow> = new Map();
    try {
      [placed] = await Promise.all([placedP, reserveAll(toReserve)]);
      const giveBack: Array<Promise<void>> = [];
      const replayWallets = new Set<string>();
      inputs.forEach((input, index) => {
        if (repeated.has(index)) return;
        const wallet = wallets[index];
        const p = placed.get(input.id);
        if (p) {
          const r = reserved[index];
          if (r?.kind === "ok") {
            giveBack.push(unreserve(tenant, wallet!.id, r));
            replayWallets.add(wallet!.id);
          }
          reserved[index] = undefined;
          const same = p.requestHash === hashes[index] && p.walletId === wallet?.id;
          out[index] = same
            ? { ...out[index]!, result: "ok", hold: p, walletId: p.walletId, availableNanos: 0n }
            : { ...out[index]!, result: "id_reused", walletId: wallet?.id ?? "", error: `id ${input.id} was already used with different content` };
          return;
        }
        if (!wallet) out[index] = { ...out[index]!, result: "wallet_not_found", error: `no wallet for customer ${input.customerId} and unit ${input.unit}` };
      });
      if (giveBack.length > 0) {
        // What a replay held for a moment may have refused others of its wallet: the wallet's other
        // items give their reservations back too and are decided again, in order, as if the replay
        // had reserved nothing.
        const redo = toReserve.filter((i) => reserved[i] && replayWallets.has(wallets[i]!.id));
        await Promise.all([...giveBack, ...redo.map((i) => unreserve(tenant, wallets[i]!.id, reserved[i]!))]);
        for (const i of redo) reserved[i] = undefined;
        if (redo.length > 0) await reserveAll(redo);
      }
    } catch (e) {
      // Nothing is committed: every reservation still made is given back.
      await Promise.all(toReserve.map((i) => (reserved[i] ? unreserve(tenant, wallets[i]!.id, reserved[i]!) : undefined)));
      throw e;
    }
    for (const index of toReserve) {
      const r = reserved[index];
      if (!r) continue;
      const input = inputs[index]!;
      const wallet = wallets[index]!;
      if (r.kind === "insufficient") {
        out[index] = { ...out[index]!, result: "insufficient", walletId: wallet.id, availableNanos: r.availableAfterNanos, error: `insufficient balance (available ${r.availableAfterNanos} nanos)` };
        continue;
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
        requestHash: hashes[index]!,
        createdAt: now,
      };
      work.push({ input, wallet, r, row, replay: false, index });
      out[index] = { ...out[index]!, result: "ok", hold: row, walletId: wallet.id, availableNanos: r.availableAfterNanos };
    }
    work.sort((a, b) => a.index - b.index);
    // Replays answer with the wallet's available balance now (PostgreSQL's; a rare path).
    const replayed = out.map((o, i) => ({ o, i })).filter(({ o, i }) => o.result === "ok" && placed.has(inputs[i]!.id));
    if (replayed.length > 0) {
      const avail = await S.availableOf(db, tenant, [...new Set(replayed.map(({ o }) => o.walletId))], clock.now());
      for (const { o, i } of replayed) out[i] = { ...o, availableNanos: avail.get(o.walletId) ?? 0n };
    }
    // A refused item may be a replay of a hold placed when there was room: answer with that hold.
    const refused = out.map((o, i) => ({ o, i })).filter(({ o }) => o.result === "insufficient");
    if (refused.length > 0) {
      const prior = await S.getHolds(db, tenant, refused.map(({ o }) => o.id));
      for (const { o, i } of refused) {
        const p = prior.get(o.id);
        if (!p) continue;
        const same = p.requestHash === hashes[i] && p.walletId === wallets[i]?.id;
        out[i] = same ? { ...o, result: "ok", hold: p, error: "" } : { ...o, result: "id_reused", error: `id ${o.id} was already used with different content` };
      }
    }
    // One statement without an explicit transaction unless an overdraft counter moves too.
    const errs = await commitGroup(work, (tx, ws) => applyHolds(tx, tenant, ws), (ws) => ws.every((w) => w.row.overdraftNanos === 0n));
    if (work.length > 0) run.wrote = true;
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
      } else {
        run.debits.push({ wallet: w.wallet, availableNanos: w.r.availableAfterNanos });
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
        const again = await authorizeRound(tenant, retry.map((r) => r.input), attempt + 1, run);
        retry.forEach((r, j) => (out[r.index] = again[j]!));
      }
    }
    if (repeats.length > 0) {
      run.wrote = true;
      const prior = await S.getHolds(db, tenant, repeats.map((i) => inputs[i]!.id));
      const rerun: number[] = [];
      for (const i of repeats) {
        const input = inputs[i]!;
        const p = prior.get(input.id);
        if (!p) {
          rerun.push(i);
          continue;
        }
        const same = p.requestHash === hashes[i] && p.walletId === wallets[i]?.id;
        const first = out[firstOf.get(input.id)!]!;
        out[i] = same
          ? { id: input.id, result: "ok", hold: p, unit: input.unit, walletId: p.walletId, availableNanos: first.availableNanos, error: "" }
          : { id: input.id, result: "id_reused", hold: null, unit: input.unit, walletId: wallets[i]?.id ?? "", availableNanos: first.availableNanos, error: `id ${input.id} was already used with different content` };
      }
      // No hold under that id (its first occurrence was refused): each repeat gets its own decision
      // (its hold, if placed, is in run.debits: the low-balance check sees it too).
      if (rerun.length > 0) {
        const again = await authorizeRound(tenant, rerun.map((i) => inputs[i]!), Math.max(attempt, 1), run);
        rerun.forEach((i, j) => (out[i] = again[j]!));
      }
    }
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
    // The request as sent: an unset occurred_at is null (the row keeps the time it was filled with).
    return requestHash({ c: i.customerId, u: i.unit, a: i.amountNanos, e: i.eventId, ch: i.chargeId, m: i.model, o: i.occurredAtDefaulted ? null : i.occurredAt.getTime() });
  }

  /** Consume calls in flight here, by (tenant, item id). */
  const consuming = createKeyedGate();

  /**
   * Consume: a call with an item id whose first attempt is still in flight in this process (a
   * client's retry after a timeout) waits for it and is answered as its replay, as a retried
   * Authorize waits for its first attempt. (Before, the replay check saw committed rows only: the
   * retry reserved the money again in real time until its commit turned out a replay, and another
   * item decided meanwhile was refused, its shortfall recorded for good.)
   */
  function consumeMany(tenant: string, inputs: ConsumeInput[]): Promise<ConsumeOutcome[]> {
    return gated(consuming, tenant, inputs, (items) => consumeRound(tenant, items, 0), (i, unavailable) => ({ id: i.id, result: "invalid", consumedNanos: 0n, shortfallNanos: i.amountNanos, walletId: "", error: unavailable, replayed: false, unavailable }));
  }

  async function consumeRound(tenant: string, inputs: ConsumeInput[], attempt: number): Promise<ConsumeOutcome[]> {
    const out: ConsumeOutcome[] = inputs.map((i) => ({ id: i.id, result: "invalid", consumedNanos: 0n, shortfallNanos: i.amountNanos, walletId: "", error: "", replayed: false }));
    // Replays first (cheap, one query): a replay must not burn again even transiently.
    const prior = await S.getConsumptions(db, tenant, inputs.map((i) => i.id));
    const wallets = await resolveWallets(tenant, inputs);
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
          overdraftNanos: r.overdraftNanos,
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
      const again = await consumeRound(tenant, retry.map((r) => r.input), attempt + 1);
      retry.forEach((r, j) => (out[r.index] = again[j]!));
    } else if (retry.length > 0) {
      throw new WalletError({ kind: "unavailable", message: "wallet state kept changing; retry" });
    }
    if (attempt === 0) {
      if (work.length > 0) await deps.outbox.flush();
      const debited = work.filter((w) => !w.replay).map((w) => ({ wallet: w.wallet, availableNanos: w.r.availableAfterNanos }));
      await lowBalanceCrossings(tenant, debited);
      await autoTopUpsAfterCommit(tenant, debited);
    }
    return out;
  }

  function outcomeOf(c: ConsumptionRow, replayed: boolean): ConsumeOutcome {
    const result: ConsumeResultKind = c.shortfallNanos === 0n ? "ok" : c.consumedNanos === 0n ? "insufficient" : "partial";
    return { id: c.id, result, consumedNanos: c.consumedNanos, shortfallNanos: c.shortfallNanos, walletId: c.walletId, error: "", replayed };
  }

  // ------------------------------------------------------------ auto top-up and low balance

  /**
   * Auto top-up after debits (Consume, Authorize, captures). The caller's values (the real-time
   * available after its debit, or null: unknown) and the cached wallet row only decide whether to
   * look at all; the decision itself is made in ONE transaction holding the wallet row's lock, from
   * that row's auto top-up settings and armed flag and from PostgreSQL's available balance (grants
   * that can burn now, minus the overdraft in use), so concurrent debits (this process or other
   * replicas) see one another's top-up and a crossing tops up at most once.
   */
  /**
   * Auto top-ups after a debit or capture has committed: best effort. The callers' movements are
   * durable already, so a failure here (Redis, the outbox, the database) is logged and never turns
   * them into errors; the wallet stays armed and below its threshold, so its next debit tries again.
   */
  async function autoTopUpsAfterCommit(tenant: string, changes: Array<{ wallet: WalletRow; availableNanos: bigint | null }>): Promise<void> {
    try {
      await autoTopUps(tenant, changes);
    } catch (err) {
      logger.warn("auto top-up check failed after commit; the next debit of the wallet tries again", { tenant, err: String((err as Error)?.message ?? err) });
    }
  }

  async function autoTopUps(tenant: string, changes: Array<{ wallet: WalletRow; availableNanos: bigint | null }>): Promise<void> {
    const lowest = new Map<string, { wallet: WalletRow; availableNanos: bigint | null }>();
    const rearm = new Map<string, WalletRow>();
    const nowMs = clock.now().getTime();
    for (const c of changes) {
      const cfg = c.wallet.autoTopUp;
      if (!cfg) continue;
      // Disarmed (topped up, or crossed with top-up disabled) and seen at or above the threshold:
      // armed again if PostgreSQL agrees (one conditional UPDATE per crossing; the row is read again after).
      if (!c.wallet.topUpArmed && (c.availableNanos === null || c.availableNanos >= cfg.thresholdNanos)) rearm.set(c.wallet.id, c.wallet);
      if (c.availableNanos !== null && c.availableNanos >= cfg.thresholdNanos) continue;
      // Below the threshold, nothing can happen while the (cached, <= 5 s old) row is disarmed (it
      // crossed already: re-armed above) or cooling down after a top-up: no lock taken for it.
      if (!c.wallet.topUpArmed) continue;
      if (c.wallet.lastTopUpAt !== null && nowMs - c.wallet.lastTopUpAt.getTime() < cfg.cooldownMs) continue;
      const cur = lowest.get(c.wallet.id);
      if (!cur || (cur.availableNanos !== null && (c.availableNanos === null || c.availableNanos < cur.availableNanos))) lowest.set(c.wallet.id, c);
    }
    if (rearm.size > 0) {
      const armed = await S.armTopUpIfAbove(db, tenant, [...rearm.keys()], clock.now());
      for (const id of armed) forget(tenant, rearm.get(id)!);
    }
    if (lowest.size === 0) return;
    // Unknown values (captures): PostgreSQL's available, one statement, before taking any lock.
    const unknown = [...lowest.values()].filter((c) => c.availableNanos === null).map((c) => c.wallet.id);
    if (unknown.length > 0) {
      const avail = await S.availableOf(db, tenant, unknown, clock.now());
      for (const id of unknown) {
        const c = lowest.get(id)!;
        const a = avail.get(id);
        if (a === undefined || a >= c.wallet.autoTopUp!.thresholdNanos) lowest.delete(id);
      }
    }
    for (const { wallet } of lowest.values()) {
      const now = clock.now();
      let wrote = false;
      await db.transaction(async (tx) => {
        const w = await mustWallet(tenant, wallet.id, tx, true);
        const cfg = w.autoTopUp; // the locked row's settings, not the cached ones
        if (!cfg) return;
        const availableNanos = (await S.availableOf(tx, tenant, [w.id], now)).get(w.id) ?? 0n;
        const real = decideAutoTopUp(cfg, { armed: w.topUpArmed, lastTopUpAtMs: w.lastTopUpAt?.getTime() ?? null }, availableNanos, now.getTime());
        if (!real.crossed) {
          // At or above the threshold while disarmed (a grant, release or another replica's top-up
          // got it back up): armed again for the next crossing.
          if (availableNanos >= cfg.thresholdNanos && !w.topUpArmed) {
            await S.armTopUp(tx, tenant, w.id);
            wrote = true;
          }
          return;
        }
        if (real.topUpNanos > 0n) {
          if (!(await roomFor(tx, tenant, w.id, real.topUpNanos))) {
            logger.warn("auto top-up skipped: the wallet would have been granted more than WALLET_GRANTED_NANOS_MAX in all", { tenant, wallet_id: w.id });
            return;
          }
          const seq = await S.claimTopUp(tx, tenant, w.id, now, cfg.cooldownMs);
          if (seq === null) return;
          const grantId = await freeGrantId(tx, tenant, `${w.id}:topup:${seq}`);
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
            expiryGraceMs: null,
          };
          if ((await writeGrant(tx, tenant, w, g, grantHash(g), now, true)) === null) throw new WalletError({ kind: "unavailable", message: `grant id ${grantId} was taken meanwhile; retry` });
          wrote = true;
          // Back at or above the threshold (PostgreSQL's available read under this lock, plus the
          // grant just written): the next downward crossing may top up again (after the cooldown).
          // Every later decision reads PostgreSQL under the same lock, so a debit that committed
          // before this top-up sees it and cannot count as a second crossing (it used to re-arm
          // from the caller's real-time value, and each concurrent debit then topped up again).
          if (availableNanos + real.topUpNanos >= cfg.thresholdNanos) await S.armTopUp(tx, tenant, w.id);
          if (w.lowBalanceThresholdNanos !== null && !w.lowBalanceArmed) await S.rearmLowBalance(tx, tenant, [w.id], now);
          await S.insertAlert(tx, tenant, {
            id: `alr_topup_${grantId}`,
            kind: "auto_top_up",
            walletId: w.id,
            customerId: w.customerId,
            grantId,
            amountNanos: real.topUpNanos,
            unit: w.unit,
            expiresAt: null,
            createdAt: now,
            costBasis: g.costBasis,
            costBasisCurrency: g.costBasisCurrency,
          });
        } else {
          const n = await S.disarmTopUp(tx, tenant, w.id);
          if (n === null || n === 0) return;
          wrote = true;
          // The auto top-up's own low-balance alert (disabled top-up), unless the wallet has its own
          // low-balance alert: numbered by crossing on the wallet's low-balance counter, the id form
          // of every low-balance alert (before: alr_low_<wallet>_<ms>, and a second crossing in the
          // same millisecond was dropped by ON CONFLICT DO NOTHING).
          await S.insertAlert(tx, tenant, { id: `alr_lowb_${w.id}_${n}`, kind: "low_balance", walletId: w.id, customerId: w.customerId, grantId: "", amountNanos: availableNanos, unit: w.unit, expiresAt: null, createdAt: now });
        }
      });
      if (wrote) {
        forget(tenant, wallet);
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

  function captureHash(c: CaptureInput): string {
    return requestHash({ a: c.amountNanos, e: c.eventId, ch: c.chargeId, o: c.occurredAt?.getTime() ?? null });
  }

  /**
   * The states of grants, read under their row locks (id order), inside a capture/release group
   * commit: a RunExpiry or RunRollover of one of them then waits for this commit and sees what the
   * hold gave back, or has committed before and this reads the closed state (what the hold gives
   * back then follows routeReleased). Read without the lock, a run committing between this read and
   * the grant UPDATE left the released part on a closed grant: neither spendable nor broken.
   * Lock order everywhere: holds, then grants (id order), then wallets.
   */
  async function grantStates(q: Queryable, tenant: string, ids: string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const r = await q.query<{ id: string; state: string }>(`SELECT id, state FROM grants WHERE tenant = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE`, [tenant, [...new Set(ids)]]);
    return new Map(r.rows.map((x) => [x.id, x.state]));
  }

  /** The generation of each wallet's real-time state, read before a credit-type commit. */
  async function gensBefore(tenant: string, walletIds: string[]): Promise<Map<string, string | null>> {
    const ids = [...new Set(walletIds)];
    return new Map(await Promise.all(ids.map(async (id) => [id, await genBefore(tenant, id)] as const)));
  }

  /** Gives released slices back to the real-time state, one credit per wallet (slices summed per grant). */
  async function creditWallets(tenant: string, gens: Map<string, string | null>, parts: Array<{ walletId: string; slices: Slice[]; overdraftNanos: bigint }>): Promise<void> {
    const byWallet = new Map<string, { grants: Map<string, bigint>; od: bigint }>();
    for (const p of parts) {
      let w = byWallet.get(p.walletId);
      if (!w) byWallet.set(p.walletId, (w = { grants: new Map(), od: 0n }));
      for (const s of p.slices) w.grants.set(s.grantId, (w.grants.get(s.grantId) ?? 0n) + s.amountNanos);
      w.od += p.overdraftNanos;
    }
    for (const [wid, w] of byWallet) {
      const slices = [...w.grants].map(([grantId, amountNanos]) => ({ grantId, amountNanos }));
      await creditAfter(tenant, wid, gens.get(wid) ?? null, slices, w.od);
    }
  }

  interface CaptureWork {
    index: number;
    input: CaptureInput;
    hold: HoldRow;
    wallet: WalletRow;
    hash: string;
    plan: ReturnType<typeof planCapture>;
    extra: Reserved | null;
    /** Set by applyCaptures (reset on every attempt: a failed group rolls back). */
    raced: boolean;
    expiredRelease: Slice[];
    /** Of expiredRelease: what goes to breakage, and what follows a rolled-over grant's rule into its rollover grant. */
    breakage: Slice[];
    rolled: RolledPart[];
  }

  /**
   * What a hold gives back to grants that are no longer active (inside its group commit): for a
   * grant expired meanwhile, breakage; for an ALLOWANCE rolled over while this was held, its
   * rollover rule as RunRollover applied it (all: into the rollover grant; capped: up to the cap
   * with what the rollover grant already got; percentage: rounded down; the rest, and none, to
   * breakage). The rollover grant grows (created when the period end rolled nothing over), unless
   * it is no longer active. The caller adds `expired` = the whole amount to the old grant.
   */
  async function routeReleased(tx: Queryable, tenant: string, w: WalletRow, holdId: string, slices: Slice[], states: Map<string, string>, now: Date): Promise<{ breakage: Slice[]; rolled: RolledPart[] }> {
    const breakage: Slice[] = [];
    const rolled: RolledPart[] = [];
    for (const s of slices) {
      let part = 0n;
      let rolloverGrantId = "";
      const g = states.get(s.grantId) === "rolled_over" ? await S.getGrant(tx, tenant, s.grantId) : null;
      const rule = g?.rollover;
      if (g && rule && rule.mode !== "none" && g.periodEnd) {
        const found = await tx.query<{ id: string; amount_nanos: string; state: string }>(
          `SELECT id, amount_nanos::text, state FROM grants WHERE tenant = $1 AND wallet_id = $2 AND kind = 'rollover' AND root_id = $3 AND period_index = $4 ORDER BY created_at, id LIMIT 1 FOR UPDATE`,
          [tenant, w.id, g.rootId, g.periodIndex],
        );
        const rg = found.rows[0];
        const expiresAt = rule.expiresAfterMs > 0 ? new Date(g.periodEnd.getTime() + rule.expiresAfterMs) : null;
        const open = rg ? rg.state === "active" : expiresAt === null || expiresAt.getTime() > now.getTime();
        if (open) {
          const already = rg ? BigInt(rg.amount_nanos) : 0n;
          part = rule.mode === "all" ? s.amountNanos : rule.mode === "capped" ? (rule.capNanos > already ? (rule.capNanos - already < s.amountNanos ? rule.capNanos - already : s.amountNanos) : 0n) : (s.amountNanos * BigInt(rule.percentBps)) / 10_000n;
        }
        if (part > 0n && rg) {
          await tx.query(`UPDATE grants SET amount_nanos = amount_nanos + $3 WHERE tenant = $1 AND id = $2`, [tenant, rg.id, part]);
          rolloverGrantId = rg.id;
        } else if (part > 0n) {
          rolloverGrantId = await freeGrantId(tx, tenant, `${g.rootId}:p${g.periodIndex}:ro`);
          const rgi: GrantInput = {
            id: rolloverGrantId,
            walletId: w.id,
            kind: "rollover",
            amountNanos: part,
            costBasis: g.costBasis,
            costBasisCurrency: g.costBasisCurrency,
            priority: g.priority,
            effectiveAt: g.periodEnd,
            expiresAt,
            scope: g.scope,
            rollover: null,
            periodEnd: null,
            renew: false,
            invoiceId: "",
            description: `rollover of ${g.id}`,
            expiryGraceMs: null,
          };
          if ((await writeGrant(tx, tenant, w, { ...rgi, rootId: g.rootId, periodIndex: g.periodIndex }, grantHash(rgi), now, false)) === null) {
            throw new WalletError({ kind: "unavailable", message: `grant id ${rolloverGrantId} was taken meanwhile; retry` });
          }
        }
      }
      if (part > 0n) rolled.push({ grantId: s.grantId, amountNanos: part, rolloverGrantId });
      if (s.amountNanos - part > 0n) breakage.push({ grantId: s.grantId, amountNanos: s.amountNanos - part });
    }
    return { breakage, rolled };
  }

  /**
   * The start of a capture or release group commit: resets the per-attempt marks (a failed group
   * rolls back and is retried), locks the holds still pending (the others raced: another call
   * settled them) and reads the states of the grants the locked holds reserved from.
   */
  async function lockStillPending<W extends { hold: HoldRow; raced: boolean; expiredRelease: Slice[]; breakage: Slice[]; rolled: RolledPart[] }>(
    tx: Queryable,
    tenant: string,
    ws: W[],
  ): Promise<{ act: W[]; states: Map<string, string> }> {
    for (const w of ws) {
      w.raced = false;
      w.expiredRelease = [];
      w.breakage = [];
      w.rolled = [];
    }
    const pending = await S.lockPendingHolds(tx, tenant, ws.map((w) => w.hold.id));
    const act = ws.filter((w) => (pending.has(w.hold.id) ? true : ((w.raced = true), false)));
    if (act.length === 0) return { act, states: new Map() };
    return { act, states: await grantStates(tx, tenant, act.flatMap((w) => w.hold.slices.map((s) => s.grantId))) };
  }

  /** The group commit of captures: lock the still-pending holds, then set-based statements for all. */
  async function applyCaptures(tx: Queryable, tenant: string, ws: CaptureWork[], now: Date): Promise<void> {
    const { act, states } = await lockStillPending(tx, tenant, ws);
    if (act.length === 0) return;
    for (const w of act) {
      w.expiredRelease = w.plan.releaseSlices.filter((s) => s.amountNanos > 0n && states.get(s.grantId) !== "active");
      if (w.expiredRelease.length > 0) ({ breakage: w.breakage, rolled: w.rolled } = await routeReleased(tx, tenant, w.wallet, w.hold.id, w.expiredRelease, states, now));
    }
    const shortfall = (w: CaptureWork) => w.extra?.shortfallNanos ?? 0n;
    await S.resolveHolds(tx, tenant, act.map((w) => ({ id: w.hold.id, state: "captured" as const, capturedNanos: w.input.amountNanos - shortfall(w) })), now);
    await S.applyGrantDeltas(
      tx,
      tenant,
      act.flatMap((w) => [
        ...w.hold.slices.map((s, i) => ({ grantId: s.grantId, held: -s.amountNanos, burned: w.plan.burnSlices[i]!.amountNanos })),
        ...w.expiredRelease.map((s) => ({ grantId: s.grantId, expired: s.amountNanos })),
        ...(w.extra?.slices ?? []).map((s) => ({ grantId: s.grantId, burned: s.amountNanos })),
      ]),
    );
    const od = new Map<string, { posted: bigint; held: bigint; enforce: boolean }>();
    for (const w of act) {
      const extraOd = w.extra?.overdraftNanos ?? 0n;
      const cur = od.get(w.wallet.id) ?? { posted: 0n, held: 0n, enforce: false };
      od.set(w.wallet.id, { posted: cur.posted + w.plan.overdraftBurnNanos + extraOd, held: cur.held - w.hold.overdraftNanos, enforce: cur.enforce || extraOd > 0n });
    }
    for (const [wid, d] of [...od].sort(([a], [b]) => (a < b ? -1 : 1))) await S.addOverdraft(tx, tenant, wid, { postedNanos: d.posted, heldNanos: d.held, enforceLimit: d.enforce });
    await S.insertConsumptions(
      tx,
      tenant,
      act.map((w) => ({
        source: "capture" as const,
        id: w.hold.id,
        walletId: w.wallet.id,
        customerId: w.wallet.customerId,
        unit: w.wallet.unit,
        amountNanos: w.input.amountNanos,
        consumedNanos: w.input.amountNanos - shortfall(w),
        overdraftNanos: w.plan.overdraftBurnNanos + (w.extra?.overdraftNanos ?? 0n),
        shortfallNanos: shortfall(w),
        eventId: w.input.eventId,
        chargeId: w.input.chargeId || w.hold.chargeId,
        model: w.hold.model,
        holdId: w.hold.id,
        occurredAt: w.input.occurredAt ?? now,
        requestHash: w.hash,
      })),
      now,
    );
    const movements: S.MovementRow[] = [];
    const chains: PlannedTransfer[][] = [];
    for (const w of act) {
      const h = w.hold;
      const c = w.input;
      const wallet = w.wallet;
      const extraSlices = w.extra?.slices ?? [];
      const extraOd = w.extra?.overdraftNanos ?? 0n;
      const resolve = resolveHoldTransfers({ holdId: h.id, burn: w.plan.burnSlices, overdraftHeldNanos: h.overdraftNanos, overdraftBurnNanos: w.plan.overdraftBurnNanos, l: L(wallet) });
      const extraTs = extraSlices.length + Number(extraOd > 0n) > 0 ? burnTransfers({ sourceId: h.id, l: L(wallet), slices: extraSlices, overdraftNanos: extraOd, eventId: c.eventId, prefix: "c" }) : [];
      const breakage = w.breakage.map((s) => expiryTransfer({ grantId: s.grantId, l: L(wallet), amountNanos: s.amountNanos, holdId: h.id }));
      movements.push(
        ...w.plan.burnSlices.map((s, i) => ({ id: `mv_c:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "burn" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, eventId: c.eventId, ledgerTransferId: postTransferId(h.id, i), occurredAt: now })),
        ...w.plan.releaseSlices.map((s, i) => ({ id: `mv_cr:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "release" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: voidTransferId(h.id, i), occurredAt: now })),
        ...breakage.map((t, i) => ({ id: `mv_cx:${h.id}:${i}`, walletId: wallet.id, grantId: w.breakage[i]!.grantId, kind: "expire" as const, amountNanos: w.breakage[i]!.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: t.id, occurredAt: now })),
        ...w.rolled.map((r, i) => ({ id: `mv_cro:${h.id}:${i}`, walletId: wallet.id, grantId: r.grantId, kind: "rollover" as const, amountNanos: r.amountNanos, sourceId: r.rolloverGrantId, holdId: h.id, occurredAt: now })),
        ...extraSlices.map((s, i) => ({ id: `mv_ce:${h.id}:${i}`, walletId: wallet.id, grantId: s.grantId, kind: "burn" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, eventId: c.eventId, ledgerTransferId: burnTransferId("c", h.id, i), occurredAt: now })),
        { id: `mv_c:${h.id}:od`, walletId: wallet.id, grantId: "", kind: "overdraft" as const, amountNanos: w.plan.overdraftBurnNanos + extraOd, sourceId: h.id, holdId: h.id, occurredAt: now },
      );
      chains.push(resolve, extraTs, breakage);
    }
    await S.insertMovements(tx, tenant, movements);
    await S.enqueueTransfers(tx, tenant, chains, now);
  }

  /**
   * Captures many holds with one group commit (one PostgreSQL transaction for all; on a failure,
   * one per item). One result per input: a bad item (unknown, expired, released, id reused) is its
   * own error and never fails the others. Idempotent on hold id (a replay answers the first capture).
   */
  async function captureMany(tenant: string, inputs: CaptureInput[]): Promise<Array<Settled<CaptureOutcome>>> {
    // A hold named twice: the repeat runs after its first occurrence is done (a replay of that capture,
    // ALREADY_EXISTS with other content, or, when the first failed, a capture of its own).
    const split = await firstsThenRepeats(inputs, (c) => c.holdId, (xs) => captureMany(tenant, xs));
    if (split) return split;
    const out: Array<Settled<CaptureOutcome>> = new Array(inputs.length);
    const now = clock.now();
    const holds = await S.getHolds(db, tenant, inputs.map((c) => c.holdId));
    const later: number[] = [];
    const candidates: Array<{ index: number; hold: HoldRow }> = [];
    inputs.forEach((c, index) => {
      const h = holds.get(c.holdId);
      if (!h) out[index] = fail(new WalletError({ kind: "not_found", what: "hold", id: c.holdId }));
      else if (h.state !== "pending") later.push(index);
      else if (now.getTime() >= h.expiresAt.getTime()) out[index] = fail(new WalletError({ kind: "hold_expired", holdId: h.id }));
      else candidates.push({ index, hold: h });
    });
    const wallets = await S.getWallets(db, tenant, [...new Set(candidates.map((x) => x.hold.walletId))]);
    const work: CaptureWork[] = [];
    await Promise.all(
      candidates.map(async ({ index, hold }) => {
        const input = inputs[index]!;
        const wallet = wallets.get(hold.walletId);
        if (!wallet) return void (out[index] = fail(new WalletError({ kind: "not_found", what: "wallet", id: hold.walletId })));
        const plan = planCapture(hold, input.amountNanos);
        try {
          const extra = plan.extraNanos > 0n ? await reserve(tenant, wallet.id, plan.extraNanos, "partial", hold.chargeId, hold.model) : null;
          work.push({ index, input, hold, wallet, hash: captureHash(input), plan, extra, raced: false, expiredRelease: [], breakage: [], rolled: [] });
        } catch (e) {
          out[index] = fail(e);
        }
      }),
    );
    work.sort((a, b) => a.index - b.index);
    const gens = await gensBefore(tenant, work.map((w) => w.wallet.id));
    const errs = await commitGroup(work, (tx, ws) => applyCaptures(tx, tenant, ws, now));
    stats.captureGroups++;
    const done: CaptureWork[] = [];
    for (let k = 0; k < work.length; k++) {
      const w = work[k]!;
      const e = errs[k];
      if (e || w.raced) {
        if (w.extra) await unreserve(tenant, w.wallet.id, w.extra);
        if (!e) later.push(w.index);
        else if (e instanceof S.GuardError) {
          await rt.invalidate(ref(tenant, w.wallet.id));
          out[w.index] = fail(new WalletError({ kind: "unavailable", message: "wallet state changed during capture; retry" }));
        } else out[w.index] = fail(e);
        continue;
      }
      done.push(w);
    }
    await creditWallets(
      tenant,
      gens,
      done.map((w) => ({ walletId: w.wallet.id, slices: w.plan.releaseSlices.filter((s) => !w.expiredRelease.some((x) => x.grantId === s.grantId)), overdraftNanos: w.plan.overdraftReleaseNanos })),
    );
    // A rollover grant grown by a release is not in the real-time state's numbers: rebuilt on use.
    for (const wid of new Set(done.filter((w) => w.rolled.length > 0).map((w) => w.wallet.id))) await rt.invalidate(ref(tenant, wid));
    if (done.length > 0) await deps.outbox.flush();
    const debited = done.filter((w) => w.extra).map((w) => ({ wallet: w.wallet, availableNanos: w.extra!.availableAfterNanos }));
    await lowBalanceCrossings(tenant, debited);
    // Every capture is checked (an overage with the value it saw; the others from PostgreSQL), like
    // Consume: a wallet spent through Authorize -> Capture tops up too.
    await autoTopUpsAfterCommit(tenant, done.map((w) => ({ wallet: w.wallet, availableNanos: w.extra ? w.extra.availableAfterNanos : null })));
    await rearmLowBalance(tenant, done.filter((w) => !w.extra).map((w) => w.wallet));
    const fresh = await S.getHolds(db, tenant, [...new Set([...done.map((w) => w.hold.id), ...later.map((i) => inputs[i]!.holdId)])]);
    for (const w of done) {
      const shortfall = w.extra?.shortfallNanos ?? 0n;
      const releasedNanos = w.plan.releaseSlices.reduce((s, x) => s + x.amountNanos, 0n) + w.plan.overdraftReleaseNanos;
      out[w.index] = { ok: true, value: { hold: fresh.get(w.hold.id)!, capturedNanos: w.input.amountNanos - shortfall, releasedNanos, shortfallNanos: shortfall } };
    }
    const captures = await S.getCaptures(db, tenant, later.map((i) => inputs[i]!.holdId));
    for (const i of later) {
      const h = fresh.get(inputs[i]!.holdId)!;
      const rec = captures.get(h.id);
      if (h.state !== "captured") out[i] = fail(new WalletError({ kind: "hold_not_pending", holdId: h.id, state: h.state }));
      else if (!rec || rec.requestHash !== captureHash(inputs[i]!)) out[i] = fail(new WalletError({ kind: "id_reused", field: "hold_id", id: h.id }));
      else {
        const reserved = reservedNanos(h);
        out[i] = { ok: true, value: { hold: h, capturedNanos: h.capturedNanos, releasedNanos: reserved > h.capturedNanos ? reserved - h.capturedNanos : 0n, shortfallNanos: rec.shortfallNanos } };
      }
    }
    return out;
  }

  async function capture(tenant: string, c: CaptureInput): Promise<CaptureOutcome> {
    return unwrap((await captureMany(tenant, [c]))[0]!);
  }

  interface ReleaseWork {
    index: number;
    hold: HoldRow;
    wallet: WalletRow;
    raced: boolean;
    expiredRelease: Slice[];
    breakage: Slice[];
    rolled: RolledPart[];
  }

  async function applyReleases(tx: Queryable, tenant: string, ws: ReleaseWork[], state: "released" | "expired", now: Date): Promise<void> {
    const { act, states } = await lockStillPending(tx, tenant, ws);
    if (act.length === 0) return;
    for (const w of act) {
      w.expiredRelease = w.hold.slices.filter((s) => states.get(s.grantId) !== "active");
      if (w.expiredRelease.length > 0) ({ breakage: w.breakage, rolled: w.rolled } = await routeReleased(tx, tenant, w.wallet, w.hold.id, w.expiredRelease, states, now));
    }
    await S.resolveHolds(tx, tenant, act.map((w) => ({ id: w.hold.id, state, capturedNanos: 0n })), now);
    await S.applyGrantDeltas(
      tx,
      tenant,
      act.flatMap((w) => [...w.hold.slices.map((s) => ({ grantId: s.grantId, held: -s.amountNanos })), ...w.expiredRelease.map((s) => ({ grantId: s.grantId, expired: s.amountNanos }))]),
    );
    const od = new Map<string, bigint>();
    for (const w of act) od.set(w.wallet.id, (od.get(w.wallet.id) ?? 0n) + w.hold.overdraftNanos);
    for (const [wid, n] of [...od].sort(([a], [b]) => (a < b ? -1 : 1))) await S.addOverdraft(tx, tenant, wid, { postedNanos: 0n, heldNanos: -n, enforceLimit: false });
    const movements: S.MovementRow[] = [];
    const chains: PlannedTransfer[][] = [];
    for (const w of act) {
      const h = w.hold;
      const voids = resolveHoldTransfers({ holdId: h.id, burn: h.slices.map((s) => ({ grantId: s.grantId, amountNanos: 0n })), overdraftHeldNanos: h.overdraftNanos, overdraftBurnNanos: 0n });
      const breakage = w.breakage.map((s) => expiryTransfer({ grantId: s.grantId, l: L(w.wallet), amountNanos: s.amountNanos, holdId: h.id }));
      movements.push(
        // mv_rl:<hold>:<i> (before, mv_r:<hold>:<i>: see writeGrant's mv_rp; a new line never meets an old mv_r: row).
        ...h.slices.map((s, i) => ({ id: `mv_rl:${h.id}:${i}`, walletId: w.wallet.id, grantId: s.grantId, kind: "release" as const, amountNanos: s.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: voidTransferId(h.id, i), occurredAt: now })),
        ...breakage.map((t, i) => ({ id: `mv_rx:${h.id}:${i}`, walletId: w.wallet.id, grantId: w.breakage[i]!.grantId, kind: "expire" as const, amountNanos: w.breakage[i]!.amountNanos, sourceId: h.id, holdId: h.id, ledgerTransferId: t.id, occurredAt: now })),
        ...w.rolled.map((r, i) => ({ id: `mv_rro:${h.id}:${i}`, walletId: w.wallet.id, grantId: r.grantId, kind: "rollover" as const, amountNanos: r.amountNanos, sourceId: r.rolloverGrantId, holdId: h.id, occurredAt: now })),
      );
      chains.push(voids, breakage);
    }
    await S.insertMovements(tx, tenant, movements);
    await S.enqueueTransfers(tx, tenant, chains, now);
  }

  /**
   * Releases (or expires) many pending holds with one group commit: everything they reserved goes
   * back (to breakage for grants that expired meanwhile). One result per hold id; idempotent (a
   * hold already in the target state answers with 0 released; Release of an expired hold too).
   */
  async function releaseMany(tenant: string, holdIds: string[], state: "released" | "expired"): Promise<Array<Settled<ReleaseOutcome>>> {
    // A hold named twice: the repeat runs after its first occurrence is done (0 released, or its own try when the first failed).
    const split = await firstsThenRepeats(holdIds, (id) => id, (xs) => releaseMany(tenant, xs, state));
    if (split) return split;
    const out: Array<Settled<ReleaseOutcome>> = new Array(holdIds.length);
    const now = clock.now();
    const settled = (h: HoldRow): Settled<ReleaseOutcome> =>
      h.state === state || (state === "released" && h.state === "expired") ? { ok: true, value: { hold: h, releasedNanos: 0n } } : fail(new WalletError({ kind: "hold_not_pending", holdId: h.id, state: h.state }));
    const holds = await S.getHolds(db, tenant, holdIds);
    const later: number[] = [];
    const candidates: Array<{ index: number; hold: HoldRow }> = [];
    holdIds.forEach((id, index) => {
      const h = holds.get(id);
      if (!h) out[index] = fail(new WalletError({ kind: "not_found", what: "hold", id }));
      else if (h.state !== "pending") out[index] = settled(h);
      else candidates.push({ index, hold: h });
    });
    const wallets = await S.getWallets(db, tenant, [...new Set(candidates.map((x) => x.hold.walletId))]);
    const work: ReleaseWork[] = [];
    for (const { index, hold } of candidates) {
      const wallet = wallets.get(hold.walletId);
      if (!wallet) out[index] = fail(new WalletError({ kind: "not_found", what: "wallet", id: hold.walletId }));
      else work.push({ index, hold, wallet, raced: false, expiredRelease: [], breakage: [], rolled: [] });
    }
    const gens = await gensBefore(tenant, work.map((w) => w.wallet.id));
    const errs = await commitGroup(work, (tx, ws) => applyReleases(tx, tenant, ws, state, now));
    stats.releaseGroups++;
    const done: ReleaseWork[] = [];
    work.forEach((w, k) => {
      const e = errs[k];
      if (e) out[w.index] = fail(e);
      else if (w.raced) later.push(w.index);
      else done.push(w);
    });
    await creditWallets(tenant, gens, done.map((w) => ({ walletId: w.wallet.id, slices: w.hold.slices.filter((s) => !w.expiredRelease.some((x) => x.grantId === s.grantId)), overdraftNanos: w.hold.overdraftNanos })));
    for (const wid of new Set(done.filter((w) => w.rolled.length > 0).map((w) => w.wallet.id))) await rt.invalidate(ref(tenant, wid));
    if (done.length > 0) await deps.outbox.flush();
    await rearmLowBalance(tenant, done.map((w) => w.wallet));
    const fresh = await S.getHolds(db, tenant, [...new Set([...done.map((w) => w.hold.id), ...later.map((i) => holdIds[i]!)])]);
    for (const w of done) out[w.index] = { ok: true, value: { hold: fresh.get(w.hold.id)!, releasedNanos: w.hold.slices.reduce((s, x) => s + x.amountNanos, 0n) + w.hold.overdraftNanos } };
    for (const i of later) out[i] = settled(fresh.get(holdIds[i]!)!);
    return out;
  }

  async function releaseHold(tenant: string, holdId: string, state: "released" | "expired"): Promise<ReleaseOutcome> {
    return unwrap((await releaseMany(tenant, [holdId], state))[0]!);
  }

  // ------------------------------------------------------------ low-balance alerts

  /**
   * Raises one low_balance alert per wallet whose available balance went below its threshold while
   * armed (lowest value per wallet). Skips the database unless the wallet row (cached) says armed
   * and below: the conditional UPDATE in crossLowBalance is the shared truth across replicas.
   */
  async function lowBalanceCrossings(tenant: string, changes: Array<{ wallet: WalletRow; availableNanos: bigint | null }>): Promise<void> {
    const lowest = new Map<string, { wallet: WalletRow; availableNanos: bigint | null }>();
    for (const c of changes) {
      const t = c.wallet.lowBalanceThresholdNanos;
      if (t === null || !c.wallet.lowBalanceArmed || (c.availableNanos !== null && c.availableNanos >= t)) continue;
      const cur = lowest.get(c.wallet.id);
      if (!cur || (c.availableNanos !== null && (cur.availableNanos === null || c.availableNanos < cur.availableNanos))) lowest.set(c.wallet.id, c);
    }
    if (lowest.size === 0) return;
    const items = [...lowest.values()];
    await S.crossLowBalance(db, tenant, items.map((c) => ({ walletId: c.wallet.id, availableNanos: c.availableNanos })), clock.now());
    // Whatever the outcome (alerted here or by another replica), the wallet is disarmed now.
    for (const c of items) {
      c.wallet.lowBalanceArmed = false;
      forget(tenant, c.wallet);
    }
  }

  /** Re-arms the low-balance alert of wallets (disarmed ones with a threshold) whose available balance is back at or above it. */
  async function rearmLowBalance(tenant: string, wallets: WalletRow[]): Promise<void> {
    const ids = [...new Set(wallets.filter((w) => w.lowBalanceThresholdNanos !== null && !w.lowBalanceArmed).map((w) => w.id))];
    if (ids.length === 0) return;
    await S.rearmLowBalance(db, tenant, ids, clock.now());
    for (const w of wallets) forget(tenant, w);
  }

  // ------------------------------------------------------------ expiry, rollover

  async function runExpiry(tenant: string, asOf: Date, walletId: string) {
    let holdsExpired = 0;
    const due = await S.listExpiredHolds(db, tenant, walletId, asOf, RUN_WALLETS_MAX);
    for (let i = 0; i < due.length; i += COMMIT_BATCH_OPS_MAX) {
      const rs = await releaseMany(tenant, due.slice(i, i + COMMIT_BATCH_OPS_MAX).map((h) => h.id), "expired");
      for (const r of rs) if (r.ok && r.value.hold.state === "expired") holdsExpired++;
    }
    let grantsExpired = 0;
    let breakageNanos = 0n;
    let full = false; // the run's breakage total would pass int64: the rest waits for the next run
    const touched = new Set<string>();
    for (const g of await S.listExpiredGrants(db, tenant, walletId, asOf, graceMs, RUN_WALLETS_MAX)) {
      if (full) break;
      const wallet = await mustWallet(tenant, g.walletId);
      await db.transaction(async (tx) => {
        const cur = await tx.query(`SELECT 1 FROM grants WHERE tenant = $1 AND id = $2 AND state = 'active' FOR UPDATE`, [tenant, g.id]);
        if (cur.rowCount === 0) return;
        const fresh = (await S.getGrant(tx, tenant, g.id))!;
        const amount = breakageAt({ ...fresh, expiresAtMs: fresh.expiresAt!.getTime() }, asOf.getTime(), fresh.expiryGraceMs ?? graceMs);
        if (breakageNanos + amount > INT64_MAX) {
          full = true;
          return;
        }
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
    // Breakage lowers the available balance: a low-balance crossing is computed from PostgreSQL.
    const touchedRows = await S.getWallets(db, tenant, [...touched]);
    await lowBalanceCrossings(tenant, [...touchedRows.values()].map((w) => ({ wallet: w, availableNanos: null })));
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
        // The grant's lock before the wallet's: the order of captures, releases and debits (grants, then wallets).
        const lock = await tx.query(`SELECT 1 FROM grants WHERE tenant = $1 AND id = $2 AND state = 'active' FOR UPDATE`, [tenant, g.id]);
        if (lock.rowCount === 0) return;
        const w = await mustWallet(tenant, g.walletId, tx, true);
        const fresh = (await S.getGrant(tx, tenant, g.id))!;
        const remainder = remainderNanos({ ...fresh, expiresAtMs: null });
        const rule = fresh.rollover ?? { mode: "none" as const, capNanos: 0n, percentBps: 0, expiresAfterMs: 0 };
        const plan = planRollover(rule, remainder > 0n ? remainder : 0n);
        const periodEnd = fresh.periodEnd!;
        await S.setGrantState(tx, tenant, fresh.id, "rolled_over");
        await S.applyGrantDeltas(tx, tenant, [{ grantId: fresh.id, expired: plan.rolledOverNanos + plan.expiredNanos }]);
        let rolloverGrantId = "";
        if (plan.rolledOverNanos > 0n) {
          rolloverGrantId = await freeGrantId(tx, tenant, `${fresh.rootId}:p${fresh.periodIndex}:ro`);
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
            expiryGraceMs: null,
          };
          // Same wallet account: the rollover moves no ledger money (ledgerFunded = false).
          if ((await writeGrant(tx, tenant, w, { ...rg, rootId: fresh.rootId, periodIndex: fresh.periodIndex }, grantHash(rg), now, false)) === null) {
            throw new WalletError({ kind: "unavailable", message: `grant id ${rolloverGrantId} was taken meanwhile; retry` });
          }
        }
        const ts: PlannedTransfer[] = [];
        if (plan.expiredNanos > 0n) ts.push(expiryTransfer({ grantId: fresh.id, l: L(w), amountNanos: plan.expiredNanos }));
        await S.insertMovements(tx, tenant, [
          { id: `mv_ro:${fresh.id}`, walletId: w.id, grantId: fresh.id, kind: "rollover", amountNanos: plan.rolledOverNanos, sourceId: rolloverGrantId, occurredAt: periodEnd },
          { id: `mv_x:${fresh.id}`, walletId: w.id, grantId: fresh.id, kind: "expire", amountNanos: plan.expiredNanos, sourceId: fresh.id, ledgerTransferId: ts[0]?.id ?? "", occurredAt: periodEnd },
        ]);
        await S.enqueueTransfers(tx, tenant, [ts], now);
        let renewedGrantId = "";
        const renew = fresh.renew && (await roomFor(tx, tenant, w.id, fresh.amountNanos));
        if (fresh.renew && !renew) logger.warn("allowance not renewed: the wallet would have been granted more than WALLET_GRANTED_NANOS_MAX in all", { tenant, wallet_id: w.id, grant_id: fresh.id });
        if (renew) {
          const np = nextPeriod(fresh.effectiveAt.getTime(), periodEnd.getTime());
          renewedGrantId = await freeGrantId(tx, tenant, `${fresh.rootId}:p${fresh.periodIndex + 1}`);
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
            expiryGraceMs: null,
          };
          if ((await writeGrant(tx, tenant, w, { ...ng, rootId: fresh.rootId, periodIndex: fresh.periodIndex + 1 }, grantHash(ng), now, true)) === null) {
            throw new WalletError({ kind: "unavailable", message: `grant id ${renewedGrantId} was taken meanwhile; retry` });
          }
        }
        outcomes.push({ grantId: fresh.id, remainderNanos: remainder, rolledOverNanos: plan.rolledOverNanos, expiredNanos: plan.expiredNanos, rolloverGrantId, renewedGrantId });
      });
      await rt.invalidate(ref(tenant, g.walletId));
    }
    await deps.outbox.flush();
    return outcomes;
  }

  // ------------------------------------------------------------ reads

  /**
   * A wallet's balance: the sums over every grant it ever had are computed in PostgreSQL (one
   * aggregate row), and only the BALANCE_GRANTS_MAX grants the answer lists are read (active ones
   * first, each part in burn-down order). Before, every grant was read and sorted here.
   */
  async function balanceOf(tenant: string, w: WalletRow): Promise<Balance> {
    const [sums, rows] = await Promise.all([S.balanceSums(db, tenant, w.id, clock.now()), S.listBalanceGrants(db, tenant, w.id, BALANCE_GRANTS_MAX)]);
    const balance = sums.remainingNanos - w.overdraftPostedNanos;
    const held = sums.heldNanos + w.overdraftHeldNanos;
    // Available: what the grants that can burn now have left, minus the overdraft in use (the rule
    // of S.availableOf / SPENDABLE_NOW and of the real-time stores, so it is what Authorize accepts
    // before the policy's room). A grant in its expiry grace, effective later or an allowance past
    // its period end counts in the balance, not here.
    const available = sums.spendableNanos - w.overdraftPostedNanos - w.overdraftHeldNanos;
    const sorted = sortForBurn(rows.map((g) => ({ ...S.toBurnGrant(g), row: g }))).map((x) => x.row);
    const active = sorted.filter((g) => g.state === "active");
    const closed = sorted.filter((g) => g.state !== "active");
    return { wallet: w, balanceNanos: balance, heldNanos: held, availableNanos: available, overdraftNanos: w.overdraftPostedNanos + w.overdraftHeldNanos, grants: [...active, ...closed] };
  }

  async function getBalance(tenant: string, q: { walletId: string; customerId: string; unit: string }): Promise<Balance> {
    const w = q.walletId ? await S.getWallet(db, tenant, q.walletId) : await S.findWallet(db, tenant, q.customerId, q.unit);
    if (!w) throw new WalletError({ kind: "not_found", what: "wallet", id: q.walletId || `${q.customerId}/${q.unit}` });
    return balanceOf(tenant, w);
  }

  return {
    /** A hold id's first attempt is in flight here (or a retry waits for it): a new Authorize with it would wait. */
    authorizeInFlight: (tenant: string, id: string) => authorizing.busy(`${tenant}\u0000${id}`),
    createCreditType,
    setExchangeRate,
    getCreditType,
    creditsForCost,
    createWallet,
    setPolicy,
    setAutoTopUp,
    grant,
    isGrantReplay,
    authorizeMany,
    consumeMany,
    capture,
    captureMany,
    release: (tenant: string, holdId: string) => releaseHold(tenant, holdId, "released"),
    releaseMany: (tenant: string, holdIds: string[]) => releaseMany(tenant, holdIds, "released"),
    setLowBalanceAlert,
    expiryGraceMsDefault: graceMs,
    stats,
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
