import { describe, expect, it } from "vitest";
import { compilePlanVersion } from "./compile.js";
import { CostCatalog } from "./cost-catalog.js";
import { billingPeriod } from "./period.js";
import { ratePeriod } from "./rate-period.js";
import { TenantCatalog } from "./rate-event.js";
import { charge, usage, version } from "./fixtures.js";
import type { PlanVersionSpec, Subscription } from "./types.js";

const B = 1_000_000_000n;
const DAY = 86_400_000;
const NOV = Date.UTC(2026, 10, 1); // a 30-day month

function catalog(versions: Array<[string, PlanVersionSpec]>, subs: Subscription[]): TenantCatalog {
  return new TenantCatalog({
    tenant: "t",
    customers: [{ customerId: "c", name: "", currency: "USD", billingAnchorMs: NOV, timeZone: "UTC", createTimeMs: NOV }],
    subscriptions: subs,
    versions: versions.map(([planId, v]) => ({ planId, version: compilePlanVersion(v, "v") })),
    overrides: [],
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

  it("prorates seats by the second across seat changes", () => {
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
