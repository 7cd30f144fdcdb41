/** @nanobill/money: nano-unit arithmetic, exact decimal rates, rounding with carry, allocation. */
export { MoneyError } from "./errors.js";
export { NANOS_PER_UNIT, AMOUNT_NANOS_MAX, INT64_MAX, INT64_MIN } from "./limits.js";
export { type Nanos, toNanos, amountNanos, addNanos, mulNanos } from "./nanos.js";
export { type RoundingMode, divRound, divFloor, divCeil, divHalfEven } from "./rounding.js";
export { parseDecimalNanos, formatNanos } from "./decimal.js";
export { Rate } from "./rate.js";
export { CarryAccumulator } from "./carry.js";
export { allocate } from "./allocate.js";
export { type Currency, currency, roundToMinor, isUnitCode } from "./currency.js";
