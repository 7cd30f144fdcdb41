import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { GrantKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { Aggregation } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import type { PlatformClients } from "./platform.js";

/** The demo tenant's numbers (docs/event-flow.md): $2.50 / $10 per 1M tokens, cost $1.25 / $5, $1.00 prepaid. */
export const DEMO = {
  tenant: "tnt_demo",
  planId: "plan_llm",
  chargeId: "llm_tokens",
  model: "gpt-x",
  provider: "openai",
  prepaidNanos: 1_000_000_000n,
} as const;

export interface DemoCustomer {
  customerId: string;
  subscriptionId: string;
  walletId: string;
}

/** Ignores AlreadyExists, so seeding twice (a restart of `npm start`) is harmless. */
async function once(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (ConnectError.from(e).code !== Code.AlreadyExists) throw e;
  }
}

/**
 * Seeds one customer on the demo plan: a matrix charge (model x token type), the provider's cost
 * rates, a subscription from the start of the current UTC month and a prepaid USD wallet.
 * Idempotent: every write carries a fixed id.
 */
export async function seedDemo(c: PlatformClients, opts: { customerId: string; now: Date }): Promise<DemoCustomer> {
  const start = new Date(Date.UTC(opts.now.getUTCFullYear(), opts.now.getUTCMonth(), 1));
  const { customerId } = opts;
  const subscriptionId = `sub_${customerId}`;
  const walletId = `wal_${customerId}_usd`;
  await once(c.rating.createCustomer({ customer: { customerId, name: "Demo AI Co", currency: "USD", timeZone: "UTC", billingAnchor: timestampFromDate(start) } }));
  await once(
    c.metering.createMeter({
      meter: { id: "llm_tokens", eventType: "llm.call", aggregation: Aggregation.COUNT, groupBy: ["model"], description: "LLM calls by model" },
    }),
  );
  await once(
    c.rating.createPlan({
      planId: DEMO.planId,
      name: "LLM usage",
      version: {
        currency: "USD",
        intervalMonths: 1,
        charges: [
          {
            chargeId: DEMO.chargeId,
            name: "LLM tokens",
            unit: "USD",
            usage: { meter: "llm_tokens", eventType: "llm.call", quantityProperties: ["input_tokens", "output_tokens"], dimensionProperties: ["model"] },
            pricing: {
              case: "matrix",
              value: {
                cells: [
                  { match: { model: DEMO.model, metric: "input_tokens" }, unitPrice: { amount: "2.50", perQuantity: 1_000_000n } },
                  { match: { model: DEMO.model, metric: "output_tokens" }, unitPrice: { amount: "10", perQuantity: 1_000_000n } },
                ],
              },
            },
          },
        ],
      },
    }),
  );
  const plan = await c.rating.getPlan({ planId: DEMO.planId });
  if (plan.plan?.versions.some((v) => v.version === 1 && v.publishTime === undefined) ?? true) {
    await once(c.rating.publishPlanVersion({ planId: DEMO.planId, version: 1 }));
  }
  await once(c.rating.createSubscription({ subscriptionId, customerId, planId: DEMO.planId, planVersion: 1, startTime: timestampFromDate(start) }));
  await c.rating.upsertCostRates({
    rates: [
      { provider: DEMO.provider, model: DEMO.model, metric: "input_tokens", unitPrice: { amount: "1.25", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: timestampFromDate(start) },
      { provider: DEMO.provider, model: DEMO.model, metric: "output_tokens", unitPrice: { amount: "5", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: timestampFromDate(start) },
    ],
  });
  await once(c.wallet.createWallet({ customerId, unit: "USD", id: walletId }));
  await once(c.wallet.grant({ id: `grant_${customerId}_prepaid`, walletId, kind: GrantKind.PURCHASED, amountNanos: DEMO.prepaidNanos, priority: 1 }));
  return { customerId, subscriptionId, walletId };
}
