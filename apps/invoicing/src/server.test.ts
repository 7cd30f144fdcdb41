import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { Health, HealthCheckResponse_ServingStatus } from "@nanobill/contracts/grpc/health/v1/health_pb";
import { InvoicingService, LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { closeClientSessions, createApiKeyAuthenticator, createClientTransport, fixedClock, silentLogger, startServer, type StartedServer } from "@nanobill/service-kit";
import { createInvoicingService, migrationsDir } from "./index.js";
import { READ_MAX_BYTES, TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MAX, WRITE_MAX_BYTES } from "./limits.js";
import { FakeWorld } from "./testing/fakes.js";

const KEY = "k_server_test_admin";

describe("invoicing over a real h2c server", () => {
  let db: TestDb;
  let server: StartedServer;
  beforeAll(async () => {
    db = await testBackends()[0]!.open();
    await migrate(db, migrationsDir);
    const w = new FakeWorld();
    const nov = new Date("2026-11-01T00:00:00Z");
    w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: nov });
    w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_x", planVersion: 1, startedAt: nov, seats: [] });
    w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-20T10:00:00Z"), quantity: 1801n, priceNanos: 8_755_000n, unit: "USD", eventCount: 1n });
    const svc = await createInvoicingService({
      db,
      logger: silentLogger,
      clock: fixedClock(new Date("2026-11-29T00:00:00Z")),
      clients: { rating: w.rating(), wallet: w.wallet(), ledger: w.ledger() },
    });
    server = await startServer({
      name: "invoicing",
      port: 0,
      host: "127.0.0.1",
      routes: svc.routes,
      authenticator: createApiKeyAuthenticator([{ key: KEY, tenant: "tnt_a", scopes: ["admin"] }]),
      limits: { readMaxBytes: READ_MAX_BYTES, writeMaxBytes: WRITE_MAX_BYTES, timeoutMsMax: TIMEOUT_MS_MAX, timeoutMsDefault: TIMEOUT_MS_DEFAULT },
      logger: silentLogger,
    });
  });
  afterAll(async () => {
    closeClientSessions();
    await server?.close();
    await db?.dispose();
  });

  it("serves PreviewInvoice over gRPC with an API key, and reports healthy", async () => {
    const client = createClient(InvoicingService, createClientTransport({ baseUrl: server.url, apiKey: KEY }));
    const { invoice } = await client.previewInvoice({ customerId: "cus_1" });
    expect(invoice!.lines.find((l) => l.kind === LineKind.USAGE)!.amountNanos).toBe(8_755_000n);
    const health = createClient(Health, createClientTransport({ baseUrl: server.url, apiKey: KEY }));
    const h = await health.check({ service: "nanobill.invoicing.v1.InvoicingService" });
    expect(h.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("refuses a call without a valid key as Unauthenticated", async () => {
    const client = createClient(InvoicingService, createClientTransport({ baseUrl: server.url, apiKey: "wrong" }));
    const err = await client.previewInvoice({ customerId: "cus_1" }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
  });

  it("refuses a request larger than the read limit", async () => {
    const client = createClient(InvoicingService, createClientTransport({ baseUrl: server.url, apiKey: KEY }));
    const huge = "x".repeat(READ_MAX_BYTES + 1);
    const err = await client.previewInvoice({ customerId: huge }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
  });
});
