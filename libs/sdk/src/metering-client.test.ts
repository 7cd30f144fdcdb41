import { Code, ConnectError, createRouterTransport, type Interceptor, type Transport } from "@connectrpc/connect";
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { createMeteringService, migrationsDir } from "@nanobill/metering";
import { createApiKeyAuthenticator, createAuthInterceptor, silentLogger, startServer, systemClock, type StartedServer } from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { context, trace, TraceFlags } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMeteringClient } from "./index.js";

const KEY = "sk_sdk_test_admin_key_0001";
const INTERNAL = "sk_sdk_test_internal_key_01";
const authenticator = createApiKeyAuthenticator([
  { tenant: "tnt_sdk", scopes: ["admin"], key: KEY },
  { tenant: "*", scopes: ["internal"], key: INTERNAL },
]);

const [backend] = testBackends();

describe("metering client", () => {
  let db: TestDb;
  let service: Awaited<ReturnType<typeof createMeteringService>>;
  let calls = 0;
  /** Fails the next `failNext` calls with Unavailable; with `loseReply`, after the server handled them. */
  const chaos = { failNext: 0, loseReply: false, hold: undefined as Promise<void> | undefined, code: Code.Unavailable };
  let transport: Transport;

  beforeAll(async () => {
    db = await backend!.open();
    await migrate(db, migrationsDir);
    service = await createMeteringService({ db, logger: silentLogger, clock: systemClock, config: { backfillIntervalMs: 0 } });
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${KEY}`);
      return next(req);
    };
    const flaky: Interceptor = (next) => async (req) => {
      calls++;
      if (chaos.hold) await chaos.hold;
      if (chaos.failNext > 0) {
        chaos.failNext--;
        if (chaos.loseReply) {
          await next(req);
        }
        throw new ConnectError("injected", chaos.code);
      }
      return next(req);
    };
    transport = createRouterTransport(service.routes, {
      router: { interceptors: [createAuthInterceptor(authenticator)] },
      transport: { interceptors: [flaky, auth] },
    });
  });
  afterAll(async () => {
    await service?.stop();
    await db?.dispose();
  });

  const storedIds = async () => new Set((await service.store.listTenantEvents("tnt_sdk", 100_000)).map((e) => e.id));

  it("batches by size, assigns evt_ ids, and surfaces one result per event", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 100, flushIntervalMs: 10_000 });
    const before = calls;
    const tracked = [];
    for (let i = 0; i < 250; i++) tracked.push(await c.track({ customerId: "cus_1", type: "llm.call", properties: { input_tokens: i } }));
    await c.flush();
    const results = await Promise.all(tracked.map((t) => t.result));
    expect(results.every((r) => r.status === "accepted")).toBe(true);
    expect(tracked.every((t) => /^evt_[A-Za-z0-9_-]{22}$/.test(t.id))).toBe(true);
    expect(calls - before).toBe(3);
    await c.close();
  });

  it("sends a partial batch after flushIntervalMs without flush()", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 100, flushIntervalMs: 20 });
    const t = await c.track({ id: "evt_sdk_timer", customerId: "cus_1", type: "llm.call" });
    expect((await t.result).status).toBe("accepted");
    await c.close();
  });

  it("retries Unavailable with the same ids, so a lost reply becomes a duplicate, never a second event", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10, retry: { backoffMsInitial: 1, backoffMsMax: 5 } });
    chaos.failNext = 2;
    chaos.loseReply = true;
    const a = await c.track({ id: "evt_sdk_retry_1", customerId: "cus_1", type: "llm.call", properties: { input_tokens: 5 } });
    await c.flush();
    chaos.loseReply = false;
    expect((await a.result).status).toBe("duplicate");
    const ids = [...(await storedIds())].filter((x) => x === "evt_sdk_retry_1");
    expect(ids).toEqual(["evt_sdk_retry_1"]);
    await c.close();
  });

  it("reports a non-retryable failure as a failed result (no throw) after one attempt", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10, retry: { backoffMsInitial: 1 } });
    chaos.failNext = 1;
    chaos.code = Code.PermissionDenied;
    const before = calls;
    const t = await c.track({ id: "evt_sdk_denied", customerId: "cus_1", type: "llm.call" });
    await c.flush();
    chaos.code = Code.Unavailable;
    const r = await t.result;
    expect(r.status).toBe("failed");
    expect(r.error?.code).toBe(Code.PermissionDenied);
    expect(calls - before).toBe(1);
    await c.close();
  });

  it("gives up after retry.attemptsMax transient failures", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10, retry: { attemptsMax: 3, backoffMsInitial: 1, backoffMsMax: 2 } });
    chaos.failNext = 5;
    const before = calls;
    const t = await c.track({ id: "evt_sdk_giveup", customerId: "cus_1", type: "llm.call" });
    await c.flush();
    chaos.failNext = 0;
    expect((await t.result).status).toBe("failed");
    expect(calls - before).toBe(3);
    await c.close();
  });

  it("applies back-pressure: track waits while the queue is full", async () => {
    let release!: () => void;
    chaos.hold = new Promise<void>((r) => (release = r));
    const c = createMeteringClient({ transport, batchSizeMax: 5, queueLengthMax: 5, flushIntervalMs: 0 });
    for (let i = 0; i < 5; i++) await c.track({ id: `evt_sdk_bp_${i}`, customerId: "cus_1", type: "llm.call" });
    let sixthQueued = false;
    const sixth = c.track({ id: "evt_sdk_bp_5", customerId: "cus_1", type: "llm.call" }).then((t) => {
      sixthQueued = true;
      return t;
    });
    await new Promise((r) => setTimeout(r, 30));
    expect(sixthQueued).toBe(false);
    expect(c.pending).toBe(5);
    chaos.hold = undefined;
    release();
    expect((await (await sixth).result).status).toBe("accepted");
    await c.close();
  });

  it("surfaces per-event rejections naming the field and refuses floats before queueing", async () => {
    const seen: string[] = [];
    const c = createMeteringClient({ transport, batchSizeMax: 10, onResult: (r) => seen.push(r.status) });
    const bad = await c.track({ id: "evt_sdk_neg", customerId: "cus_1", type: "llm.call", properties: { input_tokens: -3 } });
    await expect(c.track({ customerId: "cus_1", type: "llm.call", properties: { ratio: 0.5 } })).rejects.toThrow(/properties.ratio/);
    await c.flush();
    expect(await bad.result).toMatchObject({ status: "rejected", field: "properties.input_tokens", reason: "negative" });
    expect(seen).toEqual(["rejected"]);
    await c.close();
    await expect(c.track({ customerId: "cus_1", type: "llm.call" })).rejects.toThrow(/closed/);
  });

  it("carries the active trace context", async () => {
    const tel = initTelemetry({ serviceName: "sdk-test" });
    try {
      const c = createMeteringClient({ transport, batchSizeMax: 10 });
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const ctx = trace.setSpanContext(context.active(), { traceId, spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.SAMPLED });
      const t = await context.with(ctx, () => c.track({ id: "evt_sdk_trace", customerId: "cus_1", type: "llm.call" }));
      await c.close();
      expect((await t.result).status).toBe("accepted");
      const stored = (await service.store.listTenantEvents("tnt_sdk", 100_000)).find((e) => e.id === "evt_sdk_trace")!;
      expect(stored.traceparent).toBe(`00-${traceId}-00f067aa0ba902b7-01`);
    } finally {
      await tel.shutdown();
    }
  });

  describe("over gRPC against a real server on port 0", () => {
    let server: StartedServer;
    beforeAll(async () => {
      server = await startServer({ name: "metering-sdk-test", port: 0, host: "127.0.0.1", routes: service.routes, authenticator, logger: silentLogger });
    });
    afterAll(async () => {
      await server?.close();
    });

    it("delivers events durably and the stored events appear on ReadEvents", async () => {
      const c = createMeteringClient({ baseUrl: server.url, apiKey: KEY, batchSizeMax: 50 });
      const tracked = [];
      for (let i = 0; i < 120; i++) tracked.push(await c.track({ id: `evt_sdk_grpc_${i}`, customerId: "cus_g", type: "llm.call", properties: { model: "gpt-x", input_tokens: 10n } }));
      await c.close();
      expect((await Promise.all(tracked.map((t) => t.result))).filter((r) => r.status === "accepted").length).toBe(120);
      const ids = await storedIds();
      expect(tracked.every((t) => ids.has(t.id))).toBe(true);
    });
  });
});
