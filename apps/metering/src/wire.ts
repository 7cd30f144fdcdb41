// A hand-written decoder of nanobill.metering.v1.Event straight into the domain's EventInput: the
// ingest hot path (protobuf-es's reflective decode plus the mapping cost ~15-20 µs per event; this
// is a single pass). It gives exactly what eventFromPb(fromBinary(EventSchema, bytes)) gives
// (wire.test.ts checks it on random events, including unknown fields and repeated fields), and
// throws WireError exactly where fromBinary throws (checked on random malformed mutations).
//
// Field numbers (proto/nanobill/metering/v1/metering.proto): Event 1 id, 2 customer_id, 3 type,
// 4 timestamp {1 seconds int64, 2 nanos int32}, 5 properties map<string, PropertyValue>
// {1 key, 2 value}, 6 trace_context {1 traceparent, 2 tracestate}; PropertyValue oneof
// 1 string_value, 2 int_value int64, 3 decimal_value, 4 bool_value.
import type { EventInput, PropertyValue } from "./domain/event.js";
import { timestampToUs } from "./mapping.js";
import { ProtoReader, tagOf, WireError } from "@nanobill/service-kit";

export { WireError };

const INVALID_TIMESTAMP = "(invalid google.protobuf.Timestamp)";
/** protobuf-es's group nesting limit when skipping an unknown field: 100 - message depth. */
const TOP_LEVEL_GROUP_LIMIT = 99;
const SUB_MESSAGE_GROUP_LIMIT = 98;

/** PropertyValue (a fresh message per map value, not merged): the last oneof member read wins; none -> undefined. */
function propertyValue(r: ProtoReader, end: number): PropertyValue | undefined {
  let v: PropertyValue | undefined;
  while (r.pos < end) {
    const { no, wt } = tagOf(r);
    if (no === 1) v = { kind: "string", value: r.string() };
    else if (no === 2) v = { kind: "int", value: BigInt.asIntN(64, r.varint64()) };
    else if (no === 3) v = { kind: "decimal", value: r.string() };
    else if (no === 4) v = { kind: "bool", value: r.varint64() !== 0n };
    else r.skip(wt, no, SUB_MESSAGE_GROUP_LIMIT);
  }
  return v;
}

/**
 * Decodes one encoded Event into the domain input (what eventFromPb(fromBinary(...)) gives), and
 * throws WireError exactly where protobuf-es 2.13's fromBinary throws. As protobuf-es reads
 * (from-binary.js readMessage/readField/readMapEntry): a known field is read by its declared type
 * whatever wire type its tag carries (only unknown field numbers are skipped by wire type); a
 * sub-message is read `while (pos < end)`, so its last field may run past its length; repeated
 * message fields merge, the last scalar wins; in a map entry, field 1 is the key, 2 the value (a
 * fresh PropertyValue each time), and any other field number is consumed as a bare tag without
 * skipping its payload (readMapEntry has no default case).
 */
export function decodeEventInput(bytes: Uint8Array): EventInput {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ProtoReader(buf, 0, buf.length);
  let id = "";
  let customerId = "";
  let type = "";
  let ts: { seconds: bigint; nanos: number } | undefined;
  // Null prototype: a key "__proto__" is kept as a property (validation refuses it by name) instead
  // of replacing the prototype and vanishing; eventFromPb recovers it from protobuf-es the same way.
  const properties: Record<string, PropertyValue | undefined> = Object.create(null);
  let tc: { traceparent: string; tracestate: string } | undefined;
  while (r.pos < r.end) {
    const { no, wt } = tagOf(r);
    switch (no) {
      case 1:
        id = r.string();
        break;
      case 2:
        customerId = r.string();
        break;
      case 3:
        type = r.string();
        break;
      case 4: {
        // A repeated message field merges into the one already read (as protobuf does).
        ts ??= { seconds: 0n, nanos: 0 };
        const end = r.subEnd();
        while (r.pos < end) {
          const f = tagOf(r);
          if (f.no === 1) ts.seconds = BigInt.asIntN(64, r.varint64());
          else if (f.no === 2) ts.nanos = r.uint32() | 0;
          else r.skip(f.wt, f.no, SUB_MESSAGE_GROUP_LIMIT);
        }
        break;
      }
      case 5: {
        const end = r.subEnd();
        let key = "";
        let value: PropertyValue | undefined;
        while (r.pos < end) {
          const f = tagOf(r);
          if (f.no === 1) key = r.string();
          else if (f.no === 2) value = propertyValue(r, r.subEnd());
        }
        properties[key] = value;
        break;
      }
      case 6: {
        tc ??= { traceparent: "", tracestate: "" };
        const end = r.subEnd();
        while (r.pos < end) {
          const f = tagOf(r);
          if (f.no === 1) tc.traceparent = r.string();
          else if (f.no === 2) tc.tracestate = r.string();
          else r.skip(f.wt, f.no, SUB_MESSAGE_GROUP_LIMIT);
        }
        break;
      }
      default:
        r.skip(wt, no, TOP_LEVEL_GROUP_LIMIT);
    }
  }
  let timestamp: bigint | string | undefined;
  if (ts) timestamp = timestampToUs(ts) ?? INVALID_TIMESTAMP;
  return { id, customerId, type, timestamp, properties, traceContext: tc };
}
