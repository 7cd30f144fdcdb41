import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { INT64_MAX, INT64_MIN, MoneyError, allocate } from "./index.js";

describe("allocate", () => {
  const rows: Array<[bigint, bigint[], bigint[]]> = [
    [100n, [1n, 1n, 1n], [34n, 33n, 33n]],
    [-100n, [1n, 1n, 1n], [-34n, -33n, -33n]],
    [101n, [1n, 1n, 1n], [34n, 34n, 33n]],
    [2n, [1n, 1n, 1n], [1n, 1n, 0n]],
    [10n, [3n, 7n], [3n, 7n]],
    [5n, [1n, 2n], [2n, 3n]], // 1.67 / 3.33 -> remainders 2/3 and 1/3: the first gets the extra nano
    [1n, [1n, 1n], [1n, 0n]], // a tie goes to the lowest index
    [1n, [0n, 1n, 1n], [0n, 1n, 0n]],
    [7n, [0n, 5n, 0n], [0n, 7n, 0n]],
    [0n, [1n, 2n, 3n], [0n, 0n, 0n]],
    [3n, [1n], [3n]],
    [1_000_000_000n, [1n, 1n, 1n, 1n, 1n, 1n, 1n], [142857143n, 142857143n, 142857143n, 142857143n, 142857143n, 142857143n, 142857142n]],
    [10n, [1n, 98n, 1n], [0n, 10n, 0n]],  // 0.1 / 9.8 / 0.1 -> 9.8 has the largest remainder
    [INT64_MAX, [1n, 1n], [4611686018427387904n, 4611686018427387903n]],
    [INT64_MIN, [1n, 1n], [-4611686018427387904n, -4611686018427387904n]],
    [INT64_MAX, [INT64_MAX, INT64_MAX, 1n], [4611686018427387903n, 4611686018427387903n, 1n]], // exact: k+0.25, k+0.25, 0.5
  ];
  it.each(rows)("splits %s by %o as %o", (total, weights, want) => {
    const got = allocate(total, weights);
    expect(got).toEqual(want);
    expect(got.reduce((a, b) => a + b, 0n)).toBe(total);
  });

  const invalid: Array<[string, unknown, unknown, string, RegExp]> = [
    ["no weights", 10n, [], "fee.weights", /non-empty/],
    ["weights that sum to zero", 10n, [0n, 0n], "fee.weights", /positive sum/],
    ["a negative weight", 10n, [1n, -1n, 5n], "fee.weights[1]", />= 0/],
    ["a number weight", 10n, [1n, 2], "fee.weights[1]", /bigint/],
    ["a weights value that is not an array", 10n, "1,2", "fee.weights", /non-empty/],
    ["100,001 weights", 10n, new Array(100_001).fill(1n), "fee.weights", /at most 100000/],
    ["a number total", 10, [1n], "fee", /bigint/],
    ["a total above int64", INT64_MAX + 1n, [1n], "fee", /int64/],
    ["a total below int64", INT64_MIN - 1n, [1n], "fee", /int64/],
  ];
  it.each(invalid)("rejects %s with a MoneyError naming the field", (_name, total, weights, field, rule) => {
    try {
      allocate(total as bigint, weights as bigint[], "fee");
      expect.unreachable("no error thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(MoneyError);
      expect((e as MoneyError).field).toBe(field);
      expect((e as MoneyError).rule).toMatch(rule);
    }
  });

  it("names the total 'total' and the weights 'total.weights' when no field is given", () => {
    expect(() => allocate(1n, [])).toThrow(/^total\.weights: /);
  });

  it("accepts ALLOCATE_WEIGHTS_MAX (100,000) weights", () => {
    const got = allocate(1_000_000n, new Array<bigint>(100_000).fill(1n));
    expect(got.length).toBe(100_000);
    expect(got.reduce((a, b) => a + b, 0n)).toBe(1_000_000n);
  });

  /** The largest-remainder answer computed the slow, obvious way: hand out one nano at a time. */
  function reference(total: bigint, weights: bigint[]): bigint[] {
    const sum = weights.reduce((a, b) => a + b, 0n);
    const t = total < 0n ? -total : total;
    const shares = weights.map((w) => (t * w) / sum);
    const rems = weights.map((w) => (t * w) % sum);
    let left = t - shares.reduce((a, b) => a + b, 0n);
    const taken = new Set<number>();
    while (left > 0n) {
      let best = -1;
      for (let i = 0; i < weights.length; i++) {
        if (taken.has(i)) continue;
        if (best < 0 || (rems[i] as bigint) > (rems[best] as bigint)) best = i;
      }
      taken.add(best);
      shares[best] = (shares[best] as bigint) + 1n;
      left--;
    }
    return total < 0n ? shares.map((s) => -s) : shares;
  }

  const weightsArb = fc.array(fc.oneof(fc.bigInt({ min: 0n, max: 10n }), fc.bigInt({ min: 0n, max: 10n ** 12n })), { minLength: 1, maxLength: 30 })
    .filter((ws) => ws.some((w) => w > 0n));
  const totalArb = fc.oneof(fc.bigInt({ min: -1000n, max: 1000n }), fc.bigInt({ min: INT64_MIN, max: INT64_MAX }));

  it("conserves the total and gives each share floor(total*w/W) or one more in magnitude (property)", () => {
    fc.assert(fc.property(totalArb, weightsArb, (total, weights) => {
      const got = allocate(total, weights);
      const sum = weights.reduce((a, b) => a + b, 0n);
      const t = total < 0n ? -total : total;
      if (got.reduce((a, b) => a + b, 0n) !== total || got.length !== weights.length) return false;
      return got.every((g, i) => {
        const mag = g < 0n ? -g : g;
        const floor = (t * (weights[i] as bigint)) / sum;
        if ((weights[i] as bigint) === 0n && g !== 0n) return false;
        return (mag === floor || mag === floor + 1n) && (total >= 0n ? g >= 0n : g <= 0n);
      });
    }), { numRuns: 500 });
  });

  it("matches the one-nano-at-a-time reference, ties broken by lowest index (property)", () => {
    fc.assert(fc.property(fc.bigInt({ min: -500n, max: 500n }), weightsArb, (total, weights) => {
      const got = allocate(total, weights);
      const want = reference(total, weights);
      return got.every((g, i) => g === want[i]);
    }), { numRuns: 500 });
  });

  it("is deterministic and does not modify the weights", () => {
    const weights = [3n, 1n, 4n, 1n, 5n];
    const a = allocate(1234567n, weights);
    expect(allocate(1234567n, weights)).toEqual(a);
    expect(weights).toEqual([3n, 1n, 4n, 1n, 5n]);
  });
});
