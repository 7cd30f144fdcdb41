import { describe, expect, it } from "vitest";
import { LedgerClock } from "./clock.js";

describe("LedgerClock", () => {
  it("hands out the wall-clock time when it moved forward", () => {
    let now = 1000n;
    const c = new LedgerClock(0n, () => now);
    expect(c.next()).toBe(1000n);
    now = 2000n;
    expect(c.next()).toBe(2000n);
  });
  it("bumps by one microsecond when the wall clock stands still or goes back", () => {
    let now = 1000n;
    const c = new LedgerClock(0n, () => now);
    expect([c.next(), c.next(), c.next()]).toEqual([1000n, 1001n, 1002n]);
    now = 10n;
    expect(c.next()).toBe(1003n);
  });
  it("take() hands out the value peek() gave, even when the wall clock moved since", () => {
    let now = 1000n;
    const c = new LedgerClock(0n, () => now++);
    const at = c.peek();
    expect(c.take(at)).toBe(1000n);
    expect(c.last).toBe(1000n);
    expect(() => c.take(1000n)).toThrow(/not after/);
  });
  it("continues after the last persisted timestamp", () => {
    const c = new LedgerClock(5000n, () => 10n);
    expect(c.next()).toBe(5001n);
    expect(c.peek()).toBe(5002n);
    expect(c.last).toBe(5001n);
  });
});
