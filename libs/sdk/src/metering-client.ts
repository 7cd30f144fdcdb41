// The metering client an AI service embeds: batches events by size and time, retries transient
// failures with exponential backoff keeping the same event ids (so a retry is a duplicate, never
// a double count), bounds its memory (track waits when the queue is full, by events and by bytes),
// carries the active W3C trace context, flushes before the process exits, and surfaces one result
// per event.
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { IngestEventsRequestSchema, IngestStatus } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { createClientTransport, errorInfoOf } from "@nanobill/service-kit";
import { currentTraceContext } from "@nanobill/telemetry";
import { encodeEventEntry, type WireEvent, type WireProperty } from "./event-codec.js";
import { decodeIngestResult, INGEST_EVENTS_VIEW, type WireResult } from "./result-codec.js";

/** Limits of the client (options are checked against them). */
export const SDK_LIMITS = {
  BATCH_SIZE_MAX: 10_000,
  BATCH_SIZE_DEFAULT: 1_000,
  /**
   * Most bytes of one IngestEventsRequest the client sends (the encoded events with their field
   * framing): 64 KiB under the metering server's 4 MiB request limit (REQUEST_BYTES_MAX in
   * apps/metering/src/limits.ts, the Connect/gRPC readMaxBytes), leaving room for envelopes.
   * A server with a smaller limit answers ResourceExhausted ("message size"); the client then
   * splits the batch in halves and resends them (same ids).
   */
  BATCH_BYTES_MAX: 4 * 1024 * 1024 - 64 * 1024,
  BATCH_BYTES_DEFAULT: 4 * 1024 * 1024 - 64 * 1024,
  /** Smallest batchBytesMax (a valid event is at most ~18 KB: 16 KiB of properties, ids, trace context). */
  BATCH_BYTES_MIN: 64 * 1024,
  FLUSH_INTERVAL_MS_DEFAULT: 100,
  FLUSH_INTERVAL_MS_MAX: 60_000,
  QUEUE_LENGTH_DEFAULT: 100_000,
  QUEUE_LENGTH_MAX: 10_000_000,
  /** Most encoded bytes of the events queued or in flight (track() waits beyond it). */
  QUEUE_BYTES_DEFAULT: 64 * 1024 * 1024,
  QUEUE_BYTES_MAX: 4 * 1024 * 1024 * 1024,
  IN_FLIGHT_BATCHES_DEFAULT: 4,
  IN_FLIGHT_BATCHES_MAX: 64,
  RETRY_ATTEMPTS_DEFAULT: 8,
  RETRY_ATTEMPTS_MAX: 100,
  RETRY_BACKOFF_MS_INITIAL_DEFAULT: 50,
  RETRY_BACKOFF_MS_MAX_DEFAULT: 5_000,
  TIMEOUT_MS_DEFAULT: 30_000,
} as const;

/** A property value: string, integer (safe JS integer or bigint), exact decimal, or boolean. Floats are refused. */
export type PropertyInput = string | number | bigint | boolean | { decimal: string };

export interface TrackEvent {
  /** Idempotency key; assigned ("evt_" + 128 random bits) when absent. */
  id?: string;
  customerId: string;
  type: string;
  /** When the usage happened (default: when track() is called). */
  timestamp?: Date;
  properties?: Record<string, PropertyInput>;
  /** W3C trace context; default: the active one at track() time. */
  traceContext?: { traceparent: string; tracestate?: string };
}

export type TrackStatus = "accepted" | "duplicate" | "conflict" | "rejected" | "failed";

/**
 * The outcome of one event. "failed" means it could not be delivered (see error); it may be re-sent
 * with the same id and the same content, `timestamp` included: track `{ ...event, id: r.eventId,
 * timestamp: r.timestamp }` (a stored first attempt then answers "duplicate", not "conflict").
 */
export interface TrackResult {
  eventId: string;
  status: TrackStatus;
  field?: string;
  reason?: string;
  message?: string;
  sequence?: bigint;
  error?: ConnectError;
  /**
   * On "failed" results: the event's timestamp as sent (the track() time when the event had none).
   * The server tells a duplicate from a conflict by the content, timestamp included, so a re-send
   * must carry this one.
   */
  timestamp?: Date;
}

/** What track() returns once the event is queued: its id and (never rejecting) its result. */
export interface Tracked {
  id: string;
  result: Promise<TrackResult>;
}

export interface RetryOptions {
  attemptsMax?: number;
  backoffMsInitial?: number;
  backoffMsMax?: number;
}

export interface MeteringClientOptions {
  baseUrl?: string;
  apiKey?: string;
  /** Use this transport instead of one built from baseUrl/apiKey (tests: createRouterTransport). */
  transport?: Transport;
  /**
   * Wire protocol (default "connect": binary Connect over HTTP/2, which every Nanobill server
   * serves on its fast path; measured ~4x the single-event call rate of "grpc" through
   * connect-node, docs/decisions.md). "grpc" for gRPC proxies and other gRPC servers.
   */
  protocol?: "grpc" | "connect";
  batchSizeMax?: number;
  /** Most bytes of one request (encoded events); default and maximum SDK_LIMITS.BATCH_BYTES_MAX. */
  batchBytesMax?: number;
  flushIntervalMs?: number;
  /** Most events queued or in flight; track() waits beyond it. */
  queueLengthMax?: number;
  /** Most encoded bytes of the events queued or in flight; track() waits beyond it (at least batchBytesMax). */
  queueBytesMax?: number;
  inFlightBatchesMax?: number;
  retry?: RetryOptions;
  timeoutMs?: number;
  /** Called with every result (e.g. to log rejections). */
  onResult?: (r: TrackResult) => void;
  /** Id generator (tests); default "evt_" + 22 base64url characters of randomness. */
  newId?: () => string;
  /** Randomness for backoff jitter in [0, 1) (tests). */
  random?: () => number;
}

export interface MeteringClient {
  /**
   * Queues an event; waits while the queue is full (queueLengthMax events or queueBytesMax bytes).
   * Throws TypeError on a float, an integer outside int64, an event larger than batchBytesMax, or a
   * closed client.
   */
  track(event: TrackEvent): Promise<Tracked>;
  /**
   * Sends everything queued now and resolves once every event queued or in flight when it was
   * called has its result. Events tracked meanwhile are not waited for (they go out as usual), so
   * flush() returns while other tasks keep tracking. Costs one promise reaction per such event.
   */
  flush(): Promise<void>;
  /** Flushes, then refuses new events. */
  close(): Promise<void>;
  /** Events queued or in flight. */
  readonly pending: number;
  /** Encoded bytes of the events queued or in flight. */
  readonly pendingBytes: number;
}

/**
 * Codes sent again as they are (same ids, same bytes): IngestEvents is idempotent by event id, so a
 * resend of a batch the server did store answers `duplicate`. Internal and Unknown are here because
 * the transport gives them to connection failures that say nothing about the request: an HTTP/2
 * RST_STREAM INTERNAL_ERROR or a GOAWAY from a crashing server or a proxy (service-kit's lean
 * client maps those to Internal, as connect-node does), a response cut short (Unknown).
 */
const RETRYABLE = new Set([Code.Unavailable, Code.Aborted, Code.DeadlineExceeded, Code.Internal, Code.Unknown]);

/**
 * A ResourceExhausted about the size of the request (the server's readMaxBytes, or a
 * LIMIT_EXCEEDED naming a bytes/size field): sending the same batch again cannot succeed, halves can.
 */
export function isMessageSizeError(err: ConnectError): boolean {
  if (err.code !== Code.ResourceExhausted) return false;
  const info = errorInfoOf(err);
  if (info) return info.reason === ErrorReason.LIMIT_EXCEEDED && /bytes|size/i.test(info.metadata.field ?? "");
  return /message size|maxbytes/i.test(err.rawMessage);
}

/**
 * What to do after a failed call: "retry" (with backoff, same ids) on Unavailable, Aborted,
 * DeadlineExceeded, Internal, Unknown and on ResourceExhausted overload signals (a tenant rate/in-flight limit, a full
 * ingest queue: reason LIMIT_EXCEEDED); "split" on a request too large; "fail" otherwise.
 */
export function failureAction(err: ConnectError): "retry" | "split" | "fail" {
  if (RETRYABLE.has(err.code)) return "retry";
  if (err.code === Code.ResourceExhausted) return isMessageSizeError(err) ? "split" : "retry";
  return "fail";
}

interface Item {
  id: string;
  /** The encoded Event (length-prefixed), built once at track() and reused by retries. */
  bytes: Uint8Array;
  /** Bytes of the event in a request: the field tag (1 byte) and `bytes`. */
  size: number;
  /** The event's timestamp as encoded (ms since the epoch), for a failed result. */
  timestampMs: number;
  /** Its place in the order of track() calls (0, 1, ...): cut into a batch once `cut` passes it. */
  seq: number;
  result: Promise<TrackResult>;
  resolve(r: TrackResult): void;
}

/** Bytes of one IngestEventsRequest.events entry: tag 0x0a, then the length-prefixed Event. */
export const requestEntryBytes = (encoded: Uint8Array): number => 1 + encoded.length;

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

// One process "beforeExit" listener for every client with events pending: it sends what their
// (unref'd) timers would have sent, so a process that ends without close() still delivers. The
// sends keep the event loop alive; once every result is in, the loop empties and the process exits.
const exitFlushers = new Set<() => void>();
function onBeforeExit(): void {
  for (const f of exitFlushers) f();
}
const hasProcessEvents = typeof process !== "undefined" && typeof process.on === "function";
function watchExit(f: () => void): void {
  if (!hasProcessEvents || exitFlushers.has(f)) return;
  if (exitFlushers.size === 0) process.on("beforeExit", onBeforeExit);
  exitFlushers.add(f);
}
function unwatchExit(f: () => void): void {
  if (exitFlushers.delete(f) && exitFlushers.size === 0) process.off("beforeExit", onBeforeExit);
}

function checkInt(v: number | undefined, name: string, min: number, max: number, def: number): number {
  const x = v ?? def;
  if (!Number.isSafeInteger(x) || x < min || x > max) throw new RangeError(`${name}: must be an integer between ${min} and ${max}, got ${x}`);
  return x;
}

function propertyToWire(key: string, v: PropertyInput): WireProperty {
  if (typeof v === "string") return { kind: "string", value: v };
  if (typeof v === "boolean") return { kind: "bool", value: v };
  if (typeof v === "bigint") {
    if (v < INT64_MIN || v > INT64_MAX) throw new TypeError(`properties.${key}: integers must be within int64 (-2^63 to 2^63-1), got ${v}`);
    return { kind: "int", value: v };
  }
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new TypeError(`properties.${key}: numbers must be safe integers; pass { decimal: "..." } for fractions`);
    return { kind: "int", value: BigInt(v) };
  }
  if (v !== null && typeof v === "object" && typeof v.decimal === "string") return { kind: "decimal", value: v.decimal };
  throw new TypeError(`properties.${key}: must be a string, integer, bigint, boolean or { decimal }`);
}

/** The event in wire terms (throws TypeError on a float or an unsupported value). */
export function toWireEvent(e: TrackEvent, id: string, nowMs: number): WireEvent {
  const properties: Array<[string, WireProperty]> = [];
  for (const [k, v] of Object.entries(e.properties ?? {})) properties.push([k, propertyToWire(k, v)]);
  const tc = e.traceContext ?? currentTraceContext();
  const ms = e.timestamp ? e.timestamp.getTime() : nowMs;
  if (!Number.isSafeInteger(ms)) throw new TypeError("timestamp: must be a valid Date");
  return { id, customerId: e.customerId, type: e.type, timestampMs: ms, properties, traceparent: tc?.traceparent ?? "", tracestate: tc?.tracestate ?? "" };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function createMeteringClient(opts: MeteringClientOptions): MeteringClient {
  const batchSizeMax = checkInt(opts.batchSizeMax, "batchSizeMax", 1, SDK_LIMITS.BATCH_SIZE_MAX, SDK_LIMITS.BATCH_SIZE_DEFAULT);
  const flushIntervalMs = checkInt(opts.flushIntervalMs, "flushIntervalMs", 0, SDK_LIMITS.FLUSH_INTERVAL_MS_MAX, SDK_LIMITS.FLUSH_INTERVAL_MS_DEFAULT);
  const batchBytesMax = checkInt(opts.batchBytesMax, "batchBytesMax", SDK_LIMITS.BATCH_BYTES_MIN, SDK_LIMITS.BATCH_BYTES_MAX, SDK_LIMITS.BATCH_BYTES_DEFAULT);
  const queueLengthMax = checkInt(opts.queueLengthMax, "queueLengthMax", batchSizeMax, SDK_LIMITS.QUEUE_LENGTH_MAX, Math.max(batchSizeMax, SDK_LIMITS.QUEUE_LENGTH_DEFAULT));
  const queueBytesMax = checkInt(opts.queueBytesMax, "queueBytesMax", batchBytesMax, SDK_LIMITS.QUEUE_BYTES_MAX, Math.max(batchBytesMax, SDK_LIMITS.QUEUE_BYTES_DEFAULT));
  const inFlightMax = checkInt(opts.inFlightBatchesMax, "inFlightBatchesMax", 1, SDK_LIMITS.IN_FLIGHT_BATCHES_MAX, SDK_LIMITS.IN_FLIGHT_BATCHES_DEFAULT);
  const attemptsMax = checkInt(opts.retry?.attemptsMax, "retry.attemptsMax", 1, SDK_LIMITS.RETRY_ATTEMPTS_MAX, SDK_LIMITS.RETRY_ATTEMPTS_DEFAULT);
  const backoffInitial = checkInt(opts.retry?.backoffMsInitial, "retry.backoffMsInitial", 1, 60_000, SDK_LIMITS.RETRY_BACKOFF_MS_INITIAL_DEFAULT);
  const backoffMax = checkInt(opts.retry?.backoffMsMax, "retry.backoffMsMax", backoffInitial, 600_000, SDK_LIMITS.RETRY_BACKOFF_MS_MAX_DEFAULT);
  const timeoutMs = checkInt(opts.timeoutMs, "timeoutMs", 1, 600_000, SDK_LIMITS.TIMEOUT_MS_DEFAULT);
  const random = opts.random ?? Math.random;
  const newId = opts.newId ?? (() => `evt_${randomBytes(16).toString("base64url")}`);

  if (!opts.transport && (!opts.baseUrl || !opts.apiKey)) throw new RangeError("baseUrl and apiKey: required when no transport is given");
  const transport: Transport = opts.transport ?? createClientTransport({ baseUrl: opts.baseUrl!, apiKey: opts.apiKey!, protocol: opts.protocol ?? "connect", timeoutMs });

  let queue: Item[] = [];
  let queueBytes = 0; // request bytes of the queued (not yet sent) events
  let pending = 0; // queued + in flight
  let pendingBytes = 0; // request bytes of the events queued or in flight
  let inFlight = 0;
  /** The batches in flight (flush() waits for their events). */
  const sending = new Set<Item[]>();
  let tracked = 0; // events queued so far (the next Item.seq)
  let cut = 0; // events cut into batches so far: the items with seq < cut have been sent
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  /**
   * track() calls waiting for room, served in order: a call waits while any is waiting, so small
   * events cannot keep overtaking a large one. Woken with `true` when its room is reserved for it
   * (counted in pending and pendingBytes), with `false` by close().
   */
  const spaceWaiters: Array<{ size: number; wake: (reserved: boolean) => void }> = [];
  const slotWaiters: Array<() => void> = [];

  const hasSpace = (size: number) => pending < queueLengthMax && pendingBytes + size <= queueBytesMax;
  /** A full batch is queued: batchSizeMax events, or at least one request's worth of bytes. */
  const batchReady = () => queue.length >= batchSizeMax || queueBytes >= batchBytesMax;

  function settle(item: Item, r: TrackResult): void {
    pending--;
    pendingBytes -= item.size;
    item.resolve(r);
    try {
      opts.onResult?.(r);
    } catch {
      // a throwing callback must not break delivery
    }
    // Wake waiting track() calls in order while the room now free fits the first, reserving it.
    while (spaceWaiters.length > 0 && hasSpace(spaceWaiters[0]!.size)) {
      const w = spaceWaiters.shift()!;
      pending++;
      pendingBytes += w.size;
      w.wake(true);
    }
    if (pending === 0) unwatchExit(flushOnExit);
  }

  /** Settles each event with its result (the response's, in order). */
  function settleAll(batch: Item[], results: readonly WireResult[]): void {
    batch.forEach((item, i) => {
      const r = results[i];
      if (!r) return settle(item, { eventId: item.id, status: "failed", message: "no result from the server", timestamp: new Date(item.timestampMs) });
      const status: TrackStatus =
        r.status === IngestStatus.ACCEPTED ? "accepted" : r.status === IngestStatus.DUPLICATE ? "duplicate" : r.status === IngestStatus.CONFLICT ? "conflict" : "rejected";
      const out: TrackResult = { eventId: r.eventId, status };
      if (r.field) out.field = r.field;
      if (r.reason) out.reason = r.reason;
      if (r.message) out.message = r.message;
      if (r.sequence) out.sequence = r.sequence;
      settle(item, out);
    });
  }

  async function sendBatch(batch: Item[]): Promise<void> {
    let lastError: ConnectError | undefined;
    for (let attempt = 0; attempt < attemptsMax; attempt++) {
      if (attempt > 0) {
        const cap = Math.min(backoffMax, backoffInitial * 2 ** (attempt - 1));
        await sleep(Math.floor(cap / 2 + (random() * cap) / 2));
      }
      let results: WireResult[];
      try {
        // The pre-encoded events go out as field 1 (events) verbatim: protobuf-es writes unknown
        // fields as they are, so the request bytes are those of { events: [...] }. The results
        // come back as their bytes (INGEST_EVENTS_VIEW) and are decoded here by hand: a malformed
        // one fails the call, as a parse error of the whole response did.
        const req = create(IngestEventsRequestSchema);
        req.$unknown = batch.map((i) => ({ no: 1, wireType: WireType.LengthDelimited, data: i.bytes }));
        const res = await transport.unary(INGEST_EVENTS_VIEW, undefined, timeoutMs, undefined, req, undefined);
        results = res.message.events.map(decodeIngestResult);
      } catch (e) {
        lastError = ConnectError.from(e);
        const action = failureAction(lastError);
        if (action === "split" && batch.length > 1) {
          // Larger than this server reads: each half goes out on its own (same ids, its own attempts).
          const half = Math.ceil(batch.length / 2);
          await sendBatch(batch.slice(0, half));
          await sendBatch(batch.slice(half));
          return;
        }
        if (action !== "retry") break;
        continue;
      }
      settleAll(batch, results);
      return;
    }
    for (const item of batch) settle(item, { eventId: item.id, status: "failed", message: lastError?.message ?? "failed", error: lastError, timestamp: new Date(item.timestampMs) });
  }

  /** The next batch: up to batchSizeMax events and batchBytesMax request bytes (at least one event). */
  function cutBatch(): Item[] {
    const limit = Math.min(queue.length, batchSizeMax);
    let n = 0;
    let bytes = 0;
    // Every event fits a batch on its own (track() refuses larger ones), so n >= 1.
    while (n < limit && bytes + queue[n]!.size <= batchBytesMax) bytes += queue[n++]!.size;
    const batch = queue.slice(0, n);
    queue = queue.slice(n);
    queueBytes -= bytes;
    cut += n;
    return batch;
  }

  /** Sends batches while a slot is free: full batches only, or everything queued when `all`. */
  function pump(all: boolean): void {
    while (queue.length > 0 && inFlight < inFlightMax && (all || batchReady())) {
      const batch = cutBatch();
      inFlight++;
      sending.add(batch);
      void sendBatch(batch).finally(() => {
        inFlight--;
        sending.delete(batch);
        while (slotWaiters.length > 0) slotWaiters.shift()!();
        // Keep sending full batches; a partial remainder waits for the timer (or flush).
        schedule();
      });
    }
  }

  function schedule(): void {
    if (batchReady()) {
      if (timer) clearTimeout(timer);
      timer = undefined;
      pump(false);
    }
    if (!timer && queue.length > 0) {
      timer = setTimeout(() => {
        timer = undefined;
        pump(true);
        schedule();
      }, flushIntervalMs);
      timer.unref?.();
    }
  }

  async function flush(): Promise<void> {
    // Exactly the events queued or in flight now: a snapshot of their results, not "until nothing
    // is pending" (which never comes while other tasks keep tracking).
    const results: Array<Promise<TrackResult>> = [];
    for (const batch of sending) for (const item of batch) results.push(item.result);
    for (const item of queue) results.push(item.result);
    const last = queue.length > 0 ? queue[queue.length - 1]!.seq : -1;
    if (timer) clearTimeout(timer);
    timer = undefined;
    // Send them now (with whatever was queued behind them in the same batches), as slots free up.
    while (cut <= last) {
      pump(true);
      if (cut <= last) await new Promise<void>((r) => slotWaiters.push(r));
    }
    schedule(); // the events tracked meanwhile go out on the timer as usual
    await Promise.all(results);
  }

  // The timer is unref'd (it must not keep a process alive by itself); when the process runs out of
  // work with events still queued, send them (the process lives on until their results are in).
  function flushOnExit(): void {
    if (queue.length > 0) void flush();
  }

  return {
    get pending() {
      return pending;
    },
    get pendingBytes() {
      return pendingBytes;
    },
    async track(event) {
      if (closed) throw new TypeError("track: the client is closed");
      const id = event.id ?? newId();
      const wire = toWireEvent(event, id, Date.now()); // throws on floats before anything is queued
      const bytes = encodeEventEntry(wire);
      const size = requestEntryBytes(bytes);
      if (size > batchBytesMax) throw new TypeError(`track: event ${id} is ${size} bytes encoded, more than batchBytesMax (${batchBytesMax})`);
      if (spaceWaiters.length > 0 || !hasSpace(size)) {
        const reserved = await new Promise<boolean>((wake) => spaceWaiters.push({ size, wake }));
        if (closed) {
          if (reserved) {
            pending--;
            pendingBytes -= size;
            if (pending === 0) unwatchExit(flushOnExit);
          }
          throw new TypeError("track: the client is closed");
        }
      } else {
        pending++;
        pendingBytes += size;
      }
      watchExit(flushOnExit);
      let resolve!: (r: TrackResult) => void;
      const result = new Promise<TrackResult>((r) => (resolve = r));
      queue.push({ id, bytes, size, timestampMs: wire.timestampMs, seq: tracked++, result, resolve });
      queueBytes += size;
      schedule();
      return { id, result };
    },
    flush,
    async close() {
      closed = true;
      await flush();
      unwatchExit(flushOnExit);
      while (spaceWaiters.length > 0) spaceWaiters.shift()!.wake(false);
    },
  };
}
