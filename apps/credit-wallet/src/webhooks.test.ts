// Wallet alerts as webhooks: an endpoint registered through the RPCs receives a signed POST for a
// low_balance alert (queued by the alerts trigger in the alert's own transaction), once; the RPCs'
// idempotency, validation, listing and disabling.
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { WebhookDeliveryState } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { createEndpoint, enqueueWebhooks, listDeliveries, verifyWebhookSignature } from "@nanobill/webhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, openWalletHarness, walletBackends, type WalletHarness } from "./test-support.js";

for (const b of walletBackends()) {
  describe(`wallet webhooks (${b.name})`, () => {
    let h: WalletHarness;
    const got: Array<{ headers: IncomingMessage["headers"]; body: string }> = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        got.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(204).end();
      });
    });
    let url = "";
    beforeAll(async () => {
      // The receiver listens on 127.0.0.1: this wallet allows private networks (the default refuses them).
      h = await openWalletHarness(b, { webhooksAllowPrivateNetworks: true });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/nanobill`;
    });
    afterAll(async () => {
      server.close();
      await h?.close();
    });

    it("posts a signed low_balance alert to a subscribed endpoint, once", async () => {
      const admin = h.client(KEYS.adminA);
      const created = await admin.createWebhookEndpoint({ id: "ops", url, eventKinds: ["low_balance"], description: "finance channel" });
      expect(created.signingSecret).toMatch(/^whsec_/);
      expect(created.endpoint).toMatchObject({ id: "ops", url, eventKinds: ["low_balance"], enabled: true });
      // Idempotent; other content under the id is refused; bad input names the field.
      expect((await admin.createWebhookEndpoint({ id: "ops", url, eventKinds: ["low_balance"], description: "finance channel" })).signingSecret).toBe(created.signingSecret);
      expect(ConnectError.from(await admin.createWebhookEndpoint({ id: "ops", url: `${url}/x` }).catch((e) => e)).code).toBe(Code.AlreadyExists);
      const bad = ConnectError.from(await admin.createWebhookEndpoint({ id: "x", url: "ftp://nope" }).catch((e) => e));
      expect(bad.code).toBe(Code.InvalidArgument);
      expect(bad.rawMessage).toMatch(/^url: /);
      expect(ConnectError.from(await h.client(KEYS.ingestA).createWebhookEndpoint({ id: "y", url }).catch((e) => e)).code).toBe(Code.PermissionDenied);
      await admin.createWebhookEndpoint({ id: "expiring_only", url, eventKinds: ["credits_expiring"] });

      const w = (await admin.createWallet({ customerId: "cus_hook", unit: "USD" })).wallet!;
      await admin.grant({ id: "grt_hook", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
      await admin.setLowBalanceAlert({ walletId: w.id, lowBalanceAlert: { enabled: true, thresholdNanos: 300n } });
      await h.client(KEYS.ingestA).authorize({ id: "hook_1", customerId: "cus_hook", unit: "USD", amountNanos: 800n, ttlMs: 600_000n });
      const alerts = (await admin.listAlerts({ customerId: "cus_hook", kind: pb.AlertKind.LOW_BALANCE })).alerts;
      expect(alerts.length).toBe(1);

      expect(await h.wallet.webhooks.runOnce()).toEqual({ delivered: 1, retried: 0, failed: 0 });
      expect(await h.wallet.webhooks.runOnce()).toEqual({ delivered: 0, retried: 0, failed: 0 });
      expect(got.length).toBe(1);
      const g = got[0]!;
      expect(g.headers["nanobill-event-id"]).toBe(alerts[0]!.id);
      expect(verifyWebhookSignature(created.signingSecret, g.headers["nanobill-signature"] as string, g.body, Math.floor(h.clock.now().getTime() / 1000))).toEqual({ ok: true });
      expect(JSON.parse(g.body)).toMatchObject({
        id: alerts[0]!.id,
        kind: "low_balance",
        tenant: "tnt_a",
        data: { wallet_id: w.id, customer_id: "cus_hook", amount_nanos: "200", unit: "USD" },
      });

      const ds = (await admin.listWebhookDeliveries({ endpointId: "ops" })).deliveries;
      expect(ds.map((d) => [d.eventId, d.state, d.attempts, d.lastStatus])).toEqual([[alerts[0]!.id, WebhookDeliveryState.DELIVERED, 1, 204]]);
      expect((await admin.listWebhookDeliveries({ endpointId: "expiring_only" })).deliveries).toEqual([]);
      expect((await admin.listWebhookEndpoints({})).endpoints.map((e) => e.id)).toEqual(["expiring_only", "ops"]);
      expect((await admin.disableWebhookEndpoint({ id: "ops" })).endpoint!.enabled).toBe(false);
      expect(ConnectError.from(await admin.disableWebhookEndpoint({ id: "nope" }).catch((e) => e)).code).toBe(Code.NotFound);
      // Another tenant sees none of it.
      expect((await h.client(KEYS.adminB).listWebhookEndpoints({})).endpoints).toEqual([]);
    });

    it("by default refuses loopback, metadata and IPv4-mapped loopback endpoints (InvalidArgument on url) and does not POST to one at delivery", async () => {
      // clientWith builds the service without the switch: the default policy.
      const admin = h.clientWith({ key: KEYS.adminA });
      for (const u of [url, "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]/nanobill", "http://LOCALHOST./nanobill"]) {
        const e = ConnectError.from(await admin.createWebhookEndpoint({ id: "internal", url: u }).catch((x) => x));
        expect(e.code, u).toBe(Code.InvalidArgument);
        expect(e.rawMessage).toMatch(/^url: host .* is not a public address/);
      }
      // A wallet process with the default config refuses at connect time an endpoint that got in anyway.
      const d = await openWalletHarness(b);
      try {
        await createEndpoint(d.db, "tnt_a", { id: "old", url, eventKinds: [] }, d.clock.now(), { allowPrivateNetworks: true });
        await enqueueWebhooks(d.db, "tnt_a", [{ id: "alr_x", kind: "low_balance", occurredAt: d.clock.now(), data: {} }], d.clock.now());
        const before = got.length;
        expect(await d.wallet.webhooks.runOnce()).toEqual({ delivered: 0, retried: 1, failed: 0 });
        expect(got.length).toBe(before);
        expect((await listDeliveries(d.db, "tnt_a", {}))[0]!.lastError).toBe("refused: 127.0.0.1 is not a public address (webhook egress policy)");
      } finally {
        await d.close();
      }
    });
  });
}
