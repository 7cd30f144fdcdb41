import { describe, expect, it } from "vitest";
import { checkHoldTransition, planCapture, reservedNanos } from "./holds.js";

const hold = { slices: [{ grantId: "B", amountNanos: 20n }, { grantId: "A", amountNanos: 30n }], overdraftNanos: 10n, uncoveredNanos: 0n };

describe("hold accounting", () => {
  it("reserves grants plus overdraft", () => {
    expect(reservedNanos(hold)).toBe(60n);
  });

  const rows: Array<{ name: string; actual: bigint; burn: bigint[]; release: bigint[]; odBurn: bigint; odRel: bigint; extra: bigint }> = [
    { name: "captures exactly the hold", actual: 60n, burn: [20n, 30n], release: [0n, 0n], odBurn: 10n, odRel: 0n, extra: 0n },
    { name: "captures less: burns in hold order and releases the rest", actual: 25n, burn: [20n, 5n], release: [0n, 25n], odBurn: 0n, odRel: 10n, extra: 0n },
    { name: "captures zero: releases everything", actual: 0n, burn: [0n, 0n], release: [20n, 30n], odBurn: 0n, odRel: 10n, extra: 0n },
    { name: "captures more: the overage is a new debit", actual: 75n, burn: [20n, 30n], release: [0n, 0n], odBurn: 10n, odRel: 0n, extra: 15n },
  ];
  for (const r of rows) {
    it(r.name, () => {
      const p = planCapture(hold, r.actual);
      expect(p.burnSlices.map((s) => s.amountNanos)).toEqual(r.burn);
      expect(p.releaseSlices.map((s) => s.amountNanos)).toEqual(r.release);
      expect(p.overdraftBurnNanos).toBe(r.odBurn);
      expect(p.overdraftReleaseNanos).toBe(r.odRel);
      expect(p.extraNanos).toBe(r.extra);
      // conservation: burned + released == reserved; burned + extra == actual
      const burned = p.burnSlices.reduce((s, x) => s + x.amountNanos, 0n) + p.overdraftBurnNanos;
      const released = p.releaseSlices.reduce((s, x) => s + x.amountNanos, 0n) + p.overdraftReleaseNanos;
      expect(burned + released).toBe(60n);
      expect(burned + p.extraNanos).toBe(r.actual);
    });
  }

  it("refuses a negative capture", () => {
    expect(() => planCapture(hold, -1n)).toThrow(/amount_nanos/);
  });

  const transitions: Array<{ state: "pending" | "captured" | "released" | "expired"; now: number; op: "capture" | "release"; err: string | null }> = [
    { state: "pending", now: 10, op: "capture", err: null },
    { state: "pending", now: 10, op: "release", err: null },
    { state: "pending", now: 100, op: "capture", err: "hold_expired" },
    { state: "pending", now: 100, op: "release", err: null },
    { state: "released", now: 10, op: "capture", err: "hold_not_pending" },
    { state: "captured", now: 10, op: "release", err: "hold_not_pending" },
    { state: "expired", now: 10, op: "capture", err: "hold_not_pending" },
  ];
  for (const t of transitions) {
    it(`${t.op} of a ${t.state} hold at ${t.now} gives ${t.err ?? "ok"}`, () => {
      expect(checkHoldTransition(t.state, 100, t.now, t.op)).toBe(t.err);
    });
  }
});
