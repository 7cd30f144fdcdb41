import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { ConnectError, Code } from "@connectrpc/connect";
import { initTelemetry, getTracer, type Telemetry } from "@nanobill/telemetry";
import { silentLogger } from "@nanobill/service-kit";
import { DEMO, seedDemo, startPlatform, type Platform, type PlatformClients } from "@nanobill/platform";
import { IngestStatus } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { e2eBackends, eventually } from "./support.js";

/**
 * One LLM call travels metering -> rating -> credit-wallet -> ledger -> invoicing over gRPC
 * (docs/event-flow.md), on the embedded database and on a real PostgreSQL server.
 */
const PRICE_NANOS = 8_755_000n; // 1,234 x $2.50/1M + 567 x $10/1M = 3,085,000 + 5,670,000
const COST_NANOS = 4_377_500n; // 1,234 x $1.25/1M + 567 x $5/1M = 1,542,500 + 2,835,000
const GRANT_NANOS = DEMO.prepaidNanos; // $1.00

const SERVICES = [
  "nanobill.metering.v1.MeteringService",
  "nanobill.rating.v1.RatingService",
  "nanobill.wallet.v1.CreditWalletService",
  "nanobill.ledger.v1.LedgerService",
  "nanobill.invoicing.v1.InvoicingService",
];

let telemetry: Telemetry;
const exporter = new InMemorySpanExporter();
beforeAll(() => {
  telemetry = initTelemetry({ serviceName: "nanobill-e2e", exporter });
});
afterAll(async () => {
  await telemetry.shutdown();
});

const llmCall = () => ({
  id: "evt_1",
  customerId: "cus_1",
  type: "llm.call",
  properties: {
    model: { kind: { case: "stringValue" as const, value: "gpt-x" } },
    provider: { kind: { case: "stringValue" as const, value: "openai" } },
    input_tokens: { kind: { case: "intValue" as const, value: 1234n } },
    output_tokens: { kind: { case: "intValue" as const, value: 567n } },
  },
});

for (const backend of e2eBackends()) {
  describe(`one event end to end on ${backend.name}`, () => {
    let platform: Platform;
    let c: PlatformClients;
    let walletId: string;
    const key = `nbk_e2e_${randomBytes(16).toString("hex")}`;

    beforeAll(async () => {
      platform = await startPlatform({
        ...backend.options(),
        apiKeys: [{ tenant: "tnt_demo", scopes: ["admin"], key }],
        logger: silentLogger,
        consumerWaitMs: 200,
      });
      c = platform.clients(key);
      walletId = (await seedDemo(c, { customerId: "cus_1", now: new Date() })).walletId;
    });
    afterAll(async () => {
      await platform?.close();
      await backend.cleanup();
    });

    it("prices, costs, burns, posts and previews one LLM call, in one trace", async () => {
      exporter.reset();
      const root = getTracer("e2e").startSpan("e2e one event");
      const ctx = trace.setSpan(context.active(), root);

      const ingest = await context.with(ctx, () => c.metering.ingestEvents({ events: [llmCall()] }));
      expect(ingest.results.map((r) => r.status)).toEqual([IngestStatus.ACCEPTED]);

      // rating: price and cost of the event, exact to the nano
      const rated = await eventually(async () => (await c.rating.getRatedEvent({ eventId: "evt_1" })).rated);
      const price = rated!.lines.reduce((s, l) => s + l.priceNanos, 0n);
      const cost = rated!.lines.reduce((s, l) => s + l.costNanos, 0n);
      expect(price).toBe(PRICE_NANOS);
      expect(cost).toBe(COST_NANOS);

      // credit-wallet: the price burned from the prepaid grant
      const balance = await eventually(async () => {
        const b = await c.wallet.getBalance({ walletId });
        return b.balanceNanos === GRANT_NANOS - PRICE_NANOS ? b : undefined;
      });
      expect(balance.balanceNanos).toBe(GRANT_NANOS - PRICE_NANOS);

      // ledger: a balanced transfer of the price out of the customer's wallet account, books balanced
      const account = balance.wallet!.ledgerAccountId;
      // the wallet commits its burn, then posts the ledger transfer: wait for the posting
      const acct = await eventually(async () => {
        const [a] = (await c.ledger.lookupAccounts({ ids: [account] })).accounts;
        return a !== undefined && a.debitsPostedNanos > 0n ? a : undefined;
      });
      expect(acct!.debitsPostedNanos).toBe(PRICE_NANOS);
      expect(acct!.creditsPostedNanos).toBe(GRANT_NANOS);
      const verify = await c.ledger.verify({});
      expect(verify.ok).toBe(true);

      // invoicing: the live preview shows the usage line and the credits applied
      const { invoice } = await context.with(ctx, () => c.invoicing.previewInvoice({ customerId: "cus_1" }));
      const usage = invoice!.lines.filter((l) => l.kind === LineKind.USAGE);
      const credits = invoice!.lines.filter((l) => l.kind === LineKind.CREDITS_APPLIED);
      expect(usage.reduce((s, l) => s + l.amountNanos, 0n)).toBe(PRICE_NANOS);
      expect(credits.reduce((s, l) => s + l.amountNanos, 0n)).toBe(-PRICE_NANOS);
      root.end();

      // one trace holds server spans of all five services, with price and cost as integer attributes
      const traceId = root.spanContext().traceId;
      const spans = await eventually(async () => {
        const inTrace = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
        const seen = new Set(inTrace.map((s) => s.attributes["rpc.service"]));
        return SERVICES.every((svc) => seen.has(svc)) ? inTrace : undefined;
      });
      const withPrice = spans.filter((s: ReadableSpan) => s.attributes["nanobill.price_nanos"] === Number(PRICE_NANOS));
      expect(withPrice.length).toBeGreaterThan(0);
      expect(spans.some((s) => s.attributes["nanobill.cost_nanos"] === Number(COST_NANOS))).toBe(true);
    });

    it("changes nothing when the same event is sent again", async () => {
      const before = await c.wallet.getBalance({ walletId });
      const again = await c.metering.ingestEvents({ events: [llmCall()] });
      expect(again.results.map((r) => r.status)).toEqual([IngestStatus.DUPLICATE]);
      // give the consumer time to (not) act, then compare everything
      await new Promise((r) => setTimeout(r, 1_000));
      const after = await c.wallet.getBalance({ walletId });
      expect(after.balanceNanos).toBe(before.balanceNanos);
      const { invoice } = await c.invoicing.previewInvoice({ customerId: "cus_1" });
      const usage = invoice!.lines.filter((l) => l.kind === LineKind.USAGE);
      expect(usage.reduce((s, l) => s + l.amountNanos, 0n)).toBe(PRICE_NANOS);
      expect((await c.ledger.verify({})).ok).toBe(true);
    });

    it("rejects a malformed event naming the field, and writes nothing", async () => {
      const bad = await c.metering.ingestEvents({
        events: [{ ...llmCall(), id: "evt_bad", customerId: "" }, { ...llmCall(), id: "evt_bad_2", properties: { ...llmCall().properties, input_tokens: { kind: { case: "intValue", value: -5n } } } }],
      });
      expect(bad.results.map((r) => r.status)).toEqual([IngestStatus.REJECTED, IngestStatus.REJECTED]);
      expect(bad.results[0]!.field).toContain("customer_id");
      expect(bad.results[1]!.field).toContain("input_tokens");
      await expect(c.rating.getRatedEvent({ eventId: "evt_bad" })).rejects.toSatisfy((e: unknown) => ConnectError.from(e).code === Code.NotFound);
    });

    it("refuses an unknown tenant key", async () => {
      const stranger = platform.clients(`nbk_unknown_${randomBytes(8).toString("hex")}`);
      await expect(stranger.metering.ingestEvents({ events: [llmCall()] })).rejects.toSatisfy(
        (e: unknown) => ConnectError.from(e).code === Code.Unauthenticated,
      );
    });
  });
}
