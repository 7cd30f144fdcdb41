/**
 * Rounding of invoice lines to the currency's minor unit, with the residue carried (pure).
 *
 * Each (customer, charge) keeps a residue state between periods:
 * - subNano: the sub-nano remainder (|x| < 1 nano) left when an exact rational line amount
 *   (price x fractional quantity, proration, percentage) is booked in whole nanos;
 * - residueNanos: the sub-minor-unit remainder (|x| < 1 minor unit for nearest modes) left when
 *   the booked nanos are rounded to cents (or yen, ...).
 * Per line:  booked = nanos of (exact + subNanoIn)            (CarryAccumulator, half_even)
 *            rounded + residueOut = booked + residueIn         (roundToMinor, the named mode)
 * so for every period  exact + subNanoIn + residueIn == rounded + subNanoOut + residueOut, and
 * over any number of periods the sum of billed amounts plus the carried state equals the sum of
 * exact amounts, with nothing dropped.
 */
import { CarryAccumulator, NANOS_PER_UNIT, Rate, roundToMinor, type RoundingMode } from "@nanobill/money";

/** An exact rational number of nanos, num/den with den > 0. */
export interface ExactNanos {
  num: bigint;
  den: bigint;
}

/** ResidueState is what one (customer, charge) carries from period to period. */
export interface ResidueState {
  residueNanos: bigint;
  subNanoNum: bigint;
  subNanoDen: bigint;
}

export const ZERO_RESIDUE: ResidueState = Object.freeze({ residueNanos: 0n, subNanoNum: 0n, subNanoDen: 1n });

export interface RoundedLine {
  /** amountNanos: the exact amount booked in whole nanos (the sub-nano part is carried). */
  amountNanos: bigint;
  residueInNanos: bigint;
  roundedNanos: bigint;
  amountMinor: bigint;
  residueOutNanos: bigint;
  state: ResidueState;
}

export function exact(nanos: bigint): ExactNanos {
  return { num: nanos, den: 1n };
}

/** roundLine: books an exact amount with the carried state and rounds it to the minor unit. */
export function roundLine(amount: ExactNanos, state: ResidueState, code: string, mode: RoundingMode, nanosPerMinor: bigint): RoundedLine {
  const acc = new CarryAccumulator("half_even", { num: state.subNanoNum, den: state.subNanoDen });
  const booked = acc.add(amount);
  const total = booked + state.residueNanos;
  const { roundedNanos, residueNanos } = roundToMinor(total, code, mode);
  const carried = acc.carried;
  return {
    amountNanos: booked,
    residueInNanos: state.residueNanos,
    roundedNanos,
    amountMinor: roundedNanos / nanosPerMinor,
    residueOutNanos: residueNanos,
    state: { residueNanos, subNanoNum: carried.num, subNanoDen: carried.den },
  };
}

/** priceTimesQuantity: exact nanos of unitPrice (currency units) x quantity, both decimals. */
export function priceTimesQuantity(unitPrice: string, quantity: string): ExactNanos {
  const p = Rate.parse(unitPrice, "unit_price", { allowNegative: true }); // nanos per unit
  const q = Rate.parse(quantity, "quantity", { allowNegative: true }); // quantity x 1e9
  return reduce({ num: p.num * q.num, den: p.den * q.den * NANOS_PER_UNIT });
}

/** timesBps: exact x basis points / 10000. */
export function timesBps(v: bigint, bps: number): ExactNanos {
  return reduce({ num: v * BigInt(bps), den: 10_000n });
}

function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

export function reduce(x: ExactNanos): ExactNanos {
  const g = gcd(x.num, x.den);
  return g <= 1n ? x : { num: x.num / g, den: x.den / g };
}

/** addExact: a + b exactly. */
export function addExact(a: ExactNanos, b: ExactNanos): ExactNanos {
  return reduce({ num: a.num * b.den + b.num * a.den, den: a.den * b.den });
}

/** formatDecimal: an exact decimal string of int / 10^scale. */
export function formatDecimal(int: bigint, scale: number): string {
  const neg = int < 0n;
  let s = (neg ? -int : int).toString();
  if (scale === 0) return (neg ? "-" : "") + s;
  s = s.padStart(scale + 1, "0");
  let out = `${s.slice(0, s.length - scale)}.${s.slice(s.length - scale)}`.replace(/0+$/, "").replace(/\.$/, "");
  if (neg && out !== "0") out = "-" + out;
  return out;
}
