// Webhooks on both backends: endpoints (validation, idempotency), the outbox (fan-out by kind,
// idempotent on the event id), and the dispatcher against a real local HTTP receiver (signature,
// retries with backoff on a simulated clock, giving up, timeouts, concurrent dispatchers).
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readdirSync, readFileSync } from "node:fs";
import { testBackends, type TestDb } from "@nanobill/db";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ATTEMPTS_MAX,
  WebhookConflictError,
  WebhookInputError,
  backoffMs,
  createEndpoint,
  createWebhookDispatcher,
  disableEndpoint,
  enqueueWebhooks,
  listDeliveries,
  listEndpoints,
  signWebhook,
  verifyWebhookSignature,
  webhooksMigrationSql,
  type EndpointInput,
  type WebhookEvent,
} from "./index.js";

describe("signatures", () => {
  it("verifies its own signature and refuses a changed body, an old timestamp, another secret and junk", () => {
    const h = signWebhook("whsec_a", 1_800_000_000, '{"x":1}');
    expect(h).toMatch(/^t=1800000000,v1=[0-9a-f]{64}$/);
    expect(verifyWebhookSignature("whsec_a", h, '{"x":1}', 1_800_000_100)).toEqual({ ok: true });
    expect(verifyWebhookSignature("whsec_a", h, '{"x":2}', 1_800_000_100)).toEqual({ ok: false, reason: "mismatch" });
    expect(verifyWebhookSignature("whsec_b", h, '{"x":1}', 1_800_000_100)).toEqual({ ok: false, reason: "mismatch" });
    expect(verifyWebhookSignature("whsec_a", h, '{"x":1}', 1_800_000_301)).toEqual({ ok: false, reason: "too_old" });
    expect(verifyWebhookSignature("whsec_a", undefined, "", 0)).toEqual({ ok: false, reason: "malformed" });
    expect(verifyWebhookSignature("whsec_a", "t=abc,v1=00", "", 0)).toEqual({ ok: false, reason: "malformed" });
    // A rotation: two v1 values, either may match.
    const other = signWebhook("whsec_old", 1_800_000_000, "b").split(",")[1]!;
    expect(verifyWebhookSignature("whsec_a", `${signWebhook("whsec_a", 1_800_000_000, "b")},${other}`, "b", 1_800_000_000)).toEqual({ ok: true });
  });

  it("backs off exponentially up to the cap, with at most 10% jitter", () => {
    expect([1, 2, 3, 4].map((n) => backoffMs(n, 5_000, 3_600_000, 0))).toEqual([5_000, 10_000, 20_000, 40_000]);
    expect(backoffMs(40, 5_000, 3_600_000, 0)).toBe(3_600_000);
    expect(backoffMs(1, 5_000, 3_600_000, 1)).toBe(5_500);
  });

  it("every service's webhook migration is this library's SQL, verbatim", () => {
    const root = new URL("../../../apps/", import.meta.url);
    const copies = readdirSync(root).flatMap((app) => {
      const dir = new URL(`${app}/src/store/migrations/`, root);
      try {
        return readdirSync(dir).filter((f) => /^\d{4}_webhooks\.sql$/.test(f)).map((f) => [`${app}/${f}`, readFileSync(new URL(f, dir), "utf8")] as const);
      } catch {
        return [];
      }
    });
    expect(copies.map(([name]) => name.split("/")[0]).sort()).toEqual(["credit-wallet", "rating"]);
    for (const [name, sql] of copies) expect(sql, name).toBe(webhooksMigrationSql);
  });
});

/** A local receiver: records requests; `respond` decides each status (or hangs with -1). */
function receiver(): Promise<{ url: string; server: Server; got: Array<{ headers: IncomingMessage["headers"]; body: string }>; respond: (n: number) => number }> {
  const got: Array<{ headers: IncomingMessage["headers"]; body: string }> = [];
  const state = { respond: (_n: number) => 200 };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      const status = state.respond(got.length);
      if (status < 0) return; // hang
      res.writeHead(status).end("ok");
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
        server,
        got,
        get respond() {
          return state.respond;
        },
        set respond(f) {
          state.respond = f;
        },
      }),
    ),
  );
}

for (const backend of testBackends()) {
  describe(`webhooks on ${backend.name}`, () => {
    let db: TestDb;
    let rx: Awaited<ReturnType<typeof receiver>>;
    let now = new Date("2026-11-29T08:00:00Z");
    const clock = { now: () => now };
    const logger = { warn: () => undefined };
    const T = "tnt_a";
    const event = (id: string, kind = "margin_below", data: Record<string, unknown> = { customer_id: "cus_1", margin_bps: 1200 }): WebhookEvent => ({ id, kind, occurredAt: now, data });

    beforeAll(async () => {
      db = await backend.open();
      await db.query(webhooksMigrationSql);
      rx = await receiver();
    });
    afterAll(async () => {
      rx?.server.close();
      await db?.dispose();
    });
    afterEach(async () => {
      await db.query("DELETE FROM webhook_deliveries");
      await db.query("DELETE FROM webhook_endpoints");
      rx.got.length = 0;
      rx.respond = () => 200;
    });

    it("creates endpoints idempotently, refuses other content under the same id, bad input by field, and more than the limit", async () => {
      const a = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: ["margin_below", "cost_mix_shift"] }, now);
      expect(a.created).toBe(true);
      expect(a.secret).toMatch(/^whsec_[A-Za-z0-9_-]{32}$/);
      const again = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: ["cost_mix_shift", "margin_below"] }, now);
      expect(again).toMatchObject({ created: false, secret: a.secret });
      await expect(createEndpoint(db, T, { id: "ops", url: `${rx.url}2`, eventKinds: [] }, now)).rejects.toBeInstanceOf(WebhookConflictError);
      const cases: Array<[EndpointInput, string]> = [
        [{ id: "bad id", url: rx.url, eventKinds: [] }, "id"],
        [{ id: "x", url: "ftp://example.com/", eventKinds: [] }, "url"],
        [{ id: "x", url: "not a url", eventKinds: [] }, "url"],
        [{ id: "x", url: "https://user:pw@example.com/", eventKinds: [] }, "url"],
        [{ id: "x", url: rx.url, eventKinds: ["Upper"] }, "event_kinds[0]"],
        [{ id: "x", url: `https://example.com/${"a".repeat(2_100)}`, eventKinds: [] }, "url"],
      ];
      for (const [input, field] of cases) {
        const e = await createEndpoint(db, T, input, now).catch((x: unknown) => x);
        expect(e, JSON.stringify(input).slice(0, 60)).toBeInstanceOf(WebhookInputError);
        expect((e as WebhookInputError).field).toBe(field);
      }
      for (let i = 1; i < 16; i++) await createEndpoint(db, T, { id: `e${i}`, url: rx.url, eventKinds: [] }, now);
      await expect(createEndpoint(db, T, { id: "e16", url: rx.url, eventKinds: [] }, now)).rejects.toMatchObject({ kind: "too_many_endpoints" });
      expect((await listEndpoints(db, T)).length).toBe(16);
      expect(await listEndpoints(db, "tnt_other")).toEqual([]);
    });

    it("fans an event out to the enabled endpoints subscribed to its kind, once per (endpoint, event), in the caller's transaction", async () => {
      await createEndpoint(db, T, { id: "all", url: rx.url, eventKinds: [] }, now);
      await createEndpoint(db, T, { id: "margin", url: rx.url, eventKinds: ["margin_below"] }, now);
      await createEndpoint(db, T, { id: "mix", url: rx.url, eventKinds: ["cost_mix_shift"] }, now);
      await createEndpoint(db, T, { id: "off", url: rx.url, eventKinds: [] }, now);
      await disableEndpoint(db, T, "off", now);
      expect(await enqueueWebhooks(db, T, [event("alrt_1"), event("alrt_2", "credits_expiring")], now)).toBe(3);
      expect(await enqueueWebhooks(db, T, [event("alrt_1")], now)).toBe(0);
      // Rolled back with the caller's transaction: nothing queued.
      await db.transaction(async (tx) => {
        await enqueueWebhooks(tx, T, [event("alrt_3")], now);
        throw new Error("the alert's own write failed");
      }).catch(() => undefined);
      const ds = await listDeliveries(db, T, {});
      expect(ds.map((d) => `${d.endpointId}:${d.eventId}`).sort()).toEqual(["all:alrt_1", "all:alrt_2", "margin:alrt_1"]);
      expect(JSON.parse(ds[0]!.payload)).toMatchObject({ tenant: T, occurred_at: now.toISOString() });
      await expect(enqueueWebhooks(db, T, [event("big", "margin_below", { blob: "x".repeat(70_000) })], now)).rejects.toMatchObject({ field: "events[0].data" });
      await expect(enqueueWebhooks(db, T, [event("k", "Bad Kind")], now)).rejects.toMatchObject({ field: "events[0].kind" });
    });

    it("queues from a service's AFTER INSERT trigger on its alerts through webhook_enqueue(), once per inserted alert", async () => {
      await db.query(`CREATE TABLE IF NOT EXISTS demo_alerts (tenant TEXT, id TEXT, kind TEXT, amount_nanos BIGINT, created_at TIMESTAMPTZ, PRIMARY KEY (tenant, id))`);
      await db.query(`CREATE OR REPLACE FUNCTION demo_alert_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM webhook_enqueue(NEW.tenant, NEW.id, NEW.kind, NEW.created_at, jsonb_build_object('amount_nanos', NEW.amount_nanos::text), NEW.created_at);
          RETURN NULL;
        END $$`);
      await db.query(`DROP TRIGGER IF EXISTS demo_alerts_webhooks ON demo_alerts`);
      await db.query(`CREATE TRIGGER demo_alerts_webhooks AFTER INSERT ON demo_alerts FOR EACH ROW EXECUTE FUNCTION demo_alert_webhooks()`);
      await createEndpoint(db, T, { id: "low", url: rx.url, eventKinds: ["low_balance"] }, now);
      const ins = `INSERT INTO demo_alerts VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`;
      await db.query(ins, [T, "alr_1", "low_balance", "9223372036854775807", now]);
      await db.query(ins, [T, "alr_1", "low_balance", "1", now]); // a replay: no row, no trigger
      await db.query(ins, [T, "alr_2", "credits_expiring", "5", now]); // nobody subscribed
      await db.query(ins, ["tnt_other", "alr_3", "low_balance", "5", now]); // another tenant's
      const ds = await listDeliveries(db, T, {});
      expect(ds.map((d) => d.eventId)).toEqual(["alr_1"]);
      // Money stays exact in the body: a string of nanos, not a JSON number.
      expect(JSON.parse(ds[0]!.payload)).toEqual({ id: "alr_1", kind: "low_balance", tenant: T, occurred_at: now.toISOString(), data: { amount_nanos: "9223372036854775807" } });
    });

    it("delivers signed bodies the receiver can verify, and records them delivered", async () => {
      const { secret } = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: [] }, now);
      await enqueueWebhooks(db, T, [event("alrt_1"), event("alrt_2")], now);
      const d = createWebhookDispatcher({ db, clock, logger });
      expect(await d.runOnce()).toEqual({ delivered: 2, retried: 0, failed: 0 });
      expect(rx.got.map((g) => g.headers["nanobill-event-id"]).sort()).toEqual(["alrt_1", "alrt_2"]);
      for (const g of rx.got) {
        expect(verifyWebhookSignature(secret, g.headers["nanobill-signature"] as string, g.body, Math.floor(now.getTime() / 1000))).toEqual({ ok: true });
        expect(g.headers["content-type"]).toBe("application/json");
        expect(JSON.parse(g.body).data).toEqual({ customer_id: "cus_1", margin_bps: 1200 });
      }
      expect((await listDeliveries(db, T, { state: "delivered" })).length).toBe(2);
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 0, failed: 0 });
    });

    it("retries a failing endpoint with backoff, delivers once it answers 2xx, and gives up after ATTEMPTS_MAX", async () => {
      await createEndpoint(db, T, { id: "flaky", url: rx.url, eventKinds: [] }, now);
      await enqueueWebhooks(db, T, [event("alrt_1")], now);
      const d = createWebhookDispatcher({ db, clock, logger, random: () => 0 });
      rx.respond = (n) => (n <= 2 ? 500 : 204);
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 1, failed: 0 });
      // Not due before its backoff (5 s after attempt 1).
      now = new Date(now.getTime() + 4_000);
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 0, failed: 0 });
      now = new Date(now.getTime() + 1_000);
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 1, failed: 0 });
      const [p] = await listDeliveries(db, T, {});
      expect(p).toMatchObject({ state: "pending", attempts: 2, lastStatus: 500, lastError: "HTTP 500" });
      expect(p!.nextAttemptAt.getTime() - now.getTime()).toBe(10_000);
      now = new Date(now.getTime() + 10_000);
      expect(await d.runOnce()).toEqual({ delivered: 1, retried: 0, failed: 0 });
      expect(rx.got.map((g) => g.headers["nanobill-delivery-attempt"])).toEqual(["1", "2", "3"]);

      await enqueueWebhooks(db, T, [event("alrt_dead")], now);
      rx.respond = () => 503;
      let rounds = 0;
      for (;;) {
        const s = await d.runOnce();
        rounds++;
        if (s.failed === 1) break;
        now = new Date(now.getTime() + 3_600_000);
        expect(rounds).toBeLessThan(ATTEMPTS_MAX + 1);
      }
      expect(rounds).toBe(ATTEMPTS_MAX);
      expect((await listDeliveries(db, T, { eventId: "alrt_dead" }))[0]).toMatchObject({ state: "failed", attempts: ATTEMPTS_MAX, lastError: "HTTP 503" });
    });

    it("times out a hanging endpoint, fails deliveries of a disabled endpoint, and two dispatchers deliver each event once", async () => {
      await createEndpoint(db, T, { id: "slow", url: rx.url, eventKinds: ["slow"] }, now);
      await enqueueWebhooks(db, T, [event("alrt_slow", "slow")], now);
      rx.respond = () => -1;
      const d = createWebhookDispatcher({ db, clock, logger, timeoutMs: 200 });
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 1, failed: 0 });
      expect((await listDeliveries(db, T, {}))[0]!.lastError).toBe("timed out after 200 ms");

      await disableEndpoint(db, T, "slow", now);
      now = new Date(now.getTime() + 3_600_000);
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 0, failed: 1 });
      expect((await listDeliveries(db, T, { state: "failed" }))[0]!.lastError).toBe("endpoint disabled");

      rx.respond = () => 200;
      rx.got.length = 0;
      await createEndpoint(db, T, { id: "ok", url: rx.url, eventKinds: [] }, now);
      await enqueueWebhooks(db, T, Array.from({ length: 40 }, (_, i) => event(`alrt_${i}`)), now);
      // (Default timeouts here: PGlite runs on this thread, so a receiver in this process can be slow.)
      const d1 = createWebhookDispatcher({ db, clock, logger });
      const d2 = createWebhookDispatcher({ db, clock, logger });
      const [a, b] = await Promise.all([d1.runOnce(), d2.runOnce()]);
      expect(a.delivered + b.delivered).toBe(40);
      expect(new Set(rx.got.map((g) => g.headers["nanobill-event-id"])).size).toBe(40);
      expect(rx.got.length).toBe(40);
    });

    it("runs in the background until stopped", async () => {
      await createEndpoint(db, T, { id: "bg", url: rx.url, eventKinds: [] }, now);
      const d = createWebhookDispatcher({ db, clock, logger, intervalMs: 20 });
      d.start();
      await enqueueWebhooks(db, T, [event("alrt_bg")], now);
      for (let i = 0; i < 200 && rx.got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      await d.stop();
      expect(rx.got.map((g) => g.headers["nanobill-event-id"])).toEqual(["alrt_bg"]);
    });
  });
}
