import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { burnKey, compareBurnOrder, isEligible, sortForBurn } from "./burn-order.js";
import type { BurnGrant, GrantKind } from "./types.js";

function g(id: string, o: Partial<BurnGrant> = {}): BurnGrant {
  return {
    id,
    kind: "purchased",
    priority: 1,
    effectiveAtMs: 0,
    expiresAtMs: null,
    createdAtMs: 1_000,
    availableNanos: 100n,
    scope: { chargeIds: [], models: [] },
    ...o,
  };
}

describe("burn-down order", () => {
  it("burns the issue's vector B (priority 1, promotional), then A (priority 1, paid), then C (priority 2)", () => {
    const A = g("A", { priority: 1, kind: "purchased", availableNanos: 50n });
    const B = g("B", { priority: 1, kind: "promotional", availableNanos: 20n });
    const C = g("C", { priority: 2, kind: "purchased", availableNanos: 100n });
    expect(sortForBurn([A, B, C]).map((x) => x.id)).toEqual(["B", "A", "C"]);
    expect(sortForBurn([C, A, B]).map((x) => x.id)).toEqual(["B", "A", "C"]);
  });

  const rows: Array<{ name: string; a: Partial<BurnGrant>; b: Partial<BurnGrant>; first: "a" | "b" }> = [
    { name: "lower priority number first", a: { priority: 2 }, b: { priority: 1 }, first: "b" },
    { name: "priority beats expiry", a: { priority: 1, expiresAtMs: 9e12 }, b: { priority: 2, expiresAtMs: 1 }, first: "a" },
    { name: "soonest expiry first", a: { expiresAtMs: 5_000 }, b: { expiresAtMs: 4_000 }, first: "b" },
    { name: "an expiring grant before a non-expiring one", a: { expiresAtMs: null }, b: { expiresAtMs: 999_999_999_999 }, first: "b" },
    { name: "expiry beats kind", a: { kind: "promotional", expiresAtMs: 9_000 }, b: { kind: "purchased", expiresAtMs: 8_000 }, first: "b" },
    { name: "promotional before paid", a: { kind: "purchased" }, b: { kind: "promotional" }, first: "b" },
    { name: "allowance (free) before paid", a: { kind: "purchased" }, b: { kind: "allowance" }, first: "b" },
    { name: "rollover (free) before paid", a: { kind: "purchased" }, b: { kind: "rollover" }, first: "b" },
    { name: "kind beats age", a: { kind: "purchased", createdAtMs: 1 }, b: { kind: "promotional", createdAtMs: 2 }, first: "b" },
    { name: "oldest first", a: { createdAtMs: 2_000 }, b: { createdAtMs: 1_000 }, first: "b" },
  ];
  for (const r of rows) {
    it(`orders ${r.name}`, () => {
      const a = g("a", r.a);
      const b = g("b", r.b);
      expect(sortForBurn([a, b])[0]!.id).toBe(r.first);
      expect(sortForBurn([b, a])[0]!.id).toBe(r.first);
    });
  }

  it("agrees with a field-by-field comparator on random grants (string key == tuple order)", () => {
    const kinds: GrantKind[] = ["purchased", "promotional", "allowance", "rollover"];
    const arb = fc.record({
      priority: fc.integer({ min: 0, max: 1_000_000 }),
      expiresAtMs: fc.option(fc.integer({ min: 0, max: 2 ** 45 }), { nil: null }),
      kind: fc.constantFrom(...kinds),
      createdAtMs: fc.integer({ min: 0, max: 2 ** 45 }),
      id: fc.stringMatching(/^[a-z0-9]{1,8}$/),
    });
    fc.assert(
      fc.property(arb, arb, (x, y) => {
        const a = g(x.id, x);
        const b = g(y.id + "_", y);
        const tuple = (v: BurnGrant) => [v.priority, v.expiresAtMs ?? Number.MAX_SAFE_INTEGER, v.kind === "purchased" ? 1 : 0, v.createdAtMs] as const;
        const ta = tuple(a);
        const tb = tuple(b);
        let expected = 0;
        for (let i = 0; i < 4 && expected === 0; i++) expected = Math.sign(ta[i]! - tb[i]!);
        if (expected !== 0) expect(Math.sign(compareBurnOrder(a, b))).toBe(expected);
      }),
    );
  });

  it("rejects a negative priority in the key", () => {
    expect(() => burnKey(g("x", { priority: -1 }))).toThrow(/priority/);
  });
});

describe("eligibility", () => {
  const ctx = { nowMs: 10_000, chargeId: "chg_1", model: "gpt-x" };
  const rows: Array<{ name: string; o: Partial<BurnGrant>; ok: boolean }> = [
    { name: "an effective, unexpired, unscoped grant", o: {}, ok: true },
    { name: "a grant effective later", o: { effectiveAtMs: 10_001 }, ok: false },
    { name: "a grant effective exactly now", o: { effectiveAtMs: 10_000 }, ok: true },
    { name: "a grant expiring exactly now", o: { expiresAtMs: 10_000 }, ok: false },
    { name: "a grant scoped to the charge", o: { scope: { chargeIds: ["chg_1"], models: [] } }, ok: true },
    { name: "a grant scoped to another charge", o: { scope: { chargeIds: ["chg_2"], models: [] } }, ok: false },
    { name: "a grant scoped to the model", o: { scope: { chargeIds: [], models: ["gpt-x"] } }, ok: true },
    { name: "a grant scoped to another model", o: { scope: { chargeIds: [], models: ["small"] } }, ok: false },
  ];
  for (const r of rows) {
    it(`${r.ok ? "accepts" : "refuses"} ${r.name}`, () => {
      expect(isEligible(g("x", r.o), ctx)).toBe(r.ok);
    });
  }
});
