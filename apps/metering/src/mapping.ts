// proto <-> domain. Integers stay bigint end to end; times are microseconds in the domain.
import { create } from "@bufbuild/protobuf";
import { TimestampSchema, type Timestamp } from "@bufbuild/protobuf/wkt";
import { usToTimestamp } from "@nanobill/service-kit";
import { TraceContextSchema } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import {
  Aggregation as PbAggregation,
  EventSchema,
  FilterOperator as PbFilterOperator,
  IngestResultSchema,
  IngestStatus,
  MeterSchema,
  MeterStatus,
  PropertyFilterSchema,
  PropertyValueSchema,
  StoredEventSchema,
  UsageRowSchema,
  Window as PbWindow,
  BackfillProgressSchema,
  GenAiMappingSchema,
  GenAiPropertyMappingSchema,
  type GenAiMapping as PbGenAiMapping,
  type Event as PbEvent,
  type IngestResult,
  type Meter as PbMeter,
  type PropertyFilter as PbPropertyFilter,
  type PropertyValue as PbPropertyValue,
  type StoredEvent as PbStoredEvent,
  type UsageRow as PbUsageRow,
} from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { echoText, type EventInput, type PropertyValue, type Rejection } from "./domain/event.js";
import { ID_LENGTH_MAX, INGEST_RESULT_BYTES_MAX, RESULT_FIELD_BYTES_MAX, RESULT_MESSAGE_BYTES_MAX, RESULT_REASON_BYTES_MAX } from "./limits.js";
import type { Aggregation, FilterOperator, MeterDefinition, PropertyFilter } from "./domain/meter.js";
import type { UsageRow, Window } from "./domain/usage.js";
import type { GenAiMapping } from "./domain/genai.js";
import type { ItemOutcome, StoredEvent, StoredMeter } from "./store/store.js";

/** Text the domain reports as "unparseable" for a Timestamp out of the proto's range. */
const INVALID_TIMESTAMP = "(invalid google.protobuf.Timestamp)";
const SECONDS_MAX = 253_402_300_799n; // 9999-12-31T23:59:59Z

/** A Timestamp as microseconds, or undefined when it is not a valid Timestamp. */
export function timestampToUs(t: { seconds: bigint; nanos: number }): bigint | undefined {
  if (!Number.isInteger(t.nanos) || t.nanos < 0 || t.nanos > 999_999_999) return undefined;
  if (t.seconds < 0n || t.seconds > SECONDS_MAX) return undefined;
  return t.seconds * 1_000_000n + BigInt(Math.floor(t.nanos / 1000));
}

export { usToTimestamp };

function propertyFromPb(v: PbPropertyValue): PropertyValue | undefined {
  switch (v.kind.case) {
    case "stringValue":
      return { kind: "string", value: v.kind.value };
    case "intValue":
      return { kind: "int", value: v.kind.value };
    case "decimalValue":
      return { kind: "decimal", value: v.kind.value };
    case "boolValue":
      return { kind: "bool", value: v.kind.value };
    default:
      return undefined;
  }
}

function propertyToPb(v: PropertyValue): PbPropertyValue {
  switch (v.kind) {
    case "string":
      return create(PropertyValueSchema, { kind: { case: "stringValue", value: v.value } });
    case "int":
      return create(PropertyValueSchema, { kind: { case: "intValue", value: v.value } });
    case "decimal":
      return create(PropertyValueSchema, { kind: { case: "decimalValue", value: v.value } });
    case "bool":
      return create(PropertyValueSchema, { kind: { case: "boolValue", value: v.value } });
  }
}

export function eventFromPb(e: PbEvent): EventInput {
  // Null prototype, as the wire decoder: a "__proto__" key stays a property (validation refuses it).
  const properties: Record<string, PropertyValue | undefined> = Object.create(null);
  for (const [k, v] of Object.entries(e.properties)) properties[k] = propertyFromPb(v);
  // protobuf-es stores map entries with obj[key] = value on a plain object, so an entry keyed
  // "__proto__" became the map object's prototype (the last such entry wins, as for any key).
  const inherited: unknown = Object.getPrototypeOf(e.properties);
  if (inherited !== Object.prototype && inherited !== null && typeof inherited === "object")
    properties["__proto__"] = propertyFromPb(inherited as PbPropertyValue);
  let timestamp: bigint | string | undefined;
  if (e.timestamp) timestamp = timestampToUs(e.timestamp) ?? INVALID_TIMESTAMP;
  return {
    id: e.id,
    customerId: e.customerId,
    type: e.type,
    timestamp,
    properties,
    traceContext: e.traceContext ? { traceparent: e.traceContext.traceparent, tracestate: e.traceContext.tracestate } : undefined,
  };
}

/**
 * An upper bound of a StoredEvent's encoding. Binary: 3 bytes per UTF-16 code unit of every
 * string, tags, lengths and numbers at their widest (StoredEvent, Event, timestamps, trace
 * context: 128 bytes; a property entry: 32 bytes beyond its key and value). JSON (`json`): 6
 * bytes per code unit (a control character or lone surrogate is written `\u001f`), 400 bytes of
 * field names, numbers and times per event and 64 per property entry.
 */
export function storedEventSizeBound(e: StoredEvent, json = false): number {
  const perUnit = json ? 6 : 3;
  let n = (json ? 400 : 128) + perUnit * (e.tenant.length + e.id.length + e.customerId.length + e.type.length + e.traceparent.length + e.tracestate.length);
  for (const k of Object.keys(e.properties)) {
    const v = e.properties[k]!;
    n += (json ? 64 : 32) + perUnit * (k.length + (v.kind === "string" || v.kind === "decimal" ? v.value.length : 0));
  }
  return n;
}

export function storedEventToPb(e: StoredEvent): PbStoredEvent {
  const properties: Record<string, PbPropertyValue> = {};
  for (const [k, v] of Object.entries(e.properties)) properties[k] = propertyToPb(v);
  return create(StoredEventSchema, {
    tenant: e.tenant,
    sequence: e.sequence,
    receiveTime: usToTimestamp(e.receivedUs),
    event: create(EventSchema, {
      id: e.id,
      customerId: e.customerId,
      type: e.type,
      timestamp: usToTimestamp(e.timestampUs),
      properties,
      traceContext: e.traceparent === "" ? undefined : create(TraceContextSchema, { traceparent: e.traceparent, tracestate: e.tracestate }),
    }),
  });
}

/**
 * Text of a result's field, reason or message: at most maxBytes of JSON-escaped UTF-8 (so the
 * response bound of limits.ts holds in both encodings), cut at a code point; control characters
 * and lone surrogates become U+FFFD. Every text produced today is shorter (no-op).
 */
export function resultText(s: string, maxBytes: number): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c >= 0x7f) {
      plain = false;
      break;
    }
  }
  if (plain && s.length <= maxBytes) return s;
  let out = "";
  let bytes = 0;
  for (const ch of echoText(s, Number.MAX_SAFE_INTEGER)) {
    const n = ch === '"' || ch === "\\" ? 2 : Buffer.byteLength(ch, "utf8");
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return out;
}

const ID_RE = /^[A-Za-z0-9._:\-]*$/;
/**
 * Upper bound of the bytes of the IngestResult answering an event with this id (limits.ts
 * INGEST_RESULT_BYTES_MAX, with the id as sent: a rejected id longer than 128 is echoed whole).
 */
export function resultBytesBound(eventId: string): number {
  const idJson = eventId.length <= ID_LENGTH_MAX && ID_RE.test(eventId) ? eventId.length : Buffer.byteLength(JSON.stringify(eventId), "utf8") - 2;
  return INGEST_RESULT_BYTES_MAX - ID_LENGTH_MAX + idJson;
}

function rejected(eventId: string, field: string, reason: string, message: string): IngestResult {
  return create(IngestResultSchema, {
    eventId,
    status: IngestStatus.REJECTED,
    field: resultText(field, RESULT_FIELD_BYTES_MAX),
    reason: resultText(reason, RESULT_REASON_BYTES_MAX),
    message: resultText(message, RESULT_MESSAGE_BYTES_MAX),
  });
}

export function rejectedResult(eventId: string, r: Rejection): IngestResult {
  return rejected(eventId, r.field, r.reason, r.message);
}

export function outcomeToResult(eventId: string, o: ItemOutcome): IngestResult {
  switch (o.status) {
    case "accepted":
      return create(IngestResultSchema, { eventId, status: IngestStatus.ACCEPTED, sequence: o.sequence });
    case "duplicate":
      return create(IngestResultSchema, { eventId, status: IngestStatus.DUPLICATE, sequence: o.sequence });
    case "conflict":
      return create(IngestResultSchema, {
        eventId,
        status: IngestStatus.CONFLICT,
        field: "id",
        reason: "content_differs",
        message: `id: ${eventId} was already stored with different content`,
      });
    case "rejected":
      return rejected(eventId, o.field, o.reason, o.message);
  }
}

const AGG_FROM_PB: Record<number, Aggregation | undefined> = {
  [PbAggregation.COUNT]: "count",
  [PbAggregation.SUM]: "sum",
  [PbAggregation.MAX]: "max",
  [PbAggregation.MIN]: "min",
  [PbAggregation.UNIQUE_COUNT]: "unique_count",
  [PbAggregation.LATEST]: "latest",
};
const AGG_TO_PB: Record<Aggregation, PbAggregation> = {
  count: PbAggregation.COUNT,
  sum: PbAggregation.SUM,
  max: PbAggregation.MAX,
  min: PbAggregation.MIN,
  unique_count: PbAggregation.UNIQUE_COUNT,
  latest: PbAggregation.LATEST,
};
const OP_FROM_PB: Record<number, FilterOperator | undefined> = {
  [PbFilterOperator.IN]: "in",
  [PbFilterOperator.NOT_IN]: "not_in",
  [PbFilterOperator.EXISTS]: "exists",
  [PbFilterOperator.NOT_EXISTS]: "not_exists",
};
const OP_TO_PB: Record<FilterOperator, PbFilterOperator> = {
  in: PbFilterOperator.IN,
  not_in: PbFilterOperator.NOT_IN,
  exists: PbFilterOperator.EXISTS,
  not_exists: PbFilterOperator.NOT_EXISTS,
};

/** Unknown enum values become "" so that the domain check names the field. */
export function filterFromPb(f: PbPropertyFilter): PropertyFilter {
  return { property: f.property, operator: OP_FROM_PB[f.operator] ?? ("" as FilterOperator), values: [...f.values] };
}

export function filterToPb(f: PropertyFilter): PbPropertyFilter {
  return create(PropertyFilterSchema, { property: f.property, operator: OP_TO_PB[f.operator], values: f.values });
}

export function meterFromPb(m: PbMeter): MeterDefinition {
  return {
    id: m.id,
    eventType: m.eventType,
    aggregation: AGG_FROM_PB[m.aggregation] ?? ("" as Aggregation),
    valueProperty: m.valueProperty,
    filters: m.filters.map(filterFromPb),
    groupBy: [...m.groupBy],
    description: m.description,
  };
}

/** A stored meter's status: FAILED (set aside), READY (backfill done) or BACKFILLING. */
export function meterStatusOf(m: StoredMeter): MeterStatus {
  if (m.aggregationError !== null) return MeterStatus.FAILED;
  return m.backfillDoneSequence >= m.backfillThroughSequence ? MeterStatus.READY : MeterStatus.BACKFILLING;
}

export function meterToPb(m: StoredMeter): PbMeter {
  const d = m.definition;
  return create(MeterSchema, {
    id: d.id,
    eventType: d.eventType,
    aggregation: AGG_TO_PB[d.aggregation],
    valueProperty: d.valueProperty,
    filters: d.filters.map(filterToPb),
    groupBy: d.groupBy,
    description: d.description,
    status: meterStatusOf(m),
    statusMessage: m.aggregationError ?? "",
    backfill: create(BackfillProgressSchema, {
      throughSequence: m.backfillThroughSequence,
      doneSequence: m.backfillDoneSequence,
      eventsDone: m.backfillEventsDone,
    }),
    createTime: usToTimestamp(m.createdUs),
  });
}

export function windowFromPb(w: PbWindow): Window | undefined {
  switch (w) {
    case PbWindow.MINUTE:
      return "minute";
    case PbWindow.HOUR:
      return "hour";
    case PbWindow.DAY:
      return "day";
    case PbWindow.WHOLE:
      return "whole";
    default:
      return undefined;
  }
}

export function usageRowToPb(r: UsageRow): PbUsageRow {
  return create(UsageRowSchema, {
    windowStart: usToTimestamp(r.windowStartUs),
    windowEnd: usToTimestamp(r.windowEndUs),
    customerId: r.customerId,
    group: r.group,
    value: r.value,
    eventCount: r.eventCount,
  });
}

export function genAiMappingFromPb(m: PbGenAiMapping): GenAiMapping {
  return {
    eventType: m.eventType,
    customerAttribute: m.customerAttribute,
    properties: m.properties.map((p) => ({ attribute: p.attribute, property: p.property })),
    spanAttributeRequired: m.spanAttributeRequired,
    spanOperations: [...m.spanOperations],
  };
}

export function genAiMappingToPb(m: GenAiMapping): PbGenAiMapping {
  return create(GenAiMappingSchema, {
    eventType: m.eventType,
    customerAttribute: m.customerAttribute,
    properties: m.properties.map((p) => create(GenAiPropertyMappingSchema, p)),
    spanAttributeRequired: m.spanAttributeRequired,
    spanOperations: m.spanOperations,
  });
}
