import { describe, expect, it } from "vitest";
import { billingPeriod, PERIOD_MEMO_MAX } from "./period.js";

const iso = (ms: number): string => new Date(ms).toISOString();

describe("billingPeriod", () => {
  it.each([
    ["UTC monthly from the anchor day", Date.UTC(2026, 0, 15, 12), "UTC", 1, Date.UTC(2026, 2, 20), "2026-03-15T12:00:00.000Z", "2026-04-15T12:00:00.000Z"],
    ["a Jan 31 anchor clamps to the end of February", Date.UTC(2026, 0, 31), "UTC", 1, Date.UTC(2026, 1, 10), "2026-01-31T00:00:00.000Z", "2026-02-28T00:00:00.000Z"],
    ["after February it returns to the 31st", Date.UTC(2026, 0, 31), "UTC", 1, Date.UTC(2026, 2, 5), "2026-02-28T00:00:00.000Z", "2026-03-31T00:00:00.000Z"],
    ["local midnight in Paris across the DST change", Date.UTC(2026, 0, 31, 23), "Europe/Paris", 1, Date.UTC(2026, 3, 5), "2026-03-31T22:00:00.000Z", "2026-04-30T22:00:00.000Z"],
    ["yearly", Date.UTC(2025, 5, 1), "UTC", 12, Date.UTC(2026, 10, 1), "2026-06-01T00:00:00.000Z", "2027-06-01T00:00:00.000Z"],
    ["an instant before the anchor", Date.UTC(2026, 5, 1), "UTC", 1, Date.UTC(2026, 3, 10), "2026-04-01T00:00:00.000Z", "2026-05-01T00:00:00.000Z"],
    // 02:30 on Mar 8 does not exist in New York (02:00 EST -> 03:00 EDT): the boundary moves forward
    // to 03:30 EDT (07:30Z), as invoicing resolves it, not back to 01:30 EST (06:30Z).
    ["a boundary in a spring-forward gap moves forward (New York, west of UTC)", Date.UTC(2026, 1, 8, 7, 30), "America/New_York", 1, Date.UTC(2026, 2, 20), "2026-03-08T07:30:00.000Z", "2026-04-08T06:30:00.000Z"],
    ["the period before the gap ends at the moved boundary (New York)", Date.UTC(2026, 1, 8, 7, 30), "America/New_York", 1, Date.UTC(2026, 1, 20), "2026-02-08T07:30:00.000Z", "2026-03-08T07:30:00.000Z"],
    ["a boundary in a spring-forward gap moves forward (Paris, east of UTC)", Date.UTC(2026, 0, 29, 1, 30), "Europe/Paris", 1, Date.UTC(2026, 3, 5), "2026-03-29T01:30:00.000Z", "2026-04-29T00:30:00.000Z"],
    ["a boundary in a fall-back overlap takes the first (daylight) instant (New York)", Date.UTC(2026, 9, 1, 5, 30), "America/New_York", 1, Date.UTC(2026, 10, 10), "2026-11-01T05:30:00.000Z", "2026-12-01T06:30:00.000Z"],
  ])("%s", (_n, anchor, tz, months, at, start, end) => {
    const p = billingPeriod(anchor, tz, months, at);
    expect([iso(p.startMs), iso(p.endMs)]).toEqual([start, end]);
    expect(p.startMs <= at && at < p.endMs).toBe(true);
  });

  it("answers from its memo exactly as computed, across periods, zones and the memo bound", () => {
    const anchor = Date.UTC(2026, 0, 31, 23);
    const ref = (at: number) => {
      // Another anchor 1 ms later has its own memo entry: compare shapes of the same computation.
      const p = billingPeriod(anchor, "Europe/Paris", 1, at);
      return [p.startMs, p.endMs];
    };
    const first = ref(Date.UTC(2026, 3, 5));
    expect(ref(Date.UTC(2026, 3, 6))).toEqual(first); // same period, from the memo
    expect(ref(Date.UTC(2026, 4, 6))).toEqual([Date.UTC(2026, 3, 30, 22), Date.UTC(2026, 4, 31, 22)]); // next period
    expect(ref(Date.UTC(2026, 3, 5))).toEqual(first); // and back
    expect(billingPeriod(anchor, "UTC", 1, Date.UTC(2026, 3, 5)).startMs).toBe(Date.UTC(2026, 2, 31, 23)); // another zone, another entry
    for (let i = 0; i <= PERIOD_MEMO_MAX; i++) billingPeriod(i, "UTC", 1, 0);
    expect(ref(Date.UTC(2026, 3, 6))).toEqual(first); // past the bound the memo starts over
    expect(Object.isFrozen(billingPeriod(anchor, "UTC", 1, 0))).toBe(true);
  });

  it("rejects an unknown time zone naming the field", () => {
    expect(() => billingPeriod(0, "Mars/Olympus", 1, 0)).toThrow(/time_zone/);
  });
});
