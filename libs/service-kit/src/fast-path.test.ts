// Equivalence of the unary fast path (server: fast-path.ts; client: lean-client.ts) with
// connect-es's generic path: the same calls against a server with fastPath on and one with it
// off give byte-identical HTTP/2 responses (raw client), and the same results through the
// kit's lean client and connect-node's generic client.
import * as http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema, EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { createApiKeyAuthenticator, parseApiKeysEnv, requireScope, tenantOf } from "./auth.js";
import { closeClientSessions, createClientTransport, forTenant } from "./client.js";
import { errorInfoOf, invalidArgument, limitExceeded } from "./errors.js";
import { createLogger } from "./logger.js";
import { startServer, type StartedServer } from "./server.js";
import { echoRoutes } from "./test-echo.js";

const ADMIN_KEY = "sk_test_admin_0123456789abcdef";
const INGEST_KEY = "sk_test_ingest_0123456789abcdef";
const INTERNAL_KEY = "sk_test_internal_0123456789abcdef";
const KEYS = parseApiKeysEnv(`tnt_a:admin:${ADMIN_KEY},tnt_b:ingest:${INGEST_KEY},*:internal:${INTERNAL_KEY}`);
const READ_MAX = 64 * 1024;
const logLines: string[] = [];
const logger = createLogger({ service: "fast-path-test", level: "debug", sink: (l) => logLines.push(l) });

/** What the Echo handler does, chosen by the request text. */
async function behaviour(text: string, ctx: HandlerContext): Promise<unknown> {
  switch (text) {
    case "field":
      throw invalidArgument("text", "must be short");
    case "scope":
      return requireScope(ctx, "admin");
    case "boom":
      throw new Error("db password is hunter2");
    case "deadline":
      return new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
    case "tenant":
      ctx.responseHeader.set("x-tenant", tenantOf(ctx));
      return;
    case "headers":
      ctx.responseHeader.set("x-answer", "42");
      ctx.responseTrailer.set("x-done", "yes");
      return;
    case "metadata": {
      const e = limitExceeded("batch_size", 10);
      e.metadata.set("retry-after", "1");
      throw e;
    }
    case "timeout":
      ctx.responseHeader.set("x-timeout-ok", String((ctx.timeoutMs() ?? 0) > 0 && (ctx.timeoutMs() ?? 0) <= 3_000));
      return;
    case "values":
      ctx.responseHeader.set("x-method", `${ctx.service.typeName}/${ctx.method.name} ${ctx.requestMethod} ${ctx.protocolName}`);
      ctx.responseHeader.set("x-url", new URL(ctx.url).pathname);
      return;
  }
  return;
}

let fast: StartedServer;
let generic: StartedServer;

async function start(fastPath: boolean): Promise<StartedServer> {
  return startServer({
    name: "echo",
    host: "127.0.0.1",
    port: 0,
    fastPath,
    routes: echoRoutes({ onEcho: behaviour }),
    authenticator: createApiKeyAuthenticator(KEYS),
    logger,
    limits: { readMaxBytes: READ_MAX, timeoutMsMax: 5_000, timeoutMsDefault: 4_000 },
  });
}

beforeAll(async () => {
  fast = await start(true);
  generic = await start(false);
});

afterAll(async () => {
  closeClientSessions();
  await fast?.close();
  await generic?.close();
});

interface RawResult {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One raw HTTP/2 request; the response with date removed and error refs normalised. */
function raw(url: string, headers: Record<string, string>, body: Uint8Array, path = "/nanobill.bench.v1.EchoService/Echo"): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, ...headers });
    const chunks: Buffer[] = [];
    let status = 0;
    const out: Record<string, string> = {};
    req.on("response", (h) => {
      status = Number(h[":status"]);
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(":") && k !== "date") out[k] = String(v);
    });
    req.on("trailers", (t) => {
      for (const [k, v] of Object.entries(t)) {
        // Binary trailers (grpc-status-details-bin) decoded so that error refs can be normalised.
        out[`trailer:${k}`] = k.endsWith("-bin") ? Buffer.from(String(v), "base64").toString("latin1") : String(v);
      }
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      for (const k of Object.keys(out)) out[k] = out[k]!.replace(/err_[0-9a-f]{12}/g, "err_REF");
      session.close();
      const all = Buffer.concat(chunks);
      const text = out["content-encoding"] === undefined ? all.toString("latin1") : `<${out["content-encoding"]} ${all.byteLength} bytes>`;
      resolve({ status, headers: out, body: text.replace(/err_[0-9a-f]{12}/g, "err_REF") });
    });
    req.on("error", reject);
    req.end(body);
  });
}

const bin = (text: string, payloadBytes = 0): Uint8Array =>
  toBinary(EchoRequestSchema, create(EchoRequestSchema, { text, payload: new Uint8Array(payloadBytes).fill(1) }));
const proto = { "content-type": "application/proto", "connect-protocol-version": "1" };
const admin = { ...proto, authorization: `Bearer ${ADMIN_KEY}` };

const RAW_CASES: Array<[string, Record<string, string>, Uint8Array]> = [
  ["success", admin, bin("hello", 128)],
  ["no key: Unauthenticated", proto, bin("hello")],
  ["wrong key: Unauthenticated", { ...proto, authorization: "Bearer sk_test_wrong_0123456789abcdef" }, bin("hello")],
  ["InvalidArgument with field", admin, bin("field")],
  ["PermissionDenied", { ...proto, authorization: `Bearer ${INGEST_KEY}` }, bin("scope")],
  ["Internal without the message", admin, bin("boom")],
  ["error metadata as headers", admin, bin("metadata")],
  ["response header and trailer", admin, bin("headers")],
  ["internal key acting for a tenant", { ...proto, authorization: `Bearer ${INTERNAL_KEY}`, "x-nanobill-tenant": "tnt_c" }, bin("tenant")],
  ["internal key without tenant header", { ...proto, authorization: `Bearer ${INTERNAL_KEY}` }, bin("tenant")],
  ["handler context fields", admin, bin("values")],
  ["deadline from connect-timeout-ms", { ...admin, "connect-timeout-ms": "3000" }, bin("timeout")],
  ["deadline exceeded", { ...admin, "connect-timeout-ms": "30" }, bin("deadline")],
  ["deadline above timeoutMsMax", { ...admin, "connect-timeout-ms": "999999" }, bin("hello")],
  ["malformed deadline", { ...admin, "connect-timeout-ms": "soon" }, bin("hello")],
  ["oversize body, content-length given", { ...admin, "content-length": String(READ_MAX + 100) }, bin("big", READ_MAX + 100 - 8)],
  ["oversize body, no content-length", admin, bin("big", READ_MAX + 1)],
  ["malformed protobuf", admin, new Uint8Array([0x0a, 0xff, 0xff])],
  ["gzip response above 1 KiB", { ...admin, "accept-encoding": "gzip" }, bin("hello", 4_000)],
  ["identity request encoding", { ...admin, "content-encoding": "identity" }, bin("hello")],
  ["empty body", admin, new Uint8Array(0)],
];

describe("fast path vs generic path, raw HTTP/2 responses", () => {
  const STATUS: Record<string, number> = {
    success: 200,
    "no key: Unauthenticated": 401,
    "wrong key: Unauthenticated": 401,
    "InvalidArgument with field": 400,
    PermissionDenied: 403,
    "Internal without the message": 500,
    "error metadata as headers": 429,
    "response header and trailer": 200,
    "internal key acting for a tenant": 200,
    "internal key without tenant header": 400,
    "handler context fields": 200,
    "deadline from connect-timeout-ms": 200,
    "deadline exceeded": 504,
    "deadline above timeoutMsMax": 400,
    "malformed deadline": 400,
    "oversize body, content-length given": 429,
    "oversize body, no content-length": 429,
    "malformed protobuf": 400,
    "gzip response above 1 KiB": 200,
    "identity request encoding": 200,
    "empty body": 200,
  };
  it.each(RAW_CASES)("%s: identical status, headers and body", async (name, headers, body) => {
    const served = fast.fastPathCalls;
    const a = await raw(fast.url, headers, body);
    expect(fast.fastPathCalls - served).toBe(1);
    const b = await raw(generic.url, headers, body);
    expect(a).toEqual(b);
    expect(a.status).toBe(STATUS[name]);
  });

  it("sends the expected wire format for an error: Connect JSON with an ErrorInfo detail", async () => {
    const r = await raw(fast.url, admin, bin("field"));
    expect(r.status).toBe(400);
    expect(r.headers["content-type"]).toBe("application/json");
    const j = JSON.parse(r.body);
    expect(j).toMatchObject({ code: "invalid_argument", message: "text: must be short", details: [{ type: "google.rpc.ErrorInfo" }] });
  });

  it("leaves JSON, GET, unknown paths and compressed requests to connect-es (same answers)", async () => {
    const json = { "content-type": "application/json", authorization: `Bearer ${ADMIN_KEY}` };
    const body = new TextEncoder().encode(JSON.stringify({ text: "json" }));
    expect(await raw(fast.url, json, body)).toEqual(await raw(generic.url, json, body));
    expect(await raw(fast.url, admin, bin("x"), "/nanobill.bench.v1.EchoService/Nope")).toEqual(
      await raw(generic.url, admin, bin("x"), "/nanobill.bench.v1.EchoService/Nope"),
    );
    const gz = { ...admin, "content-encoding": "gzip" };
    expect(await raw(fast.url, gz, bin("x"))).toEqual(await raw(generic.url, gz, bin("x")));
  });
});

/** A gRPC request body: one envelope per message (flags byte, big-endian length, bytes). */
function envelope(msg: Uint8Array, flags = 0, declaredLength = msg.byteLength): Uint8Array {
  const out = new Uint8Array(5 + msg.byteLength);
  const v = new DataView(out.buffer);
  v.setUint8(0, flags);
  v.setUint32(1, declaredLength);
  out.set(msg, 5);
  return out;
}
const concat = (...parts: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts));
const grpc = { "content-type": "application/grpc", te: "trailers" };
const grpcAdmin = { ...grpc, authorization: `Bearer ${ADMIN_KEY}` };

const GRPC_CASES: Array<[string, Record<string, string>, Uint8Array, string]> = [
  ["success", grpcAdmin, envelope(bin("hello", 128)), "0"],
  ["application/grpc+proto", { ...grpcAdmin, "content-type": "application/grpc+proto" }, envelope(bin("hello")), "0"],
  ["no key: Unauthenticated", grpc, envelope(bin("hello")), "16"],
  ["InvalidArgument with field", grpcAdmin, envelope(bin("field")), "3"],
  ["PermissionDenied", { ...grpc, authorization: `Bearer ${INGEST_KEY}` }, envelope(bin("scope")), "7"],
  ["Internal without the message", grpcAdmin, envelope(bin("boom")), "13"],
  ["error metadata as trailers", grpcAdmin, envelope(bin("metadata")), "8"],
  ["response header and trailer", grpcAdmin, envelope(bin("headers")), "0"],
  ["internal key acting for a tenant", { ...grpc, authorization: `Bearer ${INTERNAL_KEY}`, "x-nanobill-tenant": "tnt_c" }, envelope(bin("tenant")), "0"],
  ["handler context fields (protocol grpc)", grpcAdmin, envelope(bin("values")), "0"],
  ["deadline from grpc-timeout", { ...grpcAdmin, "grpc-timeout": "3000m" }, envelope(bin("timeout")), "0"],
  ["deadline exceeded", { ...grpcAdmin, "grpc-timeout": "30m" }, envelope(bin("deadline")), "4"],
  ["deadline above timeoutMsMax", { ...grpcAdmin, "grpc-timeout": "99999S" }, envelope(bin("hello")), "3"],
  ["malformed deadline", { ...grpcAdmin, "grpc-timeout": "soon" }, envelope(bin("hello")), "3"],
  ["message over readMaxBytes", grpcAdmin, envelope(bin("big", READ_MAX + 1)), "8"],
  ["incomplete envelope header", grpcAdmin, new Uint8Array([0, 0, 0]), "3"],
  ["incomplete envelope body", grpcAdmin, envelope(bin("hello"), 0, 100), "3"],
  ["empty body: missing message", grpcAdmin, new Uint8Array(0), "12"],
  ["two messages", grpcAdmin, concat(envelope(bin("a")), envelope(bin("b"))), "12"],
  ["compressed flag without grpc-encoding", grpcAdmin, envelope(bin("hello"), 1), "3"],
  ["malformed protobuf", grpcAdmin, envelope(new Uint8Array([0x0a, 0xff, 0xff])), "3"],
  ["gzip response above 1 KiB", { ...grpcAdmin, "grpc-accept-encoding": "gzip" }, envelope(bin("hello", 4_000)), "0"],
  ["gzip accepted, small response", { ...grpcAdmin, "grpc-accept-encoding": "gzip" }, envelope(bin("hello")), "0"],
  ["identity request encoding", { ...grpcAdmin, "grpc-encoding": "identity" }, envelope(bin("hello")), "0"],
];

describe("gRPC: fast path vs generic path, raw HTTP/2 responses", () => {
  it.each(GRPC_CASES)("%s: identical status, headers, body and trailers", async (_name, headers, body, status) => {
    const served = fast.fastPathCalls;
    const a = await raw(fast.url, headers, body);
    expect(fast.fastPathCalls - served).toBe(1); // answered by the fast path, not handed to connect-es
    expect(generic.fastPathCalls).toBe(0);
    const b = await raw(generic.url, headers, body);
    expect(a).toEqual(b);
    expect(a.status).toBe(200);
    expect(a.headers["trailer:grpc-status"]).toBe(status);
  });

  it("refuses an envelope declaring more than readMaxBytes as soon as its header arrives (the body never ends)", async () => {
    const answer = (url: string) =>
      new Promise<{ status: string | undefined; message: string | undefined }>((resolve, reject) => {
        const session = http2.connect(url);
        session.on("error", reject);
        const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", ...grpcAdmin });
        const out: { status: string | undefined; message: string | undefined } = { status: undefined, message: undefined };
        req.on("response", (h) => {
          if (h["grpc-status"] !== undefined) (out.status = String(h["grpc-status"])), (out.message = String(h["grpc-message"]));
        });
        req.on("trailers", (t) => {
          out.status = String(t["grpc-status"]);
          out.message = String(t["grpc-message"]);
        });
        req.on("data", () => undefined);
        req.on("end", () => {
          session.destroy();
          resolve(out);
        });
        req.on("error", reject);
        // A header declaring 100 MiB, a little data, and no end: only the header can answer it.
        const head = new Uint8Array(5);
        new DataView(head.buffer).setUint32(1, 100 * 1024 * 1024);
        req.write(head);
        req.write(new Uint8Array(100));
      });
    const [a, b] = await Promise.all([answer(fast.url), answer(generic.url)]);
    expect(a).toEqual(b);
    expect(a.status).toBe("8");
    expect(decodeURIComponent(a.message!)).toBe(`message size ${100 * 1024 * 1024} is larger than configured readMaxBytes ${READ_MAX}`);
  });

  it("answers a unary body that never ends with DeadlineExceeded at the call's deadline and resets its stream (gRPC and Connect)", async () => {
    const hang = (headers: Record<string, string>, first: Uint8Array) =>
      new Promise<{ status: number | undefined; headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: string; ms: number }>((resolve, reject) => {
        const t0 = performance.now();
        const session = http2.connect(fast.url);
        session.on("error", reject);
        const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", ...headers });
        const out = { status: undefined as number | undefined, headers: {} as http2.IncomingHttpHeaders, trailers: {} as http2.IncomingHttpHeaders, body: "", ms: 0 };
        req.on("response", (h) => ((out.status = Number(h[":status"])), (out.headers = h)));
        req.on("trailers", (t) => (out.trailers = t));
        req.on("data", (c: Buffer) => (out.body += c.toString("utf8")));
        const done = () => {
          out.ms = performance.now() - t0;
          session.destroy();
          resolve(out);
        };
        req.on("end", done);
        req.on("close", done);
        req.on("error", () => undefined); // the reset of our unfinished request
        req.write(first); // part of the body, never ended
      });
    // gRPC: an envelope declaring 50 bytes, 10 sent.
    const head = new Uint8Array(15);
    new DataView(head.buffer).setUint32(1, 50);
    const g = await hang({ ...grpcAdmin, "grpc-timeout": "300m" }, head);
    expect(g.trailers["grpc-status"] ?? g.headers["grpc-status"]).toBe("4");
    expect(g.ms).toBeLessThan(5_000);
    // Connect: 10 bytes of a body, no end.
    const c = await hang({ ...admin, "connect-timeout-ms": "300" }, new Uint8Array(10));
    expect(JSON.parse(c.body)).toMatchObject({ code: "deadline_exceeded" });
    expect(c.ms).toBeLessThan(5_000);
  });

  it("leaves gRPC-Web, gRPC+JSON and compressed gRPC requests to connect-es (same answers)", async () => {
    const web = { "content-type": "application/grpc-web+proto", authorization: `Bearer ${ADMIN_KEY}` };
    expect(await raw(fast.url, web, envelope(bin("x")))).toEqual(await raw(generic.url, web, envelope(bin("x"))));
    const json = { ...grpcAdmin, "content-type": "application/grpc+json" };
    const jbody = envelope(new TextEncoder().encode(JSON.stringify({ text: "json" })));
    expect(await raw(fast.url, json, jbody)).toEqual(await raw(generic.url, json, jbody));
    const served = fast.fastPathCalls;
    const gz = { ...grpcAdmin, "grpc-encoding": "gzip" };
    const zipped = envelope(Uint8Array.from(gzipSync(bin("zipped"))), 1);
    const r = await raw(fast.url, gz, zipped);
    expect(r).toEqual(await raw(generic.url, gz, zipped));
    expect(r.headers["trailer:grpc-status"]).toBe("0");
    expect(fast.fastPathCalls).toBe(served); // gRPC-Web, JSON and compressed calls went to connect-es
  });

  it("a gRPC client (connect-node's createGrpcTransport) gets the same answers from both servers", async () => {
    for (const text of ["hi", "field", "metadata", "headers"]) {
      const results: Outcome[] = [];
      for (const server of [fast, generic]) {
        const c = createClient(EchoService, createGrpcTransport({ baseUrl: server.url }));
        let header: Headers | undefined;
        const r = await outcome(
          c.echo({ text, payload: new Uint8Array(2_000) }, { headers: { authorization: `Bearer ${ADMIN_KEY}` }, onHeader: (h) => (header = h), onTrailer: (t) => t.forEach((v, k) => header?.set(k, v)) }),
        );
        results.push(r.ok ? { ...r, header: Object.fromEntries([...(header?.entries() ?? [])].filter(([k]) => k.startsWith("x-"))) } : r);
      }
      expect(results[1]).toEqual(results[0]);
      if (text === "field") expect(results[0]).toMatchObject({ ok: false, code: Code.InvalidArgument, metadata: { field: "text", rule: "must be short" } });
    }
  });
});

type Outcome = { ok: true; text: string; header: Record<string, string> } | { ok: false; code: Code; message: string; reason?: unknown; metadata?: unknown };

async function outcome(p: Promise<{ text: string }>, headerOut?: Headers): Promise<Outcome> {
  try {
    const r = await p;
    const header: Record<string, string> = {};
    headerOut?.forEach((v, k) => {
      if (k.startsWith("x-")) header[k] = v;
    });
    return { ok: true, text: r.text, header };
  } catch (e) {
    const ce = ConnectError.from(e);
    const info = errorInfoOf(ce);
    return { ok: false, code: ce.code, message: ce.rawMessage.replace(/err_[0-9a-f]{12}/g, "err_REF"), reason: info?.reason, metadata: info?.metadata };
  }
}

describe("the same calls through the lean client and connect-node's client, on both servers", () => {
  const calls: Array<[string, Code | "ok", string, string?, { tenant?: string; timeoutMs?: number; payload?: number }?]> = [
    ["success", "ok", "hello"],
    ["Unauthenticated", Code.Unauthenticated, "hello", "sk_test_wrong_0123456789abcdef"],
    ["InvalidArgument with field", Code.InvalidArgument, "field"],
    ["PermissionDenied", Code.PermissionDenied, "scope", INGEST_KEY],
    ["Internal with no leak", Code.Internal, "boom"],
    ["ResourceExhausted with metadata", Code.ResourceExhausted, "metadata"],
    ["ResourceExhausted on an oversize request", Code.ResourceExhausted, "big", ADMIN_KEY, { payload: READ_MAX + 1 }],
    ["deadline exceeded", Code.DeadlineExceeded, "deadline", ADMIN_KEY, { timeoutMs: 50 }],
    ["deadline above timeoutMsMax", Code.InvalidArgument, "hello", ADMIN_KEY, { timeoutMs: 60_000 }],
    ["tenant header of an internal key", "ok", "tenant", INTERNAL_KEY, { tenant: "tnt_z" }],
    ["response header and trailer", "ok", "headers"],
  ];

  type CallOpts = { tenant?: string; timeoutMs?: number; payload?: number };
  const overBoth = calls.flatMap(([name, expected, text, key, o]) =>
    (["connect", "grpc"] as const).map((p): [string, Code | "ok", "connect" | "grpc", string, string | undefined, CallOpts | undefined] => [name, expected, p, text, key, o]),
  );
  it.each(overBoth)("%s: %s over %s on all four combinations", async (_name, expected, protocol, text, key = ADMIN_KEY, o = {}) => {
    const results: Outcome[] = [];
    for (const server of [fast, generic]) {
      for (const lean of [true, false]) {
        const client = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: key, lean, protocol, timeoutMs: 3_000 }));
        let header: Headers | undefined;
        const opts = {
          ...(o.tenant ? forTenant(o.tenant) : {}),
          timeoutMs: o.timeoutMs,
          onHeader: (h: Headers) => (header = h),
          onTrailer: (t: Headers) => t.forEach((v, k) => header?.set(`${k}`, v)),
        };
        results.push(await outcome(client.echo({ text, payload: new Uint8Array(o.payload ?? 0) }, opts), undefined).then(async (r) => {
          if (r.ok) return { ...r, header: Object.fromEntries([...(header?.entries() ?? [])].filter(([k]) => k.startsWith("x-"))) };
          return r;
        }));
      }
    }
    for (const r of results.slice(1)) expect(r).toEqual(results[0]);
    if (expected === "ok") expect(results[0]!.ok).toBe(true);
    else expect(results[0]).toMatchObject({ ok: false, code: expected });
  });

  it("a connect-node client without the kit (plain createConnectTransport) gets the same answers from the fast path", async () => {
    const t = createConnectTransport({ baseUrl: fast.url, httpVersion: "2", useBinaryFormat: true });
    const c = createClient(EchoService, t);
    const h = { authorization: `Bearer ${ADMIN_KEY}` };
    expect((await c.echo({ text: "hi", payload: new Uint8Array(3_000) }, { headers: h })).payload.byteLength).toBe(3_000);
    const err = ConnectError.from(await c.echo({ text: "field" }, { headers: h }).catch((e) => e));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(errorInfoOf(err)?.metadata).toEqual({ field: "text", rule: "must be short" });
  });

  it("logs an Internal error once with its stack on the fast path", async () => {
    const c = createClient(EchoService, createClientTransport({ baseUrl: fast.url, apiKey: ADMIN_KEY, timeoutMs: 3_000 }));
    const err = ConnectError.from(await c.echo({ text: "boom" }).catch((e) => e));
    expect(err.rawMessage).toMatch(/^internal error \(ref err_[0-9a-f]{12}\)$/);
    const ref = /ref (err_[0-9a-f]{12})/.exec(err.rawMessage)![1]!;
    const lines = logLines.filter((l) => l.includes(ref));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!).err.stack).toContain("hunter2");
  });
});

describe("fast path and shutdown", () => {
  it.each([true, false])("fastPath %s: a call still running after shutdownGraceMs sees its signal abort with Unavailable", async (fastPath) => {
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => (entered = r));
    let reason: unknown;
    const s = await startServer({
      name: "echo-grace",
      host: "127.0.0.1",
      port: 0,
      fastPath,
      routes: echoRoutes({
        onEcho: (_t, ctx) => {
          entered();
          return new Promise<void>((_r, reject) =>
            ctx.signal.addEventListener("abort", () => {
              reason = ctx.signal.reason;
              reject(ctx.signal.reason);
            }),
          );
        },
      }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { shutdownGraceMs: 50 },
    });
    const r = raw(s.url, admin, bin("stuck")).catch((e: unknown) => e);
    await inHandler;
    await s.close();
    await r;
    expect(ConnectError.from(reason).code).toBe(Code.Unavailable);
  });
});
