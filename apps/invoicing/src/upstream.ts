/**
 * Calls to rating and the credit wallet (Connect clients with an internal key; the tenant goes
 * in x-nanobill-tenant per call), mapped to the pure domain's shapes.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { PeriodLineKind, type ChargedEvent, type RatingService, type UsageBucket } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import type { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { PageRequestSchema } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { forTenant } from "@nanobill/service-kit";
import { planKey, type ChargeInfo, type CustomerInfo, type PlanVersionInfo, type RatedPeriodInfo, type SubscriptionInfo, type UsageTotal } from "./domain/bill.js";
import { RATED_BUCKETS_PER_PERIOD_MAX, UPSTREAM_TIMEOUT_MS } from "./limits.js";
import { InvoicingError } from "./domain/lifecycle.js";

export interface UpstreamClients {
  rating: Client<typeof RatingService>;
  wallet: Client<typeof CreditWalletService>;
  ledger: Client<typeof LedgerService>;
}

const opts = (tenant: string) => forTenant(tenant, { timeoutMs: UPSTREAM_TIMEOUT_MS });
const date = (t: Timestamp | undefined): Date | undefined => (t === undefined ? undefined : timestampDate(t));
const ts = (d: Date): Timestamp => timestampFromDate(d);

function isCode(e: unknown, ...codes: Code[]): boolean {
  return e instanceof ConnectError && codes.includes(e.code);
}

export interface Upstream {
  getCustomer(tenant: string, customerId: string): Promise<CustomerInfo | undefined>;
  listSubscriptions(tenant: string, customerId: string): Promise<SubscriptionInfo[]>;
  getPlans(tenant: string, subs: SubscriptionInfo[]): Promise<Map<string, PlanVersionInfo>>;
  ratedUsage(tenant: string, customerId: string, from: Date, to: Date): Promise<UsageTotal[]>;
  ratedBuckets(tenant: string, customerId: string, from: Date, to: Date, chargeId: string): Promise<UsageBucket[]>;
  consumption(tenant: string, customerId: string, unit: string, from: Date, to: Date): Promise<{ consumedNanos: bigint; byCharge: Map<string, bigint> }>;
  /**
   * ratePeriod: rating's billing period containing `at` and its usage lines priced on the period
   * total; undefined when rating does not implement RatePeriod.
   */
  ratePeriod(tenant: string, customerId: string, at: Date): Promise<RatedPeriodInfo | undefined>;
  /** ratedEvents: one page of the rated events of a charge in [from, to) (rating ListRatedEvents). */
  ratedEvents(tenant: string, customerId: string, chargeId: string, from: Date, to: Date, pageSizeMax: number, pageToken: string): Promise<{ events: ChargedEvent[]; nextPageToken: string }>;
}

/** periodPriced: a usage charge rating prices on the period total (tiers, packages, an allowance). */
function periodPriced(ch: { includedQuantity: bigint; pricing: { case: string | undefined } }): boolean {
  const k = ch.pricing.case;
  return k === "graduated" || k === "volume" || k === "package" || (k === "perUnit" && ch.includedQuantity > 0n);
}

export function createUpstream(c: UpstreamClients): Upstream {
  return {
    async getCustomer(tenant, customerId) {
      try {
        const r = await c.rating.getCustomer({ customerId }, opts(tenant));
        const cu = r.customer;
        if (cu === undefined) return undefined;
        return {
          customerId: cu.customerId,
          currency: cu.currency,
          timeZone: cu.timeZone === "" ? "UTC" : cu.timeZone,
          billingAnchor: date(cu.billingAnchor),
          createdAt: date(cu.createTime),
        };
      } catch (e) {
        if (isCode(e, Code.NotFound)) return undefined;
        throw e;
      }
    },

    async listSubscriptions(tenant, customerId) {
      const r = await c.rating.listSubscriptions({ customerId }, opts(tenant));
      return r.subscriptions
        .map((s) => ({
          subscriptionId: s.subscriptionId,
          customerId: s.customerId,
          startedAt: date(s.startTime) ?? new Date(0),
          endedAt: date(s.endTime),
          phases: s.phases.map((p) => ({ planId: p.planId, planVersion: p.planVersion, start: date(p.startTime) ?? new Date(0), end: date(p.endTime) })),
          seatChanges: s.seatChanges.map((sc) => ({ seats: sc.seats, effectiveAt: date(sc.effectiveTime) ?? new Date(0) })),
        }))
        .sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime() || (a.subscriptionId < b.subscriptionId ? -1 : 1));
    },

    async getPlans(tenant, subs) {
      const out = new Map<string, PlanVersionInfo>();
      const ids = new Set(subs.flatMap((s) => s.phases.map((p) => p.planId)));
      for (const planId of ids) {
        try {
          const r = await c.rating.getPlan({ planId }, opts(tenant));
          for (const v of r.plan?.versions ?? []) {
            const charges: ChargeInfo[] = v.charges.map((ch) => {
              const p = ch.pricing;
              if (p.case === "flat") return { chargeId: ch.chargeId, name: ch.name, unit: ch.unit || v.currency, kind: "flat" as const, amount: p.value.amount, periodPriced: false };
              if (p.case === "seats") return { chargeId: ch.chargeId, name: ch.name, unit: ch.unit || v.currency, kind: "seats" as const, amount: p.value.perSeatAmount, periodPriced: false };
              return { chargeId: ch.chargeId, name: ch.name, unit: ch.unit || v.currency, kind: "usage" as const, amount: "", periodPriced: periodPriced(ch) };
            });
            out.set(planKey(planId, v.version), { planId, version: v.version, currency: v.currency, minimumCommitment: v.minimumCommitmentAmount, charges });
          }
        } catch (e) {
          // A plan rating cannot return leaves its charges unnamed and its fees unbilled.
          if (!isCode(e, Code.NotFound, Code.Unimplemented)) throw e;
        }
      }
      return out;
    },

    async ratedUsage(tenant, customerId, from, to) {
      if (to.getTime() <= from.getTime()) return [];
      const r = await c.rating.listRatedUsage({ customerId, from: ts(from), to: ts(to) }, opts(tenant));
      return r.totals.map((t) => ({ chargeId: t.chargeId, quantity: t.quantity, priceNanos: t.priceNanos, unit: t.unit }));
    },

    async ratedBuckets(tenant, customerId, from, to, chargeId) {
      if (to.getTime() <= from.getTime()) return [];
      const r = await c.rating.listRatedUsage({ customerId, from: ts(from), to: ts(to), chargeId }, opts(tenant));
      if (r.buckets.length > RATED_BUCKETS_PER_PERIOD_MAX) {
        throw new InvoicingError("failed_precondition", `line has more than ${RATED_BUCKETS_PER_PERIOD_MAX} rated buckets`);
      }
      return r.buckets;
    },

    async ratePeriod(tenant, customerId, at) {
      try {
        const r = await c.rating.ratePeriod({ customerId, at: ts(at) }, opts(tenant));
        const start = date(r.periodStart);
        const end = date(r.periodEnd);
        if (start === undefined || end === undefined) return undefined;
        return {
          periodStart: start,
          periodEnd: end,
          lines: r.lines
            .filter((l) => l.kind === PeriodLineKind.USAGE && l.periodPriced)
            .map((l) => ({ chargeId: l.chargeId, unit: l.unit, quantity: l.quantity, amountNanos: l.amountNanos, bookedNanos: l.bookedNanos, ratedNanos: l.ratedNanos })),
        };
      } catch (e) {
        if (isCode(e, Code.Unimplemented)) return undefined;
        throw e;
      }
    },

    async ratedEvents(tenant, customerId, chargeId, from, to, pageSizeMax, pageToken) {
      if (to.getTime() <= from.getTime()) return { events: [], nextPageToken: "" };
      const r = await c.rating.listRatedEvents({ customerId, chargeId, from: ts(from), to: ts(to), pageSizeMax, pageToken }, opts(tenant));
      return { events: r.events, nextPageToken: r.nextPageToken };
    },

    async consumption(tenant, customerId, unit, from, to) {
      if (to.getTime() <= from.getTime()) return { consumedNanos: 0n, byCharge: new Map() };
      try {
        const r = await c.wallet.listConsumption(
          { customerId, unit, from: ts(from), to: ts(to), page: create(PageRequestSchema, { pageSizeMax: 1 }) },
          opts(tenant),
        );
        const byCharge = new Map<string, bigint>();
        for (const b of r.byCharge) byCharge.set(b.chargeId, (byCharge.get(b.chargeId) ?? 0n) + b.consumedNanos);
        return { consumedNanos: r.consumedNanos, byCharge };
      } catch (e) {
        if (isCode(e, Code.NotFound)) return { consumedNanos: 0n, byCharge: new Map() };
        throw e;
      }
    },
  };
}
