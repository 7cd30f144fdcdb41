import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { INT64_MAX, INT64_MIN, MoneyError, type RoundingMode, formatNanos, parseDecimalNanos } from "./index.js";

describe("parseDecimalNanos", () => {
  const valid: Array<[string, bigint]> = [
    ["0.00000015", 150n],
    ["0", 0n],
    ["-0", 0n],
    ["0.0", 0n],
    ["1", 1_000_000_000n],
    ["1.5", 1_500_000_000n],
    ["-1.5", -1_500_000_000n],
    ["0.000000001", 1n],
    ["-0.000000001", -1n],
    ["2.50", 2_500_000_000n],
    ["47.34075", 47_340_750_000n],
    ["0.15", 150_000_000n],
    ["1000000000", 10n ** 18n],
    ["9223372036.854775807", INT64_MAX],
    ["-9223372036.854775808", INT64_MIN],
  ];
  it.each(valid)("parses %j as %s nanos", (s, want) => {
    expect(parseDecimalNanos(s, "amount")).toBe(want);
  });

  const invalid: Array<[string, unknown, RegExp]> = [
    ["empty", "", /plain decimal/],
    ["only a minus", "-", /plain decimal/],
    ["exponent", "1e5", /plain decimal/],
    ["upper-case exponent", "1E-9", /plain decimal/],
    ["trailing point", "1.", /plain decimal/],
    ["leading point", ".5", /plain decimal/],
    ["minus and leading point", "-.5", /plain decimal/],
    ["double minus", "--1", /plain decimal/],
    ["plus sign", "+1", /plain decimal/],
    ["leading space", " 1", /plain decimal/],
    ["trailing space", "1 ", /plain decimal/],
    ["inner space", "1 000", /plain decimal/],
    ["trailing newline", "1\n", /plain decimal/],
    ["thousands comma", "1,000", /plain decimal/],
    ["decimal comma", "1,5", /plain decimal/],
    ["underscore", "1_000", /plain decimal/],
    ["leading zero", "01", /plain decimal/],
    ["leading zero with fraction", "00.5", /plain decimal/],
    ["two points", "1.2.3", /plain decimal/],
    ["hex", "0x10", /plain decimal/],
    ["Infinity", "Infinity", /plain decimal/],
    ["NaN", "NaN", /plain decimal/],
    ["Arabic-Indic digits", "\u0661", /plain decimal/],
    ["full-width digits", "\uff11", /plain decimal/],
    ["10 fractional digits", "0.0000000015", /at most 9/],
    ["10 fractional digits, all trailing zeros", "1.0000000000", /at most 9/],
    ["above int64", "9223372036.854775808", /int64/],
    ["below int64", "-9223372036.854775809", /int64/],
    ["65 characters", "1".repeat(65), /at most 64 characters/],
    ["a number", 1.5, /decimal string/],
    ["undefined", undefined, /decimal string/],
  ];
  it.each(invalid)("rejects %s with a MoneyError naming the field", (_name, s, rule) => {
    try {
      parseDecimalNanos(s as string, "unit_price");
      expect.unreachable("no error thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(MoneyError);
      expect((e as MoneyError).field).toBe("unit_price");
      expect((e as MoneyError).rule).toMatch(rule);
      expect((e as MoneyError).message).toMatch(/^unit_price: /);
    }
  });

  const rounded: Array<[string, RoundingMode, bigint]> = [
    ["0.0000000015", "half_even", 2n],
    ["0.0000000025", "half_even", 2n],
    ["0.0000000025", "half_up", 3n],
    ["0.0000000025", "half_down", 2n],
    ["0.0000000015", "floor", 1n],
    ["0.0000000011", "ceil", 2n],
    ["-0.0000000015", "half_even", -2n],
    ["-0.0000000025", "half_even", -2n],
    ["-0.0000000025", "half_up", -3n],
    ["-0.0000000011", "floor", -2n],
    ["-0.0000000019", "ceil", -1n],
    ["-0.0000000019", "down", -1n],
    ["-0.0000000011", "up", -2n],
    ["1.0000000000", "half_even", 1_000_000_000n],
    ["0.00000000049999999999999", "half_up", 0n],
    ["0.12345678912345", "down", 123_456_789n],
    ["0.00000015", "floor", 150n],
  ];
  it.each(rounded)("parses %j with mode %s as %s nanos", (s, mode, want) => {
    expect(parseDecimalNanos(s, "amount", mode)).toBe(want);
  });

  it("rejects an unknown rounding mode even when no rounding is needed", () => {
    expect(() => parseDecimalNanos("1", "amount", "nearest" as RoundingMode)).toThrow(/mode: must be one of/);
  });
});

describe("formatNanos", () => {
  const rows: Array<[bigint, number | undefined, string]> = [
    [150n, undefined, "0.00000015"],
    [0n, undefined, "0"],
    [1n, undefined, "0.000000001"],
    [-1n, undefined, "-0.000000001"],
    [1_000_000_000n, undefined, "1"],
    [1_500_000_000n, undefined, "1.5"],
    [-1_500_000_000n, undefined, "-1.5"],
    [1_000_000_000n, 2, "1.00"],
    [1_500_000_000n, 2, "1.50"],
    [1_234_567_891n, 2, "1.234567891"],
    [0n, 2, "0.00"],
    [-5n, 9, "-0.000000005"],
    [47_340_000_000n, 2, "47.34"],
    [150_000_000n, 2, "0.15"],
    [INT64_MAX, undefined, "9223372036.854775807"],
    [INT64_MIN, undefined, "-9223372036.854775808"],
    [10n ** 30n, 0, "1000000000000000000000"],
  ];
  it.each(rows)("formats %s nanos (fractionDigitsMin %s) as %j", (v, min, want) => {
    expect(formatNanos(v, min === undefined ? undefined : { fractionDigitsMin: min })).toBe(want);
  });

  const invalid: Array<[string, () => unknown, string]> = [
    ["fractionDigitsMin 10", () => formatNanos(1n, { fractionDigitsMin: 10 }), "fractionDigitsMin"],
    ["fractionDigitsMin -1", () => formatNanos(1n, { fractionDigitsMin: -1 }), "fractionDigitsMin"],
    ["fractionDigitsMin 1.5", () => formatNanos(1n, { fractionDigitsMin: 1.5 }), "fractionDigitsMin"],
    ["a number value", () => formatNanos(1 as unknown as bigint), "value"],
  ];
  it.each(invalid)("rejects %s", (_name, fn, field) => {
    try {
      fn();
      expect.unreachable("no error thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(MoneyError);
      expect((e as MoneyError).field).toBe(field);
    }
  });
});

describe("parse/format round trip (conservation)", () => {
  const i64 = fc.bigInt({ min: INT64_MIN, max: INT64_MAX });
  const small = fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n });
  it("parse(format(v)) == v for every int64 and every fractionDigitsMin", () => {
    fc.assert(fc.property(fc.oneof(i64, small), fc.integer({ min: 0, max: 9 }), (v, min) =>
      parseDecimalNanos(formatNanos(v, { fractionDigitsMin: min }), "x") === v,
    ), { numRuns: 2000 });
  });

  it("format(parse(s)) == s for every canonical decimal string", () => {
    const canonical = fc.tuple(
      fc.boolean(),
      fc.bigInt({ min: 0n, max: 9_223_372_035n }),
      fc.bigInt({ min: 0n, max: 999_999_999n }),
    ).map(([neg, whole, frac]) => {
      const f = frac.toString().padStart(9, "0").replace(/0+$/, "");
      const body = whole.toString() + (f.length > 0 ? "." + f : "");
      return neg && body !== "0" ? "-" + body : body;
    });
    fc.assert(fc.property(canonical, (s) => formatNanos(parseDecimalNanos(s, "x")) === s), { numRuns: 2000 });
  });

  it("parsing with any mode lands on a neighbour of the exact value (never more than one nano off)", () => {
    fc.assert(fc.property(
      fc.bigInt({ min: -(9n * 10n ** 19n), max: 9n * 10n ** 19n }), // tenths of a nano, within int64 after rounding
      fc.constantFrom<RoundingMode>("floor", "ceil", "down", "up", "half_up", "half_down", "half_even"),
      (tenths, mode) => {
        // tenths of a nano: value = tenths / 10 nanos, written with 10 fractional digits
        const neg = tenths < 0n;
        const abs = neg ? -tenths : tenths;
        const s = (neg ? "-" : "") + (abs / 10n ** 10n).toString() + "." + (abs % 10n ** 10n).toString().padStart(10, "0");
        const got = parseDecimalNanos(s, "x", mode);
        return got * 10n >= tenths - 10n && got * 10n <= tenths + 10n;
      },
    ));
  });
});
