import type { BurnGrant, DebitContext, GrantKind } from "./types.js";

/**
 * Burn-down order (documented in README.md): lower priority number first, then the soonest
 * expiry (no expiry last), then promotional (free: promotional, allowance, rollover) before paid
 * (purchased), then the oldest (created first), then the grant id. The order is a string key so
 * that the Redis implementation (a sorted set ordered by member) and the in-process one agree.
 */

/** Widths of the key's fixed-width decimal fields. */
const PRIORITY_DIGITS = 7;
const TIME_DIGITS = 15;
/** The expiry field of a grant that never expires sorts after every real time. */
const NEVER = "9".repeat(TIME_DIGITS);

/** 0 for free grants (burned first), 1 for paid. */
export function paidRank(kind: GrantKind): 0 | 1 {
  return kind === "purchased" ? 1 : 0;
}

function pad(n: number, digits: number, field: string): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${field}: must be a non-negative integer`);
  const s = String(n);
  if (s.length > digits) throw new Error(`${field}: more than ${digits} digits`);
  return s.padStart(digits, "0");
}

/** The burn-down sort key of a grant: keys compare (as strings) in burn-down order. */
export function burnKey(g: Pick<BurnGrant, "id" | "kind" | "priority" | "expiresAtMs" | "createdAtMs">): string {
  const expiry = g.expiresAtMs === null ? NEVER : pad(keyTime(g.expiresAtMs), TIME_DIGITS, "expires_at");
  return `${pad(g.priority, PRIORITY_DIGITS, "priority")}|${expiry}|${paidRank(g.kind)}|${pad(keyTime(g.createdAtMs), TIME_DIGITS, "created_at")}|${g.id}`;
}

/**
 * A time as a key field: times are validated to 1970..9999 on input (mapping.ts timeOf); a row
 * stored before that check with a time outside sorts at the nearest end instead of failing every
 * debit of its wallet.
 */
function keyTime(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) return 0;
  return Math.min(Math.floor(ms), Number(NEVER) - 1);
}

/** Compares two grants in burn-down order. */
export function compareBurnOrder(a: BurnGrant, b: BurnGrant): number {
  const ka = burnKey(a);
  const kb = burnKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** The grants sorted in burn-down order (a new array). */
export function sortForBurn<T extends BurnGrant>(grants: readonly T[]): T[] {
  return grants.map((g) => ({ g, k: burnKey(g) })).sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0)).map((x) => x.g);
}

/** Whether a grant may burn now for this charge/model: effective, not expired, in scope. */
export function isEligible(g: Pick<BurnGrant, "effectiveAtMs" | "expiresAtMs" | "periodEndMs" | "scope">, ctx: DebitContext): boolean {
  if (!burnsAt(g, ctx.nowMs)) return false;
  if (g.scope.chargeIds.length > 0 && !g.scope.chargeIds.includes(ctx.chargeId)) return false;
  if (g.scope.models.length > 0 && !g.scope.models.includes(ctx.model)) return false;
  return true;
}

/**
 * The time a grant stops burning: the earliest of its expires_at and (an allowance) its period end;
 * null: never. (The real-time stores' "expiry" field; the burn-down key keeps expires_at.)
 */
export function burnUntilMs(g: Pick<BurnGrant, "expiresAtMs" | "periodEndMs">): number | null {
  const p = g.periodEndMs ?? null;
  if (g.expiresAtMs === null) return p;
  return p === null ? g.expiresAtMs : Math.min(g.expiresAtMs, p);
}

/** Whether a grant can burn at nowMs (scope aside): effective, not past expires_at nor its period end. */
export function burnsAt(g: Pick<BurnGrant, "effectiveAtMs" | "expiresAtMs" | "periodEndMs">, nowMs: number): boolean {
  if (g.effectiveAtMs > nowMs) return false;
  const until = burnUntilMs(g);
  return until === null || until > nowMs;
}
