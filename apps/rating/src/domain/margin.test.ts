import { describe, expect, it } from "vitest";
import { evaluateRule, marginBps, type WindowSum } from "./margin.js";

const sum = (model: string, price: bigint, cost: bigint): WindowSum => ({ customerId: "c", model, unit: "USD", costUnit: "USD", priceNanos: price, costNanos: cost });

describe("margin", () => {
  it.each([
    [100n, 25n, 7500n],
    [100n, 100n, 0n],
    [100n, 150n, -5000n],
    [0n, 0n, 0n],
    [0n, 10n, -10000n],
    [3n, 1n, 6666n],
  ])("revenue %s and cost %s give %s bps", (r, c, bps) => {
    expect(marginBps(r, c)).toBe(bps);
  });

  const rule = { ruleId: "r", kind: "margin_below" as const, thresholdBps: 2000n, windowSeconds: 3600, customerId: "", model: "" };

  it("raises a margin alert below the threshold with a deterministic id per window slot", () => {
    const a = evaluateRule(rule, [sum("big", 100n, 90n)], 7_200_000);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ alertId: "alr_r_c_2", observedBps: 1000n, revenueNanos: 100n, costNanos: 90n });
    expect(evaluateRule(rule, [sum("big", 100n, 70n)], 7_200_000)).toEqual([]);
  });

  it("raises a cost-mix alert when an expensive model's share of cost passes the threshold", () => {
    const mix = { ...rule, kind: "cost_mix_shift" as const, model: "big", thresholdBps: 5000n };
    expect(evaluateRule(mix, [sum("big", 10n, 60n), sum("small", 100n, 40n)], 0)[0]?.observedBps).toBe(6000n);
    expect(evaluateRule(mix, [sum("big", 10n, 40n), sum("small", 100n, 60n)], 0)).toEqual([]);
  });
});

describe("margin across currencies", () => {
  const rule = { ruleId: "r", kind: "margin_below" as const, thresholdBps: 2000n, windowSeconds: 3600, customerId: "", model: "" };
  const row = (unit: string, price: bigint, cost: bigint): WindowSum => ({ customerId: "c", model: "big", unit, costUnit: "USD", priceNanos: price, costNanos: cost });

  it("leaves out usage priced in another currency than its cost (EUR 100 of revenue for USD 10 of cost fired a -10,000 bps alert)", () => {
    expect(evaluateRule(rule, [row("EUR", 100_000_000_000n, 10_000_000_000n)], 3_600_000)).toEqual([]);
    // The same-currency rows of the customer still decide.
    const a = evaluateRule(rule, [row("EUR", 100_000_000_000n, 10_000_000_000n), row("USD", 1_000n, 900n)], 3_600_000);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ observedBps: 1000n, revenueNanos: 1_000n, costNanos: 900n, unit: "USD" });
  });

  it("raises no margin alert for a customer billed only in another currency, its unpriced usage's cost included", () => {
    expect(evaluateRule(rule, [row("EUR", 1_000_000_000_000n, 100_000_000_000n), row("", 0n, 10_000_000n)], 3_600_000)).toEqual([]);
  });

  it("still counts the cost of unpriced usage (no revenue, no unit) against the margin", () => {
    const a = evaluateRule(rule, [row("", 0n, 900n), row("USD", 1_000n, 0n)], 3_600_000);
    expect(a[0]).toMatchObject({ observedBps: 1000n, revenueNanos: 1_000n, costNanos: 900n });
  });
});

describe("margin of credit-priced usage", () => {
  const rule = { ruleId: "r", kind: "margin_below" as const, thresholdBps: 2000n, windowSeconds: 3600, customerId: "", model: "" };
  // 50 credits burned, worth $0.50 at the credit type's exchange rate; cost $0.001.
  const credits = (valueUnit: string, valueNanos: bigint, costNanos = 1_000_000n): WindowSum => ({ customerId: "c", model: "big", unit: "cr_credits", costUnit: "USD", priceNanos: 50_000_000_000n, costNanos, valueNanos, valueUnit });

  it("counts the credits' currency value as revenue: $0.50 of credits for $0.001 of cost raises no margin alert", () => {
    expect(evaluateRule(rule, [credits("USD", 500_000_000n)], 7_200_000)).toEqual([]);
  });

  it("raises a margin alert from the credits' value when it is below the threshold, beside currency-priced revenue", () => {
    const a = evaluateRule(rule, [credits("USD", 1_000_000n, 950_000n), sum("small", 1_000_000n, 700_000n)], 7_200_000);
    expect(a).toHaveLength(1);
    // (2,000,000 - 1,650,000) / 2,000,000 = 1,750 bps
    expect(a[0]).toMatchObject({ revenueNanos: 2_000_000n, costNanos: 1_650_000n, observedBps: 1750n, unit: "USD" });
  });

  it("leaves credit-priced usage whose value is not known in the cost currency out of the margin (no false alert)", () => {
    expect(evaluateRule(rule, [credits("", 0n)], 7_200_000)).toEqual([]);
    expect(evaluateRule(rule, [credits("EUR", 500_000_000n)], 7_200_000)).toEqual([]);
    // ... while a cost-mix rule still counts its cost.
    const mix = { ...rule, kind: "cost_mix_shift" as const, model: "big", thresholdBps: 5000n };
    expect(evaluateRule(mix, [credits("", 0n), sum("small", 100n, 100_000n)], 0)[0]?.observedBps).toBe(9090n);
  });
});
