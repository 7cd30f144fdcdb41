import type { Client } from "@connectrpc/connect";
import { timestampMs } from "./mapping.js";
import type { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { Queryable } from "@nanobill/db";
import { Rate } from "@nanobill/money";
import { forTenant, type Clock, type Logger } from "@nanobill/service-kit";
import { compilePlanVersion, type CompiledVersion } from "./domain/compile.js";
import { CostCatalog } from "./domain/cost-catalog.js";
import { TenantCatalog, type CreditRate } from "./domain/rate-event.js";
import type { Customer, PriceOverride, Subscription } from "./domain/types.js";
import type { CatalogStore, GuardrailRuleRow } from "./store/catalog-store.js";

interface TenantEntry {
  loadedMs: number;
  /** catalog_generations of the tenant and of '' (global cost rates), read before the catalog was. */
  generation: bigint;
  globalGeneration: bigint;
  versions: Array<{ planId: string; version: CompiledVersion }>;
  costs: CostCatalog;
  rules: GuardrailRuleRow[];
  creditRates: Map<string, CreditRate[]>;
  customers: Map<string, { loadedMs: number; customer: Customer | undefined; subs: Subscription[]; overrides: PriceOverride[] }>;
}

/**
 * CatalogCache: what the consumer (and Quote) need per tenant, cached for ttlMs and dropped by
 * invalidate(tenant) on every catalog write of this process, and by sync(tenants) when another
 * process wrote (the tenant's catalog generation moved: store/migrations/0007). Compiled plan
 * versions are kept for good (published versions are immutable), so their matrix lookup caches
 * stay warm.
 */
export class CatalogCache {
  readonly #tenants = new Map<string, TenantEntry>();
  readonly #compiled = new Map<string, CompiledVersion>();
  /** The generations (tenant's, global) each catalog handed out was built at, and its tenant-wide part. */
  readonly #builtAt = new WeakMap<TenantCatalog, { generation: bigint; globalGeneration: bigint; entry: TenantEntry }>();

  constructor(
    private readonly store: CatalogStore,
    private readonly clock: Clock,
    private readonly ttlMs: number,
    private readonly wallet?: Client<typeof CreditWalletService>,
    private readonly logger?: Logger,
  ) {}

  /** creditRates: exchange rates of the credit types the tenant's charges burn (wallet GetCreditType). */
  async #creditRates(tenant: string, versions: CompiledVersion[]): Promise<Map<string, CreditRate[]>> {
    const out = new Map<string, CreditRate[]>();
    if (this.wallet === undefined) return out;
    const units = new Set<string>();
    for (const v of versions) for (const c of v.charges) if (c.pricing.kind === "credits") units.add(c.unit);
    for (const unit of units) {
      try {
        const r = await this.wallet.getCreditType({ creditTypeId: unit }, forTenant(tenant));
        const rates = (r.creditType?.rates ?? [])
          .map((x) => ({ effectiveMs: x.effectiveAt === undefined ? 0 : timestampMs(x.effectiveAt), rate: Rate.parse(x.rate?.value ?? "0", "rate"), currency: x.currency }))
          .sort((a, b) => a.effectiveMs - b.effectiveMs);
        out.set(unit, rates);
      } catch (e) {
        this.logger?.debug("credit type rates unavailable; credit values left at 0", { tenant, unit, error: String((e as Error)?.message ?? e) });
      }
    }
    return out;
  }

  invalidate(tenant: string): void {
    this.#tenants.delete(tenant);
  }

  /**
   * Drops the cached catalogs of `tenants` that a catalog write of any process changed since they
   * were loaded (one query). Called before each page is rated and before API reads that price.
   */
  async sync(tenants: Iterable<string>): Promise<void> {
    const cached = [...new Set(tenants)].filter((t) => this.#tenants.has(t));
    if (cached.length === 0) return;
    const gens = await this.store.generations([...cached, ""]);
    for (const t of cached) {
      const e = this.#tenants.get(t);
      if (e !== undefined && (e.generation !== gens.get(t) || e.globalGeneration !== gens.get(""))) this.#tenants.delete(t);
    }
  }

  async #tenant(tenant: string): Promise<TenantEntry> {
    const now = this.clock.now().getTime();
    const cur = this.#tenants.get(tenant);
    if (cur !== undefined && now - cur.loadedMs < this.ttlMs) return cur;
    // The generations first: a write committed after this read moves them past what is cached,
    // and the next sync() reloads.
    const gens = await this.store.generations([tenant, ""]);
    const [versions, rates, rules] = await Promise.all([this.store.publishedVersions(tenant), this.store.costRates(tenant), this.store.rules(tenant)]);
    // A stored version that no longer compiles (written before a rule it breaks, e.g. the amount
    // bound) is left out and logged, not allowed to stop the tenant: its subscriptions' events are
    // rated "plan ... not found" (cost only) until it is fixed.
    const compiled: Array<{ planId: string; version: CompiledVersion }> = [];
    for (const { planId, version } of versions) {
      const key = `${tenant}\u0000${planId}\u0000${version.version}`;
      let cv = this.#compiled.get(key);
      if (cv === undefined) {
        try {
          cv = compilePlanVersion(version, `plan ${planId} v${version.version}`);
        } catch (e) {
          this.logger?.warn("a published plan version does not compile; its events are not priced", { tenant, planId, version: version.version, error: String((e as Error)?.message ?? e) });
          continue;
        }
        this.#compiled.set(key, cv);
      }
      compiled.push({ planId, version: cv });
    }
    const creditRates = await this.#creditRates(tenant, compiled.map((x) => x.version));
    // Customers loaded before are kept only if no catalog write happened since (same generations):
    // kept across a write, they would be served as current under the new generation.
    const unchanged = cur !== undefined && cur.generation === gens.get(tenant) && cur.globalGeneration === gens.get("");
    const e: TenantEntry = {
      loadedMs: now,
      generation: gens.get(tenant)!,
      globalGeneration: gens.get("")!,
      versions: compiled,
      costs: new CostCatalog(rates),
      rules,
      creditRates,
      customers: unchanged ? cur.customers : new Map(),
    };
    if (e.customers.size > 100_000) e.customers.clear();
    this.#tenants.set(tenant, e);
    return e;
  }

  /** creditRates: the exchange rates of the credit types the tenant's charges burn (cached). */
  async creditRates(tenant: string): Promise<Map<string, CreditRate[]>> {
    return (await this.#tenant(tenant)).creditRates;
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
    const catalog = new TenantCatalog({ tenant, customers, subscriptions: subs, versions: e.versions, overrides, costs: e.costs, creditRates: e.creditRates });
    this.#builtAt.set(catalog, { generation: e.generation, globalGeneration: e.globalGeneration, entry: e });
    return catalog;
  }

  /**
   * stale: the tenants among `catalogs` (from forCustomers) whose catalog a write committed after
   * it was built, read through `q` (the consumer's batch transaction, after it locked the batch's
   * customers). Subscription and override writes take the same customer lock, so an empty answer
   * means the catalogs are current for the locked customers until the batch commits; otherwise
   * `withCustomersIn` rebuilds them under the lock. (The entries stay: the next sync() drops them.)
   */
  async stale(q: Queryable, catalogs: ReadonlyMap<string, TenantCatalog>): Promise<string[]> {
    if (catalogs.size === 0) return [];
    const gens = await this.store.generations([...catalogs.keys(), ""], q);
    const out: string[] = [];
    for (const [tenant, catalog] of catalogs) {
      const at = this.#builtAt.get(catalog);
      if (at === undefined || at.generation !== gens.get(tenant) || at.globalGeneration !== gens.get("")) out.push(tenant);
    }
    return out;
  }

  /**
   * withCustomersIn: `catalog` with its customers, subscriptions and overrides read again through
   * `q` (the batch transaction holding the customers' locks, so no write of theirs can commit
   * before the batch does): the customer-scoped part is current, the tenant-wide part (plans, cost
   * rates, credit rates) is the catalog's own, eventually consistent as always. No reload loop and
   * no second rating: any catalog write of the tenant marks the batch stale, and re-rating the
   * batch each time stalled a partition while the tenant kept writing (second review).
   */
  async withCustomersIn(q: Queryable, catalog: TenantCatalog, customerIds: string[]): Promise<TenantCatalog> {
    const at = this.#builtAt.get(catalog);
    if (at === undefined) throw new Error(`catalog of tenant ${catalog.tenant} was not built by this cache`);
    const ids = [...new Set(customerIds)];
    const tenant = catalog.tenant;
    const customers = await this.store.getCustomers(tenant, ids, q);
    const subscriptions = await this.store.subscriptionsOf(tenant, ids, q);
    const overrides = await this.store.overridesOf(tenant, ids, q);
    const e = at.entry;
    const fresh = new TenantCatalog({ tenant, customers, subscriptions, versions: e.versions, overrides, costs: e.costs, creditRates: e.creditRates });
    this.#builtAt.set(fresh, at);
    return fresh;
  }
}
