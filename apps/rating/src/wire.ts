// The consumer's two hot calls without protobuf-es's reflective codec per item (a profile of the
// pipeline bench had ~10 ms per 1,000 events in decoding ReadEvents pages and ~14 ms in encoding
// Consume requests, plus their garbage):
//
// - ReadEvents answers are read through a view (ReadEventsResponseView: the same wire format with
//   each StoredEvent kept as its bytes), and each event is decoded by hand straight into the
//   RatingInput the consumer rates (decodeStoredEvent; equal to storedEventOf(fromBinary(
//   StoredEventSchema, bytes)), and throws WireError where fromBinary throws: wire.test.ts).
// - Consume requests are written through a view (ConsumeRequestView: items as bytes), each item
//   encoded by hand (encodeConsumeItems; byte for byte what toBinary(ConsumeItemSchema, ...)
//   writes), and the answer read through one (ConsumeResponseView), each result's `result` and
//   `error` decoded by hand (decodeConsumeItemResult).
//
// The views are messages of this process only (not in proto/): the server sees the regular
// messages on the wire. One difference from decoding the whole page with protobuf-es remains, on
// malformed input only: protobuf-es lets a sub-message's last field run past the sub-message's
// length (and reads on from there); through the view an event's bytes end at its length, so such
// a page throws WireError here instead.
//
// Field numbers (proto/nanobill/metering/v1/metering.proto): StoredEvent 1 tenant, 2 sequence
// int64, 3 event (Event), 4 receive_time (Timestamp); Event 1 id, 2 customer_id, 3 type,
// 4 timestamp {1 seconds int64, 2 nanos int32}, 5 properties map<string, PropertyValue>
// {1 key, 2 value}, 6 trace_context {1 traceparent, 2 tracestate}; PropertyValue oneof
// 1 string_value, 2 int_value int64, 3 decimal_value, 4 bool_value. ReadEventsResponse 1 events,
// 2 last_sequence int64. (wallet.proto) ConsumeItem 1 id, 2 customer_id, 3 unit,
// 4 amount_nanos int64, 5 event_id, 6 charge_id, 7 model, 8 occurred_at (Timestamp);
// ConsumeRequest 1 items; ConsumeResponse 1 results.
import { create, createFileRegistry, type DescMessage, type DescMethodUnary, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FieldDescriptorProto_Label, FieldDescriptorProto_Type } from "@bufbuild/protobuf/wkt";
import { createClient, type CallOptions, type Transport } from "@connectrpc/connect";
import { MeteringService, type ReadEventsRequestSchema } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { ProtoReader, WireError } from "@nanobill/service-kit";
import type { PropValue } from "./domain/types.js";
import type { RatingInput } from "./mapping.js";
import type { WalletItem } from "./store/rated-store.js";

export { WireError };

const views = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "nanobill/rating/internal/views.proto",
    package: "nanobill.rating.internal",
    syntax: "proto3",
    messageType: [
      {
        name: "ReadEventsResponseView",
        field: [
          { name: "events", number: 1, label: FieldDescriptorProto_Label.REPEATED, type: FieldDescriptorProto_Type.BYTES, jsonName: "events" },
          { name: "last_sequence", number: 2, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.INT64, jsonName: "lastSequence" },
        ],
      },
      {
        name: "ConsumeRequestView",
        field: [{ name: "items", number: 1, label: FieldDescriptorProto_Label.REPEATED, type: FieldDescriptorProto_Type.BYTES, jsonName: "items" }],
      },
      {
        name: "ConsumeResponseView",
        field: [{ name: "results", number: 1, label: FieldDescriptorProto_Label.REPEATED, type: FieldDescriptorProto_Type.BYTES, jsonName: "results" }],
      },
    ],
  }),
  () => undefined,
);

/** ReadEventsResponse with each event as its encoded bytes. */
export const ReadEventsResponseViewSchema: DescMessage = views.getMessage("nanobill.rating.internal.ReadEventsResponseView")!;
/** ConsumeRequest with each item as its encoded bytes. */
export const ConsumeRequestViewSchema: DescMessage = views.getMessage("nanobill.rating.internal.ConsumeRequestView")!;
/** ConsumeResponse with each result as its encoded bytes. */
export const ConsumeResponseViewSchema: DescMessage = views.getMessage("nanobill.rating.internal.ConsumeResponseView")!;

export interface ReadEventsPageView {
  events: Uint8Array[];
  lastSequence: bigint;
}

/** The consumer's two calls through the views (createViewClients; a test or bench can fake them). */
export interface ViewClients {
  readEvents(req: MessageInitShape<typeof ReadEventsRequestSchema>, opts?: CallOptions): Promise<ReadEventsPageView>;
  consume(req: { items: Uint8Array[] }, opts?: CallOptions): Promise<{ results: Uint8Array[] }>;
}

function viewMethod(m: DescMethodUnary, change: { input?: DescMessage; output?: DescMessage }): DescMethodUnary {
  return { ...m, ...change } as DescMethodUnary;
}

function viewService(s: DescService, m: DescMethodUnary): DescService {
  return { ...s, methods: [m], method: { [m.localName]: m } } as unknown as DescService;
}

const ReadEventsView = viewService(MeteringService, viewMethod(MeteringService.method.readEvents, { output: ReadEventsResponseViewSchema }));
const ConsumeView = viewService(CreditWalletService, viewMethod(CreditWalletService.method.consume, { input: ConsumeRequestViewSchema, output: ConsumeResponseViewSchema }));

/** The view clients over metering's and credit-wallet's transports (the same calls on the wire). */
export function createViewClients(metering: Transport, wallet: Transport): ViewClients {
  const m = createClient(ReadEventsView, metering) as unknown as Pick<ViewClients, "readEvents">;
  const w = createClient(ConsumeView, wallet) as unknown as Pick<ViewClients, "consume">;
  return { readEvents: (req, opts) => m.readEvents(req, opts), consume: (req, opts) => w.consume(req, opts) };
}

/** protobuf-es's group nesting limit when skipping an unknown field: 100 - message depth. */
const LIMIT = (depth: number) => 100 - depth - 1;

/** A Timestamp sub-message merged into `ts` (seconds int64, nanos int32). */
function timestampInto(r: ProtoReader, ts: { seconds: bigint; nanos: number }, depth: number): void {
  const end = r.subEnd();
  while (r.pos < end) {
    const f = r.tag();
    if (f.no === 1) ts.seconds = BigInt.asIntN(64, r.varint64());
    else if (f.no === 2) ts.nanos = r.uint32() | 0;
    else r.skip(f.wt, f.no, LIMIT(depth));
  }
}

/** timestampMs of mapping.ts: whole milliseconds, truncated. */
const msOf = (t: { seconds: bigint; nanos: number }): number => Number(t.seconds) * 1000 + Math.floor(t.nanos / 1_000_000);

/** PropertyValue (a fresh message per map value): the last oneof member read wins; none -> undefined. */
function propertyValue(r: ProtoReader, end: number, depth: number): PropValue | undefined {
  let v: PropValue | undefined;
  while (r.pos < end) {
    const { no, wt } = r.tag();
    if (no === 1) v = { kind: "string", value: r.string() };
    else if (no === 2) v = { kind: "int", value: BigInt.asIntN(64, r.varint64()) };
    else if (no === 3) v = { kind: "decimal", value: r.string() };
    else if (no === 4) v = { kind: "bool", value: r.varint64() !== 0n };
    else r.skip(wt, no, LIMIT(depth));
  }
  return v;
}

/**
 * decodeStoredEvent: one encoded StoredEvent -> what storedEventOf(fromBinary(StoredEventSchema,
 * bytes), nowMs) gives; throws WireError exactly where fromBinary throws. As protobuf-es reads: a
 * known field by its declared type whatever its wire type; a sub-message `while (pos < end)` (its
 * last field may run past its length); repeated message fields merge, the last scalar wins; in a
 * map entry, field 1 is the key, 2 the value (a fresh PropertyValue), any other number a bare tag.
 * `depth`: the StoredEvent's depth in the message read (0 alone, 1 inside ReadEventsResponse).
 */
export function decodeStoredEvent(bytes: Uint8Array, nowMs: number, depth = 1): RatingInput {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ProtoReader(buf, 0, buf.length);
  let tenant = "";
  let sequence = 0n;
  let id = "";
  let customerId = "";
  let type = "";
  let ts: { seconds: bigint; nanos: number } | undefined;
  let receive: { seconds: bigint; nanos: number } | undefined;
  // The map as protobuf-es holds it: a plain object (a later entry of a key replaces the value and
  // the key keeps its place; a key "__proto__" sets its prototype, so it is not an own entry).
  let props: Record<string, PropValue | undefined> | undefined;
  let traceparent = "";
  let tracestate = "";
  while (r.pos < r.end) {
    const { no, wt } = r.tag();
    if (no === 1) tenant = r.string();
    else if (no === 2) sequence = BigInt.asIntN(64, r.varint64());
    else if (no === 4) timestampInto(r, (receive ??= { seconds: 0n, nanos: 0 }), depth + 1);
    else if (no === 3) {
      const endEvent = r.subEnd();
      while (r.pos < endEvent) {
        const f = r.tag();
        switch (f.no) {
          case 1:
            id = r.string();
            break;
          case 2:
            customerId = r.string();
            break;
          case 3:
            type = r.string();
            break;
          case 4:
            timestampInto(r, (ts ??= { seconds: 0n, nanos: 0 }), depth + 2);
            break;
          case 5: {
            const end = r.subEnd();
            let key = "";
            let value: PropValue | undefined;
            while (r.pos < end) {
              const e = r.tag();
              if (e.no === 1) key = r.string();
              else if (e.no === 2) value = propertyValue(r, r.subEnd(), depth + 2);
            }
            (props ??= {})[key] = value;
            break;
          }
          case 6: {
            const end = r.subEnd();
            while (r.pos < end) {
              const t = r.tag();
              if (t.no === 1) traceparent = r.string();
              else if (t.no === 2) tracestate = r.string();
              else r.skip(t.wt, t.no, LIMIT(depth + 2));
            }
            break;
          }
          default:
            r.skip(f.wt, f.no, LIMIT(depth + 1));
        }
      }
    } else r.skip(wt, no, LIMIT(depth));
  }
  // As propsOf in mapping.ts: a plain object, keys in Object.entries order of protobuf-es's map, unset values dropped.
  const properties: Record<string, PropValue> = {};
  if (props !== undefined) for (const [k, v] of Object.entries(props)) if (v !== undefined) properties[k] = v;
  const timestampMs = ts !== undefined ? msOf(ts) : receive !== undefined ? msOf(receive) : nowMs;
  return { event: { tenant, eventId: id, customerId, type, timestampMs, properties }, sequence, traceparent, tracestate };
}

/** A byte buffer that grows; strings as UTF-8 (lone surrogates as U+FFFD, as TextEncoder writes them). */
class Writer {
  buf = Buffer.allocUnsafe(64 * 1024);
  pos = 0;
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }
  byte(b: number): void {
    this.room(1);
    this.buf[this.pos++] = b;
  }
  /** An unsigned varint of a number < 2^31. */
  uint(v: number): void {
    this.room(5);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
  }
  /** An unsigned varint of a safe integer >= 0 (number arithmetic: no bigint on the common path). */
  unum(v: number): void {
    this.room(10);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }
  /** An int64 as protobuf writes it: the varint of its 64-bit two's complement. */
  int64(v: bigint): void {
    if (v >= 0n && v <= SAFE) return this.unum(Number(v));
    this.room(10);
    let u = BigInt.asUintN(64, v);
    while (u > 0x7fn) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }
  /** A non-empty string field (proto3: an empty one is not written). */
  string(tag: number, s: string): void {
    if (s === "") return;
    // Short ASCII strings (ids, units, models) byte by byte; anything else through Buffer.write.
    if (s.length < 128) {
      this.room(2 + s.length);
      const at = this.pos;
      this.buf[at] = tag;
      this.buf[at + 1] = s.length;
      let i = 0;
      for (; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        this.buf[at + 2 + i] = c;
      }
      if (i === s.length) {
        this.pos = at + 2 + i;
        return;
      }
    }
    const n = Buffer.byteLength(s, "utf8");
    this.byte(tag);
    this.uint(n);
    this.room(n);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }
}

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The bytes of the varint of an int64 given as a safe integer (negative: ten). */
function varintBytes(v: number): number {
  if (v < 0) return 10;
  let n = 1;
  for (; v > 0x7f; v = Math.floor(v / 128)) n++;
  return n;
}

const scratch = new Writer();

/** One ConsumeItem into `o`: fields in number order, zero values omitted (as toBinary writes it). */
function writeConsumeItem(o: Writer, w: WalletItem): void {
  o.string(0x0a, w.itemId);
  o.string(0x12, w.customerId);
  o.string(0x1a, w.unit);
  if (w.amountNanos !== 0n) {
    o.byte(0x20);
    o.int64(w.amountNanos);
  }
  o.string(0x2a, w.eventId);
  o.string(0x32, w.chargeId);
  o.string(0x3a, w.model);
  // occurred_at = timestampFromMs(occurredMs): seconds = floor(ms / 1000), nanos = the rest in ns.
  const seconds = Math.floor(w.occurredMs / 1000);
  const nanos = (w.occurredMs - seconds * 1000) * 1_000_000;
  const len = (seconds !== 0 ? 1 + varintBytes(seconds) : 0) + (nanos !== 0 ? 1 + varintBytes(nanos) : 0);
  o.byte(0x42);
  o.uint(len);
  if (seconds !== 0) {
    o.byte(0x08);
    if (seconds > 0) o.unum(seconds);
    else o.int64(BigInt(seconds));
  }
  if (nanos !== 0) {
    o.byte(0x10);
    o.uint(nanos);
  }
}

/**
 * encodeConsumeItems: the ConsumeItem of each wallet item, byte for byte what
 * toBinary(ConsumeItemSchema, {id: itemId, customerId, unit, amountNanos, eventId, chargeId, model,
 * occurredAt: timestampFromMs(occurredMs)}) writes. One buffer for all, a view of it per item.
 */
export function encodeConsumeItems(items: readonly WalletItem[]): Uint8Array[] {
  const o = scratch;
  o.pos = 0;
  const ends = new Array<number>(items.length);
  for (let i = 0; i < items.length; i++) {
    writeConsumeItem(o, items[i]!);
    ends[i] = o.pos;
  }
  const all = Buffer.allocUnsafe(o.pos);
  o.buf.copy(all, 0, 0, o.pos);
  const out = new Array<Uint8Array>(items.length);
  let start = 0;
  for (let i = 0; i < items.length; i++) {
    out[i] = all.subarray(start, ends[i]);
    start = ends[i]!;
  }
  return out;
}

/**
 * decodeConsumeItemResult: the two fields the consumer reads of one encoded ConsumeItemResult
 * (ConsumeItemResult 1 id, 2 result enum, 3 consumed_nanos int64, 4 shortfall_nanos int64,
 * 5 wallet_id, 6 error, 7 replayed bool): what fromBinary(ConsumeItemResultSchema, bytes) has as
 * result and error, throwing WireError exactly where fromBinary throws (every field is read as
 * protobuf-es reads it: strings validated, varints bounded). `depth`: 1 inside ConsumeResponse.
 */
export function decodeConsumeItemResult(bytes: Uint8Array, depth = 1): { result: number; error: string } {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ProtoReader(buf, 0, buf.length);
  let result = 0;
  let error = "";
  while (r.pos < r.end) {
    const { no, wt } = r.tag();
    switch (no) {
      case 1:
      case 5:
        r.string();
        break;
      case 2:
        result = r.uint32() | 0; // an enum is an int32
        break;
      case 3:
      case 4:
      case 7:
        r.varint64(); // int64, int64, bool
        break;
      case 6:
        error = r.string();
        break;
      default:
        r.skip(wt, no, LIMIT(depth));
    }
  }
  return { result, error };
}
