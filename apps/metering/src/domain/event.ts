// Usage events: validation (each rejection names the field and the rule), canonical form,
// content hash (duplicate vs conflict) and the stored encoding of properties. Pure: the clock
// is passed in as `nowUs`.
import { hash } from "node:crypto";
import {
  EVENT_TYPE_LENGTH_MAX,
  FUTURE_SKEW_MS_MAX,
  ID_LENGTH_MAX,
  PROPERTIES_BYTES_MAX,
  PROPERTIES_PER_EVENT_MAX,
  PROPERTY_KEY_BYTES_MAX,
  PROPERTY_STRING_BYTES_MAX,
  TRACESTATE_LENGTH_MAX,
} from "../limits.js";
import { formatDecimal, parseDecimal } from "./decimal.js";

export type PropertyValue =
  | { kind: "string"; value: string }
  | { kind: "int"; value: bigint }
  | { kind: "decimal"; value: string }
  | { kind: "bool"; value: boolean };

export interface TraceContext {
  traceparent: string;
  tracestate: string;
}

/** An event as received, before validation. */
export interface EventInput {
  id: string;
  customerId: string;
  type: string;
  /** Microseconds since the Unix epoch, an RFC 3339 string, or absent (= now). */
  timestamp?: bigint | string | undefined;
  /** An undefined value is a property whose oneof was not set. */
  properties: Record<string, PropertyValue | undefined>;
  traceContext?: TraceContext | undefined;
}

/** A valid event in canonical form (decimals canonical, timestamp in microseconds). */
export interface ValidEvent {
  id: string;
  customerId: string;
  type: string;
  timestampUs: bigint;
  properties: Record<string, PropertyValue>;
  traceparent: string;
  tracestate: string;
  /** Stored encoding of the properties (sorted keys). */
  propertiesJson: string;
  /** Hash of customer, type, timestamp and properties (not the trace context). */
  contentHash: string;
}

export interface Rejection {
  field: string;
  reason: string;
  message: string;
}

/**
 * A valid event, or the first broken rule. `late` is set when the event is well-formed but older
 * than the late-event limit: it must not be stored, yet a retry of an event stored before it got
 * that old is still a duplicate (the store answers DUPLICATE/CONFLICT if the id exists, else late).
 */
export type Validation = { ok: true; event: ValidEvent; late?: Rejection } | { ok: false; rejection: Rejection };

export interface ValidationContext {
  nowUs: bigint;
  /** Events older than nowUs - lateEventAgeUs are rejected with period_closed. */
  lateEventAgeUs: bigint;
  /** Trace context stored when the event carries none (the ingest call's). */
  defaultTraceContext?: TraceContext | undefined;
}

const ID_RE = new RegExp(`^[A-Za-z0-9._:\\-]{1,${ID_LENGTH_MAX}}$`);
const TYPE_RE = new RegExp(`^[A-Za-z0-9._:/\\-]{1,${EVENT_TYPE_LENGTH_MAX}}$`);
const KEY_RE = /^[A-Za-z_][A-Za-z0-9._\-]*$/;
const TRACEPARENT_RE = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const RFC3339_RE =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;
const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);
/** Timestamps from 1970-01-01 up to 9999-12-31 (microseconds). */
const TIMESTAMP_US_MAX = 253_402_300_799_999_999n;

/**
 * Property keys that are never accepted: `__proto__` is not an ordinary key in JavaScript objects
 * (assigning it replaces the prototype, so it would silently vanish) and is refused everywhere a
 * property key is named (event properties, meter keys, GenAI mapping properties).
 */
export function isReservedKey(key: string): boolean {
  return key === "__proto__";
}

/** Own-property lookup of an event property (never a value inherited from Object.prototype). */
export function ownProperty<V>(props: Readonly<Record<string, V>>, key: string): V | undefined {
  return Object.hasOwn(props, key) ? props[key] : undefined;
}

const LONE_SURROGATE_RE = /\p{Cs}/u;
/**
 * Whether a string can be stored as text/JSONB: well-formed UTF-16 (no lone surrogate, which
 * PostgreSQL's JSON parser refuses: String.prototype.isWellFormed) and without U+0000 (NUL, which
 * neither TEXT nor JSONB can hold).
 */
export function isStorableText(s: string): boolean {
  return !s.includes("\u0000") && !LONE_SURROGATE_RE.test(s);
}

/**
 * Text safe to echo in a result field or message: lone surrogates and control characters are
 * replaced by U+FFFD, then cut at a code point boundary to at most maxBytes of UTF-8.
 */
export function echoText(s: string, maxBytes: number): string {
  let out = "";
  let bytes = 0;
  for (const ch of s) {
    const c = /[\p{Cs}\p{Cc}]/u.test(ch) ? "\ufffd" : ch;
    const n = Buffer.byteLength(c, "utf8");
    if (bytes + n > maxBytes) break;
    out += c;
    bytes += n;
  }
  return out;
}

function reject(field: string, reason: string, rule: string): Validation {
  return { ok: false, rejection: { field, reason, message: `${field}: ${rule}` } };
}

/** Keys that hold counts (token counts and the like): non-negative int_value only. */
export function isCountProperty(key: string): boolean {
  return key === "tokens" || key.endsWith("_tokens") || key.endsWith("_count");
}

/** Parses an RFC 3339 timestamp to microseconds; undefined when malformed or out of range. */
export function parseRfc3339Us(s: string): bigint | undefined {
  const m = RFC3339_RE.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number];
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59) return undefined;
  const ms = Date.UTC(y, mo - 1, d, h, mi, se);
  const check = new Date(ms);
  if (check.getUTCFullYear() !== y || check.getUTCMonth() !== mo - 1 || check.getUTCDate() !== d) return undefined;
  let offsetMin = 0;
  const z = m[8]!;
  if (z !== "Z" && z !== "z") {
    const oh = Number(z.slice(1, 3));
    const om = Number(z.slice(4, 6));
    if (oh > 23 || om > 59) return undefined;
    offsetMin = (z[0] === "-" ? -1 : 1) * (oh * 60 + om);
  }
  const fracUs = BigInt((m[7] ?? "").padEnd(9, "0").slice(0, 6) || "0");
  return BigInt(ms - offsetMin * 60_000) * 1000n + fracUs;
}

/** Canonical text of a property value, used by filters and group-by ("1234", "0.5", "true"). */
export function propertyText(v: PropertyValue): string {
  switch (v.kind) {
    case "string":
      return v.value;
    case "int":
      return v.value.toString();
    case "decimal":
      return v.value;
    case "bool":
      return v.value ? "true" : "false";
  }
}

/**
 * The stored JSON encoding of properties: sorted keys, tagged values. Written directly (the same
 * text as JSON.stringify of the object with those keys in that order, encodePropertiesViaObject):
 * per event it cost more than the sha256. Keys that JSON.stringify would not keep in insertion
 * order (array indices, which objects list first) or drop (`__proto__`) take the object path, so the
 * text is the same for every input (event.test.ts checks both on random properties).
 */
/**
 * An object's keys in UTF-16 code unit order (the order of Array#sort without a comparator), by
 * insertion sort in place: an event has at most PROPERTIES_PER_EVENT_MAX keys, and Array#sort
 * allocated ~0.7 KB per event (heap profile of bench/ingest, 2026-11-30), a twelfth of the bytes
 * the server allocates per event.
 */
export function sortedKeys(o: object): string[] {
  const keys = Object.keys(o);
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i]!;
    let j = i - 1;
    while (j >= 0 && keys[j]! > k) {
      keys[j + 1] = keys[j]!;
      j--;
    }
    keys[j + 1] = k;
  }
  return keys;
}

export function encodeProperties(props: Record<string, PropertyValue>): string {
  const keys = sortedKeys(props);
  let out = "{";
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    if (k === "__proto__" || ARRAY_INDEX_RE.test(k)) return encodePropertiesViaObject(props);
    const v = props[k]!;
    if (i > 0) out += ",";
    out += jsonString(k);
    switch (v.kind) {
      case "string":
        out += `:{"s":${jsonString(v.value)}}`;
        break;
      case "int":
        out += `:{"i":"${v.value.toString()}"}`;
        break;
      case "decimal":
        out += `:{"d":${jsonString(v.value)}}`;
        break;
      case "bool":
        out += v.value ? `:{"b":true}` : `:{"b":false}`;
        break;
    }
  }
  return out + "}";
}

/** Characters JSON.stringify escapes (controls, quote, backslash) or may (surrogates: lone ones are escaped). */
const JSON_ESCAPED_RE = /[\u0000-\u001f"\\\ud800-\udfff]/;
/** JSON.stringify(s), without calling it for the usual string that needs no escape. */
const jsonString = (s: string): string => (JSON_ESCAPED_RE.test(s) ? JSON.stringify(s) : `"${s}"`);

/** Keys an object lists first, in numeric order (canonical integers up to 2^32 - 2; longer ones are not, but take the object path too). */
const ARRAY_INDEX_RE = /^(?:0|[1-9][0-9]*)$/;

/** encodeProperties through JSON.stringify of an object (the reference, and the path for unusual keys). */
export function encodePropertiesViaObject(props: Record<string, PropertyValue>): string {
  const keys = Object.keys(props).sort();
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    const v = props[k]!;
    switch (v.kind) {
      case "string":
        out[k] = { s: v.value };
        break;
      case "int":
        out[k] = { i: v.value.toString() };
        break;
      case "decimal":
        out[k] = { d: v.value };
        break;
      case "bool":
        out[k] = { b: v.value };
        break;
    }
  }
  return JSON.stringify(out);
}

/** Decodes the stored encoding (from a JSONB column, already parsed, or text). */
export function decodeProperties(stored: unknown): Record<string, PropertyValue> {
  const obj = (typeof stored === "string" ? JSON.parse(stored) : stored) as Record<string, Record<string, unknown>>;
  const out: Record<string, PropertyValue> = {};
  for (const [k, v] of Object.entries(obj)) {
    if ("s" in v) out[k] = { kind: "string", value: String(v.s) };
    else if ("i" in v) out[k] = { kind: "int", value: BigInt(String(v.i)) };
    else if ("d" in v) out[k] = { kind: "decimal", value: String(v.d) };
    else if ("b" in v) out[k] = { kind: "bool", value: v.b === true };
    else throw new Error(`stored property ${k} has an unknown encoding`);
  }
  return out;
}

export function contentHashOf(customerId: string, type: string, timestampUs: bigint | "server", propertiesJson: string): string {
  // crypto.hash: the one-shot sha256 (same digest as createHash().update().digest(), without the Hash object).
  return hash("sha256", `${customerId}\u0000${type}\u0000${timestampUs}\u0000${propertiesJson}`, "base64url").slice(0, 22);
}

/**
 * Whether a string's UTF-8 encoding is longer than maxBytes. A UTF-16 code unit takes at most 3
 * UTF-8 bytes, so a string of at most maxBytes / 3 code units is never counted.
 */
function utf8LongerThan(s: string, maxBytes: number): boolean {
  return s.length * 3 > maxBytes && Buffer.byteLength(s, "utf8") > maxBytes;
}

function validateProperty(key: string, v: PropertyValue | undefined): Validation | PropertyValue {
  if (v === undefined) return reject(`properties.${key}`, "required", "a value (string, int, decimal or bool) is required");
  if (isCountProperty(key)) {
    if (v.kind === "decimal") return reject(`properties.${key}`, "not_integer", "a count must be an integer (int_value), not a decimal");
    if (v.kind !== "int") return reject(`properties.${key}`, "not_integer", `a count must be an integer (int_value), got ${v.kind}`);
    if (v.value < 0n) return reject(`properties.${key}`, "negative", "a count must not be negative");
  }
  switch (v.kind) {
    case "string":
      if (!isStorableText(v.value))
        return reject(`properties.${key}`, "malformed", "must be well-formed UTF-16 text (no lone surrogate) without U+0000 (NUL)");
      if (utf8LongerThan(v.value, PROPERTY_STRING_BYTES_MAX)) return reject(`properties.${key}`, "too_long", `at most ${PROPERTY_STRING_BYTES_MAX} bytes`);
      return v;
    case "int":
      if (v.value > INT64_MAX || v.value < INT64_MIN) return reject(`properties.${key}`, "overflow", "must fit in a signed 64-bit integer");
      return v;
    case "decimal": {
      const parsed = parseDecimal(v.value);
      if (parsed === undefined)
        return reject(`properties.${key}`, "malformed_decimal", "must be an exact decimal (at most 30 integer and 18 fraction digits)");
      return { kind: "decimal", value: formatDecimal(parsed) };
    }
    case "bool":
      return v;
  }
}

/** Validates one event. The first broken rule wins, in field order: id, customer, type, timestamp, properties, trace context. */
export function validateEvent(input: EventInput, ctx: ValidationContext): Validation {
  if (input.id === "") return reject("id", "required", "is required");
  if (!ID_RE.test(input.id)) return reject("id", "malformed", `1-${ID_LENGTH_MAX} characters of [A-Za-z0-9._:-]`);
  if (input.customerId === "") return reject("customer_id", "required", "is required");
  if (!ID_RE.test(input.customerId))
    return reject("customer_id", "malformed", `1-${ID_LENGTH_MAX} characters of [A-Za-z0-9._:-]`);
  if (input.type === "") return reject("type", "required", "is required");
  if (!TYPE_RE.test(input.type)) return reject("type", "malformed", `1-${EVENT_TYPE_LENGTH_MAX} characters of [A-Za-z0-9._:/-]`);

  let timestampUs: bigint;
  if (input.timestamp === undefined) timestampUs = ctx.nowUs;
  else if (typeof input.timestamp === "string") {
    const parsed = parseRfc3339Us(input.timestamp);
    if (parsed === undefined) return reject("timestamp", "unparseable", "must be an RFC 3339 time between 1970 and 9999");
    timestampUs = parsed;
  } else timestampUs = input.timestamp;
  if (timestampUs < 0n || timestampUs > TIMESTAMP_US_MAX)
    return reject("timestamp", "unparseable", "must be a time between 1970 and 9999");
  if (timestampUs > ctx.nowUs + BigInt(FUTURE_SKEW_MS_MAX) * 1000n)
    return reject("timestamp", "too_far_in_future", `must be at most ${FUTURE_SKEW_MS_MAX / 60_000} minutes in the future`);
  const late =
    timestampUs < ctx.nowUs - ctx.lateEventAgeUs
      ? { field: "timestamp", reason: "period_closed", message: `timestamp: is older than the late-event limit (${ctx.lateEventAgeUs / 86_400_000_000n} days)` }
      : undefined;

  const keys = Object.keys(input.properties);
  if (keys.length > PROPERTIES_PER_EVENT_MAX)
    return reject("properties", "too_many", `at most ${PROPERTIES_PER_EVENT_MAX} properties`);
  const properties: Record<string, PropertyValue> = {};
  for (const key of keys) {
    // A key KEY_RE accepts is ASCII: its length is its UTF-8 length.
    if (!KEY_RE.test(key) || key.length > PROPERTY_KEY_BYTES_MAX)
      return reject(`properties.${echoText(key, PROPERTY_KEY_BYTES_MAX)}`, "malformed_key", `a key is 1-${PROPERTY_KEY_BYTES_MAX} bytes of [A-Za-z0-9._-] starting with a letter or _`);
    if (isReservedKey(key)) return reject(`properties.${key}`, "malformed_key", "__proto__ is not allowed as a property key");
    const checked = validateProperty(key, input.properties[key]);
    if ("ok" in checked) return checked;
    properties[key] = checked;
  }
  const propertiesJson = encodeProperties(properties);
  if (utf8LongerThan(propertiesJson, PROPERTIES_BYTES_MAX))
    return reject("properties", "too_large", `at most ${PROPERTIES_BYTES_MAX} bytes in all`);

  let traceparent = "";
  let tracestate = "";
  const tc = input.traceContext && input.traceContext.traceparent !== "" ? input.traceContext : undefined;
  if (tc) {
    if (!TRACEPARENT_RE.test(tc.traceparent))
      return reject("trace_context.traceparent", "malformed", "must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)");
    if (tc.tracestate.length > TRACESTATE_LENGTH_MAX || !/^[\x20-\x7e]*$/.test(tc.tracestate))
      return reject("trace_context.tracestate", "malformed", `at most ${TRACESTATE_LENGTH_MAX} printable ASCII characters`);
    traceparent = tc.traceparent;
    tracestate = tc.tracestate;
  } else if (ctx.defaultTraceContext && TRACEPARENT_RE.test(ctx.defaultTraceContext.traceparent)) {
    traceparent = ctx.defaultTraceContext.traceparent;
    tracestate = ctx.defaultTraceContext.tracestate.slice(0, TRACESTATE_LENGTH_MAX);
  }

  return {
    ok: true,
    ...(late ? { late } : {}),
    event: {
      id: input.id,
      customerId: input.customerId,
      type: input.type,
      timestampUs,
      properties,
      traceparent,
      tracestate,
      propertiesJson,
      // An event sent without a timestamp hashes as such: its retry (stamped later) is a duplicate.
      contentHash: contentHashOf(input.customerId, input.type, input.timestamp === undefined ? "server" : timestampUs, propertiesJson),
    },
  };
}
