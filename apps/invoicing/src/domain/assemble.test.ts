import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { roundToMinor, type RoundingMode } from "@nanobill/money";
import { assembleInvoice, carriedResidueLines, CHARGE_ID_CAPTURED_HOLDS, CHARGE_ID_CREDIT_BALANCE, CHARGE_ID_DEFERRED, type AssembleInput, type ChargeInput } from "./assemble.js";
import { defaultSettings, type BillingSettings } from "./invoice.js";
import { LINES_PER_INVOICE_MAX } from "../limits.js";
import { exact, priceTimesQuantity, roundLine, ZERO_RESIDUE, type ResidueState } from "./rounding.js";

const P0 = new Date("2026-01-01T00:00:00Z");
const P1 = new Date("2026-02-01T00:00:00Z");
const USD = 1_000_000_000n;

function charge(kind: ChargeInput["kind"], chargeId: string, amount: bigint | ReturnType<typeof exact>, extra: Partial<ChargeInput> = {}): ChargeInput {
  return {
    kind,
    residueKey: chargeId,
    chargeId,
    subscriptionId: "sub_1",
    description: `${kind} ${chargeId}`,
    quantity: "1",
    unitPrice: "",
    amount: typeof amount === "bigint" ? exact(amount) : amount,
    periodStart: P0,
    periodEnd: P1,
    expandable: kind === "usage",
    ...extra,
  };
}

function input(charges: ChargeInput[], settings: Partial<BillingSettings> = {}, rest: Partial<AssembleInput> = {}): AssembleInput {
  return {
    currency: "USD",
    settings: { ...defaultSettings("cus_1"), ...settings },
    charges,
    minimumCommitmentNanos: 0n,
    creditsAppliedNanos: 0n,
    residues: new Map(),
    deferredIn: undefined,
    periodStart: P0,
    periodEnd: P1,
    ...rest,
  };
}

describe("late credits", () => {
  it("applies prepaid money burned late in earlier periods as credits lines naming them, chained on the credits residue", () => {
    const P_1 = new Date("2025-12-01T00:00:00Z");
    const inv = assembleInvoice(
      input([charge("usage", "ch_a", 10n * USD)], {}, {
        creditsAppliedNanos: 1_005_000n,
        lateCredits: [
          { nanos: 2_005_000n, subscriptionId: "sub_1", periodStart: P_1, periodEnd: P0 },
          { nanos: 0n, subscriptionId: "sub_1", periodStart: P_1, periodEnd: P0 },
          { nanos: -1_000_000n, subscriptionId: "sub_1", periodStart: P_1, periodEnd: P0 },
        ],
      }),
    );
    const credits = inv.lines.filter((l) => l.kind === "credits_applied");
    // the period's own line, then one per non-zero late amount (a negative one takes credits back)
    expect(credits.map((l) => [l.amountNanos, l.periodStart.toISOString(), l.subscriptionId])).toEqual([
      [-1_005_000n, P0.toISOString(), ""],
      [-2_005_000n, P_1.toISOString(), "sub_1"],
      [1_000_000n, P_1.toISOString(), "sub_1"],
    ]);
    expect(credits[1]!.description).toContain("2025-12-01 to 2026-01-01");
    for (let i = 1; i < credits.length; i++) expect(credits[i]!.residueInNanos).toBe(credits[i - 1]!.residueOutNanos);
    expect(inv.totals.creditsAppliedNanos).toBe(credits.reduce((s, l) => s + l.roundedAmountNanos, 0n));
    expect(inv.totals.amountDueNanos).toBe(10n * USD + inv.totals.creditsAppliedNanos);
    // the carried credits residue is exact: rounded credits + the residue carried out == the exact credits
    expect(inv.totals.creditsAppliedNanos + credits[2]!.residueOutNanos).toBe(-1_005_000n - 2_005_000n + 1_000_000n);
  });
});

describe("acceptance examples", () => {
  it("bills 4.4556 x 10.625 = 47.34075 as $47.34 in USD and carries 0.00075", () => {
    const amount = priceTimesQuantity("4.4556", "10.625");
    const inv = assembleInvoice(input([charge("usage", "ch_a", amount)]));
    const line = inv.lines[0]!;
    expect(line.amountNanos).toBe(47_340_750_000n);
    expect(line.roundedAmountNanos).toBe(47_340_000_000n);
    expect(line.amountMinor).toBe(4734n);
    expect(line.residueOutNanos).toBe(750_000n);
    expect(inv.residues.get("ch_a")?.residueNanos).toBe(750_000n);
  });

  it("bills 4.4556 x 10.625 as JPY 47 in yen and carries 0.34075 yen", () => {
    const inv = assembleInvoice(input([charge("usage", "ch_a", priceTimesQuantity("4.4556", "10.625"))], {}, { currency: "JPY" }));
    expect(inv.lines[0]!.amountMinor).toBe(47n);
    expect(inv.lines[0]!.residueOutNanos).toBe(340_750_000n);
  });

  const modes: Array<[RoundingMode, bigint, bigint]> = [
    ["half_even", 368n, 5_000_000n],
    ["half_up", 369n, -5_000_000n],
    ["half_down", 368n, 5_000_000n],
    ["floor", 368n, 5_000_000n],
    ["ceil", 369n, -5_000_000n],
  ];
  for (const [mode, cents, residue] of modes) {
    it(`bills $0.067 x 55 = $3.685 as ${cents} cents with ${mode} and the next period adds the carried half cent`, () => {
      const amount = priceTimesQuantity("0.067", "55");
      const first = assembleInvoice(input([charge("usage", "ch_b", amount)], { roundingMode: mode }));
      expect(first.lines[0]!.amountNanos).toBe(3_685_000_000n);
      expect(first.lines[0]!.amountMinor).toBe(cents);
      expect(first.lines[0]!.residueOutNanos).toBe(residue);
      const second = assembleInvoice(input([charge("usage", "ch_b", amount)], { roundingMode: mode }, { residues: first.residues }));
      expect(second.lines[0]!.residueInNanos).toBe(residue);
      // 3.685 + carried: the two periods bill 7.37 exactly in total, whatever the mode.
      expect(first.lines[0]!.amountMinor + second.lines[0]!.amountMinor).toBe(737n);
      expect(second.lines[0]!.residueOutNanos).toBe(0n);
    });
  }

  it("bills 1,000,000 events of $0.00000015 as $0.15 exactly, not $0.00", () => {
    let booked = 0n;
    for (let i = 0; i < 1_000_000; i++) booked += 150n;
    const inv = assembleInvoice(input([charge("usage", "ch_c", booked)]));
    expect(inv.lines[0]!.roundedAmountNanos).toBe(150_000_000n);
    expect(inv.lines[0]!.amountMinor).toBe(15n);
    expect(inv.totals.amountDueMinor).toBe(15n);
  });

  it("bills $50 subscription + $20 usage - $10 discount = $60, tax 10% = $66, prepaid $30 -> $36", () => {
    const inv = assembleInvoice(
      input([charge("flat", "ch_sub", 50n * USD), charge("usage", "ch_use", 20n * USD)], { discountNanos: 10n * USD, taxRateBps: 1000 }, { creditsAppliedNanos: 30n * USD }),
    );
    expect(inv.totals.subtotalNanos).toBe(70n * USD);
    expect(inv.totals.discountNanos).toBe(-10n * USD);
    expect(inv.totals.taxNanos).toBe(6n * USD);
    expect(inv.totals.totalNanos).toBe(66n * USD);
    expect(inv.totals.creditsAppliedNanos).toBe(-30n * USD);
    expect(inv.totals.amountDueNanos).toBe(36n * USD);
    expect(inv.totals.amountDueMinor).toBe(3600n);
    expect(inv.lines.map((l) => l.kind)).toEqual(["flat", "usage", "discount", "tax", "credits_applied"]);
  });
});

describe("rounding with carried residue", () => {
  it("keeps billed + carried == rated nanos exactly over any number of periods (property)", () => {
    const modes: RoundingMode[] = ["floor", "ceil", "down", "up", "half_up", "half_down", "half_even"];
    fc.assert(
      fc.property(
        fc.constantFrom(...modes),
        fc.constantFrom("USD", "JPY", "KWD", "EUR"),
        fc.array(fc.tuple(fc.bigInt({ min: -(10n ** 12n), max: 10n ** 13n }), fc.bigInt({ min: 1n, max: 1000n })), { minLength: 1, maxLength: 40 }),
        (mode, code, periods) => {
          let state: ResidueState = ZERO_RESIDUE;
          let billed = 0n;
          // Sum of exact amounts as a rational over the product of denominators.
          let num = 0n;
          let den = 1n;
          for (const [n, d] of periods) {
            const r = roundLine({ num: n, den: d }, state, code, mode, 1n);
            billed += r.roundedNanos;
            state = r.state;
            num = num * d + n * den;
            den = den * d;
            // each rounded amount is a whole minor unit
            expect(roundToMinor(r.roundedNanos, code, "half_even").residueNanos).toBe(0n);
          }
          // billed + residueNanos + subNano == exact sum
          const lhs = (billed + state.residueNanos) * den * state.subNanoDen + state.subNanoNum * den;
          expect(lhs).toBe(num * state.subNanoDen);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("keeps invoiced + carried == rated for whole invoices over many periods (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.bigInt({ min: 0n, max: 10n ** 11n }), { minLength: 3, maxLength: 3 }), { minLength: 1, maxLength: 24 }),
        fc.integer({ min: 0, max: 2500 }),
        (periods, taxBps) => {
          let residues = new Map<string, ResidueState>();
          let rated = 0n;
          let invoicedCharges = 0n;
          for (const amounts of periods) {
            const charges = amounts.map((a, i) => charge("usage", `ch_${i}`, a));
            const inv = assembleInvoice(input(charges, { taxRateBps: taxBps }, { residues }));
            residues = new Map([...residues, ...inv.residues]);
            rated += amounts.reduce((s, a) => s + a, 0n);
            invoicedCharges += inv.totals.subtotalNanos;
          }
          let carried = 0n;
          for (const [key, s] of residues) if (key.startsWith("ch_")) carried += s.residueNanos;
          expect(invoicedCharges + carried).toBe(rated);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("minimum billable amount", () => {
  const settings = { minimumBillableNanos: 5n * USD, deferralPeriodsMax: 2 };
  it("defers an invoice below the minimum for at most N periods, then bills it, showing when it was carried from", () => {
    const p = (i: number) => new Date(Date.UTC(2026, i, 1));
    let deferred = undefined as ReturnType<typeof assembleInvoice>["deferralOut"];
    const dues: bigint[] = [];
    for (let i = 0; i < 3; i++) {
      const inv = assembleInvoice(input([charge("usage", "ch_m", 1n * USD)], settings, { deferredIn: deferred, periodStart: p(i), periodEnd: p(i + 1) }));
      dues.push(inv.totals.amountDueNanos);
      if (i === 2) {
        const carried = inv.lines.find((l) => l.kind === "carried_forward")!;
        expect(carried.amountNanos).toBe(2n * USD);
        expect(carried.periodStart).toEqual(p(0));
        expect(carried.description).toContain("since 2026-01-01 (2 periods)");
        expect(inv.deferralOut).toBeUndefined();
      }
      deferred = inv.deferralOut;
    }
    expect(dues).toEqual([0n, 0n, 3n * USD]);
  });

  it("bills a deferred amount once the deferral date has passed", () => {
    const inv = assembleInvoice(
      input([charge("usage", "ch_m", 1n * USD)], { minimumBillableNanos: 5n * USD, deferralUntil: new Date("2026-01-15T00:00:00Z") }),
    );
    expect(inv.totals.amountDueNanos).toBe(1n * USD);
    expect(inv.deferralOut).toBeUndefined();
  });

  it("bills an invoice at or above the minimum at once", () => {
    const inv = assembleInvoice(input([charge("usage", "ch_m", 5n * USD)], settings));
    expect(inv.totals.amountDueNanos).toBe(5n * USD);
    expect(inv.totals.deferredNanos).toBe(0n);
  });
});

describe("credit balance (a negative amount due)", () => {
  const p = (i: number) => new Date(Date.UTC(2026, i, 1));
  const period = (i: number, amount: bigint, rest: Partial<AssembleInput> = {}, settings: Partial<BillingSettings> = {}) =>
    assembleInvoice(input([charge("adjustment", "ch_a", amount, { periodStart: p(i), periodEnd: p(i + 1) })], settings, { periodStart: p(i), periodEnd: p(i + 1), ...rest }));
  const creditLines = (inv: ReturnType<typeof assembleInvoice>) => inv.lines.filter((l) => l.kind === "carried_forward" && l.chargeId === CHARGE_ID_CREDIT_BALANCE);

  it("carries a negative amount due to the next invoice, which applies it: -$12 then $50 -> due 0 then $38", () => {
    const a = period(0, -12n * USD);
    expect(a.totals.totalNanos).toBe(-12n * USD);
    expect(a.totals.amountDueNanos).toBe(0n);
    expect(a.totals.deferredNanos).toBe(-12n * USD);
    expect(a.deferralOut).toEqual({ amountNanos: -12n * USD, since: p(0), periods: 1, lastPeriodEnd: p(1) });
    expect(creditLines(a).map((l) => [l.roundedAmountNanos, l.description])).toEqual([[12n * USD, "Credit balance carried to the next invoice (since 2026-01-01)"]]);
    const b = period(1, 50n * USD, { deferredIn: a.deferralOut });
    expect(creditLines(b).map((l) => [l.roundedAmountNanos, l.periodStart, l.description])).toEqual([[-12n * USD, p(0), "Credit balance from earlier invoices since 2026-01-01 (1 period)"]]);
    expect(b.totals.amountDueNanos).toBe(38n * USD);
    expect(b.deferralOut).toBeUndefined();
    expect(b.deferralShown).toEqual(a.deferralOut);
  });

  it("carries what the next invoice does not use, keeping the first period, without limit", () => {
    let d = period(0, -100n * USD).deferralOut;
    for (let i = 1; i <= 5; i++) {
      const inv = period(i, 10n * USD, { deferredIn: d }, { minimumBillableNanos: 5n * USD, deferralPeriodsMax: 1 });
      expect(inv.totals.amountDueNanos).toBe(0n);
      d = inv.deferralOut;
      expect(d).toEqual({ amountNanos: -(100n - 10n * BigInt(i)) * USD, since: p(0), periods: i + 1, lastPeriodEnd: p(i + 1) });
    }
  });

  it("leaves the negative amount due on the customer's last invoice (owed back: no later invoice)", () => {
    const a = period(0, -12n * USD, { customerEnds: true });
    expect(a.totals.amountDueNanos).toBe(-12n * USD);
    expect(a.deferralOut).toBeUndefined();
    expect(creditLines(a)).toEqual([]);
  });

  it("does not mix a credit with a deferral below the minimum: each starts its own period count", () => {
    const settings = { minimumBillableNanos: 5n * USD, deferralPeriodsMax: 3 };
    // $3 deferred since January, then a -$5 period: -$2 credit carried, counted from February
    const deferred = period(0, 3n * USD, {}, settings).deferralOut!;
    expect(deferred).toMatchObject({ amountNanos: 3n * USD, since: p(0), periods: 1 });
    const credit = period(1, -5n * USD, { deferredIn: deferred }, settings);
    expect(credit.totals.amountDueNanos).toBe(0n);
    expect(credit.deferralOut).toEqual({ amountNanos: -2n * USD, since: p(1), periods: 1, lastPeriodEnd: p(2) });
    // the -$2 credit and a $3 period: $1 due, below the minimum: deferred, counted from March
    const again = period(2, 3n * USD, { deferredIn: credit.deferralOut }, settings);
    expect(again.totals.amountDueNanos).toBe(0n);
    expect(again.deferralOut).toEqual({ amountNanos: 1n * USD, since: p(2), periods: 1, lastPeriodEnd: p(3) });
    expect(again.lines.filter((l) => l.kind === "carried_forward").map((l) => [l.chargeId, l.roundedAmountNanos])).toEqual([
      [CHARGE_ID_CREDIT_BALANCE, -2n * USD],
      [CHARGE_ID_DEFERRED, -1n * USD],
    ]);
  });

  it("neither applies nor carries over an amount carried in another currency: a USD credit on a JPY invoice", () => {
    const usdCredit = { amountNanos: -12n * USD, since: p(0), periods: 1, unit: "USD" };
    const jpy = period(1, 1000n * USD, { deferredIn: usdCredit, currency: "JPY" });
    expect([creditLines(jpy), jpy.totals.amountDueNanos, jpy.deferralOut, jpy.deferralShown]).toEqual([[], 1000n * USD, undefined, undefined]);
    // a negative JPY amount due stands: the one carried amount per customer is the USD credit
    const back = period(1, -300n * USD, { deferredIn: usdCredit, currency: "JPY" });
    expect([back.totals.amountDueNanos, back.deferralOut]).toEqual([-300n * USD, undefined]);
    // in its own currency it is applied as before
    expect(period(1, 50n * USD, { deferredIn: usdCredit }).totals.amountDueNanos).toBe(38n * USD);
  });

  it("carries a net credit with its negative tax: -$100 at 10% tax -> $110 credit", () => {
    const a = period(0, -100n * USD, {}, { taxRateBps: 1000 });
    expect(a.totals.taxNanos).toBe(-10n * USD);
    expect(a.totals.amountDueNanos).toBe(0n);
    expect(a.deferralOut?.amountNanos).toBe(-110n * USD);
  });
});

describe("other lines", () => {
  it("trues the charges up to a minimum commitment", () => {
    const inv = assembleInvoice(input([charge("usage", "ch_u", 30n * USD)], {}, { minimumCommitmentNanos: 100n * USD }));
    const up = inv.lines.find((l) => l.kind === "minimum_true_up")!;
    expect(up.amountNanos).toBe(70n * USD);
    expect(inv.totals.amountDueNanos).toBe(100n * USD);
  });

  // The true-up compares the commitment with the period's own lines only (rating RatePeriod's
  // rule): its usage and the fees covering it (commitmentFees, wherever billed); not fees billed in
  // advance for the next period, one-off top-ups, overage, adjustments for earlier periods.
  const NEXT = { periodStart: P1, periodEnd: new Date("2026-03-01T00:00:00Z") };
  const PREV = { periodStart: new Date("2025-12-01T00:00:00Z"), periodEnd: P0 };
  const trueUpRows: Array<[string, ChargeInput[], ReturnType<typeof exact> | undefined, bigint]> = [
    ["a one-off top-up does not count: usage $0 + top-up $100 owes $100", [charge("usage", "ch_u", 0n), charge("one_off", "grant_1", 100n * USD)], undefined, 100n * USD],
    ["the period's fee counts, the next period's fee billed in advance does not: $100 - $60 = $40", [charge("usage", "ch_u", 0n), charge("flat", "platform", 60n * USD), charge("flat", "platform", 60n * USD, NEXT)], exact(60n * USD), 40n * USD],
    ["a fee covering the period billed on the previous invoice counts: $30 usage + $60 fee owes $10", [charge("usage", "ch_u", 30n * USD), charge("flat", "platform", 60n * USD, NEXT)], exact(60n * USD), 10n * USD],
    ["postpaid overage does not count", [charge("usage", "ch_u", 30n * USD), charge("overage", "_overage:cr", 50n * USD)], undefined, 70n * USD],
    ["late usage and fee adjustments for earlier periods do not count", [charge("usage", "ch_u", 30n * USD), charge("adjustment", "ch_u", 80n * USD, PREV)], undefined, 70n * USD],
    ["usage above the commitment owes nothing", [charge("usage", "ch_u", 130n * USD)], undefined, 0n],
  ];
  it.each(trueUpRows)("true-up: %s", (_name, charges, commitmentFees, want) => {
    const inv = assembleInvoice(input(charges, {}, { minimumCommitmentNanos: 100n * USD, commitmentFees }));
    expect(inv.lines.filter((l) => l.kind === "minimum_true_up").reduce((s, l) => s + l.amountNanos, 0n)).toBe(want);
  });

  it("trues up each subscription's commitment from its own usage and fees only (an invoice over several: the preview)", () => {
    const b = { subscriptionId: "sub_2" };
    const inv = assembleInvoice(
      input([charge("usage", "ch_a", 30n * USD), charge("usage", "ch_b", 200n * USD, b), charge("flat", "fee_b", 5n * USD, b)], {}, {
        commitments: [
          { subscriptionId: "sub_1", minimumNanos: 100n * USD, fees: exact(10n * USD) },
          { subscriptionId: "sub_2", minimumNanos: 150n * USD },
        ],
      }),
    );
    // sub_1: $100 - ($30 usage + $10 fees); sub_2's $200 of usage is above its own $150
    expect(inv.lines.filter((l) => l.kind === "minimum_true_up").map((l) => [l.subscriptionId, l.amountNanos])).toEqual([["sub_1", 60n * USD]]);
    expect(() => assembleInvoice(input([], {}, { minimumCommitmentNanos: 1n, commitments: [{ subscriptionId: "sub_1", minimumNanos: 1n }] }))).toThrow(/not both/);
  });

  // The usage the commitment counts is the period's own, by rating's exact period when the close
  // has it (commitmentUsageNanos: RatePeriod's lines of the subscription), not the usage lines of the
  // hour window, whose boundary hour (off the hour: Asia/Kolkata's 18:30 UTC) belongs to a neighbour.
  const usageRows: Array<[string, ChargeInput[], bigint | undefined, ReturnType<typeof exact> | undefined, bigint]> = [
    ["the hour window bills $95.10, rating's exact period $105.10 (a $10 event at 18:10 before an 18:30 boundary): no true-up", [charge("usage", "calls", 95n * USD), charge("usage", "tcalls", 100_000_000n)], 105_100_000_000n, undefined, 0n],
    ["the hour window holds the neighbour's $10 (billed here), rating's exact period has none of it: $100 - $0", [charge("usage", "calls", 10n * USD)], 0n, undefined, 100n * USD],
    ["rating's usage plus the fees covering the period: $100 - ($30 + $60)", [charge("usage", "calls", 40n * USD)], 30n * USD, exact(60n * USD), 10n * USD],
    ["without rating's period (undefined) the usage lines count: $100 - $95.10", [charge("usage", "calls", 95n * USD), charge("usage", "tcalls", 100_000_000n)], undefined, undefined, 4_900_000_000n],
  ];
  it.each(usageRows)("true-up from rating's exact period: %s", (_name, charges, commitmentUsageNanos, commitmentFees, want) => {
    const inv = assembleInvoice(input(charges, {}, { minimumCommitmentNanos: 100n * USD, commitmentUsageNanos, commitmentFees }));
    expect(inv.lines.filter((l) => l.kind === "minimum_true_up").reduce((s, l) => s + l.amountNanos, 0n)).toBe(want);
    // the usage lines are billed as given, whatever the commitment counted
    expect(inv.lines.filter((l) => l.kind === "usage").map((l) => l.amountNanos)).toEqual(charges.map((c) => c.amount.num));
    // one subscription of an invoice over several (the preview): the same with its own usage
    const multi = assembleInvoice(input(charges, {}, { commitments: [{ subscriptionId: "sub_1", minimumNanos: 100n * USD, usageNanos: commitmentUsageNanos, fees: commitmentFees }] }));
    expect(multi.lines.filter((l) => l.kind === "minimum_true_up").reduce((s, l) => s + l.amountNanos, 0n)).toBe(want);
  });

  it("never discounts more than the subtotal", () => {
    const inv = assembleInvoice(input([charge("usage", "ch_u", 3n * USD)], { discountNanos: 10n * USD }));
    expect(inv.totals.discountNanos).toBe(-3n * USD);
    expect(inv.totals.totalNanos).toBe(0n);
  });

  it("applies a percentage discount and rounds it with its own carried residue", () => {
    const inv = assembleInvoice(input([charge("usage", "ch_u", 10_010_000_000n)], { discountBps: 333 }));
    // 10.01 x 3.33% = 0.333333 -> -0.33, residue -0.003333 carried under _discount
    expect(inv.totals.discountNanos).toBe(-330_000_000n);
    expect(inv.residues.get("_discount")?.residueNanos).toBe(-3_333_000n);
  });

  it("refuses an unknown currency, naming the field", () => {
    expect(() => assembleInvoice(input([charge("usage", "ch_u", 1n)], {}, { currency: "XXX" }))).toThrow(/currency/);
  });
});

describe("per-line minimum billable amount", () => {
  const p = (i: number) => new Date(Date.UTC(2026, i, 1));
  type Out = ReturnType<typeof assembleInvoice>;
  const run = (amounts: bigint[], settings: Partial<BillingSettings>, extra: ChargeInput[] = []) => {
    let lineIn: Out["lineDeferralsOut"] = new Map();
    let residues = new Map<string, ResidueState>();
    const out: Out[] = [];
    amounts.forEach((a, i) => {
      const inv = assembleInvoice(
        input([charge("usage", "ch_u", a, { periodStart: p(i), periodEnd: p(i + 1) }), ...extra], settings, { lineDeferralsIn: lineIn, residues, periodStart: p(i), periodEnd: p(i + 1) }),
      );
      residues = new Map([...residues, ...inv.residues]);
      lineIn = inv.lineDeferralsOut;
      out.push(inv);
    });
    return out;
  };

  it("carries a usage line below the minimum with its period of origin, and bills it once the deferral limit is reached", () => {
    const [a, b, c] = run([400_000_000n, 300_000_000n, 100_000_000n], { lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 2 });
    const carried = (inv: Out) => inv.lines.filter((l) => l.kind === "carried_forward").map((l) => [l.chargeId, l.amountNanos, l.periodStart.toISOString().slice(0, 10)]);
    expect(carried(a!)).toEqual([["ch_u", -400_000_000n, "2026-01-01"]]);
    expect(a!.totals.subtotalNanos).toBe(0n);
    expect(a!.lineDeferralsOut.get("ch_u")).toMatchObject({ amountNanos: 400_000_000n, periods: 1 });
    expect(carried(b!)).toEqual([
      ["ch_u", 400_000_000n, "2026-01-01"],
      ["ch_u", -700_000_000n, "2026-01-01"],
    ]);
    // the third period: 2 periods deferred already, the limit: billed whatever the amount
    expect(carried(c!)).toEqual([["ch_u", 700_000_000n, "2026-01-01"]]);
    expect(c!.lines.find((l) => l.kind === "carried_forward")!.description).toContain("since 2026-01-01 (2 periods)");
    expect(c!.totals.subtotalNanos).toBe(800_000_000n);
    expect(c!.lineDeferralsOut.size).toBe(0);
    expect(c!.lineDeferralsConsumed).toEqual(new Set(["ch_u"]));
  });

  it("bills the carried usage once the accumulated amount reaches the minimum, and taxes only what is billed", () => {
    const [a, b] = run([600_000_000n, 500_000_000n], { lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 5, taxRateBps: 1000 }, [charge("flat", "fee", 10n * USD)]);
    expect(a!.totals.subtotalNanos).toBe(10n * USD);
    expect(a!.totals.taxNanos).toBe(1n * USD);
    expect(b!.totals.subtotalNanos).toBe(11_100_000_000n);
    expect(b!.totals.taxNanos).toBe(1_110_000_000n);
    expect(b!.lineDeferralsOut.size).toBe(0);
  });

  it("bills at once after deferral_until, and never defers a line without a limit", () => {
    const [late] = run([1n], { lineMinimumBillableNanos: 1n * USD, deferralUntil: new Date("2026-01-15T00:00:00Z") });
    expect(late!.lines.filter((l) => l.kind === "carried_forward")).toEqual([]);
    const [open] = run([1n], { lineMinimumBillableNanos: 1n * USD });
    expect(open!.lineDeferralsOut.size).toBe(0);
  });

  it("trues up to the minimum commitment from the rated charges, not from usage carried in or out below the line minimum", () => {
    // commitment $100, line minimum $1: $99.80 + $0.40 rated ($0.40 carried) is $100.20 >= $100: no true-up
    const settings = { lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 3 };
    const periods: Array<[bigint, bigint]> = [
      [99_800_000_000n, 400_000_000n],
      [150n * USD, 300_000_000n],
      [99_500_000_000n, 0n],
      [200n * USD, 0n],
    ];
    let lineIn: Out["lineDeferralsOut"] = new Map();
    let billed = 0n;
    let trueUps = 0n;
    periods.forEach(([a, b], i) => {
      const inv = assembleInvoice(
        input([charge("usage", "ch_a", a, { periodStart: p(i), periodEnd: p(i + 1) }), charge("usage", "ch_b", b, { periodStart: p(i), periodEnd: p(i + 1) })], settings, {
          minimumCommitmentNanos: 100n * USD,
          lineDeferralsIn: lineIn,
          periodStart: p(i),
          periodEnd: p(i + 1),
        }),
      );
      if (i === 0) expect(inv.lines.filter((l) => l.kind === "minimum_true_up")).toEqual([]);
      lineIn = inv.lineDeferralsOut;
      billed += inv.totals.amountDueNanos;
      trueUps += inv.lines.filter((l) => l.kind === "minimum_true_up").reduce((s, l) => s + l.roundedAmountNanos, 0n);
    });
    // period 2: $99.50 + $0.70 carried in: the true-up is $0.50 (rated $99.50), not $0 (the carried $0.70 was rated in periods 0 and 1)
    expect(trueUps).toBe(500_000_000n);
    // rated $550.00 + true-up $0.50 == billed (nothing left carried), not $550.40 + ...
    expect(billed).toBe(550n * USD + 500_000_000n);
    expect(lineIn.size).toBe(0);
  });

  it("leaves captured holds out of the line minimum: their line is every subscription's, and two subscriptions' carried amounts overwrote each other (second review)", () => {
    const inv = assembleInvoice(input([charge("usage", CHARGE_ID_CAPTURED_HOLDS, 300_000_000n), charge("usage", "ch_a", 300_000_000n)], { lineMinimumBillableNanos: USD, deferralPeriodsMax: 3 }));
    expect([...inv.lineDeferralsOut.keys()]).toEqual(["ch_a"]);
    expect(inv.lines.find((l) => l.chargeId === CHARGE_ID_CAPTURED_HOLDS && l.kind === "usage")?.roundedAmountNanos).toBe(300_000_000n);
    expect(inv.totals.amountDueNanos).toBe(300_000_000n);
  });

  it("counts the lines the line minimum carries out in the invoice's line limit", () => {
    const many = Array.from({ length: (LINES_PER_INVOICE_MAX - 6) / 2 + 1 }, (_, i) => charge("usage", `ch_${i}`, 100_000_000n));
    // without a line minimum: one line per charge + the totals lines, inside the limit
    expect(assembleInvoice(input(many)).lines.length).toBe(many.length);
    // with one: each usage charge may also get a carried-out line: over the limit, refused
    expect(() => assembleInvoice(input(many, { lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 2 }))).toThrow(new RegExp(`at most ${LINES_PER_INVOICE_MAX} lines`));
    expect(assembleInvoice(input(many.slice(1), { lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 2 })).lineDeferralsOut.size).toBe(many.length - 1);
  });

  it("carries nothing below the line minimum on a subscription's last invoice, nor below the invoice minimum when the customer has no further invoice", () => {
    const settings = { lineMinimumBillableNanos: 1n * USD, minimumBillableNanos: 5n * USD, deferralPeriodsMax: 3 };
    const carriedIn = new Map([["ch_u", { amountNanos: 300_000_000n, since: p(0), periods: 1, subscriptionId: "sub_1", description: "U" }]]);
    const last = assembleInvoice(input([charge("usage", "ch_u", 400_000_000n)], settings, { lineDeferralsIn: carriedIn, subscriptionEnds: true }));
    expect(last.lineDeferralsOut.size).toBe(0);
    expect(last.lineDeferralsConsumed).toEqual(new Set(["ch_u"]));
    // the invoice minimum still defers it while the customer has other subscriptions
    expect(last.totals.amountDueNanos).toBe(0n);
    expect(last.deferralOut?.amountNanos).toBe(700_000_000n);
    const end = assembleInvoice(input([charge("usage", "ch_u", 400_000_000n)], settings, { lineDeferralsIn: carriedIn, subscriptionEnds: true, customerEnds: true }));
    expect(end.deferralOut).toBeUndefined();
    expect(end.totals.amountDueNanos).toBe(700_000_000n);
  });

  it("keeps invoiced + carried residue + deferred == rated exactly, with line and invoice minimums, over many periods (property)", () => {
    const modes: RoundingMode[] = ["floor", "ceil", "half_up", "half_even", "up", "down", "half_down"];
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.tuple(fc.bigInt({ min: -(10n ** 8n), max: 3n * 10n ** 9n }), fc.bigInt({ min: 1n, max: 7n })), { minLength: 2, maxLength: 2 }), { minLength: 1, maxLength: 24 }),
        fc.bigInt({ min: 0n, max: 2n * 10n ** 9n }),
        fc.bigInt({ min: 0n, max: 5n * 10n ** 9n }),
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom(...modes),
        fc.constantFrom("USD", "JPY", "KWD"),
        fc.constantFrom(0n, 0n, 1n * USD, 2n * USD, 3_300_000_000n, 5n * USD),
        (periods, lineMin, invoiceMin, maxPeriods, mode, code, commitment) => {
          let residues = new Map<string, ResidueState>();
          let lineIn: Out["lineDeferralsOut"] = new Map();
          let deferredIn: Out["deferralOut"];
          let num = 0n;
          let den = 1n;
          let billedCharges = 0n; // usage lines + line carried lines, rounded
          let due = 0n;
          let beforeInvoiceDeferral = 0n; // every rounded line except the invoice-level carried ones
          periods.forEach((amounts, i) => {
            const charges = amounts.map(([n, d], k) => charge("usage", `ch_${k}`, { num: n, den: d }, { periodStart: p(i), periodEnd: p(i + 1) }));
            // the period's rated charges (exact), and the true-up it is owed: commitment - rated, when positive
            let pn = 0n;
            let pd = 1n;
            for (const [n, d] of amounts) {
              pn = pn * d + n * pd;
              pd = pd * d;
            }
            const owed = commitment > 0n && pn < commitment * pd ? commitment * pd - pn : 0n;
            for (const [n, d] of [[pn + owed, pd]] as const) {
              num = num * d + n * den;
              den = den * d;
            }
            const inv = assembleInvoice({
              ...input(charges, { lineMinimumBillableNanos: lineMin, minimumBillableNanos: invoiceMin, deferralPeriodsMax: maxPeriods, roundingMode: mode }),
              minimumCommitmentNanos: commitment,
              currency: code,
              residues,
              lineDeferralsIn: lineIn,
              deferredIn,
              periodStart: p(i),
              periodEnd: p(i + 1),
            });
            residues = new Map([...residues, ...inv.residues]);
            lineIn = inv.lineDeferralsOut;
            deferredIn = inv.deferralOut;
            for (const l of inv.lines) {
              const invoiceLevel = l.kind === "carried_forward" && (l.chargeId === CHARGE_ID_DEFERRED || l.chargeId === CHARGE_ID_CREDIT_BALANCE);
              if (l.kind === "usage" || l.kind === "minimum_true_up" || (l.kind === "carried_forward" && !invoiceLevel)) billedCharges += l.roundedAmountNanos;
              if (!invoiceLevel) beforeInvoiceDeferral += l.roundedAmountNanos;
            }
            due += inv.totals.amountDueNanos;
            // each invoice: due == its rounded lines, never negative (a credit balance is carried on)
            expect(inv.lines.reduce((s, l) => s + l.roundedAmountNanos, 0n)).toBe(inv.totals.amountDueNanos);
            expect(inv.totals.amountDueNanos >= 0n).toBe(true);
          });
          // charges: invoiced + residue + sub-nano + line deferrals == rated + true-ups owed, exactly
          let residueNanos = 0n;
          let subNum = 0n;
          let subDen = 1n;
          for (const [key, s] of residues) {
            if (!key.startsWith("ch_") && key !== "_true_up") continue;
            residueNanos += s.residueNanos;
            subNum = subNum * s.subNanoDen + s.subNanoNum * subDen;
            subDen = subDen * s.subNanoDen;
          }
          const lineDeferred = [...lineIn.values()].reduce((s, d) => s + d.amountNanos, 0n);
          expect(((billedCharges + residueNanos + lineDeferred) * subDen + subNum) * den).toBe(num * subDen);
          // the invoice: due + still deferred == every billed line before the invoice-level deferral
          expect(due + (deferredIn?.amountNanos ?? 0n)).toBe(beforeInvoiceDeferral);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("review fixes: signed tax, discount clamp, deferral periods", () => {
  it("taxes a net-negative subtotal: the credit returns the tax charged on it (a negative tax line)", () => {
    const a1 = assembleInvoice(input([charge("seats", "seats", 100n * USD)], { taxRateBps: 1000 }));
    const a2 = assembleInvoice(input([charge("adjustment", "seats", -50n * USD)], { taxRateBps: 1000 }, { residues: a1.residues }));
    expect([a2.totals.subtotalNanos, a2.totals.taxNanos, a2.totals.totalNanos]).toEqual([-50n * USD, -5n * USD, -55n * USD]);
    // over both invoices: 10% of the net $50 taxable
    expect(a1.totals.taxNanos + a2.totals.taxNanos).toBe(5n * USD);
    const tax = a2.lines.find((l) => l.kind === "tax")!;
    expect(tax.roundedAmountNanos).toBe(-5n * USD);
  });

  it("never bills a discount above the subtotal, even with the discount residue carried in; the difference stays carried", () => {
    // $0.025 fixed on $1.00: billed -$0.02, -$0.005 carried on _discount
    const s = { discountNanos: 25_000_000n };
    const a1 = assembleInvoice(input([charge("usage", "c1", USD)], s));
    expect(a1.residues.get("_discount")!.residueNanos).toBe(-5_000_000n);
    // $0.01 subtotal: the discount is capped at $0.01 (+ -$0.005 carried in would round to -$0.02)
    const a2 = assembleInvoice(input([charge("usage", "c1", 10_000_000n)], s, { residues: a1.residues }));
    const d = a2.lines.find((l) => l.kind === "discount")!;
    expect([a2.totals.discountNanos, a2.totals.totalNanos, d.amountMinor]).toEqual([-10_000_000n, 0n, -1n]);
    // billed + carried == exact + carried in
    expect(d.roundedAmountNanos + d.residueOutNanos).toBe(d.amountNanos + d.residueInNanos);
    expect(a2.residues.get("_discount")!.residueNanos).toBe(d.residueOutNanos);
    expect(d.residueOutNanos).toBe(-5_000_000n);
  });

  it("counts deferral periods, not invoices: another invoice of the period that deferred it last does not count the period again", () => {
    const s = { minimumBillableNanos: 5n * USD, deferralPeriodsMax: 1 };
    const a = assembleInvoice(input([charge("usage", "a", USD)], s));
    expect(a.deferralOut).toMatchObject({ amountNanos: USD, periods: 1 });
    // the customer's other subscription, same period: still within one deferred period
    const b = assembleInvoice(input([charge("usage", "b", USD)], s, { deferredIn: a.deferralOut }));
    expect(b.totals.amountDueNanos).toBe(0n);
    expect(b.deferralOut).toMatchObject({ amountNanos: 2n * USD, periods: 1 });
    // the next period: the one-period limit is reached, billed
    const c = assembleInvoice(input([charge("usage", "a", USD)], s, { deferredIn: b.deferralOut, periodStart: P1, periodEnd: new Date("2026-03-01T00:00:00Z") }));
    expect([c.totals.amountDueNanos, c.deferralOut]).toEqual([3n * USD, undefined]);
  });
});

describe("residue carried with lines sharing a residue key", () => {
  it("sums the last residue out per key (the residue state), not every line's: usage and its late adjustment on one charge", () => {
    // $1.004 -> $1.00, carries +0.004; the adjustment takes it in: 2.004 + 0.004 = 2.008 -> $2.01, carries -0.002
    const a = assembleInvoice(input([charge("usage", "ch_a", 1_004_000_000n), charge("adjustment", "ch_a", 2_004_000_000n)]));
    expect(a.lines.map((l) => [l.residueInNanos, l.residueOutNanos])).toEqual([[0n, 4_000_000n], [4_000_000n, -2_000_000n]]);
    expect(a.residues.get("ch_a")!.residueNanos).toBe(-2_000_000n);
    expect(a.totals.residueCarriedNanos).toBe(-2_000_000n);
    expect(carriedResidueLines(a.lines).map((l) => l.kind)).toEqual(["adjustment"]);
    // exact = billed + residue carried (nothing carried in)
    expect(a.totals.exactNanos).toBe(3_010_000_000n + a.totals.residueCarriedNanos);
  });

  it("equals the sum of the residue states with fee parts, late credits and two top-ups on shared keys", () => {
    const a = assembleInvoice(
      input(
        [
          charge("flat", "fee", 1_004_000_000n),
          charge("flat", "fee", 2_004_000_000n),
          charge("one_off", "grant_1", 12_306_150_000n, { residueKey: "_top_up" }),
          charge("one_off", "grant_2", 1_001_000_000n, { residueKey: "_top_up" }),
          charge("usage", "ch_b", 3_333_000_000n),
        ],
        { taxRateBps: 1000 },
        {
          creditsAppliedNanos: 1_005_000n,
          lateCredits: [{ nanos: 2_006_000n, subscriptionId: "sub_1", periodStart: new Date("2025-12-01T00:00:00Z"), periodEnd: P0 }],
        },
      ),
    );
    let state = 0n;
    for (const st of a.residues.values()) state += st.residueNanos;
    expect(a.totals.residueCarriedNanos).toBe(state);
    let listed = 0n;
    for (const l of carriedResidueLines(a.lines)) listed += l.residueOutNanos;
    expect(listed).toBe(state);
    // the earlier line of each shared key is not listed as carried
    expect(carriedResidueLines(a.lines).map((l) => `${l.kind}:${l.chargeId}`)).toEqual(["flat:fee", "one_off:grant_2", "usage:ch_b", "tax:_tax", "credits_applied:_credits"]);
  });
});

describe("dates in descriptions are the customer's local dates", () => {
  // February in Tokyo: 2026-01-31T15:00Z .. 2026-02-28T15:00Z
  const FEB = new Date("2026-01-31T15:00:00Z");
  const MAR = new Date("2026-02-28T15:00:00Z");
  const APR = new Date("2026-03-31T15:00:00Z");
  const descriptions = (timeZone: string | undefined) => {
    const s = { minimumBillableNanos: 5n * USD, deferralPeriodsMax: 3, lineMinimumBillableNanos: 1n * USD };
    const tz = timeZone === undefined ? {} : { timeZone };
    const a = assembleInvoice(input([charge("usage", "ch_u", 400_000_000n, { periodStart: FEB, periodEnd: MAR }), charge("usage", "ch_v", 2n * USD, { periodStart: FEB, periodEnd: MAR })], s, { periodStart: FEB, periodEnd: MAR, ...tz }));
    const b = assembleInvoice(
      input([charge("usage", "ch_u", 100_000_000n, { periodStart: MAR, periodEnd: APR })], s, {
        periodStart: MAR,
        periodEnd: APR,
        deferredIn: a.deferralOut,
        lineDeferralsIn: a.lineDeferralsOut,
        creditsAppliedNanos: 0n,
        lateCredits: [{ nanos: 1_000_000n, subscriptionId: "sub_1", periodStart: FEB, periodEnd: MAR }],
        ...tz,
      }),
    );
    return [...a.lines, ...b.lines].filter((l) => l.kind === "carried_forward" || l.kind === "credits_applied").map((l) => l.description);
  };

  it("names the deferred and carried periods and late credits by their local dates in the customer's zone", () => {
    expect(descriptions("Asia/Tokyo")).toEqual([
      "usage ch_u: usage below the line minimum, carried to the next invoice (deferred since 2026-02-01)",
      "Below the minimum billable amount: carried to the next invoice (deferred since 2026-02-01)",
      "usage ch_u: usage below the line minimum carried forward since 2026-02-01 (1 period)",
      "usage ch_u: usage below the line minimum, carried to the next invoice (deferred since 2026-02-01)",
      "Prepaid credits consumed late for 2026-02-01 to 2026-03-01 (after its invoice)",
      "Carried forward: below the minimum billable amount since 2026-02-01 (1 period)",
      "Below the minimum billable amount: carried to the next invoice (deferred since 2026-02-01)",
    ]);
  });

  it("keeps UTC dates when no zone (or UTC) is given", () => {
    const utc = descriptions("UTC");
    expect(descriptions(undefined)).toEqual(utc);
    expect(utc[0]).toContain("deferred since 2026-01-31");
    expect(utc).toContain("Prepaid credits consumed late for 2026-01-31 to 2026-02-28 (after its invoice)");
  });
});
