/** Every limit of @nanobill/money, in one place. Each is enforced and tested at its edge. */

/** One nano-unit is 1e-9 of a currency unit (or of a credit). */
export const NANOS_PER_UNIT = 1_000_000_000n;

/** Decimal places of a nano-unit (NANOS_PER_UNIT == 10 ** NANOS_DECIMALS). */
export const NANOS_DECIMALS = 9;

/** Bound on one amount: |amount| <= 1e18 nanos (one billion units). */
export const AMOUNT_NANOS_MAX = 10n ** 18n;

/** Range of a signed 64-bit integer (protobuf int64, SQL BIGINT). */
export const INT64_MAX = 9_223_372_036_854_775_807n;
export const INT64_MIN = -9_223_372_036_854_775_808n;

/** Longest decimal string accepted by parseDecimalNanos and Rate.parse (sign and point included). */
export const DECIMAL_CHARS_MAX = 64;

/** Longest integer string accepted by toNanos ("-9223372036854775808" is 20 characters). */
export const INTEGER_CHARS_MAX = 20;

/** Most weights one allocate() call accepts. */
export const ALLOCATE_WEIGHTS_MAX = 100_000;

/** Significant digits of Rate.toDecimalString() when the rate has no finite decimal form. */
export const RATE_DECIMAL_SIGNIFICANT_DIGITS = 30;

/** Longest credit type id accepted by isUnitCode (the "cr_" prefix included). */
export const CREDIT_TYPE_CHARS_MAX = 64;
