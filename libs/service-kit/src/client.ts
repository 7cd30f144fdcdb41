import * as http2 from "node:http2";
import type { CallOptions, Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createTracingInterceptor } from "@nanobill/telemetry";
import { TENANT_HEADER } from "./auth.js";
import { createLeanTransport } from "./lean-client.js";
import { CLIENT_IDLE_CONNECTION_MS, CLIENT_READ_MAX_BYTES, CLIENT_TIMEOUT_MS_DEFAULT, CLIENT_WRITE_MAX_BYTES, fastPathEnabledByEnv } from "./limits.js";

export interface ClientTransportOptions {
  /** Server base URL, e.g. http://127.0.0.1:7001 (h2c) . */
  baseUrl: string;
  /** API key sent as `authorization: Bearer <key>` on every call. */
  apiKey: string;
  /** Fixed x-nanobill-tenant for every call (a per-call header wins), for internal keys. */
  tenant?: string;
  /**
   * Wire protocol, default "connect" (binary protobuf over HTTP/2): measured at about half the
   * CPU per call of "grpc" in connect-node (bench/rpc); the server answers both.
   */
  protocol?: "grpc" | "connect";
  /** Default deadline of a call (ms); a per-call timeoutMs wins. */
  timeoutMs?: number;
  /**
   * Unary calls through the kit's lean HTTP/2 client (lean-client.ts, Connect or gRPC; same
   * interceptors, deadline, headers and errors, streaming through connect-node).
   * Default true; false = connect-node's generic client for every call.
   */
  lean?: boolean;
}

/**
 * connect-node's session manager, plus one rule for every stream on it (the lean client's and
 * connect-node's own, streams included): Node's client refuses new streams ENHANCE_YOUR_CALM once
 * its connection's memory count passes maxSessionMemory, and a body the server reset before reading
 * it is never taken off that count, so every later call on the connection would fail (measured:
 * four calls went through, then all failed Internal). A stream closed with that code retires its
 * connection (graceful close: calls in flight finish); the manager opens a new one for the next call.
 */
class CalmRetiringSessionManager extends Http2SessionManager {
  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(...args);
    const owner = stream.session; // undefined once the stream is destroyed
    stream.once("close", () => {
      if (stream.rstCode === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM && owner !== undefined && !owner.closed) owner.close();
    });
    return stream;
  }
}

const sessions = new Map<string, Http2SessionManager>();
const clientTracing = createTracingInterceptor("client");

/** The one HTTP/2 session manager per base URL, shared by every transport of this process. */
function sessionFor(baseUrl: string): Http2SessionManager {
  let s = sessions.get(baseUrl);
  if (s === undefined) {
    // Idle connections are closed by the client first (30 s), before the server's idle close
    // (idleConnectionMs, 60 s by default) can cross a new call (review of 2026-11-30).
    s = new CalmRetiringSessionManager(baseUrl, { pingIntervalMs: 30_000, idleConnectionTimeoutMs: CLIENT_IDLE_CONNECTION_MS });
    sessions.set(baseUrl, s);
  }
  return s;
}

/** Closes every shared client session (process shutdown, end of a test file). */
export function closeClientSessions(): void {
  for (const s of sessions.values()) s.abort();
  sessions.clear();
}

/**
 * A Connect transport over HTTP/2 cleartext for calling a Nanobill service: sends the API key
 * (and a fixed tenant header when given), carries the W3C trace context (client tracing
 * interceptor), applies a default deadline, and reuses one HTTP/2 session per baseUrl.
 */
export function createClientTransport(opts: ClientTransportOptions): Transport {
  const authorization = `Bearer ${opts.apiKey}`;
  const tenant = opts.tenant;
  const headers: Interceptor = (next) => (req) => {
    req.header.set("authorization", authorization);
    if (tenant !== undefined && !req.header.has(TENANT_HEADER)) req.header.set(TENANT_HEADER, tenant);
    return next(req);
  };
  const common = {
    baseUrl: opts.baseUrl,
    httpVersion: "2" as const,
    sessionManager: sessionFor(opts.baseUrl),
    interceptors: [clientTracing, headers],
    defaultTimeoutMs: opts.timeoutMs ?? CLIENT_TIMEOUT_MS_DEFAULT,
    readMaxBytes: CLIENT_READ_MAX_BYTES,
    writeMaxBytes: CLIENT_WRITE_MAX_BYTES,
  };
  const generic = opts.protocol === "grpc" ? createGrpcTransport(common) : createConnectTransport({ ...common, useBinaryFormat: true });
  if (opts.lean === false || (opts.lean === undefined && !fastPathEnabledByEnv())) return generic;
  return createLeanTransport({
    baseUrl: opts.baseUrl,
    session: common.sessionManager,
    interceptors: common.interceptors,
    defaultTimeoutMs: common.defaultTimeoutMs,
    readMaxBytes: CLIENT_READ_MAX_BYTES,
    writeMaxBytes: CLIENT_WRITE_MAX_BYTES,
    streams: generic,
    protocol: opts.protocol ?? "connect",
  });
}

/** Call options acting for one tenant (internal keys): `client.rpc(req, forTenant("tnt_a"))`. */
export function forTenant(tenant: string, opts: CallOptions = {}): CallOptions {
  const headers = new Headers(opts.headers);
  headers.set(TENANT_HEADER, tenant);
  return { ...opts, headers };
}
