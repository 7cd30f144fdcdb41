import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  chargeOwners,
  commitmentUsage,
  feeCharges,
  feeTrueUps,
  lateUsageAdjustments,
  minimumCommitmentNanos,
  ownerOf,
  periodPricedIds,
  planKey,
  seatMillis,
  topUpCharges,
  usageCharges,
  usageWindow,
  withPeriodPricing,
  type PlanVersionInfo,
  type RatedPeriodInfo,
  type SubscriptionInfo,
  type UsageTotal,
} from "./bill.js";
import { defaultSettings } from "./invoice.js";
import { validateSettings } from "./settings.js";
import { periodByIndex, type PeriodSpec } from "./periods.js";
import { reduce, roundLine, ZERO_RESIDUE } from "./rounding.js";

const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");

function sub(id: string, planId: string, seats: Array<[number, string]> = []): SubscriptionInfo {
  return {
    subscriptionId: id,
    customerId: "cus_1",
    startedAt: NOV,
    endedAt: undefined,
    phases: [{ planId, planVersion: 1, start: NOV, end: undefined }],
    seatChanges: seats.map(([n, at]) => ({ seats: n, effectiveAt: new Date(at) })),
  };
}

const plans = new Map<string, PlanVersionInfo>([
  [planKey("p_a", 1), { planId: "p_a", version: 1, currency: "USD", minimumCommitment: "", charges: [{ chargeId: "tokens", name: "Tokens", unit: "USD", kind: "usage", amount: "" }, { chargeId: "seats", name: "Seats", unit: "USD", kind: "seats", amount: "10" }] }],
  [planKey("p_b", 1), { planId: "p_b", version: 1, currency: "USD", minimumCommitment: "", charges: [{ chargeId: "images", name: "Images", unit: "USD", kind: "usage", amount: "" }] }],
]);

describe("billing lines from rating's data", () => {
  it("partitions hour buckets between periods whose boundary is not on the hour", () => {
    const a = usageWindow({ start: new Date("2026-11-01T10:30:00Z"), end: new Date("2026-12-01T10:30:00Z") });
    const b = usageWindow({ start: new Date("2026-12-01T10:30:00Z"), end: new Date("2027-01-01T10:30:00Z") });
    expect(a.to).toEqual(b.from);
    expect(a.from.toISOString()).toBe("2026-11-01T10:00:00.000Z");
  });

  it("gives each charge to the subscription whose plan has it, and unknown charges to the first", () => {
    const subs = [sub("sub_a", "p_a"), sub("sub_b", "p_b")];
    const owners = chargeOwners(subs, plans);
    expect(ownerOf("images", owners, subs)).toBe("sub_b");
    expect(ownerOf("tokens", owners, subs)).toBe("sub_a");
    expect(ownerOf("mystery", owners, subs)).toBe("sub_a");
  });

  it("sums seat-milliseconds over the seat changes in force", () => {
    const s = sub("sub_a", "p_a", [[2, "2026-11-01T00:00:00Z"], [5, "2026-11-16T00:00:00Z"]]);
    const day = 86_400_000n;
    expect(seatMillis(s, NOV, DEC)).toBe(2n * 15n * day + 5n * 15n * day);
  });

  it("trues up seats billed in advance: a seat added is charged, nothing when unchanged", () => {
    const s = sub("sub_a", "p_a", [[2, "2026-11-01T00:00:00Z"], [3, "2026-11-16T00:00:00Z"]]);
    const p = { index: 1, start: NOV, end: DEC };
    const [up] = feeTrueUps(p, s, plans, "USD", new Map([["seats", 20_000_000_000n]]), "UTC");
    expect(up!.amount).toEqual({ num: 5_000_000_000n, den: 1n }); // 15 days of one more seat = $5
    expect(up!.description).toContain("charge for seat or fee changes");
    const same = sub("sub_a", "p_a", [[2, "2026-11-01T00:00:00Z"]]);
    expect(feeTrueUps(p, same, plans, "USD", new Map([["seats", 20_000_000_000n]]), "UTC")).toEqual([]);
  });

  it("turns usage rated late for an invoiced window into adjustments, ignoring fee charges", () => {
    const subs = [sub("sub_a", "p_a")];
    const owners = chargeOwners(subs, plans);
    const adj = lateUsageAdjustments(
      [{ chargeId: "tokens", quantity: 5n, priceNanos: 107n, unit: "USD" }, { chargeId: "tokens", quantity: 1n, priceNanos: 0n, unit: "EUR" }],
      new Map([["tokens", 100n], ["seats", 20n]]),
      subs[0]!,
      owners,
      subs,
      new Map(),
      "USD",
      { from: NOV, to: DEC },
      { start: NOV, end: DEC, timeZone: "UTC" },
      new Set(["seats"]),
    );
    expect(adj.map((a) => [a.chargeId, a.amount.num])).toEqual([["tokens", 7n]]);
  });
});

describe("billing settings validation", () => {
  const ok = defaultSettings("cus_1");
  const rows: Array<[string, Partial<typeof ok>, string | null]> = [
    ["accepts the defaults", {}, null],
    ["accepts 100% tax", { taxRateBps: 10_000 }, null],
    ["refuses a tax rate above 100%", { taxRateBps: 10_001 }, "settings.tax_rate_bps"],
    ["refuses a negative tax rate", { taxRateBps: -1 }, "settings.tax_rate_bps"],
    ["refuses a fractional tax rate", { taxRateBps: 2.5 }, "settings.tax_rate_bps"],
    ["refuses a negative fixed discount", { discountNanos: -1n }, "settings.discount_nanos"],
    ["refuses a minimum without an end to deferral", { minimumBillableNanos: 1n }, "settings.deferral_periods_max"],
    ["accepts a minimum with a deferral date", { minimumBillableNanos: 1n, deferralUntil: DEC }, null],
    ["refuses more than 24 deferred periods", { minimumBillableNanos: 1n, deferralPeriodsMax: 25 }, "settings.deferral_periods_max"],
    ["refuses an unknown rounding mode", { roundingMode: "bankers" as never }, "settings.rounding_mode"],
    ["refuses an empty customer id", { customerId: "" }, "settings.customer_id"],
  ];
  for (const [name, patch, field] of rows) {
    it(name, () => {
      const run = () => validateSettings({ ...ok, ...patch });
      if (field === null) expect(run).not.toThrow();
      else expect(run).toThrow(field);
    });
  }
});

describe("charges priced on the period total (withPeriodPricing)", () => {
  const B = 1_000_000_000n;
  const p = { start: NOV, end: DEC, index: 1 };
  // hour buckets of the window: the volume charge's per-event steps plus a neighbouring period's
  const buckets: UsageTotal[] = [
    { chargeId: "vol", unit: "USD", quantity: 1600n, priceNanos: 130n * B },
    { chargeId: "tokens", unit: "USD", quantity: 10n, priceNanos: 7n },
  ];
  const rated = (over: Partial<RatedPeriodInfo> = {}, line: Partial<RatedPeriodInfo["lines"][number]> = {}): RatedPeriodInfo => ({
    periodStart: NOV,
    periodEnd: DEC,
    lines: [{ chargeId: "vol", subscriptionId: "sub_1", unit: "USD", quantity: 1500n, amountNanos: 120n * B, bookedNanos: 120n * B, ratedNanos: 120n * B, periodPriced: true, ...line }],
    ...over,
  });
  const vol = (t: UsageTotal[]) => t.find((x) => x.chargeId === "vol");
  const rows: Array<[string, RatedPeriodInfo | undefined, { start: Date; end: Date; index: number }, bigint, bigint]> = [
    ["rating's period is the invoice period: F(period total)", rated(), p, 1500n, 120n * B],
    ["period 0 starting at the subscription start inside rating's period", rated(), { start: new Date("2026-11-10T00:00:00Z"), end: DEC, index: 0 }, 1500n, 120n * B],
    ["a later period starting elsewhere than rating's: bucket sums stand", rated(), { start: new Date("2026-11-10T00:00:00Z"), end: DEC, index: 2 }, 1600n, 130n * B],
    ["another period end (interval or anchor settings differ): bucket sums stand", rated({ periodEnd: new Date("2027-01-01T00:00:00Z") }), p, 1600n, 130n * B],
    ["rating without RatePeriod: bucket sums stand", undefined, p, 1600n, 130n * B],
    ["a spending cap cut the per-event prices to $50: the cut stands, the settlement is added", rated({}, { amountNanos: 96n * B, bookedNanos: 96n * B, ratedNanos: 50n * B, quantity: 1200n }), p, 1200n, 50n * B],
    ["per-event steps that do not sum to F (an override changed mid-period): settled to F", rated({}, { bookedNanos: 118n * B, ratedNanos: 118n * B }), p, 1500n, 120n * B],
    // a price override or a migration makes the plan's tiered charge per unit in this period:
    // rating's line is not period priced; the charge is billed (never dropped) from its events'
    // prices over rating's exact period, not from the window's buckets (which hold a neighbouring
    // period's steps when the boundary is off the hour)
    ["a period-priced charge of the plan that rating prices per unit in this period: its events' prices in rating's period", rated({}, { periodPriced: false, amountNanos: 125n * B, bookedNanos: 125n * B, ratedNanos: 125n * B }), p, 1500n, 125n * B],
    ["the same under a real-time cap that cut its events: what they were rated at", rated({}, { periodPriced: false, amountNanos: 125n * B, bookedNanos: 125n * B, ratedNanos: 90n * B }), p, 1500n, 90n * B],
  ];
  it.each(rows)("%s", (_name, r, period, quantity, price) => {
    const out = withPeriodPricing(buckets, r, period, new Set(["vol"]));
    expect(vol(out)).toMatchObject({ quantity, priceNanos: price });
    expect(out.find((x) => x.chargeId === "tokens")?.priceNanos).toBe(7n);
  });

  it("drops the window's buckets of a period-priced charge rating has no period line for", () => {
    const out = withPeriodPricing(buckets, { periodStart: NOV, periodEnd: DEC, lines: [] }, p, new Set(["vol"]));
    expect(vol(out)).toBeUndefined();
  });

  it("names the settlement on the usage line and finds the plan's period-priced charges", () => {
    const out = withPeriodPricing(buckets, rated({}, { bookedNanos: 118n * B, ratedNanos: 118n * B }), p, new Set(["vol"]));
    const s = sub("sub_1", "p_t");
    const charges = usageCharges(out, s, new Map(), [s], new Map([["vol", "Calls"]]), "USD", usageWindow(p));
    expect(charges.find((c) => c.chargeId === "vol")?.description).toBe("Calls: usage priced on the period total (per-event provisional prices 118000000000 nanos, settled at close +2000000000 nanos)");
    const tp = new Map<string, PlanVersionInfo>([[planKey("p_t", 1), { planId: "p_t", version: 1, currency: "USD", minimumCommitment: "", charges: [{ chargeId: "vol", name: "", unit: "USD", kind: "usage", amount: "", periodPriced: true }, { chargeId: "tokens", name: "", unit: "USD", kind: "usage", amount: "" }] }]]);
    expect([...periodPricedIds(s, tp)]).toEqual(["vol"]);
  });
});

describe("the period's usage for the minimum commitment (commitmentUsage, rating's exact period)", () => {
  const B = 1_000_000_000n;
  const p = { start: NOV, end: DEC, index: 1 };
  const line = (chargeId: string, subscriptionId: string, rated: bigint, over: Partial<RatedPeriodInfo["lines"][number]> = {}): RatedPeriodInfo["lines"][number] => ({ chargeId, subscriptionId, unit: "USD", quantity: 1n, amountNanos: rated, bookedNanos: rated, ratedNanos: rated, periodPriced: false, ...over });
  const r: RatedPeriodInfo = {
    periodStart: NOV,
    periodEnd: DEC,
    lines: [
      line("calls", "sub_1", 105n * B), // per unit, by exact event time (a boundary hour's $10 included)
      line("tcalls", "sub_1", 118n * B, { periodPriced: true, amountNanos: 120n * B, bookedNanos: 118n * B }), // settled to F: $120
      line("capped", "sub_1", 10n * B, { periodPriced: true, amountNanos: 30n * B, bookedNanos: 30n * B }), // cut by the real-time cap: $10
      line("images", "sub_2", 200n * B), // another subscription's
      line("tokens", "sub_1", 7n * B, { unit: "cr_tokens" }), // priced in credits: not money
    ],
  };
  const rows: Array<[string, RatedPeriodInfo | undefined, { start: Date; end: Date; index: number }, string, bigint | undefined]> = [
    ["rating's period is the invoice period: the subscription's lines as billed (rated + amount - booked)", r, p, "sub_1", 235n * B],
    ["another subscription's lines only", r, p, "sub_2", 200n * B],
    ["no line of the subscription: nothing", r, p, "sub_3", 0n],
    ["period 0 starting at the subscription start inside rating's period", r, { start: new Date("2026-11-10T00:00:00Z"), end: DEC, index: 0 }, "sub_1", 235n * B],
    ["another period end (interval or anchor settings differ): undefined (the usage lines count)", { ...r, periodEnd: new Date("2027-01-01T00:00:00Z") }, p, "sub_1", undefined],
    ["rating without RatePeriod: undefined (the usage lines count)", undefined, p, "sub_1", undefined],
  ];
  it.each(rows)("%s", (_name, rated, period, subscriptionId, want) => {
    expect(commitmentUsage(rated, period, subscriptionId, "USD")).toBe(want);
  });
});

describe("fees of a partial first period", () => {
  const feePlans = new Map<string, PlanVersionInfo>([
    [
      planKey("p_f", 1),
      {
        planId: "p_f",
        version: 1,
        currency: "USD",
        minimumCommitment: "",
        charges: [
          { chargeId: "platform", name: "Platform", unit: "USD", kind: "flat", amount: "25" },
          { chargeId: "seat", name: "Seats", unit: "USD", kind: "seats", amount: "30" },
        ],
      },
    ],
  ]);
  const started = (at: string): SubscriptionInfo => ({
    subscriptionId: "sub_f",
    customerId: "cus_1",
    startedAt: new Date(at),
    endedAt: undefined,
    phases: [{ planId: "p_f", planVersion: 1, start: new Date(at), end: undefined }],
    seatChanges: [{ seats: 2, effectiveAt: new Date(at) }],
  });
  const spec = (s: SubscriptionInfo): PeriodSpec => ({ interval: "month", anchor: "anniversary", timeZone: "UTC", startedAt: s.startedAt, anchorAt: NOV });

  it("prorates the flat fee and the seats by the millisecond from the subscription start to the period end", () => {
    const s = started("2026-11-16T00:00:00Z");
    const [flat0, seats0, flat1, seats1] = feeCharges(spec(s), 0, s, feePlans, "USD");
    // period 0 is [Nov 16, Dec 1): 15 of 30 days
    expect(flat0!.amount).toEqual({ num: 12_500_000_000n, den: 1n });
    expect(flat0!.description).toContain("prorated for a partial first period: 1296000000 of 2592000000 ms (full period from 2026-11-01T00:00:00.000Z)");
    expect(seats0!.amount).toEqual({ num: 30_000_000_000n, den: 1n });
    // period 1 (December, billed in advance on the first invoice) is full
    expect(flat1!.amount).toEqual({ num: 25_000_000_000n, den: 1n });
    expect(seats1!.amount).toEqual({ num: 60_000_000_000n, den: 1n });
  });

  it("keeps an uneven proration exact: rounded + carried == fee x part / full (property over start times)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 * 86_400_000 - 1 }), (offsetMs) => {
        const s = started(new Date(NOV.getTime() + offsetMs).toISOString());
        const flat = feeCharges(spec(s), 0, s, feePlans, "USD").find((c) => c.chargeId === "platform" && c.periodStart.getTime() === s.startedAt.getTime())!;
        const partMs = BigInt(DEC.getTime() - s.startedAt.getTime());
        // exact: 25e9 x part / full
        expect(flat.amount.num * 2_592_000_000n).toBe(25_000_000_000n * partMs * flat.amount.den);
        const r = roundLine(flat.amount, ZERO_RESIDUE, "USD", "half_even", 10_000_000n);
        // rounded + residue + sub-nano carried == exact
        expect((r.roundedNanos + r.state.residueNanos) * r.state.subNanoDen * flat.amount.den + r.state.subNanoNum * flat.amount.den).toBe(flat.amount.num * r.state.subNanoDen);
      }),
      { numRuns: 200 },
    );
  });

  it("bills a subscription starting on a boundary in full", () => {
    const s = started("2026-11-01T00:00:00Z");
    expect(feeCharges(spec(s), 0, s, feePlans, "USD")[0]!.amount).toEqual({ num: 25_000_000_000n, den: 1n });
  });
});

describe("fees of a subscription that ends mid-period", () => {
  const plans = new Map<string, PlanVersionInfo>([
    [
      planKey("p_e", 1),
      {
        planId: "p_e",
        version: 1,
        currency: "USD",
        minimumCommitment: "",
        charges: [
          { chargeId: "platform", name: "Platform", unit: "USD", kind: "flat", amount: "30" },
          { chargeId: "seat", name: "Seats", unit: "USD", kind: "seats", amount: "12" },
        ],
      },
    ],
  ]);
  const OCT = new Date("2026-10-01T00:00:00Z");
  const ending = (start: Date, end: Date | undefined): SubscriptionInfo => ({
    subscriptionId: "sub_e",
    customerId: "cus_1",
    startedAt: start,
    endedAt: end,
    phases: [{ planId: "p_e", planVersion: 1, start, end: undefined }],
    seatChanges: [{ seats: 3, effectiveAt: start }],
  });
  const spec = (s: SubscriptionInfo): PeriodSpec => ({ interval: "month", anchor: "anniversary", timeZone: "UTC", startedAt: s.startedAt, anchorAt: OCT });

  it("bills the flat fee and the seats only up to the end, by the millisecond, and nothing for the periods after it", () => {
    // ends on day 10 of November (30 days) at 05:00: 795,600,000 of 2,592,000,000 ms
    const s = ending(OCT, new Date("2026-11-10T05:00:00Z"));
    const fees = feeCharges(spec(s), 0, s, plans, "USD");
    const nov = fees.filter((c) => c.periodStart.getTime() === NOV.getTime());
    // $30 x 795.6 / 2592 = $9.2083333... (exact rational nanos)
    expect(reduce(nov.find((c) => c.chargeId === "platform")!.amount)).toEqual(reduce({ num: 30_000_000_000n * 795_600_000n, den: 2_592_000_000n }));
    expect(nov.find((c) => c.chargeId === "platform")!.description).toContain("prorated to the subscription's end at 2026-11-10T05:00:00.000Z: 795600000 of 2592000000 ms");
    // 3 seats x $12 x 795.6 / 2592 = $11.05
    expect(reduce(nov.find((c) => c.chargeId === "seat")!.amount)).toEqual({ num: 11_050_000_000n, den: 1n });
    // October in full
    expect(fees.filter((c) => c.periodStart.getTime() === OCT.getTime()).map((c) => c.amount)).toEqual([{ num: 30_000_000_000n, den: 1n }, { num: 36_000_000_000n, den: 1n }]);
    // December (after the end): nothing
    expect(feeCharges(spec(s), 1, s, plans, "USD")).toEqual([]);
  });

  it("credits the part after the end at the close of the period billed in full in advance", () => {
    const s = ending(OCT, new Date("2026-11-10T05:00:00Z"));
    const p = periodByIndex(spec(s), 1);
    const ups = feeTrueUps(p, s, plans, "USD", new Map([["platform", 30_000_000_000n], ["seat", 36_000_000_000n]]), "UTC");
    expect(ups.map((u) => [u.chargeId, reduce(u.amount)])).toEqual([
      ["platform", reduce({ num: 30_000_000_000n * 795_600_000n - 30_000_000_000n * 2_592_000_000n, den: 2_592_000_000n })],
      ["seat", { num: 11_050_000_000n - 36_000_000_000n, den: 1n }],
    ]);
    expect(ups[0]!.description).toContain("credit for seat or fee changes and the subscription's end at 2026-11-10T05:00:00.000Z");
  });

  it("prorates a first period that both starts and ends inside the period", () => {
    const s = ending(new Date("2026-10-11T00:00:00Z"), new Date("2026-10-21T00:00:00Z"));
    const [flat0] = feeCharges(spec(s), 0, s, plans, "USD");
    // 10 of 31 days of October
    expect(reduce(flat0!.amount)).toEqual(reduce({ num: 30_000_000_000n * 10n, den: 31n }));
    expect(flat0!.description).toContain("prorated for a partial first period and to the subscription's end at 2026-10-21T00:00:00.000Z: 864000000 of 2678400000 ms");
  });

  it("keeps the end proration exact for any end time: fee x part / full (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 * 86_400_000 - 1 }), (offsetMs) => {
        const s = ending(OCT, new Date(NOV.getTime() + offsetMs));
        const flat = feeCharges(spec(s), 0, s, plans, "USD").find((c) => c.chargeId === "platform" && c.periodStart.getTime() === NOV.getTime())!;
        expect(flat.amount.num * 2_592_000_000n).toBe(30_000_000_000n * BigInt(offsetMs) * flat.amount.den);
      }),
      { numRuns: 200 },
    );
  });
});

describe("minimum commitment of a period (the plan version in force at the period end, rating's rule)", () => {
  const JAN = new Date("2026-01-01T00:00:00Z");
  const MID = new Date("2026-01-15T00:00:00Z");
  const FEB = new Date("2026-02-01T00:00:00Z");
  const spec: PeriodSpec = { interval: "month", anchor: "anniversary", timeZone: "UTC", startedAt: JAN };
  const versions = new Map<string, PlanVersionInfo>([
    [planKey("p", 1), { planId: "p", version: 1, currency: "USD", minimumCommitment: "", charges: [] }],
    [planKey("p", 2), { planId: "p", version: 2, currency: "USD", minimumCommitment: "100", charges: [] }],
  ]);
  const B = 1_000_000_000n;
  const migrated = (from: number, to: number, at: Date, endedAt?: Date): SubscriptionInfo => ({
    subscriptionId: "sub_1",
    customerId: "cus_1",
    startedAt: JAN,
    endedAt,
    seatChanges: [],
    phases: [
      { planId: "p", planVersion: from, start: JAN, end: at },
      { planId: "p", planVersion: to, start: at, end: undefined },
    ],
  });
  const rows: Array<[string, SubscriptionInfo, number, bigint]> = [
    ["migrated on Jan 15 from no commitment to $100: January's commitment is $100", migrated(1, 2, MID), 0, 100n * B],
    ["migrated on Jan 15 from $100 to no commitment: January has none", migrated(2, 1, MID), 0, 0n],
    ["migrated at February's start: January keeps v1's (none), February has v2's", migrated(1, 2, FEB), 0, 0n],
    ["migrated at February's start: February has v2's $100", migrated(1, 2, FEB), 1, 100n * B],
    ["a subscription ended on Jan 10, before its migration on Jan 15: the version in force at its end", migrated(2, 1, MID, new Date("2026-01-10T00:00:00Z")), 0, 100n * B],
  ];
  it.each(rows)("%s", (_name, s, n, want) => {
    expect(minimumCommitmentNanos(spec, n, s, versions)).toBe(want);
  });
});

describe("fees across a mid-period migration (per phase, rating RatePeriod's rule)", () => {
  const B = 1_000_000_000n;
  const versions = new Map<string, PlanVersionInfo>([
    [planKey("p", 1), { planId: "p", version: 1, currency: "USD", minimumCommitment: "", charges: [{ chargeId: "platform", name: "Platform", unit: "USD", kind: "flat", amount: "10" }, { chargeId: "seat", name: "Seats", unit: "USD", kind: "seats", amount: "3" }] }],
    [planKey("p", 2), { planId: "p", version: 2, currency: "USD", minimumCommitment: "100", charges: [{ chargeId: "platform", name: "Platform", unit: "USD", kind: "flat", amount: "20" }, { chargeId: "seat", name: "Seats", unit: "USD", kind: "seats", amount: "6" }] }],
  ]);
  // November (30 days); v1 -> v2 on day 10 (10 of 30 days on v1, 20 on v2); 2 seats
  const AT = new Date("2026-11-11T00:00:00Z");
  const s: SubscriptionInfo = {
    subscriptionId: "sub_m",
    customerId: "cus_1",
    startedAt: NOV,
    endedAt: undefined,
    seatChanges: [{ seats: 2, effectiveAt: NOV }],
    phases: [
      { planId: "p", planVersion: 1, start: NOV, end: AT },
      { planId: "p", planVersion: 2, start: AT, end: undefined },
    ],
  };
  const spec: PeriodSpec = { interval: "month", anchor: "anniversary", timeZone: "UTC", startedAt: NOV };

  it("bills each part of the period by the version in force over it, exact: $10 x 10/30 + $20 x 20/30, seats 2 x ($3 x 10/30 + $6 x 20/30)", () => {
    const nov = feeCharges(spec, 0, s, versions, "USD").filter((c) => c.periodStart.getTime() === NOV.getTime());
    expect(nov.map((c) => [c.chargeId, reduce(c.amount)])).toEqual([
      ["platform", reduce({ num: 10n * B, den: 3n })],
      ["seat", { num: 2n * B, den: 1n }],
      ["platform", reduce({ num: 40n * B, den: 3n })],
      ["seat", { num: 8n * B, den: 1n }],
    ]);
    expect(nov[0]!.description).toContain("prorated for p v1 in force from 2026-11-01T00:00:00.000Z to 2026-11-11T00:00:00.000Z: 864000000 of 2592000000 ms");
    // rounded one line after the other on the charge's key: billed + carried == exact ($16.666...)
    const first = roundLine(nov[0]!.amount, ZERO_RESIDUE, "USD", "half_even", 10_000_000n);
    const second = roundLine(nov[2]!.amount, first.state, "USD", "half_even", 10_000_000n);
    expect(first.roundedNanos + second.roundedNanos).toBe(16_670_000_000n);
    const st = second.state;
    expect((first.roundedNanos + second.roundedNanos + st.residueNanos) * 3n * st.subNanoDen + 3n * st.subNanoNum).toBe(50n * B * st.subNanoDen);
    // December in advance: v2 in full
    expect(feeCharges(spec, 0, s, versions, "USD").filter((c) => c.periodStart.getTime() === DEC.getTime()).map((c) => [c.chargeId, c.amount])).toEqual([["platform", { num: 20n * B, den: 1n }], ["seat", { num: 12n * B, den: 1n }]]);
  });

  it("trues up a fee billed in advance at the old version by the sum of its parts, once per charge", () => {
    const p = periodByIndex(spec, 0);
    const ups = feeTrueUps(p, s, versions, "USD", new Map([["platform", 10n * B], ["seat", 6n * B]]), "UTC");
    expect(ups.map((c) => [c.chargeId, reduce(c.amount)])).toEqual([
      ["platform", reduce({ num: 20n * B, den: 3n })], // $16.666... - $10
      ["seat", { num: 4n * B, den: 1n }], // $10 - $6
    ]);
  });
});

describe("dates in line descriptions are the customer's local dates", () => {
  // February in Tokyo: 2026-01-31T15:00Z .. 2026-02-28T15:00Z (the UTC dates of the instants are a day early)
  const tokyo: PeriodSpec = { interval: "month", anchor: "calendar", timeZone: "Asia/Tokyo", startedAt: new Date("2026-01-31T15:00:00Z") };
  const utc: PeriodSpec = { ...tokyo, timeZone: "UTC", startedAt: new Date("2026-02-01T00:00:00Z") };
  const s = (spec: PeriodSpec, seats: Array<[number, string]> = []): SubscriptionInfo => ({ ...sub("sub_a", "p_a", seats), startedAt: spec.startedAt, phases: [{ planId: "p_a", planVersion: 1, start: spec.startedAt, end: undefined }] });

  it("names fees in advance and fee true-ups by the local dates of the period in the customer's zone (UTC unchanged)", () => {
    const sub1 = s(tokyo, [[1, "2026-01-31T15:00:00Z"]]);
    expect(feeCharges(tokyo, 0, sub1, plans, "USD").map((c) => c.description)).toEqual(["Seats (2026-02-01 to 2026-03-01, in advance)", "Seats (2026-03-01 to 2026-04-01, in advance)"]);
    const [up] = feeTrueUps(periodByIndex(tokyo, 1), s(tokyo, [[1, "2026-01-31T15:00:00Z"], [2, "2026-02-28T15:00:00Z"]]), plans, "USD", new Map([["seats", 10_000_000_000n]]), tokyo.timeZone);
    expect(up!.description).toBe("Seats: charge for seat or fee changes in 2026-03-01 to 2026-04-01 (billed in advance)");
    expect(feeCharges(utc, 0, s(utc, [[1, "2026-02-01T00:00:00Z"]]), plans, "USD").map((c) => c.description)).toEqual(["Seats (2026-02-01 to 2026-03-01, in advance)", "Seats (2026-03-01 to 2026-04-01, in advance)"]);
  });

  it("names late usage and a late top-up's period by local dates", () => {
    const sub1 = s(tokyo);
    const subs = [sub1];
    const feb = periodByIndex(tokyo, 0);
    const [adj] = lateUsageAdjustments([{ chargeId: "tokens", quantity: 1n, priceNanos: 5n, unit: "USD" }], new Map(), sub1, chargeOwners(subs, plans), subs, new Map([["tokens", "Tokens"]]), "USD", usageWindow(feb), { start: feb.start, end: feb.end, timeZone: tokyo.timeZone });
    expect(adj!.description).toBe("Tokens: usage rated late for 2026-02-01 to 2026-03-01");
    expect([adj!.periodStart, adj!.periodEnd]).toEqual([feb.start, feb.end]);
    const mar = periodByIndex(tokyo, 1);
    const t = { grantId: "g_1", unit: "credits", amountNanos: 1_000_000_000n, at: new Date("2026-02-10T00:00:00Z"), costBasis: "0.01", costCurrency: "USD" };
    const { charges } = topUpCharges([t], "USD", "sub_a", mar, tokyo.timeZone, () => feb);
    expect(charges[0]!.description).toContain("for 2026-02-01 to 2026-03-01 (not billed by that period's invoice)");
  });
});
