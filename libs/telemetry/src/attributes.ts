/**
 * Span attribute names, declared once. Every Nanobill-specific attribute carries the
 * `nanobill.` prefix; amounts are integers (never floats) via {@link nanosAttr}; no secrets
 * (API keys, authorization headers) are ever put on a span.
 */
export const ATTR = {
  TENANT: "nanobill.tenant",
  EVENT_ID: "nanobill.event_id",
  CUSTOMER_ID: "nanobill.customer_id",
  SUBSCRIPTION_ID: "nanobill.subscription_id",
  PLAN_ID: "nanobill.plan_id",
  METER_ID: "nanobill.meter_id",
  WALLET_ID: "nanobill.wallet_id",
  HOLD_ID: "nanobill.hold_id",
  ACCOUNT_ID: "nanobill.account_id",
  TRANSFER_ID: "nanobill.transfer_id",
  INVOICE_ID: "nanobill.invoice_id",
  PRICE_NANOS: "nanobill.price_nanos",
  COST_NANOS: "nanobill.cost_nanos",
  AMOUNT_NANOS: "nanobill.amount_nanos",
  CREDITS_NANOS: "nanobill.credits_nanos",
  QUANTITY: "nanobill.quantity",
  UNIT: "nanobill.unit",
  MODEL: "nanobill.model",
  BATCH_SIZE: "nanobill.batch_size",
  RESULT: "nanobill.result",
  SERVICE: "nanobill.service",
  KEY_ID: "nanobill.key_id",
} as const;

export type AttrName = (typeof ATTR)[keyof typeof ATTR];

const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);
const SAFE_MIN = -SAFE_MAX;

/**
 * A bigint amount as a span attribute value: an integer `number` when it is exactly
 * representable (|v| <= Number.MAX_SAFE_INTEGER), otherwise its decimal string. Never a
 * float, never rounded.
 */
export function nanosAttr(v: bigint): number | string {
  return v <= SAFE_MAX && v >= SAFE_MIN ? Number(v) : v.toString();
}
