import { AMOUNT_NANOS_MAX, Rate, currency, isUnitCode } from "@nanobill/money";
import { invalid, withField } from "./errors.js";
import {
  CHARGE_ID_CHARS_MAX,
  CHARGES_PER_VERSION_MAX,
  CREDIT_TIER_VALUES_MAX,
  CREDIT_TIERS_MAX,
  DIMENSION_PROPERTIES_MAX,
  DIMENSION_VALUE_CHARS_MAX,
  INTERVAL_MONTHS_ALLOWED,
  MATRIX_CELLS_MAX,
  NAME_CHARS_MAX,
  QUANTITY_PROPERTIES_MAX,
  TIERS_MAX,
  VERIFICATION_WINDOW_SECONDS_MAX,
} from "../limits.js";
import {
  EVENTS_METRIC,
  METRIC,
  dimsKeyOf,
  type ChargeSpec,
  type PlanVersionSpec,
  type PricingSpec,
  type TierSpec,
  type UnitPriceSpec,
  type UsageSpec,
} from "./types.js";

/**
 * Compilation: every decimal of a charge is parsed ONCE into an exact integer rational (a
 * @nanobill/money Rate: nanos per unit of quantity, num/den), so that the per-event hot path is
 * bigint multiply + divide only and decimal.js never runs while rating.
 */

/** CompiledTier: tier i covers quantities (from, upTo]; upTo null = unbounded. */
export interface CompiledTier {
  from: bigint;
  upTo: bigint | null;
  rate: Rate;
  flat: Rate; // exact flat fee (nanos per 1)
}

export type CompiledPricing =
  | { kind: "per_unit"; rate: Rate }
  | { kind: "graduated" | "volume"; tiers: CompiledTier[] }
  | { kind: "package"; size: bigint; packagePrice: Rate; free: bigint }
  | { kind: "percentage"; amountProperty: string; percent: Rate; fixed: Rate | null; min: Rate | null; max: Rate | null }
  | { kind: "matrix"; cells: Array<{ match: Array<[string, string]>; rate: Rate }>; defaultRate: Rate | null; cache: Map<string, Rate | null> }
  | { kind: "dynamic"; priceProperty: string }
  | { kind: "flat"; amount: Rate }
  | { kind: "seats"; perSeat: Rate }
  | {
      kind: "outcome";
      amount: Rate;
      conditionProperty: string;
      conditionValue: string;
      windowMs: number;
      reversalEventType: string;
      taskIdProperty: string;
      attemptEventTypes: ReadonlySet<string>;
    }
  | { kind: "credits"; tierProperty: string; byValue: Map<string, Rate>; defaultRate: Rate | null };

/**
 * ChargeMode: how a charge books.
 *  - "event": each line priced on its own (exact rational, rounded with a carried remainder).
 *  - "period": priced on the running period total (tiers, packages, allowances): each event books
 *    round(F(total after)) - round(F(total before)); provisional per event, exact in sum.
 *  - "recurring": not event driven (flat fees, seats); priced by RatePeriod.
 */
export type ChargeMode = "event" | "period" | "recurring";

export interface CompiledCharge {
  spec: ChargeSpec;
  chargeId: string;
  unit: string;
  usage: UsageSpec | null;
  included: bigint;
  mode: ChargeMode;
  pricing: CompiledPricing;
  /** dimOrder: the line dimension names (dimension properties and "metric") sorted, for keys. */
  dimOrder: string[];
}

export const CHARGE_ID_RE = new RegExp(`^[a-z0-9_]{1,${CHARGE_ID_CHARS_MAX}}$`);
const PROPERTY_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const UINT_RE = /^(0|[1-9][0-9]{0,18})$/;

/** parseCount: a non-negative integer string ("" = def) to bigint, at most int64. */
export function parseCount(s: string, field: string, def: bigint): bigint {
  if (s === "") return def;
  if (!UINT_RE.test(s)) throw invalid(field, `must be a non-negative integer, got ${JSON.stringify(s)}`);
  const v = BigInt(s);
  if (v > 9_223_372_036_854_775_807n) throw invalid(field, "must fit in int64");
  return v;
}

/**
 * checkAmountBound: one money amount (a fee, a price for per_quantity units, a minimum, a cap, in
 * nanos of the unit: rate x per) must be at most AMOUNT_NANOS_MAX (10^18 nanos = 10^9 units), the
 * bound of @nanobill/money on a single amount; a larger one would overflow int64 sums downstream.
 */
function checkAmountBound(r: Rate, per: bigint, field: string): Rate {
  if (r.num * per > AMOUNT_NANOS_MAX * r.den) {
    throw invalid(field, `must be at most ${AMOUNT_NANOS_MAX / 1_000_000_000n} (AMOUNT_NANOS_MAX ${AMOUNT_NANOS_MAX} nanos), got ${r.toDecimalString()} nanos`);
  }
  return r;
}

/** compileUnitPrice: a decimal per perQuantity -> exact Rate (non-negative, amount bounded). */
export function compileUnitPrice(p: UnitPriceSpec | null | undefined, field: string): Rate {
  if (p == null) throw invalid(field, "is required");
  const per = parseCount(p.perQuantity, `${field}.per_quantity`, 1n);
  const perQuantity = per === 0n ? 1n : per;
  if (p.amount === "") throw invalid(`${field}.amount`, "is required");
  const r = withField(`${field}.amount`, () => Rate.parse(p.amount, "", { perQuantity }));
  return checkAmountBound(r, perQuantity, `${field}.amount`);
}

/** compileAmount: a decimal amount (one unit) -> exact Rate, at most AMOUNT_NANOS_MAX; "" -> null when optional. */
export function compileAmount(s: string, field: string, required: boolean): Rate | null {
  if (s === "") {
    if (required) throw invalid(field, "is required");
    return null;
  }
  return checkAmountBound(withField(field, () => Rate.parse(s, "")), 1n, field);
}

function checkProperty(name: string, field: string): void {
  if (!PROPERTY_RE.test(name)) throw invalid(field, `must be 1-128 characters of [A-Za-z0-9_.:-], got ${JSON.stringify(name)}`);
}

function compileTiers(tiers: TierSpec[], field: string): CompiledTier[] {
  if (tiers.length === 0) throw invalid(field, "must have at least one tier");
  if (tiers.length > TIERS_MAX) throw invalid(field, `must have at most ${TIERS_MAX} tiers`);
  const out: CompiledTier[] = [];
  let prev = 0n;
  for (let i = 0; i < tiers.length; i++) {
    const t = tiers[i]!;
    const f = `${field}[${i}]`;
    const upToRaw = parseCount(t.upTo, `${f}.up_to`, 0n);
    const last = i === tiers.length - 1;
    const upTo = upToRaw === 0n ? null : upToRaw;
    if (upTo === null && !last) throw invalid(`${f}.up_to`, "only the last tier may be unbounded (0)");
    if (upTo !== null && last) throw invalid(`${f}.up_to`, "the last tier must be unbounded (0)");
    if (upTo !== null && upTo <= prev) {
      throw invalid(`${f}.up_to`, `tiers must be sorted without overlap: ${upTo} must be greater than the previous bound ${prev}`);
    }
    const rate = compileUnitPrice(t.unitPrice, `${f}.unit_price`);
    const flat = compileAmount(t.flatAmount, `${f}.flat_amount`, false) ?? Rate.fromFraction(0n, 1n);
    out.push({ from: prev, upTo, rate, flat });
    if (upTo !== null) prev = upTo;
  }
  return out;
}

function metricsOf(usage: UsageSpec): string[] {
  return usage.quantityProperties.length === 0 ? [EVENTS_METRIC] : usage.quantityProperties;
}

function compileUsage(u: UsageSpec | null, field: string): UsageSpec {
  if (u === null) throw invalid(field, "is required for usage charges");
  if (u.meter === "") throw invalid(`${field}.meter`, "is required");
  checkProperty(u.meter, `${field}.meter`);
  if (u.eventType === "") throw invalid(`${field}.event_type`, "is required");
  if (u.eventType.length > 128) throw invalid(`${field}.event_type`, "must be at most 128 characters");
  if (u.quantityProperties.length > QUANTITY_PROPERTIES_MAX) {
    throw invalid(`${field}.quantity_properties`, `must have at most ${QUANTITY_PROPERTIES_MAX} entries`);
  }
  if (u.dimensionProperties.length > DIMENSION_PROPERTIES_MAX) {
    throw invalid(`${field}.dimension_properties`, `must have at most ${DIMENSION_PROPERTIES_MAX} entries`);
  }
  const seen = new Set<string>();
  u.quantityProperties.forEach((p, i) => {
    checkProperty(p, `${field}.quantity_properties[${i}]`);
    if (seen.has(p)) throw invalid(`${field}.quantity_properties[${i}]`, `duplicate property ${JSON.stringify(p)}`);
    seen.add(p);
  });
  const dseen = new Set<string>();
  u.dimensionProperties.forEach((p, i) => {
    checkProperty(p, `${field}.dimension_properties[${i}]`);
    if (p === METRIC) throw invalid(`${field}.dimension_properties[${i}]`, `"${METRIC}" is reserved for the quantity property name`);
    if (dseen.has(p)) throw invalid(`${field}.dimension_properties[${i}]`, `duplicate property ${JSON.stringify(p)}`);
    dseen.add(p);
  });
  return u;
}

const USAGE_KINDS = new Set(["per_unit", "graduated", "volume", "package", "percentage", "matrix", "dynamic", "outcome", "credits"]);

function compilePricing(p: PricingSpec, usage: UsageSpec | null, field: string): CompiledPricing {
  switch (p.kind) {
    case "per_unit":
      return { kind: "per_unit", rate: compileUnitPrice(p.unitPrice, `${field}.per_unit.unit_price`) };
    case "graduated":
    case "volume":
      return { kind: p.kind, tiers: compileTiers(p.tiers, `${field}.${p.kind}.tiers`) };
    case "package": {
      const size = parseCount(p.packageSize, `${field}.package.package_size`, 0n);
      if (size === 0n) throw invalid(`${field}.package.package_size`, "must be greater than 0");
      const packagePrice = compileAmount(p.packageAmount, `${field}.package.package_amount`, true)!;
      const free = parseCount(p.freeQuantity, `${field}.package.free_quantity`, 0n);
      return { kind: "package", size, packagePrice, free };
    }
    case "percentage": {
      const f = `${field}.percentage`;
      if (p.amountProperty === "") throw invalid(`${f}.amount_property`, "is required");
      checkProperty(p.amountProperty, `${f}.amount_property`);
      const percent = compileAmount(p.percent, `${f}.percent`, true)!;
      const min = compileAmount(p.minAmount, `${f}.min_amount`, false);
      const max = compileAmount(p.maxAmount, `${f}.max_amount`, false);
      if (min !== null && max !== null && min.num * max.den > max.num * min.den) {
        throw invalid(`${f}.max_amount`, "must not be less than min_amount");
      }
      return { kind: "percentage", amountProperty: p.amountProperty, percent, fixed: compileAmount(p.fixedAmount, `${f}.fixed_amount`, false), min, max };
    }
    case "matrix": {
      const f = `${field}.matrix`;
      if (p.cells.length > MATRIX_CELLS_MAX) throw invalid(`${f}.cells`, `must have at most ${MATRIX_CELLS_MAX} cells`);
      if (p.cells.length === 0 && p.defaultPrice === null) throw invalid(`${f}.cells`, "must have at least one cell or a default_price");
      const u = usage!;
      const dims = new Set(u.dimensionProperties);
      const metrics = new Set(metricsOf(u));
      const seen = new Set<string>();
      const cells = p.cells.map((c, i) => {
        const cf = `${f}.cells[${i}]`;
        const keys = Object.keys(c.match).sort();
        for (const k of keys) {
          const v = c.match[k]!;
          if (k === METRIC) {
            if (!metrics.has(v)) {
              throw invalid(`${cf}.match.${k}`, `unknown metric ${JSON.stringify(v)}: must be one of the quantity properties (${[...metrics].join(", ")})`);
            }
          } else if (!dims.has(k)) {
            throw invalid(`${cf}.match`, `unknown dimension ${JSON.stringify(k)}: must be "${METRIC}" or one of the dimension properties (${[...dims].join(", ")})`);
          }
          if (v.length === 0 || v.length > DIMENSION_VALUE_CHARS_MAX) {
            throw invalid(`${cf}.match.${k}`, `must be 1-${DIMENSION_VALUE_CHARS_MAX} characters`);
          }
        }
        const key = dimsKeyOf(c.match);
        if (seen.has(key)) throw invalid(`${cf}.match`, "duplicates an earlier cell");
        seen.add(key);
        return { match: keys.map((k) => [k, c.match[k]!] as [string, string]), rate: compileUnitPrice(c.unitPrice, `${cf}.unit_price`) };
      });
      const defaultRate = p.defaultPrice === null ? null : compileUnitPrice(p.defaultPrice, `${f}.default_price`);
      return { kind: "matrix", cells, defaultRate, cache: new Map() };
    }
    case "dynamic":
      if (p.priceProperty === "") throw invalid(`${field}.dynamic.price_property`, "is required");
      checkProperty(p.priceProperty, `${field}.dynamic.price_property`);
      return { kind: "dynamic", priceProperty: p.priceProperty };
    case "flat":
      return { kind: "flat", amount: compileAmount(p.amount, `${field}.flat.amount`, true)! };
    case "seats":
      return { kind: "seats", perSeat: compileAmount(p.perSeatAmount, `${field}.seats.per_seat_amount`, true)! };
    case "outcome": {
      const f = `${field}.outcome`;
      const amount = compileAmount(p.amount, `${f}.amount`, true)!;
      const windowS = parseCount(p.verificationWindowSeconds, `${f}.verification_window_seconds`, 0n);
      if (windowS > BigInt(VERIFICATION_WINDOW_SECONDS_MAX)) {
        throw invalid(`${f}.verification_window_seconds`, `must be at most ${VERIFICATION_WINDOW_SECONDS_MAX}`);
      }
      if (p.conditionProperty !== "") checkProperty(p.conditionProperty, `${f}.condition_property`);
      const needsTask = p.reversalEventType !== "" || p.attemptEventTypes.length > 0;
      if (needsTask && p.taskIdProperty === "") {
        throw invalid(`${f}.task_id_property`, "is required with reversal_event_type or attempt_event_types");
      }
      if (p.taskIdProperty !== "") checkProperty(p.taskIdProperty, `${f}.task_id_property`);
      if (p.reversalEventType !== "" && windowS === 0n) {
        throw invalid(`${f}.verification_window_seconds`, "must be greater than 0 with a reversal_event_type");
      }
      return {
        kind: "outcome",
        amount,
        conditionProperty: p.conditionProperty,
        conditionValue: p.conditionValue,
        windowMs: Number(windowS) * 1000,
        reversalEventType: p.reversalEventType,
        taskIdProperty: p.taskIdProperty,
        attemptEventTypes: new Set(p.attemptEventTypes),
      };
    }
    case "credits": {
      const f = `${field}.credits`;
      if (p.tierProperty === "") throw invalid(`${f}.tier_property`, "is required");
      checkProperty(p.tierProperty, `${f}.tier_property`);
      if (p.tiers.length > CREDIT_TIERS_MAX) throw invalid(`${f}.tiers`, `must have at most ${CREDIT_TIERS_MAX} tiers`);
      const byValue = new Map<string, Rate>();
      p.tiers.forEach((t, i) => {
        const tf = `${f}.tiers[${i}]`;
        if (t.values.length === 0) throw invalid(`${tf}.values`, "must have at least one value");
        if (t.values.length > CREDIT_TIER_VALUES_MAX) throw invalid(`${tf}.values`, `must have at most ${CREDIT_TIER_VALUES_MAX} values`);
        const rate = withField(`${tf}.credits_per_unit`, () => {
          if (t.creditsPerUnit === "") throw invalid(`${tf}.credits_per_unit`, "is required");
          return Rate.parse(t.creditsPerUnit, "");
        });
        checkAmountBound(rate, 1n, `${tf}.credits_per_unit`);
        t.values.forEach((v, j) => {
          if (byValue.has(v)) throw invalid(`${tf}.values[${j}]`, `value ${JSON.stringify(v)} is already in another tier`);
          byValue.set(v, rate);
        });
      });
      const defaultRate = compileAmount(p.defaultCreditsPerUnit, `${f}.default_credits_per_unit`, false);
      if (byValue.size === 0 && defaultRate === null) throw invalid(`${f}.tiers`, "must have at least one tier or a default_credits_per_unit");
      return { kind: "credits", tierProperty: p.tierProperty, byValue, defaultRate };
    }
    default: {
      const never: never = p;
      throw invalid(`${field}.pricing`, `unknown charge model ${JSON.stringify((never as { kind: string }).kind)}`);
    }
  }
}

/** modeOf: how a compiled charge books (see ChargeMode). */
function modeOf(kind: CompiledPricing["kind"], included: bigint): ChargeMode {
  switch (kind) {
    case "flat":
    case "seats":
      return "recurring";
    case "graduated":
    case "volume":
    case "package":
      return "period";
    case "per_unit":
      return included > 0n ? "period" : "event";
    default:
      return "event";
  }
}

/**
 * compileCharge: validates one charge (field names it, e.g. "version.charges[2]") and compiles
 * its prices. planCurrency: currency charges must be priced in it; credits charges in a credit
 * type ("cr_...").
 */
export function compileCharge(spec: ChargeSpec, field: string, planCurrency: string): CompiledCharge {
  if (!CHARGE_ID_RE.test(spec.chargeId)) {
    throw invalid(`${field}.charge_id`, `must be 1-${CHARGE_ID_CHARS_MAX} characters of [a-z0-9_], got ${JSON.stringify(spec.chargeId)}`);
  }
  if (spec.name.length > NAME_CHARS_MAX) throw invalid(`${field}.name`, `must be at most ${NAME_CHARS_MAX} characters`);
  if (!isUnitCode(spec.unit)) throw invalid(`${field}.unit`, `must be an ISO 4217 code or a credit type id (cr_...), got ${JSON.stringify(spec.unit)}`);
  const kind = spec.pricing.kind;
  const isCredit = spec.unit.startsWith("cr_");
  if (kind === "credits" && !isCredit) throw invalid(`${field}.unit`, "a credits charge must be priced in a credit type (cr_...)");
  if (kind !== "credits" && !isCredit && spec.unit !== planCurrency) {
    throw invalid(`${field}.unit`, `must be the plan currency ${planCurrency} (or a credit type), got ${JSON.stringify(spec.unit)}`);
  }
  const usage = USAGE_KINDS.has(kind) ? compileUsage(spec.usage, `${field}.usage`) : null;
  if (!USAGE_KINDS.has(kind) && spec.usage !== null && spec.usage.eventType !== "") {
    throw invalid(`${field}.usage`, `must be empty for ${kind} charges`);
  }
  const included = parseCount(spec.includedQuantity, `${field}.included_quantity`, 0n);
  if (included > 0n && kind !== "per_unit" && kind !== "graduated" && kind !== "volume") {
    throw invalid(`${field}.included_quantity`, `is supported for per_unit, graduated and volume charges, not ${kind}`);
  }
  const pricing = compilePricing(spec.pricing, usage, field);
  const dimOrder = usage === null ? [] : [...usage.dimensionProperties, METRIC].sort();
  return { spec, chargeId: spec.chargeId, unit: spec.unit, usage, included, mode: modeOf(kind, included), pricing, dimOrder };
}

/** CompiledVersion: a validated plan version with compiled charges and period amounts. */
export interface CompiledVersion {
  spec: PlanVersionSpec;
  charges: CompiledCharge[];
  byEventType: Map<string, CompiledCharge[]>; // usage event type, outcome reversal and attempt types
  minimum: Rate | null;
  cap: Rate | null;
}

/** compilePlanVersion: validates and compiles a plan version (field prefixes every error). */
export function compilePlanVersion(spec: PlanVersionSpec, field: string): CompiledVersion {
  withField(`${field}.currency`, () => currency(spec.currency, ""));
  if (!INTERVAL_MONTHS_ALLOWED.includes(spec.intervalMonths)) {
    throw invalid(`${field}.interval_months`, `must be one of ${INTERVAL_MONTHS_ALLOWED.join(", ")}, got ${spec.intervalMonths}`);
  }
  if (spec.charges.length > CHARGES_PER_VERSION_MAX) throw invalid(`${field}.charges`, `must have at most ${CHARGES_PER_VERSION_MAX} charges`);
  const ids = new Set<string>();
  const charges = spec.charges.map((c, i) => {
    const cc = compileCharge(c, `${field}.charges[${i}]`, spec.currency);
    if (ids.has(cc.chargeId)) throw invalid(`${field}.charges[${i}].charge_id`, `duplicate charge id ${JSON.stringify(cc.chargeId)}`);
    ids.add(cc.chargeId);
    return cc;
  });
  return {
    spec,
    charges,
    byEventType: indexByEventType(charges),
    minimum: compileAmount(spec.minimumCommitmentAmount, `${field}.minimum_commitment_amount`, false),
    cap: compileAmount(spec.spendingCapAmount, `${field}.spending_cap_amount`, false),
  };
}

/**
 * checkWholeNanoAmounts: a plan version's period amounts (minimum commitment, spending cap) are
 * whole nanos (at most 9 significant fraction digits): invoicing bills them as they are and
 * refuses a finer one, which would block every invoice of the subscription. Checked when a
 * version is written or published (InvalidArgument naming the field), not when a stored
 * published version is compiled for rating.
 */
export function checkWholeNanoAmounts(spec: PlanVersionSpec, field: string): void {
  for (const [s, name] of [
    [spec.minimumCommitmentAmount, "minimum_commitment_amount"],
    [spec.spendingCapAmount, "spending_cap_amount"],
  ] as const) {
    const r = compileAmount(s, `${field}.${name}`, false);
    if (r !== null && r.den !== 1n) throw invalid(`${field}.${name}`, `must be whole nanos (at most 9 fraction digits), got ${JSON.stringify(s)}`);
  }
}

/** indexByEventType: charges by the event types they react to. */
export function indexByEventType(charges: CompiledCharge[]): Map<string, CompiledCharge[]> {
  const m = new Map<string, CompiledCharge[]>();
  const add = (t: string, c: CompiledCharge): void => {
    const l = m.get(t);
    if (l === undefined) m.set(t, [c]);
    else if (!l.includes(c)) l.push(c);
  };
  for (const c of charges) {
    if (c.usage !== null) add(c.usage.eventType, c);
    if (c.pricing.kind === "outcome") {
      if (c.pricing.reversalEventType !== "") add(c.pricing.reversalEventType, c);
      for (const t of c.pricing.attemptEventTypes) add(t, c);
    }
  }
  return m;
}
