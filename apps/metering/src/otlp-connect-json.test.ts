// OTLP TraceService/Export over Connect JSON on the metering port: its messages have double and
// fixed64 fields, so the kit's JSON big-integer check (json-int64.ts, written for int64 fields)
// must not refuse a legitimate double such as JSON.stringify(1e20) (second review: the whole export
// answered 400). The OTLP service is registered without that check.
import { testBackends } from "@nanobill/db";
import { closeClientSessions, silentLogger, startServer, type StartedServer } from "@nanobill/service-kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX } from "./limits.js";
import { authenticator, openHarness, rawPost, type Harness } from "./test-support.js";

for (const backend of testBackends()) describe(`OTLP Export over Connect JSON (${backend.name})`, () => {
  let h: Harness;
  let server: StartedServer;
  beforeAll(async () => {
    h = await openHarness(await backend.open());
    server = await startServer({ name: "metering-json", host: "127.0.0.1", port: 0, routes: h.service.routes, authenticator, logger: silentLogger, limits: { readMaxBytes: REQUEST_BYTES_MAX, writeMaxBytes: RESPONSE_BYTES_MAX } });
  });
  afterAll(async () => {
    closeClientSessions();
    await server?.close();
    await h?.close();
  });
  const post = (body: string) => rawPost(server.url, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", "application/json", body);
  const b64 = (hex: string) => Buffer.from(hex, "hex").toString("base64");
  const genaiSpan = (spanHex: string) =>
    `{"traceId":"${b64("0af7651916cd43dd8448eb211c80319c")}","spanId":"${b64(spanHex)}","name":"chat","endTimeUnixNano":"1795169940000000000","attributes":[` +
    `{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},{"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},` +
    `{"key":"nanobill.customer_id","value":{"stringValue":"cus_1"}},{"key":"gen_ai.usage.input_tokens","value":{"intValue":"10"}}]}`;
  const otherSpan = (spanHex: string, attr: string, extra = "") =>
    `{"traceId":"${b64("0af7651916cd43dd8448eb211c80319c")}","spanId":"${b64(spanHex)}","name":"http"${extra},"attributes":[{"key":"x","value":${attr}}]}`;
  const req = (...spans: string[]) => `{"resourceSpans":[{"scopeSpans":[{"spans":[${spans.join(",")}]}]}]}`;

  it("control: a GenAI span alone is accepted", async () => {
    const r = await post(req(genaiSpan("00f067aa0ba902b7")));
    expect(r.status).toBe(200);
  });
  it("accepts an unrelated span's doubleValue 1e20 written as JSON.stringify writes it (100000000000000000000)", async () => {
    const r = await post(req(genaiSpan("00f067aa0ba902b8"), otherSpan("00f067aa0ba902b9", `{"doubleValue":100000000000000000000}`)));
    expect(r.status).toBe(200);
  });
  it("accepts a doubleValue written 1e20 (exponent form)", async () => {
    const r = await post(req(genaiSpan("00f067aa0ba902c8"), otherSpan("00f067aa0ba902c9", `{"doubleValue":1e20}`)));
    expect(r.status).toBe(200);
  });
});
