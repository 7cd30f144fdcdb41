import { setMaxListeners } from "node:events";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createContextValues, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamToJson,
  errorFromJsonBytes,
  errorToJsonBytes,
  parseContentType as parseConnectContentType,
  parseTimeout as parseConnectTimeout,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError, parseContentType as parseGrpcContentType, parseTimeout as parseGrpcTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { parseContentType as parseGrpcWebContentType, trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { encodeEnvelope } from "./envelope.js";
import { createTracingInterceptor } from "@nanobill/telemetry";
import { createAuthInterceptor, type Authenticator } from "./auth.js";
import { createErrorBoundary, kReachedBoundary, requestDecodeError } from "./errors.js";
import { captureRouter, createFastPath, type BinaryView, type CapturedService } from "./fast-path.js";
import { createTenantLimitInterceptor, type TenantLimiter, type TenantLimits } from "./tenant-limits.js";
import { createHealthState, registerHealth, ServingStatus } from "./health.js";
import {
  CONNECTIONS_MAX_DEFAULT,
  fastPathEnabledByEnv,
  READ_MAX_BYTES_DEFAULT,
  READ_MAX_BYTES_MAX,
  SHUTDOWN_GRACE_MS_DEFAULT,
  HANDLER_OVERRUN_MS_DEFAULT,
  HANDLER_OVERRUN_MS_MAX,
  HANDSHAKE_MS_DEFAULT,
  HANDSHAKE_MS_MAX,
  IDLE_CONNECTION_MS_DEFAULT,
  IDLE_CONNECTION_MS_MAX,
  SHUTDOWN_GRACE_MS_MAX,
  STREAMS_PER_CONNECTION_MAX,
  TIMEOUT_MS_DEFAULT,
  TIMEOUT_MS_MAX_DEFAULT,
  TIMEOUT_MS_MAX_MAX,
  WRITE_MAX_BYTES_DEFAULT,
} from "./limits.js";
import { createLogger, type Logger } from "./logger.js";
import { createJsonRequestDecoder } from "./json-int64.js";

/** How often close() checks whether in-flight calls are done. */
const SHUTDOWN_POLL_MS = 5;
/** How long, and how many bytes, a stream whose response is complete may keep sending an unread request body. */
const STREAM_DRAIN_MS = 1_000;
export const STREAM_DRAIN_BYTES_MAX = 16 * 1024 * 1024;
/**
 * A call on connect-es's generic path whose request body is still arriving this long after its
 * deadline is reset (RST_STREAM CANCEL): connect-es aborts the handler at the deadline, but it
 * reads a unary body without one, so a body that never ends (sent before any auth) held its stream
 * and its bytes for as long as the client kept the connection. A call whose body has arrived is
 * left to connect-es and its handler (a late answer, e.g. DeadlineExceeded on a loaded box, still
 * goes out).
 */
const GENERIC_DEADLINE_GRACE_MS = 1_000;

const GRPC_TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };

/**
 * The deadline a call asked for, in ms, as connect-es reads it (`grpc-timeout` for the gRPC
 * protocols, else `connect-timeout-ms`), capped at maxMs; absentMs (default maxMs) when absent, maxMs
 * when malformed (such a call is answered with an error at once anyway).
 */
export function callTimeoutMs(headers: http2.IncomingHttpHeaders, maxMs: number, absentMs = maxMs): number {
  const ct = headers["content-type"]?.toLowerCase();
  if (ct !== undefined && ct.startsWith("application/grpc")) {
    if (headers["grpc-timeout"] === undefined) return absentMs;
    const m = /^(\d{1,8})([HMSmun])$/.exec(String(headers["grpc-timeout"]));
    return m === null ? maxMs : Math.min(maxMs, Math.ceil(Number(m[1]) * GRPC_TIMEOUT_UNIT_MS[m[2]!]!));
  }
  if (headers["connect-timeout-ms"] === undefined) return absentMs;
  const v = String(headers["connect-timeout-ms"]);
  return /^\d{1,10}$/.test(v) ? Math.min(maxMs, Number(v)) : maxMs;
}

/**
 * A deadline above maxMs, refused by the kit in connect-es's words and wire format (Connect unary
 * and streaming, gRPC, gRPC-Web) before connect-es sees the call: connect-es arms its deadline
 * timer before it refuses one, and a value past 2^31-1 ms printed a TimeoutOverflowWarning per
 * request. False (nothing written) when the deadline is not above maxMs, or the content type is
 * none of those (connect-es answers the call).
 */
function refuseLongDeadline(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, maxMs: number): boolean {
  const h = req.headers;
  const ct = h["content-type"] ?? "";
  const header = (name: string): string | null => {
    const v = h[name];
    return typeof v === "string" ? v : null;
  };
  const web = parseGrpcWebContentType(ct);
  const grpc = web === undefined ? parseGrpcContentType(ct) : undefined;
  // A Connect GET has no content type (its encoding is a query parameter): unary either way.
  const connect = web !== undefined || grpc !== undefined ? undefined : req.method === "GET" ? { stream: false, binary: false } : parseConnectContentType(ct);
  if (web?.text === true || (web === undefined && grpc === undefined && connect === undefined)) return false;
  const t = connect !== undefined ? parseConnectTimeout(header("connect-timeout-ms"), maxMs) : parseGrpcTimeout(header("grpc-timeout"), maxMs);
  if (t.error === undefined || t.timeoutMs === undefined) return false;
  const err = t.error;
  if (connect !== undefined && !connect.stream) {
    const body = errorToJsonBytes(err, {});
    res.writeHead(codeToHttpStatus(err.code), { "content-type": "application/json", "content-length": String(body.byteLength) });
    res.end(body);
  } else if (connect !== undefined) {
    const json = new TextEncoder().encode(JSON.stringify(endStreamToJson(new Headers(), err, {})));
    res.writeHead(200, { "content-type": connect.binary ? "application/connect+proto" : "application/connect+json" });
    res.end(encodeEnvelope(json, endStreamFlag));
  } else {
    const trailer = new Headers();
    setTrailerStatus(trailer, err);
    const fields: Record<string, string> = {};
    trailer.forEach((v, k) => (fields[k] = v));
    if (web !== undefined) {
      res.writeHead(200, { "content-type": web.binary ? "application/grpc-web+proto" : "application/grpc-web+json" });
      res.end(encodeEnvelope(trailerSerialize(trailer), trailerFlag));
    } else {
      res.writeHead(200, { "content-type": grpc!.binary ? "application/grpc+proto" : "application/grpc+json" });
      res.addTrailers(fields);
      res.end();
    }
  }
  return true;
}

async function bytesOf(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  if (body !== undefined) for await (const p of body) parts.push(p);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * A unary method's connect-es handler whose undecodable requests are answered InvalidArgument
 * (see requestDecodeError) instead of connect-es's Internal "parse binary: ..." or compressed-
 * envelope error. connect-es decodes a unary request before any interceptor runs and writes its
 * error itself, so the answer is rewritten here, only when the call never reached the error
 * boundary (an error from the handler, e.g. a downstream answer it could not decode, is left
 * alone): the Connect JSON error body, the gRPC trailers, the gRPC-Web trailer envelope.
 */
function withRequestDecodeErrors(h: UniversalHandler): UniversalHandler {
  const input = h.method.input;
  const wrapped = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const res = await h(req);
    if (req.contextValues?.get(kReachedBoundary) !== false || res.header?.get("content-encoding") != null || res.header?.get("grpc-encoding") != null) return res;
    const ct = req.header.get("content-type");
    const rct = res.header?.get("content-type") ?? "";
    if (res.status === 500 && rct === "application/json") {
      const bytes = await bytesOf(res.body);
      const err = requestDecodeError(errorFromJsonBytes(bytes, undefined, new ConnectError("", Code.Internal)), input, ct);
      if (err === undefined) return { ...res, body: (async function* () { yield bytes; })() };
      const body = errorToJsonBytes(err, {});
      res.header!.set("content-length", String(body.byteLength));
      return { ...res, status: codeToHttpStatus(err.code), body: (async function* () { yield body; })() };
    }
    if (res.trailer !== undefined) {
      const err = requestDecodeError(findTrailerError(res.trailer), input, ct);
      if (err !== undefined) setTrailerStatus(res.trailer, err);
      return res;
    }
    if (rct.startsWith("application/grpc-web")) {
      const bytes = await bytesOf(res.body);
      let body = bytes;
      // An error before any message: the body is the trailer envelope alone.
      if (bytes.byteLength >= 5 && bytes[0] === trailerFlag && new DataView(bytes.buffer, bytes.byteOffset).getUint32(1) === bytes.byteLength - 5) {
        const trailer = trailerParse(bytes.subarray(5));
        const err = requestDecodeError(findTrailerError(trailer), input, ct);
        if (err !== undefined) {
          setTrailerStatus(trailer, err);
          body = encodeEnvelope(trailerSerialize(trailer), trailerFlag);
        }
      }
      return { ...res, body: (async function* () { yield body; })() };
    }
    return res;
  };
  return Object.assign(wrapped, {
    service: h.service,
    method: h.method,
    requestPath: h.requestPath,
    supportedContentType: h.supportedContentType,
    protocolNames: h.protocolNames,
    allowedMethods: h.allowedMethods,
  });
}

export interface ServerLimits {
  /** Largest request message read (bytes); larger -> ResourceExhausted. */
  readMaxBytes: number;
  /** Largest response message written (bytes). */
  writeMaxBytes: number;
  /** Longest deadline a client may ask for (ms); larger -> InvalidArgument. */
  timeoutMsMax: number;
  /** Deadline of a call that sends none (ms). */
  timeoutMsDefault: number;
  /** Most concurrent connections. */
  connectionsMax?: number;
  /** How long close() waits for in-flight calls (ms). */
  shutdownGraceMs: number;
  /**
   * Generic path (connect-es): how long past its deadline (plus 1 s) a call whose request body
   * has arrived may keep its stream before it is reset — a handler that ignores its signal (ms).
   */
  handlerOverrunMs?: number;
  /** A connection with no stream open for this long is closed (GOAWAY; ms). */
  idleConnectionMs?: number;
  /** A connection that has not sent the HTTP/2 preface and SETTINGS this long after it opened is destroyed (ms). */
  handshakeMs?: number;
}

export const SERVER_LIMITS_DEFAULT: Required<ServerLimits> = {
  readMaxBytes: READ_MAX_BYTES_DEFAULT,
  writeMaxBytes: WRITE_MAX_BYTES_DEFAULT,
  timeoutMsMax: TIMEOUT_MS_MAX_DEFAULT,
  timeoutMsDefault: TIMEOUT_MS_DEFAULT,
  connectionsMax: CONNECTIONS_MAX_DEFAULT,
  shutdownGraceMs: SHUTDOWN_GRACE_MS_DEFAULT,
  handlerOverrunMs: HANDLER_OVERRUN_MS_DEFAULT,
  idleConnectionMs: IDLE_CONNECTION_MS_DEFAULT,
  handshakeMs: HANDSHAKE_MS_DEFAULT,
};

export interface StartedServer {
  /** http://host:port (127.0.0.1 when listening on all interfaces). */
  url: string;
  port: number;
  /** Graceful: stop accepting, health NOT_SERVING, in-flight calls finish (shutdownGraceMs), then sessions destroyed. */
  close(): Promise<void>;
  /** Sets the health status of one service name ("" = whole server), e.g. NOT_SERVING while a dependency is down. */
  setHealth(service: string, serving: boolean): void;
  /** Calls answered by the unary fast path so far (tests check which path served). */
  readonly fastPathCalls: number;
}

export interface StartServerOptions {
  name: string;
  host?: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  authenticator: Authenticator;
  limits?: Partial<ServerLimits>;
  logger?: Logger;
  /** "pkg.Service" or "pkg.Service/Method" reachable without a key (grpc.health.v1.Health always is). */
  publicMethods?: string[];
  /** Extra interceptors, run inside auth (closest to the handler). */
  interceptors?: Interceptor[];
  /**
   * Serve unary Connect-protocol binary calls through the kit's fast path (same interceptors,
   * handlers, limits and wire format; see fast-path.ts). Default true; false = connect-es only.
   */
  fastPath?: boolean;
  /**
   * Per-tenant request rate and concurrency limits of this server (ResourceExhausted, reason
   * LIMIT_EXCEEDED); defaults TENANT_* in limits.ts; false turns them off.
   */
  tenantLimits?: Partial<TenantLimits> | false;
  /**
   * The limiter to count tenants' calls in (default: a new one from tenantLimits): pass the one
   * another listener of the process uses (metering's OTLP/HTTP receiver) so a tenant has one budget.
   */
  tenantLimiter?: TenantLimiter;
}

function checkLimit(name: keyof ServerLimits, v: number, min: number, max: number): void {
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new RangeError(`limits.${name}: must be an integer between ${min} and ${max}, got ${v}`);
  }
}

export function resolveLimits(partial: Partial<ServerLimits> | undefined): Required<ServerLimits> {
  const l: Required<ServerLimits> = { ...SERVER_LIMITS_DEFAULT };
  for (const [k, v] of Object.entries(partial ?? {})) if (v !== undefined) (l as Record<string, number>)[k] = v;
  checkLimit("readMaxBytes", l.readMaxBytes, 1, READ_MAX_BYTES_MAX);
  checkLimit("writeMaxBytes", l.writeMaxBytes, 1, READ_MAX_BYTES_MAX);
  checkLimit("timeoutMsMax", l.timeoutMsMax, 1, TIMEOUT_MS_MAX_MAX);
  checkLimit("timeoutMsDefault", l.timeoutMsDefault, 1, l.timeoutMsMax);
  checkLimit("connectionsMax", l.connectionsMax, 1, 1_000_000);
  checkLimit("shutdownGraceMs", l.shutdownGraceMs, 0, SHUTDOWN_GRACE_MS_MAX);
  checkLimit("handlerOverrunMs", l.handlerOverrunMs, 0, HANDLER_OVERRUN_MS_MAX);
  checkLimit("idleConnectionMs", l.idleConnectionMs, 1, IDLE_CONNECTION_MS_MAX);
  checkLimit("handshakeMs", l.handshakeMs, 1, HANDSHAKE_MS_MAX);
  return l;
}

/**
 * Starts an HTTP/2 cleartext (h2c) server answering gRPC, gRPC-Web and Connect on one port,
 * with grpc.health.v1.Health, limits, the tracing interceptor (outermost), the error boundary,
 * API-key auth, and graceful close. Port 0 picks a free port (see the returned url/port).
 */
export async function startServer(opts: StartServerOptions): Promise<StartedServer> {
  const limits = resolveLimits(opts.limits);
  const logger = opts.logger ?? createLogger({ service: opts.name });
  const health = createHealthState();
  const shutdown = new AbortController();
  // Every call links its signal to this one (one listener per call in flight).
  setMaxListeners(0, shutdown.signal);
  const grpcTimeoutDefault = `${limits.timeoutMsDefault}m`;
  const connectTimeoutDefault = String(limits.timeoutMsDefault);

  const captured: CapturedService[] = [];
  /** Request paths connect-es serves (others get its 404, whatever their headers). */
  const paths = new Set<string>();
  const views = new Map<string, BinaryView>();
  const interceptors: Interceptor[] = [
    createTracingInterceptor("server", { serviceName: opts.name }),
    createErrorBoundary(logger),
    createAuthInterceptor(opts.authenticator, opts.publicMethods ?? []),
    ...(opts.tenantLimits === false ? [] : [createTenantLimitInterceptor(opts.tenantLimits ?? {}, opts.tenantLimiter)]),
    ...(opts.interceptors ?? []),
  ];
  // connect-es passes jsonOptions to its JSON serialization, which also reads textDecoder (not in
  // the option's declared type).
  const jsonOptions: NonNullable<Parameters<typeof connectNodeAdapter>[0]["jsonOptions"]> & { textDecoder: ReturnType<typeof createJsonRequestDecoder> } = {
    textDecoder: createJsonRequestDecoder(),
  };
  const handler = connectNodeAdapter({
    routes(router) {
      opts.routes(captureRouter(router, captured, views));
      for (const h of router.handlers) health.set(h.service.typeName, ServingStatus.SERVING);
      registerHealth(router, health);
      for (const h of router.handlers) paths.add(h.requestPath);
      router.handlers.forEach((h, i) => {
        if (h.method.methodKind === "unary") router.handlers[i] = withRequestDecodeErrors(h);
      });
    },
    interceptors,
    readMaxBytes: limits.readMaxBytes,
    writeMaxBytes: limits.writeMaxBytes,
    maxTimeoutMs: limits.timeoutMsMax,
    shutdownSignal: shutdown.signal,
    // Every JSON request message is decoded by this: an integer past 2^53-1 sent as a bare JSON
    // number (JSON.parse would round it) is InvalidArgument naming its field (json-int64.ts).
    jsonOptions,
    // Our own per-call values, so withRequestDecodeErrors sees whether a call reached the boundary.
    contextValues: () => createContextValues(),
  });
  health.set("", ServingStatus.SERVING);
  const fast =
    opts.fastPath === false || (opts.fastPath === undefined && !fastPathEnabledByEnv())
      ? undefined
      : createFastPath(captured, {
          interceptors,
          readMaxBytes: limits.readMaxBytes,
          writeMaxBytes: limits.writeMaxBytes,
          timeoutMsMax: limits.timeoutMsMax,
          timeoutMsDefault: limits.timeoutMsDefault,
          shutdownSignal: shutdown.signal,
          logger,
        }, views);

  let inflight = 0;
  const server = http2.createServer(
    { settings: { maxConcurrentStreams: STREAMS_PER_CONNECTION_MAX } },
    (req, res) => {
      inflight++;
      req.stream.once("finish", onStreamFinish);
      req.stream.once("close", onStreamClose);
      if (fast !== undefined && fast(req, res)) {
        // The fast path answers by the deadline, but an answer the client never reads (flow
        // control) keeps its stream, and its bytes, open: reset it at the generic path's last
        // bound (deadline + 1 s + handlerOverrunMs).
        const ms = callTimeoutMs(req.headers, limits.timeoutMsMax, limits.timeoutMsDefault) + GENERIC_DEADLINE_GRACE_MS + limits.handlerOverrunMs;
        const bound = setTimeout(cancel, ms, req.stream);
        bound.unref();
        req.stream.once("close", () => clearTimeout(bound));
        return;
      }
      // Default deadline: a call without one gets limits.timeoutMsDefault. It reaches handlers as
      // ctx.signal (aborted at the deadline): a handler that awaits I/O through it is cut off; one
      // that ignores it runs to its end. The fast path also bounds the unary body read by it.
      const h = req.headers;
      // Content types match case-insensitively, as connect-es matches them.
      const ct = h["content-type"]?.toLowerCase();
      if (ct !== undefined && ct.startsWith("application/grpc")) {
        if (h["grpc-timeout"] === undefined) h["grpc-timeout"] = grpcTimeoutDefault;
      } else if (h["connect-timeout-ms"] === undefined) {
        h["connect-timeout-ms"] = connectTimeoutDefault;
      }
      if (paths.has(req.url.split("?", 1)[0]!) && refuseLongDeadline(req, res, limits.timeoutMsMax)) return;
      const bound = setTimeout(boundCall, callTimeoutMs(h, limits.timeoutMsMax) + GENERIC_DEADLINE_GRACE_MS, req);
      bound.unref();
      req.stream.once("close", () => clearTimeout(bound));
      handler(req, res);
    },
  );
  // In flight = the response is not fully written yet (a stream is counted until its
  // writable side finishes, or it closes without finishing, e.g. reset by the client).
  const done = new WeakSet<http2.ServerHttp2Stream>();
  const settle = (stream: http2.ServerHttp2Stream): void => {
    if (done.has(stream)) return;
    done.add(stream);
    inflight--;
  };
  const cancel = (stream: http2.ServerHttp2Stream): void => {
    if (!stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
  };
  // At the deadline + 1 s: a body still arriving is cut now; a call whose body arrived gets
  // handlerOverrunMs more (a late answer still goes out), then its stream is reset too.
  const boundCall = (req: http2.Http2ServerRequest): void => {
    const stream = req.stream;
    if (stream.closed || stream.destroyed) return;
    if (!req.readableEnded) return cancel(stream);
    const overrun = setTimeout(cancel, limits.handlerOverrunMs, stream);
    overrun.unref();
    stream.once("close", () => clearTimeout(overrun));
  };
  const resetStream = (stream: http2.ServerHttp2Stream): void => {
    if (!stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  };
  function onStreamFinish(this: http2.ServerHttp2Stream): void {
    settle(this);
    // The response went out before the request body was read to its end (e.g. a request over
    // readMaxBytes, a stream refused at its first message): discard the rest of the body so the
    // client can finish sending, and reset the stream if it is still open after STREAM_DRAIN_MS;
    // otherwise it would stay half-open, holding one of the connection's stream slots until the
    // client disconnects. (Resetting at once can overtake the response trailers.) The body is
    // taken from the stream itself: the compatibility request that fed connect-es pauses the
    // stream while nobody reads it (connect-es may have destroyed it, or left its iterator), so
    // resuming either one moved nothing. At most STREAM_DRAIN_BYTES_MAX are discarded (the reset
    // then comes at once). A client whose unsent body is cut by a reset keeps it counted on its
    // connection (Node's client: after ~10 MB, every new call on that connection fails
    // ENHANCE_YOUR_CALM), so bodies up to that size are let through rather than cut.
    if (this.readable && !this.readableEnded) {
      const stream = this;
      let discarded = 0;
      this.removeAllListeners("data");
      this.on("data", (chunk: Buffer) => {
        discarded += chunk.length;
        if (discarded > STREAM_DRAIN_BYTES_MAX) resetStream(stream);
      });
      this.resume();
      setTimeout(resetStream, STREAM_DRAIN_MS, this).unref();
    }
  }
  function onStreamClose(this: http2.ServerHttp2Stream): void {
    settle(this);
  }
  server.maxConnections = limits.connectionsMax;
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    // A connection that never completes the HTTP/2 preface and SETTINGS is destroyed after
    // handshakeMs; one with no stream open is closed (GOAWAY) after idleConnectionMs. Otherwise
    // sockets that send nothing held connectionsMax slots for as long as their peers kept them.
    // A connection with a stream open (a long server stream, a slow call) is never idle.
    const handshake = setTimeout(() => s.destroy(), limits.handshakeMs);
    handshake.unref();
    let open = 0;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const armIdle = (): void => {
      idle = setTimeout(() => s.close(), limits.idleConnectionMs);
      idle.unref();
    };
    s.once("remoteSettings", () => {
      clearTimeout(handshake);
      if (open === 0 && idle === undefined) armIdle();
    });
    s.on("stream", (stream: http2.ServerHttp2Stream) => {
      open++;
      clearTimeout(idle);
      stream.once("close", () => {
        if (--open === 0 && !s.closed && !s.destroyed) armIdle();
      });
    });
    s.once("close", () => {
      clearTimeout(handshake);
      clearTimeout(idle);
      sessions.delete(s);
    });
  });
  server.on("sessionError", (err) => logger.debug("http2 session error", { err }));

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host === undefined || opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  logger.info("listening", { url, limits });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      logger.info("shutting down", { inflight, graceMs: limits.shutdownGraceMs });
      health.shutdown();
      const serverClosed = new Promise<void>((r) => server.close(() => r()));
      // GOAWAY: no new streams on open sessions; calls in flight go on until they finish.
      for (const s of sessions) s.close();
      const deadline = Date.now() + limits.shutdownGraceMs;
      // A session closes once its streams are done and its last frames are written out
      // (destroying it earlier would drop a finished call's response).
      while (sessions.size > 0 && Date.now() < deadline) {
        if (inflight === 0) {
          for (const s of sessions) {
            if (s.state.outboundQueueSize === 0 && (s.socket?.writableLength ?? 0) === 0) s.destroy();
          }
          if (sessions.size === 0) break;
        }
        await new Promise((r) => setTimeout(r, SHUTDOWN_POLL_MS));
      }
      if (sessions.size > 0) logger.warn("grace period over, aborting calls", { inflight, sessions: sessions.size });
      shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
      for (const s of sessions) s.destroy();
      await serverClosed;
      logger.info("stopped");
    })();
    return closing;
  };

  return {
    url,
    port,
    close,
    setHealth(service, serving) {
      health.set(service, serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    },
    get fastPathCalls() {
      return fast?.calls ?? 0;
    },
  };
}


