import { MoneyError } from "./errors.js";
import { AMOUNT_NANOS_MAX, INT64_MAX, INT64_MIN, INTEGER_CHARS_MAX } from "./limits.js";

/**
 * Integer nano-units (1e-9 of a currency unit or of a credit), always within int64.
 * The brand means "checked by @nanobill/money": only this package's functions produce it.
 */
export type Nanos = bigint & { readonly __brand: "Nanos" };

/** Internal: brands a value the caller has already checked. Not exported from index.ts. */
export function unsafeNanos(v: bigint): Nanos {
  return v as Nanos;
}

/** Internal: throws MoneyError unless v is within int64. */
export function checkInt64(v: bigint, field: string): Nanos {
  if (v > INT64_MAX || v < INT64_MIN) {
    throw new MoneyError(field, `must fit in int64 [${INT64_MIN}, ${INT64_MAX}], got ${v} (overflow is refused, never wrapped)`);
  }
  return v as Nanos;
}

/** Internal: throws MoneyError unless v is a bigint. */
export function checkBigint(v: unknown, field: string): bigint {
  if (typeof v !== "bigint") {
    throw new MoneyError(field, `must be a bigint, got ${typeof v}`);
  }
  return v;
}

const INTEGER_RE = /^-?(0|[1-9][0-9]*)$/;

/**
 * toNanos: an integer amount of nanos from a bigint, a canonical integer string (as `pg` returns
 * int8: "-?(0|[1-9][0-9]*)") or a JS safe integer. The result must fit in int64.
 */
export function toNanos(v: bigint | string | number, field: string): Nanos {
  if (typeof v === "bigint") return checkInt64(v, field);
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) {
      throw new MoneyError(field, `must be a safe integer number of nanos, got ${String(v)}`);
    }
    return checkInt64(BigInt(v), field);
  }
  if (typeof v === "string") {
    if (v.length === 0 || v.length > INTEGER_CHARS_MAX || !INTEGER_RE.test(v)) {
      const shown = v.length > INTEGER_CHARS_MAX ? `${JSON.stringify(v.slice(0, INTEGER_CHARS_MAX))}...` : JSON.stringify(v);
      throw new MoneyError(field, `must be an integer string -?(0|[1-9][0-9]*) of at most ${INTEGER_CHARS_MAX} characters, got ${shown}`);
    }
    return checkInt64(BigInt(v), field);
  }
  throw new MoneyError(field, `must be a bigint, an integer string or a safe integer, got ${typeof v}`);
}

/**
 * amountNanos: one amount, |v| <= AMOUNT_NANOS_MAX. By default it must be strictly positive;
 * `allowZero` admits 0 and `allowNegative` admits negative amounts.
 */
export function amountNanos(
  v: bigint,
  field: string,
  opts?: { allowZero?: boolean; allowNegative?: boolean },
): Nanos {
  checkBigint(v, field);
  if (v === 0n && !opts?.allowZero) throw new MoneyError(field, "must not be zero");
  if (v < 0n && !opts?.allowNegative) throw new MoneyError(field, `must not be negative, got ${v}`);
  if (v > AMOUNT_NANOS_MAX || v < -AMOUNT_NANOS_MAX) {
    throw new MoneyError(field, `must be within +-AMOUNT_NANOS_MAX (${AMOUNT_NANOS_MAX}), got ${v}`);
  }
  return v as Nanos;
}

/** addNanos: a + b; the sum must fit in int64 (overflow -> MoneyError, never wrapped). */
export function addNanos(a: bigint, b: bigint, field: string): Nanos {
  checkBigint(a, field);
  checkBigint(b, field);
  return checkInt64(a + b, field);
}

/** mulNanos: a * b; the product must fit in int64 (overflow -> MoneyError, never wrapped). */
export function mulNanos(a: bigint, b: bigint, field: string): Nanos {
  checkBigint(a, field);
  checkBigint(b, field);
  return checkInt64(a * b, field);
}
