import { describe, expect, it } from "vitest";
import { breakageAt, expiryNoticeDue } from "./expiry.js";
import { nextPeriod, planRollover, type RolloverRule } from "./rollover.js";
import { decideAutoTopUp, type AutoTopUpConfig } from "./auto-top-up.js";
import { debitRoom, floorNanos, repayNanos } from "./policy.js";

const M = 1_000_000_000n; // one credit in nanos

describe("expiry to breakage", () => {
  const grant = { amountNanos: 100n, burnedNanos: 30n, heldNanos: 20n, expiredNanos: 0n, expiresAtMs: 1_000 };
  const rows = [
    { name: "nothing before expiry", asOf: 999, grace: 0, want: 0n },
    { name: "the unheld remainder at expiry", asOf: 1_000, grace: 0, want: 50n },
    { name: "nothing within the grace period", asOf: 1_400, grace: 500, want: 0n },
    { name: "the remainder after the grace period", asOf: 1_500, grace: 500, want: 50n },
  ];
  for (const r of rows) it(`moves ${r.name}`, () => expect(breakageAt(grant, r.asOf, r.grace)).toBe(r.want));
  it("never expires a grant without expiry", () => expect(breakageAt({ ...grant, expiresAtMs: null }, 9e15, 0)).toBe(0n));
  it("does not expire twice", () => expect(breakageAt({ ...grant, expiredNanos: 50n }, 2_000, 0)).toBe(0n));
  it("raises the notice only inside the window before expiry", () => {
    expect(expiryNoticeDue(grant, 499, 500)).toBe(false);
    expect(expiryNoticeDue(grant, 500, 500)).toBe(true);
    expect(expiryNoticeDue(grant, 1_000, 500)).toBe(false);
    expect(expiryNoticeDue({ ...grant, burnedNanos: 80n }, 600, 500)).toBe(false);
  });
});

describe("rollover", () => {
  const allowance = 1_000n * M;
  const used = 600n * M;
  const remainder = allowance - used;
  const rows: Array<{ name: string; rule: RolloverRule; next: bigint }> = [
    { name: "none: 1,000 next month", rule: { mode: "none", capNanos: 0n, percentBps: 0, expiresAfterMs: 0 }, next: 1_000n * M },
    { name: "full rollover: 1,400 next month", rule: { mode: "all", capNanos: 0n, percentBps: 0, expiresAfterMs: 0 }, next: 1_400n * M },
    { name: "capped at 300: 1,300 next month", rule: { mode: "capped", capNanos: 300n * M, percentBps: 0, expiresAfterMs: 0 }, next: 1_300n * M },
    { name: "cap above the remainder: 1,400", rule: { mode: "capped", capNanos: 500n * M, percentBps: 0, expiresAfterMs: 0 }, next: 1_400n * M },
    { name: "50%: 1,200 next month", rule: { mode: "percentage", capNanos: 0n, percentBps: 5_000, expiresAfterMs: 0 }, next: 1_200n * M },
  ];
  for (const r of rows) {
    it(`1,000/month with 600 used, ${r.name}`, () => {
      const p = planRollover(r.rule, remainder);
      expect(allowance + p.rolledOverNanos).toBe(r.next);
      expect(p.rolledOverNanos + p.expiredNanos).toBe(remainder);
    });
  }
  it("rounds a percentage down and sends the residue to breakage", () => {
    const p = planRollover({ mode: "percentage", capNanos: 0n, percentBps: 3_333, expiresAfterMs: 0 }, 10n);
    expect(p).toEqual({ rolledOverNanos: 3n, expiredNanos: 7n });
  });
  it("renews for a period of the same length", () => {
    expect(nextPeriod(1_000, 3_000)).toEqual({ effectiveAtMs: 3_000, periodEndMs: 5_000 });
    expect(() => nextPeriod(3_000, 3_000)).toThrow(/period_end/);
  });
});

describe("auto top-up", () => {
  const cfg: AutoTopUpConfig = { enabled: true, thresholdNanos: 100n, amountNanos: 500n, targetBalanceNanos: 0n, cooldownMs: 1_000, costBasis: "1", costBasisCurrency: "USD" };
  it("tops up once when the balance crosses the threshold", () => {
    const d1 = decideAutoTopUp(cfg, { armed: true, lastTopUpAtMs: null }, 99n, 10_000);
    expect(d1.topUpNanos).toBe(500n);
    const d2 = decideAutoTopUp(cfg, d1.state, 50n, 10_001);
    expect(d2.topUpNanos).toBe(0n);
  });
  it("re-arms when the balance goes back above, then respects the cooldown", () => {
    const d1 = decideAutoTopUp(cfg, { armed: true, lastTopUpAtMs: null }, 99n, 10_000);
    const up = decideAutoTopUp(cfg, d1.state, 599n, 10_100);
    expect(up.state.armed).toBe(true);
    const inCooldown = decideAutoTopUp(cfg, up.state, 10n, 10_500);
    expect(inCooldown.topUpNanos).toBe(0n);
    const after = decideAutoTopUp(cfg, inCooldown.state, 10n, 11_000);
    expect(after.topUpNanos).toBe(500n);
  });
  it("tops up to a target balance", () => {
    const d = decideAutoTopUp({ ...cfg, targetBalanceNanos: 1_000n }, { armed: true, lastTopUpAtMs: null }, 40n, 0);
    expect(d.topUpNanos).toBe(960n);
  });
  it("only alerts (crossed) when disabled", () => {
    const d = decideAutoTopUp({ ...cfg, enabled: false }, { armed: true, lastTopUpAtMs: null }, 40n, 0);
    expect(d).toMatchObject({ topUpNanos: 0n, crossed: true, state: { armed: false } });
  });
});

describe("policy", () => {
  it("gives no room under hard stop", () => {
    expect(debitRoom({ mode: "hard_stop", negativeLimitNanos: 0n, overageRate: "", overageCurrency: "" }, 0n)).toEqual({ overdraftRoomNanos: 0n, uncoveredAllowed: false });
  });
  it("gives the unused part of a soft negative limit", () => {
    const p = { mode: "soft_negative" as const, negativeLimitNanos: 100n, overageRate: "", overageCurrency: "" };
    expect(debitRoom(p, 30n).overdraftRoomNanos).toBe(70n);
    expect(debitRoom(p, 130n).overdraftRoomNanos).toBe(0n);
    expect(floorNanos(p)).toBe(-100n);
  });
  it("allows uncovered usage under postpaid overage", () => {
    expect(debitRoom({ mode: "postpaid_overage", negativeLimitNanos: 0n, overageRate: "0.02", overageCurrency: "USD" }, 0n).uncoveredAllowed).toBe(true);
  });
  it("repays an overdraft first from a new grant", () => {
    expect(repayNanos(30n, 100n)).toBe(30n);
    expect(repayNanos(300n, 100n)).toBe(100n);
  });
});
