import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { INT64_MAX, INT64_MIN, MoneyError, type RoundingMode, currency, isUnitCode, roundToMinor } from "./index.js";

const MODES: RoundingMode[] = ["floor", "ceil", "down", "up", "half_up", "half_down", "half_even"];

describe("currency", () => {
  const rows: Array<[string, number, bigint]> = [
    ["USD", 2, 10_000_000n], ["EUR", 2, 10_000_000n], ["GBP", 2, 10_000_000n], ["JPY", 0, 1_000_000_000n],
    ["CHF", 2, 10_000_000n], ["CAD", 2, 10_000_000n], ["AUD", 2, 10_000_000n], ["CNY", 2, 10_000_000n],
    ["INR", 2, 10_000_000n], ["KRW", 0, 1_000_000_000n], ["BHD", 3, 1_000_000n], ["KWD", 3, 1_000_000n],
    ["CLF", 4, 100_000n],
  ];
  it.each(rows)("%s has %s minor units of %s nanos", (code, minor, per) => {
    expect(currency(code, "unit")).toEqual({ code, minorUnits: minor, nanosPerMinor: per });
  });

  it("returns frozen objects", () => {
    expect(Object.isFrozen(currency("USD", "unit"))).toBe(true);
  });

  const invalid: Array<[string, unknown]> = [
    ["an unknown code", "XYZ"], ["a lower-case code", "usd"], ["an empty string", ""], ["a padded code", " USD"],
    ["a credit type", "cr_tokens"], ["a number", 840], ["a long string", "U".repeat(1000)],
  ];
  it.each(invalid)("rejects %s with a MoneyError naming the field", (_name, code) => {
    try {
      currency(code as string, "price.unit");
      expect.unreachable("no error thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(MoneyError);
      expect((e as MoneyError).field).toBe("price.unit");
      expect((e as MoneyError).message.length).toBeLessThan(200);
    }
  });
});

describe("roundToMinor", () => {
  const rows: Array<[bigint, string, RoundingMode, bigint, bigint]> = [
    [47_340_750_000n, "USD", "half_even", 47_340_000_000n, 750_000n],
    [47_340_750_000n, "JPY", "half_even", 47_000_000_000n, 340_750_000n],
    [47_340_750_000n, "KWD", "half_even", 47_341_000_000n, -250_000n],
    [47_340_750_000n, "USD", "ceil", 47_350_000_000n, -9_250_000n],
    [3_685_000_000n, "USD", "half_even", 3_680_000_000n, 5_000_000n],   // 3.685 -> 3.68 (tie to even)
    [3_685_000_000n, "USD", "half_up", 3_690_000_000n, -5_000_000n],
    [-3_685_000_000n, "USD", "half_up", -3_690_000_000n, 5_000_000n],
    [-3_685_000_000n, "USD", "half_even", -3_680_000_000n, -5_000_000n],
    [-3_685_000_000n, "USD", "floor", -3_690_000_000n, 5_000_000n],
    [-3_685_000_000n, "USD", "down", -3_680_000_000n, -5_000_000n],
    [500_000_000n, "JPY", "half_even", 0n, 500_000_000n],
    [1_500_000_000n, "JPY", "half_even", 2_000_000_000n, -500_000_000n],
    [-1_500_000_000n, "KRW", "half_even", -2_000_000_000n, 500_000_000n],
    [150_000_000n, "USD", "half_even", 150_000_000n, 0n],
    [150n, "EUR", "half_even", 0n, 150n],
    [INT64_MAX, "USD", "floor", 9_223_372_036_850_000_000n, 4_775_807n],
  ];
  it.each(rows)("rounds %s nanos of %s (%s) to %s with residue %s", (v, code, mode, rounded, residue) => {
    const got = roundToMinor(v, code, mode);
    expect(got).toEqual({ roundedNanos: rounded, residueNanos: residue });
    expect(got.roundedNanos + got.residueNanos).toBe(v);
  });

  const invalid: Array<[string, () => unknown, string]> = [
    ["an unknown currency", () => roundToMinor(1n, "XYZ", "floor"), "code"],
    ["a credit type", () => roundToMinor(1n, "cr_tokens", "floor"), "code"],
    ["an unknown mode", () => roundToMinor(1n, "USD", "bankers" as RoundingMode), "mode"],
    ["a value above int64", () => roundToMinor(INT64_MAX + 1n, "USD", "floor"), "value"],
    ["a number value", () => roundToMinor(1 as unknown as bigint, "USD", "floor"), "value"],
    ["a rounding past INT64_MAX", () => roundToMinor(INT64_MAX, "USD", "ceil"), "roundedNanos"],
    ["a rounding past INT64_MIN", () => roundToMinor(INT64_MIN, "JPY", "floor"), "roundedNanos"],
  ];
  it.each(invalid)("refuses %s with a MoneyError", (_name, fn, field) => {
    try {
      fn();
      expect.unreachable("no error thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(MoneyError);
      expect((e as MoneyError).field).toBe(field);
    }
  });

  it("conserves every nano: rounded + residue == v, rounded is whole minor units, |residue| < one minor unit (property)", () => {
    fc.assert(fc.property(
      fc.oneof(fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }), fc.bigInt({ min: INT64_MIN / 2n, max: INT64_MAX / 2n })),
      fc.constantFrom("USD", "JPY", "KWD", "CLF", "EUR", "KRW"), fc.constantFrom(...MODES),
      (v, code, mode) => {
        const { roundedNanos, residueNanos } = roundToMinor(v, code, mode);
        const per = currency(code, "c").nanosPerMinor;
        const absRes = residueNanos < 0n ? -residueNanos : residueNanos;
        return roundedNanos + residueNanos === v && roundedNanos % per === 0n && absRes < per &&
          (!mode.startsWith("half_") || 2n * absRes <= per);
      },
    ), { numRuns: 1000 });
  });
});

describe("isUnitCode", () => {
  const rows: Array<[unknown, boolean]> = [
    ["USD", true], ["JPY", true], ["KWD", true], ["cr_tokens", true], ["cr_gpu_minutes_v2", true], ["cr_0", true],
    ["cr_" + "a".repeat(61), true],
    ["cr_" + "a".repeat(62), false], ["cr_", false], ["cr_Tokens", false], ["cr-tokens", false], ["tokens", false],
    ["usd", false], ["XYZ", false], ["", false], [" USD", false], ["USD ", false], ["cr_tokens\n", false],
    ["cr_t\u00f6kens", false], [undefined, false], [840, false],
  ];
  it.each(rows)("isUnitCode(%j) is %s", (s, want) => {
    expect(isUnitCode(s as string)).toBe(want);
  });
});
