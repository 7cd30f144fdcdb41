// Exact decimals for meter values: a bigint scaled by 10^18 (DECIMAL_FRACTION_DIGITS_MAX).
// Sums, minima and maxima of int64 and decimal properties are exact; nothing is a float.
import { DECIMAL_FRACTION_DIGITS_MAX, DECIMAL_INTEGER_DIGITS_MAX } from "../limits.js";

/** A decimal value: its integer value times 10^SCALE. */
export type Scaled = bigint;
export const SCALE = DECIMAL_FRACTION_DIGITS_MAX;
export const ONE: Scaled = 10n ** BigInt(SCALE);

const DECIMAL_RE = new RegExp(
  `^(-)?(\\d{1,${DECIMAL_INTEGER_DIGITS_MAX}})(?:\\.(\\d{1,${DECIMAL_FRACTION_DIGITS_MAX}}))?$`,
);

/** Parses an exact decimal string; undefined when it is not one (no exponents, no spaces). */
export function parseDecimal(s: string): Scaled | undefined {
  const m = DECIMAL_RE.exec(s);
  if (!m) return undefined;
  const int = BigInt(m[2]!);
  const frac = (m[3] ?? "").padEnd(SCALE, "0");
  const v = int * ONE + BigInt(frac === "" ? "0" : frac);
  return m[1] ? -v : v;
}

/** The scaled form of an integer. */
export function fromInt(v: bigint): Scaled {
  return v * ONE;
}

/** Canonical text: no trailing fraction zeros, no "-0" ("1.5", "-2", "0.000001"). */
export function formatDecimal(v: Scaled): string {
  const neg = v < 0n;
  const abs = neg ? -v : v;
  const int = abs / ONE;
  const rest = abs % ONE;
  // Whole numbers (token counts, the usual sums) skip the fraction's text.
  const frac = rest === 0n ? "" : rest.toString().padStart(SCALE, "0").replace(/0+$/, "");
  const body = frac === "" ? int.toString() : `${int}.${frac}`;
  return neg && abs !== 0n ? `-${body}` : body;
}

/** Canonical text of any decimal string (as returned by PostgreSQL NUMERIC); throws if malformed. */
export function normalizeDecimalText(s: string): string {
  const m = /^(-)?(\d+)(?:\.(\d+))?$/.exec(s);
  if (!m) throw new Error(`not a decimal: ${s}`);
  const int = m[2]!.replace(/^0+(?=\d)/, "");
  const frac = (m[3] ?? "").replace(/0+$/, "");
  const body = frac === "" ? int : `${int}.${frac}`;
  return m[1] && body !== "0" ? `-${body}` : body;
}
