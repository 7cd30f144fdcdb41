import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { WireType } from "@bufbuild/protobuf/wire";
import { EventSchema, IngestEventsRequestSchema, IngestStatus, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { TraceService } from "@nanobill/contracts/opentelemetry/proto/collector/trace/v1/trace_service_pb";
import { testBackends } from "@nanobill/db";
import { closeClientSessions, createClientTransport, silentLogger, startServer, type StartedServer } from "@nanobill/service-kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX } from "./limits.js";
import { authenticator, KEYS, openHarness, rawPost, T0, type Harness } from "./test-support.js";

const [backend] = testBackends();

describe("metering over a real h2c server", () => {
  let h: Harness;
  let server: StartedServer;
  beforeAll(async () => {
    h = await openHarness(await backend!.open());
    server = await startServer({
      name: "metering-test",
      host: "127.0.0.1",
      port: 0,
      routes: h.service.routes,
      authenticator,
      logger: silentLogger,
      limits: { readMaxBytes: REQUEST_BYTES_MAX, writeMaxBytes: RESPONSE_BYTES_MAX },
    });
  });
  afterAll(async () => {
    closeClientSessions();
    await server?.close();
    await h?.close();
  });

  it("ingests over gRPC and serves the event on ReadEvents to an internal key acting for no tenant", async () => {
    const c = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA }));
    const res = await c.ingestEvents({ events: [create(EventSchema, { id: "evt_srv_1", customerId: "cus_1", type: "llm.call" })] });
    expect(res.results[0]!.status).toBe(IngestStatus.ACCEPTED);
    const internal = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.internal }));
    const page = await internal.readEvents({ afterSequence: 0n });
    expect(page.events.map((e) => [e.tenant, e.event!.id])).toContainEqual(["tnt_a", "evt_srv_1"]);
  });

  it("answers IngestEvents the same over binary (the fast path's one-pass decoder) and JSON (generated messages), Connect and gRPC", async () => {
    const ev = (id: string) => create(EventSchema, { id, customerId: "cus_json", type: "llm.call", properties: { model: { kind: { case: "stringValue", value: "m" } }, n: { kind: { case: "intValue", value: 7n } } } });
    const headers = { authorization: `Bearer ${KEYS.ingestA}` };
    const before = server.fastPathCalls;
    const binary = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA }));
    const grpc = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA, protocol: "grpc" }));
    const json = createClient(MeteringService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: false }));
    const a = await binary.ingestEvents({ events: [ev("evt_json_1")] });
    const b = await grpc.ingestEvents({ events: [ev("evt_json_2")] });
    expect(server.fastPathCalls - before).toBe(2);
    const c = await json.ingestEvents({ events: [ev("evt_json_3"), ev("evt_json_1")] }, { headers });
    expect(server.fastPathCalls - before).toBe(2); // JSON is not on the fast path
    expect([a.results[0]!.status, b.results[0]!.status]).toEqual([IngestStatus.ACCEPTED, IngestStatus.ACCEPTED]);
    expect(c.results.map((r) => r.status)).toEqual([IngestStatus.ACCEPTED, IngestStatus.DUPLICATE]);
    // Same content through either path is the same event (a JSON replay of a binary event is a duplicate).
    const stored = (await h.service.store.listTenantEvents("tnt_a", 10_000)).filter((e) => e.customerId === "cus_json");
    expect(stored.map((e) => e.id).sort()).toEqual(["evt_json_1", "evt_json_2", "evt_json_3"]);
    // Bad input names the event on both paths.
    const bad = create(EventSchema, { id: "", customerId: "cus_json", type: "llm.call" });
    expect((await binary.ingestEvents({ events: [bad] })).results[0]!.field).toBe((await json.ingestEvents({ events: [bad] }, { headers })).results[0]!.field);
  });

  it("never lets a lone surrogate reach the database over IngestEvents: binary encodes it as U+FFFD, Connect JSON refuses the request (InvalidArgument)", async () => {
    // (OTLP/JSON, parsed by our own code, is the path that can carry one: otlp-http.test.ts.)
    const json = createClient(MeteringService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: false }));
    const ev = (id: string, model: string) => create(EventSchema, { id, customerId: "cus_sur", type: "llm.call", properties: { model: { kind: { case: "stringValue", value: model } } } });
    await expect(json.ingestEvents({ events: [ev("evt_sur_1", "gpt\ud800")] }, { headers: { authorization: `Bearer ${KEYS.ingestA}` } })).rejects.toMatchObject({ code: Code.InvalidArgument });
    const binary = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA }));
    expect((await binary.ingestEvents({ events: [ev("evt_sur_2", "gpt\ud800")] })).results[0]!.status).toBe(IngestStatus.ACCEPTED);
    const stored = (await h.service.store.listTenantEvents("tnt_a", 10_000)).filter((e) => e.customerId === "cus_sur");
    expect(stored.map((e) => [e.id, e.properties.model])).toEqual([["evt_sur_2", { kind: "string", value: "gpt\ufffd" }]]);
  });

  it("refuses an IngestStream message whose results could not fit the response (over-long ids are echoed), before committing it", async () => {
    const c = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA }));
    const longId = "x".repeat(1_300_000); // rejected (malformed id) but echoed as sent in its result
    async function* msgs() {
      yield { events: [create(EventSchema, { id: "evt_stream_ok", customerId: "cus_1", type: "llm.call" })] };
      for (let m = 0; m < 5; m++) {
        yield { events: [0, 1, 2].map((i) => create(EventSchema, { id: `${longId}${m}${i}`, customerId: "cus_1", type: "llm.call" })) };
      }
      yield { events: [create(EventSchema, { id: "evt_stream_late", customerId: "cus_1", type: "llm.call" })] };
    }
    // Without the bound the response (~20 MB) failed ResourceExhausted after every message committed.
    await expect(c.ingestStream(msgs())).rejects.toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringContaining("response limit") });
    const ids = (await h.service.store.listTenantEvents("tnt_a", 10_000)).map((e) => e.id);
    expect(ids).toContain("evt_stream_ok");
    expect(ids).not.toContain("evt_stream_late");
  });

  it("refuses a request above 4 MiB with ResourceExhausted and stores nothing of it", async () => {
    const c = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA }));
    const big = "x".repeat(1000);
    const events = Array.from({ length: 4500 }, (_, i) =>
      create(EventSchema, { id: `evt_big_${i}`, customerId: "cus_1", type: "llm.call", properties: { s: { kind: { case: "stringValue", value: big } } } }),
    );
    let code: Code | undefined;
    try {
      await c.ingestEvents({ events });
    } catch (e) {
      code = ConnectError.from(e).code;
    }
    expect(code).toBe(Code.ResourceExhausted);
    expect((await h.service.store.listTenantEvents("tnt_a", 10_000)).some((e) => e.id.startsWith("evt_big_"))).toBe(false);
  });

  it("takes GenAI spans over OTLP/gRPC (TraceService/Export) on the same port, with an ingest key", async () => {
    const otlp = createClient(TraceService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA, protocol: "grpc" }));
    const spanId = Buffer.from("aa000000000000b1", "hex");
    const traceId = Buffer.from("4bf92f3577b34da6a3ce929d0e0e4736", "hex");
    const attr = (key: string, value: { case: "stringValue"; value: string } | { case: "intValue"; value: bigint }) => ({ key, value: { value } });
    const req = {
      resourceSpans: [
        {
          resource: { attributes: [attr("nanobill.customer_id", { case: "stringValue", value: "cus_grpc" })] },
          scopeSpans: [
            {
              spans: [
                { traceId, spanId, name: "chat", endTimeUnixNano: BigInt(T0.getTime() - 60_000) * 1_000_000n, attributes: [attr("gen_ai.request.model", { case: "stringValue", value: "gpt-x" }), attr("gen_ai.usage.input_tokens", { case: "intValue", value: 42n })] },
                { traceId, spanId: Buffer.from("aa000000000000b2", "hex"), endTimeUnixNano: BigInt(T0.getTime() - 60_000) * 1_000_000n, attributes: [attr("gen_ai.usage.input_tokens", { case: "intValue", value: -1n })] },
              ],
            },
          ],
        },
      ],
    };
    const res = await otlp.export(req);
    expect(res.partialSuccess?.rejectedSpans).toBe(1n);
    const e = (await h.service.store.listTenantEvents("tnt_a", 10_000)).find((x) => x.id === "span_4bf92f3577b34da6a3ce929d0e0e4736_aa000000000000b1")!;
    expect(e).toMatchObject({ customerId: "cus_grpc", properties: { model: { kind: "string", value: "gpt-x" }, input_tokens: { kind: "int", value: 42n } } });
    const readOnly = createClient(TraceService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.readA, protocol: "grpc" }));
    await expect(readOnly.export(req)).rejects.toMatchObject({ code: Code.PermissionDenied });
    const badId = { resourceSpans: [{ scopeSpans: [{ spans: [{ traceId, spanId: Buffer.from("aa", "hex") }] }] }] };
    await expect(otlp.export(badId)).rejects.toMatchObject({ code: Code.InvalidArgument });
  });

  it("answers a request whose n-th event is not a valid Event encoding with InvalidArgument naming events[n], storing nothing", async () => {
    const c = createClient(MeteringService, createClientTransport({ baseUrl: server.url, apiKey: KEYS.ingestA }));
    const req = create(IngestEventsRequestSchema, { events: [create(EventSchema, { id: "evt_wire_ok", customerId: "cus_1", type: "llm.call" })] });
    // Event 1: a string field whose length runs past the end of the event.
    req.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: new Uint8Array([3, 0x0a, 0x09, 0x41]) }];
    await expect(c.ingestEvents(req)).rejects.toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringContaining("events[1]") });
    expect((await h.service.store.listTenantEvents("tnt_a", 10_000)).some((e) => e.id === "evt_wire_ok")).toBe(false);
  });
});

describe.each(testBackends())("Connect JSON int64 sent as a bare JSON number past 2^53 ($name)", (b) => {
  let h: Harness;
  let server: StartedServer;
  beforeAll(async () => {
    h = await openHarness(await b.open());
    server = await startServer({ name: "metering-json", host: "127.0.0.1", port: 0, routes: h.service.routes, authenticator, logger: silentLogger, limits: { readMaxBytes: REQUEST_BYTES_MAX, writeMaxBytes: RESPONSE_BYTES_MAX } });
  });
  afterAll(async () => {
    closeClientSessions();
    await server?.close();
    await h?.close();
  });

  const post = (path: string, contentType: string, body: Buffer) => rawPost(server.url, `/nanobill.metering.v1.MeteringService/${path}`, contentType, body);
  const event = (id: string, tokens: string) => `{"id":"${id}","customerId":"cus_big","type":"llm.call","timestamp":"2026-11-20T09:59:00Z","properties":{"input_tokens":{"intValue":${tokens}}}}`;

  it("refuses the request with InvalidArgument naming the field and stores none of it (it was stored rounded and answered ACCEPTED); the quoted form is stored exactly", async () => {
    // 2^53 + 1: JSON.parse gives 2^53.
    const res = await post("IngestEvents", "application/json", Buffer.from(`{"events":[${event("evt_big_ok", '"5"')},${event("evt_big_1", "9007199254740993")}]}`));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/^events\[1\]\.properties\.input_tokens\.intValue: 9007199254740993 is an integer beyond 2\^53-1 sent as a JSON number/) });
    // IngestStream (Connect streaming JSON): the message is refused before it is committed.
    const json = Buffer.from(`{"events":[${event("evt_big_2", "-9007199254740993")}]}`);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(json.length, 1);
    const stream = await post("IngestStream", "application/connect+json", Buffer.concat([head, json]));
    expect(stream.text).toContain("events[0].properties.input_tokens.intValue: -9007199254740993 is an integer beyond 2^53-1");
    const stored = () => h.service.store.listTenantEvents("tnt_a", 1_000).then((es) => es.filter((e) => e.customerId === "cus_big"));
    expect(await stored()).toEqual([]);

    const ok = await post("IngestEvents", "application/json", Buffer.from(`{"events":[${event("evt_big_3", '"9007199254740993"')},${event("evt_big_4", "9007199254740991")}]}`));
    expect([ok.status, JSON.parse(ok.text).acceptedCount]).toEqual([200, 2]);
    expect((await stored()).map((e) => [e.id, e.properties.input_tokens])).toEqual([
      ["evt_big_3", { kind: "int", value: 9007199254740993n }],
      ["evt_big_4", { kind: "int", value: 9007199254740991n }],
    ]);
  });
});
