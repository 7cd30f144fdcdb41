/**
 * proto <-> domain. Validates every field (InvalidArgument naming it, before any write); amounts
 * stay bigint end to end.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { AMOUNT_NANOS_MAX, isUnitCode } from "@nanobill/money";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { AutoTopUpConfig } from "./domain/auto-top-up.js";
import type { RolloverRule } from "./domain/rollover.js";
import type { GrantKind, Policy } from "./domain/types.js";
import type { AuthorizeInput, ConsumeInput, GrantInput } from "./engine.js";
import { decimalFraction } from "./engine.js";
import { invalid } from "./errors.js";
import {
  AUTO_TOP_UP_COOLDOWN_MS_MAX,
  BPS_ONE,
  CUSTOMER_ID_CHARS_MAX,
  DESCRIPTION_CHARS_MAX,
  EXPIRY_GRACE_MS_MAX,
  HOLD_TTL_MS_DEFAULT,
  HOLD_TTL_MS_MAX,
  ID_CHARS_MAX,
  ID_RE,
  PAGE_SIZE_DEFAULT,
  PAGE_SIZE_MAX,
  PRIORITY_MAX,
  REF_CHARS_MAX,
  REF_FORBIDDEN_RE,
  ROLLOVER_EXPIRES_AFTER_MS_MAX,
  SCOPE_ENTRIES_MAX,
  TEXT_FORBIDDEN_RE,
} from "./limits.js";
import type { AlertRow, ConsumptionRow, CreditTypeRow, GrantRow, HoldRow, MovementRow, WalletRow } from "./store/store.js";

// ------------------------------------------------------------------ validation

export function idOf(field: string, v: string): string {
  if (v === "") throw invalid(field, "is required");
  if (v.length > ID_CHARS_MAX) throw invalid(field, `must be at most ${ID_CHARS_MAX} characters`);
  if (!ID_RE.test(v)) throw invalid(field, "must use only [A-Za-z0-9._:/@+=-]");
  return v;
}

export function customerIdOf(field: string, v: string): string {
  if (v === "") throw invalid(field, "is required");
  if (v.length > CUSTOMER_ID_CHARS_MAX) throw invalid(field, `must be at most ${CUSTOMER_ID_CHARS_MAX} characters`);
  if (!ID_RE.test(v)) throw invalid(field, "must use only [A-Za-z0-9._:/@+=-]");
  return v;
}

export function refOf(field: string, v: string): string {
  if (v.length > REF_CHARS_MAX) throw invalid(field, `must be at most ${REF_CHARS_MAX} characters`);
  if (REF_FORBIDDEN_RE.test(v)) throw invalid(field, "must not contain ',', '|' or control characters");
  return v;
}

/** Free text (a description, a name): at most `max` characters, no control characters (NUL made PostgreSQL fail: Internal). */
export function textOf(field: string, v: string, max: number): string {
  if (v.length > max) throw invalid(field, `must be at most ${max} characters`);
  if (TEXT_FORBIDDEN_RE.test(v)) throw invalid(field, "must not contain control characters");
  return v;
}

export function unitOf(field: string, v: string): string {
  if (v === "") throw invalid(field, "is required");
  if (!isUnitCode(v)) throw invalid(field, "must be an ISO 4217 code or a credit type id (cr_...)");
  return v;
}

export function currencyOf(field: string, v: string): string {
  if (!isUnitCode(v) || v.startsWith("cr_")) throw invalid(field, "must be a supported ISO 4217 code");
  return v;
}

/** An amount in (0, AMOUNT_NANOS_MAX]. */
export function positiveNanos(field: string, v: bigint): bigint {
  if (v <= 0n) throw invalid(field, "must be > 0");
  if (v > AMOUNT_NANOS_MAX) throw invalid(field, `must be at most ${AMOUNT_NANOS_MAX}`);
  return v;
}

/** An amount in [0, AMOUNT_NANOS_MAX]. */
export function nonNegativeNanos(field: string, v: bigint): bigint {
  if (v < 0n) throw invalid(field, "must be >= 0");
  if (v > AMOUNT_NANOS_MAX) throw invalid(field, `must be at most ${AMOUNT_NANOS_MAX}`);
  return v;
}

/** Latest time accepted anywhere: 9999-12-31T23:59:59.999Z (PostgreSQL timestamptz and ISO strings stay 4-digit years). */
export const TIME_MS_MAX = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * A timestamp field: from 1970-01-01 up to 9999-12-31 (a time before the epoch or past year 9999
 * would be stored and then break burn-down keys, ISO strings or PostgreSQL later), nanos in
 * [0, 1e9). InvalidArgument naming the field otherwise.
 */
export function timeOf(field: string, ts: Timestamp): Date {
  if (ts.nanos < 0 || ts.nanos > 999_999_999 || !Number.isInteger(ts.nanos)) throw invalid(field, "nanos must be in [0, 999999999]");
  if (ts.seconds < 0n || ts.seconds * 1000n > BigInt(TIME_MS_MAX)) throw invalid(field, "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z");
  const d = timestampDate(ts);
  if (!Number.isFinite(d.getTime()) || d.getTime() < 0 || d.getTime() > TIME_MS_MAX) throw invalid(field, "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z");
  return d;
}

/** A timestamp field, or `dflt` when unset (validated as timeOf). */
export function dateOf(ts: Timestamp | undefined, dflt: Date, field = "timestamp"): Date {
  return ts ? timeOf(field, ts) : dflt;
}

export function decimalOf(field: string, v: string | undefined, dflt: string): string {
  const s = v === undefined || v === "" ? dflt : v;
  decimalFraction(s, field);
  return s;
}

export function pageSizeOf(field: string, n: number): number {
  if (n === 0) return PAGE_SIZE_DEFAULT;
  if (n > PAGE_SIZE_MAX) throw invalid(field, `must be at most ${PAGE_SIZE_MAX}`);
  return n;
}

export function ts(d: Date): Timestamp {
  return timestampFromDate(d);
}

// ------------------------------------------------------------------ enums

export const GRANT_KIND_FROM: Record<number, GrantKind | undefined> = {
  [pb.GrantKind.PURCHASED]: "purchased",
  [pb.GrantKind.PROMOTIONAL]: "promotional",
  [pb.GrantKind.ALLOWANCE]: "allowance",
  [pb.GrantKind.ROLLOVER]: "rollover",
};
const GRANT_KIND_TO: Record<GrantKind, pb.GrantKind> = { purchased: pb.GrantKind.PURCHASED, promotional: pb.GrantKind.PROMOTIONAL, allowance: pb.GrantKind.ALLOWANCE, rollover: pb.GrantKind.ROLLOVER };

export function policyOf(field: string, p: pb.WalletPolicy | undefined): Policy {
  if (!p || p.mode === pb.PolicyMode.UNSPECIFIED || p.mode === pb.PolicyMode.HARD_STOP) return { mode: "hard_stop", negativeLimitNanos: 0n, overageRate: "", overageCurrency: "" };
  if (p.mode === pb.PolicyMode.SOFT_NEGATIVE) {
    return { mode: "soft_negative", negativeLimitNanos: positiveNanos(`${field}.negative_limit_nanos`, p.negativeLimitNanos), overageRate: "", overageCurrency: "" };
  }
  if (p.mode === pb.PolicyMode.POSTPAID_OVERAGE) {
    const rate = decimalOf(`${field}.overage_rate.value`, p.overageRate?.value, "");
    return { mode: "postpaid_overage", negativeLimitNanos: 0n, overageRate: rate, overageCurrency: currencyOf(`${field}.overage_currency`, p.overageCurrency) };
  }
  throw invalid(`${field}.mode`, "unknown policy mode");
}

export function policyTo(p: Policy): pb.WalletPolicy {
  const mode = p.mode === "hard_stop" ? pb.PolicyMode.HARD_STOP : p.mode === "soft_negative" ? pb.PolicyMode.SOFT_NEGATIVE : pb.PolicyMode.POSTPAID_OVERAGE;
  return create(pb.WalletPolicySchema, { mode, negativeLimitNanos: p.negativeLimitNanos, overageRate: p.overageRate ? { value: p.overageRate } : undefined, overageCurrency: p.overageCurrency });
}

/** A low-balance alert configuration: the threshold, or null when disabled. */
export function lowBalanceOf(field: string, a: pb.LowBalanceAlert | undefined): bigint | null {
  if (!a) throw invalid(field, "is required");
  if (!a.enabled) return null;
  if (a.thresholdNanos > AMOUNT_NANOS_MAX || a.thresholdNanos < -AMOUNT_NANOS_MAX) throw invalid(`${field}.threshold_nanos`, `must be within ±${AMOUNT_NANOS_MAX}`);
  return a.thresholdNanos;
}

export function autoTopUpOf(field: string, a: pb.AutoTopUp | undefined): AutoTopUpConfig {
  if (!a) throw invalid(field, "is required");
  const threshold = nonNegativeNanos(`${field}.threshold_nanos`, a.thresholdNanos);
  const target = nonNegativeNanos(`${field}.target_balance_nanos`, a.targetBalanceNanos);
  const amount = a.enabled && target === 0n ? positiveNanos(`${field}.amount_nanos`, a.amountNanos) : nonNegativeNanos(`${field}.amount_nanos`, a.amountNanos);
  if (target > 0n && target <= threshold) throw invalid(`${field}.target_balance_nanos`, "must be above threshold_nanos");
  if (a.cooldownMs < 0n || a.cooldownMs > BigInt(AUTO_TOP_UP_COOLDOWN_MS_MAX)) throw invalid(`${field}.cooldown_ms`, `must be in [0, ${AUTO_TOP_UP_COOLDOWN_MS_MAX}]`);
  // "" when unset: the engine fills them from the wallet (prepaid: 1 in its currency) or refuses
  // (credits: required, as for a PURCHASED Grant of credits).
  const costBasis = a.costBasis?.value ? decimalOf(`${field}.cost_basis.value`, a.costBasis.value, "") : "";
  return { enabled: a.enabled, thresholdNanos: threshold, amountNanos: amount, targetBalanceNanos: target, cooldownMs: Number(a.cooldownMs), costBasis, costBasisCurrency: a.costBasisCurrency ? currencyOf(`${field}.cost_basis_currency`, a.costBasisCurrency) : "" };
}

function rolloverOf(field: string, r: pb.RolloverRule | undefined): RolloverRule | null {
  if (!r || r.mode === pb.RolloverMode.UNSPECIFIED) return null;
  if (r.expiresAfterMs < 0n || r.expiresAfterMs > BigInt(ROLLOVER_EXPIRES_AFTER_MS_MAX)) throw invalid(`${field}.expires_after_ms`, `must be in [0, ${ROLLOVER_EXPIRES_AFTER_MS_MAX}]`);
  const base = { capNanos: 0n, percentBps: 0, expiresAfterMs: Number(r.expiresAfterMs) };
  switch (r.mode) {
    case pb.RolloverMode.NONE:
      return { ...base, mode: "none" };
    case pb.RolloverMode.ALL:
      return { ...base, mode: "all" };
    case pb.RolloverMode.CAPPED:
      return { ...base, mode: "capped", capNanos: nonNegativeNanos(`${field}.cap_nanos`, r.capNanos) };
    case pb.RolloverMode.PERCENTAGE:
      if (r.percentBps > BPS_ONE) throw invalid(`${field}.percent_bps`, `must be at most ${BPS_ONE}`);
      return { ...base, mode: "percentage", percentBps: r.percentBps };
    default:
      throw invalid(`${field}.mode`, "unknown rollover mode");
  }
}

function scopeOf(field: string, s: pb.GrantScope | undefined): { chargeIds: string[]; models: string[] } {
  const chargeIds = (s?.chargeIds ?? []).map((c, i) => refOf(`${field}.charge_ids[${i}]`, c));
  const models = (s?.models ?? []).map((m, i) => refOf(`${field}.models[${i}]`, m));
  if (chargeIds.length + models.length > SCOPE_ENTRIES_MAX) throw invalid(field, `must have at most ${SCOPE_ENTRIES_MAX} entries`);
  if (chargeIds.some((c) => c === "") || models.some((m) => m === "")) throw invalid(field, "entries must not be empty");
  return { chargeIds, models };
}

// ------------------------------------------------------------------ requests

export function grantInputOf(r: pb.GrantRequest, now: Date, walletUnit: string, walletKind: "credits" | "prepaid"): GrantInput {
  const kind = GRANT_KIND_FROM[r.kind];
  if (!kind) throw invalid("kind", "is required (PURCHASED, PROMOTIONAL, ALLOWANCE or ROLLOVER)");
  const effectiveAt = dateOf(r.effectiveAt, now, "effective_at");
  const expiresAt = r.expiresAt ? timeOf("expires_at", r.expiresAt) : null;
  if (expiresAt && expiresAt.getTime() <= effectiveAt.getTime()) throw invalid("expires_at", "must be after effective_at");
  if (r.priority > PRIORITY_MAX) throw invalid("priority", `must be at most ${PRIORITY_MAX}`);
  const periodEnd = r.periodEnd ? timeOf("period_end", r.periodEnd) : null;
  if (kind === "allowance" && !periodEnd) throw invalid("period_end", "is required for ALLOWANCE grants");
  if (kind !== "allowance" && (periodEnd || r.renew || (r.rollover && r.rollover.mode !== pb.RolloverMode.UNSPECIFIED))) throw invalid("period_end", "period_end, renew and rollover apply to ALLOWANCE grants only");
  if (periodEnd && periodEnd.getTime() <= effectiveAt.getTime()) throw invalid("period_end", "must be after effective_at");
  textOf("description", r.description, DESCRIPTION_CHARS_MAX);
  let expiryGraceMs: number | null = null;
  if (r.expiryGraceMs !== undefined) {
    if (r.expiryGraceMs < 0n || r.expiryGraceMs > BigInt(EXPIRY_GRACE_MS_MAX)) throw invalid("expiry_grace_ms", `must be in [0, ${EXPIRY_GRACE_MS_MAX}]`);
    if (!expiresAt) throw invalid("expiry_grace_ms", "applies only to a grant with expires_at");
    expiryGraceMs = Number(r.expiryGraceMs);
  }
  const paid = kind === "purchased";
  const costBasis = paid ? decimalOf("cost_basis.value", r.costBasis?.value, walletKind === "prepaid" ? "1" : "") : "0";
  if (!paid && r.costBasis?.value && decimalFraction(r.costBasis.value, "cost_basis.value").num !== 0n) throw invalid("cost_basis.value", "must be 0 (or unset) for grants that are not PURCHASED");
  const costBasisCurrency = paid ? (r.costBasisCurrency ? currencyOf("cost_basis_currency", r.costBasisCurrency) : walletKind === "prepaid" ? walletUnit : "") : "";
  if (paid && costBasisCurrency === "") throw invalid("cost_basis_currency", "is required for PURCHASED credits");
  return {
    id: idOf("id", r.id),
    walletId: idOf("wallet_id", r.walletId),
    kind,
    amountNanos: positiveNanos("amount_nanos", r.amountNanos),
    costBasis,
    costBasisCurrency,
    priority: r.priority,
    effectiveAt,
    expiresAt,
    scope: scopeOf("scope", r.scope),
    rollover: kind === "allowance" ? rolloverOf("rollover", r.rollover) : null,
    periodEnd,
    renew: r.renew,
    invoiceId: refOf("invoice_id", r.invoiceId),
    description: r.description,
    expiryGraceMs,
    effectiveAtDefaulted: !r.effectiveAt,
  };
}

/**
 * An allowance ends at its period_end (rollover, renewal); a second end would compete with it: Grant
 * refuses expires_at on ALLOWANCE. Not in grantInputOf: a replay of an allowance stored with one
 * before this rule is answered with its first result, so the service checks it after the replay
 * lookup (the stored grant, identical, makes it a replay).
 */
export function allowanceExpiresAtRefused(g: GrantInput): boolean {
  return g.kind === "allowance" && g.expiresAt !== null;
}

export const ALLOWANCE_EXPIRES_AT_ERROR = () => invalid("expires_at", "does not apply to ALLOWANCE grants: an allowance ends at its period_end (rollover and renew apply there)");

export function consumeInputOf(it: pb.ConsumeItem, i: number, now: Date): ConsumeInput {
  const f = (n: string) => `items[${i}].${n}`;
  return {
    id: idOf(f("id"), it.id),
    customerId: customerIdOf(f("customer_id"), it.customerId),
    unit: unitOf(f("unit"), it.unit),
    amountNanos: positiveNanos(f("amount_nanos"), it.amountNanos),
    eventId: refOf(f("event_id"), it.eventId),
    chargeId: refOf(f("charge_id"), it.chargeId),
    model: refOf(f("model"), it.model),
    occurredAt: dateOf(it.occurredAt, now, f("occurred_at")),
    occurredAtDefaulted: !it.occurredAt,
  };
}

/** Validates an Authorize request except the max-cost conversion (which needs the rate). */
export function authorizeInputOf(r: pb.AuthorizeRequest, prefix: string): AuthorizeInput & { maxCost: { nanos: bigint; currency: string } | null } {
  const f = (n: string) => `${prefix}${n}`;
  const ttl = r.ttlMs === 0n ? BigInt(HOLD_TTL_MS_DEFAULT) : r.ttlMs;
  if (ttl < 0n || ttl > BigInt(HOLD_TTL_MS_MAX)) throw invalid(f("ttl_ms"), `must be in (0, ${HOLD_TTL_MS_MAX}]`);
  let amount = 0n;
  let maxCost: { nanos: bigint; currency: string } | null = null;
  // Exactly one of amount_nanos and max_cost_nanos (before, max_cost was dropped silently beside an
  // amount, and a retry with another max_cost answered as a replay).
  if (r.amountNanos !== 0n && r.maxCostNanos !== 0n) throw invalid(f("max_cost_nanos"), "must be 0 when amount_nanos is given (one of the two)");
  if (r.amountNanos !== 0n || r.maxCostNanos === 0n) {
    amount = positiveNanos(f("amount_nanos"), r.amountNanos);
    if (r.maxCostCurrency !== "") throw invalid(f("max_cost_currency"), "applies only with max_cost_nanos");
  } else maxCost = { nanos: positiveNanos(f("max_cost_nanos"), r.maxCostNanos), currency: currencyOf(f("max_cost_currency"), r.maxCostCurrency) };
  return {
    id: idOf(f("id"), r.id),
    customerId: customerIdOf(f("customer_id"), r.customerId),
    unit: unitOf(f("unit"), r.unit),
    amountNanos: amount,
    ttlMs: Number(ttl),
    chargeId: refOf(f("charge_id"), r.chargeId),
    model: refOf(f("model"), r.model),
    maxCost,
  };
}

// ------------------------------------------------------------------ responses

export function creditTypeTo(c: CreditTypeRow): pb.CreditType {
  return create(pb.CreditTypeSchema, {
    id: c.id,
    name: c.name,
    currency: c.currency,
    createdAt: ts(c.createdAt),
    rates: c.rates.map((r) => create(pb.ExchangeRateSchema, { rate: { value: r.rate }, currency: r.currency, effectiveAt: ts(r.effectiveAt) })),
  });
}

export function walletTo(w: WalletRow): pb.Wallet {
  const a = w.autoTopUp;
  return create(pb.WalletSchema, {
    id: w.id,
    customerId: w.customerId,
    unit: w.unit,
    kind: w.kind === "credits" ? pb.WalletKind.CREDITS : pb.WalletKind.PREPAID,
    policy: policyTo(w.policy),
    autoTopUp: a
      ? create(pb.AutoTopUpSchema, {
          enabled: a.enabled,
          thresholdNanos: a.thresholdNanos,
          amountNanos: a.amountNanos,
          targetBalanceNanos: a.targetBalanceNanos,
          cooldownMs: BigInt(a.cooldownMs),
          costBasis: { value: a.costBasis },
          costBasisCurrency: a.costBasisCurrency,
        })
      : undefined,
    ledgerAccountId: w.ledgerAccountId,
    createdAt: ts(w.createdAt),
    lowBalanceAlert: w.lowBalanceThresholdNanos === null ? undefined : create(pb.LowBalanceAlertSchema, { enabled: true, thresholdNanos: w.lowBalanceThresholdNanos, armed: w.lowBalanceArmed }),
  });
}

/** A grant as the API shows it; breakage_at uses the grant's own grace or the deployment default. */
export function grantTo(g: GrantRow, graceMsDefault = 0): pb.GrantBalance {
  const exhausted = g.state === "active" && g.burnedNanos + g.expiredNanos === g.amountNanos;
  const state = exhausted ? pb.GrantState.EXHAUSTED : g.state === "active" ? pb.GrantState.ACTIVE : g.state === "expired" ? pb.GrantState.EXPIRED : pb.GrantState.ROLLED_OVER;
  return create(pb.GrantBalanceSchema, {
    grantId: g.id,
    kind: GRANT_KIND_TO[g.kind],
    priority: g.priority,
    amountNanos: g.amountNanos,
    burnedNanos: g.burnedNanos,
    heldNanos: g.heldNanos,
    expiredNanos: g.expiredNanos,
    availableNanos: g.amountNanos - g.burnedNanos - g.heldNanos - g.expiredNanos,
    effectiveAt: ts(g.effectiveAt),
    expiresAt: g.expiresAt ? ts(g.expiresAt) : undefined,
    state,
    costBasis: { value: g.costBasis },
    costBasisCurrency: g.costBasisCurrency,
    scope: create(pb.GrantScopeSchema, g.scope),
    periodEnd: g.periodEnd ? ts(g.periodEnd) : undefined,
    expiryGraceMs: g.expiryGraceMs === null ? undefined : BigInt(g.expiryGraceMs),
    // expires_at + the grace can pass year 9999 (a grant expiring at its end), which no Timestamp
    // can hold: shown as the last instant, which it follows by at most the grace.
    breakageAt: g.expiresAt ? ts(new Date(Math.min(g.expiresAt.getTime() + (g.expiryGraceMs ?? graceMsDefault), TIME_MS_MAX))) : undefined,
  });
}

const HOLD_STATE: Record<HoldRow["state"], pb.HoldState> = { pending: pb.HoldState.PENDING, captured: pb.HoldState.CAPTURED, released: pb.HoldState.RELEASED, expired: pb.HoldState.EXPIRED };

export function holdTo(h: HoldRow, unit: string): pb.Hold {
  return create(pb.HoldSchema, {
    id: h.id,
    walletId: h.walletId,
    amountNanos: h.amountNanos,
    unit,
    state: HOLD_STATE[h.state],
    expiresAt: ts(h.expiresAt),
    capturedNanos: h.capturedNanos,
    createdAt: ts(h.createdAt),
  });
}

export function consumptionEntryTo(c: ConsumptionRow): pb.ConsumptionEntry {
  return create(pb.ConsumptionEntrySchema, { id: c.id, eventId: c.eventId, chargeId: c.chargeId, consumedNanos: c.consumedNanos, shortfallNanos: c.shortfallNanos, occurredAt: ts(c.occurredAt), holdId: c.holdId, overdraftNanos: c.overdraftNanos });
}

const MOVEMENT_KIND: Record<MovementRow["kind"], pb.MovementKind> = {
  grant: pb.MovementKind.GRANT,
  burn: pb.MovementKind.BURN,
  hold: pb.MovementKind.HOLD,
  release: pb.MovementKind.RELEASE,
  expire: pb.MovementKind.EXPIRE,
  rollover: pb.MovementKind.ROLLOVER,
  overdraft: pb.MovementKind.OVERDRAFT,
};

export function movementTo(m: MovementRow, unit: string): pb.Movement {
  return create(pb.MovementSchema, {
    id: m.id,
    kind: MOVEMENT_KIND[m.kind],
    grantId: m.grantId,
    amountNanos: m.amountNanos,
    unit,
    sourceId: m.sourceId,
    eventId: m.eventId ?? "",
    holdId: m.holdId ?? "",
    invoiceId: m.invoiceId ?? "",
    ledgerTransferId: m.ledgerTransferId ?? "",
    occurredAt: ts(m.occurredAt),
  });
}

const ALERT_KIND: Record<AlertRow["kind"], pb.AlertKind> = { credits_expiring: pb.AlertKind.CREDITS_EXPIRING, low_balance: pb.AlertKind.LOW_BALANCE, auto_top_up: pb.AlertKind.AUTO_TOP_UP };
export const ALERT_KIND_FROM: Record<number, AlertRow["kind"] | ""> = {
  [pb.AlertKind.UNSPECIFIED]: "",
  [pb.AlertKind.CREDITS_EXPIRING]: "credits_expiring",
  [pb.AlertKind.LOW_BALANCE]: "low_balance",
  [pb.AlertKind.AUTO_TOP_UP]: "auto_top_up",
};

export function alertTo(a: AlertRow): pb.Alert {
  return create(pb.AlertSchema, {
    id: a.id,
    kind: ALERT_KIND[a.kind],
    walletId: a.walletId,
    customerId: a.customerId,
    grantId: a.grantId,
    amountNanos: a.amountNanos,
    unit: a.unit,
    expiresAt: a.expiresAt ? ts(a.expiresAt) : undefined,
    createdAt: ts(a.createdAt),
    costBasis: a.costBasis ? { value: a.costBasis } : undefined,
    costBasisCurrency: a.costBasisCurrency ?? "",
  });
}

/** Opaque page tokens: base64url of a small JSON cursor. */
export function encodeToken(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString("base64url");
}

export function decodeToken<T>(field: string, s: string, check?: (v: Record<string, unknown>) => boolean): T | null {
  if (s === "") return null;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
  } catch {
    throw invalid(field, "is not a token from a previous response");
  }
  // Every field the token carries is checked here (a malformed one is the caller's error, not Internal).
  if (typeof v !== "object" || v === null || Array.isArray(v) || (check && !check(v as Record<string, unknown>))) throw invalid(field, "is not a token from a previous response");
  return v as T;
}

/** Page-token field checks: a non-negative decimal sequence number; an ISO time in range; an id. */
export const tokenSeq = (x: unknown): boolean => typeof x === "string" && /^\d{1,19}$/.test(x) && BigInt(x) <= 9_223_372_036_854_775_807n;
export const tokenTime = (x: unknown): boolean => {
  if (typeof x !== "string" || x.length > 40) return false;
  const t = new Date(x).getTime();
  return Number.isFinite(t) && t >= 0 && t <= TIME_MS_MAX;
};
export const tokenId = (x: unknown): boolean => typeof x === "string" && x.length <= 256;
