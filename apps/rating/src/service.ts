import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import {
  ChargeUsageTotalSchema,
  ChargedEventSchema,
  MarginGroupBy,
  MarginRowSchema,
  PeriodLineKind,
  PeriodLineSchema,
  UsageBucketSchema,
  type RatingService,
} from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { forTenant, isOperator, principalOf, requireScope, tenantOf, type Clock, type Logger } from "@nanobill/service-kit";
import type { CatalogCache } from "./catalog-cache.js";
import type { RatingConfig } from "./config.js";
import { CHARGE_ID_RE, checkWholeNanoAmounts, compilePlanVersion } from "./domain/compile.js";
import { validateCostRate } from "./domain/cost-catalog.js";
import { RatingError, failedPrecondition, invalid, notFound } from "./domain/errors.js";
import { marginBps } from "./domain/margin.js";
import { billingPeriod } from "./domain/period.js";
import { checkNoSharedCharge } from "./domain/shared-charges.js";
import { ratePeriod, usageBoundaries, type PeriodLineKind as DomainLineKind, type PeriodUsageTotal } from "./domain/rate-period.js";
import { isCapKey, rateEvent } from "./domain/rate-event.js";
import { MemoryRatingState } from "./domain/state.js";
import type { Customer, PlanVersionSpec, Subscription } from "./domain/types.js";
import type { SubscriptionLife } from "./domain/shared-charges.js";
import { TIMESTAMP_JSON_MS_MIN, TIME_MS_MAX, checkId, checkName, checkRange, checkSeats, checkTime, validateCustomer, validateRule } from "./domain/validate.js";
import {
  ALERTS_PAGE_MAX,
  COST_RATES_LIST_MAX,
  COST_RATES_PER_REQUEST_MAX,
  GUARDRAIL_RULES_MAX,
  MARGIN_ROWS_MAX,
  MARGIN_WINDOW_MS_MAX,
  OVERRIDES_PER_CUSTOMER_MAX,
  PAGE_SIZE_DEFAULT,
  PAGE_SIZE_MAX,
  PHASES_PER_SUBSCRIPTION_MAX,
  RATED_EVENTS_WINDOW_MS_MAX,
  SEAT_CHANGES_PER_SUBSCRIPTION_MAX,
  SUBSCRIPTIONS_PER_CUSTOMER_MAX,
  USAGE_BUCKETS_MAX,
  USAGE_WINDOW_MS_MAX,
  VERSIONS_PER_PLAN_MAX,
} from "./limits.js";
import {
  LINE_STATUS,
  alertToProto,
  costRateOf,
  costRateToProto,
  customerOf,
  customerToProto,
  msOrNull,
  overrideOf,
  overrideToProto,
  planToProto,
  quoteEventOf,
  ratedEventToProto,
  ruleOf,
  ruleToProto,
  subscriptionToProto,
  timestampMs,
  versionOf,
} from "./mapping.js";
import type { CatalogStore } from "./store/catalog-store.js";
import type { RatedStore } from "./store/rated-store.js";
import { webhookRpcs } from "@nanobill/webhooks";

export interface HandlerDeps {
  catalog: CatalogStore;
  rated: RatedStore;
  cache: CatalogCache;
  clock: Clock;
  logger: Logger;
  config: RatingConfig;
  metering?: Client<typeof MeteringService>;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

const LINE_KIND: Record<DomainLineKind, PeriodLineKind> = {
  usage: PeriodLineKind.USAGE,
  flat: PeriodLineKind.FLAT,
  seats: PeriodLineKind.SEATS,
  minimum_true_up: PeriodLineKind.MINIMUM_TRUE_UP,
  cap_adjustment: PeriodLineKind.CAP_ADJUSTMENT,
};

function pageSize(n: number, max = PAGE_SIZE_MAX): number {
  if (n === 0) return PAGE_SIZE_DEFAULT;
  if (n > max) throw invalid("page_size_max", `must be at most ${max}`);
  return n;
}

function windowOf(from: number | null, to: number | null, maxMs: number): { fromMs: number; toMs: number } {
  if (from === null) throw invalid("from", "is required");
  if (to === null) throw invalid("to", "is required");
  if (to <= from) throw invalid("to", "must be after from");
  if (to - from > maxMs) throw invalid("to", `window must be at most ${maxMs / DAY_MS} days`);
  return { fromMs: Math.floor(from / HOUR_MS) * HOUR_MS, toMs: to };
}

/** createHandlers: the RatingService implementation (thin: decode -> domain/store -> encode). */
export function createHandlers(d: HandlerDeps): ServiceImpl<typeof RatingService> {
  const now = (): number => d.clock.now().getTime();
  const write = (ctx: HandlerContext): string => {
    requireScope(ctx, "admin");
    return tenantOf(ctx);
  };
  const read = (ctx: HandlerContext): string => {
    requireScope(ctx, "read");
    return tenantOf(ctx);
  };

  async function checkMeters(tenant: string, v: PlanVersionSpec, field: string): Promise<void> {
    if (!d.config.validateMeters || d.metering === undefined) return;
    for (let i = 0; i < v.charges.length; i++) {
      const u = v.charges[i]!.usage;
      if (u === null || u.meter === "") continue;
      try {
        const m = await d.metering.getMeter({ meterId: u.meter }, forTenant(tenant));
        if (m.meter !== undefined && m.meter.eventType !== u.eventType) {
          throw invalid(`${field}.charges[${i}].usage.event_type`, `must be the meter's event type ${JSON.stringify(m.meter.eventType)}, got ${JSON.stringify(u.eventType)}`);
        }
      } catch (e) {
        if (e instanceof ConnectError && e.code === Code.NotFound) throw invalid(`${field}.charges[${i}].usage.meter`, `unknown meter ${JSON.stringify(u.meter)}`);
        throw e;
      }
    }
  }

  async function prepareVersion(tenant: string, pv: Parameters<typeof versionOf>[0], field: string): Promise<PlanVersionSpec> {
    const spec = versionOf(pv, field);
    compilePlanVersion(spec, field);
    checkWholeNanoAmounts(spec, field);
    await checkMeters(tenant, spec, field);
    return spec;
  }

  async function requireCustomer(tenant: string, id: string, field: string): Promise<Customer> {
    checkId(id, field);
    const c = await d.catalog.getCustomer(tenant, id);
    if (c === null) throw notFound("customer", id);
    return c;
  }

  /**
   * checkVersionFits: a subscription may put the customer on version v of planId over
   * [fromMs, toMs) only if (1) v is priced in the customer's currency (credit-type charges are
   * credits, not currency: only the version's currency is compared) and (2) every price override
   * of the customer in force in that range for a charge of v compiles against v (as
   * SetPriceOverride checks): else rating would throw on every event under the override.
   * FailedPrecondition naming plan_version / price_override; called before any write.
   */
  async function checkVersionFits(tenant: string, customer: Customer, planId: string, v: PlanVersionSpec, fromMs: number, toMs: number | null): Promise<void> {
    if (v.currency !== customer.currency) {
      throw failedPrecondition("plan_version", `currency ${v.currency} differs from the customer's currency ${customer.currency} (${planId} v${v.version}); use a version priced in ${customer.currency}`);
    }
    for (const o of await d.catalog.listOverrides(tenant, customer.customerId)) {
      if (!(o.startMs < (toMs ?? Infinity) && (o.endMs === null || o.endMs > fromMs))) continue;
      const base = v.charges.find((c) => c.chargeId === o.chargeId);
      if (base === undefined) continue;
      try {
        compilePlanVersion({ ...v, charges: [{ ...base, pricing: o.pricing, includedQuantity: o.includedQuantity }] }, "price_override");
      } catch (e) {
        if (!(e instanceof RatingError)) throw e;
        throw failedPrecondition("price_override", `override ${JSON.stringify(o.overrideId)} of charge ${JSON.stringify(o.chargeId)} does not fit ${planId} v${v.version} (${e.message}); end or replace the override first`);
      }
    }
  }

  async function publishedVersion(tenant: string, planId: string, version: number): Promise<PlanVersionSpec> {
    checkId(planId, "plan_id");
    const v = await d.catalog.getVersion(tenant, planId, version);
    if (v === null) throw notFound("plan version", `${planId} v${version}`);
    if (v.status !== "published") throw failedPrecondition("plan_version", `${planId} v${version} is ${v.status}; subscriptions need a published version`);
    return v;
  }

  const webhooks = webhookRpcs(d.rated.db, () => d.clock.now(), { allowPrivateNetworks: d.config.webhooksAllowPrivateNetworks });

  return {
    async createCustomer(req, ctx) {
      const tenant = write(ctx);
      const c = customerOf(req.customer, now());
      validateCustomer(c);
      const out = await d.catalog.createCustomer(tenant, c);
      d.cache.invalidate(tenant);
      return { customer: customerToProto(out) };
    },

    async getCustomer(req, ctx) {
      const tenant = read(ctx);
      checkId(req.customerId, "customer_id");
      const c = await d.catalog.getCustomer(tenant, req.customerId);
      if (c === null) throw notFound("customer", req.customerId);
      return { customer: customerToProto(c) };
    },

    async listCustomers(req, ctx) {
      const tenant = read(ctx);
      const n = pageSize(req.pageSizeMax);
      const after = req.pageToken === "" ? "" : Buffer.from(req.pageToken, "base64url").toString("utf8");
      const cs = await d.catalog.listCustomers(tenant, after, n + 1);
      const page = cs.slice(0, n);
      return { customers: page.map(customerToProto), nextPageToken: cs.length > n ? Buffer.from(page[page.length - 1]!.customerId, "utf8").toString("base64url") : "" };
    },

    async createPlan(req, ctx) {
      const tenant = write(ctx);
      checkId(req.planId, "plan_id");
      checkName(req.name, "name");
      const spec = await prepareVersion(tenant, req.version, "version");
      const plan = await d.catalog.createPlan(tenant, req.planId, req.name, spec, now());
      d.cache.invalidate(tenant);
      return { plan: planToProto(plan) };
    },

    async createPlanVersion(req, ctx) {
      const tenant = write(ctx);
      checkId(req.planId, "plan_id");
      const spec = await prepareVersion(tenant, req.version, "version");
      const plan = await d.catalog.createPlanVersion(tenant, req.planId, spec, now(), VERSIONS_PER_PLAN_MAX);
      d.cache.invalidate(tenant);
      return { plan: planToProto(plan) };
    },

    async updatePlanVersion(req, ctx) {
      const tenant = write(ctx);
      checkId(req.planId, "plan_id");
      if (req.version === undefined || req.version.version === 0) throw invalid("version.version", "is required");
      const cur = await d.catalog.getVersion(tenant, req.planId, req.version.version);
      if (cur !== null && cur.status !== "draft") throw failedPrecondition("version", `${req.planId} v${req.version.version} is ${cur.status} and immutable; create a new version`);
      const spec = await prepareVersion(tenant, req.version, "version");
      const plan = await d.catalog.updatePlanVersion(tenant, req.planId, spec, now());
      d.cache.invalidate(tenant);
      return { plan: planToProto(plan) };
    },

    async publishPlanVersion(req, ctx) {
      const tenant = write(ctx);
      checkId(req.planId, "plan_id");
      const plan = await d.catalog.publishPlanVersion(tenant, req.planId, req.version, now(), (v) => {
        compilePlanVersion(v, "version");
        checkWholeNanoAmounts(v, "version");
      });
      d.cache.invalidate(tenant);
      return { plan: planToProto(plan) };
    },

    async archivePlanVersion(req, ctx) {
      const tenant = write(ctx);
      checkId(req.planId, "plan_id");
      const plan = await d.catalog.archivePlanVersion(tenant, req.planId, req.version, now());
      d.cache.invalidate(tenant);
      return { plan: planToProto(plan) };
    },

    async getPlan(req, ctx) {
      const tenant = read(ctx);
      checkId(req.planId, "plan_id");
      const p = await d.catalog.getPlan(tenant, req.planId);
      if (p === null) throw notFound("plan", req.planId);
      return { plan: planToProto(p) };
    },

    async createSubscription(req, ctx) {
      const tenant = write(ctx);
      checkId(req.subscriptionId, "subscription_id");
      const startMs = msOrNull(req.startTime, "start_time") ?? Number.NaN;
      const endMs = msOrNull(req.endTime, "end_time");
      checkRange(startMs, endMs, "start_time", "end_time");
      checkSeats(req.seats, "seats");
      const customer = await requireCustomer(tenant, req.customerId, "customer_id");
      const v = await publishedVersion(tenant, req.planId, req.planVersion);
      await checkVersionFits(tenant, customer, req.planId, v, startMs, endMs);
      const existing = await d.catalog.listSubscriptions(tenant, req.customerId);
      if (existing.length >= SUBSCRIPTIONS_PER_CUSTOMER_MAX && !existing.some((s) => s.subscriptionId === req.subscriptionId)) {
        throw invalid("customer_id", `has the maximum of ${SUBSCRIPTIONS_PER_CUSTOMER_MAX} subscriptions`);
      }
      const sub: Subscription = {
        subscriptionId: req.subscriptionId,
        customerId: req.customerId,
        phases: [{ planId: req.planId, planVersion: req.planVersion, startMs, endMs }],
        seatChanges: [],
        startMs,
        endMs,
      };
      // Refused (FailedPrecondition, nothing written) when another subscription of the customer
      // sharing a charge id is alive in a billing period this one is (shared-charges.ts); checked
      // in the write's transaction under the customer's lock; a replay answers as before.
      const charges = v.charges.map((c) => c.chargeId);
      const guard = (others: SubscriptionLife[]): void => checkNoSharedCharge(customer, { subscriptionId: sub.subscriptionId, startMs, endMs, versions: [v] }, charges, others, "plan_version");
      const out = await d.catalog.createSubscription(tenant, sub, req.seats, now(), guard);
      d.cache.invalidate(tenant);
      return { subscription: subscriptionToProto(out) };
    },

    async listSubscriptions(req, ctx) {
      const tenant = read(ctx);
      checkId(req.customerId, "customer_id");
      const subs = await d.catalog.listSubscriptions(tenant, req.customerId);
      return { subscriptions: subs.map(subscriptionToProto) };
    },

    async updateSeats(req, ctx) {
      const tenant = write(ctx);
      checkId(req.subscriptionId, "subscription_id");
      if (req.change === undefined) throw invalid("change", "is required");
      checkId(req.change.changeId, "change.change_id");
      checkSeats(req.change.seats, "change.seats");
      const eff = msOrNull(req.change.effectiveTime, "change.effective_time") ?? Number.NaN;
      checkTime(eff, "change.effective_time");
      const out = await d.catalog.updateSeats(tenant, req.subscriptionId, { changeId: req.change.changeId, seats: req.change.seats, effectiveMs: eff }, SEAT_CHANGES_PER_SUBSCRIPTION_MAX);
      d.cache.invalidate(tenant);
      return { subscription: subscriptionToProto(out) };
    },

    async migrateSubscription(req, ctx) {
      const tenant = write(ctx);
      checkId(req.subscriptionId, "subscription_id");
      const eff = msOrNull(req.effectiveTime, "effective_time") ?? Number.NaN;
      checkTime(eff, "effective_time");
      const v = await publishedVersion(tenant, req.planId, req.planVersion);
      const sub = await d.catalog.getSubscription(tenant, req.subscriptionId);
      if (sub === null) throw notFound("subscription", req.subscriptionId);
      const customer = await requireCustomer(tenant, sub.customerId, "subscription_id");
      await checkVersionFits(tenant, customer, req.planId, v, eff, sub.endMs);
      const charges = v.charges.map((c) => c.chargeId);
      const guard = (cur: Subscription, others: SubscriptionLife[]): void =>
        // the new version's life is its phase, [effective time, end): not the subscription's whole life
        checkNoSharedCharge(customer, { subscriptionId: cur.subscriptionId, startMs: Math.max(eff, cur.startMs), endMs: cur.endMs, versions: [v] }, charges, others, "plan_version");
      const out = await d.catalog.migrateSubscription(tenant, req.subscriptionId, req.planId, req.planVersion, eff, PHASES_PER_SUBSCRIPTION_MAX, guard);
      d.cache.invalidate(tenant);
      return { subscription: subscriptionToProto(out) };
    },

    async setPriceOverride(req, ctx) {
      const tenant = write(ctx);
      const o = overrideOf(req.priceOverride);
      checkId(o.overrideId, "price_override.override_id");
      checkRange(o.startMs, o.endMs, "price_override.start_time", "price_override.end_time");
      await requireCustomer(tenant, o.customerId, "price_override.customer_id");
      // The override must fit every subscribed version holding the charge: compile against each.
      const subs = await d.catalog.listSubscriptions(tenant, o.customerId);
      let found = false;
      for (const s of subs) {
        for (const ph of s.phases) {
          const v = await d.catalog.getVersion(tenant, ph.planId, ph.planVersion);
          const base = v?.charges.find((c) => c.chargeId === o.chargeId);
          if (v === null || base === undefined) continue;
          found = true;
          compilePlanVersion({ ...v, charges: [{ ...base, pricing: o.pricing, includedQuantity: o.includedQuantity }] }, "price_override");
        }
      }
      if (!found) throw invalid("price_override.charge_id", `no subscribed plan version of customer ${o.customerId} has charge ${JSON.stringify(o.chargeId)}`);
      const out = await d.catalog.setOverride(tenant, { overrideId: o.overrideId, customerId: o.customerId, chargeId: o.chargeId, pricing: o.pricing, includedQuantity: o.includedQuantity, startMs: o.startMs, endMs: o.endMs }, OVERRIDES_PER_CUSTOMER_MAX);
      d.cache.invalidate(tenant);
      return { priceOverride: overrideToProto(out) };
    },

    async listPriceOverrides(req, ctx) {
      const tenant = read(ctx);
      checkId(req.customerId, "customer_id");
      return { priceOverrides: (await d.catalog.listOverrides(tenant, req.customerId)).map(overrideToProto) };
    },

    async upsertCostRates(req, ctx) {
      const tenant = write(ctx);
      if (req.rates.length === 0) throw invalid("rates", "must not be empty");
      if (req.rates.length > COST_RATES_PER_REQUEST_MAX) throw invalid("rates", `must have at most ${COST_RATES_PER_REQUEST_MAX} rates`);
      // Global rates apply to every tenant: the operator's key only (not an internal key bound to a tenant).
      const operator = isOperator(principalOf(ctx));
      const results = req.rates.map((r, i) => {
        try {
          const spec = costRateOf(r, `rates[${i}]`);
          if (spec.scope === "global" && !operator) throw invalid(`rates[${i}].scope`, "global rates apply to every tenant and need an internal (operator) key; use COST_RATE_SCOPE_TENANT");
          validateCostRate(spec, `rates[${i}]`);
          return { index: i, ok: true, error: "", spec };
        } catch (e) {
          return { index: i, ok: false, error: (e as Error).message, spec: undefined };
        }
      });
      await d.catalog.upsertCostRates(tenant, results.flatMap((r) => (r.ok && r.spec ? [r.spec] : [])));
      d.cache.invalidate(tenant);
      return { results: results.map((r) => ({ index: r.index, ok: r.ok, error: r.error })) };
    },

    async listCostRates(req, ctx) {
      const tenant = read(ctx);
      let rates = await d.catalog.costRates(tenant, req.provider, req.model, COST_RATES_LIST_MAX);
      const at = msOrNull(req.at, "at");
      if (at !== null) {
        const best = new Map<string, (typeof rates)[number]>();
        for (const r of rates) {
          if (r.effectiveMs > at) continue;
          const k = `${r.provider}\u0000${r.model}\u0000${r.metric}`;
          const cur = best.get(k);
          const better = cur === undefined || (r.scope === "tenant" && cur.scope === "global") || (r.scope === cur.scope && r.effectiveMs > cur.effectiveMs);
          if (better) best.set(k, r);
        }
        rates = [...best.values()];
      }
      return { rates: rates.map(costRateToProto) };
    },

    async quote(req, ctx) {
      const tenant = read(ctx);
      const e = quoteEventOf(tenant, req.event, now());
      checkId(e.customerId, "event.customer_id");
      if (e.type === "") throw invalid("event.type", "is required");
      await d.cache.sync([tenant]); // another replica's catalog writes
      const cat = await d.cache.forCustomers(tenant, [e.customerId]);
      if (cat.customer(e.customerId) === undefined) throw notFound("customer", e.customerId);
      const st = new MemoryRatingState();
      await d.rated.loadState(d.rated.db, st, [{ tenant, customerId: e.customerId }], [], e.timestampMs);
      const r = rateEvent(cat, st, e);
      return { rated: ratedEventToProto(r, now(), now()) };
    },

    async getRatedEvent(req, ctx) {
      const tenant = read(ctx);
      checkId(req.eventId, "event_id");
      const r = await d.rated.ratedEvent(tenant, req.eventId);
      if (r === null) throw notFound("rated event", req.eventId);
      const task = r.taskId !== "" && r.lines.some((l) => l.status === "pending") ? await d.rated.task(tenant, r.customerId, r.taskId) : null;
      const t = now();
      return {
        rated: ratedEventToProto(r, r.rateTimeMs, t, (chargeId) => {
          const o = task?.outcome;
          if (o === undefined || o === null || o.eventId !== r.eventId || o.chargeId !== chargeId) return undefined;
          if (o.status === "clawed_back") return "clawed_back";
          return o.status === "confirmed" || t > o.verifyUntilMs ? "final" : "pending";
        }),
      };
    },

    async listRatedUsage(req, ctx) {
      const tenant = read(ctx);
      checkId(req.customerId, "customer_id");
      const { fromMs, toMs } = windowOf(msOrNull(req.from, "from"), msOrNull(req.to, "to"), USAGE_WINDOW_MS_MAX);
      const buckets = await d.rated.buckets(tenant, req.customerId, fromMs, toMs, req.chargeId, USAGE_BUCKETS_MAX + 1);
      if (buckets.length > USAGE_BUCKETS_MAX) throw new ConnectError(`buckets: more than ${USAGE_BUCKETS_MAX} in the window; narrow it or filter by charge_id`, Code.ResourceExhausted);
      const totals = new Map<string, { chargeId: string; unit: string; costUnit: string; quantity: bigint; priceNanos: bigint; costNanos: bigint }>();
      for (const b of buckets) {
        const k = `${b.chargeId}\u0000${b.unit}`;
        const t = totals.get(k) ?? { chargeId: b.chargeId, unit: b.unit, costUnit: b.costUnit, quantity: 0n, priceNanos: 0n, costNanos: 0n };
        t.quantity += b.quantity;
        t.priceNanos += b.priceNanos;
        t.costNanos += b.costNanos;
        if (t.costUnit === "") t.costUnit = b.costUnit;
        totals.set(k, t);
      }
      return {
        buckets: buckets.map((b) => create(UsageBucketSchema, { ...b, hourStart: timestampFromMs(b.hourStartMs) })),
        totals: [...totals.values()].map((t) => create(ChargeUsageTotalSchema, t)),
      };
    },

    async ratePeriod(req, ctx) {
      const tenant = read(ctx);
      checkId(req.customerId, "customer_id");
      const at = msOrNull(req.at, "at") ?? now();
      await d.cache.sync([tenant]); // another replica's catalog writes
      const cat = await d.cache.forCustomers(tenant, [req.customerId]);
      const customer = cat.customer(req.customerId);
      if (customer === undefined) throw notFound("customer", req.customerId);
      const subs = cat.subscriptions(req.customerId);
      // The billing interval of the first subscription in force at `at` (by start time, then id:
      // the catalog's order, the one rating an event picks a subscription in).
      let interval = 1;
      pick: for (const s of subs) {
        for (const ph of s.phases) {
          const v = ph.startMs <= at && (ph.endMs === null || at < ph.endMs) ? cat.version(ph.planId, ph.planVersion) : undefined;
          if (v !== undefined) {
            interval = v.spec.intervalMonths;
            break pick;
          }
        }
      }
      const period = billingPeriod(customer.billingAnchorMs, customer.timeZone, interval, at);
      if (period.startMs < TIMESTAMP_JSON_MS_MIN || period.endMs > TIME_MS_MAX) {
        throw invalid("at", `the billing period containing it ends after 9999-12-31T23:59:59Z or starts before 0001-01-01T00:00:00Z (${new Date(period.startMs).toISOString()} to ${new Date(period.endMs).toISOString()}): no Timestamp can hold it`);
      }
      const rows = await d.rated.periodTotals(tenant, req.customerId, period.startMs);
      const totals: PeriodUsageTotal[] = rows.filter((t) => !isCapKey(t.chargeId));
      // The uncapped usage each subscription rated per part of the period (the spending cap's running totals).
      const capUsage = new Map(rows.filter((t) => isCapKey(t.chargeId) && t.unit === customer.currency).map((t) => [t.chargeId, t.bookedNanos]));
      // Under a spending cap the real-time path cut some events' prices (buckets and rated events
      // are capped, period totals are not): report what the events were rated at, by exact event
      // time in the period. Without a cap that is booked_nanos, with no query.
      const capped = subs.some((s) =>
        s.phases.some((ph) => ph.startMs < period.endMs && (ph.endMs === null || ph.endMs > period.startMs) && (cat.version(ph.planId, ph.planVersion)?.cap ?? null) !== null),
      );
      if (capped && totals.length > 0) {
        const sums = await d.rated.ratedSums(tenant, req.customerId, period.startMs, period.endMs, totals.map((t) => t.chargeId));
        for (const t of totals) t.ratedNanos = sums.filter((x) => x.chargeId === t.chargeId && x.unit === t.unit).reduce((a, x) => a + x.priceNanos, 0n);
      }
      // Usage across a plan migration is priced part by part: the running quantity at each
      // boundary (one statement for all of them).
      const bounds = usageBoundaries(cat, customer, subs, period, totals);
      const before = await d.rated.quantitiesBefore(tenant, req.customerId, period.startMs, bounds);
      const quantityAt = new Map(bounds.map((b, i) => [`${b.chargeId}\u0000${b.atMs}`, before[i]!]));
      const r = ratePeriod(cat, customer, subs, period, totals, (chargeId, atMs) => quantityAt.get(`${chargeId}\u0000${atMs}`) ?? 0n, (key) => capUsage.get(key) ?? 0n);
      return {
        periodStart: timestampFromMs(period.startMs),
        periodEnd: timestampFromMs(period.endMs),
        currency: r.currency,
        totalNanos: r.totalNanos,
        lines: r.lines.map((l) => create(PeriodLineSchema, { ...l, kind: LINE_KIND[l.kind], startTime: timestampFromMs(l.startMs), endTime: timestampFromMs(l.endMs) })),
      };
    },

    async listRatedEvents(req, ctx) {
      const tenant = read(ctx);
      await requireCustomer(tenant, req.customerId, "customer_id");
      if (req.chargeId !== "" && !CHARGE_ID_RE.test(req.chargeId)) throw invalid("charge_id", `must be empty or ${CHARGE_ID_RE.source}, got ${JSON.stringify(req.chargeId)}`);
      const fromMs = msOrNull(req.from, "from");
      const toMs = msOrNull(req.to, "to");
      if (fromMs === null) throw invalid("from", "is required");
      if (toMs === null) throw invalid("to", "is required");
      if (toMs <= fromMs) throw invalid("to", "must be after from");
      if (toMs - fromMs > RATED_EVENTS_WINDOW_MS_MAX) throw invalid("to", `window must be at most ${RATED_EVENTS_WINDOW_MS_MAX / HOUR_MS} hours (one bucket)`);
      const n = pageSize(req.pageSizeMax);
      let after: { ms: number; eventId: string } | null = null;
      if (req.pageToken !== "") {
        const m = /^(\d{1,16})\.([A-Za-z0-9_-]{1,200})$/.exec(req.pageToken);
        const eventId = m === null ? "" : Buffer.from(m[2]!, "base64url").toString("utf8");
        if (m === null || eventId === "" || Number(m[1]) < fromMs || Number(m[1]) >= toMs) throw invalid("page_token", "is not a token returned by ListRatedEvents for this window");
        after = { ms: Number(m[1]), eventId };
      }
      const rows = await d.rated.chargedEvents(tenant, req.customerId, req.chargeId, fromMs, toMs, after, n + 1);
      const page = rows.slice(0, n);
      const last = page[page.length - 1];
      return {
        events: page.map((e) =>
          create(ChargedEventSchema, {
            eventId: e.eventId,
            timestamp: timestampFromMs(e.timestampMs),
            eventType: e.eventType,
            subscriptionId: e.subscriptionId,
            quantity: e.quantity,
            priceNanos: e.priceNanos,
            unit: e.unit,
            costNanos: e.costNanos,
            costUnit: e.costUnit,
            status: LINE_STATUS[e.status],
          }),
        ),
        nextPageToken: rows.length > n && last !== undefined ? `${last.timestampMs}.${Buffer.from(last.eventId, "utf8").toString("base64url")}` : "",
      };
    },

    async queryMargin(req, ctx) {
      const tenant = read(ctx);
      const { fromMs, toMs } = windowOf(msOrNull(req.from, "from"), msOrNull(req.to, "to"), MARGIN_WINDOW_MS_MAX);
      if (req.customerId !== "") checkId(req.customerId, "customer_id");
      const by = new Set(req.groupBy);
      if (by.has(MarginGroupBy.UNSPECIFIED)) throw invalid("group_by", "must not contain MARGIN_GROUP_BY_UNSPECIFIED");
      const w = by.has(MarginGroupBy.WINDOW) ? (req.windowSeconds === 0 ? 3600 : req.windowSeconds) : 0;
      if (w % 3600 !== 0) throw invalid("window_seconds", "must be a multiple of 3600");
      const rows = await d.rated.marginSums(tenant, fromMs, toMs, req.customerId, { customer: by.has(MarginGroupBy.CUSTOMER), model: by.has(MarginGroupBy.MODEL), charge: by.has(MarginGroupBy.CHARGE), windowSeconds: w }, MARGIN_ROWS_MAX * 4);
      // Fold (price unit, cost unit) rows into one row per group and currency.
      const out = new Map<string, { customerId: string; model: string; chargeId: string; windowStartMs: number; unit: string; revenueNanos: bigint; costNanos: bigint }>();
      for (const r of rows) {
        const add = (unit: string, rev: bigint, cost: bigint): void => {
          if (unit === "") return;
          const k = [r.customerId, r.model, r.chargeId, r.windowStartMs, unit].join("\u0000");
          const cur = out.get(k) ?? { customerId: r.customerId, model: r.model, chargeId: r.chargeId, windowStartMs: r.windowStartMs, unit, revenueNanos: 0n, costNanos: 0n };
          cur.revenueNanos += rev;
          cur.costNanos += cost;
          out.set(k, cur);
        };
        if (r.unit === r.costUnit) add(r.unit, r.priceNanos, r.costNanos);
        else {
          if (!r.unit.startsWith("cr_")) add(r.unit, r.priceNanos, 0n);
          add(r.costUnit, 0n, r.costNanos);
        }
      }
      if (out.size > MARGIN_ROWS_MAX) throw new ConnectError(`rows: more than ${MARGIN_ROWS_MAX}; narrow the window or grouping`, Code.ResourceExhausted);
      return {
        rows: [...out.values()].map((r) =>
          create(MarginRowSchema, {
            customerId: r.customerId,
            model: r.model,
            chargeId: r.chargeId,
            windowStart: w > 0 ? timestampFromMs(r.windowStartMs) : undefined,
            revenueNanos: r.revenueNanos,
            costNanos: r.costNanos,
            marginNanos: r.revenueNanos - r.costNanos,
            marginBps: marginBps(r.revenueNanos, r.costNanos),
            unit: r.unit,
          }),
        ),
      };
    },

    async createGuardrailRule(req, ctx) {
      const tenant = write(ctx);
      const r = ruleOf(req.rule);
      validateRule(r);
      const out = await d.catalog.createRule(tenant, r, now(), GUARDRAIL_RULES_MAX);
      d.cache.invalidate(tenant);
      return { rule: ruleToProto(out) };
    },

    async listGuardrailRules(_req, ctx) {
      const tenant = read(ctx);
      return { rules: (await d.catalog.rules(tenant)).map(ruleToProto) };
    },

    async listAlerts(req, ctx) {
      const tenant = read(ctx);
      const since = msOrNull(req.since, "since") ?? now() - DAY_MS;
      if (req.customerId !== "") checkId(req.customerId, "customer_id");
      const n = pageSize(req.pageSizeMax, ALERTS_PAGE_MAX);
      return { alerts: (await d.rated.alerts(tenant, since, req.customerId, n)).map(alertToProto) };
    },

    // Webhooks: guardrail alerts are queued by a trigger on alerts (migration 0005) and POSTed by
    // the dispatcher the service runs (libs/webhooks).
    createWebhookEndpoint: (req, ctx) => webhooks.create(write(ctx), req),
    listWebhookEndpoints: (_req, ctx) => webhooks.list(read(ctx)),
    disableWebhookEndpoint: (req, ctx) => webhooks.disable(write(ctx), req),
    listWebhookDeliveries: (req, ctx) => webhooks.deliveries(read(ctx), req),
  };
}

export { timestampMs };
