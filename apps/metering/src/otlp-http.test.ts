import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ExportTraceServiceRequestSchema,
  ExportTraceServiceResponseSchema,
} from "@nanobill/contracts/opentelemetry/proto/collector/trace/v1/trace_service_pb";
import { testBackends } from "@nanobill/db";
import { createApiKeyAuthenticator, createTenantLimiter, silentLogger } from "@nanobill/service-kit";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GENAI_MAPPING_DEFAULT, startOtlpServer } from "./otlp-http.js";
import { authenticator, KEYS, openHarness, T0, type Harness } from "./test-support.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const endNs = (BigInt(T0.getTime()) * 1_000_000n - 1_000_000_000n).toString();

function span(spanId: string, attrs: Array<[string, object]>) {
  return { traceId: TRACE, spanId, name: "chat gpt-x", startTimeUnixNano: endNs, endTimeUnixNano: endNs, attributes: attrs.map(([key, value]) => ({ key, value })) };
}

const body = (spans: object[]) => ({
  resourceSpans: [{ resource: { attributes: [{ key: "nanobill.customer_id", value: { stringValue: "cus_otel" } }] }, scopeSpans: [{ scope: { name: "test" }, spans }] }],
});

const GENAI: Array<[string, object]> = [
  ["gen_ai.request.model", { stringValue: "gpt-x" }],
  ["gen_ai.system", { stringValue: "openai" }],
  ["gen_ai.usage.input_tokens", { intValue: "1234" }],
  ["gen_ai.usage.output_tokens", { intValue: 567 }],
];

describe.each(testBackends())("OTLP/HTTP GenAI receiver ($name)", (backend) => {
  let h: Harness;
  let url: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    h = await openHarness(await backend.open());
    const s = await startOtlpServer({ authenticator, limiter: createTenantLimiter(), logger: silentLogger, ingest: h.service.ingest, mappingFor: h.service.genAiMapping }, 0, "127.0.0.1");
    url = `${s.url}/v1/traces`;
    close = s.close;
  });
  afterAll(async () => {
    await close?.();
    await h?.close();
  });

  const post = (b: unknown, key: string | null = KEYS.ingestA, type = "application/json") =>
    fetch(url, { method: "POST", headers: { "content-type": type, ...(key ? { authorization: `Bearer ${key}` } : {}) }, body: typeof b === "string" || b instanceof Uint8Array ? b : JSON.stringify(b) });

  it("takes OTLP/HTTP protobuf (application/x-protobuf) and answers in protobuf", async () => {
    const attr = (key: string, value: { case: "stringValue"; value: string } | { case: "intValue"; value: bigint }) => ({ key, value: { value } });
    const req = create(ExportTraceServiceRequestSchema, {
      resourceSpans: [
        {
          resource: { attributes: [attr("nanobill.customer_id", { case: "stringValue", value: "cus_pb" })] },
          scopeSpans: [
            {
              spans: [
                { traceId: Buffer.from(TRACE, "hex"), spanId: Buffer.from("3333333333333333", "hex"), endTimeUnixNano: BigInt(endNs), attributes: [attr("gen_ai.request.model", { case: "stringValue", value: "gpt-y" }), attr("gen_ai.usage.input_tokens", { case: "intValue", value: 77n })] },
                { traceId: Buffer.from(TRACE, "hex"), spanId: Buffer.from("3333333333333334", "hex"), endTimeUnixNano: BigInt(endNs), attributes: [attr("gen_ai.usage.input_tokens", { case: "intValue", value: -3n })] },
              ],
            },
          ],
        },
      ],
    });
    const res = await post(toBinary(ExportTraceServiceRequestSchema, req), KEYS.ingestA, "application/x-protobuf");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/x-protobuf");
    const out = fromBinary(ExportTraceServiceResponseSchema, new Uint8Array(await res.arrayBuffer()));
    expect(out.partialSuccess?.rejectedSpans).toBe(1n);
    const e = (await h.service.store.listTenantEvents("tnt_a", 1000)).find((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_3333333333333333")!;
    expect(e).toMatchObject({ customerId: "cus_pb", properties: { model: { kind: "string", value: "gpt-y" }, input_tokens: { kind: "int", value: 77n } } });
    expect(e.traceparent).toBe(`00-${TRACE}-3333333333333333-01`);
  });

  it("turns gen_ai spans into usage events keyed by span id, with the span's trace context", async () => {
    const res = await post(body([span("00f067aa0ba902b7", GENAI), span("00f067aa0ba902b8", [["http.method", { stringValue: "GET" }]])]));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    const events = await h.service.store.listTenantEvents("tnt_a", 1000);
    const e = events.find((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7")!;
    expect(e.customerId).toBe("cus_otel");
    expect(e.type).toBe("llm.call");
    expect(e.properties).toEqual({
      model: { kind: "string", value: "gpt-x" },
      provider: { kind: "string", value: "openai" },
      input_tokens: { kind: "int", value: 1234n },
      output_tokens: { kind: "int", value: 567n },
    });
    expect(e.traceparent).toBe(`00-${TRACE}-00f067aa0ba902b7-01`);
    expect(events.some((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b8")).toBe(false);
    // Re-exporting the same span stores nothing new.
    expect((await post(body([span("00f067aa0ba902b7", GENAI)]))).status).toBe(200);
    expect((await h.service.store.listTenantEvents("tnt_a", 1000)).filter((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7").length).toBe(1);
  });

  it("maps the requested model (gen_ai.request.model) to model, else the served one, and the served one (gen_ai.response.model) to response_model", async () => {
    const res = await post(body([
      span("5a5a5a5a5a5a5a51", [["gen_ai.request.model", { stringValue: "gpt-4o" }], ["gen_ai.response.model", { stringValue: "gpt-4o-2024-08-06" }], ["gen_ai.usage.input_tokens", { intValue: "10" }]]),
      span("5a5a5a5a5a5a5a52", [["gen_ai.request.model", { stringValue: "gpt-4o-mini" }], ["gen_ai.usage.input_tokens", { intValue: "20" }]]),
      span("5a5a5a5a5a5a5a53", [["gen_ai.response.model", { stringValue: "claude-x-20261101" }], ["gen_ai.usage.input_tokens", { intValue: "30" }]]),
    ]));
    expect(await res.json()).toEqual({});
    const stored = (await h.service.store.listTenantEvents("tnt_a", 1000)).filter((e) => e.id.startsWith(`span_${TRACE}_5a5a5a5a5a5a5a5`));
    expect(stored.map((e) => [e.id.slice(-1), e.properties.model?.value, e.properties.response_model?.value ?? null])).toEqual([
      ["1", "gpt-4o", "gpt-4o-2024-08-06"],
      ["2", "gpt-4o-mini", null],
      ["3", "claude-x-20261101", "claude-x-20261101"],
    ]);
  });

  it("bills an agent run once: the chat spans' usage is stored, the invoke_agent span's aggregate of it is not (nor execute_tool's), a span without gen_ai.operation.name still is", async () => {
    const op = (name: string): [string, object] => ["gen_ai.operation.name", { stringValue: name }];
    const tokens = (n: number): [string, object] => ["gen_ai.usage.input_tokens", { intValue: String(n) }];
    const res = await post(body([
      span("6a6a6a6a6a6a6a61", [op("invoke_agent"), tokens(300)]), // the agent: 100 + 200 of its model calls
      span("6a6a6a6a6a6a6a62", [op("chat"), tokens(100)]),
      span("6a6a6a6a6a6a6a63", [op("chat"), tokens(200)]),
      span("6a6a6a6a6a6a6a64", [op("execute_tool"), tokens(50)]),
      span("6a6a6a6a6a6a6a65", [tokens(5)]),
    ]));
    expect(await res.json()).toEqual({});
    const stored = (await h.service.store.listTenantEvents("tnt_a", 1000)).filter((e) => e.id.startsWith(`span_${TRACE}_6a6a6a6a6a6a6a6`));
    expect(stored.map((e) => [e.id.slice(-1), e.properties.input_tokens])).toEqual([
      ["2", { kind: "int", value: 100n }],
      ["3", { kind: "int", value: 200n }],
      ["5", { kind: "int", value: 5n }],
    ]);
    // The filter is part of the tenant's mapping: GetGenAiMapping shows the default's, SetGenAiMapping keeps one.
    const c = h.client(KEYS.adminA);
    expect((await c.getGenAiMapping({})).mapping!.spanOperations).toEqual(["chat", "text_completion", "generate_content", "embeddings"]);
    const set = await c.setGenAiMapping({ mapping: { ...GENAI_MAPPING_DEFAULT, properties: [...GENAI_MAPPING_DEFAULT.properties], spanOperations: ["invoke_agent"] } });
    expect(set.mapping!.spanOperations).toEqual(["invoke_agent"]);
    await post(body([span("6b6b6b6b6b6b6b61", [op("invoke_agent"), tokens(300)]), span("6b6b6b6b6b6b6b62", [op("chat"), tokens(100)])]));
    expect((await h.service.store.listTenantEvents("tnt_a", 1000)).filter((e) => e.id.startsWith(`span_${TRACE}_6b6b`)).map((e) => e.id.slice(-1))).toEqual(["1"]);
    const bad = await c.setGenAiMapping({ mapping: { ...GENAI_MAPPING_DEFAULT, properties: [...GENAI_MAPPING_DEFAULT.properties], spanOperations: ["chat", "no spaces"] } }).catch((e) => ConnectError.from(e));
    expect(bad).toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringMatching(/^mapping\.span_operations\[1\]: /) });
    // A mapping stored before span_operations existed (no such member) keeps mapping every span.
    const legacy = { eventType: "llm.call", customerAttribute: "nanobill.customer_id", spanAttributeRequired: "gen_ai.usage.input_tokens", properties: [{ attribute: "gen_ai.usage.input_tokens", property: "input_tokens" }] };
    await h.db.query(`UPDATE genai_mappings SET mapping = $1::jsonb WHERE tenant = 'tnt_a'`, [JSON.stringify(legacy)]);
    expect((await c.getGenAiMapping({})).mapping!.spanOperations).toEqual([]);
    await post(body([span("6c6c6c6c6c6c6c61", [op("invoke_agent"), tokens(300)])]));
    expect((await h.service.store.listTenantEvents("tnt_a", 1000)).some((e) => e.id.endsWith("_6c6c6c6c6c6c6c61"))).toBe(true);
    await c.setGenAiMapping({ mapping: { ...GENAI_MAPPING_DEFAULT, properties: [...GENAI_MAPPING_DEFAULT.properties] } });
  });

  it("bills two traces' spans that share a span id as two events (a span id is unique only within its trace)", async () => {
    const OTHER = "22222222222222222222222222222222";
    const a = span("aaaaaaaaaaaaaaaa", [["gen_ai.usage.input_tokens", { intValue: "100" }]]);
    const b = { ...span("aaaaaaaaaaaaaaaa", [["gen_ai.usage.input_tokens", { intValue: "200" }]]), traceId: OTHER };
    expect(await (await post(body([a]))).json()).toEqual({});
    expect(await (await post(body([b]))).json()).toEqual({});
    const events = (await h.service.store.listTenantEvents("tnt_a", 1000)).filter((x) => x.id.endsWith("_aaaaaaaaaaaaaaaa"));
    expect(events.map((e) => [e.id, e.properties.input_tokens])).toEqual([
      [`span_${TRACE}_aaaaaaaaaaaaaaaa`, { kind: "int", value: 100n }],
      [`span_${OTHER}_aaaaaaaaaaaaaaaa`, { kind: "int", value: 200n }],
    ]);
  });

  it("rejects (partial success) a span whose mapped intValue was sent as a JSON number beyond 2^53 (JSON.parse rounded it) instead of billing the rounded count", async () => {
    const res = await post(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"${TRACE}","spanId":"bbbbbbbbbbbbbbbb","endTimeUnixNano":"${endNs}","attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":9007199254740993}}]}]}]}]}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      partialSuccess: { rejectedSpans: "1", errorMessage: `span_${TRACE}_bbbbbbbbbbbbbbbb: gen_ai.usage.input_tokens: intValue: a JSON number beyond 2^53 loses precision; send int64 as a string` },
    });
    expect((await h.service.store.listTenantEvents("tnt_a", 1000)).some((x) => x.id.endsWith("_bbbbbbbbbbbbbbbb"))).toBe(false);
  });

  it("ignores unreadable values of attributes the mapping does not read (any span, resource too), and rejects only the span whose mapped or customer attribute is one", async () => {
    // Each of these failed the whole export with a 400 before (every span of it dropped).
    const odd: Array<[string, unknown]> = [
      ["app.request_hash", { intValue: 12345678901234567890 }],
      ["app.ratio", { doubleValue: "twelve" }],
      ["app.count", { intValue: "12x" }],
      ["app.flag", 7],
    ];
    const attrs = (list: Array<[string, unknown]>) => list.map(([key, value]) => ({ key, value }));
    const httpSpan = { traceId: TRACE, spanId: "7777777777777770", name: "GET /", endTimeUnixNano: endNs, attributes: [...attrs(odd), { value: { stringValue: "no key" } }] };
    const genai = (spanId: string, extra: Array<[string, unknown]>) => ({ ...span(spanId, GENAI), attributes: [...span(spanId, GENAI).attributes, ...attrs(extra)] });
    const req = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: "nanobill.customer_id", value: { stringValue: "cus_odd" } }, ...attrs([["host.id", { intValue: 18446744073709551615 }]])] },
          scopeSpans: [{ spans: [
            httpSpan,
            genai("7777777777777771", odd), // unmapped odd attributes on a GenAI span: stored
            genai("7777777777777772", [["gen_ai.usage.output_tokens", { intValue: 9007199254740993 }]]), // mapped (the last value of a key wins): rejected
            genai("7777777777777773", [["nanobill.customer_id", { doubleValue: "x" }]]), // the customer attribute: rejected
          ] }],
        },
      ],
    };
    const res = await post(req);
    expect(res.status).toBe(200);
    const j = (await res.json()) as { partialSuccess: { rejectedSpans: string; errorMessage: string } };
    expect(j.partialSuccess).toEqual({
      rejectedSpans: "2",
      errorMessage:
        `span_${TRACE}_7777777777777772: gen_ai.usage.output_tokens: intValue: a JSON number beyond 2^53 loses precision; send int64 as a string; ` +
        `span_${TRACE}_7777777777777773: nanobill.customer_id: doubleValue must be a number, not a customer id`,
    });
    const stored = (await h.service.store.listTenantEvents("tnt_a", 1000)).filter((e) => e.id.startsWith(`span_${TRACE}_777777777777777`));
    expect(stored.map((e) => [e.id, e.customerId, e.properties])).toEqual([
      [`span_${TRACE}_7777777777777771`, "cus_odd", { model: { kind: "string", value: "gpt-x" }, provider: { kind: "string", value: "openai" }, input_tokens: { kind: "int", value: 1234n }, output_tokens: { kind: "int", value: 567n } }],
    ]);
  });

  it("follows the tenant's GenAI mapping set through SetGenAiMapping", async () => {
    const c = h.client(KEYS.adminA);
    await c.setGenAiMapping({
      mapping: { eventType: "genai.tokens", customerAttribute: "app.customer", spanAttributeRequired: "gen_ai.usage.output_tokens", properties: [{ attribute: "gen_ai.usage.output_tokens", property: "out_tokens" }] },
    });
    expect((await c.getGenAiMapping({})).mapping!.eventType).toBe("genai.tokens");
    await post(body([span("1111111111111111", [...GENAI, ["app.customer", { stringValue: "cus_map" }]])]));
    const e = (await h.service.store.listTenantEvents("tnt_a", 1000)).find((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_1111111111111111")!;
    expect(e).toMatchObject({ type: "genai.tokens", customerId: "cus_map", properties: { out_tokens: { kind: "int", value: 567n } } });
    await c.setGenAiMapping({ mapping: { eventType: "llm.call", customerAttribute: "nanobill.customer_id", spanAttributeRequired: "gen_ai.usage.input_tokens", properties: [{ attribute: "gen_ai.usage.input_tokens", property: "input_tokens" }] } });
  });

  it("reports spans whose event is rejected (negative tokens) as partial success", async () => {
    const res = await post(body([span("2222222222222222", [["gen_ai.usage.input_tokens", { intValue: "-5" }]])]));
    expect(res.status).toBe(200);
    const j = (await res.json()) as { partialSuccess: { rejectedSpans: string; errorMessage: string } };
    expect(j.partialSuccess.rejectedSpans).toBe("1");
    expect(j.partialSuccess.errorMessage).toContain("properties.input_tokens");
  });

  it("rejects (partial success, naming the attribute) a span whose mapped attribute cannot be mapped, instead of billing it without the value", async () => {
    // The default mapping (an earlier test left a narrower one for this tenant).
    await h.client(KEYS.adminA).setGenAiMapping({ mapping: { ...GENAI_MAPPING_DEFAULT, properties: [...GENAI_MAPPING_DEFAULT.properties] } });
    const spans = [
      span("4444444444444441", [["gen_ai.usage.input_tokens", { doubleValue: 12.5 }], ["gen_ai.request.model", { stringValue: "m" }]]),
      span("4444444444444442", [["gen_ai.usage.input_tokens", { doubleValue: 12 }]]), // integral: the integer 12, as an intValue
      span("4444444444444443", [["gen_ai.usage.input_tokens", { intValue: "3" }], ["gen_ai.usage.output_tokens", { arrayValue: { values: [] } }]]),
      span("4444444444444444", [["gen_ai.usage.input_tokens", { intValue: "3" }], ["gen_ai.request.model", { stringValue: "gpt\ud800" }]]),
      span("4444444444444445", [["gen_ai.usage.input_tokens", { intValue: "3" }], ["gen_ai.usage.output_tokens", { doubleValue: "7.5" }]]),
    ];
    const res = await post(body(spans));
    expect(res.status).toBe(200);
    const j = (await res.json()) as { partialSuccess: { rejectedSpans: string; errorMessage: string } };
    expect(j.partialSuccess.rejectedSpans).toBe("4");
    expect(j.partialSuccess.errorMessage).toContain("span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444441: gen_ai.usage.input_tokens: doubleValue 12.5 is not an integer");
    expect(j.partialSuccess.errorMessage).toContain("span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444443: gen_ai.usage.output_tokens: a arrayValue has no property form");
    expect(j.partialSuccess.errorMessage).toContain("span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444445: gen_ai.usage.output_tokens: doubleValue 7.5");
    // The lone surrogate is refused by validation (it failed the JSONB write, as Internal / 500, before).
    expect(j.partialSuccess.errorMessage).toContain("span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444444: properties.model: must be well-formed");
    const stored = (await h.service.store.listTenantEvents("tnt_a", 1000)).filter((x) => x.id.startsWith("span_4bf92f3577b34da6a3ce929d0e0e4736_444444444444444"));
    expect(stored.map((e) => [e.id, e.properties])).toEqual([["span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444442", { input_tokens: { kind: "int", value: 12n } }]]);

    // The same over OTLP protobuf.
    const req = create(ExportTraceServiceRequestSchema, {
      resourceSpans: [
        {
          resource: { attributes: [{ key: "nanobill.customer_id", value: { value: { case: "stringValue", value: "cus_pb" } } }] },
          scopeSpans: [
            {
              spans: [
                { traceId: Buffer.from(TRACE, "hex"), spanId: Buffer.from("4444444444444446", "hex"), endTimeUnixNano: BigInt(endNs), attributes: [{ key: "gen_ai.usage.input_tokens", value: { value: { case: "doubleValue", value: 0.5 } } }] },
                { traceId: Buffer.from(TRACE, "hex"), spanId: Buffer.from("4444444444444447", "hex"), endTimeUnixNano: BigInt(endNs), attributes: [{ key: "gen_ai.usage.input_tokens", value: { value: { case: "doubleValue", value: 40 } } }, { key: "gen_ai.request.model", value: { value: { case: "bytesValue", value: new Uint8Array([1]) } } }] },
              ],
            },
          ],
        },
      ],
    });
    const pb = await post(toBinary(ExportTraceServiceRequestSchema, req), KEYS.ingestA, "application/x-protobuf");
    expect(pb.status).toBe(200);
    const out = fromBinary(ExportTraceServiceResponseSchema, new Uint8Array(await pb.arrayBuffer()));
    expect(out.partialSuccess?.rejectedSpans).toBe(2n);
    expect(out.partialSuccess?.errorMessage).toContain("gen_ai.request.model: a bytesValue");
    expect((await h.service.store.listTenantEvents("tnt_a", 1000)).some((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444446" || x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_4444444444444447")).toBe(false);
  });

  it("takes gzip bodies (Content-Encoding: gzip, the Collector's otlphttp default) in OTLP/JSON and protobuf, which were refused 400 and dropped", async () => {
    const gz = (b: Uint8Array | string, type: string, encoding = "gzip") =>
      fetch(url, { method: "POST", headers: { "content-type": type, "content-encoding": encoding, authorization: `Bearer ${KEYS.ingestA}` }, body: gzipSync(b) });
    const json = await gz(JSON.stringify(body([span("5555555555555551", GENAI)])), "application/json");
    expect([json.status, await json.json()]).toEqual([200, {}]);
    const req = create(ExportTraceServiceRequestSchema, {
      resourceSpans: [{ resource: { attributes: [{ key: "nanobill.customer_id", value: { value: { case: "stringValue", value: "cus_gz" } } }] },
        scopeSpans: [{ spans: [{ traceId: Buffer.from(TRACE, "hex"), spanId: Buffer.from("5555555555555552", "hex"), endTimeUnixNano: BigInt(endNs), attributes: [{ key: "gen_ai.usage.input_tokens", value: { value: { case: "intValue", value: 9007199254740993n } } }] }] }] }],
    });
    const pb = await gz(toBinary(ExportTraceServiceRequestSchema, req), "application/x-protobuf", "GZIP");
    expect(pb.status).toBe(200);
    expect(fromBinary(ExportTraceServiceResponseSchema, new Uint8Array(await pb.arrayBuffer())).partialSuccess).toBeUndefined();
    const stored = (await h.service.store.listTenantEvents("tnt_a", 1000)).filter((e) => e.id.startsWith(`span_${TRACE}_555555555555555`));
    expect(stored.map((e) => [e.id, e.customerId, e.properties.input_tokens])).toEqual([
      [`span_${TRACE}_5555555555555551`, "cus_otel", { kind: "int", value: 1234n }],
      [`span_${TRACE}_5555555555555552`, "cus_gz", { kind: "int", value: 9007199254740993n }],
    ]);
  });

  it("answers an empty body labelled gzip as an empty export (200), as without the label (second review: 400 'unexpected end of file')", async () => {
    const r = await fetch(url, { method: "POST", headers: { "content-type": "application/x-protobuf", "content-encoding": "gzip", authorization: `Bearer ${KEYS.ingestA}` }, body: new Uint8Array(0) });
    expect(r.status).toBe(200);
  });

  it("bounds a gzip body's decompressed size by the 4 MiB body limit (413) without inflating all of it, and refuses corrupt gzip (400) and other encodings (415)", async () => {
    const send = (b: Uint8Array | string, encoding: string, type = "application/json") =>
      fetch(url, { method: "POST", headers: { "content-type": type, "content-encoding": encoding, authorization: `Bearer ${KEYS.ingestA}` }, body: b });
    // Just over the limit once inflated (a valid OTLP/JSON body padded with spaces): 413.
    const padded = JSON.stringify(body([span("6666666666666661", GENAI)])) + " ".repeat(4 * 1024 * 1024);
    const over = await send(gzipSync(padded), "gzip");
    expect([over.status, ((await over.json()) as { message: string }).message]).toEqual([413, "body: at most 4194304 bytes once decompressed"]);
    // A bomb: 1 MB of gzip members inflating to 1 GiB. Inflating all of it takes seconds and a
    // 1 GiB buffer; zlib stops at the limit.
    const member = gzipSync(Buffer.alloc(16 * 1024 * 1024));
    const bomb = Buffer.concat(Array.from({ length: 64 }, () => member));
    expect(bomb.length).toBeLessThan(4 * 1024 * 1024);
    const started = performance.now();
    const pb = await send(bomb, "gzip", "application/x-protobuf");
    expect(pb.status).toBe(413);
    expect(performance.now() - started).toBeLessThan(2_000);
    // The same body uncompressed just under the limit is taken.
    const under = JSON.stringify(body([span("6666666666666662", GENAI)]));
    expect((await send(gzipSync(under + " ".repeat(4 * 1024 * 1024 - Buffer.byteLength(under))), "gzip")).status).toBe(200);
    expect((await send(Buffer.from("not gzip"), "gzip")).status).toBe(400);
    expect((await send(gzipSync(under).subarray(0, 20), "gzip")).status).toBe(400); // truncated
    for (const encoding of ["br", "deflate", "zstd", "gzip, br"]) {
      const r = await send(under, encoding);
      expect([encoding, r.status, ((await r.json()) as { message: string }).message]).toEqual([encoding, 415, "content-encoding: gzip or identity (or none)"]);
    }
    expect((await send(under, "identity")).status).toBe(200);
    const ids = (await h.service.store.listTenantEvents("tnt_a", 1000)).map((e) => e.id);
    expect(ids).toContain(`span_${TRACE}_6666666666666662`);
    expect(ids).not.toContain(`span_${TRACE}_6666666666666661`);
  });

  it("refuses a missing key, a read-only key, other content types, malformed protobuf and malformed JSON", async () => {
    expect((await post(body([]), null)).status).toBe(401);
    expect((await post(body([]), KEYS.readA)).status).toBe(403);
    expect((await post("x", KEYS.ingestA, "text/plain")).status).toBe(415);
    const badPb = await post(new Uint8Array([0x0a, 0xff]), KEYS.ingestA, "application/x-protobuf");
    expect(badPb.status).toBe(400);
    expect(badPb.headers.get("content-type")).toBe("application/x-protobuf");
    expect((await post("{not json", KEYS.ingestA)).status).toBe(400);
    const bad = await post(body([{ traceId: TRACE, spanId: "xyz", attributes: [] }]));
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toContain("spanId");
  });
});

describe("OTLP/HTTP receiver: per-tenant limits (shared with the gRPC server's limiter)", () => {
  it("refuses a tenant's requests past its in-flight and rate limits with 429, bound internal keys included, and frees slots when answers are sent", async () => {
    const auth = createApiKeyAuthenticator([
      { tenant: "tnt_a", scopes: ["ingest"], key: "key_ingest_a_000001" },
      { tenant: "tnt_a", scopes: ["internal"], key: "key_internal_a_0001" },
      { tenant: "tnt_b", scopes: ["ingest"], key: "key_ingest_b_000001" },
      { tenant: "*", scopes: ["internal"], key: "key_operator_000001" },
    ]);
    let release!: () => void;
    let gate = new Promise<void>((r) => (release = r));
    const limiter = createTenantLimiter({ inflightMax: 2, requestsPerSecond: 1_000, requestsBurst: 1_000 });
    const s = await startOtlpServer(
      { authenticator: auth, limiter, logger: silentLogger, ingest: async (_t, events) => (await gate, events.map((e) => ({ eventId: e.id, status: "accepted" as const }))) as never, mappingFor: async () => GENAI_MAPPING_DEFAULT },
      0,
      "127.0.0.1",
    );
    const send = (key: string, id: string) =>
      fetch(`${s.url}/v1/traces`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}`, "x-nanobill-tenant": key.includes("operator") ? "tnt_a" : "" },
        body: JSON.stringify(body([span(id, GENAI)])),
      });
    try {
      const held = [send("key_ingest_a_000001", "1000000000000001"), send("key_internal_a_0001", "1000000000000002")];
      await new Promise((r) => setTimeout(r, 300)); // both in flight, held by the ingest gate
      const refused = await send("key_ingest_a_000001", "1000000000000003");
      expect(refused.status).toBe(429);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(((await refused.json()) as { message: string }).message).toMatch(/^tenant\.inflight: /);
      // Another tenant, and the operator's key, are not held back by tnt_a's slots.
      const other = send("key_ingest_b_000001", "1000000000000004");
      const operator = send("key_operator_000001", "1000000000000005");
      release();
      expect((await Promise.all([...held, other, operator])).map((r) => r.status)).toEqual([200, 200, 200, 200]);
      // The slots were freed when the answers were sent.
      gate = Promise.resolve();
      expect((await send("key_ingest_a_000001", "1000000000000006")).status).toBe(200);
    } finally {
      release();
      await s.close();
    }
  });
});

describe("OTLP/HTTP receiver: export deadline", () => {
  it("answers 503 + Retry-After when the export is not stored in time, and keeps the tenant's in-flight slot until the storing ends", async () => {
    const auth = createApiKeyAuthenticator([{ tenant: "tnt_a", scopes: ["ingest"], key: "key_ingest_a_000001" }]);
    let release!: () => void;
    let gate = new Promise<void>((r) => (release = r));
    let stored = 0;
    const limiter = createTenantLimiter({ inflightMax: 1, requestsPerSecond: 1_000, requestsBurst: 1_000 });
    const s = await startOtlpServer(
      {
        authenticator: auth,
        limiter,
        logger: silentLogger,
        exportTimeoutMs: 150,
        ingest: async (_t, events) => {
          await gate;
          stored += events.length;
          return events.map((e) => ({ eventId: e.id, status: "accepted" as const })) as never;
        },
        mappingFor: async () => GENAI_MAPPING_DEFAULT,
      },
      0,
      "127.0.0.1",
    );
    const send = (id: string) =>
      fetch(`${s.url}/v1/traces`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer key_ingest_a_000001" }, body: JSON.stringify(body([span(id, GENAI)])) });
    try {
      const started = Date.now();
      const late = await send("2000000000000001");
      expect(late.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(late.headers.get("retry-after")).toBe("1");
      expect(((await late.json()) as { message: string }).message).toMatch(/^unavailable: not stored within 150 ms/);
      // Its storing still runs and holds the tenant's only slot.
      expect((await send("2000000000000002")).status).toBe(429);
      release();
      await new Promise((r) => setTimeout(r, 50));
      expect(stored).toBe(1);
      gate = Promise.resolve();
      expect((await send("2000000000000003")).status).toBe(200);
      expect(stored).toBe(2);
    } finally {
      release();
      await s.close();
    }
  });
});
