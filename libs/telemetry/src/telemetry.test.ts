import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { SpanKind, trace } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { ATTR, nanosAttr } from "./attributes.js";
import { initTelemetry, type Telemetry } from "./init.js";
import { createTracingInterceptor } from "./interceptor.js";
import { BATCH_LINKS_MAX, currentTraceContext, withBatchTrace, withTraceContext, type StoredTraceContext } from "./trace-context.js";

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
beforeAll(() => {
  telemetry = initTelemetry({ serviceName: "telemetry-test", exporter });
});
afterAll(async () => {
  await telemetry.shutdown();
});

describe("nanosAttr", () => {
  it.each([
    [0n, 0],
    [8_755_000n, 8_755_000],
    [-4_377_500n, -4_377_500],
    [9_007_199_254_740_991n, 9_007_199_254_740_991],
    [-9_007_199_254_740_991n, -9_007_199_254_740_991],
    [9_007_199_254_740_992n, "9007199254740992"],
    [-9_007_199_254_740_992n, "-9007199254740992"],
    [9_223_372_036_854_775_807n, "9223372036854775807"],
  ])("maps %s to %j (an integer number when exact, else the decimal string)", (v, want) => {
    expect(nanosAttr(v)).toStrictEqual(want);
  });
});

it("declares every attribute once with the nanobill. prefix", () => {
  const names = Object.values(ATTR);
  expect(names.every((n) => n.startsWith("nanobill."))).toBe(true);
  expect(new Set(names).size).toBe(names.length);
  expect(ATTR.PRICE_NANOS).toBe("nanobill.price_nanos");
});

describe("stored trace context", () => {
  it("is undefined outside any span", () => {
    expect(currentTraceContext()).toBeUndefined();
  });

  it("continues a stored context in an async function, also after awaits", async () => {
    const tracer = trace.getTracer("t");
    const stored = tracer.startActiveSpan("ingest", (span) => {
      const tc = currentTraceContext();
      span.end();
      return tc!;
    });
    expect(stored.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const traceId = stored.traceparent.split("-")[1];
    const parentId = stored.traceparent.split("-")[2];
    exporter.reset();
    await withTraceContext(stored, async () => {
      await new Promise((r) => setTimeout(r, 2));
      tracer.startSpan("rate").end();
    });
    const rate = exporter.getFinishedSpans().find((s) => s.name === "rate")!;
    expect(rate.spanContext().traceId).toBe(traceId);
    expect(rate.parentSpanContext?.spanId).toBe(parentId);
  });

  it("runs fn unchanged when the stored context is missing or malformed", () => {
    expect(withTraceContext(undefined, () => 42)).toBe(42);
    expect(withTraceContext({ traceparent: "garbage" }, () => currentTraceContext())).toBeUndefined();
  });
});

describe("withBatchTrace", () => {
  const stored = (name: string): StoredTraceContext =>
    trace.getTracer("t").startActiveSpan(name, (span) => {
      span.end();
      return currentTraceContext()!;
    });
  const ids = (tc: StoredTraceContext) => ({ traceId: tc.traceparent.split("-")[1], spanId: tc.traceparent.split("-")[2] });

  it("continues the first item's trace and links every other distinct one; work inside is its child", async () => {
    const a = stored("a");
    const b = stored("b");
    exporter.reset();
    const inside = await withBatchTrace("post", [a, b, a, undefined, { traceparent: "garbage", tracestate: "" }, b], async () => {
      await new Promise((r) => setTimeout(r, 1));
      return currentTraceContext()!;
    });
    const span = exporter.getFinishedSpans().find((s) => s.name === "post")!;
    expect(span.spanContext().traceId).toBe(ids(a).traceId);
    expect(span.parentSpanContext?.spanId).toBe(ids(a).spanId);
    expect(span.links.map((l) => [l.context.traceId, l.context.spanId])).toEqual([[ids(b).traceId, ids(b).spanId]]);
    expect(span.attributes).toMatchObject({ "nanobill.batch.items": 6, "nanobill.batch.links_dropped": 0 });
    expect(ids(inside)).toEqual({ traceId: ids(a).traceId, spanId: span.spanContext().spanId });
  });

  it("is a root span with links when the first item has no trace, bounds its links, and marks a failure", async () => {
    const many = Array.from({ length: BATCH_LINKS_MAX + 5 }, (_, i) => stored(`m${i}`));
    exporter.reset();
    await expect(withBatchTrace("post", [undefined, ...many], async () => Promise.reject(new Error("ledger down")))).rejects.toThrow("ledger down");
    const span = exporter.getFinishedSpans().find((s) => s.name === "post")!;
    expect(span.parentSpanContext).toBeUndefined();
    expect(span.links).toHaveLength(BATCH_LINKS_MAX);
    expect(span.attributes).toMatchObject({ "nanobill.batch.items": BATCH_LINKS_MAX + 6, "nanobill.batch.links_dropped": 5 });
    expect(span.status).toMatchObject({ code: 2, message: "ledger down" });
  });
});

describe("createTracingInterceptor", () => {
  const transport = () =>
    createRouterTransport(
      (router) =>
        router.service(EchoService, {
          echo(req) {
            trace.getTracer("t").startSpan("handler-work").end();
            return { text: req.text };
          },
          async *echoStream(req) {
            for (let i = 0; i < req.count; i++) yield { text: req.text, index: i };
          },
        }),
      {
        transport: { interceptors: [createTracingInterceptor("client")] },
        router: { interceptors: [createTracingInterceptor("server", { serviceName: "echo" })] },
      },
    );

  it("makes a client span, a server span as its child, and puts the handler's spans under the server span", async () => {
    exporter.reset();
    await createClient(EchoService, transport()).echo({ text: "x" });
    const spans = exporter.getFinishedSpans();
    const client = spans.find((s) => s.kind === SpanKind.CLIENT)!;
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!;
    const work = spans.find((s) => s.name === "handler-work")!;
    expect(client.name).toBe("nanobill.bench.v1.EchoService/Echo");
    expect(server.parentSpanContext?.spanId).toBe(client.spanContext().spanId);
    expect(work.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1);
    expect(server.attributes[ATTR.SERVICE]).toBe("echo");
    expect(client.attributes[ATTR.SERVICE]).toBeUndefined();
  });

  it("ends a server-streaming span only after the last message", async () => {
    exporter.reset();
    const got: number[] = [];
    for await (const m of createClient(EchoService, transport()).echoStream({ text: "s", count: 3 })) {
      got.push(m.index);
      expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)).toHaveLength(0);
    }
    expect(got).toEqual([0, 1, 2]);
    await new Promise((r) => setImmediate(r));
    expect(exporter.getFinishedSpans().filter((s) => s.name.endsWith("/EchoStream"))).toHaveLength(2);
  });
});

it("shares one provider between initTelemetry callers; one caller's shutdown keeps the others exporting", async () => {
  const second = new InMemorySpanExporter();
  const t2 = initTelemetry({ serviceName: "another-service", exporter: second });
  expect(t2.provider).toBe(telemetry.provider);
  trace.getTracer("t").startSpan("both").end();
  expect(second.getFinishedSpans().map((s) => s.name)).toEqual(["both"]);
  await t2.shutdown();
  exporter.reset();
  trace.getTracer("t").startSpan("after").end();
  expect(exporter.getFinishedSpans().map((s) => s.name)).toEqual(["after"]);
});
