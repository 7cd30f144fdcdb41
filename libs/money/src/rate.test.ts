import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Decimal } from "decimal.js";
import {
  INT64_MAX, INT64_MIN, MoneyError, Rate, type RoundingMode, divRound, formatNanos, roundToMinor,
} from "./index.js";

const MODES: RoundingMode[] = ["floor", "ceil", "down", "up", "half_up", "half_down", "half_even"];

function expectMoneyError(fn: () => unknown, field: string, rule?: RegExp): void {
  try {
    fn();
    expect.unreachable("no error thrown");
  } catch (e) {
    expect(e).toBeInstanceOf(MoneyError);
    expect((e as MoneyError).field).toBe(field);
    if (rule) expect((e as MoneyError).rule).toMatch(rule);
  }
}

describe("acceptance numbers", () => {
  it("$2.50 per 1M tokens x 1,234 tokens = 3,085,000 nanos", () => {
    expect(Rate.parse("2.50", "input_price", { perQuantity: 1_000_000n }).times(1234n, "half_even")).toBe(3_085_000n);
  });
  it("$10 per 1M tokens x 567 tokens = 5,670,000 nanos", () => {
    expect(Rate.parse("10", "output_price", { perQuantity: 1_000_000n }).times(567n, "half_even")).toBe(5_670_000n);
  });
  it("the issue's event is priced 8,755,000 nanos and costed 4,377,500 nanos", () => {
    const per = { perQuantity: 1_000_000n };
    const price = Rate.parse("2.5", "p", per).times(1234n, "half_even") + Rate.parse("10", "p", per).times(567n, "half_even");
    const cost = Rate.parse("1.25", "c", per).times(1234n, "half_even") + Rate.parse("5", "c", per).times(567n, "half_even");
    expect(price).toBe(8_755_000n);
    expect(cost).toBe(4_377_500n);
  });
  it("4.4556 x 10.625 = 47.34075, which is USD 47.34 with 750,000 nanos residue and JPY 47", () => {
    // 10.625 units expressed as 10,625 thousandths: the rate is 4.4556 per 1,000 thousandths
    const v = Rate.parse("4.4556", "unit_price", { perQuantity: 1000n }).times(10_625n, "half_even");
    expect(v).toBe(47_340_750_000n);
    expect(formatNanos(v)).toBe("47.34075");
    const usd = roundToMinor(v, "USD", "half_even");
    expect(usd).toEqual({ roundedNanos: 47_340_000_000n, residueNanos: 750_000n });
    expect(formatNanos(usd.roundedNanos, { fractionDigitsMin: 2 })).toBe("47.34");
    const jpy = roundToMinor(v, "JPY", "half_even");
    expect(jpy.roundedNanos).toBe(47_000_000_000n);
    expect(jpy.roundedNanos + jpy.residueNanos).toBe(v);
  });
  it("0.067 x 55 = 3.685", () => {
    expect(formatNanos(Rate.parse("0.067", "unit_price").times(55n, "half_even"))).toBe("3.685");
  });
  it("1,000,000 x $0.00000015 = $0.15 exactly", () => {
    const v = Rate.parse("0.00000015", "token_price").times(1_000_000n, "half_even");
    expect(v).toBe(150_000_000n);
    expect(formatNanos(v, { fractionDigitsMin: 2 })).toBe("0.15");
  });
});

describe("Rate.parse", () => {
  const valid: Array<[string, bigint | undefined, bigint, bigint]> = [
    ["2.5", 1_000_000n, 2500n, 1n],
    ["0.0375", 1_000_000n, 75n, 2n],
    ["0.00000015", undefined, 150n, 1n],
    ["0.0000000001", undefined, 1n, 10n],
    ["1", 3n, 1_000_000_000n, 3n],
    ["0", undefined, 0n, 1n],
    ["0.000", 7n, 0n, 1n],
    ["-0", undefined, 0n, 1n],
    ["1.000000000000000000000000000001", undefined, 10n ** 30n + 1n, 10n ** 21n],
    ["0.067", undefined, 67_000_000n, 1n],
  ];
  it.each(valid)("parses %j per %s as %s/%s nanos per unit", (s, per, num, den) => {
    const r = Rate.parse(s, "price", per === undefined ? undefined : { perQuantity: per });
    expect(r.num).toBe(num);
    expect(r.den).toBe(den);
  });

  it("accepts a negative rate only with allowNegative", () => {
    const r = Rate.parse("-0.5", "discount", { allowNegative: true });
    expect([r.num, r.den]).toEqual([-500_000_000n, 1n]);
    expectMoneyError(() => Rate.parse("-0.5", "discount"), "discount", /negative/);
  });

  const invalid: Array<[string, unknown, unknown, string, RegExp]> = [
    ["an exponent", "1e-7", undefined, "price", /plain decimal/],
    ["a trailing point", "1.", undefined, "price", /plain decimal/],
    ["a leading point", ".5", undefined, "price", /plain decimal/],
    ["whitespace", " 2.5", undefined, "price", /plain decimal/],
    ["an empty string", "", undefined, "price", /plain decimal/],
    ["a double minus", "--1", undefined, "price", /plain decimal/],
    ["65 characters", "0." + "1".repeat(63), undefined, "price", /64 characters/],
    ["a number", 2.5, undefined, "price", /decimal string/],
    ["perQuantity 0", "1", 0n, "price.perQuantity", /from 1/],
    ["a negative perQuantity", "1", -5n, "price.perQuantity", /from 1/],
    ["perQuantity above int64", "1", INT64_MAX + 1n, "price.perQuantity", /from 1/],
    ["a number perQuantity", "1", 1000, "price.perQuantity", /bigint/],
  ];
  it.each(invalid)("rejects %s", (_name, s, per, field, rule) => {
    expectMoneyError(() => Rate.parse(s as string, "price", per === undefined ? undefined : { perQuantity: per as bigint }), field, rule);
  });

  it("is exact: parse of a decimal.js-written string then exactTimes equals the exact rational product", () => {
    const Exact = Decimal.clone({ precision: 300 });
    fc.assert(fc.property(
      fc.bigInt({ min: 0n, max: 10n ** 20n }), fc.integer({ min: 0, max: 30 }),
      fc.bigInt({ min: 1n, max: 10n ** 9n }), fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }),
      (digits, scale, per, q) => {
        const s = new Exact(digits.toString()).div(new Exact(10).pow(scale)).toFixed();
        const r = Rate.parse(s, "p", { perQuantity: per });
        const e = r.exactTimes(q);
        // e = digits * 10^-scale * 1e9 / per * q, checked by cross-multiplication (no division)
        return e.num * 10n ** BigInt(scale) * per === digits * 1_000_000_000n * q * e.den && e.den > 0n;
      },
    ), { numRuns: 500 });
  });
});

describe("Rate.fromFraction", () => {
  const valid: Array<[bigint, bigint, bigint, bigint]> = [
    [6n, 4n, 3n, 2n], [0n, 5n, 0n, 1n], [7n, 1n, 7n, 1n], [10n ** 30n, 10n ** 28n, 100n, 1n], [1n, 3n, 1n, 3n],
  ];
  it.each(valid)("reduces %s/%s to %s/%s", (n, d, wn, wd) => {
    const r = Rate.fromFraction(n, d);
    expect([r.num, r.den]).toEqual([wn, wd]);
  });
  it("reduces a negative fraction when allowNegative", () => {
    const r = Rate.fromFraction(-6n, 4n, { allowNegative: true });
    expect([r.num, r.den]).toEqual([-3n, 2n]);
  });
  const invalid: Array<[string, () => unknown, string]> = [
    ["a zero denominator", () => Rate.fromFraction(1n, 0n), "rate.den"],
    ["a negative denominator", () => Rate.fromFraction(1n, -2n), "rate.den"],
    ["a negative numerator", () => Rate.fromFraction(-1n, 2n), "rate.num"],
    ["a number numerator", () => Rate.fromFraction(1 as unknown as bigint, 2n), "rate.num"],
    ["a number denominator, with a field name", () => Rate.fromFraction(1n, 2 as unknown as bigint, { field: "cost_rate" }), "cost_rate.den"],
  ];
  it.each(invalid)("rejects %s", (_name, fn, field) => expectMoneyError(fn, field));

  it("is immutable", () => {
    const r = Rate.fromFraction(1n, 3n);
    expect(Object.isFrozen(r)).toBe(true);
    expect(() => { (r as unknown as { num: bigint }).num = 5n; }).toThrow(TypeError);
  });
});

describe("Rate.times", () => {
  const rows: Array<[bigint, bigint, bigint, RoundingMode, bigint]> = [
    [75n, 2n, 1n, "half_even", 38n],   // 37.5 -> 38
    [75n, 2n, 3n, "half_even", 112n],  // 112.5 -> 112
    [75n, 2n, 1n, "floor", 37n],
    [75n, 2n, 1n, "ceil", 38n],
    [75n, 2n, -1n, "floor", -38n],
    [75n, 2n, -1n, "half_even", -38n],
    [75n, 2n, -3n, "half_even", -112n],
    [75n, 2n, -1n, "half_up", -38n],
    [75n, 2n, -1n, "half_down", -37n],
    [75n, 2n, -1n, "down", -37n],
    [75n, 2n, -1n, "up", -38n],
    [1n, 3n, 0n, "up", 0n],
    [2500n, 1n, 1234n, "floor", 3_085_000n],
  ];
  it.each(rows)("%s/%s x %s rounded %s is %s", (n, d, q, mode, want) => {
    expect(Rate.fromFraction(n, d, { allowNegative: true }).times(q, mode)).toBe(want);
  });

  it("equals divRound of the exact product for every mode (any sign)", () => {
    fc.assert(fc.property(
      fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }), fc.bigInt({ min: 1n, max: 10n ** 12n }),
      fc.bigInt({ min: -(10n ** 6n), max: 10n ** 6n }), fc.constantFrom(...MODES),
      (n, d, q, mode) => {
        const r = Rate.fromFraction(n, d, { allowNegative: true });
        const e = r.exactTimes(q);
        return r.times(q, mode) === divRound(e.num, e.den, mode) && e.den === r.den;
      },
    ));
  });

  const invalid: Array<[string, () => unknown, string]> = [
    ["a result above int64", () => Rate.fromFraction(2n, 1n).times(INT64_MAX, "floor"), "amountNanos"],
    ["a result below int64", () => Rate.fromFraction(3n, 2n).times(INT64_MIN, "floor"), "amountNanos"],
    ["a quantity above int64", () => Rate.fromFraction(1n, 1n).times(INT64_MAX + 1n, "floor"), "quantity"],
    ["a number quantity", () => Rate.fromFraction(1n, 1n).times(5 as unknown as bigint, "floor"), "quantity"],
    ["an unknown mode (integer rate)", () => Rate.fromFraction(1n, 1n).times(5n, "round" as RoundingMode), "mode"],
    ["an unknown mode (fractional rate)", () => Rate.fromFraction(1n, 2n).times(5n, "round" as RoundingMode), "mode"],
    ["exactTimes of a quantity above int64", () => Rate.fromFraction(1n, 1n).exactTimes(INT64_MAX + 1n), "quantity"],
  ];
  it.each(invalid)("refuses %s with a MoneyError", (_name, fn, field) => expectMoneyError(fn, field));
});

describe("Rate.toDecimalString", () => {
  const rows: Array<[string, bigint | undefined, string]> = [
    ["2.5", 1_000_000n, "2500"],
    ["0.0375", 1_000_000n, "37.5"],
    ["0.00000015", undefined, "150"],
    ["0.0000000001", undefined, "0.1"],
    ["0.00000000000000000001", undefined, "0.00000000001"],
    ["0", undefined, "0"],
    ["-1.25", 1_000_000_000n, "-1.25"],
    ["1", 3n, "333333333.333333333333333333333"],
    ["1", 3_000_000_000n, "0.333333333333333333333333333333"],
    ["2", 3_000_000_000n, "0.666666666666666666666666666667"],
    ["0.000000001", 7n, "0.142857142857142857142857142857"],
    ["-1", 3n, "-333333333.333333333333333333333"],
    ["-0.000000002", 3n, "-0.666666666666666666666666666667"],
  ];
  it.each(rows)("prints %j per %s as %j nanos per unit", (s, per, want) => {
    const r = Rate.parse(s, "price", { perQuantity: per ?? 1n, allowNegative: true });
    expect(r.toDecimalString()).toBe(want);
  });

  it("is exact for every rate whose denominator divides a power of ten", () => {
    fc.assert(fc.property(fc.bigInt({ min: -(10n ** 25n), max: 10n ** 25n }), fc.nat(20), fc.nat(20), (n, a, b) => {
      const r = Rate.fromFraction(n, 2n ** BigInt(a) * 5n ** BigInt(b), { allowNegative: true });
      const s = r.toDecimalString();
      const [whole, frac = ""] = s.replace("-", "").split(".");
      const abs = BigInt((whole ?? "") + frac);
      const back = Rate.fromFraction(s.startsWith("-") ? -abs : abs, 10n ** BigInt(frac.length), { allowNegative: true });
      return back.num === r.num && back.den === r.den && !/e/i.test(s);
    }));
  });
});
