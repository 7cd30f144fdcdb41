import { Rate, currency } from "@nanobill/money";
import { invalid, withField } from "./errors.js";
import { compileUnitPrice } from "./compile.js";
import { propQuantity, propString, type Exact } from "./pricing.js";
import { EVENTS_METRIC, type CostRateSpec, type UsageEvent } from "./types.js";
import { checkTime } from "./validate.js";

/** Event properties that name the provider and the model an event's cost is looked up by. */
export const PROVIDER_PROPERTY = "provider";
export const MODEL_PROPERTY = "model";
/** Metrics counted once per event when the event has no property of that name. */
const PER_EVENT_METRICS = new Set([EVENTS_METRIC, "calls", "requests"]);

const NAME_RE = /^[A-Za-z0-9_.:/-]{1,128}$/;

interface Entry {
  effectiveMs: number;
  rate: Rate;
  currency: string;
}

/** CostLine: the cost of one metric of an event. */
export interface CostLine {
  metric: string;
  quantity: bigint;
  exact: Exact;
  currency: string;
}

/** validateCostRate: checks one rate (field names it) and returns its compiled Rate. */
export function validateCostRate(r: CostRateSpec, field: string): Rate {
  for (const k of ["provider", "model", "metric"] as const) {
    if (!NAME_RE.test(r[k])) throw invalid(`${field}.${k}`, `must be 1-128 characters of [A-Za-z0-9_.:/-], got ${JSON.stringify(r[k])}`);
  }
  withField(`${field}.currency`, () => currency(r.currency, ""));
  checkTime(r.effectiveMs, `${field}.effective_time`);
  return compileUnitPrice(r.unitPrice, `${field}.unit_price`);
}

/**
 * CostCatalog: the effective-dated cost rates of one tenant (its overrides) over the global
 * catalog, compiled to exact Rates. A rate stays in force from its effective time until the next
 * rate of the same (scope, provider, model, metric); a tenant rate in force at the event's time
 * wins over the global one. Late events use the rate in force at their own timestamp.
 */
export class CostCatalog {
  readonly #tenant = new Map<string, Entry[]>();
  readonly #global = new Map<string, Entry[]>();
  readonly #metrics = new Map<string, Set<string>>(); // provider\0model -> metrics

  constructor(rates: CostRateSpec[]) {
    for (const r of rates) {
      const rate = validateCostRate(r, "rate");
      const key = `${r.provider}\u0000${r.model}\u0000${r.metric}`;
      const m = r.scope === "global" ? this.#global : this.#tenant;
      let l = m.get(key);
      if (l === undefined) m.set(key, (l = []));
      l.push({ effectiveMs: r.effectiveMs, rate, currency: r.currency });
      const pm = `${r.provider}\u0000${r.model}`;
      let s = this.#metrics.get(pm);
      if (s === undefined) this.#metrics.set(pm, (s = new Set()));
      s.add(r.metric);
    }
    for (const m of [this.#tenant, this.#global]) for (const l of m.values()) l.sort((a, b) => a.effectiveMs - b.effectiveMs);
  }

  /** rateAt: the rate in force for (provider, model, metric) at tsMs, tenant first; null if none. */
  rateAt(provider: string, model: string, metric: string, tsMs: number): { rate: Rate; currency: string } | null {
    const key = `${provider}\u0000${model}\u0000${metric}`;
    return inForce(this.#tenant.get(key), tsMs) ?? inForce(this.#global.get(key), tsMs);
  }

  /**
   * costOf: the cost lines of an event: for each metric the catalog prices for the event's
   * (provider, model), the quantity is the event property of that name (per-event metrics
   * "events", "calls", "requests" count 1 when absent) times the rate in force at the event time.
   */
  costOf(e: UsageEvent): CostLine[] {
    const provider = propString(e.properties[PROVIDER_PROPERTY]);
    const model = propString(e.properties[MODEL_PROPERTY]);
    const metrics = this.#metrics.get(`${provider}\u0000${model}`);
    if (metrics === undefined) return [];
    const out: CostLine[] = [];
    for (const metric of metrics) {
      const v = e.properties[metric];
      let q: bigint;
      if (v === undefined) {
        if (!PER_EVENT_METRICS.has(metric)) continue;
        q = 1n;
      } else {
        const pq = propQuantity(v);
        if (typeof pq === "string") continue;
        q = pq;
      }
      const r = this.rateAt(provider, model, metric, e.timestampMs);
      if (r === null) continue;
      out.push({ metric, quantity: q, exact: r.rate.exactTimes(q), currency: r.currency });
    }
    return out;
  }
}

function inForce(l: Entry[] | undefined, ts: number): { rate: Rate; currency: string } | null {
  if (l === undefined) return null;
  let lo = 0;
  let hi = l.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (l[mid]!.effectiveMs <= ts) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found < 0 ? null : { rate: l[found]!.rate, currency: l[found]!.currency };
}
