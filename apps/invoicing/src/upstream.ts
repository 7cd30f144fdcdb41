/**
 * Calls to rating and the credit wallet (Connect clients with an internal key; the tenant goes
 * in x-nanobill-tenant per call), mapped to the pure domain's shapes.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { PeriodLineKind, type ChargedEvent, type RatingService, type UsageBucket } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { AlertKind, PolicyMode, type CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { PageRequestSchema } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { forTenant } from "@nanobill/service-kit";
import { planKey, type CreditTypeInfo, type ChargeInfo, type CustomerInfo, type PlanVersionInfo, type RatedPeriodInfo, type SubscriptionInfo, type UsageTotal } from "./domain/bill.js";
import { RATED_BUCKETS_PER_PERIOD_MAX, TOP_UPS_LISTED_MAX, UPSTREAM_PAGES_MAX, UPSTREAM_TIMEOUT_MS } from "./limits.js";
import { InvoicingError } from "./domain/lifecycle.js";

/**
 * Consumption: what a customer's wallet of one unit burned in a window (ListConsumption), each total
 * beside its split by charge; captured is the part of consumed burned by captures of holds.
 */
export interface Consumption {
  consumedNanos: bigint;
  byCharge: Map<string, bigint>;
  shortfallNanos: bigint;
  shortfallByCharge: Map<string, bigint>;
  capturedNanos: bigint;
  capturedByCharge: Map<string, bigint>;
}

function noConsumption(): Consumption {
  return { consumedNanos: 0n, byCharge: new Map(), shortfallNanos: 0n, shortfallByCharge: new Map(), capturedNanos: 0n, capturedByCharge: new Map() };
}

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
  consumption(
    tenant: string,
    customerId: string,
    unit: string,
    from: Date,
    to: Date,
  ): Promise<Consumption>;
  /** walletPolicy: the postpaid overage terms of the customer's wallet of `unit` (undefined: no wallet, or not POSTPAID_OVERAGE). */
  overageTerms(tenant: string, customerId: string, unit: string): Promise<{ rate: string; currency: string } | undefined>;
  /**
   * ratePeriod: rating's billing period containing `at` and its usage lines, each with its
   * periodPriced flag (priced on the period total in that period, or per event) and the
   * subscription it belongs to (for that subscription's minimum commitment); undefined when
   * rating does not implement RatePeriod.
   */
  ratePeriod(tenant: string, customerId: string, at: Date): Promise<RatedPeriodInfo | undefined>;
  /** ratedEvents: one page of the rated events of a charge in [from, to) (rating ListRatedEvents). */
  ratedEvents(tenant: string, customerId: string, chargeId: string, from: Date, to: Date, pageSizeMax: number, pageToken: string): Promise<{ events: ChargedEvent[]; nextPageToken: string }>;
  /**
   * topUpAlerts: the customer's wallet auto top-ups made in [from, to) (the wallet's
   * ALERT_KIND_AUTO_TOP_UP alerts, oldest first; customerId "" = every customer of the tenant;
   * at most `max` (default TOP_UPS_LISTED_MAX), more is refused: FailedPrecondition).
   */
  topUpAlerts(tenant: string, customerId: string, from: Date, to: Date, max?: number): Promise<TopUpAlert[]>;
  /**
   * priceTopUps: each top-up with what it was bought at: the cost basis its alert carries, or (older
   * alerts) its grant's cost basis from GetBalance (one call per wallet). A grant the wallet's
   * GetBalance does not list (its list is capped) has no known price: costBasis "" and `unpriced`
   * says why (never the wallet's current auto top-up terms, which may have changed since).
   */
  priceTopUps(tenant: string, alerts: TopUpAlert[]): Promise<TopUp[]>;
  /** creditType: a credit type's name and rates (undefined when the wallet does not know it). */
  creditType(tenant: string, creditTypeId: string): Promise<CreditTypeInfo | undefined>;
}

/** TopUpAlert: one auto top-up of a wallet as its alert tells it: amountNanos of the wallet's unit, at the alert's time. */
export interface TopUpAlert {
  customerId: string;
  grantId: string;
  walletId: string;
  unit: string;
  amountNanos: bigint;
  at: Date;
  /** The grant's cost basis and currency as the alert carries them ("" for alerts recorded before it did). */
  costBasis: string;
  costCurrency: string;
}

/** TopUp: one auto top-up of a wallet: amountNanos of the wallet's unit, bought at costBasis (costCurrency per unit). */
export interface TopUp extends TopUpAlert {
  /** costBasis: decimal currency per unit of the grant ("" when the wallet does not list the grant). */
  costBasis: string;
  costCurrency: string;
  /** unpriced: why costBasis is "" (the grant is not listed), for the log. */
  unpriced?: string;
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
            .filter((l) => l.kind === PeriodLineKind.USAGE)
            .map((l) => ({ chargeId: l.chargeId, subscriptionId: l.subscriptionId, periodPriced: l.periodPriced, unit: l.unit, quantity: l.quantity, amountNanos: l.amountNanos, bookedNanos: l.bookedNanos, ratedNanos: l.ratedNanos })),
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

    async topUpAlerts(tenant, customerId, from, to, max = TOP_UPS_LISTED_MAX) {
      if (to.getTime() <= from.getTime()) return [];
      const alerts: TopUpAlert[] = [];
      let token = "";
      for (let page = 0; page < UPSTREAM_PAGES_MAX; page++) {
        const r = await c.wallet.listAlerts(
          { customerId, kind: AlertKind.AUTO_TOP_UP, since: ts(from), page: create(PageRequestSchema, { pageSizeMax: 500, pageToken: token }) },
          opts(tenant),
        );
        let past = false;
        for (const a of r.alerts) {
          const at = date(a.createdAt);
          if (at === undefined || a.grantId === "" || at.getTime() < from.getTime()) continue;
          // alerts come oldest first: the first one at or after `to` ends the listing
          if (at.getTime() >= to.getTime()) {
            past = true;
            break;
          }
          alerts.push({
            customerId: a.customerId,
            grantId: a.grantId,
            walletId: a.walletId,
            unit: a.unit,
            amountNanos: a.amountNanos,
            at,
            costBasis: a.costBasis?.value ?? "",
            costCurrency: a.costBasisCurrency,
          });
        }
        if (alerts.length > max) {
          throw new InvoicingError("failed_precondition", `${customerId === "" ? "the tenant" : `customer ${customerId}`} has more than ${max} auto top-ups from ${from.toISOString()} to ${to.toISOString()}`);
        }
        token = r.page?.nextPageToken ?? "";
        if (past || token === "") break;
      }
      return alerts;
    },

    async priceTopUps(tenant, alerts) {
      if (alerts.length === 0) return [];
      // The price of each top-up: the cost basis its alert carries; for alerts recorded before
      // alerts carried it, its grant's cost basis from GetBalance (one call per such wallet).
      const costs = new Map<string, { costBasis: string; costCurrency: string }>();
      for (const a of alerts) if (a.costBasis !== "") costs.set(a.grantId, { costBasis: a.costBasis, costCurrency: a.costCurrency });
      for (const walletId of new Set(alerts.filter((a) => a.costBasis === "").map((a) => a.walletId))) {
        const b = await c.wallet.getBalance({ walletId }, opts(tenant));
        for (const g of b.grants) costs.set(g.grantId, { costBasis: g.costBasis?.value ?? "", costCurrency: g.costBasisCurrency });
      }
      // A grant beyond the balance's grant list has no price of its own here: not guessed from the
      // wallet's current auto top-up terms (they may have changed since the grant was bought).
      return alerts.map((a) => {
        const c = costs.get(a.grantId);
        if (c !== undefined) return { ...a, ...c };
        return {
          ...a,
          costBasis: "",
          costCurrency: "",
          unpriced: `wallet ${a.walletId} does not list grant ${a.grantId} in GetBalance (its cost basis is not known; the wallet's current auto top-up terms may not be the ones it was bought at)`,
        };
      });
    },

    async creditType(tenant, creditTypeId) {
      try {
        const r = await c.wallet.getCreditType({ creditTypeId }, opts(tenant));
        const t = r.creditType;
        if (t === undefined) return undefined;
        return {
          name: t.name,
          rates: t.rates.flatMap((x) => {
            const at = date(x.effectiveAt);
            return at === undefined || x.rate === undefined ? [] : [{ rate: x.rate.value, currency: x.currency || t.currency, effectiveAt: at }];
          }),
        };
      } catch (e) {
        if (isCode(e, Code.NotFound, Code.InvalidArgument)) return undefined;
        throw e;
      }
    },

    async consumption(tenant, customerId, unit, from, to) {
      if (to.getTime() <= from.getTime()) return noConsumption();
      try {
        const r = await c.wallet.listConsumption(
          { customerId, unit, from: ts(from), to: ts(to), page: create(PageRequestSchema, { pageSizeMax: 1 }) },
          opts(tenant),
        );
        const out: Consumption = { ...noConsumption(), consumedNanos: r.consumedNanos, shortfallNanos: r.shortfallNanos, capturedNanos: r.capturedNanos };
        const add = (m: Map<string, bigint>, k: string, n: bigint) => m.set(k, (m.get(k) ?? 0n) + n);
        for (const b of r.byCharge) {
          add(out.byCharge, b.chargeId, b.consumedNanos);
          add(out.shortfallByCharge, b.chargeId, b.shortfallNanos);
          add(out.capturedByCharge, b.chargeId, b.capturedNanos);
        }
        return out;
      } catch (e) {
        if (isCode(e, Code.NotFound)) return noConsumption();
        throw e;
      }
    },

    async overageTerms(tenant, customerId, unit) {
      try {
        const b = await c.wallet.getBalance({ customerId, unit }, opts(tenant));
        const p = b.wallet?.policy;
        if (p === undefined || p.mode !== PolicyMode.POSTPAID_OVERAGE || p.overageRate === undefined || p.overageRate.value === "") return undefined;
        return { rate: p.overageRate.value, currency: p.overageCurrency };
      } catch (e) {
        if (isCode(e, Code.NotFound)) return undefined;
        throw e;
      }
    },
  };
}
