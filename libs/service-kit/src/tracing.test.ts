import { afterAll, beforeAll, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { trace, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { initTelemetry, currentTraceContext, withTraceContext, type Telemetry } from "@nanobill/telemetry";
import { createApiKeyAuthenticator, parseApiKeysEnv } from "./auth.js";
import { closeClientSessions, createClientTransport } from "./client.js";
import { silentLogger } from "./logger.js";
import { startServer, type StartedServer } from "./server.js";
import { echoRoutes } from "./test-echo.js";

const KEY = "sk_test_trace_0123456789abcdef";
const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
let server: StartedServer;
let handlerTraceparent: string | undefined;
let fail = false;

beforeAll(async () => {
  telemetry = initTelemetry({ serviceName: "tracing-test", exporter });
  server = await startServer({
    name: "echo",
    host: "127.0.0.1",
    port: 0,
    routes: echoRoutes({
      onEcho: () => {
        handlerTraceparent = currentTraceContext()?.traceparent;
        if (fail) throw new Error("boom");
      },
    }),
    authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY}`)),
    logger: silentLogger,
  });
});

afterAll(async () => {
  closeClientSessions();
  await server?.close();
  await telemetry?.shutdown();
});

it("a client call produces a client span and a server span in one trace, the server span the child", async () => {
  exporter.reset();
  const client = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: KEY, protocol: "grpc" }));
  await client.echo({ text: "hi" });
  await telemetry.forceFlush();
  const spans = exporter.getFinishedSpans();
  expect(spans).toHaveLength(2);
  const clientSpan = spans.find((s) => s.kind === SpanKind.CLIENT)!;
  const serverSpan = spans.find((s) => s.kind === SpanKind.SERVER)!;
  expect(clientSpan.name).toBe("nanobill.bench.v1.EchoService/Echo");
  expect(serverSpan.name).toBe("nanobill.bench.v1.EchoService/Echo");
  expect(serverSpan.spanContext().traceId).toBe(clientSpan.spanContext().traceId);
  expect(serverSpan.parentSpanContext?.spanId).toBe(clientSpan.spanContext().spanId);
  expect(serverSpan.attributes).toMatchObject({
    "rpc.system": "grpc",
    "rpc.service": "nanobill.bench.v1.EchoService",
    "rpc.method": "Echo",
    "nanobill.service": "echo",
  });
  // The handler ran inside the server span.
  expect(handlerTraceparent).toContain(serverSpan.spanContext().spanId);
});

it("a call made inside an active span (or a stored context) joins that trace", async () => {
  exporter.reset();
  const client = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: KEY, protocol: "connect" }));
  const tracer = trace.getTracer("test");
  const stored = await tracer.startActiveSpan("ingest", async (span) => {
    const tc = currentTraceContext();
    span.end();
    return tc;
  });
  expect(stored?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  await withTraceContext(stored, async () => {
    await new Promise((r) => setTimeout(r, 1));
    await client.echo({ text: "later" });
  });
  await telemetry.forceFlush();
  const spans = exporter.getFinishedSpans();
  const traceId = stored!.traceparent.split("-")[1];
  expect(spans.filter((s) => s.spanContext().traceId === traceId).map((s) => s.kind).sort()).toEqual(
    [SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT].sort(),
  );
});

it("a failed call marks both spans with an error status and the Connect code, without the internal message", async () => {
  exporter.reset();
  fail = true;
  const client = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: KEY }));
  await expect(client.echo({ text: "x" })).rejects.toThrow(/internal/);
  fail = false;
  await telemetry.forceFlush();
  const spans = exporter.getFinishedSpans();
  expect(spans).toHaveLength(2);
  for (const s of spans) {
    expect(s.status.code).toBe(SpanStatusCode.ERROR);
    expect(s.attributes["rpc.connect_rpc.error_code"]).toBe("Internal");
    expect(JSON.stringify(s.attributes) + (s.status.message ?? "")).not.toContain("boom");
  }
});

it("health checks make no spans", async () => {
  exporter.reset();
  const { Health } = await import("@nanobill/contracts/grpc/health/v1/health_pb");
  const health = createClient(Health, createClientTransport({ baseUrl: server.url, apiKey: KEY }));
  await health.check({ service: "" });
  await telemetry.forceFlush();
  expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)).toHaveLength(0);
});

it("the fast path and the generic path (server and client) make the same spans: names, kinds, attributes, status, parent/child", async () => {
  const generic = await startServer({
    name: "echo",
    host: "127.0.0.1",
    port: 0,
    fastPath: false,
    routes: echoRoutes({
      onEcho: () => {
        handlerTraceparent = currentTraceContext()?.traceparent;
        if (fail) throw new Error("boom");
      },
    }),
    authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY}`)),
    logger: silentLogger,
  });
  const shapes: unknown[] = [];
  try {
    for (const url of [server.url, generic.url]) {
      for (const lean of [true, false]) {
        for (const failing of [false, true]) {
          exporter.reset();
          fail = failing;
          const client = createClient(EchoService, createClientTransport({ baseUrl: url, apiKey: KEY, lean }));
          await client.echo({ text: "x" }).catch(() => undefined);
          fail = false;
          await telemetry.forceFlush();
          const spans = exporter.getFinishedSpans();
          const c = spans.find((s) => s.kind === SpanKind.CLIENT)!;
          const s = spans.find((x) => x.kind === SpanKind.SERVER)!;
          expect(s.parentSpanContext?.spanId).toBe(c.spanContext().spanId);
          expect(s.spanContext().traceId).toBe(c.spanContext().traceId);
          expect(handlerTraceparent).toContain(s.spanContext().spanId);
          shapes.push(spans.map((x) => ({ name: x.name, kind: x.kind, attributes: x.attributes, status: x.status })).sort((a, b) => a.kind - b.kind));
        }
      }
    }
  } finally {
    await generic.close();
  }
  expect(shapes).toHaveLength(8);
  for (let i = 2; i < 8; i++) expect(shapes[i]).toEqual(shapes[i % 2]);
});
