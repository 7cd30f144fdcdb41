// The unary fast path of startServer: the Connect and gRPC protocols, binary protobuf, POST, no
// request compression. It runs the SAME interceptors (tracing, error boundary, auth, the server's own)
// and the SAME handler function the router registered, with the same limits and the same wire
// format as connect-es's generic handlers (handler-factory.js of @connectrpc/connect's
// protocol-connect and protocol-grpc), but without their per-call async iterables, linked
// AbortControllers, deadline timer and undici Headers. Everything else (gRPC-Web, JSON, GET,
// streaming, compressed requests, services registered with their own options) goes to
// connectNodeAdapter.
import * as http2 from "node:http2";
import { create, type DescMessage, type DescMethodUnary, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ConnectRouter,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { compressionNegotiate, createMethodSerializationLookup, type Compression } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes, parseTimeout } from "@connectrpc/connect/protocol-connect";
import { parseTimeout as parseGrpcTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { assertNotCompressed, encodeEnvelope, envelopes, ENVELOPE_HEADER_BYTES, FLAG_COMPRESSED } from "./envelope.js";
import { asHeaders, LiteHeaders } from "./lite-headers.js";
import { requestDecodeError, toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";

const CONTENT_TYPE_PROTO = "application/proto";
const CONTENT_TYPE_JSON = "application/json";
/** What a gRPC server answers for binary protobuf (connect-es protocol-grpc's contentTypeProto). */
const CONTENT_TYPE_GRPC_PROTO = "application/grpc+proto";

type Protocol = "connect" | "grpc";
/** connect-es default: responses smaller than this are never compressed. */
const COMPRESS_MIN_BYTES = 1024;
/** The server's accepted compressions: connectNodeAdapter's default (gzip, br). */
const ACCEPT_COMPRESSION: Compression[] = [compressionGzip, compressionBrotli];

// HTTP/2 RST_STREAM codes (RFC 9113) mapped as connect-node does for the request signal.
const H2_RST_CODE: Record<number, [string, Code]> = {
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
function errorFromRstCode(rstCode: number | undefined): ConnectError | undefined {
  const m = rstCode === undefined ? undefined : H2_RST_CODE[rstCode];
  if (m === undefined) return undefined;
  return new ConnectError(`http/2 stream closed with error code ${m[0]} (0x${rstCode!.toString(16)})`, m[1]);
}

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

/** One registered service, as passed to router.service(). */
interface CapturedService {
  service: DescService;
  impl: Record<string, unknown>;
  options: object | undefined;
}

/**
 * A unary method's binary handler for the fast path (binary Connect and gRPC): it reads `input`
 * and answers `output`, messages with the method's own wire format whose hot repeated fields are
 * `bytes` (each item encoded or decoded by hand). JSON, gRPC-Web and compressed calls keep the
 * generated schemas and the service's regular handler, so both must give the same answers.
 */
export interface BinaryView {
  input?: DescMessage;
  output?: DescMessage;
  impl: (req: unknown, ctx: HandlerContext) => unknown;
}

const kBinaryViews = Symbol("nanobill.binaryViews");

/**
 * Registers a binary view of one method (see BinaryView) on a router given to routes() by
 * startServer; on any other router (createRouterTransport, a plain connectNodeAdapter) it does
 * nothing, and the regular handler serves every call.
 */
export function registerBinaryView(router: ConnectRouter, method: DescMethodUnary, view: BinaryView): void {
  const register = (router as unknown as { [kBinaryViews]?: (path: string, view: BinaryView) => void })[kBinaryViews];
  register?.(`/${method.parent.typeName}/${method.name}`, view);
}

/**
 * Wraps the router given to a service's routes() so that every router.service(desc, impl)
 * is also recorded (the same impl object; the generic path still gets it unchanged), and
 * registerBinaryView() calls land in `views`.
 */
export function captureRouter(router: ConnectRouter, into: CapturedService[], views: Map<string, BinaryView> = new Map()): ConnectRouter {
  const spy: ConnectRouter & { [kBinaryViews]: (path: string, view: BinaryView) => void } = {
    [kBinaryViews]: (path: string, view: BinaryView) => {
      views.set(path, view);
    },
    get handlers() {
      return router.handlers;
    },
    service(service, impl, options) {
      router.service(service, impl, options);
      into.push({ service, impl: impl as Record<string, unknown>, options });
      return spy;
    },
    rpc(method, impl, options) {
      router.rpc(method as never, impl as never, options);
      return spy;
    },
  } as ConnectRouter & { [kBinaryViews]: (path: string, view: BinaryView) => void };
  return spy;
}

interface CallState {
  stream: http2.ServerHttp2Stream;
  shutdownSignal: AbortSignal;
  /** Date.now() + timeoutMs, or undefined without a deadline. */
  deadlineAt: number | undefined;
  timeoutMs: number | undefined;
  authority: string;
  path: string;
  controller: AbortController | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  cleanup: (() => void) | undefined;
}

const kCall = Symbol("nanobill.fastCall");

/** The call's AbortSignal, created on first use: deadline, shutdown and client reset abort it. */
function signalOf(s: CallState): AbortSignal {
  if (s.controller !== undefined) return s.controller.signal;
  const c = new AbortController();
  s.controller = c;
  const abort = (reason?: unknown): void => {
    if (!c.signal.aborted) c.abort(reason);
    s.cleanup?.();
  };
  if (s.shutdownSignal.aborted) {
    abort(s.shutdownSignal.reason);
    return c.signal;
  }
  const onShutdown = (): void => abort(s.shutdownSignal.reason);
  const onClose = (): void => abort(errorFromRstCode(s.stream.rstCode));
  s.shutdownSignal.addEventListener("abort", onShutdown);
  s.stream.once("close", onClose);
  if (s.deadlineAt !== undefined) {
    const left = s.deadlineAt - Date.now();
    const onDeadline = (): void => abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    if (left <= 0) onDeadline();
    else s.timer = setTimeout(onDeadline, left);
  }
  s.cleanup = () => {
    s.cleanup = undefined;
    clearTimeout(s.timer);
    s.shutdownSignal.removeEventListener("abort", onShutdown);
    s.stream.off("close", onClose);
  };
  if (c.signal.aborted) s.cleanup();
  return c.signal;
}

/** Ends the call: like connect-es's `context.abort(reason)` in the generic handler. */
function finishCall(s: CallState, reason?: unknown): void {
  const c = s.controller;
  if (c === undefined) return;
  if (!c.signal.aborted) c.abort(reason);
  s.cleanup?.();
}

interface FastMethod {
  method: DescMethodUnary;
  service: DescService;
  parse(bytes: Uint8Array): unknown;
  serialize(msg: unknown): Uint8Array;
  next: (req: UnaryRequest) => Promise<UnaryResponse>;
}

export interface FastPathOptions {
  interceptors: Interceptor[];
  /** Where an answer that cannot be encoded is logged (as the error boundary logs any fault). */
  logger: Logger;
  readMaxBytes: number;
  writeMaxBytes: number;
  timeoutMsMax: number;
  timeoutMsDefault: number;
  shutdownSignal: AbortSignal;
}

/**
 * The answer's bytes. An answer protobuf cannot encode (an int64 past its range, say) is a fault of
 * the handler: a logged, redacted Internal, as the error boundary makes any fault (connect-es's
 * serializer would answer its own text, unlogged). Its other refusals (writeMaxBytes:
 * ResourceExhausted) pass through.
 */
function serializeAnswer(fm: FastMethod, msg: unknown, opts: FastPathOptions): Uint8Array {
  try {
    return fm.serialize(msg);
  } catch (e) {
    if (e instanceof ConnectError && e.code !== Code.Internal) throw e;
    const fault = new Error(e instanceof ConnectError ? e.rawMessage : String(e), { cause: e });
    throw toConnectError(fault, opts.logger, `${fm.service.typeName}/${fm.method.name}`);
  }
}

/** Copies every entry of `from` over `to` (as connect-es does when an interceptor swapped headers). */
function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  const keys: string[] = [];
  to.forEach((_, k) => keys.push(k));
  for (const k of keys) to.delete(k);
  from.forEach((v, k) => to.set(k, v));
}

/**
 * The fast-path request handler: returns false (touching nothing) when the request is not a
 * unary Connect binary call of a captured method, so the caller passes it on to the adapter.
 */
export function createFastPath(
  captured: CapturedService[],
  opts: FastPathOptions,
  views: ReadonlyMap<string, BinaryView> = new Map(),
): ((req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => boolean) & { readonly calls: number } {
  const methods = new Map<string, FastMethod>();
  let calls = 0;
  for (const c of captured) {
    // Per-service options (interceptors, limits, ...) change the semantics: generic path.
    if (c.options !== undefined && Object.keys(c.options).length > 0) continue;
    for (const m of c.service.methods) {
      if (m.methodKind !== "unary") continue;
      const fn = c.impl[m.localName];
      if (typeof fn !== "function") continue; // Unimplemented: let connect answer
      const method = m as DescMethodUnary;
      const view = views.get(`/${c.service.typeName}/${method.name}`);
      const impl = view !== undefined ? view.impl : (fn as AnyImpl).bind(c.impl);
      const outputSchema = view?.output ?? method.output;
      const wire = view === undefined ? method : ({ ...method, input: view.input ?? method.input, output: outputSchema } as DescMethodUnary);
      const serialization = createMethodSerializationLookup(wire, undefined, undefined, {
        readMaxBytes: opts.readMaxBytes,
        writeMaxBytes: opts.writeMaxBytes,
      });
      const input = serialization.getI(true);
      const output = serialization.getO(true);
      const service = c.service;
      const anyFn = async (req: UnaryRequest): Promise<UnaryResponse> => {
        const call = (req as unknown as { [kCall]: CallHandle })[kCall];
        const out = await impl(req.message, call.handlerContext(req));
        return {
          stream: false,
          service,
          method,
          header: call.responseHeader,
          trailer: call.responseTrailer,
          message: create(outputSchema, out as never) as never,
        };
      };
      let next = anyFn as (req: UnaryRequest) => Promise<UnaryResponse>;
      for (let i = opts.interceptors.length - 1; i >= 0; i--) next = opts.interceptors[i]!(next as never) as never;
      methods.set(`/${service.typeName}/${method.name}`, {
        method,
        service,
        // An undecodable request is the client's mistake: InvalidArgument naming it (as startServer
        // makes connect-es's "parse binary" Internal on the generic path).
        parse: (b) => {
          try {
            return input.parse(b);
          } catch (e) {
            throw requestDecodeError(e, method.input, undefined) ?? e;
          }
        },
        serialize: (m) => output.serialize(m as never),
        next,
      });
    }
  }
  const connectTimeoutDefault = String(opts.timeoutMsDefault);
  const grpcTimeoutDefault = `${opts.timeoutMsDefault}m`;

  const fast = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): boolean => {
    if (methods.size === 0 || req.method !== "POST") return false;
    const h = req.headers;
    const ct = h["content-type"];
    let protocol: Protocol;
    if (ct === CONTENT_TYPE_PROTO) {
      const enc = h["content-encoding"];
      if (enc !== undefined && enc !== "identity") return false;
      protocol = "connect";
    } else if (ct === "application/grpc" || ct === CONTENT_TYPE_GRPC_PROTO) {
      const enc = h["grpc-encoding"];
      if (enc !== undefined && enc !== "identity") return false;
      protocol = "grpc";
    } else return false;
    const fm = methods.get(req.url);
    if (fm === undefined) return false;
    calls++;
    const p = protocol === "connect" ? handle(fm, req, res, h, opts, connectTimeoutDefault) : handleGrpc(fm, req, res, h, opts, grpcTimeoutDefault);
    p.catch(() => {
      // Only reachable if building the error answer itself failed: reset the stream.
      if (!req.stream.destroyed) req.stream.close(0x2 /* INTERNAL_ERROR */);
    });
    return true;
  };
  return Object.defineProperty(fast, "calls", { get: () => calls }) as typeof fast & { readonly calls: number };
}

/** Per-call objects shared by the interceptor request and the handler context. */
class CallHandle {
  readonly responseHeader: Headers;
  readonly responseTrailer: Headers;
  constructor(
    readonly state: CallState,
    readonly fm: FastMethod,
    readonly protocol: Protocol = "connect",
  ) {
    const rh = new LiteHeaders();
    const rt = new LiteHeaders();
    if (protocol === "connect") rh.set("content-type", CONTENT_TYPE_PROTO);
    else {
      rh.set("content-type", CONTENT_TYPE_GRPC_PROTO);
      rt.set("grpc-status", "0");
    }
    this.responseHeader = asHeaders(rh);
    this.responseTrailer = asHeaders(rt);
  }
  url(): string {
    return `http://${this.state.authority}${this.state.path}`;
  }
  /** The HandlerContext the handler sees: connect-es's mergeRequest(context, req). */
  handlerContext(req: UnaryRequest): HandlerContext {
    const call = this;
    const s = this.state;
    return {
      method: this.fm.method,
      service: req.service,
      requestMethod: "POST",
      protocolName: this.protocol,
      get url() {
        return call.url();
      },
      get signal() {
        // The original request's signal is created on first use (see signalOf).
        return req.signal;
      },
      timeoutMs: () => (s.deadlineAt === undefined ? undefined : s.deadlineAt - Date.now()),
      requestHeader: req.header,
      responseHeader: this.responseHeader,
      responseTrailer: this.responseTrailer,
      values: req.contextValues,
      abort(reason?: unknown) {
        finishCall(s, reason);
      },
    } as HandlerContext;
  }
}

function callState(req: http2.Http2ServerRequest, opts: FastPathOptions, timeoutMs: number | undefined): CallState {
  return {
    stream: req.stream,
    shutdownSignal: opts.shutdownSignal,
    deadlineAt: timeoutMs === undefined ? undefined : Date.now() + timeoutMs,
    timeoutMs,
    authority: req.authority,
    path: req.url,
    controller: undefined,
    timer: undefined,
    cleanup: undefined,
  };
}

/** The interceptor chain's request (its signal created on first use). */
function unaryRequest(fm: FastMethod, call: CallHandle, h: http2.IncomingHttpHeaders, message: unknown): UnaryRequest {
  const request = {
    stream: false as const,
    service: fm.service,
    method: fm.method,
    requestMethod: "POST",
    get url() {
      return call.url();
    },
    get signal() {
      return signalOf(call.state);
    },
    header: asHeaders(LiteHeaders.fromNode(h)),
    contextValues: createContextValues(),
    message,
    [kCall]: call,
  };
  return request as unknown as UnaryRequest;
}

function readBody(req: http2.Http2ServerRequest, readMaxBytes: number, lengthHeader: string | undefined): Promise<Uint8Array> {
  // Same checks and messages as connect-es readAllBytes().
  let hint: number | undefined;
  if (lengthHeader !== undefined && /^\d+$/.test(lengthHeader)) {
    hint = parseInt(lengthHeader, 10);
    if (!Number.isSafeInteger(hint)) hint = undefined;
  }
  if (hint !== undefined && hint > readMaxBytes) {
    return Promise.reject(new ConnectError(`message size ${hint} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted));
  }
  return new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let count = 0;
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onAborted);
    };
    const fail = (e: unknown): void => {
      cleanup();
      req.pause();
      reject(e);
    };
    const onData = (c: Buffer): void => {
      count += c.byteLength;
      if (hint !== undefined) {
        if (count > hint) return fail(new ConnectError(`protocol error: promised ${hint} bytes, received ${count}`, Code.InvalidArgument));
      } else if (count > readMaxBytes) {
        return fail(new ConnectError(`message size is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted));
      }
      chunks.push(c);
    };
    const onEnd = (): void => {
      cleanup();
      if (hint !== undefined && count < hint) {
        reject(new ConnectError(`protocol error: promised ${hint} bytes, received ${count}`, Code.InvalidArgument));
        return;
      }
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, count));
    };
    const onError = (e: Error): void => fail(ConnectError.from(e));
    const onAborted = (): void => fail(new ConnectError("request aborted", Code.Canceled));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onAborted);
  });
}

async function handle(
  fm: FastMethod,
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  h: http2.IncomingHttpHeaders,
  opts: FastPathOptions,
  connectTimeoutDefault: string,
): Promise<void> {
  const timeoutHeader = h["connect-timeout-ms"];
  const timeout = parseTimeout(typeof timeoutHeader === "string" ? timeoutHeader : connectTimeoutDefault, opts.timeoutMsMax);
  const state = callState(req, opts, timeout.timeoutMs);
  const call = new CallHandle(state, fm);
  const acceptEncoding = h["accept-encoding"];
  const compression = compressionNegotiate(ACCEPT_COMPRESSION, null, typeof acceptEncoding === "string" ? acceptEncoding : null, "accept-encoding");
  let status = 200;
  let body: Uint8Array;
  try {
    if (timeout.error) throw timeout.error;
    const bytes = await bodyByDeadline(readBody(req, opts.readMaxBytes, h["content-length"]), req, timeout.timeoutMs ?? opts.timeoutMsMax);
    const message = fm.parse(bytes);
    const out = await fm.next(unaryRequest(fm, call, h, message));
    copyHeaders(out.header, call.responseHeader);
    copyHeaders(out.trailer, call.responseTrailer);
    body = serializeAnswer(fm, out.message, opts);
    finishCall(state);
  } catch (e) {
    finishCall(state, e);
    const error = e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
    status = codeToHttpStatus(error.code);
    call.responseHeader.set("content-type", CONTENT_TYPE_JSON);
    error.metadata.forEach((v, k) => call.responseHeader.set(k, v));
    body = errorToJsonBytes(error, {});
  }
  try {
    if (compression.response && body.byteLength >= COMPRESS_MIN_BYTES) {
      body = await compression.response.compress(body);
      call.responseHeader.set("content-encoding", compression.response.name);
    }
    const out: Record<string, string> = {};
    (call.responseHeader as unknown as LiteHeaders).toNode(out);
    call.responseTrailer.forEach((v, k) => {
      const key = `trailer-${k}`;
      out[key] = out[key] === undefined ? v : `${out[key]}, ${v}`;
    });
    out["content-length"] = String(body.byteLength);
    if (res.writableEnded || req.stream.destroyed) return;
    res.writeHead(status, out);
    res.end(body); // a body still arriving is discarded, then reset (server.ts onStreamFinish)
  } catch {
    // The client went away while we were writing: nothing to answer.
    if (!req.stream.destroyed) req.stream.close();
  }
}

/**
 * A unary request body that has not fully arrived by the call's deadline fails the call with
 * DeadlineExceeded (reading stops; the stream is reset once the answer is written): a body that
 * never ends cannot hold a stream or its buffered bytes past the deadline. The deadline is the
 * request's timeout, else the server's default (every call has one).
 */
function bodyByDeadline(read: Promise<Uint8Array>, req: http2.Http2ServerRequest, ms: number): Promise<Uint8Array> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      req.pause();
      reject(new ConnectError("the request body did not arrive before the deadline", Code.DeadlineExceeded));
    }, ms);
  });
  return Promise.race([read, expired]).finally(() => clearTimeout(timer));
}

/**
 * Reads a unary gRPC request body, failing as soon as an envelope header declares more than
 * readMaxBytes (connect-es's check and message, before the rest is read) and reading at most the
 * first envelope plus a second one's header (a second message is refused by unaryGrpcMessage).
 */
function readGrpcBody(req: http2.Http2ServerRequest, readMaxBytes: number): Promise<Uint8Array> {
  return new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let count = 0;
    /** Bytes worth reading: the first envelope's header, then its message and the next header. */
    let want = ENVELOPE_HEADER_BYTES;
    let firstLength: number | undefined;
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onAborted);
    };
    const fail = (e: unknown): void => {
      cleanup();
      req.pause();
      reject(e);
    };
    const done = (): void => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, count));
    };
    /** The declared length of the envelope header at `at` (the bytes are there). */
    const lengthAt = (all: Buffer, at: number): number => all.readUInt32BE(at + 1);
    /** Envelope headers read so far (0, 1 or 2). */
    let headers = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      count += c.byteLength;
      while (count >= want) {
        if (headers === 2) return done();
        const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, count);
        chunks.length = 0;
        chunks.push(all);
        const at = headers === 0 ? 0 : ENVELOPE_HEADER_BYTES + firstLength!;
        const length = lengthAt(all, at);
        if (length > readMaxBytes) return fail(new ConnectError(`message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted));
        if (headers === 0) {
          firstLength = length;
          // The first message and the next envelope's header (if any).
          want = 2 * ENVELOPE_HEADER_BYTES + length;
        } else {
          // A second message: read it whole (bounded), as connect-es does before refusing it.
          want = 2 * ENVELOPE_HEADER_BYTES + firstLength! + length;
        }
        headers++;
      }
    };
    const onEnd = (): void => done();
    const onError = (e: Error): void => fail(ConnectError.from(e));
    const onAborted = (): void => fail(new ConnectError("request aborted", Code.Canceled));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onAborted);
  });
}

/**
 * The single message of a unary gRPC request body, with the generic path's checks in its order
 * (first envelope, not compressed, parse, then no second message).
 */
function unaryGrpcMessage(fm: FastMethod, body: Uint8Array, readMaxBytes: number): unknown {
  const it = envelopes(body, readMaxBytes);
  const first = it.next();
  if (first.done === true) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
  try {
    assertNotCompressed(first.value.flags);
  } catch (e) {
    throw requestDecodeError(e, fm.method.input, CONTENT_TYPE_GRPC_PROTO) ?? e;
  }
  const message = fm.parse(first.value.data);
  if (it.next().done !== true) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
  return message;
}

/** A unary gRPC call: like handle(), with the gRPC envelope, grpc-timeout and a trailer status. */
async function handleGrpc(
  fm: FastMethod,
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  h: http2.IncomingHttpHeaders,
  opts: FastPathOptions,
  grpcTimeoutDefault: string,
): Promise<void> {
  const timeoutHeader = h["grpc-timeout"];
  const timeout = parseGrpcTimeout(typeof timeoutHeader === "string" ? timeoutHeader : grpcTimeoutDefault, opts.timeoutMsMax);
  const state = callState(req, opts, timeout.timeoutMs);
  const call = new CallHandle(state, fm, "grpc");
  const acceptEncoding = h["grpc-accept-encoding"];
  const compression = compressionNegotiate(ACCEPT_COMPRESSION, null, typeof acceptEncoding === "string" ? acceptEncoding : null, "grpc-accept-encoding");
  if (compression.response) call.responseHeader.set("grpc-encoding", compression.response.name);
  let body: Uint8Array | undefined;
  try {
    if (compression.error) throw compression.error;
    if (timeout.error) throw timeout.error;
    const bytes = await bodyByDeadline(readGrpcBody(req, opts.readMaxBytes), req, timeout.timeoutMs ?? opts.timeoutMsMax);
    const message = unaryGrpcMessage(fm, bytes, opts.readMaxBytes);
    const out = await fm.next(unaryRequest(fm, call, h, message));
    copyHeaders(out.header, call.responseHeader);
    copyHeaders(out.trailer, call.responseTrailer);
    let data = serializeAnswer(fm, out.message, opts);
    let flags = 0;
    if (compression.response && data.byteLength >= COMPRESS_MIN_BYTES) {
      data = await compression.response.compress(data);
      flags = FLAG_COMPRESSED;
    }
    body = encodeEnvelope(data, flags);
    finishCall(state);
  } catch (e) {
    finishCall(state, e);
    body = undefined;
    setTrailerStatus(call.responseTrailer, e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e));
  }
  try {
    const head: Record<string, string> = {};
    (call.responseHeader as unknown as LiteHeaders).toNode(head);
    const trailers: Record<string, string> = {};
    (call.responseTrailer as unknown as LiteHeaders).toNode(trailers);
    if (res.writableEnded || req.stream.destroyed) return;
    res.writeHead(200, head);
    res.addTrailers(trailers);
    if (body === undefined) res.end();
    else res.end(body);
  } catch {
    if (!req.stream.destroyed) req.stream.close();
  }
}

export type { CapturedService };
