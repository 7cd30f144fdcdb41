import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { planDebit, sumSlices } from "./debit.js";
import type { BurnGrant, DebitRoom } from "./types.js";

function g(id: string, availableNanos: bigint, o: Partial<BurnGrant> = {}): BurnGrant {
  return { id, kind: "purchased", priority: 1, effectiveAtMs: 0, expiresAtMs: null, createdAtMs: 1, availableNanos, scope: { chargeIds: [], models: [] }, ...o };
}
const ctx = { nowMs: 1_000, chargeId: "chg", model: "m" };
const HARD: DebitRoom = { overdraftRoomNanos: 0n, uncoveredAllowed: false };
const A = g("A", 50n, { kind: "purchased" });
const B = g("B", 20n, { kind: "promotional" });
const C = g("C", 100n, { priority: 2 });

describe("planDebit", () => {
  const rows: Array<{ name: string; amount: bigint; mode: "all" | "partial"; room?: DebitRoom; ok: boolean; slices: Array<[string, bigint]>; od?: bigint; unc?: bigint; short?: bigint }> = [
    { name: "takes 10 from B only", amount: 10n, mode: "all", ok: true, slices: [["B", 10n]] },
    { name: "spans B then A", amount: 60n, mode: "all", ok: true, slices: [["B", 20n], ["A", 40n]] },
    { name: "spans B, A and C", amount: 120n, mode: "all", ok: true, slices: [["B", 20n], ["A", 50n], ["C", 50n]] },
    { name: "takes exactly everything", amount: 170n, mode: "all", ok: true, slices: [["B", 20n], ["A", 50n], ["C", 100n]] },
    { name: "refuses a hold one nano past the balance and takes nothing", amount: 171n, mode: "all", ok: false, slices: [], short: 171n },
    { name: "burns what it can and reports the shortfall", amount: 200n, mode: "partial", ok: true, slices: [["B", 20n], ["A", 50n], ["C", 100n]], short: 30n },
    { name: "goes below zero within the soft limit", amount: 200n, mode: "all", room: { overdraftRoomNanos: 30n, uncoveredAllowed: false }, ok: true, slices: [["B", 20n], ["A", 50n], ["C", 100n]], od: 30n },
    { name: "refuses past the soft limit", amount: 201n, mode: "all", room: { overdraftRoomNanos: 30n, uncoveredAllowed: false }, ok: false, slices: [], short: 201n },
    { name: "burns within the soft limit then reports the shortfall", amount: 205n, mode: "partial", room: { overdraftRoomNanos: 30n, uncoveredAllowed: false }, ok: true, slices: [["B", 20n], ["A", 50n], ["C", 100n]], od: 30n, short: 5n },
    { name: "holds past the balance under postpaid overage (uncovered)", amount: 200n, mode: "all", room: { overdraftRoomNanos: 0n, uncoveredAllowed: true }, ok: true, slices: [["B", 20n], ["A", 50n], ["C", 100n]], unc: 30n },
    { name: "burns and reports overage as shortfall under postpaid", amount: 200n, mode: "partial", room: { overdraftRoomNanos: 0n, uncoveredAllowed: true }, ok: true, slices: [["B", 20n], ["A", 50n], ["C", 100n]], short: 30n },
  ];
  for (const r of rows) {
    it(r.name, () => {
      const p = planDebit([A, B, C], r.amount, ctx, r.room ?? HARD, r.mode);
      expect(p.ok).toBe(r.ok);
      expect(p.slices.map((s) => [s.grantId, s.amountNanos])).toEqual(r.slices);
      expect(p.overdraftNanos).toBe(r.od ?? 0n);
      expect(p.uncoveredNanos).toBe(r.unc ?? 0n);
      expect(p.shortfallNanos).toBe(r.short ?? 0n);
    });
  }

  it("skips grants that are out of scope, not yet effective, expired or empty", () => {
    const grants = [
      g("scoped", 10n, { priority: 0, scope: { chargeIds: ["other"], models: [] } }),
      g("future", 10n, { priority: 0, effectiveAtMs: 2_000 }),
      g("expired", 10n, { priority: 0, expiresAtMs: 1_000 }),
      g("empty", 0n, { priority: 0 }),
      g("ok", 10n, { priority: 5 }),
    ];
    const p = planDebit(grants, 5n, ctx, HARD, "all");
    expect(p.slices).toEqual([{ grantId: "ok", amountNanos: 5n }]);
  });

  it("refuses a zero amount", () => {
    expect(() => planDebit([A], 0n, ctx, HARD, "all")).toThrow(/amount_nanos/);
  });

  it("conserves every nano: slices + overdraft + uncovered + shortfall == amount, each slice within its grant", () => {
    const arbGrant = fc.record({
      available: fc.bigInt({ min: 0n, max: 10n ** 18n }),
      priority: fc.integer({ min: 0, max: 3 }),
      kind: fc.constantFrom("purchased", "promotional", "allowance", "rollover" as const),
    });
    fc.assert(
      fc.property(
        fc.array(arbGrant, { maxLength: 8 }),
        fc.bigInt({ min: 1n, max: 10n ** 18n }),
        fc.bigInt({ min: 0n, max: 10n ** 18n }),
        fc.boolean(),
        fc.constantFrom("all" as const, "partial" as const),
        (gs, amount, odRoom, unc, mode) => {
          const grants = gs.map((x, i) => g(`g${i}`, x.available, { priority: x.priority, kind: x.kind }));
          const p = planDebit(grants, amount, ctx, { overdraftRoomNanos: odRoom, uncoveredAllowed: unc }, mode);
          expect(sumSlices(p.slices) + p.overdraftNanos + p.uncoveredNanos + p.shortfallNanos).toBe(amount);
          for (const s of p.slices) {
            expect(s.amountNanos > 0n).toBe(true);
            expect(s.amountNanos <= grants.find((x) => x.id === s.grantId)!.availableNanos).toBe(true);
          }
          expect(p.overdraftNanos <= odRoom).toBe(true);
          if (!p.ok) expect(p.slices).toEqual([]);
        },
      ),
    );
  });
});
