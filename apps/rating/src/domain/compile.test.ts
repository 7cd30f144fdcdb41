import { describe, expect, it } from "vitest";
import { compilePlanVersion } from "./compile.js";
import { RatingError } from "./errors.js";
import { charge, llmMatrixVersion, usage, version } from "./fixtures.js";
import type { ChargeSpec, PlanVersionSpec, TierSpec } from "./types.js";

function tier(upTo: string, amount: string, flatAmount = ""): TierSpec {
  return { upTo, unitPrice: { amount, perQuantity: "" }, flatAmount };
}
const u = usage("api.request", ["count"], ["model"]);

function failure(v: PlanVersionSpec): { field: string; rule: string; kind: string } | null {
  try {
    compilePlanVersion(v, "version");
    return null;
  } catch (e) {
    if (e instanceof RatingError) return { field: e.field, rule: e.rule, kind: e.kind };
    throw e;
  }
}

const one = (c: ChargeSpec): PlanVersionSpec => version([c]);

describe("compilePlanVersion rejects bad plans, naming the field", () => {
  it.each<[string, PlanVersionSpec, string, RegExp]>([
    ["unsorted tiers", one(charge("g", { kind: "graduated", tiers: [tier("100", "1"), tier("50", "1"), tier("0", "1")] }, { usage: u })), "version.charges[0].graduated.tiers[1].up_to", /sorted without overlap/],
    ["overlapping (equal) tier bounds", one(charge("g", { kind: "volume", tiers: [tier("100", "1"), tier("100", "1"), tier("0", "1")] }, { usage: u })), "version.charges[0].volume.tiers[1].up_to", /sorted without overlap/],
    ["an unbounded tier before the last", one(charge("g", { kind: "graduated", tiers: [tier("0", "1"), tier("100", "1")] }, { usage: u })), "version.charges[0].graduated.tiers[0].up_to", /only the last/],
    ["a bounded last tier", one(charge("g", { kind: "graduated", tiers: [tier("100", "1")] }, { usage: u })), "version.charges[0].graduated.tiers[0].up_to", /must be unbounded/],
    ["a negative price", one(charge("p", { kind: "per_unit", unitPrice: { amount: "-1", perQuantity: "" } }, { usage: u })), "version.charges[0].per_unit.unit_price.amount", /negative/],
    ["a malformed decimal", one(charge("p", { kind: "per_unit", unitPrice: { amount: "1.2.3", perQuantity: "" } }, { usage: u })), "version.charges[0].per_unit.unit_price.amount", /decimal/],
    ["an exponent", one(charge("p", { kind: "per_unit", unitPrice: { amount: "1e-6", perQuantity: "" } }, { usage: u })), "version.charges[0].per_unit.unit_price.amount", /decimal/],
    ["a negative flat fee", one(charge("f", { kind: "flat", amount: "-5" })), "version.charges[0].flat.amount", /negative/],
    ["an unknown matrix dimension", one(charge("m", { kind: "matrix", cells: [{ match: { region: "eu" }, unitPrice: { amount: "1", perQuantity: "" } }], defaultPrice: null }, { usage: u })), "version.charges[0].matrix.cells[0].match", /unknown dimension "region"/],
    ["an unknown matrix metric", one(charge("m", { kind: "matrix", cells: [{ match: { metric: "tokens" }, unitPrice: { amount: "1", perQuantity: "" } }], defaultPrice: null }, { usage: u })), "version.charges[0].matrix.cells[0].match.metric", /unknown metric/],
    ["a usage charge without a meter", one(charge("p", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { usage: { ...u, meter: "" } })), "version.charges[0].usage.meter", /required/],
    ["a usage charge without a binding", one(charge("p", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } })), "version.charges[0].usage", /required/],
    ["a charge in another currency", one(charge("p", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { unit: "EUR", usage: u })), "version.charges[0].unit", /plan currency/],
    ["a credits charge in a currency", one(charge("c", { kind: "credits", tierProperty: "model", tiers: [], defaultCreditsPerUnit: "1" }, { usage: u })), "version.charges[0].unit", /credit type/],
    ["a value in two credit tiers", one(charge("c", { kind: "credits", tierProperty: "model", tiers: [{ tier: "a", values: ["x"], creditsPerUnit: "1" }, { tier: "b", values: ["x"], creditsPerUnit: "2" }], defaultCreditsPerUnit: "" }, { unit: "cr_c", usage: u })), "version.charges[0].credits.tiers[1].values[0]", /another tier/],
    ["a zero package size", one(charge("k", { kind: "package", packageSize: "0", packageAmount: "5", freeQuantity: "" }, { usage: u })), "version.charges[0].package.package_size", /greater than 0/],
    ["a bad charge id", one(charge("Bad-Id", { kind: "flat", amount: "1" })), "version.charges[0].charge_id", /a-z0-9_/],
    ["duplicate charge ids", version([charge("a", { kind: "flat", amount: "1" }), charge("a", { kind: "flat", amount: "2" })]), "version.charges[1].charge_id", /duplicate/],
    ["an unknown currency", version([], { currency: "XXX" }), "version.currency", /./],
    ["a 2-month interval", version([], { intervalMonths: 2 }), "version.interval_months", /one of 1, 12/],
    ["an included allowance on a matrix", one(charge("m", { kind: "matrix", cells: [], defaultPrice: { amount: "1", perQuantity: "" } }, { usage: u, included: "10" })), "version.charges[0].included_quantity", /not matrix/],
    ["a reversal without a window", one(charge("o", { kind: "outcome", amount: "1", conditionProperty: "", conditionValue: "", verificationWindowSeconds: "0", reversalEventType: "x", taskIdProperty: "task", attemptEventTypes: [] }, { usage: u })), "version.charges[0].outcome.verification_window_seconds", /greater than 0/],
    // Money amounts are bounded by AMOUNT_NANOS_MAX (10^18 nanos = 10^9 units) each.
    ["a flat fee above AMOUNT_NANOS_MAX", one(charge("f", { kind: "flat", amount: "100000000000" })), "version.charges[0].flat.amount", /at most 1000000000 \(AMOUNT_NANOS_MAX/],
    ["a seat price above AMOUNT_NANOS_MAX", one(charge("s", { kind: "seats", perSeatAmount: "1000000000.000000001" })), "version.charges[0].seats.per_seat_amount", /AMOUNT_NANOS_MAX/],
    ["a tier flat fee above AMOUNT_NANOS_MAX", one(charge("g", { kind: "graduated", tiers: [tier("100", "1", "2000000000"), tier("0", "1")] }, { usage: u })), "version.charges[0].graduated.tiers[0].flat_amount", /AMOUNT_NANOS_MAX/],
    ["a unit price above AMOUNT_NANOS_MAX", one(charge("p", { kind: "per_unit", unitPrice: { amount: "1000000001", perQuantity: "1000" } }, { usage: u })), "version.charges[0].per_unit.unit_price.amount", /AMOUNT_NANOS_MAX/],
    ["a package price above AMOUNT_NANOS_MAX", one(charge("k", { kind: "package", packageSize: "10", packageAmount: "1000000001", freeQuantity: "" }, { usage: u })), "version.charges[0].package.package_amount", /AMOUNT_NANOS_MAX/],
    ["a percentage fixed fee above AMOUNT_NANOS_MAX", one(charge("c", { kind: "percentage", amountProperty: "amt", percent: "1", fixedAmount: "1000000001", minAmount: "", maxAmount: "" }, { usage: u })), "version.charges[0].percentage.fixed_amount", /AMOUNT_NANOS_MAX/],
    ["a percentage minimum above AMOUNT_NANOS_MAX", one(charge("c", { kind: "percentage", amountProperty: "amt", percent: "1", fixedAmount: "", minAmount: "1000000001", maxAmount: "" }, { usage: u })), "version.charges[0].percentage.min_amount", /AMOUNT_NANOS_MAX/],
    ["a percentage maximum above AMOUNT_NANOS_MAX", one(charge("c", { kind: "percentage", amountProperty: "amt", percent: "1", fixedAmount: "", minAmount: "", maxAmount: "1000000001" }, { usage: u })), "version.charges[0].percentage.max_amount", /AMOUNT_NANOS_MAX/],
    ["an outcome price above AMOUNT_NANOS_MAX", one(charge("o", { kind: "outcome", amount: "1000000001", conditionProperty: "", conditionValue: "", verificationWindowSeconds: "0", reversalEventType: "", taskIdProperty: "", attemptEventTypes: [] }, { usage: u })), "version.charges[0].outcome.amount", /AMOUNT_NANOS_MAX/],
    ["credits per unit above AMOUNT_NANOS_MAX", one(charge("c", { kind: "credits", tierProperty: "model", tiers: [{ tier: "a", values: ["x"], creditsPerUnit: "1000000001" }], defaultCreditsPerUnit: "" }, { unit: "cr_c", usage: u })), "version.charges[0].credits.tiers[0].credits_per_unit", /AMOUNT_NANOS_MAX/],
    ["a minimum commitment above AMOUNT_NANOS_MAX", version([], { minimumCommitmentAmount: "1000000001" }), "version.minimum_commitment_amount", /AMOUNT_NANOS_MAX/],
    ["a spending cap above AMOUNT_NANOS_MAX", version([], { spendingCapAmount: "1000000001" }), "version.spending_cap_amount", /AMOUNT_NANOS_MAX/],
  ])("rejects %s", (_name, v, field, rule) => {
    const f = failure(v);
    expect(f).not.toBeNull();
    expect(f!.kind).toBe("invalid");
    expect(f!.field).toBe(field);
    expect(f!.rule).toMatch(rule);
  });

  it("accepts the event-flow matrix plan and indexes it by event type", () => {
    const v = compilePlanVersion(llmMatrixVersion(), "version");
    expect(v.byEventType.get("llm.call")?.map((c) => c.chargeId)).toEqual(["llm_tokens"]);
    expect(v.charges[0]!.mode).toBe("event");
  });

  it("compiles sub-nano prices to exact integer rationals", () => {
    const v = compilePlanVersion(one(charge("p", { kind: "per_unit", unitPrice: { amount: "0.0375", perQuantity: "1000000" } }, { usage: u })), "version");
    const p = v.charges[0]!.pricing;
    expect(p.kind === "per_unit" && `${p.rate.num}/${p.rate.den}`).toBe("75/2");
  });

  it("accepts money amounts of exactly AMOUNT_NANOS_MAX (10^18 nanos = 10^9 units)", () => {
    const max = "1000000000";
    expect(failure(version([charge("f", { kind: "flat", amount: max }), charge("s", { kind: "seats", perSeatAmount: max })], { minimumCommitmentAmount: max, spendingCapAmount: max }))).toBeNull();
    // a unit price is bounded per per_quantity: $10^9 per 1,000 units is 10^15 nanos per unit
    expect(failure(one(charge("p", { kind: "per_unit", unitPrice: { amount: max, perQuantity: "1000" } }, { usage: u })))).toBeNull();
  });
});
