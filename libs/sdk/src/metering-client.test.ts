import { spawnSync } from "node:child_process";
import { connect as h2connect, constants as h2, createServer as h2server, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import { fileURLToPath } from "node:url";
import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type Interceptor, type Transport } from "@connectrpc/connect";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { IngestEventsRequestSchema } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { createMeteringService, migrationsDir } from "@nanobill/metering";
import { closeClientSessions, createApiKeyAuthenticator, createAuthInterceptor, createClientTransport, errorInfoOf, limitExceeded, silentLogger, startServer, systemClock, type StartedServer } from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { context, trace, TraceFlags } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMeteringClient, SDK_LIMITS } from "./index.js";
import { failureAction } from "./metering-client.js";

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
  const chaos = { failNext: 0, loseReply: false, hold: undefined as Promise<void> | undefined, delayMs: 0, code: Code.Unavailable, error: undefined as ConnectError | undefined };
  /** Bytes of every IngestEvents request message sent through `transport`. */
  const requestBytes: number[] = [];
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
      if (req.method.name === "IngestEvents") requestBytes.push(toBinary(IngestEventsRequestSchema, req.message as never).length);
      if (chaos.hold) await chaos.hold;
      if (chaos.delayMs > 0) await new Promise((r) => setTimeout(r, chaos.delayMs));
      if (chaos.failNext > 0) {
        chaos.failNext--;
        if (chaos.loseReply) {
          await next(req);
        }
        throw chaos.error ?? new ConnectError("injected", chaos.code);
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

  it("retries Internal and Unknown (transport resets) like Unavailable, and fails at once on request errors", () => {
    const table: Array<[Code, "retry" | "fail"]> = [
      [Code.Unavailable, "retry"],
      [Code.Aborted, "retry"],
      [Code.DeadlineExceeded, "retry"],
      [Code.Internal, "retry"],
      [Code.Unknown, "retry"],
      [Code.InvalidArgument, "fail"],
      [Code.Unauthenticated, "fail"],
      [Code.PermissionDenied, "fail"],
      [Code.FailedPrecondition, "fail"],
      [Code.AlreadyExists, "fail"],
      [Code.NotFound, "fail"],
      [Code.Unimplemented, "fail"],
      [Code.Canceled, "fail"],
    ];
    expect(table.map(([code]) => [code, failureAction(new ConnectError("x", code))])).toEqual(table);
  });

  it("re-tracking a failed event with its id and the failed result's timestamp answers duplicate when the first attempt was stored", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10, retry: { attemptsMax: 2, backoffMsInitial: 1, backoffMsMax: 2 } });
    const event = { customerId: "cus_1", type: "llm.call", properties: { input_tokens: 10 } }; // no timestamp: stamped at track()
    chaos.failNext = 2;
    chaos.loseReply = true; // both attempts stored, both replies lost
    const first = await c.track(event);
    await c.flush();
    chaos.loseReply = false;
    const failed = await first.result;
    expect(failed.status).toBe("failed");
    expect(failed.timestamp).toBeInstanceOf(Date);
    await new Promise((r) => setTimeout(r, 5)); // a later track() time
    const again = await c.track({ ...event, id: failed.eventId, timestamp: failed.timestamp });
    await c.flush();
    expect((await again.result).status).toBe("duplicate");
    const stored = (await service.store.listTenantEvents("tnt_sdk", 100_000)).filter((e) => e.id === first.id);
    expect(stored.length).toBe(1);
    await c.close();
  });

  it("flush() resolves with the results of the events tracked before it while another task keeps tracking every millisecond", async () => {
    // Only flush() sends here (a long interval, large batches) and each call takes 20 ms: the events
    // tracked meanwhile stay queued, so "nothing pending" never comes.
    const c = createMeteringClient({ transport, batchSizeMax: 1_000, flushIntervalMs: 10_000 });
    chaos.delayMs = 20;
    const tracked: Array<{ id: string; settled: boolean }> = [];
    let stop = false;
    const producer = (async () => {
      for (let i = 0; !stop; i++) {
        const t = await c.track({ id: `evt_sdk_flush_load_${i}`, customerId: "cus_1", type: "llm.call", properties: { input_tokens: 1 } });
        const entry = { id: t.id, settled: false };
        tracked.push(entry);
        void t.result.then(() => (entry.settled = true));
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    while (tracked.length < 20) await new Promise((r) => setTimeout(r, 5));
    const before = tracked.slice();
    const outcome = await Promise.race([c.flush().then(() => "flushed"), new Promise((r) => setTimeout(() => r("still waiting after 5 s"), 5_000))]);
    const settledAtFlush = before.filter((e) => e.settled).length;
    stop = true;
    chaos.delayMs = 0;
    await producer;
    await c.close();
    expect(outcome).toBe("flushed");
    expect(settledAtFlush).toBe(before.length);
    expect(tracked.every((e) => e.settled)).toBe(true); // close() waits for the rest
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

  /** Five 1,000-byte string properties: ~5.1 KB encoded, valid for metering (under 16 KiB of properties). */
  const bigProps: Record<string, string> = {};
  for (let i = 0; i < 5; i++) bigProps[`p${i}`] = "x".repeat(1000);

  it("cuts batches by encoded bytes as well as by count: no request exceeds batchBytesMax", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 1000, batchBytesMax: 64 * 1024, flushIntervalMs: 10_000 });
    const before = calls;
    const sizesBefore = requestBytes.length;
    const tracked = [];
    for (let i = 0; i < 40; i++) tracked.push(await c.track({ id: `evt_sdk_bytes_${i}`, customerId: "cus_1", type: "llm.call", properties: bigProps }));
    await c.flush();
    expect((await Promise.all(tracked.map((t) => t.result))).every((r) => r.status === "accepted")).toBe(true);
    const sizes = requestBytes.slice(sizesBefore);
    // 12 events of ~5.1 KB fit 64 KiB: 12 + 12 + 12 + 4.
    expect(calls - before).toBe(4);
    expect(sizes.length).toBe(4);
    expect(sizes.every((n) => n <= 64 * 1024)).toBe(true);
    expect(sizes.slice(0, 3).every((n) => n > 64 * 1024 - 6_000)).toBe(true);
    await c.close();
  });

  it("bounds the queue by bytes: track waits while queueBytesMax is reached", async () => {
    let release!: () => void;
    chaos.hold = new Promise<void>((r) => (release = r));
    const c = createMeteringClient({ transport, batchSizeMax: 1000, batchBytesMax: 64 * 1024, queueBytesMax: 64 * 1024, flushIntervalMs: 0 });
    try {
      const first = [];
      for (let i = 0; i < 12; i++) first.push(await c.track({ id: `evt_sdk_bpb_${i}`, customerId: "cus_1", type: "llm.call", properties: bigProps }));
      expect(c.pending).toBe(12);
      expect(c.pendingBytes).toBeLessThanOrEqual(64 * 1024);
      let thirteenthQueued = false;
      const thirteenth = c.track({ id: "evt_sdk_bpb_12", customerId: "cus_1", type: "llm.call", properties: bigProps }).then((t) => {
        thirteenthQueued = true;
        return t;
      });
      await new Promise((r) => setTimeout(r, 30));
      expect(thirteenthQueued).toBe(false);
      expect(c.pending).toBe(12);
      chaos.hold = undefined;
      release();
      expect((await (await thirteenth).result).status).toBe("accepted");
      expect((await Promise.all(first.map((t) => t.result))).every((r) => r.status === "accepted")).toBe(true);
      await c.close();
      expect(c.pendingBytes).toBe(0);
    } finally {
      chaos.hold = undefined;
      release();
    }
  });

  it("queues a large event waiting for room before the small ones tracked after it: waiting track() calls are served in order", async () => {
    // 64 KiB of queue, 4-event batches of ~1 KB events taking 5 ms a call (a response frees ~4 KB),
    // 16 new small track() calls every millisecond (callers that do not wait for each other), and
    // one ~15 KB event that has to wait for room. Before, every small call that found ~1 KB free
    // went ahead of it (hundreds, for ~0.8 s here; for as long as the load lasts in general).
    const c = createMeteringClient({ transport, batchSizeMax: 4, batchBytesMax: 64 * 1024, queueBytesMax: 64 * 1024, flushIntervalMs: 1 });
    chaos.delayMs = 5;
    const small = { customerId: "cus_1", type: "llm.call", properties: { note: "s".repeat(1_000) } };
    const smalls: Array<Promise<unknown>> = [];
    let bigCalled = false;
    let bigQueued = false;
    let overtook = 0; // small events tracked after the big one and queued before it
    let stop = false;
    const producer = (async () => {
      while (!stop) {
        for (let i = 0; i < 16; i++) {
          const after = bigCalled;
          smalls.push(
            c.track(small).then((t) => {
              if (after && !bigQueued) overtook++;
              return t.result;
            }),
          );
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    try {
      while (c.pendingBytes < 60 * 1024) await new Promise((r) => setTimeout(r, 5)); // the queue is full
      bigCalled = true;
      const big = c.track({ id: "evt_sdk_fifo_big", customerId: "cus_1", type: "llm.call", properties: Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`note_${i}`, "b".repeat(1_000)])) }).then((t) => {
        bigQueued = true;
        return t;
      });
      const outcome = await Promise.race([big.then(() => "queued"), new Promise((r) => setTimeout(() => r("still waiting after 3 s"), 3_000))]);
      expect(outcome).toBe("queued");
      expect(overtook).toBe(0);
      stop = true;
      await producer;
      expect((await (await big).result).status).toBe("accepted");
    } finally {
      stop = true;
      await producer;
      chaos.delayMs = 0;
      await Promise.allSettled(smalls);
      await c.close();
    }
  });

  it("refuses an event larger than batchBytesMax before queueing it, and checks the byte options", async () => {
    const c = createMeteringClient({ transport, batchBytesMax: SDK_LIMITS.BATCH_BYTES_MIN });
    const huge: Record<string, string> = {};
    for (let i = 0; i < 70; i++) huge[`p${i}`] = "y".repeat(1000);
    await expect(c.track({ customerId: "cus_1", type: "llm.call", properties: huge })).rejects.toThrow(TypeError);
    expect(c.pending).toBe(0);
    await c.close();
    expect(() => createMeteringClient({ transport, batchBytesMax: SDK_LIMITS.BATCH_BYTES_MAX + 1 })).toThrow(/batchBytesMax/);
    expect(() => createMeteringClient({ transport, batchBytesMax: 128 * 1024, queueBytesMax: 64 * 1024 })).toThrow(/queueBytesMax/);
    expect(SDK_LIMITS.BATCH_BYTES_MAX).toBeLessThan(4 * 1024 * 1024);
  });

  it("retries ResourceExhausted LIMIT_EXCEEDED (tenant rate, in-flight, ingest queue) with the same ids", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10, retry: { backoffMsInitial: 1, backoffMsMax: 5 } });
    chaos.failNext = 2;
    chaos.error = limitExceeded("tenant.requests_per_second", 100);
    const before = calls;
    try {
      const t = await c.track({ id: "evt_sdk_limit_1", customerId: "cus_1", type: "llm.call" });
      await c.flush();
      expect(await t.result).toMatchObject({ eventId: "evt_sdk_limit_1", status: "accepted" });
      expect(calls - before).toBe(3);
      // A bare ResourceExhausted that is not about the message size is an overload signal too.
      chaos.failNext = 1;
      chaos.error = new ConnectError("overloaded", Code.ResourceExhausted);
      const u = await c.track({ id: "evt_sdk_limit_2", customerId: "cus_1", type: "llm.call" });
      await c.flush();
      expect((await u.result).status).toBe("accepted");
    } finally {
      chaos.error = undefined;
      chaos.failNext = 0;
    }
    await c.close();
  });

  it("does not resend the same request after a message-size ResourceExhausted: one event fails after one call", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10, retry: { backoffMsInitial: 1, backoffMsMax: 5 } });
    chaos.failNext = 1;
    chaos.error = new ConnectError("message size 5000000 is larger than configured readMaxBytes 4194304", Code.ResourceExhausted);
    const before = calls;
    try {
      const t = await c.track({ id: "evt_sdk_toolarge", customerId: "cus_1", type: "llm.call" });
      await c.flush();
      const r = await t.result;
      expect(r.status).toBe("failed");
      expect(r.error?.code).toBe(Code.ResourceExhausted);
      expect(calls - before).toBe(1);
    } finally {
      chaos.error = undefined;
      chaos.failNext = 0;
    }
    await c.close();
  });

  it("refuses bigint properties outside int64 with a TypeError naming the property (no silent wrap)", async () => {
    const c = createMeteringClient({ transport, batchSizeMax: 10 });
    for (const v of [2n ** 63n, -(2n ** 63n) - 1n, 2n ** 64n + 5n]) {
      await expect(c.track({ customerId: "cus_1", type: "llm.call", properties: { tokens: v } })).rejects.toThrow(TypeError);
      await expect(c.track({ customerId: "cus_1", type: "llm.call", properties: { tokens: v } })).rejects.toThrow(/properties\.tokens/);
    }
    expect(c.pending).toBe(0);
    const max = await c.track({ id: "evt_sdk_int64_max", customerId: "cus_1", type: "llm.call", properties: { tokens: 2n ** 63n - 1n } });
    await c.flush();
    expect((await max.result).status).toBe("accepted");
    await c.close();
  });

  it("keeps one beforeExit listener for any number of clients with events queued, removed once they are closed", async () => {
    const base = process.listenerCount("beforeExit");
    const clients = Array.from({ length: 12 }, () => createMeteringClient({ transport, flushIntervalMs: 60_000 }));
    expect(process.listenerCount("beforeExit")).toBe(base);
    for (const [i, c] of clients.entries()) await c.track({ id: `evt_sdk_exit_${i}`, customerId: "cus_1", type: "llm.call" });
    expect(process.listenerCount("beforeExit")).toBe(base + 1);
    for (const c of clients) await c.close();
    expect(process.listenerCount("beforeExit")).toBe(base);
  });

  it("flushes on process exit without close(): a child process delivers every event and exits", () => {
    const fixture = fileURLToPath(new URL("./exit-flush.fixture.ts", import.meta.url));
    const run = (...args: string[]) => {
      const out = spawnSync(process.execPath, ["--import", "tsx", fixture, ...args], { encoding: "utf8", timeout: 60_000 });
      expect(out.status, out.stderr).toBe(0);
      return JSON.parse(out.stdout.trim().split("\n").pop()!) as { received: number; calls: number; statuses: Record<string, number>; warnings: string[]; listenersWhilePending: number; listenersAtExit: number };
    };
    // 12 clients (more than the default 10 listeners per event): no MaxListenersExceededWarning.
    const ok = run("12", "10", "ok");
    expect(ok).toMatchObject({ received: 120, statuses: { accepted: 120 }, warnings: [], listenersWhilePending: 1, listenersAtExit: 0 });
    // A server that stays down: the results settle "failed" after the retries and the process still exits.
    const down = run("2", "5", "unavailable");
    expect(down).toMatchObject({ received: 0, calls: 6, statuses: { failed: 10 }, listenersAtExit: 0 });
  }, 60_000);

  describe("over gRPC against a real server on port 0", () => {
    let server: StartedServer;
    beforeAll(async () => {
      server = await startServer({ name: "metering-sdk-test", port: 0, host: "127.0.0.1", routes: service.routes, authenticator, logger: silentLogger });
    });
    afterAll(async () => {
      await server?.close();
    });

    it("delivers 1,000 events of 5 KB each (5 MB, over the 4 MiB request limit) with default options", async () => {
      const c = createMeteringClient({ baseUrl: server.url, apiKey: KEY });
      const tracked = [];
      for (let i = 0; i < 1000; i++) tracked.push(await c.track({ id: `evt_sdk_big_${i}`, customerId: "cus_g", type: "llm.call", properties: bigProps }));
      await c.close();
      const results = await Promise.all(tracked.map((t) => t.result));
      expect(results.filter((r) => r.status !== "accepted").map((r) => r.error?.message ?? r.status).slice(0, 3)).toEqual([]);
      const ids = await storedIds();
      expect(tracked.every((t) => ids.has(t.id))).toBe(true);
    }, 60_000);

    it("splits a batch a server refuses as too large (smaller readMaxBytes) and resends the halves with the same ids", async () => {
      const small = await startServer({ name: "metering-sdk-small", port: 0, host: "127.0.0.1", routes: service.routes, authenticator, logger: silentLogger, limits: { readMaxBytes: 100_000 } });
      try {
        const c = createMeteringClient({ baseUrl: small.url, apiKey: KEY, flushIntervalMs: 10_000 });
        const tracked = [];
        // ~1 MB in one batch (under batchBytesMax): refused, then halved down to ~96 KB requests.
        for (let i = 0; i < 200; i++) tracked.push(await c.track({ id: `evt_sdk_split_${i}`, customerId: "cus_g", type: "llm.call", properties: bigProps }));
        await c.close();
        const results = await Promise.all(tracked.map((t) => t.result));
        expect(results.map((r) => r.status)).toEqual(tracked.map(() => "accepted"));
        expect(results.map((r) => r.eventId)).toEqual(tracked.map((t) => t.id));
        const ids = await storedIds();
        expect(tracked.every((t) => ids.has(t.id))).toBe(true);
      } finally {
        await small.close();
      }
    }, 60_000);

    it("retries a server's tenant rate limit (ResourceExhausted LIMIT_EXCEEDED) until every batch is in", async () => {
      // 5 calls a second, no burst: of the 5 batches sent together, 4 are refused at first.
      const tight = await startServer({ name: "metering-sdk-tight", port: 0, host: "127.0.0.1", routes: service.routes, authenticator, logger: silentLogger, tenantLimits: { requestsPerSecond: 5, requestsBurst: 1 } });
      try {
        const inner = createClientTransport({ baseUrl: tight.url, apiKey: KEY });
        const refused: ConnectError[] = [];
        const counting = {
          async unary(...args: Parameters<Transport["unary"]>) {
            try {
              return await inner.unary(...args);
            } catch (e) {
              refused.push(ConnectError.from(e));
              throw e;
            }
          },
          stream: (...args: Parameters<Transport["stream"]>) => inner.stream(...args),
        } as Transport;
        const c = createMeteringClient({ transport: counting, batchSizeMax: 10, inFlightBatchesMax: 8, retry: { attemptsMax: 50, backoffMsInitial: 20, backoffMsMax: 200 } });
        // Queued in one tick: the 5 batches go out at once.
        const tracked = await Promise.all(Array.from({ length: 50 }, (_, i) => c.track({ id: `evt_sdk_tight_${i}`, customerId: "cus_g", type: "llm.call" })));
        await c.close();
        const results = await Promise.all(tracked.map((t) => t.result));
        expect(results.filter((r) => r.status !== "accepted").map((r) => r.error?.message ?? r.status).slice(0, 3)).toEqual([]);
        expect(refused.length).toBeGreaterThan(0);
        expect(refused.every((e) => e.code === Code.ResourceExhausted && errorInfoOf(e)?.reason === ErrorReason.LIMIT_EXCEEDED)).toBe(true);
        const ids = await storedIds();
        expect(tracked.every((t) => ids.has(t.id))).toBe(true);
      } finally {
        await tight.close();
      }
    }, 60_000);

    // A raw HTTP/2 proxy in front of the server that kills the first `failFirst` IngestEvents calls
    // the way a crashing server or a proxy does: RST_STREAM INTERNAL_ERROR, or GOAWAY and a closed
    // session (the lean client maps both to Internal). With `storeFirst` the killed calls reach
    // the server first (stored, reply lost). Records every request body.
    async function startKillingProxy(upstreamUrl: string, mode: "rst" | "goaway", failFirst: number, storeFirst: boolean) {
      const bodies: Buffer[] = [];
      const upstream = h2connect(upstreamUrl);
      const forward = (headers: IncomingHttpHeaders, body: Buffer) =>
        new Promise<{ headers: OutgoingHttpHeaders; body: Buffer }>((resolve, reject) => {
          const out: OutgoingHttpHeaders = {};
          for (const [k, v] of Object.entries(headers)) if (!k.startsWith(":") || k === ":method" || k === ":path") out[k] = v;
          const req = upstream.request(out);
          const chunks: Buffer[] = [];
          let resHeaders: OutgoingHttpHeaders = {};
          req.on("response", (h) => (resHeaders = Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith(":") || k === ":status"))));
          req.on("data", (c: Buffer) => chunks.push(c));
          req.on("end", () => resolve({ headers: resHeaders, body: Buffer.concat(chunks) }));
          req.on("error", reject);
          req.end(body);
        });
      const proxy = h2server();
      proxy.on("session", (session) => session.on("error", () => {}));
      proxy.on("stream", (stream, headers) => {
        stream.on("error", () => {}); // the resets below surface here too
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", async () => {
          const body = Buffer.concat(chunks);
          bodies.push(body);
          const kill = bodies.length <= failFirst;
          const res = !kill || storeFirst ? await forward(headers, body) : undefined;
          if (!kill) {
            stream.respond(res!.headers);
            stream.end(res!.body);
          } else if (mode === "rst") stream.close(h2.NGHTTP2_INTERNAL_ERROR);
          else {
            stream.session?.goaway(h2.NGHTTP2_INTERNAL_ERROR);
            stream.session?.destroy();
          }
        });
      });
      await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
      return {
        url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}`,
        bodies,
        async close() {
          upstream.close();
          await new Promise<void>((r) => proxy.close(() => r()));
        },
      };
    }

    for (const [mode, storeFirst] of [["rst", false], ["goaway", false], ["rst", true]] as const) {
      it(`retries a call killed by ${mode === "rst" ? "RST_STREAM INTERNAL_ERROR" : "GOAWAY"}${storeFirst ? " after the server stored it" : ""} with the same bytes until the events are ${storeFirst ? "in (duplicate, stored once)" : "accepted"}`, async () => {
        const proxy = await startKillingProxy(server.url, mode, 2, storeFirst);
        try {
          const c = createMeteringClient({ baseUrl: proxy.url, apiKey: KEY, flushIntervalMs: 10_000, retry: { attemptsMax: 3, backoffMsInitial: 1, backoffMsMax: 2 } });
          const tracked = [];
          for (let i = 0; i < 3; i++) tracked.push(await c.track({ id: `evt_sdk_kill_${mode}_${storeFirst}_${i}`, customerId: "cus_g", type: "llm.call", properties: { input_tokens: i } }));
          await c.close();
          const results = await Promise.all(tracked.map((t) => t.result));
          expect(results.map((r) => r.error?.message ?? r.status)).toEqual(tracked.map(() => (storeFirst ? "duplicate" : "accepted")));
          expect(proxy.bodies.length).toBe(3);
          expect(proxy.bodies.every((b) => b.equals(proxy.bodies[0]!))).toBe(true);
          const stored = (await service.store.listTenantEvents("tnt_sdk", 100_000)).filter((e) => e.id.startsWith(`evt_sdk_kill_${mode}_${storeFirst}_`));
          expect(stored.length).toBe(3);
        } finally {
          closeClientSessions();
          await proxy.close();
        }
      });
    }

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
