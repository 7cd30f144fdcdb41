import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CarryAccumulator, INT64_MAX, MoneyError, Rate, type RoundingMode, divRound } from "./index.js";

const MODES: RoundingMode[] = ["floor", "ceil", "down", "up", "half_up", "half_down", "half_even"];

type Frac = { num: bigint; den: bigint };
const gcd = (a: bigint, b: bigint): bigint => {
  a = a < 0n ? -a : a;
  b = b < 0n ? -b : b;
  while (b) [a, b] = [b, a % b];
  return a;
};
const addFrac = (x: Frac, y: Frac): Frac => {
  const num = x.num * y.den + y.num * x.den;
  const den = x.den * y.den;
  const g = gcd(num, den) || 1n;
  return { num: num / g, den: den / g };
};
/** x - y == 0 as rationals. */
const sameValue = (x: Frac, y: Frac): boolean => x.num * y.den === y.num * x.den;

const step = fc.record({
  num: fc.oneof(fc.bigInt({ min: -1000n, max: 1000n }), fc.bigInt({ min: -(10n ** 15n), max: 10n ** 15n })),
  den: fc.oneof(fc.constantFrom(1n, 2n, 3n, 4n, 10n, 1_000_000n), fc.bigInt({ min: 1n, max: 10n ** 6n })),
});

describe("CarryAccumulator", () => {
  it("books the per-token charges of a sub-nano rate so they sum to the rounded total", () => {
    const rate = Rate.parse("0.0375", "price", { perQuantity: 1_000_000n }); // 37.5 nanos per token
    const acc = new CarryAccumulator();
    const steps = [1n, 1n, 1n].map((q) => acc.add(rate.exactTimes(q)));
    expect(steps).toEqual([38n, 37n, 37n]); // 37.5 -> 38, 75 -> 75, 112.5 -> 112 (half_even)
    expect(acc.totalBooked).toBe(112n);
    expect(acc.totalBooked).toBe(rate.times(3n, "half_even"));
    expect(acc.carried).toEqual({ num: 1n, den: 2n });
  });

  it("decides ties on the running total, not per step (1 then 1/2 books 2 under half_even)", () => {
    const acc = new CarryAccumulator("half_even");
    expect(acc.add({ num: 1n, den: 1n })).toBe(1n);
    expect(acc.add({ num: 1n, den: 2n })).toBe(1n);
    expect(acc.totalBooked).toBe(divRound(3n, 2n, "half_even"));
    expect(acc.carried).toEqual({ num: -1n, den: 2n });
  });

  const tables: Array<[RoundingMode, Frac[], bigint[], Frac]> = [
    ["floor", [{ num: 1n, den: 3n }, { num: 1n, den: 3n }, { num: 1n, den: 3n }], [0n, 0n, 1n], { num: 0n, den: 3n }],
    ["ceil", [{ num: 1n, den: 3n }, { num: 1n, den: 3n }, { num: 1n, den: 3n }], [1n, 0n, 0n], { num: 0n, den: 3n }],
    ["half_even", [{ num: -5n, den: 2n }, { num: -5n, den: 2n }], [-2n, -3n], { num: 0n, den: 2n }],
    ["half_up", [{ num: -5n, den: 2n }], [-3n], { num: 1n, den: 2n }],
    ["half_down", [{ num: -5n, den: 2n }], [-2n], { num: -1n, den: 2n }],
    ["down", [{ num: -7n, den: 4n }, { num: 3n, den: 4n }], [-1n, 0n], { num: 0n, den: 4n }],
    ["up", [{ num: -7n, den: 4n }, { num: 3n, den: 4n }], [-2n, 1n], { num: 0n, den: 4n }],
    ["floor", [{ num: 1n, den: 2n }, { num: 1n, den: 3n }, { num: 1n, den: 6n }], [0n, 0n, 1n], { num: 0n, den: 6n }],
    ["half_even", [{ num: 150n, den: 1n }, { num: -150n, den: 1n }], [150n, -150n], { num: 0n, den: 1n }],
  ];
  it.each(tables)("mode %s books %o as %o and carries %o", (mode, exacts, want, carried) => {
    const acc = new CarryAccumulator(mode);
    expect(exacts.map((e) => acc.add(e))).toEqual(want);
    expect(acc.mode).toBe(mode);
    expect(sameValue(acc.carried, carried)).toBe(true);
    expect(acc.totalBooked).toBe(want.reduce((a, b) => a + b, 0n));
  });

  it("defaults to half_even with nothing carried", () => {
    const acc = new CarryAccumulator();
    expect(acc.mode).toBe("half_even");
    expect(acc.carried).toEqual({ num: 0n, den: 1n });
    expect(acc.totalBooked).toBe(0n);
  });

  it.each(MODES)("mode %s: after any steps, sum of add() == divRound(carried0 + exact sum) and |carried| < 1 nano (property)", (mode) => {
    fc.assert(fc.property(
      fc.array(step, { maxLength: 40 }),
      fc.option(fc.bigInt({ min: -999n, max: 999n }), { nil: undefined }),
      (steps, c0) => {
        const carried0: Frac = c0 === undefined ? { num: 0n, den: 1n } : { num: c0, den: 1000n };
        const acc = new CarryAccumulator(mode, c0 === undefined ? undefined : carried0);
        let booked = 0n;
        let exact: Frac = carried0;
        for (const s of steps) {
          booked += acc.add(s);
          exact = addFrac(exact, s);
          const c = acc.carried;
          const absNum = c.num < 0n ? -c.num : c.num;
          if (!(c.den > 0n && absNum < c.den)) return false; // |carried| < 1
          if (mode === "floor" && c.num < 0n) return false; // floor carries 0 <= r < 1
          if (mode === "ceil" && c.num > 0n) return false; // ceil carries -1 < r <= 0
          if (mode.startsWith("half_") && 2n * absNum > c.den) return false; // |r| <= 1/2
          // conservation: booked + carried == exact running total, at every step
          if (!sameValue(addFrac({ num: booked, den: 1n }, c), exact)) return false;
        }
        // before the first add() nothing is booked (the residue passed in is only carried)
        if (steps.length === 0) return booked === 0n && acc.totalBooked === 0n && sameValue(acc.carried, carried0);
        return booked === acc.totalBooked && booked === divRound(exact.num, exact.den, mode);
      },
    ), { numRuns: 300 });
  });

  it("continues a series from a previous accumulator's carried residue without losing a nano", () => {
    fc.assert(fc.property(fc.array(step, { maxLength: 20 }), fc.array(step, { maxLength: 20 }), fc.constantFrom(...MODES),
      (first, second, mode) => {
        const a = new CarryAccumulator(mode);
        for (const s of first) a.add(s);
        const b = new CarryAccumulator(mode, a.carried);
        for (const s of second) b.add(s);
        let exact: Frac = { num: 0n, den: 1n };
        for (const s of [...first, ...second]) exact = addFrac(exact, s);
        const total = addFrac({ num: a.totalBooked + b.totalBooked, den: 1n }, b.carried);
        const shiftInvariant = mode === "floor" || mode === "ceil";
        return sameValue(total, exact) &&
          (!shiftInvariant || a.totalBooked + b.totalBooked === divRound(exact.num, exact.den, mode));
      },
    ), { numRuns: 300 });
  });

  it("stays on one denominator when every step comes from one rate", () => {
    const rate = Rate.fromFraction(1n, 7n);
    const acc = new CarryAccumulator("floor");
    for (let q = 1n; q <= 50n; q++) {
      acc.add(rate.exactTimes(q));
      expect(acc.carried.den).toBe(7n);
    }
    expect(acc.totalBooked).toBe((1275n) / 7n); // floor(sum 1..50 / 7)
  });

  it("returns a copy of carried that cannot change the accumulator", () => {
    const acc = new CarryAccumulator("floor");
    acc.add({ num: 1n, den: 3n });
    const c = acc.carried;
    c.num = 999n;
    expect(acc.carried).toEqual({ num: 1n, den: 3n });
  });

  const invalid: Array<[string, () => unknown, string]> = [
    ["an unknown mode", () => new CarryAccumulator("nearest" as RoundingMode), "mode"],
    ["a carried residue of one nano", () => new CarryAccumulator("floor", { num: 1n, den: 1n }), "carried"],
    ["a carried residue of minus one nano", () => new CarryAccumulator("floor", { num: -3n, den: 3n }), "carried"],
    ["a carried residue with a zero denominator", () => new CarryAccumulator("floor", { num: 0n, den: 0n }), "carried.den"],
    ["a step with a zero denominator", () => new CarryAccumulator().add({ num: 1n, den: 0n }), "exact.den"],
    ["a step with a negative denominator", () => new CarryAccumulator().add({ num: 1n, den: -2n }), "exact.den"],
    ["a step with a number numerator", () => new CarryAccumulator().add({ num: 1 as unknown as bigint, den: 2n }), "exact.num"],
    ["a step that is not an object", () => new CarryAccumulator().add(null as unknown as Frac), "exact"],
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

  it("refuses a step that would push totalBooked past int64 and keeps its state", () => {
    const acc = new CarryAccumulator("floor");
    acc.add({ num: INT64_MAX, den: 1n });
    acc.add({ num: 1n, den: 2n });
    expect(() => acc.add({ num: 1n, den: 1n })).toThrow(MoneyError);
    expect(() => acc.add({ num: 1n, den: 1n })).toThrow(/totalBooked: must fit in int64/);
    expect(acc.totalBooked).toBe(INT64_MAX);
    expect(acc.carried).toEqual({ num: 1n, den: 2n });
  });
});
