import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Decimal } from "decimal.js";
import { MoneyError, type RoundingMode, divCeil, divFloor, divHalfEven, divRound } from "./index.js";

const MODES: RoundingMode[] = ["floor", "ceil", "down", "up", "half_up", "half_down", "half_even"];

// The classic table (java.math.RoundingMode), input = num / 10.
const TABLE: Array<[bigint, Record<RoundingMode, bigint>]> = [
  [55n, { up: 6n, down: 5n, ceil: 6n, floor: 5n, half_up: 6n, half_down: 5n, half_even: 6n }],
  [25n, { up: 3n, down: 2n, ceil: 3n, floor: 2n, half_up: 3n, half_down: 2n, half_even: 2n }],
  [16n, { up: 2n, down: 1n, ceil: 2n, floor: 1n, half_up: 2n, half_down: 2n, half_even: 2n }],
  [11n, { up: 2n, down: 1n, ceil: 2n, floor: 1n, half_up: 1n, half_down: 1n, half_even: 1n }],
  [10n, { up: 1n, down: 1n, ceil: 1n, floor: 1n, half_up: 1n, half_down: 1n, half_even: 1n }],
  [0n, { up: 0n, down: 0n, ceil: 0n, floor: 0n, half_up: 0n, half_down: 0n, half_even: 0n }],
  [-10n, { up: -1n, down: -1n, ceil: -1n, floor: -1n, half_up: -1n, half_down: -1n, half_even: -1n }],
  [-11n, { up: -2n, down: -1n, ceil: -1n, floor: -2n, half_up: -1n, half_down: -1n, half_even: -1n }],
  [-16n, { up: -2n, down: -1n, ceil: -1n, floor: -2n, half_up: -2n, half_down: -2n, half_even: -2n }],
  [-25n, { up: -3n, down: -2n, ceil: -2n, floor: -3n, half_up: -3n, half_down: -2n, half_even: -2n }],
  [-55n, { up: -6n, down: -5n, ceil: -5n, floor: -6n, half_up: -6n, half_down: -5n, half_even: -6n }],
  [5n, { up: 1n, down: 0n, ceil: 1n, floor: 0n, half_up: 1n, half_down: 0n, half_even: 0n }],
  [-5n, { up: -1n, down: 0n, ceil: 0n, floor: -1n, half_up: -1n, half_down: 0n, half_even: 0n }],
  [35n, { up: 4n, down: 3n, ceil: 4n, floor: 3n, half_up: 4n, half_down: 3n, half_even: 4n }],
  [-35n, { up: -4n, down: -3n, ceil: -3n, floor: -4n, half_up: -4n, half_down: -3n, half_even: -4n }],
];
const ROWS = TABLE.flatMap(([num, want]) => MODES.map((m) => [num, m, want[m]] as const));

describe("divRound", () => {
  it.each(ROWS)("%s/10 rounded %s is %s", (num, mode, want) => {
    expect(divRound(num, 10n, mode)).toBe(want);
  });

  it("divFloor, divCeil and divHalfEven are the named modes", () => {
    expect(divFloor(-7n, 2n)).toBe(-4n);
    expect(divCeil(-7n, 2n)).toBe(-3n);
    expect(divHalfEven(-7n, 2n)).toBe(-4n);
    expect(divHalfEven(-5n, 2n)).toBe(-2n);
    expect(divFloor(7n, 2n)).toBe(3n);
    expect(divCeil(7n, 2n)).toBe(4n);
    expect(divHalfEven(7n, 2n)).toBe(4n);
  });

  const invalid: Array<[string, () => unknown, string]> = [
    ["a zero denominator", () => divRound(1n, 0n, "floor"), "den"],
    ["a negative denominator", () => divRound(1n, -3n, "floor"), "den"],
    ["divFloor by zero", () => divFloor(1n, 0n), "den"],
    ["an unknown mode", () => divRound(7n, 2n, "nearest" as RoundingMode), "mode"],
    ["an unknown mode on an exact division", () => divRound(8n, 2n, "HALF_EVEN" as RoundingMode), "mode"],
    ["a number numerator", () => divRound(1 as unknown as bigint, 2n, "floor"), "num"],
    ["a number denominator", () => divRound(1n, 2 as unknown as bigint, "floor"), "den"],
  ];
  it.each(invalid)("rejects %s with a MoneyError", (_name, fn, field) => {
    try {
      fn();
      expect.unreachable("no error thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(MoneyError);
      expect((e as MoneyError).field).toBe(field);
    }
  });

  const DEC_MODE: Record<RoundingMode, Decimal.Rounding> = {
    floor: Decimal.ROUND_FLOOR, ceil: Decimal.ROUND_CEIL, down: Decimal.ROUND_DOWN, up: Decimal.ROUND_UP,
    half_up: Decimal.ROUND_HALF_UP, half_down: Decimal.ROUND_HALF_DOWN, half_even: Decimal.ROUND_HALF_EVEN,
  };
  const Exact = Decimal.clone({ precision: 200 });

  it("agrees with decimal.js for every mode, sign and size (an independent oracle)", () => {
    fc.assert(fc.property(
      fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }),
      fc.oneof(fc.bigInt({ min: 1n, max: 20n }), fc.bigInt({ min: 1n, max: 10n ** 20n })),
      fc.constantFrom(...MODES),
      (num, den, mode) => {
        const want = new Exact(num.toString()).div(den.toString()).toDecimalPlaces(0, DEC_MODE[mode]).toFixed();
        return divRound(num, den, mode).toString() === want;
      },
    ), { numRuns: 2000 });
  });

  it("is within one of the exact quotient and exact when the division is exact", () => {
    fc.assert(fc.property(
      fc.bigInt({ min: -(10n ** 24n), max: 10n ** 24n }), fc.bigInt({ min: 1n, max: 10n ** 12n }), fc.constantFrom(...MODES),
      (q, den, mode) => {
        if (divRound(q * den, den, mode) !== q) return false;
        const num = q * den + (q % den);
        const r = divRound(num, den, mode);
        return r * den <= num + den && r * den >= num - den && divFloor(num, den) <= r && r <= divCeil(num, den);
      },
    ));
  });
});
