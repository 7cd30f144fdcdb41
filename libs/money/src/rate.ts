import { Decimal } from "decimal.js";
import { parseDecimalParts } from "./decimal.js";
import { MoneyError } from "./errors.js";
import { INT64_MAX, INT64_MIN, NANOS_PER_UNIT, RATE_DECIMAL_SIGNIFICANT_DIGITS } from "./limits.js";
import { checkInt64, type Nanos } from "./nanos.js";
import { checkMode, divRound, gcd, type RoundingMode } from "./rounding.js";

const SigDecimal = Decimal.clone({
  precision: RATE_DECIMAL_SIGNIFICANT_DIGITS,
  rounding: Decimal.ROUND_HALF_EVEN,
});

/**
 * Rate: an exact rational number of nanos per unit of quantity, num/den, always reduced with
 * den > 0. Non-negative unless created with allowNegative. Immutable.
 *
 *   Rate.parse("2.5", "price", { perQuantity: 1_000_000n })   // $2.50 per 1M tokens = 2500 nanos/token
 *   rate.times(1234n, "half_even")                            // 3_085_000n
 *
 * times() is pure bigint arithmetic (one multiply, one divide); nothing on that path allocates
 * beyond bigints, and decimal.js is used only by toDecimalString().
 */
export class Rate {
  readonly num: bigint;
  readonly den: bigint;

  private constructor(num: bigint, den: bigint) {
    this.num = num;
    this.den = den;
    Object.freeze(this);
  }

  /**
   * parse: a decimal string of currency units (or credits) per `perQuantity` units of quantity
   * (default 1), exact: "2.5" per 1_000_000 tokens -> 2500 nanos per token; "0.0375" per 1M ->
   * 75/2 nanos per token. Same grammar as parseDecimalNanos (no exponent, no spaces, no leading
   * zeros, any number of fraction digits up to DECIMAL_CHARS_MAX characters). A negative rate is
   * a MoneyError unless allowNegative. perQuantity must be a bigint in [1, INT64_MAX].
   */
  static parse(decimal: string, field: string, opts?: { perQuantity?: bigint; allowNegative?: boolean }): Rate {
    const p = parseDecimalParts(decimal, field);
    const per = opts?.perQuantity ?? 1n;
    if (typeof per !== "bigint" || per <= 0n || per > INT64_MAX) {
      throw new MoneyError(`${field}.perQuantity`, `must be a bigint from 1 to ${INT64_MAX}, got ${String(per)}`);
    }
    const negative = p.negative && p.digits !== 0n;
    if (negative && !opts?.allowNegative) {
      throw new MoneyError(field, `must not be negative, got ${JSON.stringify(decimal)}`);
    }
    const num = (negative ? -p.digits : p.digits) * NANOS_PER_UNIT;
    const den = 10n ** BigInt(p.scale) * per;
    return Rate.reduced(num, den);
  }

  /**
   * fromFraction: the rate num/den nanos per unit of quantity, reduced. den must be > 0; num must
   * be >= 0 unless allowNegative. `field` (default "rate") names the rate in errors.
   */
  static fromFraction(num: bigint, den: bigint, opts?: { allowNegative?: boolean; field?: string }): Rate {
    const field = opts?.field ?? "rate";
    if (typeof num !== "bigint") throw new MoneyError(`${field}.num`, `must be a bigint, got ${typeof num}`);
    if (typeof den !== "bigint") throw new MoneyError(`${field}.den`, `must be a bigint, got ${typeof den}`);
    if (den <= 0n) throw new MoneyError(`${field}.den`, `must be > 0, got ${den}`);
    if (num < 0n && !opts?.allowNegative) throw new MoneyError(`${field}.num`, `must not be negative, got ${num}`);
    return Rate.reduced(num, den);
  }

  private static reduced(num: bigint, den: bigint): Rate {
    if (num === 0n) return new Rate(0n, 1n);
    const g = gcd(num, den);
    return g === 1n ? new Rate(num, den) : new Rate(num / g, den / g);
  }

  /**
   * times: nanos for `quantity` units, rounded once with the named mode (num * quantity / den).
   * quantity must be an int64 bigint (negative allowed: the modes are correct for negatives);
   * the result must fit in int64, else MoneyError on "amountNanos".
   */
  times(quantity: bigint, mode: RoundingMode): Nanos {
    if (typeof quantity !== "bigint" || quantity > INT64_MAX || quantity < INT64_MIN) {
      throw new MoneyError("quantity", `must be an int64 bigint, got ${String(quantity)}`);
    }
    const p = this.num * quantity;
    let v: bigint;
    if (this.den === 1n) {
      checkMode(mode);
      v = p;
    } else {
      v = divRound(p, this.den, mode);
    }
    if (v > INT64_MAX || v < INT64_MIN) return checkInt64(v, "amountNanos");
    return v as Nanos;
  }

  /**
   * exactTimes: the exact nanos for `quantity` units as a fraction { num, den } with den > 0 and
   * den == this.den (NOT reduced, so a CarryAccumulator fed by one rate stays on its fast path).
   */
  exactTimes(quantity: bigint): { num: bigint; den: bigint } {
    if (typeof quantity !== "bigint" || quantity > INT64_MAX || quantity < INT64_MIN) {
      throw new MoneyError("quantity", `must be an int64 bigint, got ${String(quantity)}`);
    }
    return { num: this.num * quantity, den: this.den };
  }

  /**
   * toDecimalString: num/den (nanos per unit of quantity) as a plain decimal string: exact when den
   * divides a power of 10 ("2500", "37.5", "0.15"), otherwise rounded half_even to 30 significant
   * digits ("0.333333333333333333333333333333").
   */
  toDecimalString(): string {
    let rest = this.den;
    let twos = 0;
    let fives = 0;
    while (rest % 2n === 0n) { rest /= 2n; twos++; }
    while (rest % 5n === 0n) { rest /= 5n; fives++; }
    if (rest === 1n) {
      const k = Math.max(twos, fives);
      const negative = this.num < 0n;
      const abs = negative ? -this.num : this.num;
      const scaled = (abs * 10n ** BigInt(k)) / this.den; // exact
      let s = scaled.toString();
      if (k > 0) {
        s = s.padStart(k + 1, "0");
        s = `${s.slice(0, s.length - k)}.${s.slice(s.length - k)}`;
      }
      return (negative ? "-" : "") + s;
    }
    return new SigDecimal(this.num.toString()).div(this.den.toString()).toFixed();
  }

  /** toString: "num/den" (for logs and test names). */
  toString(): string {
    return `${this.num}/${this.den}`;
  }
}
