import type { Db, Queryable, Row } from "@nanobill/db";
import { alreadyExists, failedPrecondition, notFound, invalid } from "../domain/errors.js";
import type {
  CostRateSpec,
  Customer,
  PlanSpec,
  PlanVersionSpec,
  PriceOverride,
  PricingSpec,
  SeatChange,
  Subscription,
  SubscriptionPhase,
} from "../domain/types.js";
import type { SubscriptionLife } from "../domain/shared-charges.js";
import { insertMany, lockCustomers, msOf, msOfNN, ts } from "./sql.js";

/**
 * SubscriptionGuard: called inside a subscription write's transaction, after the customer's row is
 * locked, with the customer's other subscriptions and their phases' plan versions; throwing
 * refuses the write (nothing written). Not called for a replay.
 */
export type SubscriptionGuard = (others: SubscriptionLife[]) => void;

/** A guardrail rule as stored. */
export interface GuardrailRuleRow {
  ruleId: string;
  kind: "margin_below" | "cost_mix_shift";
  thresholdBps: bigint;
  windowSeconds: number;
  customerId: string;
  model: string;
}

function stableJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (x !== null && typeof x === "object" && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));
}

/** sameJson: deep equality of JSON-safe values (key order ignored). */
export function sameJson(a: unknown, b: unknown): boolean {
  return stableJson(a) === stableJson(b);
}

function customerOf(r: Row): Customer {
  return {
    customerId: r.customer_id as string,
    name: r.name as string,
    currency: r.currency as string,
    billingAnchorMs: msOfNN(r.billing_anchor),
    timeZone: r.time_zone as string,
    createTimeMs: msOfNN(r.create_time),
  };
}

function versionOf(r: Row): PlanVersionSpec {
  const spec = r.spec as PlanVersionSpec;
  return { ...spec, version: Number(r.version), status: r.status as PlanVersionSpec["status"], publishTimeMs: msOf(r.publish_time) };
}

/** versionContent: the caller-written part of a version (what idempotency compares). */
function versionContent(v: PlanVersionSpec): unknown {
  return { currency: v.currency, intervalMonths: v.intervalMonths, charges: v.charges, minimumCommitmentAmount: v.minimumCommitmentAmount, spendingCapAmount: v.spendingCapAmount };
}

/**
 * CatalogStore: customers, plans and versions, subscriptions (phases, seat changes), price
 * overrides, cost rates and guardrail rules of every tenant. Every write is idempotent on its
 * caller id: same content returns the stored row, different content is AlreadyExists.
 */
export class CatalogStore {
  constructor(readonly db: Db) {}

  async createCustomer(tenant: string, c: Customer): Promise<Customer> {
    const ins = await this.db.query(
      `INSERT INTO customers (tenant, customer_id, name, currency, billing_anchor, time_zone, create_time)
       VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (tenant, customer_id) DO NOTHING RETURNING *`,
      [tenant, c.customerId, c.name, c.currency, ts(c.billingAnchorMs), c.timeZone, ts(c.createTimeMs)],
    );
    if (ins.rows.length === 1) return customerOf(ins.rows[0]!);
    const existing = await this.getCustomer(tenant, c.customerId);
    if (existing === null) throw new Error("customer vanished after conflict");
    if (existing.name !== c.name || existing.currency !== c.currency || existing.billingAnchorMs !== c.billingAnchorMs || existing.timeZone !== c.timeZone) {
      throw alreadyExists("customer.customer_id", c.customerId);
    }
    return existing;
  }

  async getCustomer(tenant: string, customerId: string): Promise<Customer | null> {
    const r = await this.db.query(`SELECT * FROM customers WHERE tenant=$1 AND customer_id=$2`, [tenant, customerId]);
    return r.rows.length === 0 ? null : customerOf(r.rows[0]!);
  }

  async getCustomers(tenant: string, ids: string[], q: Queryable = this.db): Promise<Customer[]> {
    if (ids.length === 0) return [];
    const r = await q.query(`SELECT * FROM customers WHERE tenant=$1 AND customer_id = ANY($2::text[])`, [tenant, ids]);
    return r.rows.map(customerOf);
  }

  async listCustomers(tenant: string, after: string, limit: number): Promise<Customer[]> {
    const r = await this.db.query(`SELECT * FROM customers WHERE tenant=$1 AND customer_id > $2 ORDER BY customer_id LIMIT $3`, [tenant, after, limit]);
    return r.rows.map(customerOf);
  }

  // -- plans ------------------------------------------------------------------------------------

  async createPlan(tenant: string, planId: string, name: string, v: PlanVersionSpec, nowMs: number): Promise<PlanSpec> {
    return this.db.transaction(async (tx) => {
      const ins = await tx.query(`INSERT INTO plans (tenant, plan_id, name, create_time) VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING RETURNING plan_id`, [tenant, planId, name, ts(nowMs)]);
      if (ins.rows.length === 0) {
        const plan = await this.#getPlan(tx, tenant, planId);
        const first = plan?.versions[0];
        if (plan === null || plan.name !== name || first === undefined || !sameJson(versionContent(first), versionContent(v))) throw alreadyExists("plan_id", planId);
        return plan;
      }
      await tx.query(`INSERT INTO plan_versions (tenant, plan_id, version, status, spec, update_time) VALUES ($1,$2,1,'draft',$3,$4)`, [tenant, planId, JSON.stringify({ ...v, version: 1, status: "draft", publishTimeMs: null }), ts(nowMs)]);
      return (await this.#getPlan(tx, tenant, planId))!;
    });
  }

  async createPlanVersion(tenant: string, planId: string, v: PlanVersionSpec, nowMs: number, versionsMax: number): Promise<PlanSpec> {
    return this.db.transaction(async (tx) => {
      const lock = await tx.query(`SELECT plan_id FROM plans WHERE tenant=$1 AND plan_id=$2 FOR UPDATE`, [tenant, planId]);
      if (lock.rows.length === 0) throw notFound("plan", planId);
      const plan = (await this.#getPlan(tx, tenant, planId))!;
      const next = plan.versions.length + 1;
      // The caller numbers the version: that number is what makes a retry idempotent (a "next"
      // of 0 would add a version per retry).
      if (v.version === 0) throw invalid("version.version", `is required: the next version number ${next} (a retry with the same number and content returns the first result)`);
      if (v.version < next) {
        const existing = plan.versions[v.version - 1];
        if (existing !== undefined && sameJson(versionContent(existing), versionContent(v))) return plan;
        throw alreadyExists("version.version", String(v.version));
      }
      if (v.version !== next) throw invalid("version.version", `must be the next version number ${next}, got ${v.version}`);
      if (next > versionsMax) throw invalid("plan_id", `has the maximum of ${versionsMax} versions`);
      await tx.query(`INSERT INTO plan_versions (tenant, plan_id, version, status, spec, update_time) VALUES ($1,$2,$3,'draft',$4,$5)`, [tenant, planId, next, JSON.stringify({ ...v, version: next, status: "draft", publishTimeMs: null }), ts(nowMs)]);
      return (await this.#getPlan(tx, tenant, planId))!;
    });
  }

  /** mutateVersion: locks one version and applies fn (which returns the new status/spec or null for no-op). */
  async #mutateVersion(
    tenant: string,
    planId: string,
    version: number,
    nowMs: number,
    fn: (cur: PlanVersionSpec) => { status: PlanVersionSpec["status"]; spec: PlanVersionSpec; publish: boolean } | null,
  ): Promise<PlanSpec> {
    return this.db.transaction(async (tx) => {
      const r = await tx.query(`SELECT * FROM plan_versions WHERE tenant=$1 AND plan_id=$2 AND version=$3 FOR UPDATE`, [tenant, planId, version]);
      if (r.rows.length === 0) {
        const p = await tx.query(`SELECT 1 FROM plans WHERE tenant=$1 AND plan_id=$2`, [tenant, planId]);
        if (p.rows.length === 0) throw notFound("plan", planId);
        throw notFound("plan version", `${planId} v${version}`);
      }
      const cur = versionOf(r.rows[0]!);
      const next = fn(cur);
      if (next !== null) {
        await tx.query(
          `UPDATE plan_versions SET status=$4, spec=$5, update_time=$6, publish_time = CASE WHEN $7::boolean THEN $6 ELSE publish_time END WHERE tenant=$1 AND plan_id=$2 AND version=$3`,
          [tenant, planId, version, next.status, JSON.stringify({ ...next.spec, status: next.status }), ts(nowMs), next.publish],
        );
      }
      return (await this.#getPlan(tx, tenant, planId))!;
    });
  }

  updatePlanVersion(tenant: string, planId: string, v: PlanVersionSpec, nowMs: number): Promise<PlanSpec> {
    return this.#mutateVersion(tenant, planId, v.version, nowMs, (cur) => {
      if (cur.status !== "draft") throw failedPrecondition("version", `${planId} v${v.version} is ${cur.status} and immutable; create a new version`);
      return { status: "draft", spec: { ...v, status: "draft", publishTimeMs: null }, publish: false };
    });
  }

  publishPlanVersion(tenant: string, planId: string, version: number, nowMs: number, check: (v: PlanVersionSpec) => void): Promise<PlanSpec> {
    return this.#mutateVersion(tenant, planId, version, nowMs, (cur) => {
      if (cur.status === "published") return null;
      if (cur.status === "archived") throw failedPrecondition("version", `${planId} v${version} is archived`);
      check(cur);
      return { status: "published", spec: cur, publish: true };
    });
  }

  archivePlanVersion(tenant: string, planId: string, version: number, nowMs: number): Promise<PlanSpec> {
    return this.#mutateVersion(tenant, planId, version, nowMs, (cur) => {
      if (cur.status === "archived") return null;
      if (cur.status === "draft") throw failedPrecondition("version", `${planId} v${version} is a draft; only published versions are archived`);
      return { status: "archived", spec: cur, publish: false };
    });
  }

  getPlan(tenant: string, planId: string): Promise<PlanSpec | null> {
    return this.#getPlan(this.db, tenant, planId);
  }

  async #getPlan(q: Queryable, tenant: string, planId: string): Promise<PlanSpec | null> {
    const p = await q.query(`SELECT * FROM plans WHERE tenant=$1 AND plan_id=$2`, [tenant, planId]);
    if (p.rows.length === 0) return null;
    const v = await q.query(`SELECT * FROM plan_versions WHERE tenant=$1 AND plan_id=$2 ORDER BY version`, [tenant, planId]);
    return { planId, name: p.rows[0]!.name as string, versions: v.rows.map(versionOf) };
  }

  /** publishedVersions: every published or archived version of a tenant (what rating uses). */
  async publishedVersions(tenant: string): Promise<Array<{ planId: string; version: PlanVersionSpec }>> {
    const r = await this.db.query(`SELECT * FROM plan_versions WHERE tenant=$1 AND status <> 'draft'`, [tenant]);
    return r.rows.map((row) => ({ planId: row.plan_id as string, version: versionOf(row) }));
  }

  async getVersion(tenant: string, planId: string, version: number): Promise<PlanVersionSpec | null> {
    const r = await this.db.query(`SELECT * FROM plan_versions WHERE tenant=$1 AND plan_id=$2 AND version=$3`, [tenant, planId, version]);
    return r.rows.length === 0 ? null : versionOf(r.rows[0]!);
  }

  // -- subscriptions ----------------------------------------------------------------------------

  async createSubscription(tenant: string, s: Subscription, seats: number, nowMs: number, guard?: SubscriptionGuard): Promise<Subscription> {
    return this.db.transaction(async (tx) => {
      await lockCustomers(tx, [{ tenant, customerId: s.customerId }]); // rating's lock: see #refuseRatedInside
      if (guard !== undefined) await tx.query(`SELECT 1 FROM customers WHERE tenant=$1 AND customer_id=$2 FOR UPDATE`, [tenant, s.customerId]);
      const ins = await tx.query(
        `INSERT INTO subscriptions (tenant, subscription_id, customer_id, start_time, end_time, create_time) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING RETURNING subscription_id`,
        [tenant, s.subscriptionId, s.customerId, ts(s.startMs), ts(s.endMs), ts(nowMs)],
      );
      if (ins.rows.length === 0) {
        const cur = (await this.#subscriptions(tx, tenant, `subscription_id = $2`, [s.subscriptionId]))[0]!;
        const p0 = cur.phases[0];
        const s0 = s.phases[0]!;
        // The seats the subscription was created with: its 'initial' change (later changes may sort before it).
        const seats0 = cur.seatChanges.find((x) => x.changeId === "initial")?.seats ?? 0;
        if (cur.customerId !== s.customerId || cur.startMs !== s.startMs || cur.endMs !== s.endMs || p0 === undefined || p0.planId !== s0.planId || p0.planVersion !== s0.planVersion || seats0 !== seats) {
          throw alreadyExists("subscription_id", s.subscriptionId);
        }
        return cur;
      }
      await this.#refuseRatedInside(tx, tenant, s.customerId, s.startMs, s.endMs, "start_time", "subscription");
      if (guard !== undefined) guard(await this.#otherLives(tx, tenant, s.customerId, s.subscriptionId));
      const ph = s.phases[0]!;
      await tx.query(`INSERT INTO subscription_phases (tenant, subscription_id, seq, plan_id, plan_version, start_time, end_time) VALUES ($1,$2,1,$3,$4,$5,$6)`, [tenant, s.subscriptionId, ph.planId, ph.planVersion, ts(ph.startMs), ts(ph.endMs)]);
      await tx.query(`INSERT INTO seat_changes (tenant, subscription_id, change_id, seats, effective_time) VALUES ($1,$2,'initial',$3,$4)`, [tenant, s.subscriptionId, seats, ts(s.startMs)]);
      return (await this.#subscriptions(tx, tenant, `subscription_id = $2`, [s.subscriptionId]))[0]!;
    });
  }

  /**
   * #refuseRatedInside: refuses (FailedPrecondition on `field`, nothing written) a subscription,
   * migration or price override whose time [fromMs, toMs) holds an event of the customer that is
   * already rated. Rating prices an event once, with the catalog in force when it is rated: its
   * price went to the hour buckets invoicing bills, to the period totals and carries, and to the
   * wallet, and nothing re-rates it. So a change reaching back over rated usage would leave that
   * usage priced under the old terms (an event rated before a backdated subscription existed stays
   * unpriced, never billed). A change starting after the customer's rated usage (or covering a
   * past stretch with none) prices exactly the events it covers.
   *
   * Consistent with concurrent rating: the write's transaction holds the customer's advisory lock
   * (lockCustomers, taken first) when it checks and until it commits, as every consumer batch does
   * while it rates the customer. A batch that locked first has committed its rated rows before this
   * check reads them; one that locks after this write committed re-reads the tenant's catalog
   * generation under the lock and, moved, reads its customers' rows again under the lock
   * (CatalogCache.withCustomersIn) before rating.
   */
  async #refuseRatedInside(q: Queryable, tenant: string, customerId: string, fromMs: number, toMs: number | null, field: string, what: string): Promise<void> {
    const r = await q.query(
      `SELECT event_id, event_time FROM rated_events
        WHERE tenant=$1 AND customer_id=$2 AND event_time >= $3 AND ($4::timestamptz IS NULL OR event_time < $4)
        ORDER BY event_time DESC, event_id DESC LIMIT 1`,
      [tenant, customerId, ts(fromMs), ts(toMs)],
    );
    if (r.rows.length === 0) return;
    const atMs = msOfNN(r.rows[0]!.event_time);
    const iso = (ms: number): string => new Date(ms).toISOString();
    throw failedPrecondition(
      field,
      `customer ${JSON.stringify(customerId)} has usage already rated in the ${what}'s time [${iso(fromMs)}, ${toMs === null ? "open" : iso(toMs)}) ` +
        `(the latest: event ${JSON.stringify(r.rows[0]!.event_id as string)} at ${iso(atMs)}); rated events are never re-priced, ` +
        `so the ${what} may not reach back over them: start it at or after ${iso(atMs + 1)}`,
    );
  }

  /** The customer's subscriptions other than subscriptionId, with their phases' plan versions. */
  async #otherLives(q: Queryable, tenant: string, customerId: string, subscriptionId: string): Promise<SubscriptionLife[]> {
    const subs = await this.#subscriptions(q, tenant, `customer_id = $2 AND subscription_id <> $3`, [customerId, subscriptionId]);
    const planIds = [...new Set(subs.flatMap((x) => x.phases.map((ph) => ph.planId)))];
    if (planIds.length === 0) return subs.map((x) => ({ subscriptionId: x.subscriptionId, startMs: x.startMs, endMs: x.endMs, versions: [] }));
    const r = await q.query(`SELECT * FROM plan_versions WHERE tenant=$1 AND plan_id = ANY($2::text[])`, [tenant, planIds]);
    const byKey = new Map(r.rows.map((row) => [`${row.plan_id as string}\u0000${Number(row.version)}`, versionOf(row)]));
    return subs.map((x) => ({
      subscriptionId: x.subscriptionId,
      startMs: x.startMs,
      endMs: x.endMs,
      versions: x.phases.flatMap((ph) => byKey.get(`${ph.planId}\u0000${ph.planVersion}`) ?? []),
    }));
  }

  listSubscriptions(tenant: string, customerId: string): Promise<Subscription[]> {
    return this.#subscriptions(this.db, tenant, `customer_id = $2`, [customerId]);
  }

  subscriptionsOf(tenant: string, customerIds: string[], q: Queryable = this.db): Promise<Subscription[]> {
    if (customerIds.length === 0) return Promise.resolve([]);
    return this.#subscriptions(q, tenant, `customer_id = ANY($2::text[])`, [customerIds]);
  }

  async getSubscription(tenant: string, subscriptionId: string): Promise<Subscription | null> {
    return (await this.#subscriptions(this.db, tenant, `subscription_id = $2`, [subscriptionId]))[0] ?? null;
  }

  async #subscriptions(q: Queryable, tenant: string, where: string, params: unknown[]): Promise<Subscription[]> {
    const subs = await q.query(`SELECT * FROM subscriptions WHERE tenant=$1 AND ${where} ORDER BY start_time, subscription_id`, [tenant, ...params]);
    if (subs.rows.length === 0) return [];
    const ids = subs.rows.map((r) => r.subscription_id as string);
    const phases = await q.query(`SELECT * FROM subscription_phases WHERE tenant=$1 AND subscription_id = ANY($2::text[]) ORDER BY subscription_id, seq`, [tenant, ids]);
    const seats = await q.query(`SELECT * FROM seat_changes WHERE tenant=$1 AND subscription_id = ANY($2::text[]) ORDER BY subscription_id, effective_time, change_id`, [tenant, ids]);
    const ph = new Map<string, SubscriptionPhase[]>();
    for (const r of phases.rows) {
      const l = ph.get(r.subscription_id as string) ?? [];
      l.push({ planId: r.plan_id as string, planVersion: Number(r.plan_version), startMs: msOfNN(r.start_time), endMs: msOf(r.end_time) });
      ph.set(r.subscription_id as string, l);
    }
    const sc = new Map<string, SeatChange[]>();
    for (const r of seats.rows) {
      const l = sc.get(r.subscription_id as string) ?? [];
      l.push({ changeId: r.change_id as string, seats: Number(r.seats), effectiveMs: msOfNN(r.effective_time) });
      sc.set(r.subscription_id as string, l);
    }
    return subs.rows.map((r) => ({
      subscriptionId: r.subscription_id as string,
      customerId: r.customer_id as string,
      phases: ph.get(r.subscription_id as string) ?? [],
      seatChanges: sc.get(r.subscription_id as string) ?? [],
      startMs: msOfNN(r.start_time),
      endMs: msOf(r.end_time),
    }));
  }

  async updateSeats(tenant: string, subscriptionId: string, c: SeatChange, changesMax: number): Promise<Subscription> {
    return this.db.transaction(async (tx) => {
      const lock = await tx.query(`SELECT start_time, end_time FROM subscriptions WHERE tenant=$1 AND subscription_id=$2 FOR UPDATE`, [tenant, subscriptionId]);
      if (lock.rows.length === 0) throw notFound("subscription", subscriptionId);
      const startMs = msOfNN(lock.rows[0]!.start_time);
      const endMs = msOf(lock.rows[0]!.end_time);
      if (c.effectiveMs < startMs || (endMs !== null && c.effectiveMs >= endMs)) {
        const range = `[${new Date(startMs).toISOString()}, ${endMs === null ? "open" : new Date(endMs).toISOString()})`;
        throw invalid("change.effective_time", `must be within the subscription's ${range}, got ${new Date(c.effectiveMs).toISOString()}`);
      }
      const ins = await tx.query(`INSERT INTO seat_changes (tenant, subscription_id, change_id, seats, effective_time) VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING RETURNING change_id`, [tenant, subscriptionId, c.changeId, c.seats, ts(c.effectiveMs)]);
      if (ins.rows.length === 0) {
        const cur = await tx.query(`SELECT * FROM seat_changes WHERE tenant=$1 AND subscription_id=$2 AND change_id=$3`, [tenant, subscriptionId, c.changeId]);
        const r = cur.rows[0]!;
        if (Number(r.seats) !== c.seats || msOfNN(r.effective_time) !== c.effectiveMs) throw alreadyExists("change.change_id", c.changeId);
      } else {
        const n = await tx.query<{ n: bigint }>(`SELECT count(*)::bigint AS n FROM seat_changes WHERE tenant=$1 AND subscription_id=$2`, [tenant, subscriptionId]);
        if (Number(n.rows[0]!.n) > changesMax) throw invalid("change", `subscription has the maximum of ${changesMax} seat changes`);
      }
      return (await this.#subscriptions(tx, tenant, `subscription_id = $2`, [subscriptionId]))[0]!;
    });
  }

  async migrateSubscription(tenant: string, subscriptionId: string, planId: string, version: number, effectiveMs: number, phasesMax: number, guard?: (sub: Subscription, others: SubscriptionLife[]) => void): Promise<Subscription> {
    return this.db.transaction(async (tx) => {
      // Rating's lock on the customer, then the customer's row (as createSubscription), then the
      // subscription's (a subscription's customer never changes).
      const owner = await tx.query(`SELECT customer_id FROM subscriptions WHERE tenant=$1 AND subscription_id=$2`, [tenant, subscriptionId]);
      if (owner.rows.length === 0) throw notFound("subscription", subscriptionId);
      const customerId = owner.rows[0]!.customer_id as string;
      await lockCustomers(tx, [{ tenant, customerId }]);
      if (guard !== undefined) await tx.query(`SELECT 1 FROM customers WHERE tenant=$1 AND customer_id=$2 FOR UPDATE`, [tenant, customerId]);
      const lock = await tx.query(`SELECT * FROM subscriptions WHERE tenant=$1 AND subscription_id=$2 FOR UPDATE`, [tenant, subscriptionId]);
      if (lock.rows.length === 0) throw notFound("subscription", subscriptionId);
      const sub = (await this.#subscriptions(tx, tenant, `subscription_id = $2`, [subscriptionId]))[0]!;
      const last = sub.phases[sub.phases.length - 1]!;
      if (last.planId === planId && last.planVersion === version && last.startMs === effectiveMs) return sub; // replay
      if (effectiveMs <= last.startMs) throw failedPrecondition("effective_time", `must be after the start of the current phase (${new Date(last.startMs).toISOString()})`);
      if (sub.endMs !== null && effectiveMs >= sub.endMs) throw failedPrecondition("effective_time", "must be before the subscription's end");
      if (sub.phases.length >= phasesMax) throw invalid("subscription_id", `has the maximum of ${phasesMax} phases`);
      await this.#refuseRatedInside(tx, tenant, customerId, effectiveMs, sub.endMs, "effective_time", "new phase");
      if (guard !== undefined) guard(sub, await this.#otherLives(tx, tenant, sub.customerId, subscriptionId));
      const seq = sub.phases.length;
      await tx.query(`UPDATE subscription_phases SET end_time=$4 WHERE tenant=$1 AND subscription_id=$2 AND seq=$3`, [tenant, subscriptionId, seq, ts(effectiveMs)]);
      await tx.query(`INSERT INTO subscription_phases (tenant, subscription_id, seq, plan_id, plan_version, start_time, end_time) VALUES ($1,$2,$3,$4,$5,$6,$7)`, [tenant, subscriptionId, seq + 1, planId, version, ts(effectiveMs), ts(sub.endMs)]);
      return (await this.#subscriptions(tx, tenant, `subscription_id = $2`, [subscriptionId]))[0]!;
    });
  }

  // -- overrides --------------------------------------------------------------------------------

  async setOverride(tenant: string, o: PriceOverride, perCustomerMax: number): Promise<PriceOverride> {
    return this.db.transaction(async (tx) => {
      await lockCustomers(tx, [{ tenant, customerId: o.customerId }]); // rating's lock: see #refuseRatedInside
      const spec = { pricing: o.pricing, includedQuantity: o.includedQuantity };
      const ins = await tx.query(
        `INSERT INTO price_overrides (tenant, override_id, customer_id, charge_id, spec, start_time, end_time) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING RETURNING override_id`,
        [tenant, o.overrideId, o.customerId, o.chargeId, JSON.stringify(spec), ts(o.startMs), ts(o.endMs)],
      );
      if (ins.rows.length === 0) {
        const cur = (await this.#overrides(tx, tenant, `override_id = $2`, [o.overrideId]))[0]!;
        if (cur.customerId !== o.customerId || cur.chargeId !== o.chargeId || cur.startMs !== o.startMs || cur.endMs !== o.endMs || !sameJson(cur.pricing, o.pricing) || cur.includedQuantity !== o.includedQuantity) {
          throw alreadyExists("price_override.override_id", o.overrideId);
        }
        return cur;
      }
      await this.#refuseRatedInside(tx, tenant, o.customerId, o.startMs, o.endMs, "price_override.start_time", "override");
      const n = await tx.query<{ n: bigint }>(`SELECT count(*)::bigint AS n FROM price_overrides WHERE tenant=$1 AND customer_id=$2`, [tenant, o.customerId]);
      if (Number(n.rows[0]!.n) > perCustomerMax) throw invalid("price_override.customer_id", `has the maximum of ${perCustomerMax} overrides`);
      return o;
    });
  }

  listOverrides(tenant: string, customerId: string): Promise<PriceOverride[]> {
    return this.#overrides(this.db, tenant, `customer_id = $2`, [customerId]);
  }

  overridesOf(tenant: string, customerIds: string[], q: Queryable = this.db): Promise<PriceOverride[]> {
    if (customerIds.length === 0) return Promise.resolve([]);
    return this.#overrides(q, tenant, `customer_id = ANY($2::text[])`, [customerIds]);
  }

  async #overrides(q: Queryable, tenant: string, where: string, params: unknown[]): Promise<PriceOverride[]> {
    const r = await q.query(`SELECT * FROM price_overrides WHERE tenant=$1 AND ${where} ORDER BY start_time, override_id`, [tenant, ...params]);
    return r.rows.map((row) => {
      const spec = row.spec as { pricing: PricingSpec; includedQuantity: string };
      return {
        overrideId: row.override_id as string,
        customerId: row.customer_id as string,
        chargeId: row.charge_id as string,
        pricing: spec.pricing,
        includedQuantity: spec.includedQuantity,
        startMs: msOfNN(row.start_time),
        endMs: msOf(row.end_time),
      };
    });
  }

  // -- cost rates -------------------------------------------------------------------------------

  /** upsertCostRates: writes rates (same key: the amount is replaced); one transaction. */
  async upsertCostRates(tenant: string, rates: CostRateSpec[]): Promise<void> {
    if (rates.length === 0) return;
    await this.db.transaction(async (tx) => {
      await insertMany(
        tx,
        "cost_rates",
        ["tenant", "provider", "model", "metric", "effective_time", "amount", "per_quantity", "currency"],
        rates.map((r) => [r.scope === "global" ? "" : tenant, r.provider, r.model, r.metric, ts(r.effectiveMs), r.unitPrice.amount, r.unitPrice.perQuantity, r.currency]),
        `ON CONFLICT (tenant, provider, model, metric, effective_time) DO UPDATE SET amount=EXCLUDED.amount, per_quantity=EXCLUDED.per_quantity, currency=EXCLUDED.currency`,
      );
    });
  }

  /** costRates: the tenant's overrides and the global rates (optionally filtered). */
  /**
   * The catalog generation of each tenant (0 when it never had a catalog write); the tenant ''
   * holds the global cost rates. Bumped by a trigger on every catalog write (migration 0007).
   */
  async generations(tenants: readonly string[], q: Queryable = this.db): Promise<Map<string, bigint>> {
    const r = await q.query(`SELECT tenant, generation FROM catalog_generations WHERE tenant = ANY($1::text[])`, [[...tenants]]);
    const out = new Map<string, bigint>(tenants.map((t) => [t, 0n]));
    for (const row of r.rows) out.set(String(row.tenant), BigInt(row.generation as string | number | bigint));
    return out;
  }

  async costRates(tenant: string, provider = "", model = "", limit = 100_000): Promise<CostRateSpec[]> {
    const r = await this.db.query(
      `SELECT * FROM cost_rates WHERE tenant IN ($1, '') AND ($2 = '' OR provider = $2) AND ($3 = '' OR model = $3)
       ORDER BY provider, model, metric, effective_time, tenant LIMIT $4`,
      [tenant, provider, model, limit],
    );
    return r.rows.map((row) => ({
      provider: row.provider as string,
      model: row.model as string,
      metric: row.metric as string,
      unitPrice: { amount: row.amount as string, perQuantity: row.per_quantity as string },
      currency: row.currency as string,
      effectiveMs: msOfNN(row.effective_time),
      scope: row.tenant === "" ? "global" : "tenant",
    }));
  }

  // -- guardrail rules --------------------------------------------------------------------------

  async createRule(tenant: string, r: GuardrailRuleRow, nowMs: number, rulesMax: number): Promise<GuardrailRuleRow> {
    return this.db.transaction(async (tx) => {
      const ins = await tx.query(
        `INSERT INTO guardrail_rules (tenant, rule_id, kind, threshold_bps, window_seconds, customer_id, model, create_time) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING RETURNING rule_id`,
        [tenant, r.ruleId, r.kind, r.thresholdBps, r.windowSeconds, r.customerId, r.model, ts(nowMs)],
      );
      if (ins.rows.length === 0) {
        const cur = (await this.#rules(tx, tenant)).find((x) => x.ruleId === r.ruleId)!;
        if (cur.kind !== r.kind || cur.thresholdBps !== r.thresholdBps || cur.windowSeconds !== r.windowSeconds || cur.customerId !== r.customerId || cur.model !== r.model) {
          throw alreadyExists("rule.rule_id", r.ruleId);
        }
        return cur;
      }
      const n = await tx.query<{ n: bigint }>(`SELECT count(*)::bigint AS n FROM guardrail_rules WHERE tenant=$1`, [tenant]);
      if (Number(n.rows[0]!.n) > rulesMax) throw invalid("rule", `the tenant has the maximum of ${rulesMax} rules`);
      return r;
    });
  }

  rules(tenant: string): Promise<GuardrailRuleRow[]> {
    return this.#rules(this.db, tenant);
  }

  async #rules(q: Queryable, tenant: string): Promise<GuardrailRuleRow[]> {
    const r = await q.query(`SELECT * FROM guardrail_rules WHERE tenant=$1 ORDER BY rule_id`, [tenant]);
    return r.rows.map((row) => ({
      ruleId: row.rule_id as string,
      kind: row.kind as GuardrailRuleRow["kind"],
      thresholdBps: BigInt(row.threshold_bps as bigint),
      windowSeconds: Number(row.window_seconds),
      customerId: row.customer_id as string,
      model: row.model as string,
    }));
  }
}
