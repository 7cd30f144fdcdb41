import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { EchoRequestSchema, EchoService, EchoStreamRequestSchema } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@nanobill/contracts/grpc/health/v1/health_pb";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { createApiKeyAuthenticator, parseApiKeysEnv, tenantOf, requireScope, principalOf } from "./auth.js";
import { createClientTransport, closeClientSessions, forTenant } from "./client.js";
import { errorInfoOf, INTERNAL_MESSAGE } from "./errors.js";
import { createLogger } from "./logger.js";
import * as http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { STREAM_DRAIN_BYTES_MAX, callTimeoutMs, startServer, type StartedServer } from "./server.js";
import { echoRoutes } from "./test-echo.js";

const ADMIN_KEY = "sk_test_admin_0123456789abcdef";
const INGEST_KEY = "sk_test_ingest_0123456789abcdef";
const INTERNAL_KEY = "sk_test_internal_0123456789abcdef";
const KEYS = parseApiKeysEnv(`tnt_a:admin:${ADMIN_KEY},tnt_b:ingest:${INGEST_KEY},*:internal:${INTERNAL_KEY}`);

const logLines: string[] = [];
const logger = createLogger({ service: "test", level: "debug", sink: (l) => logLines.push(l) });

/** What Echo did last: the tenant it resolved (or the error it got). */
let behaviour: (text: string, ctx: HandlerContext) => unknown = () => undefined;

let server: StartedServer;

beforeAll(async () => {
  server = await startServer({
    name: "echo",
    host: "127.0.0.1",
    port: 0,
    routes: echoRoutes({ onEcho: (text, ctx) => behaviour(text, ctx) }),
    authenticator: createApiKeyAuthenticator(KEYS),
    logger,
    limits: { readMaxBytes: 64 * 1024 },
  });
});

afterAll(async () => {
  closeClientSessions();
  await server?.close();
});

function echoClient(apiKey: string, protocol: "grpc" | "connect" = "grpc", tenant?: string) {
  return createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey, protocol, tenant }));
}

async function codeOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

function grpcJsHealthCheck(url: string, service: string): Promise<number> {
  const Client = grpc.makeGenericClientConstructor(
    {
      check: {
        path: "/grpc.health.v1.Health/Check",
        requestStream: false,
        responseStream: false,
        requestSerialize: (m: Uint8Array) => Buffer.from(m),
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (m: Uint8Array) => Buffer.from(m),
        responseDeserialize: (b: Buffer) => b,
      },
    },
    "Health",
  );
  const client = new Client(new URL(url).host, grpc.credentials.createInsecure());
  const req = toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service }));
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, Function>)["check"]!(req, (err: grpc.ServiceError | null, res: Buffer) => {
      client.close();
      if (err) reject(err);
      else resolve(fromBinary(HealthCheckResponseSchema, res).status);
    });
  });
}

describe("startServer on h2c", () => {
  it("answers a grpc.health.v1 Check from an independent gRPC client (@grpc/grpc-js) without a key", async () => {
    expect(await grpcJsHealthCheck(server.url, "")).toBe(ServingStatus.SERVING);
    expect(await grpcJsHealthCheck(server.url, "nanobill.bench.v1.EchoService")).toBe(ServingStatus.SERVING);
  });

  it("answers a Health Check for an unknown service with NotFound", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const err = await codeOf(health.check({ service: "no.such.Service" }));
    expect(err.code).toBe(Code.NotFound);
  });

  it("answers the Connect, gRPC and gRPC-Web protocols on the same port", async () => {
    const header = { authorization: `Bearer ${ADMIN_KEY}` };
    for (const transport of [
      createConnectTransport({ baseUrl: server.url, httpVersion: "2" }),
      createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: true }),
      createGrpcTransport({ baseUrl: server.url }),
      createGrpcWebTransport({ baseUrl: server.url, httpVersion: "2" }),
    ]) {
      const res = await createClient(EchoService, transport).echo({ text: "hi" }, { headers: header });
      expect(res.text).toBe("hi");
    }
  });

  it("streams server-streaming responses", async () => {
    const out: number[] = [];
    for await (const m of echoClient(ADMIN_KEY).echoStream({ text: "s", count: 3 })) out.push(m.index);
    expect(out).toEqual([0, 1, 2]);
  });

  it("rejects a call without a key as Unauthenticated", async () => {
    const c = createClient(EchoService, createGrpcTransport({ baseUrl: server.url }));
    const err = await codeOf(c.echo({ text: "x" }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(errorInfoOf(err)?.reason).toBe(ErrorReason.UNAUTHENTICATED);
  });

  it("rejects a wrong key and a malformed authorization header as Unauthenticated", async () => {
    for (const protocol of ["grpc", "connect"] as const) {
      const err = await codeOf(echoClient("sk_test_wrong_0123456789abcdef", protocol).echo({ text: "x" }));
      expect(err.code).toBe(Code.Unauthenticated);
    }
    const c = createClient(EchoService, createGrpcTransport({ baseUrl: server.url }));
    const err = await codeOf(c.echo({ text: "x" }, { headers: { authorization: ADMIN_KEY } }));
    expect(err.code).toBe(Code.Unauthenticated);
  });

  it("gives the handler the key's tenant and scopes", async () => {
    behaviour = (_t, ctx) => {
      requireScope(ctx, "ingest");
      return expect(tenantOf(ctx)).toBe("tnt_b");
    };
    await echoClient(INGEST_KEY).echo({ text: "x" });
    behaviour = (_t, ctx) => requireScope(ctx, "admin");
    const err = await codeOf(echoClient(INGEST_KEY).echo({ text: "x" }));
    expect(err.code).toBe(Code.PermissionDenied);
    behaviour = () => undefined;
  });

  it("lets an internal key act for the tenant in x-nanobill-tenant, and requires the header", async () => {
    const seen: string[] = [];
    behaviour = (_t, ctx) => {
      seen.push(`${principalOf(ctx).keyId.slice(0, 4)}:${tenantOf(ctx)}`);
    };
    await echoClient(INTERNAL_KEY, "grpc", "tnt_a").echo({ text: "x" });
    await echoClient(INTERNAL_KEY, "connect", "tnt_a").echo({ text: "x" }, forTenant("tnt_c"));
    expect(seen).toEqual(["key_:tnt_a", "key_:tnt_c"]);
    const err = await codeOf(echoClient(INTERNAL_KEY).echo({ text: "x" }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("x-nanobill-tenant");
    // A tenant key cannot switch tenant with the header.
    behaviour = (_t, ctx) => expect(tenantOf(ctx)).toBe("tnt_a");
    await echoClient(ADMIN_KEY, "grpc", "tnt_b").echo({ text: "x" });
    behaviour = () => undefined;
  });

  it("refuses a request larger than readMaxBytes with ResourceExhausted", async () => {
    for (const protocol of ["grpc", "connect"] as const) {
      const err = await codeOf(echoClient(ADMIN_KEY, protocol).echo({ payload: new Uint8Array(64 * 1024 + 1) }));
      expect(err.code).toBe(Code.ResourceExhausted);
    }
    const ok = await echoClient(ADMIN_KEY).echo({ payload: new Uint8Array(60 * 1024) });
    expect(ok.payload.byteLength).toBe(60 * 1024);
  });

  it("turns an unexpected throw into Internal without leaking the message, and logs the stack", async () => {
    behaviour = () => {
      throw new Error("db password is hunter2 at /srv/secret.ts");
    };
    for (const protocol of ["grpc", "connect"] as const) {
      const err = await codeOf(echoClient(ADMIN_KEY, protocol).echo({ text: "x" }));
      expect(err.code).toBe(Code.Internal);
      expect(err.rawMessage).toMatch(new RegExp(`^${INTERNAL_MESSAGE} \\(ref err_[0-9a-f]{12}\\)$`));
      expect(err.message).not.toContain("hunter2");
      const ref = /ref (err_[0-9a-f]+)/.exec(err.rawMessage)![1]!;
      const line = logLines.find((l) => l.includes(ref));
      expect(line).toBeDefined();
      expect(JSON.parse(line!).err.stack).toContain("hunter2");
    }
    behaviour = () => undefined;
  });

  it("answers a response JSON cannot hold (a Timestamp past 9999) as a redacted, logged Internal, and the same response in binary as it is", async () => {
    const odd = await startServer({
      name: "odd",
      host: "127.0.0.1",
      port: 0,
      routes: (router) =>
        router.service(LedgerService, {
          lookupAccounts: (req) =>
            req.ids[0] === "acct_overflow"
              ? { accounts: [{ id: "acct_overflow", debitsPostedNanos: 2n ** 63n }] }
              : { accounts: [{ id: "acct_1", createTime: { seconds: 253_402_300_800n, nanos: 0 } }] },
        }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
    });
    try {
      const client = (useBinaryFormat: boolean) =>
        createClient(LedgerService, createConnectTransport({ baseUrl: odd.url, httpVersion: "2", useBinaryFormat, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${ADMIN_KEY}`), next(req))] }));
      expect((await client(true).lookupAccounts({ ids: ["acct_1"] })).accounts[0]!.createTime!.seconds).toBe(253_402_300_800n);
      const err = await codeOf(client(false).lookupAccounts({ ids: ["acct_1"] }));
      expect(err.code).toBe(Code.Internal);
      expect(err.rawMessage).toMatch(new RegExp(`^${INTERNAL_MESSAGE} \\(ref err_[0-9a-f]{12}\\)$`));
      const ref = /ref (err_[0-9a-f]+)/.exec(err.rawMessage)![1]!;
      expect(JSON.parse(logLines.find((l) => l.includes(ref))!).err.stack).toContain("Timestamp");
      // A message protobuf cannot encode at all (an int64 past its range) on the binary fast path,
      // Connect and gRPC: the same logged, redacted Internal (it was the encoder's text, unlogged).
      for (const protocol of ["connect", "grpc"] as const) {
        const bad = createClient(LedgerService, createClientTransport({ baseUrl: odd.url, apiKey: ADMIN_KEY, protocol }));
        const e = await codeOf(bad.lookupAccounts({ ids: ["acct_overflow"] }));
        expect([e.code, e.rawMessage.replace(/err_[0-9a-f]{12}/, "err_X")]).toEqual([Code.Internal, `${INTERNAL_MESSAGE} (ref err_X)`]);
        const r = /ref (err_[0-9a-f]+)/.exec(e.rawMessage)![1]!;
        expect(JSON.parse(logLines.find((l) => l.includes(r))!).err.stack).toContain("int64");
      }
    } finally {
      await odd.close();
    }
  });

  it("maps DbError-like and MoneyError-like errors to Aborted, Unavailable and InvalidArgument", async () => {
    const cases: Array<[unknown, Code, string?]> = [
      [Object.assign(new Error("could not serialize"), { code: "serialization" }), Code.Aborted],
      [Object.assign(new Error("connect ECONNREFUSED"), { code: "unavailable" }), Code.Unavailable],
      [Object.assign(new Error("amount_nanos: must be positive"), { field: "amount_nanos", rule: "must be positive" }), Code.InvalidArgument, "amount_nanos: must be positive"],
    ];
    for (const [thrown, code, message] of cases) {
      behaviour = () => {
        throw thrown;
      };
      const err = await codeOf(echoClient(ADMIN_KEY).echo({ text: "x" }));
      expect(err.code).toBe(code);
      if (message) expect(err.rawMessage).toBe(message);
      expect(err.rawMessage).not.toContain("ECONNREFUSED");
    }
    behaviour = () => undefined;
  });

  it("applies a default deadline to calls that send none, and refuses deadlines above timeoutMsMax", async () => {
    behaviour = (_t, ctx) => expect(ctx.timeoutMs()).toBeGreaterThan(0);
    const c = createClient(EchoService, createGrpcTransport({ baseUrl: server.url }));
    await c.echo({ text: "x" }, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    behaviour = () => undefined;
    const err = await codeOf(c.echo({ text: "x" }, { headers: { authorization: `Bearer ${ADMIN_KEY}` }, timeoutMs: 10 * 60_000 }));
    expect(err.code).toBe(Code.InvalidArgument);
  });
});

describe("generic path (connect-es) deadlines", () => {
  it("reads the deadline a call asked for as connect-es does, capped at timeoutMsMax", () => {
    const grpc = (t?: string) => ({ "content-type": "application/grpc-web+proto", ...(t === undefined ? {} : { "grpc-timeout": t }) });
    expect(callTimeoutMs(grpc("300m"), 60_000)).toBe(300);
    expect(callTimeoutMs(grpc("2S"), 60_000)).toBe(2_000);
    expect(callTimeoutMs(grpc("1M"), 60_000)).toBe(60_000);
    expect(callTimeoutMs(grpc("1H"), 60_000)).toBe(60_000);
    expect(callTimeoutMs(grpc("1500u"), 60_000)).toBe(2);
    expect(callTimeoutMs(grpc("7n"), 60_000)).toBe(1);
    expect(callTimeoutMs(grpc("x"), 60_000)).toBe(60_000);
    expect(callTimeoutMs(grpc(), 60_000)).toBe(60_000);
    expect(callTimeoutMs({ "content-type": "application/json", "connect-timeout-ms": "250" }, 60_000)).toBe(250);
    expect(callTimeoutMs({ "content-type": "application/json", "connect-timeout-ms": "99999999" }, 60_000)).toBe(60_000);
    expect(callTimeoutMs({ "content-type": "application/json", "connect-timeout-ms": "-1" }, 60_000)).toBe(60_000);
    // Content types match case-insensitively (as connect-es matches them).
    expect(callTimeoutMs({ "content-type": "Application/GRPC-WEB+proto", "grpc-timeout": "300m" }, 60_000)).toBe(300);
  });

  it("gives a call with an upper-case gRPC content type and no deadline the default deadline", async () => {
    let seen: number | undefined;
    behaviour = (_t, ctx) => void (seen = ctx.timeoutMs());
    const msg = toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "x" }));
    const body = new Uint8Array(5 + msg.length);
    new DataView(body.buffer).setUint32(1, msg.length);
    body.set(msg, 5);
    await new Promise<void>((resolve, reject) => {
      const session = http2.connect(server.url);
      session.on("error", reject);
      const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", "content-type": "Application/GRPC-WEB+proto", authorization: `Bearer ${ADMIN_KEY}` });
      req.resume();
      req.on("end", () => (session.close(), resolve()));
      req.on("error", reject);
      req.end(body);
    });
    behaviour = () => undefined;
    expect(seen).toBeGreaterThan(0);
  });

  // A request whose body never ends, on a server without the fast path (so Connect binary and
  // gRPC go to connect-es too): the stream is reset about a second after the call's deadline,
  // with or without a key, instead of staying open for as long as the client keeps it.
  it("resets a call whose body never ends shortly after its deadline (Connect JSON, Connect binary, gRPC, gRPC-Web; no key, no deadline)", async () => {
    const generic = await startServer({
      name: "echo-generic",
      host: "127.0.0.1",
      port: 0,
      fastPath: false,
      // "slow": a handler that ignores its signal and answers 1.8 s after the call's 300 ms
      // deadline; "hang": one that ignores it and never answers.
      routes: echoRoutes({ onEcho: (text) => (text === "slow" ? new Promise((r) => setTimeout(r, 1_800)) : text === "hang" ? new Promise(() => undefined) : undefined) }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { timeoutMsMax: 5_000, timeoutMsDefault: 600, handlerOverrunMs: 3_000 },
    });
    const hang = (headers: Record<string, string>, first: Uint8Array) =>
      new Promise<{ ms: number; how: string }>((resolve) => {
        const t0 = performance.now();
        const session = http2.connect(generic.url);
        session.on("error", () => undefined);
        const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", ...headers });
        let settled = false;
        const done = (how: string) => () => {
          if (settled) return;
          settled = true;
          session.destroy();
          resolve({ ms: performance.now() - t0, how });
        };
        req.on("close", done("closed"));
        req.on("error", () => undefined);
        req.resume();
        setTimeout(done("still open after 6 s"), 6_000);
        req.write(first); // part of a body, never ended
      });
    const auth = { authorization: `Bearer ${ADMIN_KEY}` };
    const envelopeHead = new Uint8Array(15);
    new DataView(envelopeHead.buffer).setUint32(1, 50); // declares 50 bytes, sends 10
    try {
      const results = await Promise.all([
        hang({ "content-type": "application/json", "connect-protocol-version": "1", "connect-timeout-ms": "300", ...auth }, new TextEncoder().encode('{"text":')),
        hang({ "content-type": "application/proto", "connect-protocol-version": "1", "connect-timeout-ms": "300", ...auth }, new Uint8Array(10)),
        hang({ "content-type": "application/grpc", "grpc-timeout": "300m", ...auth }, envelopeHead),
        hang({ "content-type": "application/grpc-web+proto", "grpc-timeout": "300m", ...auth }, envelopeHead),
        hang({ "content-type": "application/json", "connect-protocol-version": "1" }, new TextEncoder().encode('{"text":')), // no key, default deadline
      ]);
      for (const r of results) {
        expect(r.how).toBe("closed");
        expect(r.ms).toBeLessThan(4_000);
      }
      // The server still answers.
      const c = createClient(EchoService, createClientTransport({ baseUrl: generic.url, apiKey: ADMIN_KEY, protocol: "grpc", timeoutMs: 2_000 }));
      expect((await c.echo({ text: "after" })).text).toBe("after");
      // A call whose body arrived is given handlerOverrunMs more: a late answer goes out
      // (connect-es writes it when the handler ends); a handler that never ends has its stream
      // reset at deadline + 1 s + handlerOverrunMs (0.3 + 1 + 3 s).
      const complete = (text: string) =>
        new Promise<{ status?: number; how: string; ms: number }>((resolve) => {
          const t0 = performance.now();
          const session = http2.connect(generic.url);
          session.on("error", () => undefined);
          const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", "content-type": "application/json", "connect-protocol-version": "1", "connect-timeout-ms": "300", ...auth });
          let status: number | undefined;
          let settled = false;
          const done = (how: string) => () => {
            if (settled) return;
            settled = true;
            session.destroy();
            resolve({ status, how, ms: performance.now() - t0 });
          };
          req.on("response", (hd) => (status = Number(hd[":status"])));
          req.resume();
          req.on("end", done("answered"));
          req.on("close", done("closed"));
          req.on("error", () => undefined);
          setTimeout(done("still open after 10 s"), 10_000);
          req.end(JSON.stringify({ text }));
        });
      const [late, hung] = await Promise.all([complete("slow"), complete("hang")]);
      expect(late).toMatchObject({ how: "answered", status: 200 });
      // The hung call's stream is reset: no response headers, gone within the bound.
      expect(hung.how).not.toBe("still open after 10 s");
      expect(hung.status).toBeUndefined();
      expect(hung.ms).toBeGreaterThan(3_000);
    } finally {
      await generic.close();
    }
  }, 20_000);

  it("reads and discards the rest of a body it answered before the end, so the client finishes sending (fuzz finding: a client's connection refused every call ENHANCE_YOUR_CALM)", async () => {
    const generic = await startServer({
      name: "echo-generic-drain",
      host: "127.0.0.1",
      port: 0,
      fastPath: false,
      routes: echoRoutes({}),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { readMaxBytes: 64 * 1024 },
    });
    // Node's client counts an unsent body against its connection's memory (10 MB) until the
    // body is sent; when the server resets the stream instead, the count is never given back.
    const big = Buffer.alloc(2 * 1024 * 1024, 0x20); // 2 MiB: refused after its first 64 KiB
    // The generic path (Connect JSON) and the fast path (Connect binary on the suite's server).
    for (const [url, contentType] of [[generic.url, "application/json"], [server.url, "application/proto"]] as const) {
      const session = http2.connect(url);
      session.on("error", () => undefined);
      try {
      for (let i = 0; i < 8; i++) {
        const r = await new Promise<{ status?: number; body: string; rst?: number; error?: string }>((resolve) => {
          const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", "content-type": contentType, "connect-protocol-version": "1", authorization: `Bearer ${ADMIN_KEY}` });
          let status: number | undefined;
          const chunks: Buffer[] = [];
          req.on("response", (hd) => (status = Number(hd[":status"])));
          req.on("data", (d: Buffer) => chunks.push(d));
          req.on("error", (e) => resolve({ error: String(e), body: "" }));
          req.on("close", () => resolve({ status, body: Buffer.concat(chunks).toString(), rst: req.rstCode }));
          req.end(big);
        });
        expect(r.error, `${contentType} call ${i}`).toBeUndefined();
        expect([r.status, JSON.parse(r.body).code, r.rst], `${contentType} call ${i}`).toEqual([429, "resource_exhausted", http2.constants.NGHTTP2_NO_ERROR]);
      }
      } finally {
        session.destroy();
      }
    }
    // A body past STREAM_DRAIN_BYTES_MAX is cut once that much was discarded, not read for the whole second.
    const session = http2.connect(generic.url);
    session.on("error", () => undefined);
    try {
      const sent = await new Promise<number>((resolve) => {
        const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", "content-type": "application/json", "connect-protocol-version": "1", authorization: `Bearer ${ADMIN_KEY}` });
        let written = 0;
        let closed = false;
        req.on("error", () => undefined);
        req.on("close", () => ((closed = true), resolve(written)));
        req.resume();
        const chunk = Buffer.alloc(1024 * 1024, 0x20);
        const more = (): void => {
          if (closed || written >= 4 * STREAM_DRAIN_BYTES_MAX) return void req.end();
          req.write(chunk, () => ((written += chunk.length), more()));
        };
        more();
      });
      expect(sent).toBeGreaterThanOrEqual(STREAM_DRAIN_BYTES_MAX);
      expect(sent).toBeLessThan(2 * STREAM_DRAIN_BYTES_MAX);
    } finally {
      session.destroy();
    }
    await generic.close();
  }, 30_000);
});

describe("graceful close", () => {
  it("lets an in-flight call finish, reports NOT_SERVING, then refuses new connections", async () => {
    let release!: () => void;
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => (entered = r));
    const s = await startServer({
      name: "echo-close",
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes({
        onEcho: () => {
          entered();
          return new Promise<void>((r) => (release = r));
        },
      }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { shutdownGraceMs: 20_000 },
    });
    const client = createClient(EchoService, createGrpcTransport({ baseUrl: s.url }));
    const health = createClient(Health, createGrpcTransport({ baseUrl: s.url }));
    const watch = health.watch({ service: "" })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(ServingStatus.SERVING);
    const call = client.echo({ text: "slow" }, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    await inHandler;
    const closed = s.close();
    expect((await watch.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
    release();
    expect((await call).text).toBe("slow");
    await closed;
    const err = await codeOf(createClient(EchoService, createGrpcTransport({ baseUrl: s.url })).echo({ text: "x" }));
    expect(err.code).toBe(Code.Unavailable);
  });

  it("aborts calls still running after shutdownGraceMs", async () => {
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => (entered = r));
    const s = await startServer({
      name: "echo-grace",
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes({
        onEcho: (_t, ctx) => {
          entered();
          return new Promise<void>((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
        },
      }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { shutdownGraceMs: 50 },
    });
    const call = createClient(EchoService, createGrpcTransport({ baseUrl: s.url })).echo(
      { text: "stuck" },
      { headers: { authorization: `Bearer ${ADMIN_KEY}` } },
    );
    const settled = codeOf(call);
    await inHandler;
    await s.close();
    const err = await settled;
    expect([Code.Unavailable, Code.Canceled]).toContain(err.code);
  });
});

describe("idle and half-open connections", () => {
  it("validates idleConnectionMs and handshakeMs", async () => {
    const { resolveLimits } = await import("./server.js");
    expect(resolveLimits({}).idleConnectionMs).toBe(60_000);
    expect(resolveLimits({}).handshakeMs).toBe(10_000);
    expect(() => resolveLimits({ idleConnectionMs: 0 })).toThrow(/limits\.idleConnectionMs/);
    expect(() => resolveLimits({ handshakeMs: 60_001 })).toThrow(/limits\.handshakeMs/);
  });

  // Probe p3: with connectionsMax 20, 20 sockets that sent nothing (or only the preface and
  // SETTINGS) held every slot for good and legitimate clients were refused.
  it("closes connections that never complete the handshake or have no stream open, never one with a stream in flight (probe: idle sockets held every connectionsMax slot)", async () => {
    const net = await import("node:net");
    const s = await startServer({
      name: "echo-idle",
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes({ onStream: () => new Promise((r) => setTimeout(r, 300)) }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { connectionsMax: 4, idleConnectionMs: 600, handshakeMs: 300 },
    });
    const port = Number(new URL(s.url).port);
    const opened = (preface: boolean) =>
      new Promise<{ closedAfterMs: number }>((resolve) => {
        const t0 = performance.now();
        const so = net.connect(port, "127.0.0.1");
        so.on("error", () => undefined);
        so.resume();
        if (preface) so.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        so.on("close", () => resolve({ closedAfterMs: performance.now() - t0 }));
        setTimeout(() => so.destroy(), 5_000);
      });
    try {
      const silent = [opened(false), opened(false)];
      const settled = [opened(true), opened(true)];
      // All four slots are taken now; they are given back without the peers doing anything.
      for (const r of await Promise.all(silent)) expect(r.closedAfterMs).toBeLessThan(1_500);
      for (const r of await Promise.all(settled)) {
        expect(r.closedAfterMs).toBeGreaterThan(500);
        expect(r.closedAfterMs).toBeLessThan(2_000);
      }
      // A server stream of 6 x 300 ms (1.8 s, three times idleConnectionMs) on one connection is
      // not cut; once it is over, the connection is closed after idleConnectionMs.
      const session = http2.connect(s.url);
      session.on("error", () => undefined);
      const t0 = performance.now();
      const sessionClosed = new Promise<number>((r) => session.on("close", () => r(performance.now() - t0)));
      const msg = toBinary(EchoStreamRequestSchema, create(EchoStreamRequestSchema, { text: "long", count: 6 }));
      const body = new Uint8Array(5 + msg.length);
      new DataView(body.buffer).setUint32(1, msg.length);
      body.set(msg, 5);
      const streamed = await new Promise<{ bytes: number; status?: string; endedAfterMs: number }>((resolve) => {
        const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/EchoStream", "content-type": "application/grpc", te: "trailers", "grpc-timeout": "5S", authorization: `Bearer ${ADMIN_KEY}` });
        let bytes = 0;
        let status: string | undefined;
        req.on("data", (d: Buffer) => (bytes += d.length));
        req.on("trailers", (t) => (status = String(t["grpc-status"])));
        req.on("close", () => resolve({ bytes, status, endedAfterMs: performance.now() - t0 }));
        req.on("error", () => undefined);
        req.end(body);
      });
      expect(streamed.status).toBe("0");
      expect(streamed.bytes).toBeGreaterThan(6 * 5);
      expect(streamed.endedAfterMs).toBeGreaterThan(1_500);
      const closedAfterMs = await sessionClosed;
      expect(closedAfterMs - streamed.endedAfterMs).toBeGreaterThan(500);
      expect(closedAfterMs - streamed.endedAfterMs).toBeLessThan(1_500);
      // A new client gets a slot and its call is answered.
      const c = createClient(EchoService, createGrpcTransport({ baseUrl: s.url }));
      expect((await c.echo({ text: "ok" }, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).text).toBe("ok");
    } finally {
      await s.close();
    }
  }, 20_000);
});

describe("fast path: answers never read", () => {
  // Probe p2b: 100 unary Connect binary answers of 3.9 MB that the client never read kept their
  // streams (and ~900 MB) for as long as the connection lived: the fast path answered before
  // the generic path's stream bound was set.
  it("resets a fast-path stream whose answer is still unread at deadline + 1 s + handlerOverrunMs, with RST_STREAM CANCEL", async () => {
    const s = await startServer({
      name: "echo-unread",
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes({}),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
      limits: { readMaxBytes: 2 * 1024 * 1024, writeMaxBytes: 2 * 1024 * 1024, timeoutMsMax: 5_000, timeoutMsDefault: 5_000, handlerOverrunMs: 300 },
    });
    const session = http2.connect(s.url);
    session.on("error", () => undefined);
    try {
      const before = s.fastPathCalls;
      const body = toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "big", payload: new Uint8Array(1024 * 1024).fill(7) }));
      const unread = (timeout: Record<string, string>) =>
        new Promise<{ responded: boolean; how: string; rst?: number; ms: number }>((resolve) => {
          const t0 = performance.now();
          const req = session.request({ ":method": "POST", ":path": "/nanobill.bench.v1.EchoService/Echo", "content-type": "application/proto", authorization: `Bearer ${ADMIN_KEY}`, ...timeout });
          let responded = false;
          let settled = false;
          const done = (how: string) => () => {
            if (settled) return;
            settled = true;
            resolve({ responded, how, rst: req.rstCode, ms: performance.now() - t0 });
          };
          req.on("response", () => (responded = true));
          req.on("error", () => undefined);
          req.on("close", done("closed"));
          setTimeout(done("still open after 5 s"), 5_000);
          req.pause(); // never read
          req.end(body);
        });
      // 400 ms deadline: reset at about 0.4 + 1 + 0.3 s.
      const r = await unread({ "connect-timeout-ms": "400" });
      expect(s.fastPathCalls).toBe(before + 1);
      expect(r).toMatchObject({ responded: true, how: "closed", rst: http2.constants.NGHTTP2_CANCEL });
      expect(r.ms).toBeGreaterThan(1_500);
      expect(r.ms).toBeLessThan(3_500);
      // A call without a deadline is bounded by the server default, as the fast path applies it.
      expect(callTimeoutMs({ "content-type": "application/proto" }, 5_000, 400)).toBe(400);
      expect(callTimeoutMs({ "content-type": "application/grpc" }, 5_000, 400)).toBe(400);
      // The connection is still usable.
      const c = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: ADMIN_KEY, timeoutMs: 2_000 }));
      expect((await c.echo({ text: "after" })).text).toBe("after");
    } finally {
      session.destroy();
      await s.close();
    }
  }, 20_000);
});

describe("deadlines past timeoutMsMax on the generic path", () => {
  // Review probe p7: connect-es arms its deadline timer before it refuses a deadline, so
  // `grpc-timeout: 99999999H` printed a TimeoutOverflowWarning on every request.
  it("refuses them itself, in connect-es's words and wire format, without a TimeoutOverflowWarning", async () => {
    const generic = await startServer({
      name: "echo-long-deadline",
      host: "127.0.0.1",
      port: 0,
      fastPath: false,
      routes: echoRoutes({}),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
    });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    const session = http2.connect(generic.url);
    session.on("error", () => undefined);
    const call = (path: string, headers: Record<string, string>, body: Uint8Array) =>
      new Promise<string>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": `/nanobill.bench.v1.EchoService/${path}`, ...headers });
        let head: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        req.on("response", (h) => (head = h));
        req.on("trailers", (t) => (trailers = t));
        req.on("data", (d: Buffer) => chunks.push(d));
        req.on("error", reject);
        req.on("end", () => {
          // Lengths differ with the number in the message: compare the flags and the text.
          const { date: _d, "content-length": _l, ...h } = head;
          const b = Buffer.concat(chunks);
          const enveloped = !String(h["content-type"]).endsWith("/json");
          resolve(JSON.stringify({ h, trailers, flags: enveloped ? b[0] : undefined, body: b.subarray(enveloped ? 5 : 0).toString("latin1") }));
        });
        req.end(body);
      });
    const msg = toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "x" }));
    const env = new Uint8Array(5 + msg.length);
    new DataView(env.buffer).setUint32(1, msg.length);
    env.set(msg, 5);
    const jsonEnv = (() => {
      const j = new TextEncoder().encode('{"text":"x","count":1}');
      const b = new Uint8Array(5 + j.length);
      new DataView(b.buffer).setUint32(1, j.length);
      b.set(j, 5);
      return b;
    })();
    const auth = { authorization: `Bearer ${ADMIN_KEY}` };
    // [path, headers without the deadline, body, deadline header, overflowing value, a value connect-es refuses itself]
    const cases: Array<[string, Record<string, string>, Uint8Array, string, string, string, string]> = [
      ["Echo", { "content-type": "application/grpc-web+proto", ...auth }, env, "grpc-timeout", "99999999H", "2M", "359999996400000"],
      ["Echo", { "content-type": "application/grpc", te: "trailers", ...auth }, env, "grpc-timeout", "99999999H", "2M", "359999996400000"],
      ["Echo", { "content-type": "application/json", ...auth }, new TextEncoder().encode('{"text":"x"}'), "connect-timeout-ms", "9999999999", "120000", "9999999999"],
      ["EchoStream", { "content-type": "application/connect+json", ...auth }, jsonEnv, "connect-timeout-ms", "9999999999", "120000", "9999999999"],
      ["Echo", { "content-type": "application/grpc-web+proto" }, env, "grpc-timeout", "99999999H", "2M", "359999996400000"], // no key
    ];
    try {
      for (const [path, headers, body, name, huge, over, hugeMs] of cases) {
        const mine = await call(path, { ...headers, [name]: huge }, body);
        const theirs = await call(path, { ...headers, [name]: over }, body);
        expect(mine.replace(/%20/g, " ").replace("%3C%3D", "<=")).toContain(`timeout ${hugeMs}ms must be <= 60000`);
        expect(mine.replace(hugeMs, "N"), `${headers["content-type"]}`).toBe(theirs.replace(over === "2M" ? "120000" : over, "N"));
        expect(mine).toMatch(/invalid_argument|"grpc-status":"3"|grpc-status: 3/);
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(warnings).toEqual([]);
    } finally {
      process.off("warning", onWarning);
      session.destroy();
      await generic.close();
    }
  });
});

describe("undecodable requests", () => {
  // Review probe p7: malformed protobuf was answered Internal "parse binary: premature EOF"
  // (grpc-status 13) on both paths, and an envelope with the compressed flag but no
  // grpc-encoding Internal too: a client's mistake, so InvalidArgument naming what is wrong.
  it("answers malformed protobuf and a compressed envelope without an encoding InvalidArgument on every protocol and both paths; a handler's own decode error stays Internal", async () => {
    const generic = await startServer({
      name: "echo-decode",
      host: "127.0.0.1",
      port: 0,
      fastPath: false,
      routes: echoRoutes({
        onEcho: (text) => {
          if (text === "downstream") throw new ConnectError("parse binary: premature EOF", Code.Internal);
        },
      }),
      authenticator: createApiKeyAuthenticator(KEYS),
      logger,
    });
    const raw = (url: string, path: string, headers: Record<string, string>, body: Uint8Array) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const session = http2.connect(url);
        session.on("error", reject);
        const req = session.request({ ":method": "POST", ":path": `/nanobill.bench.v1.EchoService/${path}`, authorization: `Bearer ${ADMIN_KEY}`, ...headers });
        let status = 0;
        let trailers = "";
        const chunks: Buffer[] = [];
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("trailers", (t) => (trailers = `grpc-status: ${t["grpc-status"]}\r\ngrpc-message: ${t["grpc-message"]}`));
        req.on("data", (d: Buffer) => chunks.push(d));
        req.on("error", reject);
        req.on("end", () => {
          session.close();
          resolve({ status, text: decodeURIComponent(Buffer.concat(chunks).toString("latin1") + trailers) });
        });
        req.end(body);
      });
    const env = (data: Uint8Array, flags = 0) => {
      const b = new Uint8Array(5 + data.length);
      b[0] = flags;
      new DataView(b.buffer).setUint32(1, data.length);
      b.set(data, 5);
      return b;
    };
    const bad = new Uint8Array([0x0a, 0xff, 0xff]);
    const good = toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "x" }));
    const notValid = "request: not a valid nanobill.bench.v1.EchoRequest (premature EOF)";
    const compressed = (h: string) => `${h}: a compressed message needs a compression named here (none or identity was sent)`;
    try {
      for (const url of [server.url, generic.url]) {
        const cases: Array<[string, Record<string, string>, Uint8Array, RegExp, string]> = [
          ["Echo", { "content-type": "application/proto" }, bad, /"code":"invalid_argument"/, notValid],
          ["Echo", { "content-type": "application/grpc", te: "trailers" }, env(bad), /grpc-status: 3/, notValid],
          ["Echo", { "content-type": "application/grpc", te: "trailers" }, env(good, 1), /grpc-status: 3/, compressed("grpc-encoding")],
          ["Echo", { "content-type": "application/grpc-web+proto" }, env(bad), /grpc-status: 3/, notValid],
          ["Echo", { "content-type": "application/grpc-web+proto" }, env(good, 1), /grpc-status: 3/, compressed("grpc-encoding")],
          ["Echo", { "content-type": "application/proto", "content-encoding": "gzip" }, gzipSync(bad), /"code":"invalid_argument"/, notValid],
          ["EchoStream", { "content-type": "application/connect+proto" }, env(bad), /"code":"invalid_argument"/, notValid.replace("EchoRequest", "EchoStreamRequest")],
          ["EchoStream", { "content-type": "application/connect+proto" }, env(good, 1), /"code":"invalid_argument"/, compressed("connect-content-encoding")],
          ["EchoStream", { "content-type": "application/grpc", te: "trailers" }, env(bad), /grpc-status: 3/, notValid.replace("EchoRequest", "EchoStreamRequest")],
        ];
        for (const [path, headers, body, code, message] of cases) {
          const r = await raw(url, path, headers, body);
          expect(r.text, `${url} ${path} ${JSON.stringify(headers)}`).toMatch(code);
          expect(r.text, `${url} ${path} ${JSON.stringify(headers)}`).toContain(message);
        }
      }
      // A handler's own "parse binary" error (a downstream answer it could not decode) is not the
      // client's: Internal as before, on every protocol.
      for (const headers of [{ "content-type": "application/grpc-web+proto" }, { "content-type": "application/grpc", te: "trailers" }] as Array<Record<string, string>>) {
        const r = await raw(generic.url, "Echo", headers, env(toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "downstream" }))));
        expect(r.text).toMatch(/grpc-status: 13/);
      }
      const r = await raw(generic.url, "Echo", { "content-type": "application/proto" }, toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "downstream" })));
      expect([r.status, r.text]).toEqual([500, expect.stringContaining('"code":"internal"')]);
    } finally {
      await generic.close();
    }
  });
});
