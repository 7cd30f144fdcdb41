// Meters: definition rules, filters, group values and the value an event contributes.
import {
  FILTER_VALUES_MAX,
  METER_DESCRIPTION_BYTES_MAX,
  METER_FILTERS_MAX,
  METER_GROUP_BY_MAX,
  PROPERTY_KEY_BYTES_MAX,
  EVENT_TYPE_LENGTH_MAX,
  PROPERTY_STRING_BYTES_MAX,
} from "../limits.js";
import { fromInt, parseDecimal, type Scaled } from "./decimal.js";
import { isReservedKey, isStorableText, ownProperty, propertyText, type PropertyValue } from "./event.js";
import { createHash } from "node:crypto";

/**
 * Group-by values and unique_count values are stored in index keys (usage_buckets and
 * usage_unique_values primary keys; PostgreSQL refuses index rows above ~2.7 KB). A value whose
 * JSON text is longer than this many bytes is stored, grouped and reported as "sha256:<hex>" of
 * the value (distinct values stay distinct), so 8 group-by values always fit.
 */
export const KEY_VALUE_BYTES_MAX = 200;

/** The value as stored in a key: itself, or "sha256:<64 hex>" when its JSON is too long. */
export function keyValueOf(text: string): string {
  if (text.length * 6 + 2 <= KEY_VALUE_BYTES_MAX || Buffer.byteLength(JSON.stringify(text), "utf8") <= KEY_VALUE_BYTES_MAX) return text;
  return `sha256:${createHash("sha256").update(text, "utf8").digest("hex")}`;
}

export const AGGREGATIONS = ["count", "sum", "max", "min", "unique_count", "latest"] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];
export const FILTER_OPERATORS = ["in", "not_in", "exists", "not_exists"] as const;
export type FilterOperator = (typeof FILTER_OPERATORS)[number];

export interface PropertyFilter {
  property: string;
  operator: FilterOperator;
  values: string[];
}

export interface MeterDefinition {
  id: string;
  eventType: string;
  aggregation: Aggregation;
  /** Empty for count. */
  valueProperty: string;
  filters: PropertyFilter[];
  groupBy: string[];
  description: string;
}

export type MeterCheck = { ok: true; meter: MeterDefinition } | { ok: false; field: string; rule: string };

const METER_ID_RE = /^[a-z][a-z0-9_]{0,63}$/;
const KEY_RE = /^[A-Za-z_][A-Za-z0-9._\-]*$/;
const TYPE_RE = new RegExp(`^[A-Za-z0-9._:/\\-]{1,${EVENT_TYPE_LENGTH_MAX}}$`);
const encoder = new TextEncoder();

/** A property key a meter may name (`__proto__` is refused: it is never an event property). */
function keyOk(k: string): boolean {
  return KEY_RE.test(k) && !isReservedKey(k) && encoder.encode(k).length <= PROPERTY_KEY_BYTES_MAX;
}
const KEY_RULE = "a property key ([A-Za-z_][A-Za-z0-9._-]*, at most 128 bytes, not __proto__)";

/** Checks a meter definition; the first broken rule names the field (proto names). */
export function validateMeter(m: MeterDefinition): MeterCheck {
  const bad = (field: string, rule: string): MeterCheck => ({ ok: false, field, rule });
  if (!METER_ID_RE.test(m.id)) return bad("meter.id", "must match [a-z][a-z0-9_]{0,63}");
  if (!TYPE_RE.test(m.eventType)) return bad("meter.event_type", `1-${EVENT_TYPE_LENGTH_MAX} characters of [A-Za-z0-9._:/-]`);
  if (!(AGGREGATIONS as readonly string[]).includes(m.aggregation)) return bad("meter.aggregation", "is required");
  if (m.aggregation === "count") {
    if (m.valueProperty !== "") return bad("meter.value_property", "must be empty for count");
  } else if (!keyOk(m.valueProperty)) return bad("meter.value_property", `is required for this aggregation: ${KEY_RULE}`);
  if (m.filters.length > METER_FILTERS_MAX) return bad("meter.filters", `at most ${METER_FILTERS_MAX}`);
  for (const [i, f] of m.filters.entries()) {
    const check = validateFilter(f, `meter.filters[${i}]`);
    if (check) return bad(check.field, check.rule);
  }
  if (m.groupBy.length > METER_GROUP_BY_MAX) return bad("meter.group_by", `at most ${METER_GROUP_BY_MAX}`);
  const seen = new Set<string>();
  for (const [i, g] of m.groupBy.entries()) {
    if (!keyOk(g)) return bad(`meter.group_by[${i}]`, `must be ${KEY_RULE}`);
    if (seen.has(g)) return bad(`meter.group_by[${i}]`, "is repeated");
    seen.add(g);
  }
  if (!isStorableText(m.description)) return bad("meter.description", "must be well-formed text (no lone surrogate) without U+0000 (NUL)");
  if (encoder.encode(m.description).length > METER_DESCRIPTION_BYTES_MAX)
    return bad("meter.description", `at most ${METER_DESCRIPTION_BYTES_MAX} bytes`);
  return { ok: true, meter: m };
}

export function validateFilter(f: PropertyFilter, field: string): { field: string; rule: string } | undefined {
  if (!keyOk(f.property)) return { field: `${field}.property`, rule: `must be ${KEY_RULE}` };
  if (!(FILTER_OPERATORS as readonly string[]).includes(f.operator)) return { field: `${field}.operator`, rule: "is required" };
  if (f.operator === "in" || f.operator === "not_in") {
    if (f.values.length === 0) return { field: `${field}.values`, rule: "at least one value for IN / NOT_IN" };
    if (f.values.length > FILTER_VALUES_MAX) return { field: `${field}.values`, rule: `at most ${FILTER_VALUES_MAX}` };
    if (f.values.some((v) => encoder.encode(v).length > PROPERTY_STRING_BYTES_MAX || !isStorableText(v)))
      return { field: `${field}.values`, rule: `each at most ${PROPERTY_STRING_BYTES_MAX} bytes of well-formed text (no lone surrogate), without U+0000` };
  } else if (f.values.length > 0) return { field: `${field}.values`, rule: "must be empty for EXISTS / NOT_EXISTS" };
  return undefined;
}

/** Whether a filter matches a property text (undefined = absent). */
export function filterMatches(f: PropertyFilter, text: string | undefined): boolean {
  switch (f.operator) {
    case "in":
      return text !== undefined && f.values.includes(text);
    case "not_in":
      return text === undefined || !f.values.includes(text);
    case "exists":
      return text !== undefined;
    case "not_exists":
      return text === undefined;
  }
}

export function eventMatches(filters: PropertyFilter[], props: Record<string, PropertyValue>): boolean {
  for (const f of filters) {
    const v = ownProperty(props, f.property);
    if (!filterMatches(f, v === undefined ? undefined : propertyText(v))) return false;
  }
  return true;
}

/** The group values of an event for a meter (null where the property is absent). */
export function groupValuesOf(groupBy: string[], props: Record<string, PropertyValue>): (string | null)[] {
  return groupBy.map((g) => {
    const v = ownProperty(props, g);
    return v === undefined ? null : keyValueOf(propertyText(v));
  });
}

/** The stored key of group values (JSON array, in the meter's group_by order). */
export function groupKeyOf(values: (string | null)[]): string {
  return JSON.stringify(values);
}

export type Contribution =
  | { kind: "none" }
  | { kind: "count" }
  | { kind: "number"; value: Scaled }
  | { kind: "text"; value: string };

/** What an event (already of the meter's type) contributes: nothing, one count, a number or a text (unique_count). */
export function contributionOf(m: MeterDefinition, props: Record<string, PropertyValue>): Contribution {
  if (!eventMatches(m.filters, props)) return { kind: "none" };
  if (m.aggregation === "count") return { kind: "count" };
  const v = ownProperty(props, m.valueProperty);
  if (v === undefined) return { kind: "none" };
  if (m.aggregation === "unique_count") return { kind: "text", value: keyValueOf(propertyText(v)) };
  if (v.kind === "int") return { kind: "number", value: fromInt(v.value) };
  if (v.kind === "decimal") {
    const d = parseDecimal(v.value);
    return d === undefined ? { kind: "none" } : { kind: "number", value: d };
  }
  return { kind: "none" };
}

/** Same definition (for idempotent CreateMeter). */
export function sameDefinition(a: MeterDefinition, b: MeterDefinition): boolean {
  return JSON.stringify(canonicalMeter(a)) === JSON.stringify(canonicalMeter(b));
}

function canonicalMeter(m: MeterDefinition): unknown {
  return [m.id, m.eventType, m.aggregation, m.valueProperty, m.filters.map((f) => [f.property, f.operator, f.values]), m.groupBy, m.description];
}
