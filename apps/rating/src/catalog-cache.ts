import type { Clock } from "@nanobill/service-kit";
import { compilePlanVersion, type CompiledVersion } from "./domain/compile.js";
import { CostCatalog } from "./domain/cost-catalog.js";
import { TenantCatalog } from "./domain/rate-event.js";
import type { Customer, PriceOverride, Subscription } from "./domain/types.js";
import type { CatalogStore, GuardrailRuleRow } from "./store/catalog-store.js";

interface TenantEntry {
  loadedMs: number;
  versions: Array<{ planId: string; version: CompiledVersion }>;
  costs: CostCatalog;
  rules: GuardrailRuleRow[];
  customers: Map<string, { loadedMs: number; customer: Customer | undefined; subs: Subscription[]; overrides: PriceOverride[] }>;
}

/**
 * CatalogCache: what the consumer (and Quote) need per tenant, cached for ttlMs and dropped by
 * invalidate(tenant) on every catalog write of this process. Compiled plan versions are kept
 * for good (published versions are immutable), so their matrix lookup caches stay warm.
 */
export class CatalogCache {
  readonly #tenants = new Map<string, TenantEntry>();
  readonly #compiled = new Map<string, CompiledVersion>();

  constructor(
    private readonly store: CatalogStore,
    private readonly clock: Clock,
    private readonly ttlMs: number,
  ) {}

  invalidate(tenant: string): void {
    this.#tenants.delete(tenant);
  }

  async #tenant(tenant: string): Promise<TenantEntry> {
    const now = this.clock.now().getTime();
    const cur = this.#tenants.get(tenant);
    if (cur !== undefined && now - cur.loadedMs < this.ttlMs) return cur;
    const [versions, rates, rules] = await Promise.all([this.store.publishedVersions(tenant), this.store.costRates(tenant), this.store.rules(tenant)]);
    const compiled = versions.map(({ planId, version }) => {
      const key = `${tenant}\u0000${planId}\u0000${version.version}`;
      let cv = this.#compiled.get(key);
      if (cv === undefined) {
        cv = compilePlanVersion(version, `plan ${planId} v${version.version}`);
        this.#compiled.set(key, cv);
      }
      return { planId, version: cv };
    });
    const e: TenantEntry = { loadedMs: now, versions: compiled, costs: new CostCatalog(rates), rules, customers: cur?.customers ?? new Map() };
    if (e.customers.size > 100_000) e.customers.clear();
    this.#tenants.set(tenant, e);
    return e;
  }

  /** rules: the tenant's guardrail rules (cached). */
  async rules(tenant: string): Promise<GuardrailRuleRow[]> {
    return (await this.#tenant(tenant)).rules;
  }

  /** forCustomers: a TenantCatalog knowing the given customers. */
  async forCustomers(tenant: string, customerIds: string[]): Promise<TenantCatalog> {
    const e = await this.#tenant(tenant);
    const now = this.clock.now().getTime();
    const missing = [...new Set(customerIds)].filter((id) => {
      const c = e.customers.get(id);
      return c === undefined || now - c.loadedMs >= this.ttlMs;
    });
    if (missing.length > 0) {
      const [cs, subs, ovs] = await Promise.all([this.store.getCustomers(tenant, missing), this.store.subscriptionsOf(tenant, missing), this.store.overridesOf(tenant, missing)]);
      for (const id of missing) {
        e.customers.set(id, {
          loadedMs: now,
          customer: cs.find((c) => c.customerId === id),
          subs: subs.filter((s) => s.customerId === id),
          overrides: ovs.filter((o) => o.customerId === id),
        });
      }
    }
    const customers: Customer[] = [];
    const subs: Subscription[] = [];
    const overrides: PriceOverride[] = [];
    for (const id of new Set(customerIds)) {
      const c = e.customers.get(id)!;
      if (c.customer !== undefined) customers.push(c.customer);
      subs.push(...c.subs);
      overrides.push(...c.overrides);
    }
    return new TenantCatalog({ tenant, customers, subscriptions: subs, versions: e.versions, overrides, costs: e.costs });
  }
}
