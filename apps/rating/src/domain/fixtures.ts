import { CostCatalog } from "./cost-catalog.js";
import { compilePlanVersion } from "./compile.js";
import { TenantCatalog } from "./rate-event.js";
import type { ChargeSpec, CostRateSpec, PlanVersionSpec, PricingSpec, PropValue, UsageEvent, UsageSpec } from "./types.js";

/** Builders shared by domain tests, service tests and bench/rating (not used in production paths). */

export function usage(eventType: string, quantityProperties: string[], dimensionProperties: string[] = [], meter = "m"): UsageSpec {
  return { meter, eventType, quantityProperties, dimensionProperties };
}

export function charge(chargeId: string, pricing: PricingSpec, opts: { unit?: string; usage?: UsageSpec | null; included?: string } = {}): ChargeSpec {
  return { chargeId, name: chargeId, unit: opts.unit ?? "USD", usage: opts.usage ?? null, includedQuantity: opts.included ?? "", pricing };
}

export function version(charges: ChargeSpec[], extra: Partial<PlanVersionSpec> = {}): PlanVersionSpec {
  return {
    version: 1,
    status: "published",
    currency: "USD",
    intervalMonths: 1,
    charges,
    minimumCommitmentAmount: "",
    spendingCapAmount: "",
    publishTimeMs: 0,
    ...extra,
  };
}

export function props(p: Record<string, string | number | bigint | boolean>): Record<string, PropValue> {
  const out: Record<string, PropValue> = {};
  for (const [k, v] of Object.entries(p)) {
    if (typeof v === "bigint") out[k] = { kind: "int", value: v };
    else if (typeof v === "number") out[k] = { kind: "int", value: BigInt(v) };
    else if (typeof v === "boolean") out[k] = { kind: "bool", value: v };
    else out[k] = { kind: "string", value: v };
  }
  return out;
}

export const T0 = Date.UTC(2026, 10, 1); // 2026-11-01T00:00:00Z

export function event(eventId: string, type: string, p: Record<string, string | number | bigint | boolean>, ts = T0 + 3_600_000, customerId = "cus_1"): UsageEvent {
  return { tenant: "tnt_test", eventId, customerId, type, timestampMs: ts, properties: props(p) };
}

/** catalogFor: a tenant with customer cus_1 (USD, anchor T0, UTC) subscribed to one version. */
export function catalogFor(v: PlanVersionSpec, costs: CostRateSpec[] = [], overrides: TenantCatalogOpts["overrides"] = []): TenantCatalog {
  return new TenantCatalog({
    tenant: "tnt_test",
    customers: [{ customerId: "cus_1", name: "", currency: "USD", billingAnchorMs: T0, timeZone: "UTC", createTimeMs: T0 }],
    subscriptions: [
      { subscriptionId: "sub_1", customerId: "cus_1", phases: [{ planId: "plan_1", planVersion: v.version, startMs: T0, endMs: null }], seatChanges: [], startMs: T0, endMs: null },
    ],
    versions: [{ planId: "plan_1", version: compilePlanVersion(v, "version") }],
    overrides,
    costs: new CostCatalog(costs),
  });
}

type TenantCatalogOpts = ConstructorParameters<typeof TenantCatalog>[0];

export function costRate(provider: string, model: string, metric: string, amount: string, perQuantity = "1000000", effectiveMs = 0, scope: "tenant" | "global" = "tenant"): CostRateSpec {
  return { provider, model, metric, unitPrice: { amount, perQuantity }, currency: "USD", effectiveMs, scope };
}

/** The event-flow plan: matrix model x token type, $2.50 / $10 per 1M tokens for gpt-x. */
export function llmMatrixVersion(): PlanVersionSpec {
  return version([
    charge(
      "llm_tokens",
      {
        kind: "matrix",
        cells: [
          { match: { model: "gpt-x", metric: "input_tokens" }, unitPrice: { amount: "2.50", perQuantity: "1000000" } },
          { match: { model: "gpt-x", metric: "output_tokens" }, unitPrice: { amount: "10", perQuantity: "1000000" } },
        ],
        defaultPrice: null,
      },
      { usage: usage("llm.call", ["input_tokens", "output_tokens"], ["model"], "llm_tokens") },
    ),
  ]);
}

export function llmCosts(): CostRateSpec[] {
  return [costRate("openai", "gpt-x", "input_tokens", "1.25"), costRate("openai", "gpt-x", "output_tokens", "5")];
}
