import { MoneyError } from "./errors.js";

/**
 * How a division that does not come out even is rounded. Every mode is defined on the exact
 * quotient and is correct for negative numbers:
 * - floor: toward -infinity;            ceil: toward +infinity
 * - down:  toward zero (truncate);       up:   away from zero
 * - half_up:   nearest, ties away from zero (-2.5 -> -3)
 * - half_down: nearest, ties toward zero    (-2.5 -> -2)
 * - half_even: nearest, ties to the even neighbour (2.5 -> 2, 3.5 -> 4, -2.5 -> -2): banker's
 */
export type RoundingMode = "floor" | "ceil" | "down" | "up" | "half_up" | "half_down" | "half_even";

export const ROUNDING_MODES: readonly RoundingMode[] = Object.freeze([
  "floor", "ceil", "down", "up", "half_up", "half_down", "half_even",
]);

/** Internal: throws MoneyError unless mode is a RoundingMode. */
export function checkMode(mode: unknown, field = "mode"): RoundingMode {
  switch (mode) {
    case "floor": case "ceil": case "down": case "up": case "half_up": case "half_down": case "half_even":
      return mode;
    default:
      throw new MoneyError(field, `must be one of ${ROUNDING_MODES.join(", ")}, got ${JSON.stringify(String(mode).slice(0, 32))}`);
  }
}

/**
 * divRound: num / den rounded to an integer with the named mode. den must be > 0.
 * Pure bigint arithmetic (no allocation beyond the bigints themselves).
 */
export function divRound(num: bigint, den: bigint, mode: RoundingMode): bigint {
  if (typeof num !== "bigint") throw new MoneyError("num", `must be a bigint, got ${typeof num}`);
  if (typeof den !== "bigint") throw new MoneyError("den", `must be a bigint, got ${typeof den}`);
  if (den <= 0n) throw new MoneyError("den", `must be > 0, got ${den}`);
  const q = num / den; // truncated toward zero
  const r = num % den; // same sign as num
  if (r === 0n) {
    checkMode(mode);
    return q;
  }
  // r != 0: the exact quotient lies strictly between q and q + s, s = sign(num).
  const s = r > 0n ? 1n : -1n;
  switch (mode) {
    case "down":
      return q;
    case "up":
      return q + s;
    case "floor":
      return s < 0n ? q - 1n : q;
    case "ceil":
      return s > 0n ? q + 1n : q;
    case "half_up":
    case "half_down":
    case "half_even": {
      const twice = (s > 0n ? r : -r) * 2n; // 2|r| compared with den
      if (twice > den) return q + s;
      if (twice < den) return q;
      if (mode === "half_up") return q + s;
      if (mode === "half_down") return q;
      return q % 2n === 0n ? q : q + s;
    }
    default:
      return checkMode(mode) as never;
  }
}

/** divFloor: num / den rounded toward -infinity (den > 0). */
export const divFloor = (num: bigint, den: bigint): bigint => divRound(num, den, "floor");
/** divCeil: num / den rounded toward +infinity (den > 0). */
export const divCeil = (num: bigint, den: bigint): bigint => divRound(num, den, "ceil");
/** divHalfEven: num / den rounded to nearest, ties to even (den > 0). */
export const divHalfEven = (num: bigint, den: bigint): bigint => divRound(num, den, "half_even");

/** Internal: greatest common divisor of |a| and |b| (gcd(0, 0) = 0). */
export function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  if (b < 0n) b = -b;
  while (b !== 0n) {
    const t = a % b;
    a = b;
    b = t;
  }
  return a;
}
