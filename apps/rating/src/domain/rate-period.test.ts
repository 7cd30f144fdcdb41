import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compilePlanVersion } from "./compile.js";
import { CostCatalog } from "./cost-catalog.js";
import { billingPeriod } from "./period.js";
import { ratePeriod, usageBoundaries } from "./rate-period.js";
import { TenantCatalog } from "./rate-event.js";
import { charge, usage, version } from "./fixtures.js";
import { RatingError } from "./errors.js";
import type { PlanVersionSpec, PriceOverride, PricingSpec, Subscription } from "./types.js";

const B = 1_000_000_000n;
const DAY = 86_400_000;
const NOV = Date.UTC(2026, 10, 1); // a 30-day month

function catalog(versions: Array<[string, PlanVersionSpec]>, subs: Subscription[], overrides: PriceOverride[] = []): TenantCatalog {
  return new TenantCatalog({
    tenant: "t",
    customers: [{ customerId: "c", name: "", currency: "USD", billingAnchorMs: NOV, timeZone: "UTC", createTimeMs: NOV }],
    subscriptions: subs,
    versions: versions.map(([planId, v]) => ({ planId, version: compilePlanVersion(v, "v") })),
    overrides,
    costs: new CostCatalog([]),
  });
}

describe("ratePeriod", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);

  it("prorates a $20 to $50 plan change on day 15 of 30 into $10 + $25 for the period", () => {
    const basic = version([charge("base", { kind: "flat", amount: "20" })]);
    const pro = version([charge("base", { kind: "flat", amount: "50" })]);
    const sub: Subscription = {
      subscriptionId: "s",
      customerId: "c",
      startMs: NOV,
      endMs: null,
      seatChanges: [],
      phases: [
        { planId: "basic", planVersion: 1, startMs: NOV, endMs: NOV + 15 * DAY },
        { planId: "pro", planVersion: 1, startMs: NOV + 15 * DAY, endMs: null },
      ],
    };
    const cat = catalog([["basic", basic], ["pro", pro]], [sub]);
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, []);
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["flat", 10n * B], ["flat", 25n * B]]);
    expect(r.totalNanos).toBe(35n * B);
  });

  it("prorates seats by the millisecond across seat changes", () => {
    const v = version([charge("seats", { kind: "seats", perSeatAmount: "30" })]);
    const sub: Subscription = {
      subscriptionId: "s",
      customerId: "c",
      startMs: NOV,
      endMs: null,
      phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }],
      seatChanges: [
        { changeId: "initial", seats: 2, effectiveMs: NOV },
        { changeId: "up", seats: 5, effectiveMs: NOV + 10 * DAY },
      ],
    };
    const cat = catalog([["p", v]], [sub]);
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, []);
    // 2 seats x 10/30 x $30 = $20; 5 seats x 20/30 x $30 = $100
    expect(r.lines.map((l) => [l.quantity, l.amountNanos])).toEqual([[2n, 20n * B], [5n, 100n * B]]);
  });

  it("prices period-mode usage on the period total, trues up to the minimum and applies the cap", () => {
    const tiers = [
      { upTo: "1000", unitPrice: { amount: "0.01", perQuantity: "" }, flatAmount: "" },
      { upTo: "10000", unitPrice: { amount: "0.008", perQuantity: "" }, flatAmount: "" },
      { upTo: "", unitPrice: { amount: "0.005", perQuantity: "" }, flatAmount: "" },
    ];
    const sub: Subscription = { subscriptionId: "s", customerId: "c", startMs: NOV, endMs: null, seatChanges: [], phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }] };
    const withMin = version([charge("req", { kind: "graduated", tiers }, { usage: usage("api", ["n"]) })], { minimumCommitmentAmount: "150" });
    let cat = catalog([["p", withMin]], [sub]);
    let r = ratePeriod(cat, cat.customer("c")!, [sub], period, [{ chargeId: "req", unit: "USD", quantity: 15_000n, bookedNanos: 106n * B, costNanos: 0n }]);
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["usage", 107n * B], ["minimum_true_up", 43n * B]]);
    expect(r.totalNanos).toBe(150n * B);
    const withCap = version([charge("req", { kind: "graduated", tiers }, { usage: usage("api", ["n"]) })], { spendingCapAmount: "100" });
    cat = catalog([["p", withCap]], [sub]);
    r = ratePeriod(cat, cat.customer("c")!, [sub], period, [{ chargeId: "req", unit: "USD", quantity: 15_000n, bookedNanos: 107n * B, costNanos: 0n }]);
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["usage", 107n * B], ["cap_adjustment", -7n * B]]);
    expect(r.totalNanos).toBe(100n * B);
  });
});

describe("ratePeriod with two subscriptions billing the same usage charge id", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const vol = (price: string) => version([charge("req", { kind: "volume", tiers: [{ upTo: "", unitPrice: { amount: price, perQuantity: "" }, flatAmount: "" }] }, { usage: usage("api", ["n"]) })]);
  const sub = (subscriptionId: string, planId: string, startMs: number): Subscription => ({ subscriptionId, customerId: "c", startMs, endMs: null, seatChanges: [], phases: [{ planId, planVersion: 1, startMs, endMs: null }] });

  it("prices the period total with the first subscription's charge (by start time, then id), as rating its events did", () => {
    // sub_b starts with sub_a and is listed first; sub_0 starts a second later: sub_a rates the events.
    const cat = catalog([["a", vol("0.01")], ["b", vol("0.02")], ["z", vol("0.05")]], [sub("sub_b", "b", NOV), sub("sub_0", "z", NOV + 1000), sub("sub_a", "a", NOV)]);
    const subs = cat.subscriptions("c");
    expect(subs.map((s) => s.subscriptionId)).toEqual(["sub_a", "sub_b", "sub_0"]);
    const r = ratePeriod(cat, cat.customer("c")!, subs, period, [{ chargeId: "req", unit: "USD", quantity: 1000n, bookedNanos: 10n * B, costNanos: 0n }]);
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["usage", 10n * B]]);
  });
});

describe("ratePeriod across a mid-period plan migration (period-priced usage)", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const MID = NOV + 15 * DAY;
  // basic: graduated 0-1,000 at $0.01, 1,000-10,000 at $0.008, above at $0.005.
  // pro: graduated 0-5,000 at $0.004, above at $0.002, 2,000 units included.
  const tier = (upTo: string, amount: string) => ({ upTo, unitPrice: { amount, perQuantity: "" }, flatAmount: "" });
  const basic = version([charge("req", { kind: "graduated", tiers: [tier("1000", "0.01"), tier("10000", "0.008"), tier("", "0.005")] }, { usage: usage("api", ["n"]) })]);
  const pro = version([charge("req", { kind: "graduated", tiers: [tier("5000", "0.004"), tier("", "0.002")] }, { usage: usage("api", ["n"]), included: "2000" })]);
  const sub: Subscription = {
    subscriptionId: "s",
    customerId: "c",
    startMs: NOV,
    endMs: null,
    seatChanges: [],
    phases: [
      { planId: "basic", planVersion: 1, startMs: NOV, endMs: MID },
      { planId: "pro", planVersion: 1, startMs: MID, endMs: null },
    ],
  };
  const cat = catalog([["basic", basic], ["pro", pro]], [sub]);
  const totals = [{ chargeId: "req", unit: "USD", quantity: 15_000n, bookedNanos: 0n, costNanos: 0n }];

  it("names the migration as the one boundary whose running quantity it needs", () => {
    expect(usageBoundaries(cat, cat.customer("c")!, [sub], period, totals)).toEqual([{ chargeId: "req", atMs: MID }]);
  });

  it("prices each unit by the version in force when it was used, at its place in the running total", () => {
    // 6,000 used on basic: 1,000 x 0.01 + 5,000 x 0.008 = $50. Then units 6,001-15,000 on pro,
    // whose allowance (2,000) and tiers count from the period's start: F(15,000) - F(6,000) =
    // (5,000 x 0.004 + 8,000 x 0.002) - (4,000 x 0.004) = $36 - $16 = $20. Total $70.
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, totals, (chargeId, at) => (chargeId === "req" && at === MID ? 6_000n : -1n));
    expect(r.lines.map((l) => [l.kind, l.chargeId, l.quantity, l.amountNanos])).toEqual([["usage", "req", 15_000n, 70n * B]]);
    // Without the running quantity it is priced as a whole under pro (the policy before): $36.
    expect(ratePeriod(cat, cat.customer("c")!, [sub], period, totals).lines[0]!.amountNanos).toBe(36n * B);
  });

  it("gives all usage to one version when it all fell on one side, and clamps an inconsistent running quantity", () => {
    const at = (q: bigint) => ratePeriod(cat, cat.customer("c")!, [sub], period, totals, () => q).lines[0]!.amountNanos;
    expect(at(0n)).toBe(36n * B); // all on pro: F_pro(15,000)
    expect(at(15_000n)).toBe(107n * B); // all on basic: F_basic(15,000) (the issue's $107)
    expect(at(99_000n)).toBe(107n * B); // above the period total: clamped to it
    expect(at(-5n)).toBe(36n * B); // below zero: clamped to 0
  });

  it("sums to the whole-period price when both versions price alike, to the nano", () => {
    const same = version([charge("req", { kind: "graduated", tiers: [tier("1000", "0.0100000013"), tier("", "0.0000000007")] }, { usage: usage("api", ["n"]) })]);
    const c2 = catalog([["basic", same], ["pro", same]], [sub]);
    for (const q of [0n, 1n, 999n, 1_000n, 1_001n, 7_777n, 15_000n]) {
      const split = ratePeriod(c2, c2.customer("c")!, [sub], period, totals, () => q).lines[0]!.amountNanos;
      expect(split).toBe(ratePeriod(c2, c2.customer("c")!, [sub], period, totals).lines[0]!.amountNanos);
    }
  });

  it("keeps the whole-period price when the versions price the charge in different units or modes", () => {
    const perUnit = version([charge("req", { kind: "per_unit", unitPrice: { amount: "0.01", perQuantity: "" } }, { usage: usage("api", ["n"]) })]);
    const c2 = catalog([["basic", perUnit], ["pro", pro]], [sub]);
    expect(usageBoundaries(c2, c2.customer("c")!, [sub], period, totals)).toEqual([]);
    // Two subscriptions billing the charge at the same time: no single version per unit.
    const other: Subscription = { ...sub, subscriptionId: "s2", phases: [{ planId: "pro", planVersion: 1, startMs: NOV + 5 * DAY, endMs: null }] };
    const c3 = catalog([["basic", basic], ["pro", pro]], [sub, other]);
    expect(usageBoundaries(c3, c3.customer("c")!, [sub, other], period, totals)).toEqual([]);
  });

  it("keeps the whole-period rule when the migration changes the billing interval (the other interval's usage is in its own period's totals)", () => {
    // basic billed yearly, then pro monthly from the 15th: this month's period totals hold only
    // pro's usage; reading the running quantity from every rated event of the month would price
    // pro's units as if basic's 6,000 were in this period (review probe: $18 instead of $8).
    const yearly = version(basic.charges, { intervalMonths: 12 });
    const c2 = catalog([["basic", yearly], ["pro", pro]], [sub]);
    expect(usageBoundaries(c2, c2.customer("c")!, [sub], period, totals)).toEqual([]);
    expect(ratePeriod(c2, c2.customer("c")!, [sub], period, totals, () => 6_000n).lines[0]!.amountNanos).toBe(36n * B);
  });

  it("splits at a mid-period change of the customer's override of the usage charge, as at a migration", () => {
    const one: Subscription = { ...sub, phases: [{ planId: "basic", planVersion: 1, startMs: NOV, endMs: null }] };
    const override: PriceOverride = {
      overrideId: "o1",
      customerId: "c",
      chargeId: "req",
      pricing: { kind: "graduated", tiers: [tier("5000", "0.004"), tier("", "0.002")] },
      includedQuantity: "2000",
      startMs: MID,
      endMs: null,
    };
    const c2 = catalog([["basic", basic]], [one], [override]);
    expect(usageBoundaries(c2, c2.customer("c")!, [one], period, totals)).toEqual([{ chargeId: "req", atMs: MID }]);
    // The same numbers as the migration to pro: $50 + $20.
    expect(ratePeriod(c2, c2.customer("c")!, [one], period, totals, () => 6_000n).lines[0]!.amountNanos).toBe(70n * B);
  });
});

describe("ratePeriod with price overrides on flat and seat fees", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const v = version([charge("base", { kind: "flat", amount: "20" }), charge("seats", { kind: "seats", perSeatAmount: "30" })]);
  const sub: Subscription = {
    subscriptionId: "s",
    customerId: "c",
    startMs: NOV,
    endMs: null,
    seatChanges: [{ changeId: "initial", seats: 2, effectiveMs: NOV }],
    phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }],
  };
  const override = (chargeId: string, pricing: PricingSpec, startMs: number, endMs: number | null, overrideId = "o"): PriceOverride => ({ overrideId, customerId: "c", chargeId, pricing, includedQuantity: "", startMs, endMs });
  const rate = (os: PriceOverride[]): Array<[string, bigint]> => {
    const cat = catalog([["p", v]], [sub], os);
    return ratePeriod(cat, cat.customer("c")!, [sub], period, []).lines.map((l) => [l.chargeId, l.amountNanos]);
  };
  const total = (lines: Array<[string, bigint]>, id: string): bigint => lines.filter(([c]) => c === id).reduce((s, [, a]) => s + a, 0n);

  it("prices a flat $20 with a $50 override from day 15 of 30 at $10 + $25 = $35, not $50", () => {
    const lines = rate([override("base", { kind: "flat", amount: "50" }, NOV + 15 * DAY, null)]);
    expect(lines.filter(([c]) => c === "base")).toEqual([["base", 10n * B], ["base", 25n * B]]);
    expect(total(lines, "seats")).toBe(60n * B);
  });

  it("prices a flat $20 with a $50 override for days 0-10 only at $50 x 10/30 + $20 x 20/30 = $30, not $20", () => {
    const lines = rate([override("base", { kind: "flat", amount: "50" }, NOV, NOV + 10 * DAY)]);
    // each piece prorated exactly by the millisecond; the fee's pieces rounded together (cumulative half-even)
    expect(lines.filter(([c]) => c === "base")).toEqual([["base", 16_666_666_667n], ["base", 13_333_333_333n]]);
    expect(total(lines, "base")).toBe(30n * B);
  });

  it("prices 2 seats x $30 with a $60 seat override from day 15 at $30 + $60 = $90, not $120", () => {
    const lines = rate([override("seats", { kind: "seats", perSeatAmount: "60" }, NOV + 15 * DAY, null)]);
    expect(lines.filter(([c]) => c === "seats")).toEqual([["seats", 30n * B], ["seats", 60n * B]]);
    expect(total(lines, "base")).toBe(20n * B);
  });

  it("splits at every override boundary inside the phase, and at seat changes inside each piece", () => {
    const withChange: Subscription = { ...sub, seatChanges: [...sub.seatChanges, { changeId: "up", seats: 5, effectiveMs: NOV + 20 * DAY }] };
    const os = [override("seats", { kind: "seats", perSeatAmount: "60" }, NOV + 10 * DAY, NOV + 25 * DAY)];
    const cat = catalog([["p", v]], [withChange], os);
    const r = ratePeriod(cat, cat.customer("c")!, [withChange], period, []).lines.filter((l) => l.kind === "seats");
    // days 0-10: 2 x $30 x 1/3 = $20; 10-20: 2 x $60 x 1/3 = $40; 20-25: 5 x $60 x 1/6 = $50; 25-30: 5 x $30 x 1/6 = $25
    expect(r.map((l) => [l.quantity, l.amountNanos, (l.startMs - NOV) / DAY, (l.endMs - NOV) / DAY])).toEqual([
      [2n, 20n * B, 0, 10],
      [2n, 40n * B, 10, 20],
      [5n, 50n * B, 20, 25],
      [5n, 25n * B, 25, 30],
    ]);
  });

  it("leaves a phase without overrides in force whole", () => {
    const lines = rate([override("base", { kind: "flat", amount: "50" }, NOV + 40 * DAY, null), override("seats", { kind: "seats", perSeatAmount: "60" }, NOV - 40 * DAY, NOV - DAY, "o2")]);
    expect(lines).toEqual([["base", 20n * B], ["seats", 60n * B]]);
  });
});

describe("ratePeriod refuses amounts beyond int64 nanos with FailedPrecondition naming what overflowed", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const failure = (fn: () => unknown): RatingError => {
    try {
      fn();
    } catch (e) {
      if (e instanceof RatingError) return e;
      throw e;
    }
    throw new Error("expected a RatingError");
  };

  it("names the seats charge when 1,000,000 seats x $10^9 overflows int64", () => {
    const v = version([charge("seats", { kind: "seats", perSeatAmount: "1000000000" })]);
    const sub: Subscription = { subscriptionId: "s", customerId: "c", startMs: NOV, endMs: null, seatChanges: [{ changeId: "initial", seats: 1_000_000, effectiveMs: NOV }], phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }] };
    const cat = catalog([["p", v]], [sub]);
    const e = failure(() => ratePeriod(cat, cat.customer("c")!, [sub], period, []));
    expect(e.kind).toBe("failed_precondition");
    expect(e.field).toBe("charges.seats");
    expect(e.rule).toMatch(/1000000 seats.*beyond int64/);
  });

  it("names the total when the sum of in-bound lines overflows int64", () => {
    const v = version(Array.from({ length: 10 }, (_, i) => charge(`f${i}`, { kind: "flat", amount: "1000000000" })));
    const sub: Subscription = { subscriptionId: "s", customerId: "c", startMs: NOV, endMs: null, seatChanges: [], phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }] };
    const cat = catalog([["p", v]], [sub]);
    const e = failure(() => ratePeriod(cat, cat.customer("c")!, [sub], period, []));
    expect(e.kind).toBe("failed_precondition");
    expect(e.field).toBe("total_nanos");
  });

  it("names the usage charge when F(period quantity) overflows int64", () => {
    const v = version([charge("req", { kind: "per_unit", unitPrice: { amount: "1000000000", perQuantity: "" } }, { usage: usage("api", ["n"]), included: "1" })]);
    const sub: Subscription = { subscriptionId: "s", customerId: "c", startMs: NOV, endMs: null, seatChanges: [], phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }] };
    const cat = catalog([["p", v]], [sub]);
    const e = failure(() => ratePeriod(cat, cat.customer("c")!, [sub], period, [{ chargeId: "req", unit: "USD", quantity: 1_000_000n, bookedNanos: 0n, costNanos: 0n }]));
    expect(e.kind).toBe("failed_precondition");
    expect(e.field).toBe("charges.req");
  });
});

describe("ratePeriod: a minimum commitment and a spending cap per subscription, on its own lines", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const per = (chargeId: string, eventType: string) => charge(chargeId, { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { usage: usage(eventType, ["n"]) });
  const sub = (subscriptionId: string, planId: string): Subscription => ({ subscriptionId, customerId: "c", startMs: NOV, endMs: null, seatChanges: [], phases: [{ planId, planVersion: 1, startMs: NOV, endMs: null }] });
  const total = (chargeId: string, dollars: bigint) => ({ chargeId, unit: "USD", quantity: dollars, bookedNanos: dollars * B, costNanos: 0n });

  it("trues up sub_a's $100 commitment from its own $30 (not sub_b's $200) and caps sub_b's $200 at its own $150 (not the customer's $230)", () => {
    const a = version([per("calls", "api"), charge("fee", { kind: "flat", amount: "10" })], { minimumCommitmentAmount: "100" });
    const b = version([per("images", "img")], { spendingCapAmount: "150" });
    const cat = catalog([["a", a], ["b", b]], [sub("sub_b", "b"), sub("sub_a", "a")]);
    const r = ratePeriod(cat, cat.customer("c")!, cat.subscriptions("c"), period, [total("calls", 30n), total("images", 200n)]);
    expect(r.lines.map((l) => [l.kind, l.subscriptionId, l.amountNanos])).toEqual([
      ["flat", "sub_a", 10n * B],
      ["usage", "sub_a", 30n * B],
      ["usage", "sub_b", 200n * B],
      ["minimum_true_up", "sub_a", 60n * B],
      ["cap_adjustment", "sub_b", -50n * B],
    ]);
    expect(r.totalNanos).toBe(250n * B);
  });

  it("gives a usage charge no plan has to the first subscription", () => {
    const a = version([per("calls", "api")], { minimumCommitmentAmount: "100" });
    const cat = catalog([["a", a], ["b", version([per("images", "img")])]], [sub("sub_a", "a"), sub("sub_b", "b")]);
    const r = ratePeriod(cat, cat.customer("c")!, cat.subscriptions("c"), period, [total("legacy", 40n)]);
    expect(r.lines.map((l) => [l.kind, l.subscriptionId, l.amountNanos])).toEqual([["usage", "sub_a", 40n * B], ["minimum_true_up", "sub_a", 60n * B]]);
  });
});

describe("ratePeriod: a spending cap changed by a mid-period migration, part by part as rating applied it", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const MID = NOV + 15 * DAY;
  const per = () => charge("calls", { kind: "per_unit", unitPrice: { amount: "0.01", perQuantity: "" } }, { usage: usage("api", ["n"]) });
  const sub: Subscription = { subscriptionId: "s", customerId: "c", startMs: NOV, endMs: null, seatChanges: [], phases: [{ planId: "p", planVersion: 1, startMs: NOV, endMs: MID }, { planId: "p", planVersion: 2, startMs: MID, endMs: null }] };
  const migrated = (cap1: string, cap2: string) => catalog([["p", version([per()], { version: 1, spendingCapAmount: cap1 })], ["p", version([per()], { version: 2, spendingCapAmount: cap2 })]], [sub]);
  const total = (dollars: bigint) => [{ chargeId: "calls", unit: "USD", quantity: dollars * 100n, bookedNanos: dollars * B, costNanos: 0n }];
  // The uncapped usage the subscription rated in each part (rating's running totals).
  const parts = (before: bigint, after: bigint) => (key: string) => (key === "#cap:s" ? before * B : key === `#cap:s@${MID}` ? after * B : 0n);

  it("C: a $20 cap removed at the migration caps only the $30 before it: $40 of usage, -$10, total $30 (before: -$20, $20)", () => {
    const cat = migrated("20", "");
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, total(40n), undefined, parts(30n, 10n));
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["usage", 40n * B], ["cap_adjustment", -10n * B]]);
    expect(r.totalNanos).toBe(30n * B);
  });

  it("D: a $20 cap added at the migration after $30 of uncapped usage lets nothing after it through: $60 of usage, -$30, total $30 (before: -$40, $20)", () => {
    const cat = migrated("", "20");
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, total(60n), undefined, parts(30n, 30n));
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["usage", 60n * B], ["cap_adjustment", -30n * B]]);
    expect(r.totalNanos).toBe(30n * B);
  });

  it("a cap raised from $20 to $50 at the migration: $30 before (capped to $20), $30 after lets $50 - $30 = $20 through: total $40", () => {
    const cat = migrated("20", "50");
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, total(60n), undefined, parts(30n, 30n));
    expect(r.lines.map((l) => [l.kind, l.amountNanos])).toEqual([["usage", 60n * B], ["cap_adjustment", -20n * B]]);
    expect(r.totalNanos).toBe(40n * B);
  });

  it("a cap under which all usage stays gives no adjustment line", () => {
    const cat = migrated("", "20");
    const r = ratePeriod(cat, cat.customer("c")!, [sub], period, total(15n), undefined, parts(10n, 5n));
    expect(r.lines.map((l) => l.kind)).toEqual(["usage"]);
  });
});

describe("ratePeriod: the pieces of one flat or seat fee sum to the fee prorated over the covered time, rounded once", () => {
  const period = billingPeriod(NOV, "UTC", 1, NOV + DAY);
  const PERIOD_MS = period.endMs - period.startMs; // 30 days
  const sub = (phases: Subscription["phases"], seatChanges: Subscription["seatChanges"] = []): Subscription => ({ subscriptionId: "s", customerId: "c", startMs: NOV, endMs: null, seatChanges, phases });
  const fees = (cat: TenantCatalog, s: Subscription): bigint[] => ratePeriod(cat, cat.customer("c")!, [s], period, []).lines.filter((l) => l.kind === "flat" || l.kind === "seats").map((l) => l.amountNanos);
  const sum = (xs: bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);
  /** The reference rounding: exact num/den (den > 0) to whole nanos, half-even. */
  const halfEven = (num: bigint, den: bigint): bigint => {
    const q = num >= 0n ? num / den : -((-num + den - 1n) / den); // floor
    const r2 = 2n * (num - q * den);
    return r2 > den || (r2 === den && q % 2n !== 0n) ? q + 1n : q;
  };
  const decimal = (nanos: bigint): string => `${nanos / B}.${(nanos % B).toString().padStart(9, "0")}`;

  it("a $30 flat fee with an identical $30 override from +1.5 s is $30 exactly (before: 29,999,988,426: lengths truncated to seconds)", () => {
    const v = version([charge("base", { kind: "flat", amount: "30" })]);
    const s = sub([{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }]);
    const o: PriceOverride = { overrideId: "o", customerId: "c", chargeId: "base", pricing: { kind: "flat", amount: "30" }, includedQuantity: "", startMs: NOV + 1500, endMs: null };
    const cat = catalog([["p", v]], [s], [o]);
    const r = ratePeriod(cat, cat.customer("c")!, [s], period, []);
    // 1.5 s of 30 days: 30e9 x 1500 / 2,592,000,000 = 17,361.1 nanos; the rest is the second piece
    expect(r.lines.map((l) => [l.endMs - l.startMs, l.amountNanos])).toEqual([[1500, 17_361n], [PERIOD_MS - 1500, 29_999_982_639n]]);
    expect(r.totalNanos).toBe(30n * B);
  });

  it("a $10 flat fee over three equal phases is $10 exactly (before: 3 x 3,333,333,333 = 9,999,999,999)", () => {
    const v1 = version([charge("base", { kind: "flat", amount: "10" })]);
    const s = sub([
      { planId: "p", planVersion: 1, startMs: NOV, endMs: NOV + 10 * DAY },
      { planId: "p", planVersion: 2, startMs: NOV + 10 * DAY, endMs: NOV + 20 * DAY },
      { planId: "p", planVersion: 3, startMs: NOV + 20 * DAY, endMs: null },
    ]);
    const cat = catalog([["p", v1], ["p", { ...v1, version: 2 }], ["p", { ...v1, version: 3 }]], [s]);
    // cumulative half-even: round(10/3) = 3,333,333,333; round(20/3) - that = 3,333,333,334; 10 - round(20/3)
    expect(fees(cat, s)).toEqual([3_333_333_333n, 3_333_333_334n, 3_333_333_333n]);
  });

  it("$10 per seat, 1 seat over three equal seat segments (1 -> 1 -> 1) is $10 exactly", () => {
    const v = version([charge("seats", { kind: "seats", perSeatAmount: "10" })]);
    const s = sub([{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }], [
      { changeId: "initial", seats: 1, effectiveMs: NOV },
      { changeId: "a", seats: 1, effectiveMs: NOV + 10 * DAY },
      { changeId: "b", seats: 1, effectiveMs: NOV + 20 * DAY },
    ]);
    const cat = catalog([["p", v]], [s]);
    expect(fees(cat, s)).toEqual([3_333_333_333n, 3_333_333_334n, 3_333_333_333n]);
  });

  // 1-5 pieces: 0-4 distinct cut instants anywhere in the period, to the millisecond
  const cuts = fc.uniqueArray(fc.integer({ min: 1, max: PERIOD_MS - 1 }), { minLength: 0, maxLength: 4 }).map((xs) => [0, ...xs.sort((a, b) => a - b), PERIOD_MS]);
  const nanos = fc.bigInt({ min: 1n, max: 10n ** 15n }); // 1 nano to $1,000,000

  it("property: flat fee split by migrations (and overrides) at random instants: one price sums to the whole fee, several to the exact prorated total rounded half-even once, each piece within 1 nano of its own exact amount", () => {
    fc.assert(
      fc.property(cuts, fc.array(nanos, { minLength: 5, maxLength: 5 }), fc.boolean(), fc.boolean(), (bounds, prices, samePrice, viaOverrides) => {
        const n = bounds.length - 1;
        const price = (i: number): bigint => (samePrice ? prices[0]! : prices[i]!);
        let cat: TenantCatalog;
        let s: Subscription;
        if (viaOverrides) {
          // one phase; piece i > 0 priced by an override over [bounds[i], bounds[i + 1])
          s = sub([{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }]);
          const os = Array.from({ length: n - 1 }, (_, k): PriceOverride => ({ overrideId: `o${k}`, customerId: "c", chargeId: "base", pricing: { kind: "flat", amount: decimal(price(k + 1)) }, includedQuantity: "", startMs: NOV + bounds[k + 1]!, endMs: NOV + bounds[k + 2]! }));
          cat = catalog([["p", version([charge("base", { kind: "flat", amount: decimal(price(0)) })])]], [s], os);
        } else {
          // one phase per piece, each its own version of the plan
          s = sub(Array.from({ length: n }, (_, i) => ({ planId: "p", planVersion: i + 1, startMs: NOV + bounds[i]!, endMs: i + 1 < n ? NOV + bounds[i + 1]! : null })));
          cat = catalog(Array.from({ length: n }, (_, i): [string, PlanVersionSpec] => ["p", version([charge("base", { kind: "flat", amount: decimal(price(i)) })], { version: i + 1 })]), [s]);
        }
        const got = fees(cat, s);
        expect(got).toHaveLength(n);
        const len = (i: number): bigint => BigInt(bounds[i + 1]! - bounds[i]!);
        const exactNum = Array.from({ length: n }, (_, i) => price(i) * len(i)).reduce((a, b) => a + b, 0n);
        expect(sum(got)).toBe(halfEven(exactNum, BigInt(PERIOD_MS)));
        if (samePrice) expect(sum(got)).toBe(prices[0]!);
        got.forEach((a, i) => {
          const err = a * BigInt(PERIOD_MS) - price(i) * len(i);
          expect(err <= BigInt(PERIOD_MS) && err >= -BigInt(PERIOD_MS)).toBe(true);
        });
      }),
      { numRuns: 300 },
    );
  });

  it("property: seats split by seat changes at random instants: one seat count sums to seats x fee, several to the exact seat-time total rounded half-even once", () => {
    fc.assert(
      fc.property(cuts, fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 5, maxLength: 5 }), nanos, fc.boolean(), (bounds, counts, perSeat, sameCount) => {
        const n = bounds.length - 1;
        const seats = (i: number): number => (sameCount ? counts[0]! : counts[i]!);
        const s = sub(
          [{ planId: "p", planVersion: 1, startMs: NOV, endMs: null }],
          Array.from({ length: n }, (_, i) => ({ changeId: i === 0 ? "initial" : `c${i}`, seats: seats(i), effectiveMs: NOV + bounds[i]! })),
        );
        const cat = catalog([["p", version([charge("seats", { kind: "seats", perSeatAmount: decimal(perSeat) })])]], [s]);
        const got = fees(cat, s);
        expect(got).toHaveLength(n);
        const exactNum = Array.from({ length: n }, (_, i) => perSeat * BigInt(seats(i)) * BigInt(bounds[i + 1]! - bounds[i]!)).reduce((a, b) => a + b, 0n);
        expect(sum(got)).toBe(halfEven(exactNum, BigInt(PERIOD_MS)));
        if (sameCount) expect(sum(got)).toBe(perSeat * BigInt(counts[0]!));
      }),
      { numRuns: 300 },
    );
  });
});
