import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CarryAccumulator, Rate, divRound } from "@nanobill/money";
import { compilePlanVersion } from "./compile.js";
import { CostCatalog } from "./cost-catalog.js";
import { TenantCatalog, creditValue, rateEvent } from "./rate-event.js";
import { CARRY_ROUNDING, MemoryRatingState, ScratchState } from "./state.js";
import { T0, catalogFor, charge, costRate, event, llmCosts, llmMatrixVersion, usage, version } from "./fixtures.js";
import { dimsKeyOf, type TierSpec } from "./types.js";

const B = 1_000_000_000n;

describe("rateEvent: dimension keys", () => {
  it("prices a matrix event by its own dimensions whatever came before (a value holding the key separator and '=' took another event's cached price)", () => {
    const v = version([
      charge(
        "llm",
        {
          kind: "matrix",
          cells: [
            { match: { model: "big", region: "eu" }, unitPrice: { amount: "10", perQuantity: "" } },
            { match: { model: "big" }, unitPrice: { amount: "5", perQuantity: "" } },
          ],
          defaultPrice: { amount: "1", perQuantity: "" },
        },
        { usage: usage("llm", ["tokens"], ["model", "region"]) },
      ),
    ]);
    const a = event("ea", "llm", { tokens: 1, model: "big", region: "eu" });
    const b = event("eb", "llm", { tokens: 1, model: "big\u001fregion=eu" });
    for (const order of [[a, b], [b, a]]) {
      const cat = catalogFor(v);
      const st = new MemoryRatingState();
      const price = new Map(order.map((e) => [e.eventId, rateEvent(cat, st, e).lines[0]!]));
      expect(price.get("ea")!.priceNanos).toBe(10n * B);
      expect(price.get("eb")!.priceNanos).toBe(1n * B); // its model is not "big": the default
      expect(price.get("ea")!.dimsKey).not.toBe(price.get("eb")!.dimsKey);
    }
  });

  it("keys two different dimension maps differently, and any printable value as before (k=v joined by U+001F)", () => {
    expect(dimsKeyOf({ model: "gpt-x", metric: "input_tokens" })).toBe("metric=input_tokens\u001fmodel=gpt-x");
    // Printable values keep their stored key text ("=", "\\" included).
    expect(dimsKeyOf({ a: "aGVsbG8=", b: "C:\\jobs", c: "x=y" })).toBe("a=aGVsbG8=\u001fb=C:\\jobs\u001fc=x=y");
    expect(dimsKeyOf({ m: "x\u001fr=y" })).not.toBe(dimsKeyOf({ m: "x", r: "y" }));
    expect(dimsKeyOf({ m: "x\u001e1" })).not.toBe(dimsKeyOf({ m: "x\u001f" }));
    // Names are validated identifiers (compile.ts); values may hold anything.
    const name = fc.constantFrom("a", "b", "model", "metric", "r.x");
    const value = fc.string({ unit: fc.constantFrom("a", "=", "\\", "\u001f", "\u001e", "0", "1"), maxLength: 5 });
    fc.assert(
      fc.property(fc.dictionary(name, value, { maxKeys: 3 }), fc.dictionary(name, value, { maxKeys: 3 }), (x, y) => {
        const same = JSON.stringify(Object.entries(x).sort()) === JSON.stringify(Object.entries(y).sort());
        expect(dimsKeyOf(x) === dimsKeyOf(y)).toBe(same);
      }),
      { numRuns: 5_000 },
    );
  });
});

describe("rateEvent: the event-flow slice", () => {
  it("prices 1,234 input + 567 output tokens at 8,755,000 nanos and costs them at 4,377,500", () => {
    const cat = catalogFor(llmMatrixVersion(), llmCosts());
    const r = rateEvent(cat, new MemoryRatingState(), event("evt_1", "llm.call", { model: "gpt-x", provider: "openai", input_tokens: 1234, output_tokens: 567 }));
    expect(r.subscriptionId).toBe("sub_1");
    const byMetric = Object.fromEntries(r.lines.map((l) => [l.dimensions.metric, l]));
    expect(byMetric.input_tokens).toMatchObject({ chargeId: "llm_tokens", quantity: 1234n, priceNanos: 3_085_000n, costNanos: 1_542_500n, unit: "USD", costUnit: "USD", status: "final" });
    expect(byMetric.output_tokens).toMatchObject({ quantity: 567n, priceNanos: 5_670_000n, costNanos: 2_835_000n });
    expect(r.lines.reduce((s, l) => s + l.priceNanos, 0n)).toBe(8_755_000n);
    expect(r.lines.reduce((s, l) => s + l.costNanos, 0n)).toBe(4_377_500n);
    expect(r.model).toBe("gpt-x");
  });

  it("records an unmatched model as unpriced with the reason, still costing it when a rate exists", () => {
    const cat = catalogFor(llmMatrixVersion(), [...llmCosts(), costRate("openai", "gpt-y", "input_tokens", "1")]);
    const r = rateEvent(cat, new MemoryRatingState(), event("evt_2", "llm.call", { model: "gpt-y", provider: "openai", input_tokens: 1000 }));
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n, costNanos: 1_000_000n });
    expect(r.lines[0]!.reason).toMatch(/no matrix cell/);
  });

  it("gives an event of a customer without a subscription a cost-only line", () => {
    const cat = catalogFor(llmMatrixVersion(), llmCosts());
    const r = rateEvent(cat, new MemoryRatingState(), event("evt_3", "llm.call", { model: "gpt-x", provider: "openai", input_tokens: 1000 }, T0 + 1000, "cus_unknown"));
    expect(r.lines).toEqual([expect.objectContaining({ chargeId: "", status: "cost_only", costNanos: 1_250_000n, reason: "unknown customer" })]);
  });
});

describe("rateEvent: credits", () => {
  it("burns 6 premium requests at 3 credits each as 18 credits", () => {
    const v = version([
      charge(
        "assist",
        { kind: "credits", tierProperty: "model", tiers: [{ tier: "premium", values: ["big"], creditsPerUnit: "3" }, { tier: "basic", values: ["small"], creditsPerUnit: "1" }], defaultCreditsPerUnit: "" },
        { unit: "cr_credits", usage: usage("assist.request", [], ["model"]) },
      ),
    ]);
    const cat = catalogFor(v);
    const st = new MemoryRatingState();
    let total = 0n;
    for (let i = 0; i < 6; i++) total += rateEvent(cat, st, event(`e${i}`, "assist.request", { model: "big" })).lines[0]!.priceNanos;
    expect(total).toBe(18n * B);
    const small = rateEvent(cat, st, event("s", "assist.request", { model: "small" })).lines[0]!;
    expect(small).toMatchObject({ priceNanos: B, unit: "cr_credits" });
    expect(rateEvent(cat, st, event("u", "assist.request", { model: "other" })).lines[0]!.status).toBe("unpriced");
  });
});

describe("rateEvent: cost catalog", () => {
  it("uses the rate in force at the event time and a tenant override over the global rate", () => {
    const costs = [
      costRate("openai", "gpt-x", "input_tokens", "1", "1000000", 0, "global"),
      costRate("openai", "gpt-x", "input_tokens", "2", "1000000", T0 + 10_000, "global"),
      costRate("openai", "gpt-x", "input_tokens", "3", "1000000", T0 + 20_000, "tenant"),
    ];
    const cat = catalogFor(llmMatrixVersion(), costs);
    const cost = (ts: number): bigint => rateEvent(cat, new MemoryRatingState(), event("e", "llm.call", { model: "gpt-x", provider: "openai", input_tokens: 1000 }, ts)).lines[0]!.costNanos;
    expect(cost(T0 + 5_000)).toBe(1_000_000n);
    expect(cost(T0 + 15_000)).toBe(2_000_000n);
    expect(cost(T0 + 25_000)).toBe(3_000_000n);
  });
});

const perUnitSubNano = (amount: string) =>
  version([charge("tok", { kind: "per_unit", unitPrice: { amount, perQuantity: "1000000" } }, { usage: usage("llm.call", ["input_tokens"]) })]);

describe("rateEvent: carried remainders (property)", () => {
  it("per-event prices of a sub-nano rate sum to the price of the summed quantity, to the nano, across a restore", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("0.0375", "2.50", "0.15", "1.000000001", "0.333"),
        fc.array(fc.bigInt({ min: 0n, max: 10_000_000n }), { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 0, max: 59 }),
        (amount, qs, restoreAt) => {
          const cat = catalogFor(perUnitSubNano(amount));
          let st = new MemoryRatingState();
          let sum = 0n;
          qs.forEach((q, i) => {
            if (i === restoreAt) {
              // a restart: the state is restored from persisted residues only
              const next = new MemoryRatingState();
              for (const [k, acc] of st.carries) next.setCarry(k, new CarryAccumulator(CARRY_ROUNDING, acc.carried));
              st = next;
            }
            sum += rateEvent(cat, st, event(`e${i}`, "llm.call", { input_tokens: q })).lines[0]!.priceNanos;
          });
          const r = Rate.parse(amount, "a", { perQuantity: 1_000_000n });
          const total = qs.reduce((a, b) => a + b, 0n);
          expect(sum).toBe(divRound(r.num * total, r.den, "half_up"));
        },
      ),
    );
  });

  it("$0.0000375 per 1M tokens (0.0375 nano a token) books 375 nanos for 10,000 single-token events", () => {
    const cat = catalogFor(perUnitSubNano("0.0000375"));
    const st = new MemoryRatingState();
    let sum = 0n;
    for (let i = 0; i < 10_000; i++) sum += rateEvent(cat, st, event(`e${i}`, "llm.call", { input_tokens: 1 })).lines[0]!.priceNanos;
    expect(sum).toBe(375n);
  });
});

function tier(upTo: string, amount: string, flatAmount = ""): TierSpec {
  return { upTo, unitPrice: { amount, perQuantity: "" }, flatAmount };
}

describe("rateEvent: period-priced charges (property)", () => {
  const graduated = version([charge("req", { kind: "graduated", tiers: [tier("1000", "0.01"), tier("10000", "0.008"), tier("0", "0.005")] }, { usage: usage("api.request", ["count"]) })]);
  const volume = version([
    charge("calls", { kind: "volume", tiers: [tier("10000", "0.0010", "10"), tier("50000", "0.0008", "10"), tier("0", "0.0006", "10")] }, { usage: usage("api.request", ["count"]) }),
  ]);

  it("books 15,000 graduated requests in any split at $107 in total", () => {
    const cat = catalogFor(graduated);
    const st = new MemoryRatingState();
    let sum = 0n;
    for (let i = 0; i < 15; i++) {
      const l = rateEvent(cat, st, event(`e${i}`, "api.request", { count: 1000 })).lines[0]!;
      expect(l.status).toBe("provisional");
      sum += l.priceNanos;
    }
    expect(sum).toBe(107n * B);
  });

  it("period totals do not depend on the order events arrive in", () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: 30_000n }), { minLength: 1, maxLength: 30 }), fc.boolean(), (qs, useVolume) => {
        const v = useVolume ? volume : graduated;
        const run = (order: bigint[]): bigint => {
          const cat = catalogFor(v);
          const st = new MemoryRatingState();
          return order.reduce((s, q, i) => s + rateEvent(cat, st, event(`e${i}`, "api.request", { count: q })).lines[0]!.priceNanos, 0n);
        };
        expect(run(qs)).toBe(run([...qs].reverse()));
        expect(run(qs)).toBe(run([qs.reduce((a, b) => a + b, 0n)]));
      }),
    );
  });

  it("keeps separate running totals per billing period", () => {
    const cat = catalogFor(graduated);
    const st = new MemoryRatingState();
    const nov = rateEvent(cat, st, event("a", "api.request", { count: 1000 }, T0 + 1000)).lines[0]!;
    const dec = rateEvent(cat, st, event("b", "api.request", { count: 1000 }, Date.UTC(2026, 11, 2))).lines[0]!;
    expect(nov.priceNanos).toBe(10n * B);
    expect(dec.priceNanos).toBe(10n * B);
  });
});

describe("rateEvent: outcomes", () => {
  const v = version([
    charge(
      "resolved",
      {
        kind: "outcome",
        amount: "0.99",
        conditionProperty: "resolved",
        conditionValue: "true",
        verificationWindowSeconds: String(7 * 86_400),
        reversalEventType: "ticket.reopened",
        taskIdProperty: "task_id",
        attemptEventTypes: ["llm.call"],
      },
      { usage: usage("ticket.resolved", []) },
    ),
  ]);

  it("attributes the cost of attempts to the outcome, keeps it pending and claws it back on a reversal in the window", () => {
    const cat = catalogFor(v, llmCosts());
    const st = new MemoryRatingState();
    const a1 = rateEvent(cat, st, event("a1", "llm.call", { task_id: "t1", model: "gpt-x", provider: "openai", input_tokens: 1000 }));
    const a2 = rateEvent(cat, st, event("a2", "llm.call", { task_id: "t1", model: "gpt-x", provider: "openai", output_tokens: 1000 }));
    expect(a1.lines[0]).toMatchObject({ chargeId: "", costNanos: 1_250_000n, status: "cost_only" });
    expect(a2.lines[0]!.costNanos).toBe(5_000_000n);
    const o = rateEvent(cat, st, event("o1", "ticket.resolved", { task_id: "t1", resolved: "true" }));
    expect(o.lines[0]).toMatchObject({ chargeId: "resolved", priceNanos: 990_000_000n, status: "pending", attributedCostNanos: 6_250_000n });
    const dup = rateEvent(cat, st, event("o2", "ticket.resolved", { task_id: "t1", resolved: "true" }));
    expect(dup.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n });
    const rev = rateEvent(cat, st, event("r1", "ticket.reopened", { task_id: "t1" }, T0 + 2 * 86_400_000));
    expect(rev.lines[0]).toMatchObject({ chargeId: "resolved", priceNanos: -990_000_000n, status: "clawed_back" });
  });

  it("does not bill an outcome whose condition fails, nor claw back after the window", () => {
    const cat = catalogFor(v);
    const st = new MemoryRatingState();
    expect(rateEvent(cat, st, event("o1", "ticket.resolved", { task_id: "t2", resolved: "false" })).lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n });
    rateEvent(cat, st, event("o2", "ticket.resolved", { task_id: "t3", resolved: "true" }));
    const late = rateEvent(cat, st, event("r", "ticket.reopened", { task_id: "t3" }, T0 + 9 * 86_400_000));
    expect(late.lines.filter((l) => l.chargeId !== "")).toEqual([]);
  });

  it("does not claw back an outcome with a reversal timed before it (arriving after it): the window starts at the outcome", () => {
    const cat = catalogFor(v);
    const st = new MemoryRatingState();
    const o = rateEvent(cat, st, event("o4", "ticket.resolved", { task_id: "t4", resolved: "true" }, T0 + 2 * 3_600_000));
    expect(o.lines[0]).toMatchObject({ status: "pending", priceNanos: 990_000_000n });
    const early = rateEvent(cat, st, event("r4", "ticket.reopened", { task_id: "t4" }, T0 + 3_600_000));
    expect(early.lines.filter((l) => l.chargeId !== "")).toEqual([]);
    // A reversal inside the window still claws it back.
    const inWindow = rateEvent(cat, st, event("r5", "ticket.reopened", { task_id: "t4" }, T0 + 3 * 3_600_000));
    expect(inWindow.lines[0]).toMatchObject({ status: "clawed_back", priceNanos: -990_000_000n });
  });
});

describe("rateEvent: percentage, dynamic and overrides", () => {
  it("charges 2.9% + $0.30 with a $0.50 minimum and a $5 maximum", () => {
    const v = version([
      charge("fee", { kind: "percentage", amountProperty: "amount", percent: "2.9", fixedAmount: "0.30", minAmount: "0.50", maxAmount: "5" }, { usage: usage("payment", []) }),
    ]);
    const cat = catalogFor(v);
    const price = (amount: string): bigint => rateEvent(cat, new MemoryRatingState(), event("p", "payment", { amount })).lines[0]!.priceNanos;
    expect(price("100")).toBe(3_200_000_000n);
    expect(price("1")).toBe(500_000_000n);
    expect(price("1000")).toBe(5_000_000_000n);
  });

  it("takes a dynamic price from the event exactly", () => {
    const v = version([charge("dyn", { kind: "dynamic", priceProperty: "price" }, { usage: usage("job", []) })]);
    const r = rateEvent(catalogFor(v), new MemoryRatingState(), event("j", "job", { price: "0.000000123" }));
    expect(r.lines[0]!.priceNanos).toBe(123n);
  });

  it("leaves an event priced past 10^9 units unpriced with the reason (it threw and became a poison event), and 10^9 units exactly priced", () => {
    const dyn = version([charge("dyn", { kind: "dynamic", priceProperty: "price" }, { usage: usage("job", []) })]);
    const r = rateEvent(catalogFor(dyn), new MemoryRatingState(), event("j", "job", { price: "1000000000000" }));
    expect(r.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n, reason: expect.stringMatching(/^price exceeds 1000000000000000000 nanos/) });
    expect(rateEvent(catalogFor(dyn), new MemoryRatingState(), event("j", "job", { price: "1000000000" })).lines[0]).toMatchObject({ status: "final", priceNanos: 10n ** 18n });
    const perUnit = version([charge("x", { kind: "per_unit", unitPrice: { amount: "1000000000", perQuantity: "" } }, { usage: usage("api", ["n"]) })]);
    expect(rateEvent(catalogFor(perUnit), new MemoryRatingState(), event("e", "api", { n: 10 })).lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n });
  });

  it("books no cost past 10^9 units for one event (it threw and became a poison event), and says so on the line", () => {
    const cat = catalogFor(llmMatrixVersion(), llmCosts());
    const r = rateEvent(cat, new MemoryRatingState(), event("big", "llm.call", { model: "gpt-x", provider: "openai", input_tokens: 10n ** 16n }));
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatchObject({ costNanos: 0n, costUnit: "USD", reason: expect.stringMatching(/cost exceeds 1000000000000000000 nanos/) });
  });

  it("applies a customer's price override in its time range only", () => {
    const cat = catalogFor(perUnitSubNano("2"), [], [
      { overrideId: "ovr_1", customerId: "cus_1", chargeId: "tok", pricing: { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "1000000" } }, includedQuantity: "", startMs: T0 + 10_000, endMs: T0 + 20_000 },
    ]);
    const price = (ts: number): bigint => rateEvent(cat, new MemoryRatingState(), event("e", "llm.call", { input_tokens: 1_000_000 }, ts)).lines[0]!.priceNanos;
    expect(price(T0 + 5_000)).toBe(2n * B);
    expect(price(T0 + 15_000)).toBe(1n * B);
    expect(price(T0 + 25_000)).toBe(2n * B);
  });
});

describe("ScratchState", () => {
  it("lets Quote see the running state without changing it", () => {
    const cat = catalogFor(perUnitSubNano("0.0000375"));
    const st = new MemoryRatingState();
    rateEvent(cat, st, event("a", "llm.call", { input_tokens: 20 }));
    const before = st.carries.get([...st.carries.keys()][0]!)!.carried;
    const q = rateEvent(cat, new ScratchState(st), event("b", "llm.call", { input_tokens: 20 }));
    expect(q.lines[0]!.priceNanos).toBe(1n);
    expect(st.carries.get([...st.carries.keys()][0]!)!.carried).toEqual(before);
  });
});

describe("rateEvent: spending cap in real time", () => {
  it("stops booking at the cap and books the rest as provisional zero", () => {
    const v = version([charge("tok", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { usage: usage("api", ["n"]) })], { spendingCapAmount: "10" });
    const cat = catalogFor(v);
    const st = new MemoryRatingState();
    const booked = [4, 4, 4, 4].map((n, i) => rateEvent(cat, st, event(`e${i}`, "api", { n })).lines[0]!);
    expect(booked.map((l) => l.priceNanos)).toEqual([4n * B, 4n * B, 2n * B, 0n]);
    expect(booked[2]).toMatchObject({ status: "provisional", reason: "spending cap reached" });
  });
});

describe("rateEvent: a spending cap changed by a mid-period migration (the cap of the version in force at each event, one running total for the period)", () => {
  const DAY = 86_400_000;
  const MID = T0 + 15 * DAY;
  const per = () => charge("calls", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { usage: usage("api", ["n"]) });
  // sub_1 on v1 until MID, then v2 (same plan); the caps given per version.
  const migrated = (cap1: string, cap2: string) =>
    new TenantCatalog({
      tenant: "tnt_test",
      customers: [{ customerId: "cus_1", name: "", currency: "USD", billingAnchorMs: T0, timeZone: "UTC", createTimeMs: T0 }],
      subscriptions: [
        { subscriptionId: "sub_1", customerId: "cus_1", phases: [{ planId: "p", planVersion: 1, startMs: T0, endMs: MID }, { planId: "p", planVersion: 2, startMs: MID, endMs: null }], seatChanges: [], startMs: T0, endMs: null },
      ],
      versions: [
        { planId: "p", version: compilePlanVersion(version([per()], { version: 1, spendingCapAmount: cap1 }), "version") },
        { planId: "p", version: compilePlanVersion(version([per()], { version: 2, spendingCapAmount: cap2 }), "version") },
      ],
      overrides: [],
      costs: new CostCatalog([]),
    });
  const rate = (cat: TenantCatalog, st: MemoryRatingState, id: string, day: number, n: number) => rateEvent(cat, st, event(id, "api", { n }, T0 + day * DAY + 9 * 3_600_000)).lines[0]!.priceNanos;

  it("C: a $20 cap removed on day 15 caps the $30 before it to $20 and lets the $10 after it through: $30", () => {
    const cat = migrated("20", "");
    const st = new MemoryRatingState();
    const booked = [rate(cat, st, "a", 1, 10), rate(cat, st, "b", 2, 10), rate(cat, st, "c", 3, 10), rate(cat, st, "d", 19, 10)];
    expect(booked).toEqual([10n * B, 10n * B, 0n, 10n * B]);
  });

  it("D: a $20 cap added on day 15 after $30 of uncapped usage lets nothing more through: $30 (before: the running total restarted at the cap, $50)", () => {
    const cat = migrated("", "20");
    const st = new MemoryRatingState();
    const booked = [rate(cat, st, "a", 1, 10), rate(cat, st, "b", 2, 10), rate(cat, st, "c", 3, 10), rate(cat, st, "d", 19, 10), rate(cat, st, "e", 20, 10), rate(cat, st, "f", 21, 10)];
    expect(booked).toEqual([10n * B, 10n * B, 10n * B, 0n, 0n, 0n]);
  });

  it("a $20 cap added after $15 of uncapped usage lets the remaining $5 through", () => {
    const cat = migrated("", "20");
    const st = new MemoryRatingState();
    expect([rate(cat, st, "a", 1, 15), rate(cat, st, "b", 19, 10), rate(cat, st, "c", 20, 10)]).toEqual([15n * B, 5n * B, 0n]);
  });

  it("a late event before the migration is capped at its place in the period: the later part's usage does not count before it", () => {
    const cat = migrated("20", "");
    const st = new MemoryRatingState();
    // $10 after the migration (uncapped) first, then $30 before it (under the $20 cap).
    expect([rate(cat, st, "d", 19, 10), rate(cat, st, "a", 1, 30)]).toEqual([10n * B, 20n * B]);
  });
});

describe("creditValue", () => {
  it("values credits at the exchange rate in force at the event time, rounded half-even once", () => {
    const rates = [
      { effectiveMs: 0, rate: Rate.parse("0.01", "r"), currency: "USD" },
      { effectiveMs: 1000, rate: Rate.parse("0.015", "r"), currency: "USD" },
    ];
    expect(creditValue(rates, 18n * B, 500)).toBe(180_000_000n);
    expect(creditValue(rates, 18n * B, 1500)).toBe(270_000_000n);
    expect(creditValue(rates, 1n, 1500)).toBe(0n); // 0.015 nano -> 0
    expect(creditValue(undefined, 18n * B, 1500)).toBe(0n);
  });
});

describe("rateEvent: review fixes (spending cap, outcomes, carries, quantities)", () => {
  const volumeTiers = [
    { upTo: "1000", unitPrice: { amount: "0.1", perQuantity: "" }, flatAmount: "" },
    { upTo: "", unitPrice: { amount: "0.08", perQuantity: "" }, flatAmount: "" },
  ];
  const fee = () => charge("a_fee", { kind: "per_unit", unitPrice: { amount: "3", perQuantity: "" } }, { usage: usage("api", []) });
  const vol = () => charge("vol", { kind: "volume", tiers: volumeTiers }, { usage: usage("api", ["n"]) });

  it("above the cap, an event whose volume step is negative books 0 on every line (no positive line is raised to offset it)", () => {
    const cat = catalogFor(version([fee(), vol()], { spendingCapAmount: "100" }));
    const st = new MemoryRatingState();
    for (let i = 0; i < 10; i++) rateEvent(cat, st, event(`e${i}`, "api", { n: 99 }));
    // 10 x ($3 + 99 x $0.10) = $129 uncapped, $100 booked; the next event crosses 1,000 units: the
    // volume step is negative (-$18.20), the fee +$3: the customer stays above the cap.
    const r = rateEvent(cat, st, event("x", "api", { n: 20 }));
    expect(r.lines.map((l) => [l.chargeId, l.priceNanos])).toEqual([["a_fee", 0n], ["vol", 0n]]);
    expect(r.lines.every((l) => l.reason.includes("spending cap reached"))).toBe(true);
  });

  it("below the cap again after a negative step, the event books the difference on its negative lines only", () => {
    // Volume tiers with a steep drop: up to 1,000 units at $0.10, above at $0.01; a $3 fee per
    // event; cap $100. 9 events of 99 units: $27 + $89.10 = $116.10 uncapped, $100 booked. Then 200
    // units: the volume total drops to 1,091 x $0.01 = $10.91 (step -$78.19), the fee adds $3:
    // uncapped $40.91, below the cap, so this event books 40.91 - 100 = -$59.09, all of it on the
    // (negative) volume line; the fee line books 0.
    const steep = [
      { upTo: "1000", unitPrice: { amount: "0.1", perQuantity: "" }, flatAmount: "" },
      { upTo: "", unitPrice: { amount: "0.01", perQuantity: "" }, flatAmount: "" },
    ];
    const cat = catalogFor(version([fee(), charge("vol", { kind: "volume", tiers: steep }, { usage: usage("api", ["n"]) })], { spendingCapAmount: "100" }));
    const st = new MemoryRatingState();
    let booked = 0n;
    for (let i = 0; i < 9; i++) booked += rateEvent(cat, st, event(`e${i}`, "api", { n: 99 })).lines.reduce((s, l) => s + l.priceNanos, 0n);
    expect(booked).toBe(100n * B);
    const r = rateEvent(cat, st, event("x", "api", { n: 200 }));
    const by = Object.fromEntries(r.lines.map((l) => [l.chargeId, l.priceNanos]));
    expect(by).toEqual({ a_fee: 0n, vol: -59_090_000_000n });
    expect(booked + by["vol"]!).toBe(40_910_000_000n);
  });

  it("hands an outcome to the wallet at its capped price (the cap also binds outcome charges)", () => {
    const outcome = charge(
      "resolved",
      { kind: "outcome", amount: "0.99", conditionProperty: "", conditionValue: "", verificationWindowSeconds: "3600", reversalEventType: "", taskIdProperty: "task", attemptEventTypes: [] },
      { usage: usage("done", []) },
    );
    const api = charge("api", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { usage: usage("call", []) });
    const cat = catalogFor(version([api, outcome], { spendingCapAmount: "10" }));
    const st = new MemoryRatingState();
    for (let i = 0; i < 10; i++) rateEvent(cat, st, event(`a${i}`, "call", {}));
    const r = rateEvent(cat, st, event("o1", "done", { task: "t1" }));
    expect(r.lines[0]).toMatchObject({ chargeId: "resolved", priceNanos: 0n, status: "pending" });
    const task = [...st.tasks.values()][0]!;
    expect(task.outcome).toMatchObject({ eventId: "o1", priceNanos: 0n });
  });

  it("counts outcomes and clawbacks in the period totals", () => {
    const outcome = charge(
      "resolved",
      { kind: "outcome", amount: "0.99", conditionProperty: "", conditionValue: "", verificationWindowSeconds: "3600", reversalEventType: "reopened", taskIdProperty: "task", attemptEventTypes: [] },
      { usage: usage("done", []) },
    );
    const cat = catalogFor(version([outcome]));
    const st = new MemoryRatingState();
    rateEvent(cat, st, event("o1", "done", { task: "t1" }));
    rateEvent(cat, st, event("o2", "done", { task: "t2" }));
    const totals = () => [...st.periods.entries()].filter(([k]) => k.includes("resolved")).map(([, v]) => [v.quantity, v.bookedNanos]);
    expect(totals()).toEqual([[2n, 1_980_000_000n]]);
    rateEvent(cat, st, event("r1", "reopened", { task: "t1" }, T0 + 3_600_000 + 60_000));
    expect(totals()).toEqual([[1n, 990_000_000n]]);
  });

  it("claws back a confirmed outcome when a reversal timed inside its window arrives late", () => {
    const outcome = charge(
      "resolved",
      { kind: "outcome", amount: "0.99", conditionProperty: "", conditionValue: "", verificationWindowSeconds: "3600", reversalEventType: "reopened", taskIdProperty: "task", attemptEventTypes: [] },
      { usage: usage("done", []) },
    );
    const cat = catalogFor(version([outcome]));
    const st = new MemoryRatingState();
    rateEvent(cat, st, event("o1", "done", { task: "t1" }));
    const task = [...st.tasks.values()][0]!;
    task.outcome!.status = "confirmed"; // what confirmDueOutcomes stores once the window has passed
    // Timed 59 minutes after the outcome (inside the window), received after the confirmation.
    const r = rateEvent(cat, st, event("r1", "reopened", { task: "t1" }, T0 + 3_600_000 + 59 * 60_000));
    expect(r.lines).toEqual([expect.objectContaining({ chargeId: "resolved", quantity: -1n, priceNanos: -990_000_000n, status: "clawed_back" })]);
    expect(r.lines[0]!.reason).toMatch(/after its confirmation/);
    expect(task.outcome!.status).toBe("clawed_back");
    // A reversal timed after the window changes nothing.
    const st2 = new MemoryRatingState();
    rateEvent(cat, st2, event("o1", "done", { task: "t1" }));
    expect(rateEvent(cat, st2, event("r2", "reopened", { task: "t1" }, T0 + 2 * 3_600_000 + 1)).lines.filter((l) => l.chargeId === "resolved")).toEqual([]);
  });

  it("gives an outcome with a verification window but no task id its own task, so it can be confirmed", () => {
    const outcome = charge(
      "resolved",
      { kind: "outcome", amount: "2", conditionProperty: "", conditionValue: "", verificationWindowSeconds: "3600", reversalEventType: "", taskIdProperty: "", attemptEventTypes: [] },
      { usage: usage("done", []) },
    );
    const st = new MemoryRatingState();
    const r = rateEvent(catalogFor(version([outcome])), st, event("o", "done", {}));
    expect(r.lines[0]).toMatchObject({ status: "pending", priceNanos: 2n * B });
    expect([...st.tasks.values()].map((t) => [t.outcome?.eventId, t.outcome?.status, t.outcome?.priceNanos])).toEqual([["o", "pending", 2n * B]]);
  });

  it("books the same for zero-quantity events whether a carry runs on or is restored from its residue", () => {
    const v = version([charge("tok", { kind: "per_unit", unitPrice: { amount: "0.5", perQuantity: "1000000000" } }, { usage: usage("llm", ["n"]) })]);
    const cat = catalogFor(v);
    const run = (restore: boolean) => {
      let st = new MemoryRatingState();
      const out: bigint[] = [];
      for (const [id, n] of [["e1", 1], ["e2", 0], ["e3", 0], ["e4", 1]] as const) {
        out.push(rateEvent(cat, st, event(id, "llm", { n })).lines[0]!.priceNanos);
        if (restore) {
          // what a new batch sees: every carry rebuilt from its stored residue alone
          const next = new MemoryRatingState();
          for (const [k, c] of st.carries) next.carries.set(k, new CarryAccumulator(CARRY_ROUNDING, c.carried));
          for (const [k, p] of st.periods) next.periods.set(k, p);
          st = next;
        }
      }
      return out;
    };
    expect(run(false)).toEqual([1n, 0n, 0n, 0n]);
    expect(run(true)).toEqual(run(false));
  });

  it("refuses a string quantity beyond int64 as unpriced instead of failing", () => {
    const v = version([charge("tok", { kind: "per_unit", unitPrice: { amount: "1", perQuantity: "" } }, { usage: usage("llm", ["n"]) })]);
    const r = rateEvent(catalogFor(v), new MemoryRatingState(), event("e", "llm", { n: "9999999999999999999" }));
    expect(r.lines[0]).toMatchObject({ status: "unpriced", priceNanos: 0n });
    expect(r.lines[0]!.reason).toMatch(/beyond int64/);
  });
});

describe("rateEvent: several subscriptions in force (the first whose plan prices the event type)", () => {
  const platform = version([charge("platform", { kind: "flat", amount: "100" })]);
  const tokens = (chargeId: string, amount: string) => version([charge(chargeId, { kind: "per_unit", unitPrice: { amount, perQuantity: "" } }, { usage: usage("llm.call", ["tokens"]) })]);
  const catalogOf = (subs: Array<[string, string, number]>, versions: Array<[string, ReturnType<typeof version>]>) =>
    new TenantCatalog({
      tenant: "tnt_test",
      customers: [{ customerId: "cus_1", name: "", currency: "USD", billingAnchorMs: T0, timeZone: "UTC", createTimeMs: T0 }],
      subscriptions: subs.map(([subscriptionId, planId, startMs]) => ({ subscriptionId, customerId: "cus_1", phases: [{ planId, planVersion: 1, startMs, endMs: null }], seatChanges: [], startMs, endMs: null })),
      versions: versions.map(([planId, v]) => ({ planId, version: compilePlanVersion(v, "version") })),
      overrides: [],
      costs: new CostCatalog([]),
    });

  it("rates usage under the second subscription when only its plan prices the event type ($10 for 1,000 tokens)", () => {
    const cat = catalogOf([["sub_a", "plat", T0], ["sub_b", "use", T0 + 1000]], [["plat", platform], ["use", tokens("tokens", "0.01")]]);
    const r = rateEvent(cat, new MemoryRatingState(), event("e1", "llm.call", { tokens: 1000 }));
    expect(r.subscriptionId).toBe("sub_b");
    expect(r.lines).toEqual([expect.objectContaining({ chargeId: "tokens", quantity: 1000n, priceNanos: 10n * B, status: "final" })]);
  });

  it("charges an event type priced by two plans once, under the first subscription by start time then id", () => {
    // sub_m and sub_z start together: sub_m is first by id, though listed last; sub_0 starts later.
    const cat = catalogOf(
      [["sub_z", "cheap", T0], ["sub_0", "other", T0 + 1000], ["sub_m", "dear", T0]],
      [["cheap", tokens("tokens", "0.01")], ["dear", tokens("tokens_dear", "0.02")], ["other", tokens("tokens", "0.05")]],
    );
    const r = rateEvent(cat, new MemoryRatingState(), event("e1", "llm.call", { tokens: 1000 }));
    expect(r.subscriptionId).toBe("sub_m");
    expect(r.lines).toEqual([expect.objectContaining({ chargeId: "tokens_dear", priceNanos: 20n * B })]);
  });

  it("keeps the first subscription in force, with no charge, when no plan prices the event type", () => {
    const cat = catalogOf([["sub_b", "use", T0 + 1000], ["sub_a", "plat", T0]], [["plat", platform], ["use", tokens("tokens", "0.01")]]);
    const r = rateEvent(cat, new MemoryRatingState(), event("e1", "other.event", { tokens: 1000 }));
    expect(r.subscriptionId).toBe("sub_a");
    expect(r.lines.every((l) => l.priceNanos === 0n && l.chargeId === "")).toBe(true);
  });
});
