import { INT64_MAX, Rate, divRound } from "@nanobill/money";
import type { CompiledCharge, CompiledTier } from "./compile.js";
import type { PropValue } from "./types.js";

/** Exact: an exact rational number of nanos, num/den, den > 0 (not necessarily reduced). */
export interface Exact {
  num: bigint;
  den: bigint;
}

export const ZERO: Exact = Object.freeze({ num: 0n, den: 1n });

/** addExact: a + b, exactly (same-denominator fast path). */
export function addExact(a: Exact, b: Exact): Exact {
  if (a.den === b.den) return { num: a.num + b.num, den: a.den };
  if (a.num === 0n) return b;
  if (b.num === 0n) return a;
  return { num: a.num * b.den + b.num * a.den, den: a.den * b.den };
}

/** subExact: a - b, exactly. */
export function subExact(a: Exact, b: Exact): Exact {
  return addExact(a, { num: -b.num, den: b.den });
}

/** cmpExact: sign of a - b. */
export function cmpExact(a: Exact, b: Exact): number {
  const l = a.num * b.den;
  const r = b.num * a.den;
  return l < r ? -1 : l > r ? 1 : 0;
}

/** rateExact: a Rate as an Exact (nanos per 1 unit). */
export function rateExact(r: Rate): Exact {
  return { num: r.num, den: r.den };
}

/** roundHalfEven: the named rounding of exact nanos to whole nanos used for every booked amount. */
export function roundHalfEven(e: Exact): bigint {
  return e.den === 1n ? e.num : divRound(e.num, e.den, "half_even");
}

/** tierUnits: units of quantity q that fall in tier t. */
function tierUnits(t: CompiledTier, q: bigint): bigint {
  if (q <= t.from) return 0n;
  const top = t.upTo === null || q < t.upTo ? q : t.upTo;
  return top - t.from;
}

/**
 * graduatedTotal: each unit at the price of the tier it falls in, plus each reached tier's flat
 * fee. Tiers 0-1,000 at $0.01, -10,000 at $0.008, above at $0.005: 15,000 -> $107.
 */
export function graduatedTotal(tiers: CompiledTier[], q: bigint): Exact {
  let acc: Exact = ZERO;
  for (const t of tiers) {
    const u = tierUnits(t, q);
    if (u === 0n) break;
    acc = addExact(acc, t.rate.exactTimes(u));
    if (t.flat.num !== 0n) acc = addExact(acc, rateExact(t.flat));
  }
  return acc;
}

/**
 * volumeTotal: every unit at the price of the tier the total falls in, plus that tier's flat
 * fee; zero units cost nothing. ($0.0006 + $10 tier) 65,000 -> $49.
 */
export function volumeTotal(tiers: CompiledTier[], q: bigint): Exact {
  if (q <= 0n) return ZERO;
  for (const t of tiers) {
    if (t.upTo === null || q <= t.upTo) return addExact(t.rate.exactTimes(q), rateExact(t.flat));
  }
  return ZERO; // unreachable: the last tier is unbounded
}

/** packageTotal: whole packages (rounded up) of the units above the free ones. */
export function packageTotal(size: bigint, price: Rate, free: bigint, q: bigint): Exact {
  const billable = q - free;
  if (billable <= 0n) return ZERO;
  const packages = (billable + size - 1n) / size;
  return price.exactTimes(packages);
}

/**
 * periodTotal: the exact price of a period-mode charge for the period quantity q (after the
 * included allowance). Order-independent by construction: a function of the total only.
 */
export function periodTotal(c: CompiledCharge, q: bigint): Exact {
  const billable = q > c.included ? q - c.included : 0n;
  const p = c.pricing;
  switch (p.kind) {
    case "graduated":
      return graduatedTotal(p.tiers, billable);
    case "volume":
      return volumeTotal(p.tiers, billable);
    case "package":
      return packageTotal(p.size, p.packagePrice, p.free, billable);
    case "per_unit":
      return p.rate.exactTimes(billable);
    default:
      throw new Error(`periodTotal: charge ${c.chargeId} (${p.kind}) is not period priced`);
  }
}

/** matrixRate: the rate of a line's dimensions (first matching cell, else default, else null). */
export function matrixRate(
  p: Extract<CompiledCharge["pricing"], { kind: "matrix" }>,
  dims: Record<string, string>,
  dimsKey: string,
): Rate | null {
  const cached = p.cache.get(dimsKey);
  if (cached !== undefined) return cached;
  let found: Rate | null = p.defaultRate;
  for (const cell of p.cells) {
    let ok = true;
    for (const [k, v] of cell.match) {
      if (dims[k] !== v) {
        ok = false;
        break;
      }
    }
    if (ok) {
      found = cell.rate;
      break;
    }
  }
  if (p.cache.size < 100_000) p.cache.set(dimsKey, found);
  return found;
}

/** decimalExact: a decimal property value as exact nanos (value x 1e9), or null if not numeric. */
export function propExactNanos(v: PropValue | undefined): Exact | null {
  if (v === undefined) return null;
  if (v.kind === "int") return { num: v.value * 1_000_000_000n, den: 1n };
  if (v.kind === "decimal" || v.kind === "string") {
    try {
      const r = Rate.parse(v.value, "value", { allowNegative: true });
      return { num: r.num, den: r.den };
    } catch {
      return null;
    }
  }
  return null;
}

const INT_RE = /^(0|[1-9][0-9]{0,18})$/;

/** propQuantity: a non-negative integer quantity from a property, or an error reason. */
export function propQuantity(v: PropValue | undefined): bigint | string {
  if (v === undefined) return "missing";
  if (v.kind === "int") return v.value < 0n ? "negative" : v.value;
  if ((v.kind === "decimal" || v.kind === "string") && INT_RE.test(v.value)) {
    const q = BigInt(v.value);
    return q > INT64_MAX ? "beyond int64" : q;
  }
  return "not a non-negative integer";
}

/** propString: a property as a dimension value ("" when absent). */
export function propString(v: PropValue | undefined): string {
  if (v === undefined) return "";
  switch (v.kind) {
    case "string":
    case "decimal":
      return v.value;
    case "int":
      return v.value.toString();
    case "bool":
      return v.value ? "true" : "false";
  }
}

/**
 * percentagePrice: amount x percent / 100 + fixed, clamped to [min, max] (all exact).
 */
export function percentagePrice(
  p: Extract<CompiledCharge["pricing"], { kind: "percentage" }>,
  amount: Exact,
): Exact {
  // amount is nanos; percent is (percent x 1e9) per unit -> amount * percent.num / (percent.den * 1e9 * 100)
  let e: Exact = { num: amount.num * p.percent.num, den: amount.den * p.percent.den * 100_000_000_000n };
  if (p.fixed !== null) e = addExact(e, rateExact(p.fixed));
  if (p.min !== null && cmpExact(e, rateExact(p.min)) < 0) e = rateExact(p.min);
  if (p.max !== null && cmpExact(e, rateExact(p.max)) > 0) e = rateExact(p.max);
  return e;
}
