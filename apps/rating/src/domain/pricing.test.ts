import { describe, expect, it } from "vitest";
import { compileCharge } from "./compile.js";
import { graduatedTotal, periodTotal, roundHalfEven, volumeTotal } from "./pricing.js";
import { billingPeriod, prorateChange } from "./period.js";
import { charge, usage } from "./fixtures.js";
import type { TierSpec } from "./types.js";

const B = 1_000_000_000n; // nanos per unit

function tier(upTo: string, amount: string, flatAmount = ""): TierSpec {
  return { upTo, unitPrice: { amount, perQuantity: "" }, flatAmount };
}

const u = usage("api.request", []);

describe("acceptance examples", () => {
  it("graduated tiers 0-1,000 at $0.01, 1,001-10,000 at $0.008, above at $0.005 price 15,000 requests at $107", () => {
    const c = compileCharge(charge("req", { kind: "graduated", tiers: [tier("1000", "0.01"), tier("10000", "0.008"), tier("0", "0.005")] }, { usage: u }), "c", "USD");
    expect(roundHalfEven(periodTotal(c, 15_000n))).toBe(107n * B);
  });

  it("volume tiers with a $10 flat fee price 65,000 calls at $49", () => {
    const tiers = [tier("10000", "0.0010", "10"), tier("50000", "0.0008", "10"), tier("100000", "0.0006", "10"), tier("0", "0.0004", "10")];
    const c = compileCharge(charge("calls", { kind: "volume", tiers }, { usage: u }), "c", "USD");
    expect(roundHalfEven(periodTotal(c, 65_000n))).toBe(49n * B);
  });

  it("package of $5 per 100 units with the first 100 free prices 201 units at $10", () => {
    const c = compileCharge(charge("pkg", { kind: "package", packageSize: "100", packageAmount: "5", freeQuantity: "100" }, { usage: u }), "c", "USD");
    expect(roundHalfEven(periodTotal(c, 201n))).toBe(10n * B);
    expect(roundHalfEven(periodTotal(c, 100n))).toBe(0n);
    expect(roundHalfEven(periodTotal(c, 101n))).toBe(5n * B);
  });

  it("proration of $20/month to $50/month on day 15 of a 30-day cycle nets $15", () => {
    const start = Date.UTC(2026, 10, 1); // November: 30 days
    const p = billingPeriod(start, "UTC", 1, start + 86_400_000);
    expect(p.endMs - p.startMs).toBe(30 * 86_400_000);
    const change = start + 15 * 86_400_000; // after 15 days, 15 remain
    const r = prorateChange(p, change, { num: 20n * B, den: 1n }, { num: 50n * B, den: 1n });
    expect(r).toEqual({ creditNanos: -10n * B, chargeNanos: 25n * B, netNanos: 15n * B });
  });
});

describe("graduated and volume totals", () => {
  const tiers = compileCharge(charge("g", { kind: "graduated", tiers: [tier("10", "1", "5"), tier("0", "0.5")] }, { usage: u }), "c", "USD");
  const t = (tiers.pricing as { tiers: Parameters<typeof graduatedTotal>[0] }).tiers;
  it.each([
    [0n, 0n],
    [1n, 6n * B],
    [10n, 15n * B],
    [11n, 15n * B + B / 2n],
  ])("graduated with a flat fee on the first tier prices %s units at %s nanos", (q, want) => {
    expect(roundHalfEven(graduatedTotal(t, q))).toBe(want);
  });
  it.each([
    [0n, 0n],
    [10n, 15n * B],
    [11n, 5n * B + B / 2n], // all 11 at 0.5, no flat fee in the second tier
  ])("volume prices %s units at %s nanos", (q, want) => {
    expect(roundHalfEven(volumeTotal(t, q))).toBe(want);
  });
});

describe("included allowance", () => {
  it("per-unit with 1,000 included units prices only the units above the allowance", () => {
    const c = compileCharge(charge("x", { kind: "per_unit", unitPrice: { amount: "0.002", perQuantity: "" } }, { usage: u, included: "1000" }), "c", "USD");
    expect(c.mode).toBe("period");
    expect(roundHalfEven(periodTotal(c, 999n))).toBe(0n);
    expect(roundHalfEven(periodTotal(c, 1500n))).toBe(1_000_000_000n);
  });
});
