import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  AMOUNT_NANOS_MAX, INT64_MAX, INT64_MIN, MoneyError, NANOS_PER_UNIT,
  addNanos, amountNanos, mulNanos, toNanos,
} from "./index.js";

/** Runs fn and returns the MoneyError it throws (fails the test if it throws nothing else). */
function moneyError(fn: () => unknown): MoneyError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(MoneyError);
    return e as MoneyError;
  }
  throw new Error("expected a MoneyError, nothing was thrown");
}

describe("constants", () => {
  it("have the documented values", () => {
    expect(NANOS_PER_UNIT).toBe(1_000_000_000n);
    expect(AMOUNT_NANOS_MAX).toBe(10n ** 18n);
    expect(INT64_MAX).toBe(2n ** 63n - 1n);
    expect(INT64_MIN).toBe(-(2n ** 63n));
  });
});

describe("MoneyError", () => {
  it("names the field and the rule in its message", () => {
    const e = new MoneyError("amount_nanos", "must be > 0");
    expect(e.field).toBe("amount_nanos");
    expect(e.rule).toBe("must be > 0");
    expect(e.message).toBe("amount_nanos: must be > 0");
    expect(e.name).toBe("MoneyError");
    expect(e).toBeInstanceOf(Error);
  });
});

describe("toNanos", () => {
  const valid: Array<[bigint | string | number, bigint]> = [
    [0n, 0n], [150n, 150n], [-150n, -150n], [INT64_MAX, INT64_MAX], [INT64_MIN, INT64_MIN],
    ["0", 0n], ["-0", 0n], ["150", 150n], ["-150", -150n],
    ["9223372036854775807", INT64_MAX], ["-9223372036854775808", INT64_MIN],
    [0, 0n], [150, 150n], [-150, -150n], [Number.MAX_SAFE_INTEGER, 9007199254740991n], [Number.MIN_SAFE_INTEGER, -9007199254740991n],
  ];
  it.each(valid)("accepts %s as %s nanos", (input, want) => {
    expect(toNanos(input, "amount_nanos")).toBe(want);
  });

  const invalid: Array<[string, unknown]> = [
    ["int64 overflow (bigint)", INT64_MAX + 1n],
    ["int64 underflow (bigint)", INT64_MIN - 1n],
    ["int64 overflow (string)", "9223372036854775808"],
    ["int64 underflow (string)", "-9223372036854775809"],
    ["a string of 21 characters", "100000000000000000000"],
    ["empty string", ""],
    ["whitespace", " 1"],
    ["trailing newline", "1\n"],
    ["decimal point", "1.5"],
    ["exponent", "1e5"],
    ["plus sign", "+1"],
    ["double minus", "--1"],
    ["leading zero", "01"],
    ["hex", "0x10"],
    ["a fraction number", 1.5],
    ["an unsafe number", 2 ** 53],
    ["NaN", Number.NaN],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["null", null],
    ["an object", {}],
  ];
  it.each(invalid)("rejects %s with a MoneyError naming the field", (_name, input) => {
    const e = moneyError(() => toNanos(input as bigint, "amount_nanos"));
    expect(e.field).toBe("amount_nanos");
    expect(e.message.startsWith("amount_nanos: ")).toBe(true);
  });

  it("round-trips every int64 through its decimal string", () => {
    fc.assert(fc.property(fc.bigInt({ min: INT64_MIN, max: INT64_MAX }), (v) => toNanos(v.toString(), "x") === v));
  });
});

describe("amountNanos", () => {
  const valid: Array<[bigint, { allowZero?: boolean; allowNegative?: boolean } | undefined]> = [
    [1n, undefined], [AMOUNT_NANOS_MAX, undefined], [0n, { allowZero: true }],
    [-1n, { allowNegative: true }], [-AMOUNT_NANOS_MAX, { allowNegative: true }],
    [0n, { allowZero: true, allowNegative: true }],
  ];
  it.each(valid)("accepts %s with options %o", (v, opts) => {
    expect(amountNanos(v, "amount_nanos", opts)).toBe(v);
  });

  const invalid: Array<[string, unknown, { allowZero?: boolean; allowNegative?: boolean } | undefined, RegExp]> = [
    ["zero by default", 0n, undefined, /zero/],
    ["negative by default", -1n, undefined, /negative/],
    ["negative with only allowZero", -1n, { allowZero: true }, /negative/],
    ["zero with only allowNegative", 0n, { allowNegative: true }, /zero/],
    ["above AMOUNT_NANOS_MAX", AMOUNT_NANOS_MAX + 1n, undefined, /AMOUNT_NANOS_MAX/],
    ["below -AMOUNT_NANOS_MAX", -AMOUNT_NANOS_MAX - 1n, { allowNegative: true }, /AMOUNT_NANOS_MAX/],
    ["a number", 5, undefined, /bigint/],
  ];
  it.each(invalid)("rejects %s", (_name, v, opts, rule) => {
    const e = moneyError(() => amountNanos(v as bigint, "amount_nanos", opts));
    expect(e.field).toBe("amount_nanos");
    expect(e.rule).toMatch(rule);
  });
});

describe("addNanos and mulNanos", () => {
  const adds: Array<[bigint, bigint, bigint]> = [
    [1n, 2n, 3n], [-5n, 3n, -2n], [INT64_MAX, 0n, INT64_MAX], [INT64_MAX, INT64_MIN, -1n], [INT64_MIN, 0n, INT64_MIN],
  ];
  it.each(adds)("addNanos(%s, %s) is %s", (a, b, want) => {
    expect(addNanos(a, b, "sum")).toBe(want);
  });
  const muls: Array<[bigint, bigint, bigint]> = [
    [3n, 4n, 12n], [-3n, 4n, -12n], [-3n, -4n, 12n], [INT64_MAX, 1n, INT64_MAX], [INT64_MIN, 1n, INT64_MIN], [0n, INT64_MAX, 0n],
  ];
  it.each(muls)("mulNanos(%s, %s) is %s", (a, b, want) => {
    expect(mulNanos(a, b, "product")).toBe(want);
  });

  const overflows: Array<[string, () => unknown, string]> = [
    ["INT64_MAX + 1", () => addNanos(INT64_MAX, 1n, "balance_nanos"), "balance_nanos"],
    ["INT64_MIN - 1", () => addNanos(INT64_MIN, -1n, "balance_nanos"), "balance_nanos"],
    ["INT64_MAX * 2", () => mulNanos(INT64_MAX, 2n, "line_nanos"), "line_nanos"],
    ["INT64_MIN * -1", () => mulNanos(INT64_MIN, -1n, "line_nanos"), "line_nanos"],
    ["a number operand", () => addNanos(1 as unknown as bigint, 1n, "balance_nanos"), "balance_nanos"],
    ["a number factor", () => mulNanos(1n, 2 as unknown as bigint, "line_nanos"), "line_nanos"],
  ];
  it.each(overflows)("refuses %s with a MoneyError (never wraps)", (_name, fn, field) => {
    expect(moneyError(fn).field).toBe(field);
  });

  it("addNanos equals exact addition whenever it returns, and throws exactly when int64 would overflow", () => {
    const i64 = fc.bigInt({ min: INT64_MIN, max: INT64_MAX });
    fc.assert(fc.property(i64, i64, (a, b) => {
      const exact = a + b;
      const fits = exact <= INT64_MAX && exact >= INT64_MIN;
      let got: bigint | undefined;
      try { got = addNanos(a, b, "x"); } catch (e) { if (!(e instanceof MoneyError)) throw e; }
      return fits ? got === exact : got === undefined;
    }));
  });
});
