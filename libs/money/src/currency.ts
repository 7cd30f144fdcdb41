import { MoneyError } from "./errors.js";
import { CREDIT_TYPE_CHARS_MAX, NANOS_DECIMALS } from "./limits.js";
import { checkBigint, checkInt64, type Nanos } from "./nanos.js";
import { checkMode, divRound, type RoundingMode } from "./rounding.js";

/** A currency: ISO 4217 code, its minor-unit digits and the nanos in one minor unit. */
export interface Currency {
  code: string;
  minorUnits: number;
  nanosPerMinor: bigint;
}

/**
 * ISO 4217 minor units (ISO 4217 list, amendment 2024). Codes not listed here are unknown units.
 * Minor units > 9 cannot occur (a nano is the finest unit).
 */
const MINOR_UNITS: Readonly<Record<string, number>> = {
  // 0 decimals
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0,
  VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  // 3 decimals
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  // 4 decimals
  CLF: 4,
  // 2 decimals
  AED: 2, ARS: 2, AUD: 2, BGN: 2, BRL: 2, CAD: 2, CHF: 2, CNY: 2, COP: 2, CZK: 2, DKK: 2,
  EGP: 2, EUR: 2, GBP: 2, HKD: 2, HUF: 2, IDR: 2, ILS: 2, INR: 2, KES: 2, MAD: 2, MXN: 2,
  MYR: 2, NGN: 2, NOK: 2, NZD: 2, PEN: 2, PHP: 2, PKR: 2, PLN: 2, QAR: 2, RON: 2, SAR: 2,
  SEK: 2, SGD: 2, THB: 2, TRY: 2, TWD: 2, UAH: 2, USD: 2, ZAR: 2,
};

const CURRENCIES: ReadonlyMap<string, Currency> = new Map(
  Object.entries(MINOR_UNITS).map(([code, minorUnits]) => [
    code,
    Object.freeze({ code, minorUnits, nanosPerMinor: 10n ** BigInt(NANOS_DECIMALS - minorUnits) }),
  ]),
);

/** The supported ISO 4217 codes, sorted. */
export const CURRENCY_CODES: readonly string[] = Object.freeze([...CURRENCIES.keys()].sort());

/** currency: the Currency for an upper-case ISO 4217 code; unknown (or lower-case) -> MoneyError. */
export function currency(code: string, field: string): Currency {
  const c = typeof code === "string" ? CURRENCIES.get(code) : undefined;
  if (c === undefined) {
    const shown = typeof code === "string" ? JSON.stringify(code.slice(0, 16)) : typeof code;
    throw new MoneyError(field, `must be a supported ISO 4217 currency code (upper case, e.g. USD), got ${shown}`);
  }
  return c;
}

/**
 * roundToMinor: rounds v nanos to the currency's minor unit (cents for USD, whole yen for JPY,
 * fils for KWD) with the named mode. roundedNanos + residueNanos == v exactly; the residue is
 * what the caller must carry (it is never dropped here). Unknown code -> MoneyError on "code".
 */
export function roundToMinor(
  v: bigint,
  code: string,
  mode: RoundingMode,
): { roundedNanos: Nanos; residueNanos: Nanos } {
  checkBigint(v, "value");
  checkInt64(v, "value");
  const c = currency(code, "code");
  checkMode(mode);
  const rounded = divRound(v, c.nanosPerMinor, mode) * c.nanosPerMinor;
  checkInt64(rounded, "roundedNanos");
  return { roundedNanos: rounded as Nanos, residueNanos: (v - rounded) as Nanos };
}

const CREDIT_TYPE_RE = new RegExp(`^cr_[a-z0-9_]{1,${CREDIT_TYPE_CHARS_MAX - 3}}$`);

/**
 * isUnitCode: true for a supported ISO 4217 code (upper case, see CURRENCY_CODES) or a credit type
 * id: "cr_" followed by 1..61 of [a-z0-9_] (64 characters at most in all), e.g. "cr_gpu_minutes".
 */
export function isUnitCode(s: string): boolean {
  if (typeof s !== "string") return false;
  return CURRENCIES.has(s) || (s.length <= CREDIT_TYPE_CHARS_MAX && CREDIT_TYPE_RE.test(s));
}
