// OpenTelemetry GenAI spans -> usage events, by a per-tenant mapping. Pure.
// Semantic conventions: gen_ai.request.model (else gen_ai.response.model), gen_ai.response.model on
// its own, gen_ai.system / gen_ai.provider.name,
// gen_ai.usage.input_tokens, gen_ai.usage.output_tokens, gen_ai.usage.cache_read.input_tokens
// (input tokens served from a provider-managed cache) and gen_ai.usage.cache_creation.input_tokens
// (input tokens written to it). Both cache counts SHOULD be included in gen_ai.usage.input_tokens
// (semconv), so they are mapped as they are, never subtracted here: input_tokens stays the total.
import { OTLP_SPANS_MAX } from "../limits.js";
import { isReservedKey, type EventInput, type PropertyValue } from "./event.js";

export interface GenAiPropertyMapping {
  attribute: string;
  property: string;
}

export interface GenAiMapping {
  eventType: string;
  customerAttribute: string;
  properties: GenAiPropertyMapping[];
  spanAttributeRequired: string;
  /**
   * When not empty, only spans whose gen_ai.operation.name (span, else resource) is one of these
   * are mapped; a span without gen_ai.operation.name still is. Empty: every span having
   * spanAttributeRequired (a mapping stored before this field existed reads as empty).
   */
  spanOperations: string[];
}

/**
 * The semconv's operations that call a model (gen_ai.operation.name well-known values). The
 * others, invoke_agent (whose usage attributes are the sum of the model calls under it, which have
 * spans of their own), create_agent, execute_tool and invoke_workflow, are not billed by default:
 * counting an invoke_agent span's usage counted its chat spans' tokens twice.
 */
export const GENAI_MODEL_OPERATIONS = ["chat", "text_completion", "generate_content", "embeddings"];

export const GENAI_MAPPING_DEFAULT: GenAiMapping = {
  eventType: "llm.call",
  customerAttribute: "nanobill.customer_id",
  properties: [
    // model: the requested model (the name plans and the cost catalog are written with, e.g. the
    // alias "gpt-4o"), else the one that served the call. response_model: the model that served
    // it (often a dated snapshot, "gpt-4o-2024-08-06"; it differs when the request named an alias
    // or was routed elsewhere, and costs differ up to 62x between models), for a matrix or cost
    // rate that needs it. Taking the served model as `model` would leave every event of a plan
    // priced by alias unpriced.
    { attribute: "gen_ai.request.model", property: "model" },
    { attribute: "gen_ai.response.model", property: "model" },
    { attribute: "gen_ai.response.model", property: "response_model" },
    { attribute: "gen_ai.provider.name", property: "provider" },
    { attribute: "gen_ai.system", property: "provider" },
    { attribute: "gen_ai.operation.name", property: "operation" },
    { attribute: "gen_ai.usage.input_tokens", property: "input_tokens" },
    { attribute: "gen_ai.usage.output_tokens", property: "output_tokens" },
    { attribute: "gen_ai.usage.cache_read.input_tokens", property: "cache_read_input_tokens" },
    { attribute: "gen_ai.usage.cache_creation.input_tokens", property: "cache_creation_input_tokens" },
  ],
  spanAttributeRequired: "gen_ai.usage.input_tokens",
  spanOperations: GENAI_MODEL_OPERATIONS,
};

/** Most property mappings in one GenAI mapping. */
export const GENAI_PROPERTIES_MAX = 32;
/** Most operations in one GenAI mapping's span_operations. */
export const GENAI_OPERATIONS_MAX = 16;
const ATTR_RE = /^[A-Za-z0-9_.\-]{1,128}$/;
const KEY_RE = /^[A-Za-z_][A-Za-z0-9._\-]{0,127}$/;
const TYPE_RE = /^[A-Za-z0-9._:/\-]{1,128}$/;

export function validateGenAiMapping(m: GenAiMapping): { field: string; rule: string } | undefined {
  if (!TYPE_RE.test(m.eventType)) return { field: "mapping.event_type", rule: "1-128 characters of [A-Za-z0-9._:/-]" };
  if (!ATTR_RE.test(m.customerAttribute)) return { field: "mapping.customer_attribute", rule: "an attribute key (1-128 characters of [A-Za-z0-9_.-])" };
  if (!ATTR_RE.test(m.spanAttributeRequired)) return { field: "mapping.span_attribute_required", rule: "an attribute key (1-128 characters of [A-Za-z0-9_.-])" };
  if (m.properties.length === 0) return { field: "mapping.properties", rule: "at least one property mapping" };
  if (m.properties.length > GENAI_PROPERTIES_MAX) return { field: "mapping.properties", rule: `at most ${GENAI_PROPERTIES_MAX}` };
  if (m.spanOperations.length > GENAI_OPERATIONS_MAX) return { field: "mapping.span_operations", rule: `at most ${GENAI_OPERATIONS_MAX}` };
  for (const [i, op] of m.spanOperations.entries())
    if (!ATTR_RE.test(op)) return { field: `mapping.span_operations[${i}]`, rule: "an operation name (1-128 characters of [A-Za-z0-9_.-])" };
  for (const [i, p] of m.properties.entries()) {
    if (!ATTR_RE.test(p.attribute)) return { field: `mapping.properties[${i}].attribute`, rule: "an attribute key" };
    if (!KEY_RE.test(p.property) || isReservedKey(p.property))
      return { field: `mapping.properties[${i}].property`, rule: "a property key ([A-Za-z_][A-Za-z0-9._-]*, not __proto__)" };
  }
  return undefined;
}

/**
 * An OTLP attribute value that has no property form, and why (an array, kvlist or bytes; an
 * unreadable value, e.g. an OTLP/JSON intValue sent as a number past 2^53). Kept, not refused: a
 * span is rejected for it only when its mapping reads that attribute.
 */
export interface UnmappableValue {
  unmappable: string;
}

/**
 * An OTLP attribute value. Doubles are JS numbers: an integral one (12.0) within the safe-integer
 * range maps to the integer 12, as a JSON intValue would; any other double (12.5, 1e300, NaN) is
 * not exact and cannot be mapped.
 */
export type AttributeValue = string | bigint | boolean | number | UnmappableValue;

export interface GenAiSpan {
  traceId: string;
  spanId: string;
  endTimeUnixNano: bigint;
  attributes: Map<string, AttributeValue>;
  resourceAttributes: Map<string, AttributeValue>;
}

/** The property of an attribute value, or why it has none. */
function toProperty(v: AttributeValue): PropertyValue | { unmappable: string } {
  if (typeof v === "string") return { kind: "string", value: v };
  if (typeof v === "boolean") return { kind: "bool", value: v };
  if (typeof v === "bigint") return { kind: "int", value: v };
  if (typeof v === "number") {
    if (Number.isSafeInteger(v)) return { kind: "int", value: BigInt(v) };
    return { unmappable: `doubleValue ${v} is not an integer (only integral doubles map, as integers)` };
  }
  return v;
}

/** A span that carried a mapped attribute which cannot be mapped: it becomes no event. */
export interface SpanRejection {
  eventId: string;
  attribute: string;
  message: string;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

/**
 * Maps spans having the mapping's required attribute to events: id "span_<trace id>_<span id>"
 * (so a re-exported span is a duplicate, and spans of two traces never meet), timestamp = span end, customer from the span's (else the
 * resource's) customer attribute, trace context = the span itself. Other spans are skipped, and so
 * are spans whose gen_ai.operation.name is not in a non-empty spanOperations. A span
 * whose mapped attribute (or customer attribute) is present but has no property form (a
 * non-integral double, an array, a kvlist, bytes, an unreadable value) is rejected naming the
 * attribute: dropping the value would bill the span as if it had none. Attributes the mapping does
 * not read are never looked at, whatever their value.
 */
export function spansToEvents(spans: GenAiSpan[], m: GenAiMapping): { events: EventInput[]; skipped: number; rejected: SpanRejection[] } {
  const events: EventInput[] = [];
  const rejected: SpanRejection[] = [];
  let skipped = 0;
  spans: for (const s of spans.slice(0, OTLP_SPANS_MAX)) {
    if (!s.attributes.has(m.spanAttributeRequired)) {
      skipped++;
      continue;
    }
    const attr = (k: string) => s.attributes.get(k) ?? s.resourceAttributes.get(k);
    // Model calls only (by default): an agent span's usage is already on the model-call spans under it.
    const operation = attr("gen_ai.operation.name");
    if (m.spanOperations.length > 0 && operation !== undefined && !(typeof operation === "string" && m.spanOperations.includes(operation))) {
      skipped++;
      continue;
    }
    const traceId = s.traceId.toLowerCase();
    const spanId = s.spanId.toLowerCase();
    // Trace id and span id: a span id is only unique within its trace (two traces' spans sharing
    // one were billed once: the second answered conflict, or dropped as a duplicate).
    const id = `span_${traceId}_${spanId}`;
    // Null prototype: a mapped property name is never confused with an Object.prototype member.
    const properties: Record<string, PropertyValue | undefined> = Object.create(null);
    for (const p of m.properties) {
      if (Object.hasOwn(properties, p.property)) continue;
      const v = attr(p.attribute);
      if (v === undefined) continue;
      const pv = toProperty(v);
      if ("unmappable" in pv) {
        rejected.push({ eventId: id, attribute: p.attribute, message: `${p.attribute}: ${pv.unmappable}` });
        continue spans;
      }
      properties[p.property] = pv;
    }
    const customer = attr(m.customerAttribute);
    if (typeof customer === "object") {
      rejected.push({ eventId: id, attribute: m.customerAttribute, message: `${m.customerAttribute}: ${customer.unmappable}, not a customer id` });
      continue;
    }
    events.push({
      id,
      customerId: typeof customer === "string" ? customer : customer === undefined ? "" : String(customer),
      type: m.eventType,
      timestamp: s.endTimeUnixNano > 0n ? s.endTimeUnixNano / 1000n : undefined,
      properties,
      traceContext: HEX32.test(traceId) && HEX16.test(spanId) ? { traceparent: `00-${traceId}-${spanId}-01`, tracestate: "" } : undefined,
    });
  }
  skipped += Math.max(0, spans.length - OTLP_SPANS_MAX);
  return { events, skipped, rejected };
}
