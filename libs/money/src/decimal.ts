import { MoneyError } from "./errors.js";
import { DECIMAL_CHARS_MAX, NANOS_DECIMALS, NANOS_PER_UNIT } from "./limits.js";
import { checkBigint, checkInt64, type Nanos } from "./nanos.js";
import { checkMode, divRound, type RoundingMode } from "./rounding.js";

/**
 * The one decimal grammar of @nanobill/money (amounts and rates):
 *   -?(0|[1-9][0-9]*)(\.[0-9]+)?
 * Rejected: "" and whitespace anywhere, "+1", "--1", "01" (leading zeros), "1." and ".5"
 * (a point needs digits on both sides), exponents ("1e5"), "Infinity"/"NaN", separators
 * ("1,000", "1_000"), non-ASCII digits, and anything longer than DECIMAL_CHARS_MAX.
 */
const DECIMAL_RE = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?$/;

/** Internal: a parsed decimal string, value = (negative ? -1 : 1) * digits / 10 ** scale. */
export interface DecimalParts {
  negative: boolean;
  digits: bigint; // integer and fraction digits, unsigned
  scale: number; // number of fraction digits
}

/** Internal: parses the decimal grammar or throws MoneyError naming the field. */
export function parseDecimalParts(s: unknown, field: string): DecimalParts {
  if (typeof s !== "string") throw new MoneyError(field, `must be a decimal string, got ${typeof s}`);
  if (s.length > DECIMAL_CHARS_MAX) {
    throw new MoneyError(field, `must be at most ${DECIMAL_CHARS_MAX} characters, got ${s.length}`);
  }
  const m = DECIMAL_RE.exec(s);
  if (m === null) {
    throw new MoneyError(field, `must be a plain decimal -?(0|[1-9][0-9]*)(.[0-9]+)? with no spaces, exponent or leading zeros, got ${JSON.stringify(s)}`);
  }
  const frac = m[3] ?? "";
  return { negative: m[1] === "-", digits: BigInt((m[2] ?? "") + frac), scale: frac.length };
}

/**
 * parseDecimalNanos: a decimal string of units -> nanos, exactly ("0.00000015" -> 150n,
 * "-1.5" -> -1_500_000_000n). More than 9 fractional digits is a MoneyError unless a rounding
 * mode is given, which then rounds the exact value to a whole nano. The result must fit in int64.
 */
export function parseDecimalNanos(s: string, field: string, mode?: RoundingMode): Nanos {
  if (mode !== undefined) checkMode(mode);
  const p = parseDecimalParts(s, field);
  let v: bigint;
  if (p.scale <= NANOS_DECIMALS) {
    v = p.digits * 10n ** BigInt(NANOS_DECIMALS - p.scale);
    if (p.negative) v = -v;
  } else {
    if (mode === undefined) {
      throw new MoneyError(field, `has ${p.scale} fractional digits; at most ${NANOS_DECIMALS} (one nano) unless a rounding mode is given, got ${JSON.stringify(s)}`);
    }
    v = divRound(p.negative ? -p.digits : p.digits, 10n ** BigInt(p.scale - NANOS_DECIMALS), mode);
  }
  return checkInt64(v, field);
}

/**
 * formatNanos: nanos -> decimal string of units, exact, no exponent, trailing fractional zeros
 * trimmed down to fractionDigitsMin (0..9, default 0): 150n -> "0.00000015", 1_500_000_000n ->
 * "1.5", 1_000_000_000n -> "1" (or "1.00" with fractionDigitsMin 2), -5n -> "-0.000000005".
 * The output is in the grammar parseDecimalNanos accepts: parse(format(v)) == v.
 */
export function formatNanos(v: bigint, opts?: { fractionDigitsMin?: number }): string {
  checkBigint(v, "value");
  const min = opts?.fractionDigitsMin ?? 0;
  if (!Number.isInteger(min) || min < 0 || min > NANOS_DECIMALS) {
    throw new MoneyError("fractionDigitsMin", `must be an integer from 0 to ${NANOS_DECIMALS}, got ${String(min)}`);
  }
  const negative = v < 0n;
  const abs = negative ? -v : v;
  const whole = (abs / NANOS_PER_UNIT).toString();
  let frac = (abs % NANOS_PER_UNIT).toString().padStart(NANOS_DECIMALS, "0");
  let end = frac.length;
  while (end > min && frac.charCodeAt(end - 1) === 48 /* "0" */) end--;
  frac = frac.slice(0, end);
  return (negative ? "-" : "") + whole + (frac.length > 0 ? "." + frac : "");
}
