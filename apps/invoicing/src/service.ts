/**
 * InvoicingService handlers: decode -> domain -> encode. Thin: orchestration of upstream calls
 * and the store; every rule lives in domain/.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import { currency, MoneyError } from "@nanobill/money";
import * as pb from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { requireScope, tenantOf, type Clock, type Logger } from "@nanobill/service-kit";
import { assembleInvoice, type ChargeInput, type LateCredit } from "./domain/assemble.js";
import type { ExactNanos } from "./domain/rounding.js";
import {
  aliveIn,
  chargeOwners,
  feeChargeIds,
  commitmentFees,
  commitmentUsage,
  feeCharges,
  feeTrueUps,
  floorHour,
  lateUsageAdjustments,
  capturedHoldsCharges,
  lateCapturedAdjustment,
  CHARGE_ID_CAPTURED_HOLDS,
  minimumCommitmentNanos,
  ownerOf,
  periodPricedIds,
  periodSpecFor,
  topUpCharges,
  creditsInUnits,
  overageCharges,
  usageCharges,
  usageWindow,
  withinLife,
  withPeriodPricing,
  type CustomerInfo,
  type PlanVersionInfo,
  type SubscriptionInfo,
  type UsageTotal,
} from "./domain/bill.js";
import { defaultSettings, type CreditsInUnits, type Invoice } from "./domain/invoice.js";
import { InvoicingError } from "./domain/lifecycle.js";
import { lastEndedPeriod, localDayStart, PeriodError, periodAt, periodByIndex, periodStartingAt, type Period, type PeriodSpec } from "./domain/periods.js";
import { checkId, InvalidInput, validateSettings } from "./domain/settings.js";
import { guard } from "./errors.js";
import { finalizeLegs, paidLegs, voidLegs, allLegs, type LedgerPoster } from "./ledger.js";
import * as L from "./limits.js";
import { anchorFromProto, dateOf, inTimeRange, intervalFromProto, timeOf, invoiceToProto, modeFromProto, settingsToProto, statusFromProto } from "./mapping.js";
import { renderInvoice } from "./render/index.js";
import { billedKey, type CloseItem, type InvoiceStore, type LateSnapshot, type StoredInvoice, type StoredSettings } from "./store/invoice-store.js";
import type { TopUpAlert, Upstream } from "./upstream.js";

export interface HandlerDeps {
  store: InvoiceStore;
  upstream: Upstream;
  ledger: LedgerPoster;
  clock: Clock;
  logger: Logger;
  /** How long after a period ends late usage can arrive for it (default LATE_EVENT_AGE_MS). */
  lateEventAgeMs?: number;
}

/** reader / writer: the tenant of a call needing the "read" / "admin" scope ("internal" implies both). */
function reader(ctx: HandlerContext): string {
  requireScope(ctx, "read");
  return tenantOf(ctx);
}
function writer(ctx: HandlerContext): string {
  requireScope(ctx, "admin");
  return tenantOf(ctx);
}

/** invoiceIdFor: the deterministic id of a subscription period's invoice. */
export function invoiceIdFor(tenant: string, subscriptionId: string, periodStart: Date): string {
  const h = createHash("sha256").update(`${tenant}\u0000${subscriptionId}\u0000${periodStart.toISOString()}`).digest("hex");
  return `inv_${h.slice(0, 24)}`;
}

function settingsOrDefault(s: StoredSettings | undefined, customerId: string): StoredSettings {
  return s ?? { ...defaultSettings(customerId), periodInterval: "month", periodAnchor: "anniversary", gracePeriodMs: 0, autoFinalize: false };
}

function checkCurrency(c: CustomerInfo): string {
  try {
    return currency(c.currency, "customer.currency").code;
  } catch {
    throw new InvoicingError("failed_precondition", `customer ${c.customerId} has currency ${JSON.stringify(c.currency)}, which is not a supported ISO 4217 currency: nothing was invoiced`);
  }
}

type Consumption = Awaited<ReturnType<Upstream["consumption"]>>;

interface CustomerContext {
  customer: CustomerInfo;
  subs: SubscriptionInfo[];
  plans: Map<string, PlanVersionInfo>;
  names: Map<string, string>;
  settings: StoredSettings;
  /**
   * consumption: the wallet reads of this operation (ListConsumption per unit and window), so the
   * subscriptions of one customer closed in one request share them (one call per window, not per subscription).
   */
  consumption: Map<string, Promise<Consumption>>;
  /** topUps: the customer's auto top-up alerts over `window`, listed once for a whole ClosePeriod request (undefined: list per customer). */
  topUps?: { window: { from: Date; to: Date }; alerts: TopUpAlert[] };
}

/** LateRead: an earlier invoiced period a close (or preview) adjusts, as read from upstream and the store. */
interface LateRead {
  period: Period;
  inv: StoredInvoice;
  /** ratedNow: its rated usage now (period-priced charges from RatePeriod). */
  ratedNow: UsageTotal[];
  /** creditsNow: prepaid money consumed in its usage window now (this subscription's share; creditsFor). */
  creditsNow: bigint;
  /** capturedNow: what captures burned in its usage window now (this subscription's share). */
  capturedNow: bigint;
  snapshot: LateSnapshot;
}

/** DraftPassResult: what one pass of the draft loop did (sweepDrafts). */
export interface DraftPassResult {
  /** claimed: drafts the pass looked at. */
  claimed: number;
  /** refreshed: drafts inside their grace period that a refresh changed. */
  refreshed: number;
  /** unchanged: drafts inside their grace period with nothing new (nothing written). */
  unchanged: number;
  /** finalized: drafts past their grace period finalized (auto_finalize). */
  finalized: number;
  /** skipped: refusals (FailedPrecondition: e.g. a later period already invoiced, another replica finalized it first). */
  skipped: number;
  /** failed: other errors (upstream unavailable ...): logged, retried on a later pass. */
  failed: number;
}

export function createHandlers(d: HandlerDeps): ServiceImpl<typeof pb.InvoicingService> {
  return createInvoicingCore(d).handlers;
}

/**
 * createInvoicingCore: the RPC handlers and the draft loop's pass (sweepDrafts), sharing the
 * refresh and finalize paths.
 */
export function createInvoicingCore(d: HandlerDeps): {
  handlers: ServiceImpl<typeof pb.InvoicingService>;
  /** sweepDrafts: one bounded pass of the draft loop (limit drafts; a draft is claimed at most once per recheckMs). */
  sweepDrafts(limit: number, recheckMs: number): Promise<DraftPassResult>;
} {
  const { store, upstream, ledger, clock, logger } = d;

  async function loadCustomer(
    tenant: string,
    customerId: string,
    cache?: { plans: Map<string, Promise<Map<string, PlanVersionInfo>>>; settings: Map<string, StoredSettings> | undefined },
  ): Promise<CustomerContext | undefined> {
    const [customer, subs] = await Promise.all([
      upstream.getCustomer(tenant, customerId),
      upstream.listSubscriptions(tenant, customerId).catch((e: unknown) => e as Error),
    ]);
    if (customer === undefined) return undefined;
    if (subs instanceof Error) throw subs;
    let plans: Map<string, PlanVersionInfo>;
    if (cache === undefined) plans = await upstream.getPlans(tenant, subs);
    else {
      plans = new Map();
      for (const planId of new Set(subs.flatMap((s) => s.phases.map((p) => p.planId)))) {
        let pending = cache.plans.get(planId);
        if (pending === undefined) {
          pending = upstream.getPlans(tenant, subs.filter((s) => s.phases.some((p) => p.planId === planId)).slice(0, 1));
          cache.plans.set(planId, pending);
        }
        for (const [k, v] of await pending) if (v.planId === planId) plans.set(k, v);
      }
    }
    const names = new Map<string, string>();
    for (const p of plans.values()) for (const c of p.charges) if (c.name !== "") names.set(c.chargeId, c.name);
    const stored = cache?.settings !== undefined ? cache.settings.get(customerId) : await store.getSettings(tenant, customerId);
    const settings = settingsOrDefault(stored, customerId);
    return { customer, subs, plans, names, settings, consumption: new Map() };
  }

  function specOf(cc: CustomerContext, sub: SubscriptionInfo): PeriodSpec {
    return periodSpecFor(cc.customer, sub, cc.settings.periodInterval, cc.settings.periodAnchor);
  }

  /** Who owns each charge's usage in a billing period (or window): the subscriptions alive in it (aliveIn) and their charges. */
  function ownersIn(cc: CustomerContext, w: { from: Date; to: Date }): { owners: Map<string, string>; subs: SubscriptionInfo[] } {
    const subs = aliveIn(cc.subs, w);
    return { owners: chargeOwners(subs, cc.plans, w), subs };
  }

  /**
   * creditsFor: the prepaid money the wallet burned in the window (this subscription's share),
   * applied as credits — Consume items and captures alike, the part below zero included (a
   * SOFT_NEGATIVE overdraft stays the wallet's receivable, repaid by its next grant: see the
   * README, "What is missing") — and what captures burned, billed by the "Captured holds" line
   * (capturedHoldsCharges), since no rated usage line bills a capture.
   */
  async function creditsFor(tenant: string, cc: CustomerContext, unit: string, from: Date, to: Date, sub: SubscriptionInfo | undefined, period: { from: Date; to: Date }): Promise<{ credits: bigint; captured: bigint }> {
    const w = await walletShare(tenant, cc, unit, from, to, sub, period);
    return { credits: w.consumed, captured: w.captured };
  }

  /** walletShare: what the customer's wallet of `unit` burned in the window (of it: by captures), and its shortfall (not covered), for `sub` (undefined: all). */
  async function walletShare(
    tenant: string,
    cc: CustomerContext,
    unit: string,
    from: Date,
    to: Date,
    sub: SubscriptionInfo | undefined,
    /** The billing period the share is for: who owns each charge is decided on it, as for usage lines (not on the hour window). */
    period: { from: Date; to: Date },
  ): Promise<{ consumed: bigint; shortfall: bigint; captured: bigint }> {
    const key = `${unit}|${from.getTime()}|${to.getTime()}`;
    let pending = cc.consumption.get(key);
    if (pending === undefined) {
      pending = upstream.consumption(tenant, cc.customer.customerId, unit, from, to);
      cc.consumption.set(key, pending);
    }
    const c = await pending;
    if (sub === undefined) return { consumed: c.consumedNanos, shortfall: c.shortfallNanos, captured: c.capturedNanos };
    const o = ownersIn(cc, period);
    const share = (total: bigint, byCharge: ReadonlyMap<string, bigint>): bigint => {
      let mine = 0n;
      let attributed = 0n;
      for (const [chargeId, nanos] of byCharge) {
        attributed += nanos;
        if (chargeId !== "" && ownerOf(chargeId, o.owners, o.subs) === sub.subscriptionId) mine += nanos;
      }
      // Burns without a known charge belong to the first subscription (alive in the window).
      if (o.subs[0]?.subscriptionId === sub.subscriptionId) mine += total - attributed + (byCharge.get("") ?? 0n);
      return mine;
    };
    return {
      consumed: share(c.consumedNanos, c.byCharge),
      shortfall: share(c.shortfallNanos, c.shortfallByCharge),
      captured: share(c.capturedNanos, c.capturedByCharge),
    };
  }

  /**
   * readLate: the earlier invoiced (not void) periods of `sub` that a close of period p adjusts
   * (oldest first), with their rated usage and prepaid consumption now and what is billed for
   * them now. Covered: the periods whose end is less than metering's late-event age
   * (LATE_EVENT_AGE_MS) before p starts (events for them may arrive during p or later), at
   * most LATE_PERIODS_MAX of them; the previous period always.
   */
  async function readLate(tenant: string, cc: CustomerContext, sub: SubscriptionInfo, spec: PeriodSpec, p: Period, unit: string, ppIds: ReadonlySet<string>, excludeInvoiceId = ""): Promise<LateRead[]> {
    const periods: Period[] = [];
    for (let j = p.index - 1; j >= 0 && periods.length < L.LATE_PERIODS_MAX; j--) {
      const q = periodByIndex(spec, j);
      if (q.end.getTime() + (d.lateEventAgeMs ?? L.LATE_EVENT_AGE_MS) <= p.start.getTime()) break;
      periods.push(q);
    }
    if (periods.length === 0) return [];
    const ids = await store.existingIds(tenant, periods.map((q) => ({ subscriptionId: sub.subscriptionId, periodStart: q.start })));
    const invs = ids.size === 0 ? new Map<string, StoredInvoice>() : await store.getInvoices(tenant, [...ids.values()]);
    const found: Array<{ period: Period; inv: StoredInvoice }> = [];
    for (const q of [...periods].reverse()) {
      const id = ids.get(`${sub.subscriptionId}|${q.start.getTime()}`);
      const inv = id === undefined ? undefined : invs.get(id);
      // a voided invoice is not re-billed; an invoice in another currency is not adjusted in this one
      if (inv !== undefined && inv.status !== "void" && inv.unit === unit) found.push({ period: q, inv });
    }
    if (found.length === 0) return [];
    // billed by every invoice but the one being (re)assembled (a refreshed draft's own lines)
    const billed = await store.billedWindows(tenant, found.map(({ inv }) => ({ subscriptionId: sub.subscriptionId, usageFrom: inv.usageFrom, periodStart: inv.periodStart })), excludeInvoiceId);
    const customerId = cc.customer.customerId;
    return Promise.all(
      found.map(async ({ period, inv }) => {
        const [buckets, rated, wallet] = await Promise.all([
          upstream.ratedUsage(tenant, customerId, inv.usageFrom, inv.usageTo),
          ppIds.size > 0 ? upstream.ratePeriod(tenant, customerId, period.start) : Promise.resolve(undefined),
          creditsFor(tenant, cc, unit, inv.usageFrom, inv.usageTo, sub, { from: period.start, to: period.end }),
        ]);
        return {
          period,
          inv,
          ratedNow: withPeriodPricing(buckets, rated, period, ppIds),
          creditsNow: wallet.credits,
          capturedNow: wallet.captured,
          snapshot: {
            periodStart: inv.periodStart,
            usageFrom: inv.usageFrom,
            billedUsage: billed.get(billedKey(sub.subscriptionId, "usage", inv.usageFrom)) ?? new Map<string, bigint>(),
            billedCredits: billed.get(billedKey(sub.subscriptionId, "credits", inv.periodStart))?.get("") ?? 0n,
          },
        };
      }),
    );
  }

  /**
   * lateLines: for each late period (`include`d), adjustment lines for usage rated for it since
   * it was billed (rated now - billed, per charge) and a credits-applied line for prepaid money
   * consumed in it that no invoice applied yet (consumed now - credits applied for it).
   */
  function lateLines(late: LateRead[], sub: SubscriptionInfo, cc: CustomerContext, unit: string, include: (periodStartMs: number) => boolean): { charges: ChargeInput[]; credits: LateCredit[] } {
    const feeIds = feeChargeIds(cc.plans);
    const charges: ChargeInput[] = [];
    const credits: LateCredit[] = [];
    for (const w of late) {
      if (!include(w.inv.periodStart.getTime())) continue;
      const window = { from: w.inv.usageFrom, to: w.inv.usageTo };
      const o = ownersIn(cc, { from: w.inv.periodStart, to: w.inv.periodEnd });
      // named by the period (cut to the subscription's life) in the customer's local dates
      const named = { ...withinLife({ start: w.inv.periodStart, end: w.inv.periodEnd }, sub), timeZone: specOf(cc, sub).timeZone };
      const billedUsage = new Map(w.snapshot.billedUsage);
      const billedCaptured = billedUsage.get(CHARGE_ID_CAPTURED_HOLDS) ?? 0n;
      billedUsage.delete(CHARGE_ID_CAPTURED_HOLDS);
      charges.push(...lateUsageAdjustments(w.ratedNow, billedUsage, sub, o.owners, o.subs, cc.names, unit, window, named, feeIds));
      charges.push(...lateCapturedAdjustment(w.capturedNow, billedCaptured, sub.subscriptionId, window, named));
      const d = w.creditsNow - w.snapshot.billedCredits;
      if (d !== 0n) credits.push({ nanos: d, subscriptionId: sub.subscriptionId, periodStart: w.inv.periodStart, periodEnd: w.inv.periodEnd });
    }
    return { charges, credits };
  }

  /** feeTrueUpCharges: fees of period p billed in advance on the previous invoice, trued up to the seat changes known now. */
  async function feeTrueUpCharges(tenant: string, cc: CustomerContext, sub: SubscriptionInfo, p: Period, unit: string, late: LateRead[], excludeInvoiceId = ""): Promise<ChargeInput[]> {
    if (p.index === 0 || !late.some((w) => w.period.index === p.index - 1)) return [];
    const billedFees = await store.billedFees(tenant, sub.subscriptionId, p.start, [...feeChargeIds(cc.plans)], excludeInvoiceId);
    return feeTrueUps(p, sub, cc.plans, unit, billedFees, specOf(cc, sub).timeZone);
  }

  /** topUpFrom: where the top-up look-back of period p starts: the previous period's start or the late-event age before p, the earlier. */
  function topUpFrom(spec: PeriodSpec, p: Period): Date {
    const lookback = p.start.getTime() - (d.lateEventAgeMs ?? L.LATE_EVENT_AGE_MS);
    return new Date(p.index > 0 ? Math.min(lookback, periodByIndex(spec, p.index - 1).start.getTime()) : lookback);
  }

  /**
   * listTopUpsForRequest: for a ClosePeriod request closing the first subscription of many
   * customers (>= TOP_UPS_BULK_CUSTOMERS_MIN), the tenant's auto top-up alerts over the union of
   * their look-back windows in one paged ListAlerts, handed to each customer's context; past
   * TOP_UPS_BULK_LISTED_MAX alerts each customer lists its own instead.
   */
  async function listTopUpsForRequest(tenant: string, items: Array<{ cc: CustomerContext; sub: SubscriptionInfo; spec: PeriodSpec; period: Period }>): Promise<void> {
    const firsts = items.filter((x) => x.cc.subs[0]?.subscriptionId === x.sub.subscriptionId);
    const ccs = new Map(firsts.map((x) => [x.cc.customer.customerId, x.cc]));
    if (ccs.size < L.TOP_UPS_BULK_CUSTOMERS_MIN) return;
    const from = new Date(Math.min(...firsts.map((x) => topUpFrom(x.spec, x.period).getTime())));
    const to = new Date(Math.max(...firsts.map((x) => x.period.end.getTime())));
    let all: TopUpAlert[];
    try {
      all = await upstream.topUpAlerts(tenant, "", from, to, L.TOP_UPS_BULK_LISTED_MAX);
    } catch (e) {
      if (!(e instanceof InvoicingError && e.kind === "failed_precondition")) throw e;
      logger.info("auto top-ups listed per customer: too many for one listing", { tenant, reason: e.message });
      return;
    }
    const byCustomer = new Map<string, TopUpAlert[]>();
    for (const a of all) {
      const list = byCustomer.get(a.customerId) ?? [];
      list.push(a);
      byCustomer.set(a.customerId, list);
    }
    for (const [customerId, cc] of ccs) cc.topUps = { window: { from, to }, alerts: byCustomer.get(customerId) ?? [] };
  }

  /**
   * topUpLines: one-off lines for the customer's wallet auto top-ups not billed yet, on the
   * invoice of the customer's first subscription (the one that also takes prepaid burns without a
   * known charge). Not only those made in the period: every top-up made before its end, looking
   * back over the previous period and the late-event age (a top-up committed at the end of an
   * earlier period, after that close read the alerts, is billed here, naming its period). Each
   * grant is billed once, ever: the ones already on an invoice (void included; `excludeInvoiceId`
   * = a refreshed draft's own) are left out here, and again under the customer lock (CloseItem.oneOffIds).
   */
  async function topUpLines(tenant: string, cc: CustomerContext, sub: SubscriptionInfo, spec: PeriodSpec, p: Period, end: Date, unit: string, excludeInvoiceId = ""): Promise<ChargeInput[]> {
    // The first subscription alive in the period bills them (an ended one's successor from its
    // first period on: before, top-ups after the first subscription ended waited for a close of it).
    if (aliveIn(cc.subs, { from: p.start, to: p.end })[0]?.subscriptionId !== sub.subscriptionId) return [];
    const from = topUpFrom(spec, p);
    const listed = cc.topUps;
    let alerts: TopUpAlert[];
    if (listed !== undefined && listed.window.from.getTime() <= from.getTime() && end.getTime() <= listed.window.to.getTime()) {
      alerts = listed.alerts.filter((a) => a.at.getTime() >= from.getTime() && a.at.getTime() < end.getTime());
      if (alerts.length > L.TOP_UPS_LISTED_MAX) {
        throw new InvoicingError("failed_precondition", `customer ${cc.customer.customerId} has more than ${L.TOP_UPS_LISTED_MAX} auto top-ups from ${from.toISOString()} to ${end.toISOString()}`);
      }
    } else alerts = await upstream.topUpAlerts(tenant, cc.customer.customerId, from, end);
    const billed = await store.billedOneOffs(tenant, [...new Set(alerts.map((a) => a.grantId))], excludeInvoiceId);
    // one per grant (its first alert), oldest first
    const byGrant = new Map<string, TopUpAlert>();
    for (const a of [...alerts].sort((x, y) => x.at.getTime() - y.at.getTime() || (x.grantId < y.grantId ? -1 : x.grantId > y.grantId ? 1 : 0))) {
      if (!billed.has(a.grantId) && !byGrant.has(a.grantId)) byGrant.set(a.grantId, a);
    }
    let open = [...byGrant.values()];
    if (open.length > L.TOP_UPS_PER_PERIOD_MAX) {
      // More than one invoice bills: the oldest TOP_UPS_PER_PERIOD_MAX now, the rest on the next
      // invoice, which lists them (its look-back covers them). A top-up the next close would not
      // list (made before its look-back, or no next period) would be dropped: refused instead.
      const rest = open.slice(L.TOP_UPS_PER_PERIOD_MAX);
      const nextFrom = endsBy(sub, p.end) ? Infinity : topUpFrom(spec, periodByIndex(spec, p.index + 1)).getTime();
      const lost = rest.filter((a) => a.at.getTime() < nextFrom);
      if (lost.length > 0) {
        throw new InvoicingError(
          "failed_precondition",
          `customer ${cc.customer.customerId} has ${open.length} auto top-ups not yet billed up to ${end.toISOString()}: an invoice bills at most ${L.TOP_UPS_PER_PERIOD_MAX}, and ${lost.length} of the others (the first: grant ${lost[0]!.grantId} on ${lost[0]!.at.toISOString()}) would not be listed by the next close: nothing was invoiced for ${sub.subscriptionId}`,
        );
      }
      logger.info("auto top-ups: more than one invoice bills; the newest are left to the next invoice", { tenant, customer_id: cc.customer.customerId, billed_now: L.TOP_UPS_PER_PERIOD_MAX, left: rest.length });
      open = open.slice(0, L.TOP_UPS_PER_PERIOD_MAX);
    }
    const periodOf = (at: Date): { start: Date; end: Date } => (at.getTime() < spec.startedAt.getTime() ? periodByIndex(spec, 0) : periodAt(spec, at));
    const r = topUpCharges(await upstream.priceTopUps(tenant, open), unit, sub.subscriptionId, { start: p.start, end: p.end }, spec.timeZone, periodOf);
    for (const t of r.skipped) {
      if (t.unpriced !== undefined) {
        logger.warn("auto top-up not billed: its price is not known; left unbilled (the next close inside its look-back tries again)", { tenant, customer_id: cc.customer.customerId, grant_id: t.grantId, reason: t.unpriced });
      } else logger.warn("auto top-up not billed: no cost basis in the invoice currency", { tenant, customer_id: cc.customer.customerId, grant_id: t.grantId, cost_currency: t.costCurrency, unit });
    }
    return r.charges;
  }

  /**
   * creditsUsed: credits of each credit type (the units, other than the invoice currency, that
   * rating priced the window's usage in) consumed from the customer's credit wallets in the
   * window (this subscription's share, as creditsFor), valued at the rate in force at `end`, and
   * the postpaid overage of every one of them. The overage is billed for every credit type (up to
   * CREDIT_TYPES_READ_MAX, more is refused); only the display (credits_in_units) is capped at
   * CREDIT_TYPES_PER_INVOICE_MAX types (the first by id; the cap is logged).
   */
  async function creditsUsed(
    tenant: string,
    cc: CustomerContext,
    totals: UsageTotal[],
    unit: string,
    window: { from: Date; to: Date },
    end: Date,
    sub: SubscriptionInfo | undefined,
    period: { from: Date; to: Date },
  ): Promise<{ credits: CreditsInUnits[]; overage: ChargeInput[] }> {
    const units = [...new Set(totals.filter((t) => t.unit !== "" && t.unit !== unit).map((t) => t.unit))].sort();
    if (units.length === 0) return { credits: [], overage: [] };
    if (units.length > L.CREDIT_TYPES_READ_MAX) {
      throw new InvoicingError(
        "failed_precondition",
        `customer ${cc.customer.customerId} has usage priced in ${units.length} credit types from ${window.from.toISOString()} to ${window.to.toISOString()}, more than ${L.CREDIT_TYPES_READ_MAX}: not invoiced (its overage would not be billed)`,
      );
    }
    const shares = await mapLimit(units, L.CLOSE_CONCURRENCY, async (u) => ({ unit: u, ...(await walletShare(tenant, cc, u, window.from, window.to, sub, period)) }));
    // shown: the credit types the invoice lists in credits_in_units (the first CREDIT_TYPES_PER_INVOICE_MAX consumed)
    const shown = shares.filter((s) => s.consumed !== 0n).slice(0, L.CREDIT_TYPES_PER_INVOICE_MAX);
    if (shares.filter((s) => s.consumed !== 0n).length > shown.length) {
      logger.info("credits in units: more credit types consumed than an invoice lists; overage billed for all of them", { tenant, customer_id: cc.customer.customerId, shown: shown.length, limit: L.CREDIT_TYPES_PER_INVOICE_MAX });
    }
    const consumed = shown.map((s) => ({ unit: s.unit, creditsNanos: s.consumed }));
    const named = new Set([...shown.map((s) => s.unit), ...shares.filter((s) => s.shortfall > 0n).map((s) => s.unit)]);
    const types = new Map(await mapLimit([...named], L.CLOSE_CONCURRENCY, async (u) => [u, await upstream.creditType(tenant, u)] as const));
    // Postpaid overage: what a POSTPAID_OVERAGE credit wallet could not cover, at its overage rate.
    const shortfalls = await mapLimit(
      shares.filter((s) => s.shortfall > 0n),
      L.CLOSE_CONCURRENCY,
      async (s) => ({ unit: s.unit, name: types.get(s.unit)?.name || s.unit, shortfallNanos: s.shortfall, terms: await upstream.overageTerms(tenant, cc.customer.customerId, s.unit) }),
    );
    const o = overageCharges(shortfalls, unit, sub?.subscriptionId ?? cc.subs[0]?.subscriptionId ?? "", window);
    for (const s of o.skipped) logger.warn("postpaid overage not billed: the wallet has no overage rate in the invoice currency", { tenant, customer_id: cc.customer.customerId, unit: s.unit, shortfall_nanos: s.shortfallNanos });
    return { credits: creditsInUnits(consumed, types, end), overage: o.charges };
  }

  async function postLedger(tenant: string, inv: StoredInvoice): Promise<StoredInvoice> {
    if (!inv.ledgerPending) return inv;
    try {
      const r = await ledger.post(tenant, inv);
      if (r.ok) {
        await store.markLedgerPosted(tenant, inv.id);
        return { ...inv, ledgerPending: false };
      }
      logger.error("ledger refused invoice transfers; kept pending", { tenant, invoice_id: inv.id, detail: r.detail });
    } catch (e) {
      logger.warn("ledger unavailable; invoice transfers kept pending for retry", { tenant, invoice_id: inv.id, error: String(e) });
    }
    return inv;
  }

  async function preview(tenant: string, customerId: string, at: Date): Promise<Invoice> {
    const cc = await loadCustomer(tenant, customerId);
    if (cc === undefined) throw new InvoicingError("not_found", `customer ${customerId} not found`);
    const unit = checkCurrency(cc.customer);
    // subscriptions whose current period is open: not ended, or ended inside the period containing
    // `at` (its close still bills that period's usage and credits fees billed past the end)
    const active = cc.subs.filter(
      (s) =>
        s.startedAt.getTime() <= at.getTime() &&
        (s.endedAt === undefined || at.getTime() < s.endedAt.getTime() || periodAt(specOf(cc, s), at).start.getTime() < s.endedAt.getTime()),
    );
    const primary = active[0] ?? cc.subs[0];
    const base: PeriodSpec =
      primary !== undefined
        ? specOf(cc, primary)
        : {
            interval: cc.settings.periodInterval,
            anchor: cc.settings.periodAnchor,
            timeZone: cc.customer.timeZone,
            startedAt: cc.customer.billingAnchor ?? cc.customer.createdAt ?? at,
            anchorAt: cc.customer.billingAnchor,
          };
    const period: Period = at.getTime() < base.startedAt.getTime() ? periodAt(base, base.startedAt) : periodAt(base, at);
    const from = floorHour(period.start);
    const window = { from, to: at.getTime() > from.getTime() ? at : from };
    const ppIds = new Set(active.flatMap((s) => [...periodPricedIds(s, cc.plans)]));
    // each active subscription's commitment (its plan version's at its period's end)
    const minimums = new Map(active.map((s) => [s.subscriptionId, minimumCommitmentNanos(specOf(cc, s), periodAt(specOf(cc, s), at).index, s, cc.plans)]));
    const committed = [...minimums.values()].some((m) => m > 0n);
    const [bucketTotals, rated] = await Promise.all([
      upstream.ratedUsage(tenant, customerId, window.from, window.to),
      ppIds.size > 0 || committed ? upstream.ratePeriod(tenant, customerId, at) : Promise.resolve(undefined),
    ]);
    // asked for a commitment only: the usage lines stay as billed without period-priced charges
    const totals = withPeriodPricing(bucketTotals, ppIds.size > 0 ? rated : undefined, period, ppIds);
    const previewOwners = ownersIn(cc, { from: period.start, to: period.end });
    const charges: ChargeInput[] = usageCharges(totals, undefined, previewOwners.owners, previewOwners.subs, cc.names, unit, window);
    // Each active subscription's commitment, trued up from its own usage (rating's exact period when
    // RatePeriod answers for it) and fees (rating's rule).
    const commitments: Array<{ subscriptionId: string; minimumNanos: bigint; usageNanos?: bigint; fees?: ExactNanos }> = [];
    // What the close of each subscription's current period would add now: adjustments for late
    // usage of its earlier invoiced periods, prepaid money burned late in them, fee true-ups.
    const lateCharges: ChargeInput[] = [];
    const trueUps: ChargeInput[] = [];
    const lateCredits: LateCredit[] = [];
    for (const s of active) {
      const spec = specOf(cc, s);
      const p = periodAt(spec, at);
      charges.push(...feeCharges(spec, p.index, s, cc.plans, unit));
      const minimumNanos = minimums.get(s.subscriptionId) ?? 0n;
      if (minimumNanos > 0n) commitments.push({ subscriptionId: s.subscriptionId, minimumNanos, usageNanos: commitmentUsage(rated, p, s.subscriptionId, unit), fees: commitmentFees(spec, p.index, s, cc.plans, unit) });
      const late = await readLate(tenant, cc, s, spec, p, unit, periodPricedIds(s, cc.plans));
      const l = lateLines(late, s, cc, unit, () => true);
      lateCharges.push(...l.charges);
      lateCredits.push(...l.credits);
      trueUps.push(...(await feeTrueUpCharges(tenant, cc, s, p, unit, late)));
    }
    // the whole customer's (no subscription's share): the period bounds decide nothing here
    const wallet = await creditsFor(tenant, cc, unit, window.from, window.to, undefined, window);
    const creditUnits = await creditsUsed(tenant, cc, bucketTotals, unit, window, at, undefined, window);
    charges.push(...capturedHoldsCharges(wallet.captured, active[0]?.subscriptionId ?? "", window), ...creditUnits.overage);
    // unbilled top-ups up to `at` (the first subscription's, in its own periods)
    const first = cc.subs[0];
    const firstSpec = first === undefined ? undefined : specOf(cc, first);
    const topUps =
      primary === undefined || first === undefined || firstSpec === undefined || at.getTime() < first.startedAt.getTime()
        ? []
        : await topUpLines(tenant, cc, first, firstSpec, periodAt(firstSpec, at), at, unit);
    const a = assembleInvoice({
      currency: unit,
      settings: cc.settings,
      charges: [...charges, ...lateCharges, ...trueUps, ...topUps],
      minimumCommitmentNanos: 0n,
      commitments,
      creditsAppliedNanos: wallet.credits,
      lateCredits,
      residues: await store.readResidues(tenant, customerId),
      deferredIn: await store.readDeferral(tenant, customerId),
      lineDeferralsIn: await store.readLineDeferrals(tenant, customerId),
      periodStart: period.start,
      periodEnd: period.end,
      timeZone: base.timeZone,
      subscriptionEnds: active.length > 0 && active.every((s) => endsBy(s, period.end)),
      customerEnds: cc.subs.every((s) => endsBy(s, period.end)),
    });
    // A preview near year 9999 can name a time past it (its period, or fees billed in advance for
    // the next period), which no Timestamp can hold: refused, naming `at` (nothing was written).
    for (const [what, start, end] of [["billing period", period.start, period.end] as const, ...a.lines.map((l) => [`line ${l.description}`, l.periodStart, l.periodEnd] as const)]) {
      if (!inTimeRange(start.getTime()) || !inTimeRange(end.getTime())) {
        throw new InvalidInput("at", `its ${what} (${start.toISOString()} to ${end.toISOString()}) is not inside years 1..9999 UTC: no Timestamp can hold it`);
      }
    }
    return {
      id: "",
      number: "",
      customerId,
      subscriptionId: active.length === 1 ? active[0]!.subscriptionId : "",
      status: "preview",
      unit,
      periodStart: period.start,
      periodEnd: period.end,
      timeZone: base.timeZone,
      lines: a.lines,
      totals: a.totals,
      roundingMode: cc.settings.roundingMode,
      taxRateBps: cc.settings.taxRateBps,
      deferral: a.deferralShown,
      createdAt: clock.now(),
      finalizedAt: undefined,
      paidAt: undefined,
      voidedAt: undefined,
      creditNote: undefined,
      paymentId: "",
      ledgerTransferIds: [],
      creditsInUnits: creditUnits.credits,
    };
  }

  function itemResult(subscriptionId: string, result: pb.ClosePeriodResult, message: string, invoice?: Invoice): pb.ClosePeriodItemResult {
    return create(pb.ClosePeriodItemResultSchema, { subscriptionId, result, message, invoice: invoice === undefined ? undefined : invoiceToProto(invoice) });
  }

  type Prepared = { done: pb.ClosePeriodItemResult } | { cc: CustomerContext; sub: SubscriptionInfo; spec: PeriodSpec; period: Period; unit: string };

  /** preparePeriod: the period an item closes, or its per-item result when it cannot close. */
  async function preparePeriod(tenant: string, item: pb.ClosePeriodItem, index: number, now: Date, customers: Map<string, Promise<CustomerContext | undefined>>, cache: Parameters<typeof loadCustomer>[2]): Promise<Prepared> {
    const R = pb.ClosePeriodResult;
    const done = (result: pb.ClosePeriodResult, message: string) => ({ done: itemResult(item.subscriptionId, result, message) });
    try {
      checkId(item.customerId, "items.customer_id");
      checkId(item.subscriptionId, "items.subscription_id");
    } catch (e) {
      return done(R.INVALID, (e as Error).message);
    }
    let pending = customers.get(item.customerId);
    if (pending === undefined) {
      pending = loadCustomer(tenant, item.customerId, cache);
      customers.set(item.customerId, pending);
    }
    const cc = await pending;
    if (cc === undefined) return done(R.NOT_FOUND, `customer ${item.customerId} not found`);
    const sub = cc.subs.find((s) => s.subscriptionId === item.subscriptionId);
    if (sub === undefined) return done(R.NOT_FOUND, `subscription ${item.subscriptionId} of customer ${item.customerId} not found`);
    // A bad value of this item (a time out of range, a period the settings cannot compute) is this
    // item's INVALID result naming the field; the other items of the request are closed.
    let spec: PeriodSpec;
    let period: Period | undefined;
    try {
      spec = specOf(cc, sub);
      if (item.periodStart !== undefined) {
        const ps = timeOf(item.periodStart, `items[${index}].period_start`)!;
        period = periodStartingAt(spec, ps);
        if (period === undefined) return done(R.INVALID, `items[${index}].period_start: ${ps.toISOString()} is not the start of a billing period of ${sub.subscriptionId}`);
      } else {
        period = lastEndedPeriod(spec, now);
        if (period === undefined) {
          const current = periodAt(spec, now.getTime() < sub.startedAt.getTime() ? sub.startedAt : now);
          return done(R.PERIOD_NOT_ENDED, `the first period of ${sub.subscriptionId} ends at ${current.end.toISOString()}; it has not ended (now ${now.toISOString()}): nothing was written`);
        }
      }
    } catch (e) {
      if (isInputError(e)) return done(R.INVALID, `${e.message}: nothing was written for this item`);
      throw e;
    }
    if (period.end.getTime() > now.getTime()) {
      return done(R.PERIOD_NOT_ENDED, `period ${period.start.toISOString()} - ${period.end.toISOString()} of ${sub.subscriptionId} has not ended (now ${now.toISOString()}): nothing was written`);
    }
    try {
      return { cc, sub, spec, period, unit: checkCurrency(cc.customer) };
    } catch (e) {
      return done(R.INVALID, (e as Error).message);
    }
  }

  /** prepareClose: reads the period's rated usage and consumption, and returns the close item. */
  async function prepareClose(tenant: string, x: { cc: CustomerContext; sub: SubscriptionInfo; spec: PeriodSpec; period: Period; unit: string }, now: Date, refreshOf = ""): Promise<CloseItem> {
    const { cc, sub, spec, period: p, unit } = x;
    // The hours of the period the subscription was alive in: usage outside its life is not its
    // own (an invoicing period coarser than rating's, e.g. a quarter, can hold a predecessor and
    // a successor sharing charge ids: each bills only its own hours).
    const window = usageWindow(withinLife(p, sub));
    // Charges priced on the period total (tiers, packages, allowances) are billed from rating's
    // RatePeriod on the period quantity, the others from the sums of their rated hour buckets.
    // A minimum commitment is trued up from the period's own usage by rating's exact period
    // (RatePeriod's lines of the subscription; commitmentUsage), not from the hour window.
    const ppIds = periodPricedIds(sub, cc.plans);
    const minimum = minimumCommitmentNanos(spec, p.index, sub, cc.plans);
    const [bucketTotals, wallet, rated] = await Promise.all([
      upstream.ratedUsage(tenant, cc.customer.customerId, window.from, window.to),
      creditsFor(tenant, cc, unit, window.from, window.to, sub, { from: p.start, to: p.end }),
      ppIds.size > 0 || minimum > 0n ? upstream.ratePeriod(tenant, cc.customer.customerId, p.start) : Promise.resolve(undefined),
    ]);
    // asked for the commitment only: the usage lines stay as billed without period-priced charges
    const totals = withPeriodPricing(bucketTotals, ppIds.size > 0 ? rated : undefined, p, ppIds);
    const o = ownersIn(cc, { from: p.start, to: p.end });
    const charges = [
      ...usageCharges(totals, sub, o.owners, o.subs, cc.names, unit, window),
      ...capturedHoldsCharges(wallet.captured, sub.subscriptionId, window),
      ...feeCharges(spec, p.index, sub, cc.plans, unit),
    ];
    // Late usage and prepaid money burned late for earlier invoiced periods (adjustment and
    // credits lines naming them; re-checked under the customer lock: see CloseItem.late), then the
    // fees of this period billed in advance on the previous invoice, trued up to the seat changes.
    const late = await readLate(tenant, cc, sub, spec, p, unit, ppIds, refreshOf);
    const trueUps = await feeTrueUpCharges(tenant, cc, sub, p, unit, late, refreshOf);
    // the period's own fees count towards its commitment (not the next period's billed in advance)
    const periodFees = minimum > 0n ? commitmentFees(spec, p.index, sub, cc.plans, unit) : undefined;
    const periodUsage = minimum > 0n ? commitmentUsage(rated, p, sub.subscriptionId, unit) : undefined;
    const oneOffs = await topUpLines(tenant, cc, sub, spec, p, p.end, unit, refreshOf);
    const creditUnits = await creditsUsed(tenant, cc, bucketTotals, unit, window, p.end, sub, { from: p.start, to: p.end });
    charges.push(...creditUnits.overage);
    return {
      creditsInUnits: creditUnits.credits,
      params: {
        invoiceId: invoiceIdFor(tenant, sub.subscriptionId, p.start),
        customerId: cc.customer.customerId,
        subscriptionId: sub.subscriptionId,
        periodIndex: p.index,
        periodStart: p.start,
        periodEnd: p.end,
        usageFrom: window.from,
        usageTo: window.to,
        timeZone: spec.timeZone,
        unit,
        roundingMode: cc.settings.roundingMode,
        taxRateBps: cc.settings.taxRateBps,
        now,
        periodInterval: cc.settings.periodInterval,
        periodAnchor: cc.settings.periodAnchor,
      },
      late: late.map((w) => w.snapshot),
      oneOffIds: oneOffs.map((c) => c.chargeId),
      assemble: (residues, deferredIn, unchanged, lineDeferrals, billedOneOffs) => {
        const l = lateLines(late, sub, cc, unit, (periodStartMs) => unchanged.has(periodStartMs));
        // usage carried below the line minimum: only this subscription's charges
        const mine = new Map([...lineDeferrals].filter(([chargeId]) => ownerOf(chargeId, o.owners, o.subs) === sub.subscriptionId));
        return assembleInvoice({
          currency: unit,
          settings: cc.settings,
          charges: [...charges, ...l.charges, ...trueUps, ...oneOffs.filter((c) => !billedOneOffs.has(c.chargeId))],
          minimumCommitmentNanos: minimum,
          commitmentFees: periodFees,
          commitmentUsageNanos: periodUsage,
          creditsAppliedNanos: wallet.credits,
          lateCredits: l.credits,
          residues,
          deferredIn,
          lineDeferralsIn: mine,
          periodStart: p.start,
          periodEnd: p.end,
          timeZone: spec.timeZone,
          subscriptionEnds: endsBy(sub, p.end),
          customerEnds: cc.subs.every((s) => endsBy(s, p.end)),
        });
      },
    };
  }

  async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T, i: number) => Promise<R>): Promise<R[]> {
    const out: R[] = new Array(items.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return out;
  }

  /**
   * refresh: re-assembles a draft inside its grace period from what is rated and consumed for
   * its period now (the same rules as its close, its own lines left out of "already billed"),
   * and replaces it in one transaction under the customer's lock (store.refreshDraft).
   */
  async function refresh(tenant: string, inv: StoredInvoice, now: Date): Promise<{ invoice: StoredInvoice; changed: boolean }> {
    try {
      return await refreshOnce(tenant, inv, now);
    } catch (e) {
      if (!(e instanceof InvoicingError && e.kind === "aborted")) throw e;
      // another refresh wrote the draft while this one read upstream: once more from the draft as it is now
      logger.info("draft refresh raced another; retried once", { tenant, invoice_id: inv.id });
      return refreshOnce(tenant, await mustGet(tenant, inv.id), now);
    }
  }

  /**
   * refreshOnce: one attempt: `inv` is the draft as read before upstream is read; the store
   * refuses (aborted) when the draft changed since, so older reads never overwrite newer ones
   * (a one-off or overage line another refresh added is never dropped).
   */
  async function refreshOnce(tenant: string, inv: StoredInvoice, now: Date): Promise<{ invoice: StoredInvoice; changed: boolean }> {
    const refuse = (why: string) => new InvoicingError("failed_precondition", `invoice ${inv.id} cannot be refreshed: ${why}`);
    if (inv.status !== "draft") throw refuse(`it is ${inv.status}; only a draft can be refreshed (late usage is billed on the next invoice)`);
    const cc = await loadCustomer(tenant, inv.customerId);
    if (cc === undefined) throw refuse(`customer ${inv.customerId} is not found in rating`);
    const graceEnd = inv.periodEnd.getTime() + cc.settings.gracePeriodMs;
    if (now.getTime() >= graceEnd) {
      throw refuse(
        cc.settings.gracePeriodMs === 0
          ? `customer ${inv.customerId} has no grace period (settings.grace_period_ms = 0); late usage is billed on the next invoice`
          : `its grace period ended at ${new Date(graceEnd).toISOString()}; late usage is billed on the next invoice`,
      );
    }
    const sub = cc.subs.find((s) => s.subscriptionId === inv.subscriptionId);
    if (sub === undefined) throw refuse(`subscription ${inv.subscriptionId} is not found in rating`);
    const unit = checkCurrency(cc.customer);
    if (unit !== inv.unit) throw refuse(`the customer's currency is now ${unit}, the draft's ${inv.unit}`);
    const spec = specOf(cc, sub);
    const period = periodStartingAt(spec, inv.periodStart);
    if (period === undefined || period.end.getTime() !== inv.periodEnd.getTime()) throw refuse("the customer's billing period settings changed since the close");
    let item: CloseItem;
    try {
      item = await prepareClose(tenant, { cc, sub, spec, period, unit }, now, inv.id);
    } catch (e) {
      // the period cannot be billed as read (e.g. top-ups that would be dropped): marked, so that
      // FinalizeInvoice refuses too instead of finalizing the draft without them
      if (e instanceof InvoicingError && e.kind === "failed_precondition") throw new InvoicingError("failed_precondition", e.message, UNBILLABLE);
      throw e;
    }
    return store.refreshDraft(tenant, inv.id, { ...item, draftAsRead: inv }, now);
  }

  async function mustGet(tenant: string, invoiceId: string): Promise<StoredInvoice> {
    checkId(invoiceId, "invoice_id");
    const inv = await store.getInvoice(tenant, invoiceId);
    if (inv === undefined) throw new InvoicingError("not_found", `invoice ${invoiceId} not found`);
    return inv;
  }

  /**
   * finalizeDraft: FinalizeInvoice without the caller checks. Inside its grace period a draft is
   * refreshed first, so that usage rated late for its period is on it. A refresh refused for the
   * draft's state (a later invoice already bills from it) finalizes the draft as it is: that
   * later invoice adjusts the period. A refresh refused because the period cannot be billed as read
   * (UNBILLABLE: top-ups that would be dropped ...) or aborted by concurrent refreshes refuses the
   * finalize too. Then numbered, made immutable and posted to the ledger.
   */
  async function finalizeDraft(tenant: string, invoiceId: string, now: Date): Promise<StoredInvoice> {
    const draft = await mustGet(tenant, invoiceId);
    if (draft.status === "draft" && draft.closeInputs !== undefined) {
      const settings = await store.getSettings(tenant, draft.customerId);
      if (settings !== undefined && now.getTime() < draft.periodEnd.getTime() + settings.gracePeriodMs) {
        try {
          await refresh(tenant, draft, now);
        } catch (e) {
          // a refusal for the draft's state (a later invoice adjusts the period) finalizes it as it
          // is; one for what its period would bill now (UNBILLABLE) refuses the finalize too
          if (!(e instanceof InvoicingError && e.kind === "failed_precondition") || e.field === UNBILLABLE) throw e;
          logger.info("draft not refreshed before finalizing", { tenant, invoice_id: draft.id, reason: e.message });
        }
      }
    }
    const inv = await store.finalize(tenant, invoiceId, now, (i) => finalizeLegs(i).map((l) => l.id));
    return postLedger(tenant, inv);
  }

  /**
   * sweepDrafts: one pass of the draft loop. Claims up to `limit` drafts (store.claimDrafts:
   * replicas take disjoint drafts, each at most once per recheckMs); refreshes those inside their
   * grace period (idempotent: nothing new, nothing written) and finalizes those past it when the
   * customer's auto_finalize is on. Every write goes through the same locks as the RPCs (the
   * customer's advisory lock for a refresh, the invoice row for a finalize), so a pass racing
   * another replica or a caller cannot bill twice or number twice.
   */
  async function sweepDrafts(limit: number, recheckMs: number): Promise<DraftPassResult> {
    const now = clock.now();
    const due = await store.claimDrafts(now, recheckMs, limit);
    const out: DraftPassResult = { claimed: due.length, refreshed: 0, unchanged: 0, finalized: 0, skipped: 0, failed: 0 };
    for (const x of due) {
      try {
        if (now.getTime() < x.periodEnd.getTime() + x.gracePeriodMs) {
          const inv = await store.getInvoice(x.tenant, x.invoiceId);
          if (inv === undefined || inv.status !== "draft") {
            out.skipped += 1;
            continue;
          }
          const r = await refresh(x.tenant, inv, now);
          if (r.changed) out.refreshed += 1;
          else out.unchanged += 1;
        } else if (x.autoFinalize) {
          await finalizeDraft(x.tenant, x.invoiceId, now);
          out.finalized += 1;
        } else out.skipped += 1;
      } catch (e) {
        if (e instanceof InvoicingError && e.kind === "failed_precondition") {
          out.skipped += 1;
          logger.info("draft loop: draft left as it is", { tenant: x.tenant, invoice_id: x.invoiceId, reason: e.message });
        } else {
          out.failed += 1;
          logger.warn("draft loop: draft not processed; retried on a later pass", { tenant: x.tenant, invoice_id: x.invoiceId, error: String(e) });
        }
      }
    }
    return out;
  }

  const handlers: ServiceImpl<typeof pb.InvoicingService> = {
    previewInvoice: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        checkId(req.customerId, "customer_id");
        const at = timeOf(req.at, "at") ?? clock.now();
        return create(pb.PreviewInvoiceResponseSchema, { invoice: invoiceToProto(await preview(tenant, req.customerId, at)) });
      }),

    closePeriod: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        if (req.items.length === 0) throw new InvalidInput("items", "must hold at least one item");
        if (req.items.length > L.CLOSE_PERIOD_ITEMS_MAX) throw new InvalidInput("items", `must hold at most ${L.CLOSE_PERIOD_ITEMS_MAX} items, got ${req.items.length}`);
        const now = clock.now();
        // 1. Periods (customer, subscriptions, plans and settings read once per customer / plan).
        const ids = [...new Set(req.items.map((i) => i.customerId).filter((c) => c !== ""))].slice(0, L.CLOSE_PERIOD_ITEMS_MAX);
        const cache = { plans: new Map<string, Promise<Map<string, PlanVersionInfo>>>(), settings: await store.getSettingsMany(tenant, ids) };
        const customers = new Map<string, Promise<CustomerContext | undefined>>();
        const prepared = await mapLimit(req.items, L.CLOSE_CONCURRENCY, (item, i) => preparePeriod(tenant, item, i, now, customers, cache));
        // 2. Periods already invoiced are answered without reading usage again.
        const open = prepared.flatMap((p, i) => ("done" in p ? [] : [{ i, p }]));
        const existing = await store.existingIds(tenant, open.map(({ p }) => ({ subscriptionId: p.sub.subscriptionId, periodStart: p.period.start })));
        const results: pb.ClosePeriodItemResult[] = new Array(req.items.length);
        prepared.forEach((p, i) => {
          if ("done" in p) results[i] = p.done;
        });
        const todo: Array<{ i: number; p: Exclude<Prepared, { done: pb.ClosePeriodItemResult }> }> = [];
        const found = await store.getInvoices(tenant, [...new Set(existing.values())]);
        for (const o of open) {
          const id = existing.get(`${o.p.sub.subscriptionId}|${o.p.period.start.getTime()}`);
          if (id === undefined) todo.push(o);
          else results[o.i] = itemResult(o.p.sub.subscriptionId, pb.ClosePeriodResult.ALREADY_CLOSED, "", found.get(id));
        }
        // 3. Rated usage and consumption per subscription period (auto top-ups listed once for
        //    the request when it closes many customers), then one transaction.
        await listTopUpsForRequest(tenant, todo.map(({ p }) => p));
        //    An item refused for its customer's state (FailedPrecondition: too many top-ups or credit
        //    types ...) is that item's result; the other items are closed.
        const readied = await mapLimit(todo, L.CLOSE_CONCURRENCY, async ({ p }) => {
          try {
            return await prepareClose(tenant, p, now);
          } catch (e) {
            if (isInputError(e)) return e;
            if (!(e instanceof InvoicingError && e.kind === "failed_precondition")) throw e;
            logger.warn("close refused for one item", { tenant, customer_id: p.cc.customer.customerId, subscription_id: p.sub.subscriptionId, reason: e.message });
            return e;
          }
        });
        const closing = todo.flatMap((t, k) => {
          const r = readied[k]!;
          if (isInputError(r)) {
            results[t.i] = itemResult(t.p.sub.subscriptionId, pb.ClosePeriodResult.INVALID, `items[${t.i}]: ${r.message}: nothing was written for this item`);
            return [];
          }
          if (r instanceof InvoicingError) {
            results[t.i] = itemResult(t.p.sub.subscriptionId, pb.ClosePeriodResult.FAILED_PRECONDITION, r.message);
            return [];
          }
          return [{ ...t, item: r }];
        });
        //    An item whose invoice cannot be written (over 500 lines, a value the database rejects) is
        //    isolated by the store and refused alone; a transient failure fails the request (retry).
        const outcomes = await store.closeMany(tenant, closing.map((c) => c.item));
        closing.forEach(({ i, p }, k) => {
          const o = outcomes[k]!;
          if ("refused" in o) {
            logger.warn("close refused for one item: its invoice could not be written", {
              tenant, customer_id: p.cc.customer.customerId, subscription_id: p.sub.subscriptionId, reason: o.refused, error: String(o.cause),
            });
            results[i] = itemResult(p.sub.subscriptionId, pb.ClosePeriodResult.FAILED_PRECONDITION, o.refused);
            return;
          }
          results[i] = itemResult(p.sub.subscriptionId, o.created ? pb.ClosePeriodResult.CREATED : pb.ClosePeriodResult.ALREADY_CLOSED, "", o.invoice);
        });
        return create(pb.ClosePeriodResponseSchema, { results });
      }),

    getInvoice: (req, ctx) =>
      guard(async () => create(pb.GetInvoiceResponseSchema, { invoice: invoiceToProto(await mustGet(reader(ctx), req.invoiceId)) })),

    listInvoices: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        if (req.customerId !== "") checkId(req.customerId, "customer_id");
        const size = req.pageSizeMax === 0 ? L.LIST_PAGE_SIZE_DEFAULT : Math.min(req.pageSizeMax, L.LIST_PAGE_SIZE_MAX);
        let after: { periodStart: Date; invoiceId: string } | undefined;
        if (req.pageToken !== "") {
          const m = /^(\d{1,16})\.(inv_[a-z0-9]{1,64})$/.exec(req.pageToken);
          if (m === null) throw new InvalidInput("page_token", "is not a token returned by ListInvoices");
          const ms = Number(m[1]);
          if (!inTimeRange(ms)) throw new InvalidInput("page_token", "is not a token returned by ListInvoices (its time is out of range)");
          after = { periodStart: new Date(ms), invoiceId: m[2]! };
        }
        const rows = await store.listInvoices(tenant, { customerId: req.customerId, status: statusFromProto(req.status), limit: size + 1, after });
        const page = rows.slice(0, size);
        const last = page[page.length - 1];
        return create(pb.ListInvoicesResponseSchema, {
          invoices: page.map(invoiceToProto),
          nextPageToken: rows.length > size && last !== undefined ? `${last.periodStart.getTime()}.${last.id}` : "",
        });
      }),

    finalizeInvoice: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        checkId(req.invoiceId, "invoice_id");
        // A retry of a finalize (the invoice is already finalized, or paid since) answers the invoice as it is.
        const finalized = (i: StoredInvoice) => i.status === "finalized" || i.status === "paid";
        const cur = await mustGet(tenant, req.invoiceId);
        if (finalized(cur)) return create(pb.FinalizeInvoiceResponseSchema, { invoice: invoiceToProto(await postLedger(tenant, cur)) });
        try {
          return create(pb.FinalizeInvoiceResponseSchema, { invoice: invoiceToProto(await finalizeDraft(tenant, req.invoiceId, clock.now())) });
        } catch (e) {
          // a concurrent finalize of the same draft won the row lock: the same result
          if (!(e instanceof InvoicingError && e.kind === "failed_precondition" && e.field !== UNBILLABLE)) throw e;
          const now = await mustGet(tenant, req.invoiceId);
          if (!finalized(now)) throw e;
          return create(pb.FinalizeInvoiceResponseSchema, { invoice: invoiceToProto(await postLedger(tenant, now)) });
        }
      }),

    refreshInvoice: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const r = await refresh(tenant, await mustGet(tenant, req.invoiceId), clock.now());
        return create(pb.RefreshInvoiceResponseSchema, { invoice: invoiceToProto(r.invoice), changed: r.changed });
      }),

    voidInvoice: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        checkId(req.invoiceId, "invoice_id");
        if (req.reason.trim() === "") throw new InvalidInput("reason", "is required");
        if (req.reason.length > L.REASON_CHARS_MAX) throw new InvalidInput("reason", `must be at most ${L.REASON_CHARS_MAX} characters`);
        if (req.creditNoteId !== "") checkId(req.creditNoteId, "credit_note_id", "cn_");
        const r = await store.voidInvoice(tenant, req.invoiceId, req.reason, req.creditNoteId, clock.now(), (i) => voidLegs(i).map((l) => l.id));
        return create(pb.VoidInvoiceResponseSchema, { invoice: invoiceToProto(await postLedger(tenant, r.invoice)) });
      }),

    markInvoicePaid: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        checkId(req.invoiceId, "invoice_id");
        checkId(req.paymentId, "payment_id");
        const paidAt = timeOf(req.paidAt, "paid_at") ?? clock.now();
        const r = await store.markPaid(tenant, req.invoiceId, req.paymentId, paidAt, (i) => paidLegs(i).map((l) => l.id));
        return create(pb.MarkInvoicePaidResponseSchema, { invoice: invoiceToProto(await postLedger(tenant, r.invoice)) });
      }),

    renderInvoice: (req, ctx) =>
      guard(async () => {
        const inv = await mustGet(reader(ctx), req.invoiceId);
        const format = req.format === pb.RenderFormat.HTML ? "html" : req.format === pb.RenderFormat.PDF ? "pdf" : "json";
        const r = renderInvoice(inv, format);
        if (r.content.length > L.RENDER_BYTES_MAX) throw new InvoicingError("failed_precondition", `rendered invoice exceeds ${L.RENDER_BYTES_MAX} bytes`);
        return create(pb.RenderInvoiceResponseSchema, r);
      }),

    reconcile: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        if (req.customerId !== "") checkId(req.customerId, "customer_id");
        if (req.invoicesMax > L.RECONCILE_INVOICES_MAX) throw new InvalidInput("invoices_max", `must be at most ${L.RECONCILE_INVOICES_MAX}`);
        const invoices = await store.listFinalized(tenant, req.customerId, req.invoicesMax === 0 ? L.RECONCILE_INVOICES_DEFAULT : req.invoicesMax);
        const differences: pb.ReconcileDifference[] = [];
        const diff = (invoiceId: string, check: string, expected: bigint, actual: bigint, detail: string) => {
          if (expected !== actual) differences.push(create(pb.ReconcileDifferenceSchema, { invoiceId, check, expectedNanos: expected, actualNanos: actual, differenceNanos: actual - expected, detail }));
        };
        const customers = new Map<string, Promise<CustomerContext | undefined>>();
        for (const inv of invoices) {
          const linesDue = inv.lines.reduce((s, l) => s + l.roundedAmountNanos, 0n);
          diff(inv.id, "lines_total", inv.totals.amountDueNanos, linesDue, "sum of rounded lines vs amount due");
          // Rated usage now, by the rule the invoice was made with: period-priced charges from
          // RatePeriod (exact period amount after the real-time cap), the others from buckets.
          let pending = customers.get(inv.customerId);
          if (pending === undefined) {
            pending = loadCustomer(tenant, inv.customerId);
            customers.set(inv.customerId, pending);
          }
          const cc = await pending;
          const sub = cc?.subs.find((x) => x.subscriptionId === inv.subscriptionId);
          const ppIds = cc === undefined || sub === undefined ? new Set<string>() : periodPricedIds(sub, cc.plans);
          const [bucketTotals, ratedPeriod] = await Promise.all([
            upstream.ratedUsage(tenant, inv.customerId, inv.usageFrom, inv.usageTo),
            ppIds.size > 0 ? upstream.ratePeriod(tenant, inv.customerId, inv.periodStart) : Promise.resolve(undefined),
          ]);
          const totals = withPeriodPricing(bucketTotals, ratedPeriod, { start: inv.periodStart, end: inv.periodEnd, index: inv.periodIndex }, ppIds);
          const rated = new Map<string, bigint>();
          for (const t of totals) if (t.unit === inv.unit) rated.set(t.chargeId, (rated.get(t.chargeId) ?? 0n) + t.priceNanos);
          // The wallet's burns of the window now (this subscription's share): grant-funded money
          // (credits applied) and captures, which the "Captured holds" line bills as its usage.
          const wallet = cc !== undefined && sub !== undefined ? await creditsFor(tenant, cc, inv.unit, inv.usageFrom, inv.usageTo, sub, { from: inv.periodStart, to: inv.periodEnd }) : undefined;
          if (wallet !== undefined && wallet.captured !== 0n) rated.set(CHARGE_ID_CAPTURED_HOLDS, wallet.captured);
          const billed = await store.billedUsage(tenant, inv.subscriptionId, inv.usageFrom);
          // Every usage charge of the subscription billed or rated for the period, not only the
          // invoice's usage lines: a charge rated for it that no line bills (usage rated late for a
          // charge without a line, a line the close left out) is a difference too. Fee charges
          // (their true-ups are adjustment lines) and other subscriptions' charges are not usage here.
          const feeIds = cc === undefined ? new Set<string>() : feeChargeIds(cc.plans);
          const o = cc === undefined ? undefined : ownersIn(cc, { from: inv.periodStart, to: inv.periodEnd });
          const mine = (chargeId: string) => chargeId !== "" && !feeIds.has(chargeId) && (o === undefined || ownerOf(chargeId, o.owners, o.subs) === inv.subscriptionId);
          const checked = new Set(inv.lines.filter((l) => l.kind === "usage").map((l) => l.chargeId));
          if (sub !== undefined) for (const id of [...billed.keys(), ...rated.keys()]) if (mine(id) || id === CHARGE_ID_CAPTURED_HOLDS) checked.add(id);
          for (const chargeId of [...checked].sort()) {
            const what = chargeId === CHARGE_ID_CAPTURED_HOLDS ? "vs what captures of holds burned in the window now; a difference is a capture not yet billed" : "vs rated usage now; a difference is late usage not yet billed";
            diff(inv.id, "rated_usage", billed.get(chargeId) ?? 0n, rated.get(chargeId) ?? 0n, `charge ${chargeId}: billed exact nanos (usage line + later adjustments) ${what}`);
          }
          // Prepaid money consumed in the window now vs credits applied for the period (its own
          // credits line + later invoices' late credits lines naming it).
          if (wallet !== undefined) {
            const applied = await store.billedWindows(tenant, [{ subscriptionId: inv.subscriptionId, usageFrom: inv.usageFrom, periodStart: inv.periodStart }]);
            const appliedNanos = applied.get(billedKey(inv.subscriptionId, "credits", inv.periodStart))?.get("") ?? 0n;
            diff(inv.id, "credits_applied", appliedNanos, wallet.credits, "prepaid money consumed in the window now vs credits applied for the period (its invoice + later late-credits lines); a difference is prepaid money burned late, not yet applied");
          }
          const legs = allLegs(inv);
          const posted = await ledger.lookup(tenant, inv.ledgerTransferIds);
          for (const id of inv.ledgerTransferIds) {
            const want = legs.get(id)?.amountNanos ?? 0n;
            diff(inv.id, "ledger", want, posted.get(id) ?? 0n, `transfer ${id}${posted.has(id) ? "" : " is missing from the ledger"}`);
          }
        }
        return create(pb.ReconcileResponseSchema, { invoicesChecked: invoices.length, differences });
      }),

    expandLine: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        const inv = await mustGet(tenant, req.invoiceId);
        const line = inv.lines.find((l) => l.id === req.lineId);
        if (line === undefined) throw new InvoicingError("not_found", `line ${req.lineId} of invoice ${inv.id} not found`);
        if (!line.expandable) throw new InvoicingError("failed_precondition", `line ${line.id} is a ${line.kind} line; only usage lines expand into buckets`);
        const gran = req.granularity === "" ? "day" : req.granularity;
        if (gran !== "hour" && gran !== "day") throw new InvalidInput("granularity", `must be "hour" or "day", got ${JSON.stringify(req.granularity)}`);
        const buckets = await upstream.ratedBuckets(tenant, inv.customerId, line.periodStart, line.periodEnd, line.chargeId);
        const groups = new Map<number, { start: Date; end: Date; quantity: bigint; amount: bigint; events: bigint }>();
        let bucketSum = 0n;
        for (const b of buckets) {
          if (b.unit !== inv.unit || b.chargeId !== line.chargeId || b.hourStart === undefined) continue;
          const h = dateOf(b.hourStart)!;
          const start = gran === "hour" ? h : localDayStart(h, inv.timeZone);
          const end = gran === "hour" ? new Date(h.getTime() + 3_600_000) : localDayStart(new Date(start.getTime() + 26 * 3_600_000), inv.timeZone);
          const g = groups.get(start.getTime()) ?? { start, end, quantity: 0n, amount: 0n, events: 0n };
          g.quantity += b.quantity;
          g.amount += b.priceNanos;
          g.events += b.eventCount;
          bucketSum += b.priceNanos;
          groups.set(start.getTime(), g);
        }
        const all = [...groups.values()].sort((a, b) => a.start.getTime() - b.start.getTime());
        const toBucket = (g: (typeof all)[number]) =>
          create(pb.LineBucketSchema, { start: timestampFromDate(g.start), end: timestampFromDate(g.end), quantity: g.quantity.toString(), amountNanos: g.amount, eventsCount: g.events });
        const settlementNanos = line.amountNanos - bucketSum;
        if (req.bucketStart !== undefined) {
          // One bucket -> its rated events (rating ListRatedEvents: paged, bounded, tenant-checked).
          const bs = timeOf(req.bucketStart, "bucket_start")!;
          const g = groups.get(bs.getTime());
          if (g === undefined) throw new InvalidInput("bucket_start", `${bs.toISOString()} is not the start of a ${gran} bucket of line ${line.id}; list the buckets first`);
          if (req.pageToken.length > L.EXPAND_TOKEN_CHARS_MAX || !/^[A-Za-z0-9_.-]*$/.test(req.pageToken)) throw new InvalidInput("page_token", "is not a token returned by ExpandLine");
          const size = req.pageSizeMax === 0 ? L.EXPAND_EVENTS_PAGE_SIZE_DEFAULT : Math.min(req.pageSizeMax, L.EXPAND_EVENTS_PAGE_SIZE_MAX);
          // The bucket, clipped to the line's window (a local day may start before it).
          const from = new Date(Math.max(g.start.getTime(), floorHour(line.periodStart).getTime()));
          const to = new Date(Math.min(g.end.getTime(), line.periodEnd.getTime()));
          const page = await upstream.ratedEvents(tenant, inv.customerId, line.chargeId, from, to, size, req.pageToken);
          return create(pb.ExpandLineResponseSchema, {
            buckets: [toBucket(g)],
            events: page.events
              .filter((e) => e.unit === inv.unit)
              .map((e) =>
                create(pb.LineEventSchema, {
                  eventId: e.eventId,
                  occurredAt: e.timestamp,
                  quantity: e.quantity.toString(),
                  amountNanos: e.priceNanos,
                  costNanos: e.costNanos,
                  costUnit: e.costUnit,
                }),
              ),
            nextPageToken: page.nextPageToken,
            settlementNanos,
          });
        }
        const size = req.pageSizeMax === 0 ? L.EXPAND_PAGE_SIZE_DEFAULT : Math.min(req.pageSizeMax, L.EXPAND_PAGE_SIZE_MAX);
        const offset = req.pageToken === "" ? 0 : Number(req.pageToken);
        if (!Number.isSafeInteger(offset) || offset < 0 || !/^\d{0,9}$/.test(req.pageToken)) throw new InvalidInput("page_token", "is not a token returned by ExpandLine");
        const page = all.slice(offset, offset + size);
        return create(pb.ExpandLineResponseSchema, {
          buckets: page.map(toBucket),
          nextPageToken: offset + size < all.length ? String(offset + size) : "",
          settlementNanos,
        });
      }),

    setBillingSettings: (req, ctx) =>
      guard(async () => {
        const tenant = writer(ctx);
        const s = req.settings;
        if (s === undefined) throw new InvalidInput("settings", "is required");
        const mode = modeFromProto(s.roundingMode);
        if (mode === undefined) throw new InvalidInput("settings.rounding_mode", `unknown value ${s.roundingMode}`);
        const interval = intervalFromProto(s.periodInterval);
        if (interval === undefined) throw new InvalidInput("settings.period_interval", `unknown value ${s.periodInterval}`);
        const anchor = anchorFromProto(s.periodAnchor);
        if (anchor === undefined) throw new InvalidInput("settings.period_anchor", `unknown value ${s.periodAnchor}`);
        const settings: StoredSettings = {
          ...validateSettings({
            customerId: s.customerId,
            taxRateBps: s.taxRateBps,
            roundingMode: mode,
            discountBps: s.discountBps,
            discountNanos: s.discountNanos,
            minimumBillableNanos: s.minimumBillableNanos,
            deferralPeriodsMax: s.deferralPeriodsMax,
            deferralUntil: timeOf(s.deferralUntil, "settings.deferral_until"),
            lineMinimumBillableNanos: s.lineMinimumBillableNanos,
          }),
          periodInterval: interval,
          periodAnchor: anchor,
          gracePeriodMs: checkGracePeriod(s.gracePeriodMs),
          autoFinalize: s.autoFinalize,
        };
        await store.putSettings(tenant, settings, clock.now());
        return create(pb.SetBillingSettingsResponseSchema, { settings: settingsToProto(settings) });
      }),

    getBillingSettings: (req, ctx) =>
      guard(async () => {
        const tenant = reader(ctx);
        checkId(req.customerId, "customer_id");
        return create(pb.GetBillingSettingsResponseSchema, { settings: settingsToProto(settingsOrDefault(await store.getSettings(tenant, req.customerId), req.customerId)) });
      }),
  };
  return { handlers, sweepDrafts };
}

/**
 * UNBILLABLE: marks a refresh refused because its period cannot be billed as read from upstream
 * (not because of the draft's state): FinalizeInvoice does not finalize the draft past it.
 */
const UNBILLABLE = "unbillable";

/** isInputError: a refusal of a value (a request's or one computed from it), answered as a bad item rather than an internal error. */
function isInputError(e: unknown): e is InvalidInput | PeriodError | MoneyError {
  return e instanceof InvalidInput || e instanceof PeriodError || e instanceof MoneyError;
}

/** endsBy: the subscription ends at or before `end` (no invoice of it after the period ending then). */
function endsBy(sub: SubscriptionInfo, end: Date): boolean {
  return sub.endedAt !== undefined && sub.endedAt.getTime() <= end.getTime();
}

function checkGracePeriod(ms: bigint): number {
  if (ms < 0n || ms > BigInt(L.GRACE_PERIOD_MS_MAX)) {
    throw new InvalidInput("settings.grace_period_ms", `must be in 0..${L.GRACE_PERIOD_MS_MAX} milliseconds (31 days), got ${ms}`);
  }
  return Number(ms);
}

/** retryPendingLedger: posts invoices whose ledger transfers are still pending (background). */
export async function retryPendingLedger(d: Pick<HandlerDeps, "store" | "ledger" | "logger">, limit = 100): Promise<number> {
  let posted = 0;
  for (const { tenant, invoiceId } of await d.store.listLedgerPending(limit)) {
    const inv = await d.store.getInvoice(tenant, invoiceId);
    if (inv === undefined) continue;
    try {
      const r = await d.ledger.post(tenant, inv);
      if (r.ok) {
        await d.store.markLedgerPosted(tenant, invoiceId);
        posted += 1;
      } else d.logger.error("ledger refused invoice transfers", { tenant, invoice_id: invoiceId, detail: r.detail });
    } catch (e) {
      d.logger.warn("ledger retry failed", { tenant, invoice_id: invoiceId, error: String(e) });
      break;
    }
  }
  return posted;
}
