/**
 * Domain types of rating. Specs (what callers write: plans, charges, overrides, cost rates) are
 * JSON-safe (decimals and integers as strings) so they are stored as JSONB exactly as accepted and
 * compiled (validated, decimals turned into exact integer rationals) once per load; see compile.ts.
 */

/** UnitPriceSpec: a decimal `amount` of the charge's unit per `perQuantity` units ("" = 1). */
export interface UnitPriceSpec {
  amount: string;
  perQuantity: string; // decimal integer string, "" or "0" means 1
}

/** TierSpec: one tier; upTo "" or "0" = unbounded (last tier only). */
export interface TierSpec {
  upTo: string;
  unitPrice: UnitPriceSpec;
  flatAmount: string; // "" = none
}

/** UsageSpec: which events a usage charge prices and how lines are read from them. */
export interface UsageSpec {
  meter: string;
  eventType: string;
  quantityProperties: string[]; // empty: one line per event, metric "events", quantity 1
  dimensionProperties: string[];
}

/** PricingSpec: the charge model (one of). */
export type PricingSpec =
  | { kind: "per_unit"; unitPrice: UnitPriceSpec }
  | { kind: "graduated"; tiers: TierSpec[] }
  | { kind: "volume"; tiers: TierSpec[] }
  | { kind: "package"; packageSize: string; packageAmount: string; freeQuantity: string }
  | { kind: "percentage"; amountProperty: string; percent: string; fixedAmount: string; minAmount: string; maxAmount: string }
  | { kind: "matrix"; cells: Array<{ match: Record<string, string>; unitPrice: UnitPriceSpec }>; defaultPrice: UnitPriceSpec | null }
  | { kind: "dynamic"; priceProperty: string }
  | { kind: "flat"; amount: string }
  | { kind: "seats"; perSeatAmount: string }
  | {
      kind: "outcome";
      amount: string;
      conditionProperty: string;
      conditionValue: string;
      verificationWindowSeconds: string;
      reversalEventType: string;
      taskIdProperty: string;
      attemptEventTypes: string[];
    }
  | {
      kind: "credits";
      tierProperty: string;
      tiers: Array<{ tier: string; values: string[]; creditsPerUnit: string }>;
      defaultCreditsPerUnit: string;
    };

export type PricingKind = PricingSpec["kind"];

/** ChargeSpec: one charge of a plan version. */
export interface ChargeSpec {
  chargeId: string;
  name: string;
  unit: string;
  usage: UsageSpec | null;
  includedQuantity: string; // "" or "0" = none
  pricing: PricingSpec;
}

export type PlanVersionStatus = "draft" | "published" | "archived";

/** PlanVersionSpec: one version of a plan. */
export interface PlanVersionSpec {
  version: number;
  status: PlanVersionStatus;
  currency: string;
  intervalMonths: number;
  charges: ChargeSpec[];
  minimumCommitmentAmount: string;
  spendingCapAmount: string;
  publishTimeMs: number | null;
}

/** PlanSpec: a plan and its versions (oldest first). */
export interface PlanSpec {
  planId: string;
  name: string;
  versions: PlanVersionSpec[];
}

/** Customer: whom a tenant bills. */
export interface Customer {
  customerId: string;
  name: string;
  currency: string;
  billingAnchorMs: number;
  timeZone: string;
  createTimeMs: number;
}

export interface SubscriptionPhase {
  planId: string;
  planVersion: number;
  startMs: number;
  endMs: number | null;
}

export interface SeatChange {
  changeId: string;
  seats: number;
  effectiveMs: number;
}

/** Subscription: a customer on plan versions over time (phases without overlap, in order). */
export interface Subscription {
  subscriptionId: string;
  customerId: string;
  phases: SubscriptionPhase[];
  seatChanges: SeatChange[];
  startMs: number;
  endMs: number | null;
}

/** PriceOverride: a customer's replacement pricing for one charge over a time range. */
export interface PriceOverride {
  overrideId: string;
  customerId: string;
  chargeId: string;
  pricing: PricingSpec;
  includedQuantity: string;
  startMs: number;
  endMs: number | null;
}

export type CostRateScope = "tenant" | "global";

/** CostRateSpec: the cost of one unit of (provider, model, metric) from a time. */
export interface CostRateSpec {
  provider: string;
  model: string;
  metric: string;
  unitPrice: UnitPriceSpec;
  currency: string;
  effectiveMs: number;
  scope: CostRateScope;
}

/** PropValue: an event property value (metering's PropertyValue): decimals stay strings. */
export type PropValue =
  | { kind: "string"; value: string }
  | { kind: "int"; value: bigint }
  | { kind: "decimal"; value: string }
  | { kind: "bool"; value: boolean };

/** UsageEvent: the event as rating sees it. */
export interface UsageEvent {
  tenant: string;
  eventId: string;
  customerId: string;
  type: string;
  timestampMs: number;
  properties: Record<string, PropValue>;
}

export type LineStatus = "final" | "provisional" | "pending" | "clawed_back" | "unpriced" | "cost_only";

/** RatedLine: one priced quantity of an event under one charge (or a cost-only line). */
export interface RatedLine {
  chargeId: string; // "" for cost only
  dimensions: Record<string, string>;
  dimsKey: string; // canonical key of dimensions
  quantity: bigint;
  priceNanos: bigint;
  unit: string;
  costNanos: bigint;
  costUnit: string;
  status: LineStatus;
  reason: string;
  attributedCostNanos: bigint; // outcome lines: cost of attempts sharing the task id
  priceValueNanos: bigint; // credit lines: currency value of the credits at the event time (0 if unknown)
}

/** RatedEventResult: how one event was rated. */
export interface RatedEventResult {
  eventId: string;
  customerId: string;
  eventType: string;
  timestampMs: number;
  subscriptionId: string;
  taskId: string;
  model: string;
  lines: RatedLine[];
}

const DIM_SPECIAL = /[\u001e\u001f]/;
/**
 * A dimension value in a dims key: U+001F (the pair separator) and U+001E (the escape) written as
 * U+001E + "1" / "0", so that two different dimension maps never share a key (a value holding
 * "\u001fregion=eu" made an event's key equal to another's and took its matrix price and carry;
 * review of 2026-11-30). Names need nothing: they are validated identifiers ([A-Za-z0-9_.:-], no
 * "=", compile.ts), so the first "=" of a pair ends its name. Any value without those two control
 * characters, every printable one, is its own text: keys stored before read the same.
 */
export function dimKeyPart(value: string): string {
  return DIM_SPECIAL.test(value) ? value.replace(/[\u001e\u001f]/g, (c) => (c === "\u001e" ? "\u001e0" : "\u001e1")) : value;
}

/** dimsKeyOf: canonical key of a dimensions map (sorted "k=v" joined by \u001f, values escaped by dimKeyPart). */
export function dimsKeyOf(d: Record<string, string>): string {
  const keys = Object.keys(d).sort();
  let s = "";
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    if (i > 0) s += "\u001f";
    s += k + "=" + dimKeyPart(d[k]!);
  }
  return s;
}

/** METRIC: the implicit dimension naming the quantity property of a line. */
export const METRIC = "metric";
/** EVENTS_METRIC: the metric of count lines (one per event). */
export const EVENTS_METRIC = "events";
