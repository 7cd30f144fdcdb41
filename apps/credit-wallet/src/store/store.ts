/**
 * SQL of the credit wallet (PostgreSQL and PGlite through @nanobill/db). Every function takes a
 * Queryable so that the service composes them inside one transaction. No business rules here
 * beyond the guards that back the real-time decision (the grants_within_amount CHECK and the
 * overdraft WHERE clauses): a guard failure throws GuardError and rolls the transaction back.
 */
import { fileURLToPath } from "node:url";
import type { Queryable, Row } from "@nanobill/db";
import type { BurnGrant, GrantKind, Policy, PolicyMode, Slice } from "../domain/types.js";
import type { RolloverRule } from "../domain/rollover.js";
import type { AutoTopUpConfig } from "../domain/auto-top-up.js";
import type { PlannedTransfer } from "../domain/ledger-plan.js";
import { currentTraceContext, type StoredTraceContext } from "@nanobill/telemetry";

export const migrationsDir = fileURLToPath(new URL("./migrations", import.meta.url));

/** A guard (PostgreSQL's own check that a grant or the overdraft is not over-spent) refused a write. */
export class GuardError extends Error {
  constructor(what: string) {
    super(`guard: ${what}`);
    this.name = "GuardError";
  }
}

export interface CreditTypeRow {
  id: string;
  name: string;
  currency: string;
  createdAt: Date;
  rates: Array<{ rate: string; currency: string; effectiveAt: Date }>;
}

export interface WalletRow {
  tenant: string;
  id: string;
  customerId: string;
  unit: string;
  kind: "credits" | "prepaid";
  policy: Policy;
  overdraftPostedNanos: bigint;
  overdraftHeldNanos: bigint;
  autoTopUp: AutoTopUpConfig | null;
  topUpArmed: boolean;
  lastTopUpAt: Date | null;
  topUpSeq: number;
  /** Low-balance alert threshold on the available balance (null: disabled). */
  lowBalanceThresholdNanos: bigint | null;
  /** true while the available balance is at or above the threshold (the next crossing alerts). */
  lowBalanceArmed: boolean;
  ledgerAccountId: string;
  createdAt: Date;
}

export interface GrantRow {
  id: string;
  walletId: string;
  kind: GrantKind;
  amountNanos: bigint;
  burnedNanos: bigint;
  heldNanos: bigint;
  expiredNanos: bigint;
  priority: number;
  effectiveAt: Date;
  expiresAt: Date | null;
  createdAt: Date;
  costBasis: string;
  costBasisCurrency: string;
  scope: { chargeIds: string[]; models: string[] };
  rollover: RolloverRule | null;
  periodEnd: Date | null;
  renew: boolean;
  rootId: string;
  periodIndex: number;
  state: "active" | "expired" | "rolled_over";
  invoiceId: string;
  description: string;
  requestHash: string;
  /** The grant's own expiry grace (null: the deployment default). */
  expiryGraceMs: number | null;
}

export interface HoldRow {
  id: string;
  walletId: string;
  amountNanos: bigint;
  slices: Slice[];
  overdraftNanos: bigint;
  uncoveredNanos: bigint;
  state: "pending" | "captured" | "released" | "expired";
  expiresAt: Date;
  capturedNanos: bigint;
  chargeId: string;
  model: string;
  requestHash: string;
  createdAt: Date;
}

export interface ConsumptionRow {
  source: "consume" | "capture";
  id: string;
  walletId: string;
  customerId: string;
  unit: string;
  amountNanos: bigint;
  /** consumedNanos: what was burned, grants and overdraft together (amount - shortfall). */
  consumedNanos: bigint;
  /** overdraftNanos: the part of consumedNanos that went below zero (no grant paid it). */
  overdraftNanos: bigint;
  shortfallNanos: bigint;
  eventId: string;
  chargeId: string;
  model: string;
  holdId: string;
  occurredAt: Date;
  requestHash: string;
}

export interface MovementRow {
  id: string;
  walletId: string;
  grantId: string;
  kind: "grant" | "burn" | "hold" | "release" | "expire" | "rollover" | "overdraft";
  amountNanos: bigint;
  sourceId: string;
  eventId?: string;
  holdId?: string;
  invoiceId?: string;
  ledgerTransferId?: string;
  occurredAt: Date;
}

export interface AlertRow {
  id: string;
  kind: "credits_expiring" | "low_balance" | "auto_top_up";
  walletId: string;
  customerId: string;
  grantId: string;
  amountNanos: bigint;
  unit: string;
  expiresAt: Date | null;
  createdAt: Date;
  /** auto_top_up: the grant's cost basis (decimal currency per unit) and its currency; "" otherwise. */
  costBasis?: string;
  costBasisCurrency?: string;
}

const big = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as string | number));
const date = (v: unknown): Date => (v instanceof Date ? v : new Date(v as string));
const dateOrNull = (v: unknown): Date | null => (v === null || v === undefined ? null : date(v));
const json = <T>(v: unknown): T => (typeof v === "string" ? (JSON.parse(v) as T) : (v as T));

// ---------------------------------------------------------------- credit types

export async function insertCreditType(q: Queryable, tenant: string, ct: { id: string; name: string; currency: string; rate: string; effectiveAt: Date; now: Date }): Promise<boolean> {
  const r = await q.query(
    `INSERT INTO credit_types (tenant, id, name, currency, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
    [tenant, ct.id, ct.name, ct.currency, ct.now],
  );
  if (r.rowCount === 0) return false;
  await q.query(`INSERT INTO exchange_rates (tenant, credit_type_id, effective_at, rate, currency) VALUES ($1, $2, $3, $4, $5)`, [tenant, ct.id, ct.effectiveAt, ct.rate, ct.currency]);
  return true;
}

export async function insertExchangeRate(q: Queryable, tenant: string, r: { creditTypeId: string; rate: string; currency: string; effectiveAt: Date }): Promise<"inserted" | "same" | "different"> {
  const ins = await q.query(
    `INSERT INTO exchange_rates (tenant, credit_type_id, effective_at, rate, currency) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
    [tenant, r.creditTypeId, r.effectiveAt, r.rate, r.currency],
  );
  if (ins.rowCount === 1) return "inserted";
  const ex = await q.query<{ rate: string }>(`SELECT rate FROM exchange_rates WHERE tenant = $1 AND credit_type_id = $2 AND effective_at = $3`, [tenant, r.creditTypeId, r.effectiveAt]);
  return ex.rows[0]?.rate === r.rate ? "same" : "different";
}

export async function countRates(q: Queryable, tenant: string, creditTypeId: string): Promise<number> {
  const r = await q.query<{ n: bigint }>(`SELECT count(*)::bigint AS n FROM exchange_rates WHERE tenant = $1 AND credit_type_id = $2`, [tenant, creditTypeId]);
  return Number(r.rows[0]!.n);
}

export async function getCreditType(q: Queryable, tenant: string, id: string): Promise<CreditTypeRow | null> {
  const ct = await q.query(`SELECT id, name, currency, created_at FROM credit_types WHERE tenant = $1 AND id = $2`, [tenant, id]);
  const row = ct.rows[0];
  if (!row) return null;
  const rates = await q.query(`SELECT rate, currency, effective_at FROM exchange_rates WHERE tenant = $1 AND credit_type_id = $2 ORDER BY effective_at`, [tenant, id]);
  return {
    id: row.id as string,
    name: row.name as string,
    currency: row.currency as string,
    createdAt: date(row.created_at),
    rates: rates.rows.map((r) => ({ rate: r.rate as string, currency: r.currency as string, effectiveAt: date(r.effective_at) })),
  };
}

/** The exchange rate in force at `at` (the latest effective at or before it). */
export async function rateAt(q: Queryable, tenant: string, creditTypeId: string, at: Date): Promise<{ rate: string; currency: string } | null> {
  const r = await q.query<{ rate: string; currency: string }>(
    `SELECT rate, currency FROM exchange_rates WHERE tenant = $1 AND credit_type_id = $2 AND effective_at <= $3 ORDER BY effective_at DESC LIMIT 1`,
    [tenant, creditTypeId, at],
  );
  return r.rows[0] ?? null;
}

// ---------------------------------------------------------------- wallets

const WALLET_COLS = `tenant, id, customer_id, unit, kind, policy_mode, negative_limit_nanos, overage_rate, overage_currency,
  overdraft_posted_nanos, overdraft_held_nanos, auto_top_up, top_up_armed, last_top_up_at, top_up_seq, ledger_account_id, created_at,
  low_balance_threshold_nanos, low_balance_armed`;

function walletOf(r: Row): WalletRow {
  const atu = json<Record<string, string | number | boolean> | null>(r.auto_top_up);
  return {
    tenant: r.tenant as string,
    id: r.id as string,
    customerId: r.customer_id as string,
    unit: r.unit as string,
    kind: r.kind as "credits" | "prepaid",
    policy: { mode: r.policy_mode as PolicyMode, negativeLimitNanos: big(r.negative_limit_nanos), overageRate: r.overage_rate as string, overageCurrency: r.overage_currency as string },
    overdraftPostedNanos: big(r.overdraft_posted_nanos),
    overdraftHeldNanos: big(r.overdraft_held_nanos),
    autoTopUp: atu
      ? {
          enabled: Boolean(atu.enabled),
          thresholdNanos: BigInt(atu.threshold as string),
          amountNanos: BigInt(atu.amount as string),
          targetBalanceNanos: BigInt(atu.target as string),
          cooldownMs: Number(atu.cooldown_ms),
          costBasis: String(atu.cost_basis ?? "1"),
          costBasisCurrency: String(atu.cost_basis_currency ?? ""),
        }
      : null,
    topUpArmed: r.top_up_armed as boolean,
    lastTopUpAt: dateOrNull(r.last_top_up_at),
    topUpSeq: Number(r.top_up_seq),
    lowBalanceThresholdNanos: r.low_balance_threshold_nanos === null || r.low_balance_threshold_nanos === undefined ? null : big(r.low_balance_threshold_nanos),
    lowBalanceArmed: r.low_balance_armed !== false,
    ledgerAccountId: r.ledger_account_id as string,
    createdAt: date(r.created_at),
  };
}

/** Inserts a wallet unless the customer already has one for the unit; returns the stored one. */
export async function insertWallet(q: Queryable, w: { tenant: string; id: string; customerId: string; unit: string; kind: "credits" | "prepaid"; policy: Policy; ledgerAccountId: string; now: Date }): Promise<{ wallet: WalletRow; created: boolean }> {
  const ins = await q.query(
    `INSERT INTO wallets (tenant, id, customer_id, unit, kind, policy_mode, negative_limit_nanos, overage_rate, overage_currency, ledger_account_id, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING RETURNING ${WALLET_COLS}`,
    [w.tenant, w.id, w.customerId, w.unit, w.kind, w.policy.mode, w.policy.negativeLimitNanos, w.policy.overageRate, w.policy.overageCurrency, w.ledgerAccountId, w.now],
  );
  if (ins.rows[0]) return { wallet: walletOf(ins.rows[0]), created: true };
  const ex = await q.query(`SELECT ${WALLET_COLS} FROM wallets WHERE tenant = $1 AND (id = $2 OR (customer_id = $3 AND unit = $4))`, [w.tenant, w.id, w.customerId, w.unit]);
  if (!ex.rows[0]) throw new Error("wallet insert conflicted but no wallet found");
  return { wallet: walletOf(ex.rows[0]), created: false };
}

export async function getWallet(q: Queryable, tenant: string, id: string, forUpdate = false): Promise<WalletRow | null> {
  const r = await q.query(`SELECT ${WALLET_COLS} FROM wallets WHERE tenant = $1 AND id = $2${forUpdate ? " FOR UPDATE" : ""}`, [tenant, id]);
  return r.rows[0] ? walletOf(r.rows[0]) : null;
}

export async function findWallet(q: Queryable, tenant: string, customerId: string, unit: string): Promise<WalletRow | null> {
  const r = await q.query(`SELECT ${WALLET_COLS} FROM wallets WHERE tenant = $1 AND customer_id = $2 AND unit = $3`, [tenant, customerId, unit]);
  return r.rows[0] ? walletOf(r.rows[0]) : null;
}

export async function getWallets(q: Queryable, tenant: string, ids: string[]): Promise<Map<string, WalletRow>> {
  if (ids.length === 0) return new Map();
  const r = await q.query(`SELECT ${WALLET_COLS} FROM wallets WHERE tenant = $1 AND id = ANY($2::text[])`, [tenant, ids]);
  return new Map(r.rows.map((x) => [x.id as string, walletOf(x)]));
}

/** Sets (or clears, with null) a wallet's low-balance threshold; a change re-arms the alert. */
export async function updateLowBalance(q: Queryable, tenant: string, id: string, thresholdNanos: bigint | null): Promise<void> {
  await q.query(`UPDATE wallets SET low_balance_threshold_nanos = $3, low_balance_armed = TRUE WHERE tenant = $1 AND id = $2`, [tenant, id, thresholdNanos]);
}

/**
 * Low-balance crossings in ONE statement: every listed wallet whose alert is armed and whose
 * available balance (as decided in real time) is below its threshold is disarmed, and one
 * low_balance alert per disarmed wallet is inserted (id from the crossing counter: once per
 * crossing, whatever replica sees it; a wallet listed twice counts with its lowest balance). Returns the
 * wallet ids alerted.
 */
export async function crossLowBalance(q: Queryable, tenant: string, items: Array<{ walletId: string; availableNanos: bigint | null }>, now: Date): Promise<string[]> {
  if (items.length === 0) return [];
  const r = await q.query<{ id: string }>(
    `WITH t AS (
       SELECT t.w, min(COALESCE(t.a, (SELECT COALESCE(sum(g.amount_nanos - g.burned_nanos - g.held_nanos - g.expired_nanos), 0) FROM grants g
                                      WHERE g.tenant = $1 AND g.wallet_id = t.w AND ${SPENDABLE_NOW("g", "$4")}) - x.overdraft_posted_nanos - x.overdraft_held_nanos))::bigint AS a
       FROM unnest($2::text[], $3::bigint[]) AS t(w, a) JOIN wallets x ON x.tenant = $1 AND x.id = t.w
       GROUP BY t.w
     ),
     d AS (
       UPDATE wallets w SET low_balance_armed = FALSE, low_balance_seq = w.low_balance_seq + 1
       FROM t WHERE w.tenant = $1 AND w.id = t.w AND w.low_balance_armed AND w.low_balance_threshold_nanos IS NOT NULL AND t.a < w.low_balance_threshold_nanos
       RETURNING w.id, w.customer_id, w.unit, w.low_balance_seq, t.a
     ),
     ins AS (
       INSERT INTO alerts (tenant, id, kind, wallet_id, customer_id, grant_id, amount_nanos, unit, expires_at, created_at)
       SELECT $1, 'alr_lowb_' || d.id || '_' || d.low_balance_seq, 'low_balance', d.id, d.customer_id, '', d.a, d.unit, NULL, $4 FROM d
       ON CONFLICT DO NOTHING
     )
     SELECT id FROM d`,
    [tenant, items.map((i) => i.walletId), items.map((i) => (i.availableNanos === null ? null : i.availableNanos.toString())), now],
  );
  return r.rows.map((x) => x.id);
}

/**
 * Re-arms the low-balance alert of the listed wallets whose available balance (PostgreSQL's:
 * active grants' amount - burned - held - expired, minus the overdraft in use) is back at or above
 * the threshold. One statement.
 */
export async function rearmLowBalance(q: Queryable, tenant: string, walletIds: string[], now: Date): Promise<void> {
  if (walletIds.length === 0) return;
  await q.query(
    `UPDATE wallets w SET low_balance_armed = TRUE
     WHERE w.tenant = $1 AND w.id = ANY($2::text[]) AND NOT w.low_balance_armed AND w.low_balance_threshold_nanos IS NOT NULL
       AND (SELECT COALESCE(sum(g.amount_nanos - g.burned_nanos - g.held_nanos - g.expired_nanos), 0) FROM grants g
            WHERE g.tenant = w.tenant AND g.wallet_id = w.id AND ${SPENDABLE_NOW("g", "$3")}) - w.overdraft_posted_nanos - w.overdraft_held_nanos >= w.low_balance_threshold_nanos`,
    [tenant, walletIds, now],
  );
}

/**
 * The SQL condition "grant `g` can burn at `now`" as far as the available balance goes: active,
 * effective, not past its expires_at (a grant in its expiry grace no longer burns) and, for an
 * allowance, before its period end. The same rule as domain/burn-order.ts isEligible (scope aside)
 * and the real-time stores' available balance.
 */
export const SPENDABLE_NOW = (g: string, now: string) =>
  `${g}.state = 'active' AND ${g}.effective_at <= ${now}::timestamptz AND (${g}.expires_at IS NULL OR ${g}.expires_at > ${now}::timestamptz)
   AND (${g}.kind <> 'allowance' OR ${g}.period_end IS NULL OR ${g}.period_end > ${now}::timestamptz)`;

/**
 * Available balances of wallets from PostgreSQL: what the grants that can burn at `now` have left
 * (amount - burned - held - expired), minus the overdraft in use.
 */
export async function availableOf(q: Queryable, tenant: string, walletIds: string[], now: Date): Promise<Map<string, bigint>> {
  if (walletIds.length === 0) return new Map();
  const r = await q.query<{ id: string; a: string }>(
    `SELECT w.id, ((SELECT COALESCE(sum(g.amount_nanos - g.burned_nanos - g.held_nanos - g.expired_nanos), 0) FROM grants g
                    WHERE g.tenant = w.tenant AND g.wallet_id = w.id AND ${SPENDABLE_NOW("g", "$3")}) - w.overdraft_posted_nanos - w.overdraft_held_nanos)::text AS a
     FROM wallets w WHERE w.tenant = $1 AND w.id = ANY($2::text[])`,
    [tenant, walletIds, now],
  );
  return new Map(r.rows.map((x) => [x.id, BigInt(x.a)]));
}

export async function listWalletIds(q: Queryable, tenant: string, limit: number): Promise<string[]> {
  const r = await q.query<{ id: string }>(`SELECT id FROM wallets WHERE tenant = $1 ORDER BY id LIMIT $2`, [tenant, limit]);
  return r.rows.map((x) => x.id);
}

export async function updatePolicy(q: Queryable, tenant: string, id: string, p: Policy): Promise<void> {
  await q.query(`UPDATE wallets SET policy_mode = $3, negative_limit_nanos = $4, overage_rate = $5, overage_currency = $6 WHERE tenant = $1 AND id = $2`, [tenant, id, p.mode, p.negativeLimitNanos, p.overageRate, p.overageCurrency]);
}

/**
 * Sets a wallet's auto top-up. Armed after it = it was not enabled before, or it was armed, or the
 * wallet's available balance (PostgreSQL's, grants that can burn at `now`) is at or above the new
 * threshold: an edit while below the threshold and already topped up (disarmed) does not allow one
 * more top-up (before, every SetAutoTopUp armed it).
 */
export async function updateAutoTopUp(q: Queryable, tenant: string, id: string, c: AutoTopUpConfig, now: Date): Promise<void> {
  const v = { enabled: c.enabled, threshold: c.thresholdNanos.toString(), amount: c.amountNanos.toString(), target: c.targetBalanceNanos.toString(), cooldown_ms: c.cooldownMs, cost_basis: c.costBasis, cost_basis_currency: c.costBasisCurrency };
  await q.query(
    `UPDATE wallets w SET auto_top_up = $3::jsonb,
       top_up_armed = w.auto_top_up IS NULL OR NOT COALESCE((w.auto_top_up->>'enabled')::boolean, FALSE) OR w.top_up_armed
         OR (SELECT COALESCE(sum(g.amount_nanos - g.burned_nanos - g.held_nanos - g.expired_nanos), 0) FROM grants g
             WHERE g.tenant = w.tenant AND g.wallet_id = w.id AND ${SPENDABLE_NOW("g", "$5")}) - w.overdraft_posted_nanos - w.overdraft_held_nanos >= $4::numeric
     WHERE w.tenant = $1 AND w.id = $2`,
    [tenant, id, JSON.stringify(v), c.thresholdNanos.toString(), now],
  );
}

/**
 * Claims the auto top-up of the current crossing: succeeds for exactly one caller per crossing and
 * cooldown (the row's armed flag and last time are the shared truth across replicas).
 */
export async function claimTopUp(q: Queryable, tenant: string, id: string, now: Date, cooldownMs: number): Promise<number | null> {
  const r = await q.query<{ top_up_seq: number }>(
    `UPDATE wallets SET top_up_armed = FALSE, last_top_up_at = $3, top_up_seq = top_up_seq + 1
     WHERE tenant = $1 AND id = $2 AND top_up_armed AND (last_top_up_at IS NULL OR last_top_up_at <= $3::timestamptz - make_interval(secs => $4::double precision / 1000))
     RETURNING top_up_seq`,
    [tenant, id, now, cooldownMs],
  );
  return r.rows[0] ? Number(r.rows[0].top_up_seq) : null;
}

/** Disarms without topping up (low balance crossing); true when this call did it (alert once). */
/**
 * Disarms an armed auto top-up (a crossing that tops up nothing). Returns null when it was not armed;
 * else, for a wallet without a low-balance alert of its own, the crossing's number on the wallet's
 * low-balance counter (the one crossLowBalance's alerts count on, bumped here: the alert of this
 * crossing is `alr_lowb_<wallet>_<n>`, once per crossing whatever the clock), or 0 for one with its own.
 */
export async function disarmTopUp(q: Queryable, tenant: string, id: string): Promise<number | null> {
  const r = await q.query<{ n: number }>(
    `UPDATE wallets SET top_up_armed = FALSE,
       low_balance_seq = low_balance_seq + CASE WHEN low_balance_threshold_nanos IS NULL THEN 1 ELSE 0 END
     WHERE tenant = $1 AND id = $2 AND top_up_armed
     RETURNING CASE WHEN low_balance_threshold_nanos IS NULL THEN low_balance_seq ELSE 0 END AS n`,
    [tenant, id],
  );
  return r.rows.length === 1 ? Number(r.rows[0]!.n) : null;
}

export async function armTopUp(q: Queryable, tenant: string, id: string): Promise<void> {
  await q.query(`UPDATE wallets SET top_up_armed = TRUE WHERE tenant = $1 AND id = $2 AND NOT top_up_armed`, [tenant, id]);
}

/**
 * Re-arms the auto top-up of the listed wallets whose available balance (PostgreSQL's, grants that
 * can burn at `now`) is at or above their auto top-up threshold. One statement; returns the ids armed.
 */
export async function armTopUpIfAbove(q: Queryable, tenant: string, walletIds: string[], now: Date): Promise<string[]> {
  if (walletIds.length === 0) return [];
  const r = await q.query<{ id: string }>(
    `UPDATE wallets w SET top_up_armed = TRUE
     WHERE w.tenant = $1 AND w.id = ANY($2::text[]) AND NOT w.top_up_armed AND w.auto_top_up IS NOT NULL
       AND (SELECT COALESCE(sum(g.amount_nanos - g.burned_nanos - g.held_nanos - g.expired_nanos), 0) FROM grants g
            WHERE g.tenant = w.tenant AND g.wallet_id = w.id AND ${SPENDABLE_NOW("g", "$3")}) - w.overdraft_posted_nanos - w.overdraft_held_nanos
           >= (w.auto_top_up->>'threshold')::numeric
     RETURNING w.id`,
    [tenant, walletIds, now],
  );
  return r.rows.map((x) => x.id);
}

/** Adds to the wallet's overdraft counters; the WHERE clause is the guard of the soft negative limit. */
export async function addOverdraft(q: Queryable, tenant: string, id: string, d: { postedNanos: bigint; heldNanos: bigint; enforceLimit: boolean }): Promise<void> {
  if (d.postedNanos === 0n && d.heldNanos === 0n) return;
  const r = await q.query(
    `UPDATE wallets SET overdraft_posted_nanos = overdraft_posted_nanos + $3, overdraft_held_nanos = overdraft_held_nanos + $4
     WHERE tenant = $1 AND id = $2 AND (NOT $5::boolean OR overdraft_posted_nanos + $3 + overdraft_held_nanos + $4 <= negative_limit_nanos)`,
    [tenant, id, d.postedNanos, d.heldNanos, d.enforceLimit],
  );
  if (r.rowCount !== 1) throw new GuardError("overdraft past the wallet's negative limit");
}

// ---------------------------------------------------------------- grants

const GRANT_COLS = `id, wallet_id, kind, amount_nanos, burned_nanos, held_nanos, expired_nanos, priority, effective_at, expires_at, created_at,
  cost_basis, cost_basis_currency, scope_charge_ids, scope_models, rollover, period_end, renew, root_id, period_index, state, invoice_id, description, request_hash,
  expiry_grace_ms`;

function grantOf(r: Row): GrantRow {
  const ro = json<Record<string, string | number> | null>(r.rollover);
  return {
    id: r.id as string,
    walletId: r.wallet_id as string,
    kind: r.kind as GrantKind,
    amountNanos: big(r.amount_nanos),
    burnedNanos: big(r.burned_nanos),
    heldNanos: big(r.held_nanos),
    expiredNanos: big(r.expired_nanos),
    priority: Number(r.priority),
    effectiveAt: date(r.effective_at),
    expiresAt: dateOrNull(r.expires_at),
    createdAt: date(r.created_at),
    costBasis: r.cost_basis as string,
    costBasisCurrency: r.cost_basis_currency as string,
    scope: { chargeIds: (r.scope_charge_ids as string[]) ?? [], models: (r.scope_models as string[]) ?? [] },
    rollover: ro ? { mode: ro.mode as RolloverRule["mode"], capNanos: BigInt(ro.cap as string), percentBps: Number(ro.bps), expiresAfterMs: Number(ro.expires_after_ms) } : null,
    periodEnd: dateOrNull(r.period_end),
    renew: r.renew as boolean,
    rootId: r.root_id as string,
    periodIndex: Number(r.period_index),
    state: r.state as GrantRow["state"],
    invoiceId: r.invoice_id as string,
    description: r.description as string,
    requestHash: r.request_hash as string,
    expiryGraceMs: r.expiry_grace_ms === null || r.expiry_grace_ms === undefined ? null : Number(r.expiry_grace_ms),
  };
}

export function toBurnGrant(g: GrantRow): BurnGrant {
  return {
    id: g.id,
    kind: g.kind,
    priority: g.priority,
    effectiveAtMs: g.effectiveAt.getTime(),
    expiresAtMs: g.expiresAt ? g.expiresAt.getTime() : null,
    periodEndMs: g.kind === "allowance" && g.periodEnd ? g.periodEnd.getTime() : null,
    createdAtMs: g.createdAt.getTime(),
    availableNanos: g.amountNanos - g.burnedNanos - g.heldNanos - g.expiredNanos,
    scope: g.scope,
  };
}

export async function insertGrant(q: Queryable, tenant: string, g: Omit<GrantRow, "burnedNanos" | "heldNanos" | "expiredNanos" | "state"> & { burnedNanos?: bigint }): Promise<boolean> {
  const ro = g.rollover ? JSON.stringify({ mode: g.rollover.mode, cap: g.rollover.capNanos.toString(), bps: g.rollover.percentBps, expires_after_ms: g.rollover.expiresAfterMs }) : null;
  const r = await q.query(
    `INSERT INTO grants (tenant, id, wallet_id, kind, amount_nanos, burned_nanos, priority, effective_at, expires_at, created_at, cost_basis, cost_basis_currency,
       scope_charge_ids, scope_models, rollover, period_end, renew, root_id, period_index, state, invoice_id, description, request_hash, expiry_grace_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16, $17, $18, $19, 'active', $20, $21, $22, $23) ON CONFLICT DO NOTHING`,
    [tenant, g.id, g.walletId, g.kind, g.amountNanos, g.burnedNanos ?? 0n, g.priority, g.effectiveAt, g.expiresAt, g.createdAt, g.costBasis, g.costBasisCurrency,
      g.scope.chargeIds, g.scope.models, ro, g.periodEnd, g.renew, g.rootId, g.periodIndex, g.invoiceId, g.description, g.requestHash, g.expiryGraceMs],
  );
  return r.rowCount === 1;
}

export async function getGrant(q: Queryable, tenant: string, id: string): Promise<GrantRow | null> {
  const r = await q.query(`SELECT ${GRANT_COLS} FROM grants WHERE tenant = $1 AND id = $2`, [tenant, id]);
  return r.rows[0] ? grantOf(r.rows[0]) : null;
}

export async function listGrants(q: Queryable, tenant: string, walletId: string, opts: { activeOnly: boolean; forUpdate?: boolean }): Promise<GrantRow[]> {
  const r = await q.query(
    `SELECT ${GRANT_COLS} FROM grants WHERE tenant = $1 AND wallet_id = $2${opts.activeOnly ? " AND state = 'active'" : ""} ORDER BY id${opts.forUpdate ? " FOR UPDATE" : ""}`,
    [tenant, walletId],
  );
  return r.rows.map(grantOf);
}

/**
 * The sums of a wallet's balance over ALL of its grants (any state), computed in PostgreSQL:
 * remaining = amount - burned - expired, held, and spendable = what the grants that can burn at
 * `now` have left (amount - burned - held - expired; SPENDABLE_NOW). One aggregate row, however
 * many grants the wallet ever had.
 */
export async function balanceSums(q: Queryable, tenant: string, walletId: string, now: Date): Promise<{ remainingNanos: bigint; heldNanos: bigint; spendableNanos: bigint }> {
  const r = await q.query<{ r: string; h: string; a: string }>(
    `SELECT COALESCE(sum(g.amount_nanos - g.burned_nanos - g.expired_nanos), 0)::text AS r,
            COALESCE(sum(g.held_nanos), 0)::text AS h,
            COALESCE(sum(g.amount_nanos - g.burned_nanos - g.held_nanos - g.expired_nanos) FILTER (WHERE ${SPENDABLE_NOW("g", "$3")}), 0)::text AS a
       FROM grants g WHERE g.tenant = $1 AND g.wallet_id = $2`,
    [tenant, walletId, now],
  );
  const x = r.rows[0]!;
  return { remainingNanos: BigInt(x.r), heldNanos: BigInt(x.h), spendableNanos: BigInt(x.a) };
}

/**
 * At most `limit` grants of a wallet for GetBalance: the active ones first, each part in burn-down
 * order (priority, soonest expiry with none last, free before paid, oldest, id: burn-order.ts's key).
 */
export async function listBalanceGrants(q: Queryable, tenant: string, walletId: string, limit: number): Promise<GrantRow[]> {
  const r = await q.query(
    `SELECT ${GRANT_COLS} FROM grants WHERE tenant = $1 AND wallet_id = $2
     ORDER BY (state <> 'active'), priority, expires_at NULLS LAST, (kind = 'purchased'), created_at, id LIMIT $3`,
    [tenant, walletId, limit],
  );
  return r.rows.map(grantOf);
}

/**
 * A wallet's grants: how many are open (active, not fully burned or expired), and how many nanos
 * were ever granted to it (every grant's amount, in any state).
 */
export async function openGrants(q: Queryable, tenant: string, walletId: string): Promise<{ count: number; grantedNanos: bigint }> {
  const r = await q.query<{ n: bigint; granted: string }>(
    `SELECT count(*) FILTER (WHERE state = 'active' AND burned_nanos + expired_nanos < amount_nanos)::bigint AS n,
            COALESCE(sum(amount_nanos), 0)::text AS granted
       FROM grants WHERE tenant = $1 AND wallet_id = $2`,
    [tenant, walletId],
  );
  return { count: Number(r.rows[0]!.n), grantedNanos: BigInt(r.rows[0]!.granted) };
}

/**
 * Applies deltas to grants in one statement (their rows locked in id order). The grants_within_amount CHECK (and the >= 0 checks)
 * make PostgreSQL refuse any over-spend: that is the guard behind Redis.
 */
export async function applyGrantDeltas(q: Queryable, tenant: string, deltas: Array<{ grantId: string; burned?: bigint; held?: bigint; expired?: bigint }>): Promise<void> {
  const ds = deltas.filter((d) => (d.burned ?? 0n) !== 0n || (d.held ?? 0n) !== 0n || (d.expired ?? 0n) !== 0n);
  if (ds.length === 0) return;
  try {
    // The rows are locked in id order first (l), like the capture / release group commits lock them,
    // so two writes of the same grants never wait for each other in a cycle (a deadlock).
    const r = await q.query(
      `WITH d AS (SELECT id, sum(b)::bigint AS b, sum(h)::bigint AS h, sum(x)::bigint AS x
                  FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t(id, b, h, x) GROUP BY id),
            l AS (SELECT g.id FROM grants g WHERE g.tenant = $1 AND g.id IN (SELECT id FROM d) ORDER BY g.id FOR UPDATE)
       UPDATE grants g SET burned_nanos = g.burned_nanos + d.b, held_nanos = g.held_nanos + d.h, expired_nanos = g.expired_nanos + d.x
       FROM d WHERE g.tenant = $1 AND g.id = d.id AND g.id IN (SELECT id FROM l)`,
      [tenant, ds.map((d) => d.grantId), ds.map((d) => (d.burned ?? 0n).toString()), ds.map((d) => (d.held ?? 0n).toString()), ds.map((d) => (d.expired ?? 0n).toString())],
    );
    const distinct = new Set(ds.map((d) => d.grantId)).size;
    if (r.rowCount !== distinct) throw new GuardError("grant not found");
  } catch (e) {
    if ((e as { code?: string }).code === "check_violation") throw new GuardError("grant over-spent");
    throw e;
  }
}

export async function setGrantState(q: Queryable, tenant: string, id: string, state: GrantRow["state"]): Promise<void> {
  await q.query(`UPDATE grants SET state = $3 WHERE tenant = $1 AND id = $2`, [tenant, id, state]);
}

/**
 * SQL condition: the grant's expires_at is its end (RunExpiry's to close), not an allowance's
 * expires_at at or after its period_end, which the period end comes to first: RunRollover closes
 * that one (rollover and renewal). Grant refuses expires_at on allowances; older rows may have one.
 * (RunExpiry expired such an allowance first when both were due: its remainder all went to
 * breakage and it was neither rolled over nor renewed.)
 */
export const ENDS_AT_EXPIRY_SQL = `NOT (kind = 'allowance' AND period_end IS NOT NULL AND period_end <= expires_at)`;

/**
 * Active grants whose expiry plus grace has passed at asOf, across the tenant or one wallet: each
 * grant's own grace, or defaultGraceMs when it has none (not an allowance that its period end
 * closes first: ENDS_AT_EXPIRY_SQL).
 */
export async function listExpiredGrants(q: Queryable, tenant: string, walletId: string, asOf: Date, defaultGraceMs: number, limit: number): Promise<GrantRow[]> {
  const r = await q.query(
    `SELECT ${GRANT_COLS} FROM grants WHERE tenant = $1 AND ($2 = '' OR wallet_id = $2) AND state = 'active' AND expires_at IS NOT NULL AND expires_at <= $3 AND ${ENDS_AT_EXPIRY_SQL}
       AND expires_at + make_interval(secs => COALESCE(expiry_grace_ms, $4::bigint)::double precision / 1000) <= $3
     ORDER BY expires_at, id LIMIT $5`,
    [tenant, walletId, asOf, defaultGraceMs, limit],
  );
  return r.rows.map(grantOf);
}

export async function listExpiringGrants(q: Queryable, tenant: string, walletId: string, from: Date, to: Date, limit: number): Promise<GrantRow[]> {
  const r = await q.query(
    `SELECT ${GRANT_COLS} FROM grants WHERE tenant = $1 AND ($2 = '' OR wallet_id = $2) AND state = 'active' AND expires_at > $3 AND expires_at <= $4 AND ${ENDS_AT_EXPIRY_SQL} ORDER BY expires_at, id LIMIT $5`,
    [tenant, walletId, from, to, limit],
  );
  return r.rows.map(grantOf);
}

/**
 * SQL condition on an allowance: its period_end is its end (RunRollover's to close), not an
 * expires_at before it, which RunExpiry closes (breakage after the grace, no rollover, no renewal):
 * the complement of ENDS_AT_EXPIRY_SQL among allowances, so exactly one of the two owns each one.
 * (Before, RunRollover also took an allowance whose expires_at came before its period end when the
 * grace ran past the period end: rolled over and renewed, or expired, by whichever ran first.)
 */
export const ENDS_AT_PERIOD_END_SQL = `(expires_at IS NULL OR period_end <= expires_at)`;

export async function listPeriodEndedGrants(q: Queryable, tenant: string, walletId: string, asOf: Date, limit: number): Promise<GrantRow[]> {
  const r = await q.query(
    `SELECT ${GRANT_COLS} FROM grants WHERE tenant = $1 AND ($2 = '' OR wallet_id = $2) AND state = 'active' AND kind = 'allowance' AND period_end IS NOT NULL AND period_end <= $3 AND ${ENDS_AT_PERIOD_END_SQL} ORDER BY period_end, id LIMIT $4`,
    [tenant, walletId, asOf, limit],
  );
  return r.rows.map(grantOf);
}

// ---------------------------------------------------------------- holds

const HOLD_COLS = `id, wallet_id, amount_nanos, slices, overdraft_nanos, uncovered_nanos, state, expires_at, captured_nanos, charge_id, model, request_hash, created_at`;

function holdOf(r: Row): HoldRow {
  return {
    id: r.id as string,
    walletId: r.wallet_id as string,
    amountNanos: big(r.amount_nanos),
    slices: json<Array<{ g: string; n: string }>>(r.slices).map((s) => ({ grantId: s.g, amountNanos: BigInt(s.n) })),
    overdraftNanos: big(r.overdraft_nanos),
    uncoveredNanos: big(r.uncovered_nanos),
    state: r.state as HoldRow["state"],
    expiresAt: date(r.expires_at),
    capturedNanos: big(r.captured_nanos),
    chargeId: r.charge_id as string,
    model: r.model as string,
    requestHash: r.request_hash as string,
    createdAt: date(r.created_at),
  };
}

export async function insertHold(q: Queryable, tenant: string, h: HoldRow): Promise<boolean> {
  const r = await q.query(
    `INSERT INTO holds (tenant, id, wallet_id, amount_nanos, slices, overdraft_nanos, uncovered_nanos, state, expires_at, charge_id, model, request_hash, created_at)
     VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 'pending', $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
    [tenant, h.id, h.walletId, h.amountNanos, JSON.stringify(h.slices.map((s) => ({ g: s.grantId, n: s.amountNanos.toString() }))), h.overdraftNanos, h.uncoveredNanos,
      h.expiresAt, h.chargeId, h.model, h.requestHash, h.createdAt],
  );
  return r.rowCount === 1;
}

export async function getHold(q: Queryable, tenant: string, id: string, forUpdate = false): Promise<HoldRow | null> {
  const r = await q.query(`SELECT ${HOLD_COLS} FROM holds WHERE tenant = $1 AND id = $2${forUpdate ? " FOR UPDATE" : ""}`, [tenant, id]);
  return r.rows[0] ? holdOf(r.rows[0]) : null;
}

export async function resolveHold(q: Queryable, tenant: string, id: string, state: "captured" | "released" | "expired", capturedNanos: bigint, now: Date): Promise<void> {
  await q.query(`UPDATE holds SET state = $3, captured_nanos = $4, resolved_at = $5 WHERE tenant = $1 AND id = $2 AND state = 'pending'`, [tenant, id, state, capturedNanos, now]);
}

/** Locks the listed holds that are still pending (id order); returns their ids. */
export async function lockPendingHolds(q: Queryable, tenant: string, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const r = await q.query<{ id: string }>(`SELECT id FROM holds WHERE tenant = $1 AND id = ANY($2::text[]) AND state = 'pending' ORDER BY id FOR UPDATE`, [tenant, ids]);
  return new Set(r.rows.map((x) => x.id));
}

/** Resolves many pending holds in one statement. */
export async function resolveHolds(q: Queryable, tenant: string, rs: Array<{ id: string; state: "captured" | "released" | "expired"; capturedNanos: bigint }>, now: Date): Promise<void> {
  if (rs.length === 0) return;
  await q.query(
    `UPDATE holds h SET state = t.s, captured_nanos = t.c, resolved_at = $5
     FROM unnest($2::text[], $3::text[], $4::bigint[]) AS t(id, s, c) WHERE h.tenant = $1 AND h.id = t.id AND h.state = 'pending'`,
    [tenant, rs.map((x) => x.id), rs.map((x) => x.state), rs.map((x) => x.capturedNanos.toString()), now],
  );
}

/** The capture records of holds (request hash and shortfall), for replays. */
export async function getCaptures(q: Queryable, tenant: string, holdIds: string[]): Promise<Map<string, { requestHash: string; shortfallNanos: bigint }>> {
  if (holdIds.length === 0) return new Map();
  const r = await q.query(`SELECT id, request_hash, shortfall_nanos FROM consumptions WHERE tenant = $1 AND source = 'capture' AND id = ANY($2::text[])`, [tenant, holdIds]);
  return new Map(r.rows.map((x) => [x.id as string, { requestHash: x.request_hash as string, shortfallNanos: big(x.shortfall_nanos) }]));
}

export async function listExpiredHolds(q: Queryable, tenant: string, walletId: string, asOf: Date, limit: number): Promise<HoldRow[]> {
  const r = await q.query(
    `SELECT ${HOLD_COLS} FROM holds WHERE tenant = $1 AND ($2 = '' OR wallet_id = $2) AND state = 'pending' AND expires_at <= $3 ORDER BY expires_at, id LIMIT $4`,
    [tenant, walletId, asOf, limit],
  );
  return r.rows.map(holdOf);
}

export async function sumPendingHolds(q: Queryable, tenant: string, walletId: string): Promise<bigint> {
  const r = await q.query<{ n: bigint | null }>(`SELECT sum(amount_nanos - uncovered_nanos)::bigint AS n FROM holds WHERE tenant = $1 AND wallet_id = $2 AND state = 'pending'`, [tenant, walletId]);
  return r.rows[0]?.n === null || r.rows[0]?.n === undefined ? 0n : big(r.rows[0].n);
}

// ---------------------------------------------------------------- consumption

function consumptionOf(r: Row): ConsumptionRow {
  return {
    source: r.source as ConsumptionRow["source"],
    id: r.id as string,
    walletId: r.wallet_id as string,
    customerId: r.customer_id as string,
    unit: r.unit as string,
    amountNanos: big(r.amount_nanos),
    consumedNanos: big(r.consumed_nanos),
    overdraftNanos: big(r.overdraft_nanos),
    shortfallNanos: big(r.shortfall_nanos),
    eventId: r.event_id as string,
    chargeId: r.charge_id as string,
    model: r.model as string,
    holdId: r.hold_id as string,
    occurredAt: date(r.occurred_at),
    requestHash: r.request_hash as string,
  };
}

const CONSUMPTION_COLS = `source, id, wallet_id, customer_id, unit, amount_nanos, consumed_nanos, shortfall_nanos, event_id, charge_id, model, hold_id, occurred_at, request_hash, overdraft_nanos`;

export async function insertConsumption(q: Queryable, tenant: string, c: ConsumptionRow, now: Date): Promise<boolean> {
  const r = await q.query(
    `INSERT INTO consumptions (tenant, ${CONSUMPTION_COLS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT DO NOTHING`,
    [tenant, c.source, c.id, c.walletId, c.customerId, c.unit, c.amountNanos, c.consumedNanos, c.shortfallNanos, c.eventId, c.chargeId, c.model, c.holdId, c.occurredAt, c.requestHash, c.overdraftNanos, now],
  );
  return r.rowCount === 1;
}

export async function getConsumptions(q: Queryable, tenant: string, ids: string[]): Promise<Map<string, ConsumptionRow>> {
  if (ids.length === 0) return new Map();
  const r = await q.query(`SELECT ${CONSUMPTION_COLS} FROM consumptions WHERE tenant = $1 AND source = 'consume' AND id = ANY($2::text[])`, [tenant, ids]);
  return new Map(r.rows.map((x) => [x.id as string, consumptionOf(x)]));
}

/** ConsumptionTotal: burns in a range; `consumed` = grant-funded + overdraft, `captured` the part of `consumed` burned by captures. */
export interface ConsumptionTotal {
  consumed: bigint;
  overdraft: bigint;
  captured: bigint;
  shortfall: bigint;
}

export async function consumptionTotals(q: Queryable, tenant: string, customerId: string, unit: string, from: Date, to: Date): Promise<ConsumptionTotal & { byCharge: Array<ConsumptionTotal & { chargeId: string }> }> {
  const r = await q.query(
    `SELECT charge_id, sum(consumed_nanos)::text AS c, sum(overdraft_nanos)::text AS o,
            coalesce(sum(consumed_nanos) FILTER (WHERE source = 'capture'), 0)::text AS k, sum(shortfall_nanos)::text AS s FROM consumptions
     WHERE tenant = $1 AND customer_id = $2 AND unit = $3 AND occurred_at >= $4 AND occurred_at < $5 GROUP BY charge_id ORDER BY charge_id`,
    [tenant, customerId, unit, from, to],
  );
  const total: ConsumptionTotal = { consumed: 0n, overdraft: 0n, captured: 0n, shortfall: 0n };
  const byCharge = r.rows.map((x) => {
    const t = { chargeId: x.charge_id as string, consumed: BigInt(x.c as string), overdraft: BigInt(x.o as string), captured: BigInt(x.k as string), shortfall: BigInt(x.s as string) };
    total.consumed += t.consumed;
    total.overdraft += t.overdraft;
    total.captured += t.captured;
    total.shortfall += t.shortfall;
    return t;
  });
  return { ...total, byCharge };
}

export async function listConsumptionEntries(q: Queryable, tenant: string, customerId: string, unit: string, from: Date, to: Date, after: { at: Date; source: string; id: string } | null, limit: number): Promise<ConsumptionRow[]> {
  const r = await q.query(
    `SELECT ${CONSUMPTION_COLS} FROM consumptions
     WHERE tenant = $1 AND customer_id = $2 AND unit = $3 AND occurred_at >= $4 AND occurred_at < $5
       AND ($6::timestamptz IS NULL OR (occurred_at, source, id) > ($6::timestamptz, $7, $8))
     ORDER BY occurred_at, source, id LIMIT $9`,
    [tenant, customerId, unit, from, to, after?.at ?? null, after?.source ?? "", after?.id ?? "", limit],
  );
  return r.rows.map(consumptionOf);
}

// ---------------------------------------------------------------- movements, alerts, outbox

export async function insertMovements(q: Queryable, tenant: string, ms: MovementRow[]): Promise<void> {
  const rows = ms.filter((m) => m.amountNanos > 0n);
  if (rows.length === 0) return;
  await q.query(
    `INSERT INTO movements (tenant, id, wallet_id, grant_id, kind, amount_nanos, source_id, event_id, hold_id, invoice_id, ledger_transfer_id, occurred_at)
     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])
     ON CONFLICT DO NOTHING`,
    [
      tenant,
      rows.map((m) => m.id),
      rows.map((m) => m.walletId),
      rows.map((m) => m.grantId),
      rows.map((m) => m.kind),
      rows.map((m) => m.amountNanos.toString()),
      rows.map((m) => m.sourceId),
      rows.map((m) => m.eventId ?? ""),
      rows.map((m) => m.holdId ?? ""),
      rows.map((m) => m.invoiceId ?? ""),
      rows.map((m) => m.ledgerTransferId ?? ""),
      rows.map((m) => m.occurredAt.toISOString()),
    ],
  );
}

export async function listMovements(q: Queryable, tenant: string, walletId: string, from: Date, to: Date, afterSeq: bigint, limit: number): Promise<Array<MovementRow & { seq: bigint }>> {
  const r = await q.query(
    `SELECT seq, id, wallet_id, grant_id, kind, amount_nanos, source_id, event_id, hold_id, invoice_id, ledger_transfer_id, occurred_at FROM movements
     WHERE tenant = $1 AND wallet_id = $2 AND occurred_at >= $3 AND occurred_at < $4 AND seq > $5 ORDER BY seq LIMIT $6`,
    [tenant, walletId, from, to, afterSeq, limit],
  );
  return r.rows.map((x) => ({
    seq: big(x.seq),
    id: x.id as string,
    walletId: x.wallet_id as string,
    grantId: x.grant_id as string,
    kind: x.kind as MovementRow["kind"],
    amountNanos: big(x.amount_nanos),
    sourceId: x.source_id as string,
    eventId: x.event_id as string,
    holdId: x.hold_id as string,
    invoiceId: x.invoice_id as string,
    ledgerTransferId: x.ledger_transfer_id as string,
    occurredAt: date(x.occurred_at),
  }));
}

export async function insertAlert(q: Queryable, tenant: string, a: AlertRow): Promise<boolean> {
  const r = await q.query(
    `INSERT INTO alerts (tenant, id, kind, wallet_id, customer_id, grant_id, amount_nanos, unit, expires_at, created_at, cost_basis, cost_basis_currency)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
    [tenant, a.id, a.kind, a.walletId, a.customerId, a.grantId, a.amountNanos, a.unit, a.expiresAt, a.createdAt, a.costBasis ?? "", a.costBasisCurrency ?? ""],
  );
  return r.rowCount === 1;
}

export async function listAlerts(q: Queryable, tenant: string, f: { customerId: string; kind: string; since: Date | null; afterSeq: bigint; limit: number }): Promise<Array<AlertRow & { seq: bigint }>> {
  const r = await q.query(
    `SELECT seq, id, kind, wallet_id, customer_id, grant_id, amount_nanos, unit, expires_at, created_at, cost_basis, cost_basis_currency FROM alerts
     WHERE tenant = $1 AND ($2 = '' OR customer_id = $2) AND ($3 = '' OR kind = $3) AND ($4::timestamptz IS NULL OR created_at >= $4) AND seq > $5 ORDER BY seq LIMIT $6`,
    [tenant, f.customerId, f.kind, f.since, f.afterSeq, f.limit],
  );
  return r.rows.map((x) => ({
    seq: big(x.seq),
    id: x.id as string,
    kind: x.kind as AlertRow["kind"],
    walletId: x.wallet_id as string,
    customerId: x.customer_id as string,
    grantId: x.grant_id as string,
    amountNanos: big(x.amount_nanos),
    unit: x.unit as string,
    expiresAt: dateOrNull(x.expires_at),
    createdAt: date(x.created_at),
    costBasis: x.cost_basis as string,
    costBasisCurrency: x.cost_basis_currency as string,
  }));
}

/** The active trace context as stored with outbox rows ('' when no span is active). */
function outboxTrace(): StoredTraceContext {
  return currentTraceContext() ?? { traceparent: "", tracestate: "" };
}

/**
 * Adds linked chains of ledger transfers to the outbox (each chain one row: it is posted whole),
 * with the active trace context, which the post continues.
 */
export async function enqueueTransfers(q: Queryable, tenant: string, chains: PlannedTransfer[][], now: Date): Promise<void> {
  const cs = chains.filter((c) => c.length > 0);
  if (cs.length === 0) return;
  const tc = outboxTrace();
  await q.query(
    `INSERT INTO ledger_outbox (tenant, transfers, created_at, traceparent, tracestate) SELECT $1, t::jsonb, $3, $4, $5 FROM unnest($2::text[]) AS t`,
    [tenant, cs.map((c) => JSON.stringify(c)), now, tc.traceparent, tc.tracestate],
  );
}

export interface OutboxRow {
  seq: bigint;
  tenant: string;
  transfers: PlannedTransfer[];
  /** The trace of the call that wrote the row (traceparent '' when none). */
  trace: StoredTraceContext;
}

export async function nextOutbox(q: Queryable, limit: number): Promise<OutboxRow[]> {
  const r = await q.query(`SELECT seq, tenant, transfers, traceparent, tracestate FROM ledger_outbox WHERE posted_at IS NULL ORDER BY seq LIMIT $1`, [limit]);
  return r.rows.map((x) => ({
    seq: big(x.seq),
    tenant: x.tenant as string,
    transfers: json<PlannedTransfer[]>(x.transfers),
    trace: { traceparent: x.traceparent as string, tracestate: x.tracestate as string },
  }));
}

export async function markOutbox(q: Queryable, done: bigint[], failed: Array<{ seq: bigint; error: string }>, retry: Array<{ seq: bigint; error: string }>, now: Date): Promise<void> {
  // A row posted after earlier retries is not a failure: its retry error is cleared.
  if (done.length > 0) await q.query(`UPDATE ledger_outbox SET posted_at = $2, attempts = attempts + 1, error = '' WHERE seq = ANY($1::bigint[])`, [done.map(String), now]);
  for (const f of failed) await q.query(`UPDATE ledger_outbox SET posted_at = $2, attempts = attempts + 1, error = $3 WHERE seq = $1`, [f.seq, now, f.error]);
  for (const f of retry) await q.query(`UPDATE ledger_outbox SET attempts = attempts + 1, error = $2 WHERE seq = $1`, [f.seq, f.error]);
}

export async function countOutbox(q: Queryable): Promise<{ unposted: number; failed: number }> {
  const r = await q.query<{ u: bigint; f: bigint }>(`SELECT count(*) FILTER (WHERE posted_at IS NULL)::bigint AS u, count(*) FILTER (WHERE error <> '' AND posted_at IS NOT NULL)::bigint AS f FROM ledger_outbox`);
  return { unposted: Number(r.rows[0]!.u), failed: Number(r.rows[0]!.f) };
}

// ---------------------------------------------------------------- batch inserts (group commit)

/** Inserts holds; returns the ids actually inserted (others existed: replays). */
export async function insertHolds(q: Queryable, tenant: string, hs: HoldRow[]): Promise<Set<string>> {
  if (hs.length === 0) return new Set();
  const r = await q.query<{ id: string }>(
    `INSERT INTO holds (tenant, id, wallet_id, amount_nanos, slices, overdraft_nanos, uncovered_nanos, state, expires_at, charge_id, model, request_hash, created_at)
     SELECT $1, t.id, t.w, t.a, t.s::jsonb, t.od, t.u, 'pending', t.e, t.c, t.m, t.h, t.cr
     FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])
       AS t(id, w, a, s, od, u, e, c, m, h, cr)
     ON CONFLICT DO NOTHING RETURNING id`,
    [
      tenant,
      hs.map((h) => h.id),
      hs.map((h) => h.walletId),
      hs.map((h) => h.amountNanos.toString()),
      hs.map((h) => JSON.stringify(h.slices.map((s) => ({ g: s.grantId, n: s.amountNanos.toString() })))),
      hs.map((h) => h.overdraftNanos.toString()),
      hs.map((h) => h.uncoveredNanos.toString()),
      hs.map((h) => h.expiresAt.toISOString()),
      hs.map((h) => h.chargeId),
      hs.map((h) => h.model),
      hs.map((h) => h.requestHash),
      hs.map((h) => h.createdAt.toISOString()),
    ],
  );
  return new Set(r.rows.map((x) => x.id));
}

/** Inserts consumption rows; returns the ids actually inserted (others existed: replays). */
export async function insertConsumptions(q: Queryable, tenant: string, cs: ConsumptionRow[], now: Date): Promise<Set<string>> {
  if (cs.length === 0) return new Set();
  const r = await q.query<{ id: string }>(
    `INSERT INTO consumptions (tenant, source, id, wallet_id, customer_id, unit, amount_nanos, consumed_nanos, shortfall_nanos, event_id, charge_id, model, hold_id, occurred_at, request_hash, overdraft_nanos, created_at)
     SELECT $1, t.src, t.id, t.w, t.cu, t.un, t.a, t.c, t.s, t.ev, t.ch, t.m, t.ho, t.oc, t.h, t.od, $2
     FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::text[], $17::bigint[])
       AS t(src, id, w, cu, un, a, c, s, ev, ch, m, ho, oc, h, od)
     ON CONFLICT DO NOTHING RETURNING id`,
    [
      tenant,
      now,
      cs.map((c) => c.source),
      cs.map((c) => c.id),
      cs.map((c) => c.walletId),
      cs.map((c) => c.customerId),
      cs.map((c) => c.unit),
      cs.map((c) => c.amountNanos.toString()),
      cs.map((c) => c.consumedNanos.toString()),
      cs.map((c) => c.shortfallNanos.toString()),
      cs.map((c) => c.eventId),
      cs.map((c) => c.chargeId),
      cs.map((c) => c.model),
      cs.map((c) => c.holdId),
      cs.map((c) => c.occurredAt.toISOString()),
      cs.map((c) => c.requestHash),
      cs.map((c) => c.overdraftNanos.toString()),
    ],
  );
  return new Set(r.rows.map((x) => x.id));
}

export async function getHolds(q: Queryable, tenant: string, ids: string[]): Promise<Map<string, HoldRow>> {
  if (ids.length === 0) return new Map();
  const r = await q.query(`SELECT ${HOLD_COLS} FROM holds WHERE tenant = $1 AND id = ANY($2::text[])`, [tenant, ids]);
  return new Map(r.rows.map((x) => [x.id as string, holdOf(x)]));
}

const SNAPSHOT_WALLET_COLS = WALLET_COLS.split(",").map((c) => `w.${c.trim()}`).join(", ");
const SNAPSHOT_GRANT_COLS = GRANT_COLS.split(",").map((c) => `g.${c.trim()} AS g_${c.trim()}`).join(", ");

/**
 * The snapshots the real-time store is rebuilt from: each listed wallet and its active grants, all
 * in ONE statement (one consistent snapshot without a transaction; one round trip for a group's
 * wallets instead of four per wallet). Wallets not found are absent from the map.
 */
export async function readSnapshotRowsMany(q: Queryable, tenant: string, walletIds: string[]): Promise<Map<string, { wallet: WalletRow; grants: GrantRow[] }>> {
  const out = new Map<string, { wallet: WalletRow; grants: GrantRow[] }>();
  if (walletIds.length === 0) return out;
  const r = await q.query(
    `SELECT ${SNAPSHOT_WALLET_COLS}, ${SNAPSHOT_GRANT_COLS} FROM wallets w
     LEFT JOIN grants g ON g.tenant = w.tenant AND g.wallet_id = w.id AND g.state = 'active'
     WHERE w.tenant = $1 AND w.id = ANY($2::text[]) ORDER BY w.id, g.id`,
    [tenant, walletIds],
  );
  for (const x of r.rows) {
    let snap = out.get(x.id as string);
    if (!snap) out.set(x.id as string, (snap = { wallet: walletOf(x), grants: [] }));
    if (x.g_id === null || x.g_id === undefined) continue;
    snap.grants.push(grantOf(Object.fromEntries(Object.entries(x).filter(([k]) => k.startsWith("g_")).map(([k, v]) => [k.slice(2), v]))));
  }
  return out;
}

/** One wallet's snapshot (readSnapshotRowsMany of one). */
export async function readSnapshotRows(q: Queryable, tenant: string, walletId: string): Promise<{ wallet: WalletRow; grants: GrantRow[] } | null> {
  return (await readSnapshotRowsMany(q, tenant, [walletId])).get(walletId) ?? null;
}

/** Wallets by (customer, unit), many in one statement; the map's key is `customer\u0000unit`. */
export async function findWallets(q: Queryable, tenant: string, keys: Array<{ customerId: string; unit: string }>): Promise<Map<string, WalletRow>> {
  if (keys.length === 0) return new Map();
  const r = await q.query(
    `SELECT ${WALLET_COLS} FROM wallets WHERE tenant = $1 AND (customer_id, unit) IN (SELECT * FROM unnest($2::text[], $3::text[]))`,
    [tenant, keys.map((k) => k.customerId), keys.map((k) => k.unit)],
  );
  return new Map(r.rows.map((x) => [`${x.customer_id as string}\u0000${x.unit as string}`, walletOf(x)]));
}

/**
 * The group commit of holds in ONE statement (data-modifying CTEs): insert the holds (a replayed id
 * is skipped), add their slices to the grants' held amounts (the grants_within_amount CHECK refuses
 * any over-spend: the statement fails as a whole), write their statement lines and ledger outbox
 * chains — all only for the holds actually inserted. Returns the inserted ids. One round trip
 * instead of four; atomic on its own (every guard fails the statement: it may run without an
 * explicit transaction), inside one with the overdraft update when there is one.
 */
export async function commitHolds(
  q: Queryable,
  tenant: string,
  hs: HoldRow[],
  movements: MovementRow[],
  chains: Array<{ holdId: string; transfers: PlannedTransfer[] }>,
  now: Date,
): Promise<Set<string>> {
  if (hs.length === 0) return new Set();
  const slices = hs.flatMap((h) => h.slices.map((s) => ({ h: h.id, g: s.grantId, n: s.amountNanos })));
  const ms = movements.filter((m) => m.amountNanos > 0n);
  const cs = chains.filter((c) => c.transfers.length > 0);
  const tc = outboxTrace();
  try {
    const r = await q.query<{ inserted: string[] | null; updated: bigint; expected: bigint }>(
      `WITH ins AS (
         INSERT INTO holds (tenant, id, wallet_id, amount_nanos, slices, overdraft_nanos, uncovered_nanos, state, expires_at, charge_id, model, request_hash, created_at)
         SELECT $1, t.id, t.w, t.a, t.s::jsonb, t.od, t.u, 'pending', t.e, t.c, t.m, t.h, t.cr
         FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])
           AS t(id, w, a, s, od, u, e, c, m, h, cr)
         ON CONFLICT DO NOTHING RETURNING id
       ),
       d AS (
         SELECT s.g AS id, sum(s.n)::bigint AS n FROM unnest($13::text[], $14::text[], $15::bigint[]) AS s(h, g, n)
         WHERE s.h IN (SELECT id FROM ins) GROUP BY s.g
       ),
       -- The grants' row locks in id order (the order of the capture / release group commits), so
       -- this statement and another write of the same grants never wait for each other in a cycle.
       l AS (
         SELECT g.id FROM grants g WHERE g.tenant = $1 AND g.id IN (SELECT id FROM d) ORDER BY g.id FOR UPDATE
       ),
       u AS (
         UPDATE grants g SET held_nanos = g.held_nanos + d.n FROM d WHERE g.tenant = $1 AND g.id = d.id AND g.id IN (SELECT id FROM l) RETURNING g.id
       ),
       mv AS (
         INSERT INTO movements (tenant, id, wallet_id, grant_id, kind, amount_nanos, source_id, event_id, hold_id, invoice_id, ledger_transfer_id, occurred_at)
         SELECT $1, t.id, t.w, t.g, t.k, t.a, t.src, '', t.h, '', t.x, $16
         FROM unnest($17::text[], $18::text[], $19::text[], $20::text[], $21::bigint[], $22::text[], $23::text[], $24::text[]) AS t(id, w, g, k, a, src, h, x)
         WHERE t.h IN (SELECT id FROM ins)
         ON CONFLICT DO NOTHING
       ),
       ob AS (
         INSERT INTO ledger_outbox (tenant, transfers, created_at, traceparent, tracestate)
         SELECT $1, t.x::jsonb, $16, $27, $28 FROM unnest($25::text[], $26::text[]) WITH ORDINALITY AS t(h, x, o)
         WHERE t.h IN (SELECT id FROM ins) ORDER BY t.o
       )
       SELECT (SELECT array_agg(id) FROM ins) AS inserted, (SELECT count(*) FROM u)::bigint AS updated, (SELECT count(*) FROM d)::bigint AS expected,
         -- A slice naming a grant that is not there fails the statement itself (division by zero),
         -- so nothing of it is written even when it runs without an explicit transaction.
         1 / (CASE WHEN (SELECT count(*) FROM u) = (SELECT count(*) FROM d) THEN 1 ELSE 0 END) AS grants_found`,
      [
        tenant,
        hs.map((h) => h.id),
        hs.map((h) => h.walletId),
        hs.map((h) => h.amountNanos.toString()),
        hs.map((h) => JSON.stringify(h.slices.map((s) => ({ g: s.grantId, n: s.amountNanos.toString() })))),
        hs.map((h) => h.overdraftNanos.toString()),
        hs.map((h) => h.uncoveredNanos.toString()),
        hs.map((h) => h.expiresAt.toISOString()),
        hs.map((h) => h.chargeId),
        hs.map((h) => h.model),
        hs.map((h) => h.requestHash),
        hs.map((h) => h.createdAt.toISOString()),
        slices.map((s) => s.h),
        slices.map((s) => s.g),
        slices.map((s) => s.n.toString()),
        now,
        ms.map((m) => m.id),
        ms.map((m) => m.walletId),
        ms.map((m) => m.grantId),
        ms.map((m) => m.kind),
        ms.map((m) => m.amountNanos.toString()),
        ms.map((m) => m.sourceId),
        ms.map((m) => m.holdId ?? ""),
        ms.map((m) => m.ledgerTransferId ?? ""),
        cs.map((c) => c.holdId),
        cs.map((c) => JSON.stringify(c.transfers)),
        tc.traceparent,
        tc.tracestate,
      ],
    );
    const row = r.rows[0]!;
    if (big(row.updated) !== big(row.expected)) throw new GuardError("grant not found");
    return new Set(row.inserted ?? []);
  } catch (e) {
    if ((e as { code?: string }).code === "check_violation") throw new GuardError("grant over-spent");
    if ((e as { sqlState?: string }).sqlState === "22012") throw new GuardError("grant not found");
    throw e;
  }
}
