// OTLP receiver for OpenTelemetry GenAI spans. OTLP/HTTP: POST /v1/traces with Content-Type
// application/json (OTLP/JSON) or application/x-protobuf, optionally Content-Encoding: gzip,
// `authorization: Bearer <ingest key>`.
// OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export on the metering port
// (server.ts). Spans with gen_ai.* usage attributes become usage events through the tenant's
// GenAI mapping and go through the same validation, dedupe and durable write as IngestEvents.
// Answers an OTLP ExportTraceServiceResponse (partialSuccess counts spans whose event was rejected).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ExportTraceServiceRequestSchema,
  ExportTraceServiceResponseSchema,
  type ExportTraceServiceRequest,
  type ExportTraceServiceResponse,
} from "@nanobill/contracts/opentelemetry/proto/collector/trace/v1/trace_service_pb";
import type { KeyValue } from "@nanobill/contracts/opentelemetry/proto/common/v1/common_pb";
import { ANY_TENANT, TENANT_HEADER, TENANT_RATE_FIELD, hasScope, isOperator, isTenantId, type Authenticator, type Logger, type TenantLimiter } from "@nanobill/service-kit";
import { IngestStatus, type IngestResult } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import type { EventInput } from "./domain/event.js";
import { GENAI_MAPPING_DEFAULT, spansToEvents, type AttributeValue, type GenAiMapping, type GenAiSpan } from "./domain/genai.js";
import { EVENTS_PER_REQUEST_MAX, OTLP_BYTES_MAX, OTLP_EXPORT_TIMEOUT_MS, OTLP_SPANS_MAX } from "./limits.js";

export class OtlpFormatError extends Error {
  constructor(readonly field: string, rule: string) {
    super(`${field}: ${rule}`);
  }
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const arr = (v: unknown, field: string): unknown[] => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new OtlpFormatError(field, "must be an array");
  return v;
};

/**
 * An attribute's value. One that cannot be read (an intValue sent as a JSON number past 2^53, which
 * JSON.parse has rounded; a malformed int or double; an array, kvlist or bytes) is kept as an
 * UnmappableValue saying why: spansToEvents rejects the span only if its mapping reads that
 * attribute (a mapped property or the customer attribute). Before, such a value on any attribute
 * of any span, even an unrelated non-GenAI one, failed the whole export with a 400.
 */
function anyValue(v: unknown): AttributeValue | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) return { unmappable: "the value is not an OTLP AnyValue object" };
  if (typeof v.stringValue === "string") return v.stringValue;
  if (typeof v.boolValue === "boolean") return v.boolValue;
  if (v.intValue !== undefined) {
    // proto3 JSON sends int64 as a string; a bare number past 2^53 was already rounded by JSON.parse.
    if (typeof v.intValue === "number" && !Number.isSafeInteger(v.intValue) && Number.isInteger(v.intValue)) {
      return { unmappable: "intValue: a JSON number beyond 2^53 loses precision; send int64 as a string" };
    }
    const s = typeof v.intValue === "string" || typeof v.intValue === "number" ? String(v.intValue) : "";
    if (!/^-?\d{1,19}$/.test(s)) return { unmappable: "intValue must be an integer" };
    return BigInt(s);
  }
  if (v.doubleValue !== undefined && v.doubleValue !== null) {
    if (typeof v.doubleValue === "number") return v.doubleValue;
    // proto3 JSON may quote a double ("12.5", "NaN", "Infinity").
    const d = typeof v.doubleValue === "string" && /^(-?Infinity|NaN|-?\d+(\.\d+)?([eE][+-]?\d+)?)$/.test(v.doubleValue) ? Number(v.doubleValue) : undefined;
    if (d === undefined) return { unmappable: "doubleValue must be a number" };
    return d;
  }
  // Present but with no property form: a span mapping it is rejected (naming the attribute).
  for (const kind of ["arrayValue", "kvlistValue", "bytesValue"] as const) if (v[kind] !== undefined && v[kind] !== null) return { unmappable: `a ${kind} has no property form` };
  return undefined; // an empty AnyValue: absent
}

function attributes(list: unknown, field: string): Map<string, AttributeValue> {
  const out = new Map<string, AttributeValue>();
  for (const kv of arr(list, field)) {
    // An entry without a key cannot be read by any mapping: ignored, like any unmapped attribute.
    if (!isObj(kv) || typeof kv.key !== "string") continue;
    const v = anyValue(kv.value);
    if (v !== undefined) out.set(kv.key, v);
  }
  return out;
}

/** Parses an OTLP/JSON ExportTraceServiceRequest into spans (ids as lower-case hex). */
export function parseOtlpJson(body: unknown): GenAiSpan[] {
  if (!isObj(body)) throw new OtlpFormatError("body", "must be a JSON object");
  const spans: GenAiSpan[] = [];
  for (const [r, rs] of arr(body.resourceSpans, "resourceSpans").entries()) {
    if (!isObj(rs)) throw new OtlpFormatError(`resourceSpans[${r}]`, "must be an object");
    const resourceAttributes = attributes(isObj(rs.resource) ? rs.resource.attributes : undefined, `resourceSpans[${r}].resource.attributes`);
    for (const [s, ss] of arr(rs.scopeSpans, `resourceSpans[${r}].scopeSpans`).entries()) {
      if (!isObj(ss)) throw new OtlpFormatError(`resourceSpans[${r}].scopeSpans[${s}]`, "must be an object");
      for (const [k, sp] of arr(ss.spans, `resourceSpans[${r}].scopeSpans[${s}].spans`).entries()) {
        const f = `resourceSpans[${r}].scopeSpans[${s}].spans[${k}]`;
        if (!isObj(sp)) throw new OtlpFormatError(f, "must be an object");
        if (spans.length >= OTLP_SPANS_MAX) throw new OtlpFormatError("resourceSpans", `at most ${OTLP_SPANS_MAX} spans per request`);
        const traceId = typeof sp.traceId === "string" ? sp.traceId.toLowerCase() : "";
        const spanId = typeof sp.spanId === "string" ? sp.spanId.toLowerCase() : "";
        if (!/^[0-9a-f]{16}$/.test(spanId)) throw new OtlpFormatError(`${f}.spanId`, "must be 16 hex digits");
        if (!/^[0-9a-f]{32}$/.test(traceId)) throw new OtlpFormatError(`${f}.traceId`, "must be 32 hex digits");
        const end = sp.endTimeUnixNano === undefined ? "0" : String(sp.endTimeUnixNano);
        if (!/^\d{1,20}$/.test(end)) throw new OtlpFormatError(`${f}.endTimeUnixNano`, "must be an unsigned integer");
        spans.push({ traceId, spanId, endTimeUnixNano: BigInt(end), attributes: attributes(sp.attributes, `${f}.attributes`), resourceAttributes });
      }
    }
  }
  return spans;
}

function protoAttributes(list: KeyValue[]): Map<string, AttributeValue> {
  const out = new Map<string, AttributeValue>();
  for (const kv of list) {
    const v = kv.value?.value;
    if (!v) continue;
    if (v.case === "stringValue" || v.case === "boolValue" || v.case === "intValue" || v.case === "doubleValue") out.set(kv.key, v.value);
    // arrays, kvlists, bytes: present, with no property form (a span mapping one is rejected)
    else if (v.case !== undefined) out.set(kv.key, { unmappable: `a ${v.case} has no property form` });
  }
  return out;
}

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

/** The spans of a decoded OTLP protobuf ExportTraceServiceRequest (ids as lower-case hex). */
export function spansFromProto(req: ExportTraceServiceRequest): GenAiSpan[] {
  const spans: GenAiSpan[] = [];
  for (const [r, rs] of req.resourceSpans.entries()) {
    const resourceAttributes = protoAttributes(rs.resource?.attributes ?? []);
    for (const [s, ss] of rs.scopeSpans.entries()) {
      for (const [k, sp] of ss.spans.entries()) {
        const f = `resource_spans[${r}].scope_spans[${s}].spans[${k}]`;
        if (spans.length >= OTLP_SPANS_MAX) throw new OtlpFormatError("resource_spans", `at most ${OTLP_SPANS_MAX} spans per request`);
        if (sp.spanId.length !== 8) throw new OtlpFormatError(`${f}.span_id`, "must be 8 bytes");
        if (sp.traceId.length !== 16) throw new OtlpFormatError(`${f}.trace_id`, "must be 16 bytes");
        spans.push({ traceId: hex(sp.traceId), spanId: hex(sp.spanId), endTimeUnixNano: sp.endTimeUnixNano, attributes: protoAttributes(sp.attributes), resourceAttributes });
      }
    }
  }
  return spans;
}

/**
 * Maps spans to events with the tenant's mapping and ingests them (chunks of a request's size);
 * the OTLP response: partial success counts spans whose event was rejected or conflicted.
 */
export async function exportSpans(
  spans: GenAiSpan[],
  mapping: GenAiMapping,
  ingest: (events: EventInput[]) => Promise<IngestResult[]>,
): Promise<ExportTraceServiceResponse> {
  const mapped = spansToEvents(spans, mapping);
  const { events } = mapped;
  // Spans whose mapped attribute has no property form are rejected before ingestion.
  let rejected = mapped.rejected.length;
  const messages: string[] = mapped.rejected.slice(0, 5).map((r) => `${r.eventId}: ${r.message}`);
  for (let i = 0; i < events.length; i += EVENTS_PER_REQUEST_MAX) {
    const results = await ingest(events.slice(i, i + EVENTS_PER_REQUEST_MAX));
    for (const r of results) {
      if (r.status === IngestStatus.REJECTED || r.status === IngestStatus.CONFLICT) {
        rejected++;
        if (messages.length < 5) messages.push(`${r.eventId}: ${r.message}`);
      }
    }
  }
  return create(ExportTraceServiceResponseSchema, rejected > 0 ? { partialSuccess: { rejectedSpans: BigInt(rejected), errorMessage: messages.join("; ") } } : {});
}

/** google.rpc.Status {code, message} in protobuf: the OTLP/HTTP error body for protobuf requests. */
function rpcStatusBytes(code: number, message: string): Buffer {
  const m = Buffer.from(message, "utf8");
  const len: number[] = [];
  for (let n = m.length; ; n >>>= 7) {
    if (n < 0x80) {
      len.push(n);
      break;
    }
    len.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([0x08, code, 0x12, ...len]), m]);
}

export interface OtlpReceiverDeps {
  authenticator: Authenticator;
  /**
   * The per-tenant rate and in-flight limiter, shared with the gRPC server of the process (one
   * budget per tenant whichever door its usage comes in by).
   */
  limiter: TenantLimiter;
  logger: Logger;
  ingest(tenant: string, events: EventInput[]): Promise<IngestResult[]>;
  mappingFor(tenant: string): Promise<GenAiMapping>;
  /** From the request's arrival to its answer (default OTLP_EXPORT_TIMEOUT_MS); past it, 503. */
  exportTimeoutMs?: number;
}

function send(res: ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > OTLP_BYTES_MAX) return undefined;
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

const gunzipAsync = promisify(gunzip);

/**
 * The body as sent (identity), or inflated (gzip, the OTel Collector's otlphttp exporter's default)
 * to at most OTLP_BYTES_MAX bytes: zlib stops at maxOutputLength, so a small body that inflates to
 * gigabytes costs no more than the limit ("too_large").
 */
async function decodeBody(body: Buffer, encoding: "identity" | "gzip"): Promise<Buffer | "too_large" | { malformed: string }> {
  // an empty body is an empty request whatever its encoding label (gunzip refuses zero bytes)
  if (encoding === "identity" || body.length === 0) return body;
  try {
    return await gunzipAsync(body, { maxOutputLength: OTLP_BYTES_MAX });
  } catch (e) {
    if ((e as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE") return "too_large";
    return { malformed: (e as Error).message };
  }
}

/** The request handler (mount it on any node:http server). */
export function createOtlpHandler(deps: OtlpReceiverDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const timeoutMs = deps.exportTimeoutMs ?? OTLP_EXPORT_TIMEOUT_MS;
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const arrived = performance.now();
    if (req.url?.split("?")[0] !== "/v1/traces") return send(res, 404, { message: "only /v1/traces is served" });
    if (req.method !== "POST") return send(res, 405, { message: "POST only" });
    const principal = deps.authenticator.authenticate(req.headers.authorization ?? null);
    if (!principal) return send(res, 401, { message: "missing or invalid API key" });
    if (!hasScope(principal, "ingest")) return send(res, 403, { message: `key ${principal.keyId} lacks scope "ingest"` });
    let tenant = principal.tenant;
    if (principal.scopes.includes("internal")) {
      const t = req.headers[TENANT_HEADER];
      if (typeof t === "string" && t !== "") {
        if (!isTenantId(t) || (principal.tenant !== ANY_TENANT && principal.tenant !== t)) return send(res, 403, { message: `${TENANT_HEADER}: not allowed` });
        tenant = t;
      }
      if (tenant === ANY_TENANT) return send(res, 400, { message: `${TENANT_HEADER}: required for internal keys` });
    }
    // The tenant's rate and in-flight limits, as on the gRPC server (the operator's key is exempt
    // unless limitInternal); the slot is held until the answer is sent.
    if (!isOperator(principal) || deps.limiter.limits.limitInternal) {
      const got = deps.limiter.acquire(tenant);
      if (typeof got === "string") {
        res.setHeader("retry-after", "1");
        return send(res, 429, { message: `${got}: tenant limit exceeded (${got === TENANT_RATE_FIELD ? `${deps.limiter.limits.requestsPerSecond} requests/s` : `${deps.limiter.limits.inflightMax} in flight`}), retry later` });
      }
      // Released when the answer is sent, or after it when an export that ran out of time is
      // still being stored (its work still counts against the tenant's in-flight limit).
      res.once("close", () => (work ? void work.finally(got) : got()));
    }
    let work: Promise<unknown> | undefined;
    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim();
    const proto = type === "application/x-protobuf";
    if (!proto && type !== "application/json") return send(res, 415, { message: "content-type: application/json (OTLP/JSON) or application/x-protobuf" });
    // Errors answer in the request's encoding: JSON {message}, or a protobuf google.rpc.Status.
    const fail = (status: number, grpcCode: number, message: string) => {
      if (!proto) return send(res, status, { message });
      const body = rpcStatusBytes(grpcCode, message);
      res.writeHead(status, { "content-type": "application/x-protobuf", "content-length": body.length });
      res.end(body);
    };
    const encoding = (req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
    if (encoding !== "identity" && encoding !== "gzip") return fail(415, 3, "content-encoding: gzip or identity (or none)");
    const raw = await readBody(req);
    if (!raw) return fail(413, 8, `body: at most ${OTLP_BYTES_MAX} bytes`);
    const body = await decodeBody(raw, encoding);
    if (body === "too_large") return fail(413, 8, `body: at most ${OTLP_BYTES_MAX} bytes once decompressed`);
    if (!Buffer.isBuffer(body)) return fail(400, 3, `body: not valid gzip (${body.malformed})`);
    let spans: GenAiSpan[];
    try {
      spans = proto ? spansFromProto(fromBinary(ExportTraceServiceRequestSchema, body)) : parseOtlpJson(JSON.parse(body.toString("utf8")));
    } catch (e) {
      if (e instanceof OtlpFormatError || e instanceof SyntaxError) return fail(400, 3, e.message);
      if (proto && e instanceof Error) return fail(400, 3, `body: not an OTLP ExportTraceServiceRequest (${e.message})`);
      throw e;
    }
    const exported = (async () => exportSpans(spans, await deps.mappingFor(tenant), (events) => deps.ingest(tenant, events)))();
    work = exported.catch((e: unknown) => e);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), Math.max(0, timeoutMs - (performance.now() - arrived)))));
    const out = await Promise.race([exported, late]).finally(() => clearTimeout(timer));
    if (out === "late") {
      // The work goes on (a commit cannot be called back); its failure, if any, is logged.
      exported.catch((e: unknown) => deps.logger.error("otlp export failed after its answer (503)", { err: e }));
      res.setHeader("retry-after", "1");
      return fail(503, 14, `unavailable: not stored within ${timeoutMs} ms, retry later (spans already stored then answer as duplicates)`);
    }
    if (proto) {
      const bytes = toBinary(ExportTraceServiceResponseSchema, out);
      res.writeHead(200, { "content-type": "application/x-protobuf", "content-length": bytes.length });
      res.end(bytes);
      return;
    }
    send(res, 200, out.partialSuccess ? { partialSuccess: { rejectedSpans: String(out.partialSuccess.rejectedSpans), errorMessage: out.partialSuccess.errorMessage } } : {});
  }
  return (req, res) => {
    handle(req, res).catch((e: unknown) => {
      const unavailable = typeof e === "object" && e !== null && ((e as { code?: unknown }).code === "unavailable" || (e as Error).name === "IngestQueueFullError");
      deps.logger.error("otlp request failed", { err: e });
      if (!res.headersSent) send(res, unavailable ? 503 : 500, { message: unavailable ? "unavailable, retry later" : "internal error" });
    });
  };
}

/** A node:http server serving the OTLP handler (port 0 = any free port). */
export async function startOtlpServer(deps: OtlpReceiverDeps, port: number, host = "0.0.0.0"): Promise<{ url: string; port: number; close(): Promise<void> }> {
  const server: Server = createServer(createOtlpHandler(deps));
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const actual = typeof addr === "object" && addr ? addr.port : port;
  return {
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${actual}`,
    port: actual,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export { GENAI_MAPPING_DEFAULT };
