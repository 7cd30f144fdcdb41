import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { EventSchema, IngestStatus, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { testBackends } from "@nanobill/db";
import { closeClientSessions, createClientTransport, silentLogger, startServer, type StartedServer } from "@nanobill/service-kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX } from "./limits.js";
import { authenticator, KEYS, openHarness, type Harness } from "./test-support.js";

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
});
