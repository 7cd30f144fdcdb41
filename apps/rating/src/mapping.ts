import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";

/**
 * timestampMs: a Timestamp in whole milliseconds, truncated (floor), never rounded: an event at
 * 23:59:59.9996 belongs to the day (and billing period) it happened in. protobuf-es's own
 * timestampMs rounds to the nearest millisecond.
 */
export function timestampMs(t: Timestamp): number {
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1_000_000);
}
import type { StoredEvent } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import {
  AlertSchema,
  ChargeSchema,
  CostRateSchema,
  CostRateScope,
  CustomerSchema,
  GuardrailKind,
  GuardrailRuleSchema,
  PlanSchema,
  PlanVersionSchema,
  PlanVersionStatus,
  PriceOverrideSchema,
  RatedEventSchema,
  RatedLineSchema,
  RatedLineStatus,
  SubscriptionSchema,
  type Alert,
  type Charge,
  type CostRate,
  type Customer as PbCustomer,
  type GuardrailRule,
  type Plan,
  type PlanVersion,
  type PriceOverride as PbPriceOverride,
  type PropertyValue,
  type RatedEvent,
  type Subscription as PbSubscription,
  type UnitPrice,
  type UsageEvent as PbUsageEvent,
} from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { invalid } from "./domain/errors.js";
import { checkTime } from "./domain/validate.js";
import type { AlertRow } from "./domain/margin.js";
import type { GuardrailRuleRow } from "./store/catalog-store.js";
import type {
  ChargeSpec,
  CostRateSpec,
  Customer,
  LineStatus,
  PlanSpec,
  PlanVersionSpec,
  PriceOverride,
  PricingSpec,
  PropValue,
  RatedEventResult,
  Subscription,
  UnitPriceSpec,
  UsageEvent,
} from "./domain/types.js";

/** Proto <-> domain. Amounts stay bigint end to end; decimals stay strings until compiled. */

/**
 * msOrNull: a request's Timestamp in ms (null when absent), checked: nanos in 0..999,999,999 and
 * the instant in years 1970..9999 UTC, else InvalidArgument naming `field`.
 */
export function msOrNull(t: Timestamp | undefined, field: string): number | null {
  if (t === undefined) return null;
  if (!Number.isInteger(t.nanos) || t.nanos < 0 || t.nanos > 999_999_999) throw invalid(field, `nanos must be in 0..999999999, got ${t.nanos}`);
  const ms = timestampMs(t);
  checkTime(ms, field);
  return ms;
}

export function tsOf(ms: number | null): Timestamp | undefined {
  return ms === null ? undefined : timestampFromMs(ms);
}

function unitPriceOf(p: UnitPrice | undefined): UnitPriceSpec {
  return { amount: p?.amount ?? "", perQuantity: p === undefined || p.perQuantity === 0n ? "" : p.perQuantity.toString() };
}

function unitPriceToProto(p: UnitPriceSpec): UnitPrice {
  return { $typeName: "nanobill.rating.v1.UnitPrice", amount: p.amount, perQuantity: p.perQuantity === "" ? 0n : BigInt(p.perQuantity) };
}

const u64 = (v: bigint): string => (v === 0n ? "" : v.toString());

/** pricingOf: the proto pricing oneof -> PricingSpec (field names the charge for errors). */
export function pricingOf(c: Charge, field: string): PricingSpec {
  const p = c.pricing;
  switch (p.case) {
    case "perUnit":
      return { kind: "per_unit", unitPrice: unitPriceOf(p.value.unitPrice) };
    case "graduated":
    case "volume":
      return { kind: p.case, tiers: p.value.tiers.map((t) => ({ upTo: u64(t.upTo), unitPrice: unitPriceOf(t.unitPrice), flatAmount: t.flatAmount })) };
    case "package":
      return { kind: "package", packageSize: p.value.packageSize.toString(), packageAmount: p.value.packageAmount, freeQuantity: u64(p.value.freeQuantity) };
    case "percentage":
      return { kind: "percentage", amountProperty: p.value.amountProperty, percent: p.value.percent, fixedAmount: p.value.fixedAmount, minAmount: p.value.minAmount, maxAmount: p.value.maxAmount };
    case "matrix":
      return {
        kind: "matrix",
        cells: p.value.cells.map((x) => ({ match: { ...x.match }, unitPrice: unitPriceOf(x.unitPrice) })),
        defaultPrice: p.value.defaultPrice === undefined ? null : unitPriceOf(p.value.defaultPrice),
      };
    case "dynamic":
      return { kind: "dynamic", priceProperty: p.value.priceProperty };
    case "flat":
      return { kind: "flat", amount: p.value.amount };
    case "seats":
      return { kind: "seats", perSeatAmount: p.value.perSeatAmount };
    case "outcome":
      return {
        kind: "outcome",
        amount: p.value.amount,
        conditionProperty: p.value.conditionProperty,
        conditionValue: p.value.conditionValue,
        verificationWindowSeconds: u64(p.value.verificationWindowSeconds),
        reversalEventType: p.value.reversalEventType,
        taskIdProperty: p.value.taskIdProperty,
        attemptEventTypes: [...p.value.attemptEventTypes],
      };
    case "credits":
      return {
        kind: "credits",
        tierProperty: p.value.tierProperty,
        tiers: p.value.tiers.map((t) => ({ tier: t.tier, values: [...t.values], creditsPerUnit: t.creditsPerUnit })),
        defaultCreditsPerUnit: p.value.defaultCreditsPerUnit,
      };
    default:
      throw invalid(`${field}.pricing`, "is required (one charge model)");
  }
}

export function chargeOf(c: Charge, field: string): ChargeSpec {
  return {
    chargeId: c.chargeId,
    name: c.name,
    unit: c.unit,
    usage: c.usage === undefined ? null : { meter: c.usage.meter, eventType: c.usage.eventType, quantityProperties: [...c.usage.quantityProperties], dimensionProperties: [...c.usage.dimensionProperties] },
    includedQuantity: u64(c.includedQuantity),
    pricing: pricingOf(c, field),
  };
}

export function versionOf(v: PlanVersion | undefined, field: string): PlanVersionSpec {
  if (v === undefined) throw invalid(field, "is required");
  return {
    version: v.version,
    status: "draft",
    currency: v.currency,
    intervalMonths: v.intervalMonths === 0 ? 1 : v.intervalMonths,
    charges: v.charges.map((c, i) => chargeOf(c, `${field}.charges[${i}]`)),
    minimumCommitmentAmount: v.minimumCommitmentAmount,
    spendingCapAmount: v.spendingCapAmount,
    publishTimeMs: null,
  };
}

function pricingToProto(p: PricingSpec): Charge["pricing"] {
  switch (p.kind) {
    case "per_unit":
      return { case: "perUnit", value: { $typeName: "nanobill.rating.v1.PerUnitPrice", unitPrice: unitPriceToProto(p.unitPrice) } };
    case "graduated":
    case "volume":
      return {
        case: p.kind,
        value: {
          $typeName: "nanobill.rating.v1.TieredPrice",
          tiers: p.tiers.map((t) => ({ $typeName: "nanobill.rating.v1.Tier" as const, upTo: t.upTo === "" ? 0n : BigInt(t.upTo), unitPrice: unitPriceToProto(t.unitPrice), flatAmount: t.flatAmount })),
        },
      };
    case "package":
      return { case: "package", value: { $typeName: "nanobill.rating.v1.PackagePrice", packageSize: BigInt(p.packageSize || "0"), packageAmount: p.packageAmount, freeQuantity: BigInt(p.freeQuantity || "0") } };
    case "percentage":
      return { case: "percentage", value: { $typeName: "nanobill.rating.v1.PercentagePrice", amountProperty: p.amountProperty, percent: p.percent, fixedAmount: p.fixedAmount, minAmount: p.minAmount, maxAmount: p.maxAmount } };
    case "matrix":
      return {
        case: "matrix",
        value: {
          $typeName: "nanobill.rating.v1.MatrixPrice",
          cells: p.cells.map((c) => ({ $typeName: "nanobill.rating.v1.MatrixCell" as const, match: { ...c.match }, unitPrice: unitPriceToProto(c.unitPrice) })),
          defaultPrice: p.defaultPrice === null ? undefined : unitPriceToProto(p.defaultPrice),
        },
      };
    case "dynamic":
      return { case: "dynamic", value: { $typeName: "nanobill.rating.v1.DynamicPrice", priceProperty: p.priceProperty } };
    case "flat":
      return { case: "flat", value: { $typeName: "nanobill.rating.v1.FlatPrice", amount: p.amount } };
    case "seats":
      return { case: "seats", value: { $typeName: "nanobill.rating.v1.SeatsPrice", perSeatAmount: p.perSeatAmount } };
    case "outcome":
      return {
        case: "outcome",
        value: {
          $typeName: "nanobill.rating.v1.OutcomePrice",
          amount: p.amount,
          conditionProperty: p.conditionProperty,
          conditionValue: p.conditionValue,
          verificationWindowSeconds: BigInt(p.verificationWindowSeconds || "0"),
          reversalEventType: p.reversalEventType,
          taskIdProperty: p.taskIdProperty,
          attemptEventTypes: [...p.attemptEventTypes],
        },
      };
    case "credits":
      return {
        case: "credits",
        value: {
          $typeName: "nanobill.rating.v1.CreditsPrice",
          tierProperty: p.tierProperty,
          tiers: p.tiers.map((t) => ({ $typeName: "nanobill.rating.v1.CreditTier" as const, tier: t.tier, values: [...t.values], creditsPerUnit: t.creditsPerUnit })),
          defaultCreditsPerUnit: p.defaultCreditsPerUnit,
        },
      };
  }
}

export function chargeToProto(c: ChargeSpec): Charge {
  return create(ChargeSchema, {
    chargeId: c.chargeId,
    name: c.name,
    unit: c.unit,
    usage: c.usage === null ? undefined : { ...c.usage },
    includedQuantity: c.includedQuantity === "" ? 0n : BigInt(c.includedQuantity),
    pricing: pricingToProto(c.pricing),
  });
}

const STATUS_TO_PROTO: Record<PlanVersionSpec["status"], PlanVersionStatus> = {
  draft: PlanVersionStatus.DRAFT,
  published: PlanVersionStatus.PUBLISHED,
  archived: PlanVersionStatus.ARCHIVED,
};

export function versionToProto(v: PlanVersionSpec): PlanVersion {
  return create(PlanVersionSchema, {
    version: v.version,
    status: STATUS_TO_PROTO[v.status],
    currency: v.currency,
    intervalMonths: v.intervalMonths,
    charges: v.charges.map(chargeToProto),
    minimumCommitmentAmount: v.minimumCommitmentAmount,
    spendingCapAmount: v.spendingCapAmount,
    publishTime: tsOf(v.publishTimeMs),
  });
}

export function planToProto(p: PlanSpec): Plan {
  return create(PlanSchema, { planId: p.planId, name: p.name, versions: p.versions.map(versionToProto) });
}

export function customerOf(c: PbCustomer | undefined, nowMs: number): Customer {
  if (c === undefined) throw invalid("customer", "is required");
  return {
    customerId: c.customerId,
    name: c.name,
    currency: c.currency,
    billingAnchorMs: msOrNull(c.billingAnchor, "customer.billing_anchor") ?? Number.NaN,
    timeZone: c.timeZone === "" ? "UTC" : c.timeZone,
    createTimeMs: nowMs,
  };
}

export function customerToProto(c: Customer): PbCustomer {
  return create(CustomerSchema, {
    customerId: c.customerId,
    name: c.name,
    currency: c.currency,
    billingAnchor: timestampFromMs(c.billingAnchorMs),
    timeZone: c.timeZone,
    createTime: timestampFromMs(c.createTimeMs),
  });
}

export function subscriptionToProto(s: Subscription): PbSubscription {
  return create(SubscriptionSchema, {
    subscriptionId: s.subscriptionId,
    customerId: s.customerId,
    phases: s.phases.map((p) => ({ planId: p.planId, planVersion: p.planVersion, startTime: tsOf(p.startMs), endTime: tsOf(p.endMs) })),
    seatChanges: s.seatChanges.map((c) => ({ changeId: c.changeId, seats: c.seats, effectiveTime: tsOf(c.effectiveMs) })),
    startTime: tsOf(s.startMs),
    endTime: tsOf(s.endMs),
  });
}

export function overrideOf(o: PbPriceOverride | undefined): PriceOverride & { base: Charge | undefined } {
  if (o === undefined) throw invalid("price_override", "is required");
  if (o.charge === undefined) throw invalid("price_override.charge", "is required");
  return {
    overrideId: o.overrideId,
    customerId: o.customerId,
    chargeId: o.chargeId,
    pricing: pricingOf(o.charge, "price_override.charge"),
    includedQuantity: u64(o.charge.includedQuantity),
    startMs: msOrNull(o.startTime, "price_override.start_time") ?? Number.NaN,
    endMs: msOrNull(o.endTime, "price_override.end_time"),
    base: o.charge,
  };
}

export function overrideToProto(o: PriceOverride): PbPriceOverride {
  return create(PriceOverrideSchema, {
    overrideId: o.overrideId,
    customerId: o.customerId,
    chargeId: o.chargeId,
    charge: { chargeId: o.chargeId, includedQuantity: o.includedQuantity === "" ? 0n : BigInt(o.includedQuantity), pricing: pricingToProto(o.pricing) },
    startTime: tsOf(o.startMs),
    endTime: tsOf(o.endMs),
  });
}

export function costRateOf(r: CostRate, field: string): CostRateSpec {
  return {
    provider: r.provider,
    model: r.model,
    metric: r.metric,
    unitPrice: unitPriceOf(r.unitPrice),
    currency: r.currency,
    effectiveMs: msOrNull(r.effectiveTime, `${field}.effective_time`) ?? Number.NaN,
    scope: r.scope === CostRateScope.GLOBAL ? "global" : "tenant",
  };
}

export function costRateToProto(r: CostRateSpec): CostRate {
  return create(CostRateSchema, {
    provider: r.provider,
    model: r.model,
    metric: r.metric,
    unitPrice: unitPriceToProto(r.unitPrice),
    currency: r.currency,
    effectiveTime: timestampFromMs(r.effectiveMs),
    scope: r.scope === "global" ? CostRateScope.GLOBAL : CostRateScope.TENANT,
  });
}

type PropLike = { kind: { case: "stringValue"; value: string } | { case: "intValue"; value: bigint } | { case: "decimalValue"; value: string } | { case: "boolValue"; value: boolean } | { case: undefined; value?: undefined } };

function propsOf(m: Record<string, PropLike>): Record<string, PropValue> {
  const out: Record<string, PropValue> = {};
  for (const [k, v] of Object.entries(m)) {
    switch (v.kind.case) {
      case "stringValue":
        out[k] = { kind: "string", value: v.kind.value };
        break;
      case "intValue":
        out[k] = { kind: "int", value: v.kind.value };
        break;
      case "decimalValue":
        out[k] = { kind: "decimal", value: v.kind.value };
        break;
      case "boolValue":
        out[k] = { kind: "bool", value: v.kind.value };
        break;
      default:
        break;
    }
  }
  return out;
}

/** RatingInput: a metering event with what the consumer needs beside it. */
export interface RatingInput {
  event: UsageEvent;
  sequence: bigint;
  traceparent: string;
  tracestate: string;
}

/** storedEventOf: a metering StoredEvent -> the event rating sees. */
export function storedEventOf(s: StoredEvent, nowMs: number): RatingInput {
  const e = s.event;
  const tsMs = e?.timestamp !== undefined ? timestampMs(e.timestamp) : s.receiveTime !== undefined ? timestampMs(s.receiveTime) : nowMs;
  return {
    event: { tenant: s.tenant, eventId: e?.id ?? "", customerId: e?.customerId ?? "", type: e?.type ?? "", timestampMs: tsMs, properties: propsOf((e?.properties ?? {}) as Record<string, PropLike>) },
    sequence: s.sequence,
    traceparent: e?.traceContext?.traceparent ?? "",
    tracestate: e?.traceContext?.tracestate ?? "",
  };
}

/** quoteEventOf: a Quote request's event -> the event rating sees. */
export function quoteEventOf(tenant: string, e: PbUsageEvent | undefined, nowMs: number): UsageEvent {
  if (e === undefined) throw invalid("event", "is required");
  return {
    tenant,
    eventId: e.eventId,
    customerId: e.customerId,
    type: e.type,
    timestampMs: msOrNull(e.timestamp, "event.timestamp") ?? nowMs,
    properties: propsOf(e.properties as Record<string, PropertyValue & PropLike>),
  };
}

export const LINE_STATUS: Record<LineStatus, RatedLineStatus> = {
  final: RatedLineStatus.FINAL,
  provisional: RatedLineStatus.PROVISIONAL,
  pending: RatedLineStatus.PENDING,
  clawed_back: RatedLineStatus.CLAWED_BACK,
  unpriced: RatedLineStatus.UNPRICED,
  cost_only: RatedLineStatus.COST_ONLY,
};

/**
 * ratedEventToProto: a "pending" outcome line shows its task's current state (confirmed after
 * the verification window -> final; reversed -> clawed back) when outcomeStatus knows it.
 */
export function ratedEventToProto(r: RatedEventResult, rateTimeMs: number, nowMs: number, outcomeStatus?: (chargeId: string) => LineStatus | undefined): RatedEvent {
  return create(RatedEventSchema, {
    eventId: r.eventId,
    customerId: r.customerId,
    eventType: r.eventType,
    timestamp: timestampFromMs(r.timestampMs),
    subscriptionId: r.subscriptionId,
    rateTime: timestampFromMs(rateTimeMs),
    lines: r.lines.map((l) => {
      let status = l.status;
      if (status === "pending") status = outcomeStatus?.(l.chargeId) ?? status;
      return create(RatedLineSchema, {
        chargeId: l.chargeId,
        dimensions: { ...l.dimensions },
        quantity: l.quantity,
        priceNanos: l.priceNanos,
        unit: l.unit,
        costNanos: l.costNanos,
        costUnit: l.costUnit,
        status: LINE_STATUS[status],
        reason: l.reason,
        attributedCostNanos: l.attributedCostNanos,
        priceValueNanos: l.priceValueNanos,
      });
    }),
  });
}

const KIND_TO_PROTO = { margin_below: GuardrailKind.MARGIN_BELOW, cost_mix_shift: GuardrailKind.COST_MIX_SHIFT } as const;

export function ruleOf(r: GuardrailRule | undefined): GuardrailRuleRow {
  if (r === undefined) throw invalid("rule", "is required");
  const kind = r.kind === GuardrailKind.MARGIN_BELOW ? "margin_below" : r.kind === GuardrailKind.COST_MIX_SHIFT ? "cost_mix_shift" : null;
  if (kind === null) throw invalid("rule.kind", "must be GUARDRAIL_KIND_MARGIN_BELOW or GUARDRAIL_KIND_COST_MIX_SHIFT");
  return { ruleId: r.ruleId, kind, thresholdBps: r.thresholdBps, windowSeconds: r.windowSeconds, customerId: r.customerId, model: r.model };
}

export function ruleToProto(r: GuardrailRuleRow): GuardrailRule {
  return create(GuardrailRuleSchema, { ruleId: r.ruleId, kind: KIND_TO_PROTO[r.kind], thresholdBps: r.thresholdBps, windowSeconds: r.windowSeconds, customerId: r.customerId, model: r.model });
}

export function alertToProto(a: AlertRow): Alert {
  return create(AlertSchema, {
    alertId: a.alertId,
    ruleId: a.ruleId,
    customerId: a.customerId,
    kind: KIND_TO_PROTO[a.kind],
    observedBps: a.observedBps,
    thresholdBps: a.thresholdBps,
    revenueNanos: a.revenueNanos,
    costNanos: a.costNanos,
    unit: a.unit,
    windowStart: timestampFromMs(a.windowStartMs),
    windowEnd: timestampFromMs(a.windowEndMs),
    raiseTime: timestampFromMs(a.raiseTimeMs),
    message: a.message,
  });
}

export { timestampDate };
