// Margin guardrail alerts as webhooks: a margin_below alert raised by the consumer batch is queued
// by the alerts trigger in the batch's transaction and POSTed, signed, to the subscribed endpoint.
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { WebhookDeliveryState } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { GuardrailKind, PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { testBackends } from "@nanobill/db";
import { createEndpoint, enqueueWebhooks, listDeliveries, verifyWebhookSignature } from "@nanobill/webhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, T0, openHarness, type Harness } from "./test-support.js";

const t0 = T0.getTime();
const HOUR = 3_600_000;

for (const backend of testBackends()) {
  describe(`rating webhooks on ${backend.name}`, () => {
    let h: Harness;
    const got: Array<{ headers: IncomingMessage["headers"]; body: string }> = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        got.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(200).end("ok");
      });
    });
    let url = "";
    beforeAll(async () => {
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/margin`;
      // The receiver listens on 127.0.0.1: this service allows private networks (the default refuses them).
      h = await openHarness(await backend.open(), { webhooksAllowPrivateNetworks: true });
      h.metering.meters.set("tnt_a\u0000llm_tokens", "llm.call");
      const c = h.client(KEYS.adminA);
      await c.createCustomer({ customer: { customerId: "cus_1", currency: "USD", billingAnchor: timestampFromMs(Date.UTC(2026, 10, 1)), timeZone: "UTC" } });
      await c.createPlan({
        planId: "plan_llm",
        name: "LLM",
        version: create(PlanVersionSchema, {
          currency: "USD",
          charges: [
            {
              chargeId: "llm_tokens",
              name: "LLM tokens",
              unit: "USD",
              usage: { meter: "llm_tokens", eventType: "llm.call", quantityProperties: ["input_tokens"], dimensionProperties: ["model"] },
              pricing: { case: "perUnit", value: { unitPrice: { amount: "2.50", perQuantity: 1_000_000n } } },
            },
          ],
        }),
      });
      await c.publishPlanVersion({ planId: "plan_llm", version: 1 });
      await c.createSubscription({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startTime: timestampFromMs(Date.UTC(2026, 10, 1)) });
      await c.upsertCostRates({ rates: [{ provider: "openai", model: "gpt-x", metric: "input_tokens", unitPrice: { amount: "1.25", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: timestampFromMs(0) }] });
    });
    afterAll(async () => {
      server.close();
      await h?.close();
    });

    it("posts a signed margin_below alert to the endpoint subscribed to it, once", async () => {
      const admin = h.client(KEYS.adminA);
      const ep = await admin.createWebhookEndpoint({ id: "margins", url, eventKinds: ["margin_below"] });
      await admin.createWebhookEndpoint({ id: "mix_only", url, eventKinds: ["cost_mix_shift"] });
      expect(ConnectError.from(await admin.createWebhookEndpoint({ id: "bad", url: "mailto:x@y" }).catch((e) => e)).code).toBe(Code.InvalidArgument);
      await admin.createGuardrailRule({ rule: { ruleId: "rule_m60", kind: GuardrailKind.MARGIN_BELOW, thresholdBps: 6000n, windowSeconds: 3600 } });
      h.metering.push("tnt_a", { id: "evt_m1", customerId: "cus_1", type: "llm.call", timestampMs: t0, properties: { model: "gpt-x", provider: "openai", input_tokens: 1000 } });
      h.clock.advance(5000);
      await h.service.consumer.pollOnce(0);
      const alerts = (await h.client(KEYS.readA).listAlerts({ since: timestampFromMs(t0 - HOUR) })).alerts;
      expect(alerts).toHaveLength(1);

      expect(await h.service.webhooks.runOnce()).toEqual({ delivered: 1, retried: 0, failed: 0 });
      expect(await h.service.webhooks.runOnce()).toEqual({ delivered: 0, retried: 0, failed: 0 });
      expect(got).toHaveLength(1);
      expect(verifyWebhookSignature(ep.signingSecret, got[0]!.headers["nanobill-signature"] as string, got[0]!.body, Math.floor(h.clock.now().getTime() / 1000))).toEqual({ ok: true });
      expect(JSON.parse(got[0]!.body)).toMatchObject({
        id: alerts[0]!.alertId,
        kind: "margin_below",
        tenant: "tnt_a",
        data: { rule_id: "rule_m60", customer_id: "cus_1", observed_bps: "5000", threshold_bps: "6000", unit: "USD" },
      });
      const ds = (await admin.listWebhookDeliveries({})).deliveries;
      expect(ds.map((d) => [d.endpointId, d.state])).toEqual([["margins", WebhookDeliveryState.DELIVERED]]);
    });

    it("by default refuses loopback, metadata and IPv4-mapped loopback endpoints (InvalidArgument on url) and does not POST to one at delivery", async () => {
      const d = await openHarness(await backend.open());
      try {
        const admin = d.client(KEYS.adminA);
        for (const u of [url, "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]/margin", "http://localhost/margin"]) {
          const e = ConnectError.from(await admin.createWebhookEndpoint({ id: "internal", url: u }).catch((x) => x));
          expect(e.code, u).toBe(Code.InvalidArgument);
          expect(e.rawMessage).toMatch(/^url: host .* is not a public address/);
        }
        // An endpoint that got in anyway (made before this policy, or a name re-pointed later): refused at connect time.
        await createEndpoint(d.db, "tnt_a", { id: "old", url, eventKinds: [] }, d.clock.now(), { allowPrivateNetworks: true });
        await enqueueWebhooks(d.db, "tnt_a", [{ id: "alr_x", kind: "margin_below", occurredAt: d.clock.now(), data: {} }], d.clock.now());
        const before = got.length;
        expect(await d.service.webhooks.runOnce()).toEqual({ delivered: 0, retried: 1, failed: 0 });
        expect(got.length).toBe(before);
        expect((await listDeliveries(d.db, "tnt_a", {}))[0]!.lastError).toBe("refused: 127.0.0.1 is not a public address (webhook egress policy)");
      } finally {
        await d.close();
      }
    });
  });
}
