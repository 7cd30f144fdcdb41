import { MoneyError } from "./errors.js";
import { INT64_MAX, INT64_MIN } from "./limits.js";
import { type Nanos } from "./nanos.js";
import { checkMode, divRound, gcd, type RoundingMode } from "./rounding.js";

/** An exact rational number of nanos, num/den with den > 0. */
export interface ExactNanos {
  num: bigint;
  den: bigint;
}

/**
 * CarryAccumulator: rounding with the remainder carried. Feed it exact (rational) amounts; each
 * add() returns the whole nanos to book for that step so that, after any number of steps,
 *
 *   totalBooked == sum of add() results == divRound(carriedAtStart + sum of exact, mode)
 *
 * after at least one add(), for EVERY mode (it rounds the running exact total and books the
 * difference, so ties and signs are decided on the total, never per step), and at all times
 * carried == carriedAtStart + sum of exact - totalBooked with |carried| < 1 nano (after an add():
 * <= 1/2 nano for the half_* modes, 0 <= carried < 1 for floor, -1 < carried <= 0 for ceil).
 * Default mode: half_even. Pass a previous accumulator's `carried` to continue a series
 * (e.g. the next billing period); nothing is ever dropped.
 */
export class CarryAccumulator {
  readonly #mode: RoundingMode;
  #num: bigint; // carried residue numerator
  #den: bigint; // carried residue denominator (> 0)
  #booked: bigint; // sum of every add() result

  constructor(mode: RoundingMode = "half_even", carried?: ExactNanos) {
    this.#mode = checkMode(mode);
    this.#num = 0n;
    this.#den = 1n;
    this.#booked = 0n;
    if (carried !== undefined) {
      const { num, den } = checkExact(carried, "carried");
      if ((num < 0n ? -num : num) >= den) {
        throw new MoneyError("carried", `must be less than 1 nano in magnitude, got ${num}/${den}`);
      }
      this.#num = num;
      this.#den = den;
    }
  }

  /** The rounding mode of this accumulator. */
  get mode(): RoundingMode {
    return this.#mode;
  }

  /** The sub-nano residue not yet booked, |carried| < 1 nano (a fresh object each read). */
  get carried(): { num: bigint; den: bigint } {
    return { num: this.#num, den: this.#den };
  }

  /** Sum of every add() result so far. */
  get totalBooked(): bigint {
    return this.#booked;
  }

  /**
   * add: books one exact step; returns the whole nanos for it. Throws MoneyError (state unchanged)
   * if exact is not { num: bigint, den: bigint > 0 } or the booked total would leave int64.
   */
  add(exact: ExactNanos): Nanos {
    const { num: en, den: ed } = checkExact(exact, "exact");
    let tn: bigint;
    let td: bigint;
    if (ed === this.#den) {
      tn = this.#num + en;
      td = ed;
    } else if (this.#num === 0n) {
      tn = en;
      td = ed;
    } else {
      const g = gcd(this.#den, ed);
      td = (this.#den / g) * ed;
      tn = this.#num * (td / this.#den) + en * (td / ed);
    }
    const full = this.#booked * td + tn; // exact running total, over td
    const booked = divRound(full, td, this.#mode);
    if (booked > INT64_MAX || booked < INT64_MIN) {
      throw new MoneyError("totalBooked", `must fit in int64, got ${booked} (overflow is refused, never wrapped)`);
    }
    const step = booked - this.#booked;
    if (step > INT64_MAX || step < INT64_MIN) {
      throw new MoneyError("exact", `step must fit in int64, got ${step}`);
    }
    let rn = full - booked * td;
    let rd = td;
    if (rn === 0n) {
      rd = ed; // keep the caller's denominator so equal-denominator steps stay on the fast path
    } else if (rd !== ed) {
      const g = gcd(rn, rd);
      if (g !== 1n) {
        rn /= g;
        rd /= g;
      }
    }
    this.#num = rn;
    this.#den = rd;
    this.#booked = booked;
    return step as Nanos;
  }
}

function checkExact(e: unknown, field: string): ExactNanos {
  if (typeof e !== "object" || e === null) throw new MoneyError(field, "must be { num: bigint, den: bigint }");
  const { num, den } = e as { num: unknown; den: unknown };
  if (typeof num !== "bigint") throw new MoneyError(`${field}.num`, `must be a bigint, got ${typeof num}`);
  if (typeof den !== "bigint") throw new MoneyError(`${field}.den`, `must be a bigint, got ${typeof den}`);
  if (den <= 0n) throw new MoneyError(`${field}.den`, `must be > 0, got ${den}`);
  return { num, den };
}
