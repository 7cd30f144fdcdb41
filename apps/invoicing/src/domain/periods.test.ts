import { describe, expect, it } from "vitest";
import { coveredPeriods, lastEndedPeriod, periodAt, periodByIndex, periodStartingAt, validateTimeZone, type PeriodSpec } from "./periods.js";

const iso = (d: Date) => d.toISOString();

describe("billing periods", () => {
  it("starts calendar months at local midnight on the 1st in the customer's zone", () => {
    const spec: PeriodSpec = { interval: "month", anchor: "calendar", timeZone: "America/New_York", startedAt: new Date("2026-01-15T17:00:00Z") };
    const p0 = periodByIndex(spec, 0);
    expect(iso(p0.start)).toBe("2026-01-15T17:00:00.000Z");
    expect(iso(p0.end)).toBe("2026-02-01T05:00:00.000Z");
    // March: DST starts on March 8 2026 in New York (UTC-4 from then)
    expect(iso(periodByIndex(spec, 2).end)).toBe("2026-04-01T04:00:00.000Z");
  });

  it("clamps anniversary days to the month's length without drifting", () => {
    const spec: PeriodSpec = { interval: "month", anchor: "anniversary", timeZone: "UTC", startedAt: new Date("2026-01-31T10:00:00Z") };
    expect([0, 1, 2].map((n) => iso(periodByIndex(spec, n).end))).toEqual([
      "2026-02-28T10:00:00.000Z",
      "2026-03-31T10:00:00.000Z",
      "2026-04-30T10:00:00.000Z",
    ]);
  });

  it("aligns calendar quarters and years", () => {
    const q: PeriodSpec = { interval: "quarter", anchor: "calendar", timeZone: "Europe/Paris", startedAt: new Date("2026-02-10T00:00:00Z") };
    expect(iso(periodByIndex(q, 0).end)).toBe("2026-03-31T22:00:00.000Z");
    expect(iso(periodByIndex(q, 1).end)).toBe("2026-06-30T22:00:00.000Z");
    const y: PeriodSpec = { interval: "year", anchor: "calendar", timeZone: "Asia/Tokyo", startedAt: new Date("2026-05-01T00:00:00Z") };
    expect(iso(periodByIndex(y, 0).end)).toBe("2026-12-31T15:00:00.000Z");
  });

  it("finds the period containing an instant, at and around boundaries", () => {
    const spec: PeriodSpec = { interval: "month", anchor: "anniversary", timeZone: "Europe/Paris", startedAt: new Date("2025-03-30T08:00:00Z") };
    for (let n = 0; n < 30; n++) {
      const p = periodByIndex(spec, n);
      expect(periodAt(spec, p.start).index).toBe(n);
      expect(periodAt(spec, new Date(p.end.getTime() - 1)).index).toBe(n);
      expect(periodByIndex(spec, n + 1).start).toEqual(p.end);
    }
  });

  it("finds the last ended period and the period by its start", () => {
    const spec: PeriodSpec = { interval: "month", anchor: "calendar", timeZone: "UTC", startedAt: new Date("2026-01-01T00:00:00Z") };
    expect(lastEndedPeriod(spec, new Date("2026-01-20T00:00:00Z"))).toBeUndefined();
    expect(lastEndedPeriod(spec, new Date("2026-03-02T00:00:00Z"))?.index).toBe(1);
    expect(periodStartingAt(spec, new Date("2026-02-01T00:00:00Z"))?.index).toBe(1);
    expect(periodStartingAt(spec, new Date("2026-02-02T00:00:00Z"))).toBeUndefined();
  });

  it("bills arrears for the closed period and advance charges for the next one (and the first)", () => {
    const spec: PeriodSpec = { interval: "month", anchor: "calendar", timeZone: "UTC", startedAt: new Date("2026-01-01T00:00:00Z") };
    expect(coveredPeriods(spec, 0, "advance").map((p) => p.index)).toEqual([0, 1]);
    expect(coveredPeriods(spec, 3, "advance").map((p) => p.index)).toEqual([4]);
    expect(coveredPeriods(spec, 3, "arrears").map((p) => p.index)).toEqual([3]);
  });

  it("refuses an unknown time zone and bad intervals, naming the field", () => {
    expect(() => validateTimeZone("Mars/Olympus", "time_zone")).toThrow(/time_zone/);
    expect(() => periodByIndex({ interval: "week" as never, anchor: "calendar", timeZone: "UTC", startedAt: new Date() }, 0)).toThrow(/interval/);
    expect(() => periodAt({ interval: "month", anchor: "calendar", timeZone: "UTC", startedAt: new Date("2026-01-01T00:00:00Z") }, new Date("2025-01-01T00:00:00Z"))).toThrow(/before/);
  });
});

describe("billing periods anchored on the customer's billing anchor", () => {
  it("counts anniversary periods from the anchor while period 0 starts at the subscription start", () => {
    const spec: PeriodSpec = {
      interval: "month",
      anchor: "anniversary",
      timeZone: "UTC",
      anchorAt: new Date("2025-06-10T00:00:00Z"),
      startedAt: new Date("2026-01-20T12:00:00Z"),
    };
    const p0 = periodByIndex(spec, 0);
    expect(iso(p0.start)).toBe("2026-01-20T12:00:00.000Z");
    expect(iso(p0.end)).toBe("2026-02-10T00:00:00.000Z");
    expect(iso(periodByIndex(spec, 1).end)).toBe("2026-03-10T00:00:00.000Z");
    expect(periodAt(spec, new Date("2026-02-15T00:00:00Z")).index).toBe(1);
  });
});
