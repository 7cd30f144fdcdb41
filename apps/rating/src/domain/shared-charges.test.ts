import { describe, expect, it } from "vitest";
import { RatingError } from "./errors.js";
import { checkNoSharedCharge, type SubscriptionLife } from "./shared-charges.js";
import type { Customer, PlanVersionSpec } from "./types.js";

const customer = (timeZone: string, anchor: string): Customer => ({ customerId: "cus", name: "", currency: "USD", billingAnchorMs: Date.parse(anchor), timeZone, createTimeMs: 0 });
const v = (chargeIds: string[], intervalMonths = 1): PlanVersionSpec =>
  ({ version: 1, status: "published", currency: "USD", intervalMonths, charges: chargeIds.map((chargeId) => ({ chargeId })), minimumCommitmentAmount: "", spendingCapAmount: "", publishTimeMs: null }) as unknown as PlanVersionSpec;
const life = (id: string, start: string, end: string | null, versions: PlanVersionSpec[]): SubscriptionLife => ({ subscriptionId: id, startMs: Date.parse(start), endMs: end === null ? null : Date.parse(end), versions });

function refusal(c: Customer, mine: SubscriptionLife, other: SubscriptionLife): string | null {
  try {
    checkNoSharedCharge(c, mine, mine.versions.flatMap((x) => x.charges.map((ch) => ch.chargeId)), [other], "plan_version");
    return null;
  } catch (e) {
    if (!(e instanceof RatingError)) throw e;
    return `${e.kind} ${e.message}`;
  }
}

describe("checkNoSharedCharge", () => {
  const utc = customer("UTC", "2026-01-01T00:00:00Z");
  const kolkata = customer("Asia/Kolkata", "2026-01-01T00:00:00+05:30"); // periods start 18:30 UTC the day before
  const rows: Array<[string, Customer, SubscriptionLife, SubscriptionLife, RegExp | null]> = [
    ["mid-period successor sharing a charge: refused, naming the period", utc, life("new", "2026-11-10T00:00:00Z", null, [v(["calls"])]), life("old", "2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z", [v(["calls"])]), /^failed_precondition plan_version: subscription_id "old" shares charge "calls" .* period starting 2026-11-01T00:00:00\.000Z/],
    ["successor at the next period's start: allowed", utc, life("new", "2026-12-01T00:00:00Z", null, [v(["calls"])]), life("old", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", [v(["calls"])]), null],
    ["no shared charge id, concurrent: allowed", utc, life("new", "2026-11-01T00:00:00Z", null, [v(["images"])]), life("old", "2026-11-01T00:00:00Z", null, [v(["calls"])]), null],
    ["shared through another phase of the other subscription: refused", utc, life("new", "2026-11-05T00:00:00Z", null, [v(["images"])]), life("old", "2026-10-01T00:00:00Z", null, [v(["calls"]), v(["images"])]), /shares charge "images"/],
    ["new subscription before the other, ending in its period: refused", utc, life("new", "2026-10-01T00:00:00Z", "2026-11-02T00:00:00Z", [v(["calls"])]), life("old", "2026-11-20T00:00:00Z", null, [v(["calls"])]), /period starting 2026-11-01/],
    ["an annual plan shares the year with a monthly successor: refused", utc, life("new", "2026-03-01T00:00:00Z", null, [v(["calls"])]), life("old", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", [v(["calls"], 12)]), /period starting 2026-01-01/],
    ["zone: the end at 18:30 UTC is the Kolkata period boundary: allowed", kolkata, life("new", "2026-11-30T18:30:00Z", null, [v(["calls"])]), life("old", "2026-11-01T00:00:00Z", "2026-11-30T18:30:00Z", [v(["calls"])]), null],
    ["zone: a successor at midnight UTC Dec 1 is still the Kolkata period of Dec 1: allowed only if the other ended by 18:30 UTC", kolkata, life("new", "2026-12-01T00:00:00Z", null, [v(["calls"])]), life("old", "2026-11-01T00:00:00Z", "2026-11-30T20:00:00Z", [v(["calls"])]), /period starting 2026-11-30T18:30:00\.000Z/],
  ];
  for (const [name, c, mine, other, want] of rows) {
    it(name, () => {
      const got = refusal(c, mine, other);
      if (want === null) expect(got).toBeNull();
      else expect(got).toMatch(want);
    });
  }
});
