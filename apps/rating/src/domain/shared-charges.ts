import { failedPrecondition } from "./errors.js";
import { billingPeriod } from "./period.js";
import type { Customer, PlanVersionSpec } from "./types.js";

/**
 * The guard on subscriptions sharing a charge id. Rating keeps usage buckets and period totals per
 * (customer, charge id), not per subscription, and a usage line belongs to the first subscription
 * alive in the period whose plan has its charge in a phase in force then (rate-period.ts usageOwners,
 * invoicing chargeOwners). So
 * two subscriptions of one customer whose plans share a charge id must never both be alive in one
 * billing period: their usage, commitments and caps would be mixed. A plan change mid-period is
 * made with MigrateSubscription (one subscription, priced per phase).
 */

/** SubscriptionLife: a subscription's [start, end) and the plan versions of its phases. */
export interface SubscriptionLife {
  subscriptionId: string;
  startMs: number;
  endMs: number | null;
  versions: readonly PlanVersionSpec[];
}

/**
 * checkNoSharedCharge: FailedPrecondition on `field` when a subscription of `others` whose plan
 * versions (any phase) share a charge id with `checkedCharges` (the new or changed plan version)
 * is alive in a billing period `mine` is alive in. The lives share a period iff the one starting
 * first ends after the start of the period holding the other's start. Periods follow the customer's
 * anchor and zone at the longer interval of the two (annual boundaries are also monthly ones, so it
 * finds every shared period of the shorter). Pure; the caller writes nothing on refusal.
 */
export function checkNoSharedCharge(customer: Customer, mine: SubscriptionLife, checkedCharges: readonly string[], others: readonly SubscriptionLife[], field: string): void {
  const ids = new Set(checkedCharges);
  for (const o of others) {
    if (o.subscriptionId === mine.subscriptionId) continue;
    const shared = o.versions.flatMap((v) => v.charges.map((c) => c.chargeId)).find((id) => ids.has(id));
    if (shared === undefined) continue;
    const interval = Math.max(...mine.versions.map((v) => v.intervalMonths), ...o.versions.map((v) => v.intervalMonths), 1);
    const [first, second] = mine.startMs <= o.startMs ? [mine, o] : [o, mine];
    const p = billingPeriod(customer.billingAnchorMs, customer.timeZone, interval, second.startMs);
    if (first.endMs !== null && first.endMs <= p.startMs) continue;
    throw failedPrecondition(
      field,
      `subscription_id ${JSON.stringify(o.subscriptionId)} shares charge ${JSON.stringify(shared)} with this subscription in the billing period starting ${new Date(p.startMs).toISOString()} ` +
        `(usage, commitments and caps are kept per customer and charge, not per subscription); change the plan with MigrateSubscription instead`,
    );
  }
}
