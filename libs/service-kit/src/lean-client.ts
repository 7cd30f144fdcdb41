// A lean unary client (binary protobuf, the Connect or the gRPC protocol) over the shared HTTP/2
// session: the client half of the fast path. It implements connect-es's Transport, so createClient() works
// unchanged; streaming calls go to the connect-node transport it wraps. Per unary call it
// skips connect-es's async iterables, linked AbortControllers and undici Headers, but keeps
// the same interceptors (client tracing, auth headers), deadline (connect-timeout-ms + a local
// timer), error decoding (Connect JSON errors with details, HTTP status fallback; gRPC trailer
// status with details, trailers-only answers) and limits.
import type * as http2 from "node:http2";
import { create, type DescMessage, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type Interceptor,
  type StreamResponse,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createMethodSerializationLookup } from "@connectrpc/connect/protocol";
import { codeFromHttpStatus, errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { validateResponse as validateGrpcResponse, validateTrailer as validateGrpcTrailer } from "@connectrpc/connect/protocol-grpc";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { assertNotCompressed, encodeEnvelope, envelopes, ENVELOPE_HEADER_BYTES } from "./envelope.js";
import { invalidArgument } from "./errors.js";
import { asHeaders, LiteHeaders } from "./lite-headers.js";

export interface LeanTransportOptions {
  baseUrl: string;
  session: Http2SessionManager;
  interceptors: Interceptor[];
  /** Deadline of a call that gives no timeoutMs (ms, above 0: every call has one). */
  defaultTimeoutMs: number;
  readMaxBytes: number;
  writeMaxBytes: number;
  /** Handles streaming calls (a connect-node transport with the same options and protocol). */
  streams: Transport;
  /** Wire protocol of unary calls (default "connect"). */
  protocol?: "connect" | "grpc";
}

const USER_AGENT = "connect-es/2.1.2";
const kSignal = Symbol("nanobill.leanSignal");
const kTimeout = Symbol("nanobill.leanTimeout");
interface LeanCall {
  [kSignal]: AbortSignal | undefined;
  [kTimeout]: number;
}

/**
 * A limit on everything: connect-es reads a timeoutMs of 0 or less as "no deadline" (a call to a
 * hung server then waits forever); the lean transport refuses it, NaN and Infinity too, before
 * sending anything.
 */
function timeoutError(timeoutMs: number): ConnectError | undefined {
  return timeoutMs > 0 && Number.isFinite(timeoutMs) ? undefined : invalidArgument("timeoutMs", "must be a finite number of milliseconds above 0 (no call without a deadline)");
}


interface Serializer {
  parse(b: Uint8Array): unknown;
  serialize(m: unknown): Uint8Array;
}

/** As connect-node's connectErrorFromNodeReason. */
function errorFromNode(reason: unknown): ConnectError {
  let code = Code.Internal;
  const codes: string[] = [];
  for (let r = reason, i = 0; r instanceof Error && i < 8; r = (r as { cause?: unknown }).cause, i++) {
    const c = (r as { code?: unknown }).code;
    if (typeof c === "string") codes.push(c);
  }
  if (codes.includes("ERR_STREAM_WRITE_AFTER_END")) code = Code.Aborted;
  else if (codes.some((c) => c === "ERR_STREAM_DESTROYED" || c === "ERR_HTTP2_INVALID_STREAM" || c === "ECONNRESET")) code = Code.Aborted;
  else if (codes.some((c) => c === "ETIMEDOUT" || c === "ENOTFOUND" || c === "EAI_AGAIN" || c === "ECONNREFUSED")) code = Code.Unavailable;
  const ce = ConnectError.from(reason, code);
  if (ce !== reason) ce.cause = reason;
  return ce;
}

const RST: Record<number, [string, Code]> = {
  0x1: ["PROTOCOL_ERROR", Code.Internal],
  0x2: ["INTERNAL_ERROR", Code.Internal],
  0x3: ["FLOW_CONTROL_ERROR", Code.Internal],
  0x4: ["SETTINGS_TIMEOUT", Code.Internal],
  0x6: ["FRAME_SIZE_ERROR", Code.Internal],
  0x7: ["REFUSED_STREAM", Code.Unavailable],
  0x8: ["CANCEL", Code.Canceled],
  0x9: ["COMPRESSION_ERROR", Code.Internal],
  0xa: ["CONNECT_ERROR", Code.Internal],
  0xb: ["ENHANCE_YOUR_CALM", Code.ResourceExhausted],
  0xc: ["INADEQUATE_SECURITY", Code.PermissionDenied],
  0xd: ["HTTP_1_1_REQUIRED", Code.PermissionDenied],
};

/** Marks the error of a stream the server refused (REFUSED_STREAM): it did not process the request. */
const kRefused = Symbol("refused");

/** The error of a stream reset with `code` (as connect-node's connectErrorFromH2ResetCode); undefined for codes the table lacks. */
function rstError(code: number | undefined): ConnectError | undefined {
  const m = RST[code ?? 0];
  if (!m) return undefined;
  const e = new ConnectError(`http/2 stream closed with error code ${m[0]} (0x${code!.toString(16)})`, m[1]);
  if (code === 0x7) (e as unknown as Record<symbol, boolean>)[kRefused] = true;
  return e;
}

/** Splits response headers into header and trailer ("trailer-" prefix), as trailerDemux. */
function demux(h: http2.IncomingHttpHeaders): [LiteHeaders, LiteHeaders] {
  const header = new LiteHeaders();
  const trailer = new LiteHeaders();
  for (const k in h) {
    if (k.charCodeAt(0) === 58) continue;
    const v = h[k];
    if (v === undefined) continue;
    const s = typeof v === "string" ? v : v.join(", ");
    if (k.startsWith("trailer-")) trailer.append(k.slice(8), s);
    else header.append(k, s);
  }
  return [header, trailer];
}

/**
 * Runs one HTTP/2 request, sent again once if the server refused its stream (REFUSED_STREAM: the
 * request was not processed, RFC 9113 8.7), within the same deadline. A call crossing the GOAWAY of
 * a connection the server closed as idle (its idleConnectionMs) is refused so: 20% of calls made
 * right at the idle deadline failed Unavailable before (review of 2026-11-30).
 */
async function exchange(...args: Parameters<typeof exchangeOnce>): ReturnType<typeof exchangeOnce> {
  const [session, path, headers, body, readMaxBytes, timeoutMs, signal] = args;
  const started = performance.now();
  try {
    return await exchangeOnce(...args);
  } catch (e) {
    const left = Math.floor(timeoutMs - (performance.now() - started));
    if (!(e as Record<symbol, unknown>)[kRefused] || left <= 0 || signal?.aborted === true) throw e;
    return exchangeOnce(session, path, headers, body, readMaxBytes, left, signal);
  }
}

/** Runs one HTTP/2 request; resolves with status, headers and the whole body. */
function exchangeOnce(
  session: Http2SessionManager,
  path: string,
  headers: http2.OutgoingHttpHeaders,
  body: Uint8Array,
  readMaxBytes: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    let stream: http2.ClientHttp2Stream | undefined;
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fail = (e: ConnectError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (stream !== undefined && !stream.destroyed) stream.close(0x8 /* CANCEL */);
      reject(e);
    };
    function onAbort(this: AbortSignal): void {
      const r: unknown = this.reason;
      fail(r instanceof ConnectError ? r : ConnectError.from(r ?? new Error("This operation was aborted"), Code.Canceled));
    }
    if (signal !== undefined) {
      if (signal.aborted) return onAbort.call(signal);
      signal.addEventListener("abort", onAbort);
    }
    timer = setTimeout(() => fail(new ConnectError("the operation timed out", Code.DeadlineExceeded)), timeoutMs);
    session.request("POST", path, headers, {}).then(
      (s) => {
        if (settled) {
          s.close(0x8);
          return;
        }
        stream = s;
        let status = 0;
        let resHeaders: http2.IncomingHttpHeaders = {};
        let resTrailers: http2.IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        let count = 0;
        s.on("response", (h) => {
          status = Number(h[":status"]);
          resHeaders = h;
        });
        s.on("trailers", (h) => {
          resTrailers = h;
        });
        s.on("data", (c: Buffer) => {
          session.notifyResponseByteRead(s);
          count += c.byteLength;
          if (count > readMaxBytes) {
            fail(new ConnectError(`message size is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted));
            return;
          }
          chunks.push(c);
        });
        s.on("end", () => {
          if (settled) return;
          // No response headers: the server reset the stream (CANCEL and NO_ERROR end it without
          // an "error" event). NO_ERROR and codes the table lacks: Internal, as gRPC maps NO_ERROR.
          if (status === 0) {
            fail(rstError(s.rstCode) ?? new ConnectError(`http/2 stream closed without response headers (error code 0x${(s.rstCode ?? 0).toString(16)})`, Code.Internal));
            return;
          }
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          resolve({ status, headers: resHeaders, trailers: resTrailers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, count) });
        });
        s.on("error", (e) => {
          // A reset by the server or by nghttp2 (ERR_HTTP2_STREAM_ERROR; ENHANCE_YOUR_CALM also when
          // the whole session got it): the RST code decides (REFUSED_STREAM -> Unavailable, safe to
          // retry), not Node's message (Internal). Other errors (connection lost, PING timeout: the
          // stream's rstCode is then the session's) keep errorFromNode's code.
          const byCode = (e as { code?: unknown }).code === "ERR_HTTP2_STREAM_ERROR" || s.rstCode === 0xb ? rstError(s.rstCode) : undefined;
          fail(byCode ?? errorFromNode(e));
        });
        s.on("close", () => {
          // A stream refused ENHANCE_YOUR_CALM retires its connection: the session manager's rule
          // (client.ts, CalmRetiringSessionManager), for connect-node's streams too.
          if (settled) return;
          fail(rstError(s.rstCode) ?? new ConnectError("http/2 stream closed before the response ended", Code.Unavailable));
        });
        s.end(body);
      },
      (e: unknown) => fail(errorFromNode(e)),
    );
  });
}

/** The message of a unary gRPC response body (undefined: none), with connect-es's checks. */
function unaryGrpcOutput(body: Uint8Array, readMaxBytes: number): Uint8Array | undefined {
  let message: Uint8Array | undefined;
  for (const env of envelopes(body, readMaxBytes)) {
    // No grpc-accept-encoding is sent, so a compressed message is a server error.
    assertNotCompressed(env.flags);
    if (message !== undefined) throw new ConnectError("protocol error: received extra output message for unary method", Code.Unimplemented);
    message = env.data;
  }
  return message;
}

/** The request headers as a node:http2 header object. */
function nodeHeaders(req: UnaryRequest): http2.OutgoingHttpHeaders {
  const headers: http2.OutgoingHttpHeaders = {};
  const rh: unknown = req.header;
  if (rh instanceof LiteHeaders) rh.toNode(headers as Record<string, string>);
  else
    req.header.forEach((v, k) => {
      headers[k] = v;
    });
  return headers;
}

/**
 * A Transport whose unary calls use the lean binary path (Connect or gRPC); streaming calls go
 * to opts.streams. Same interceptor semantics as connect-es (outermost first).
 */
export function createLeanTransport(opts: LeanTransportOptions): Transport {
  const base = opts.baseUrl.replace(/\/$/, "");
  const serializers = new WeakMap<DescMethodUnary, Serializer>();
  const serializerOf = (method: DescMethodUnary): Serializer => {
    let s = serializers.get(method);
    if (s === undefined) {
      const l = createMethodSerializationLookup(method, undefined, undefined, { readMaxBytes: opts.readMaxBytes, writeMaxBytes: opts.writeMaxBytes });
      const i = l.getI(true);
      const o = l.getO(true);
      s = { parse: (b) => o.parse(b), serialize: (m) => i.serialize(m as never) };
      serializers.set(method, s);
    }
    return s;
  };

  const grpc = opts.protocol === "grpc";

  // The innermost step: the HTTP/2 exchange (req.signal carries caller signal + deadline).
  const send = async (req: UnaryRequest): Promise<UnaryResponse> => {
    if (grpc) return sendGrpc(req);
    const method = req.method;
    const ser = serializerOf(method);
    const body = ser.serialize(req.message);
    const headers = nodeHeaders(req);
    const k = req as unknown as LeanCall;
    const r = await exchange(opts.session, `/${method.parent.typeName}/${method.name}`, headers, body, opts.readMaxBytes, k[kTimeout], k[kSignal]);
    const [header, trailer] = demux(r.headers);
    const enc = header.get("content-encoding");
    if (enc !== null && enc.toLowerCase() !== "identity") {
      throw new ConnectError(`unsupported response encoding "${enc}"`, Code.Internal, asHeaders(header));
    }
    const ct = header.get("content-type");
    if (r.status !== 200) {
      const fallback = new ConnectError(`HTTP ${r.status}`, codeFromHttpStatus(r.status), asHeaders(header));
      if (ct !== null && /^application\/json(;|$)/i.test(ct)) {
        const all = new Headers(asHeaders(header));
        trailer.forEach((v, key) => all.append(key, v));
        throw errorFromJsonBytes(r.body, all, fallback);
      }
      throw fallback;
    }
    if (ct === null || !/^application\/proto(;|$)/i.test(ct)) {
      throw new ConnectError(`unsupported content type ${ct}`, ct === null ? Code.Unknown : Code.Internal, asHeaders(header));
    }
    return {
      stream: false,
      service: method.parent,
      method,
      header: asHeaders(header),
      trailer: asHeaders(trailer),
      message: ser.parse(r.body) as never,
    };
  };
  /** As connect-es's gRPC transport: status 200 and a gRPC content type, one message, the status in the trailer (or header, trailers-only). */
  const sendGrpc = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const method = req.method;
    const ser = serializerOf(method);
    const body = encodeEnvelope(ser.serialize(req.message));
    const headers = nodeHeaders(req);
    const k = req as unknown as LeanCall;
    const r = await exchange(opts.session, `/${method.parent.typeName}/${method.name}`, headers, body, opts.readMaxBytes + ENVELOPE_HEADER_BYTES, k[kTimeout], k[kSignal]);
    const header = asHeaders(LiteHeaders.fromNode(r.headers));
    const trailer = asHeaders(LiteHeaders.fromNode(r.trailers));
    const { headerError } = validateGrpcResponse(r.status, header);
    const enc = header.get("grpc-encoding");
    if (enc !== null && enc.toLowerCase() !== "identity") throw new ConnectError(`unsupported response encoding "${enc}"`, Code.Internal, header);
    const bytes = unaryGrpcOutput(r.body, opts.readMaxBytes);
    validateGrpcTrailer(trailer, header);
    if (bytes === undefined) {
      if (headerError) throw headerError;
      throw new ConnectError("protocol error: missing output message for unary method", trailer.has("grpc-status") ? Code.Unimplemented : Code.Unknown);
    }
    if (headerError) throw new ConnectError("protocol error: received output message for unary method with error status", Code.Unknown);
    return { stream: false, service: method.parent, method, header, trailer, message: ser.parse(bytes) as never };
  };

  let next = send;
  for (let i = opts.interceptors.length - 1; i >= 0; i--) next = opts.interceptors[i]!(next as never) as never;

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0] | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const t = timeoutMs ?? opts.defaultTimeoutMs;
      const bad = timeoutError(t);
      if (bad !== undefined) throw bad;
      const h = new LiteHeaders();
      if (header !== undefined) {
        if (header instanceof Headers || header instanceof LiteHeaders) (header as Headers).forEach((v, k) => h.set(k, v));
        else if (Array.isArray(header)) for (const [k, v] of header) h.append(k!, v!);
        else for (const k of Object.keys(header)) h.set(k, (header as Record<string, string>)[k]!);
      }
      if (grpc) {
        h.set("grpc-timeout", `${t}m`);
        h.set("content-type", "application/grpc+proto");
        h.set("te", "trailers");
      } else {
        h.set("connect-timeout-ms", String(t));
        h.set("content-type", "application/proto");
        h.set("connect-protocol-version", "1");
      }
      if (!h.has("user-agent")) h.set("user-agent", USER_AGENT);
      let lazySignal: AbortSignal | undefined;
      const req = {
        stream: false as const,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: `${base}/${method.parent.typeName}/${method.name}`,
        header: asHeaders(h),
        contextValues: contextValues ?? createContextValues(),
        message: create(method.input, input),
        get signal(): AbortSignal {
          // Created only if an interceptor asks; the exchange itself uses the caller's signal and its own timer.
          lazySignal ??= signal ?? new AbortController().signal;
          return lazySignal;
        },
        [kSignal]: signal,
        [kTimeout]: t,
      };
      try {
        return (await next(req as unknown as UnaryRequest)) as unknown as UnaryResponse<I, O>;
      } catch (e) {
        throw ConnectError.from(e);
      }
    },
    stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0] | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      const bad = timeoutError(timeoutMs ?? opts.defaultTimeoutMs);
      if (bad !== undefined) return Promise.reject(bad);
      return opts.streams.stream(method, signal, timeoutMs, header, input, contextValues);
    },
  };
}
