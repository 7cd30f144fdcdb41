import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { createApiKeyAuthenticator } from "./auth.js";
import { closeClientSessions, createClientTransport } from "./client.js";
import { silentLogger } from "./logger.js";
import { startServer } from "./server.js";
import { echoRoutes } from "./test-echo.js";

/**
 * Node's HTTP/2 client never gives back the memory of a body it had not sent when the server
 * resets the stream: past ~10 MB, every new stream on that connection is refused locally with
 * ENHANCE_YOUR_CALM, for good. The kit's session manager then retires the connection (the next
 * call opens a new one) instead of failing every later call: for the lean client and for
 * connect-node's own client (streaming calls, lean: false).
 */
describe("client transports on a connection Node refuses ENHANCE_YOUR_CALM", () => {
  let server: http2.Http2Server;
  let url = "";
  let connections = 0;
  const sessions = new Set<http2.ServerHttp2Session>();
  beforeAll(async () => {
    // Answers every call with an empty EchoResponse at once, then resets the stream with the
    // request body unread (as a server that refuses a body early and does not drain it).
    server = http2.createServer();
    server.on("session", (session) => {
      connections++;
      sessions.add(session);
    });
    server.on("stream", (stream) => {
      stream.on("error", () => undefined); // the client's reset of a refused stream
      stream.pause();
      stream.respond({ ":status": 200, "content-type": "application/proto" });
      stream.end();
      setTimeout(() => !stream.closed && stream.close(http2.constants.NGHTTP2_NO_ERROR), 20);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    closeClientSessions();
    for (const session of sessions) session.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it.each([
    ["the lean client", true],
    ["connect-node's client (streams, lean: false)", false],
  ])("retires the connection after a refusal, so later calls go through: %s", async (_name, lean) => {
    closeClientSessions();
    connections = 0;
    const client = createClient(EchoService, createClientTransport({ baseUrl: url, apiKey: "k", protocol: "connect", lean }));
    const payload = new Uint8Array(2 * 1024 * 1024);
    const codes: string[] = [];
    for (let i = 0; i < 16; i++) {
      const code = await client.echo({ payload }).then(
        () => "ok",
        (e: unknown) => Code[ConnectError.from(e).code]!,
      );
      codes.push(code);
      await new Promise((r) => setTimeout(r, 30));
    }
    // At most one call in a row is refused (the lean client: ResourceExhausted; connect-node maps
    // the refusal to Internal); the others answer, on new connections.
    const refused = lean ? "ResourceExhausted" : "Internal";
    expect(codes.every((c) => c === "ok" || c === refused), codes.join(",")).toBe(true);
    expect(codes.filter((c) => c === "ok").length, codes.join(",")).toBeGreaterThanOrEqual(12);
    expect(codes.join(",")).not.toContain(`${refused},${refused}`);
    expect(connections).toBeGreaterThan(1);
  }, 30_000);
});

/**
 * A server that resets a call's stream (RST_STREAM) before any response headers: the lean client
 * reports the HTTP/2 code as connect-node's table (and gRPC's PROTOCOL-HTTP2.md) maps it.
 */
describe("lean client: a stream the server resets before response headers", () => {
  let server: http2.Http2Server;
  let url = "";
  let requests = 0;
  const sessions = new Set<http2.ServerHttp2Session>();
  beforeAll(async () => {
    // Reads the whole request, then resets the stream with the code in x-rst (none: never answers).
    server = http2.createServer();
    server.on("session", (session) => sessions.add(session));
    server.on("stream", (stream, headers) => {
      requests++;
      stream.on("error", () => undefined);
      stream.resume();
      const code = headers["x-rst"];
      if (typeof code === "string") stream.on("end", () => stream.close(Number(code)));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    closeClientSessions();
    for (const session of sessions) session.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const outcome = (protocol: "connect" | "grpc", rst: number): Promise<string> => {
    const client = createClient(EchoService, createClientTransport({ baseUrl: url, apiKey: "k", protocol, timeoutMs: 5_000 }));
    return client.echo({ text: "x" }, { headers: { "x-rst": String(rst) } }).then(
      () => "ok",
      (e: unknown) => `${Code[ConnectError.from(e).code]} ${ConnectError.from(e).rawMessage}`,
    );
  };

  it.each(["connect", "grpc"] as const)("CANCEL -> Canceled, NO_ERROR -> Internal (not Unknown \"HTTP 0\"): %s", async (protocol) => {
    expect(await outcome(protocol, http2.constants.NGHTTP2_CANCEL)).toBe("Canceled http/2 stream closed with error code CANCEL (0x8)");
    expect(await outcome(protocol, http2.constants.NGHTTP2_NO_ERROR)).toBe("Internal http/2 stream closed without response headers (error code 0x0)");
  });

  it.each(["connect", "grpc"] as const)("REFUSED_STREAM -> Unavailable (safe to retry), the other codes by the table (not Node's Internal message): %s", async (protocol) => {
    const c = http2.constants;
    expect(await outcome(protocol, c.NGHTTP2_REFUSED_STREAM)).toBe("Unavailable http/2 stream closed with error code REFUSED_STREAM (0x7)");
    expect(await outcome(protocol, c.NGHTTP2_ENHANCE_YOUR_CALM)).toBe("ResourceExhausted http/2 stream closed with error code ENHANCE_YOUR_CALM (0xb)");
    expect(await outcome(protocol, c.NGHTTP2_HTTP_1_1_REQUIRED)).toBe("PermissionDenied http/2 stream closed with error code HTTP_1_1_REQUIRED (0xd)");
    expect(await outcome(protocol, c.NGHTTP2_INTERNAL_ERROR)).toBe("Internal http/2 stream closed with error code INTERNAL_ERROR (0x2)");
  });

  // connect-es reads timeoutMs <= 0 as "no deadline": such a call to this server (it never
  // answers without x-rst) would wait forever. The lean transport refuses it before sending.
  it.each(["connect", "grpc"] as const)("refuses a timeoutMs of 0 or less (no deadline), NaN or Infinity: InvalidArgument, nothing sent: %s", async (protocol) => {
    const settle = (p: Promise<unknown>): Promise<string> =>
      Promise.race([
        p.then(
          () => "ok",
          (e: unknown) => `${Code[ConnectError.from(e).code]} ${ConnectError.from(e).rawMessage}`,
        ),
        new Promise<string>((r) => setTimeout(() => r("still pending after 1 s"), 1_000)),
      ]);
    const refused = "InvalidArgument timeoutMs: must be a finite number of milliseconds above 0 (no call without a deadline)";
    const client = createClient(EchoService, createClientTransport({ baseUrl: url, apiKey: "k", protocol, timeoutMs: 5_000 }));
    const before = requests;
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(await settle(client.echo({ text: "x" }, { timeoutMs })), `unary, timeoutMs ${timeoutMs}`).toBe(refused);
      const streamed = (async () => {
        for await (const _ of client.echoStream({}, { timeoutMs })) void _;
      })();
      expect(await settle(streamed), `stream, timeoutMs ${timeoutMs}`).toBe(refused);
    }
    // The transport's default deadline follows the same rule.
    const noDefault = createClient(EchoService, createClientTransport({ baseUrl: url, apiKey: "k", protocol, timeoutMs: 0 }));
    expect(await settle(noDefault.echo({ text: "x" }))).toBe(refused);
    expect(requests - before).toBe(0);
    // A positive timeoutMs is still the deadline.
    expect(await settle(client.echo({ text: "x" }, { timeoutMs: 50 }))).toBe("DeadlineExceeded the operation timed out");
  });
});

describe("lean client: a call that crosses the server's idle close", () => {
  it("is sent again once when the server refuses its stream (REFUSED_STREAM: not processed), so calls made at the idle deadline succeed", async () => {
    const key = "sk_test_idle_race_0123456789";
    const idleMs = 40;
    const server = await startServer({
      name: "echo",
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes(),
      authenticator: createApiKeyAuthenticator([{ tenant: "tnt_a", scopes: ["admin"], key }]),
      logger: silentLogger,
      limits: { idleConnectionMs: idleMs },
    });
    try {
      for (const protocol of ["connect", "grpc"] as const) {
        const c = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: key, protocol, lean: true }));
        const failures: string[] = [];
        // Calls spaced around the idle deadline: about one in five crossed the server's GOAWAY.
        for (let i = 0; i < 60; i++) {
          await new Promise((r) => setTimeout(r, idleMs - 3 + (i % 7)));
          await c.echo({ text: "x" }).catch((e: unknown) => failures.push(ConnectError.from(e).message));
        }
        expect(failures).toEqual([]);
        closeClientSessions();
      }
    } finally {
      closeClientSessions();
      await server.close();
    }
  });
});
