// Webhooks on both backends: endpoints (validation, idempotency), the outbox (fan-out by kind,
// idempotent on the event id), and the dispatcher against a real local HTTP receiver (signature,
// retries with backoff on a simulated clock, giving up, timeouts, concurrent dispatchers).
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readdirSync, readFileSync } from "node:fs";
import { testBackends, type Queryable, type TestDb } from "@nanobill/db";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ATTEMPTS_MAX,
  SECRET_REPLAY_WINDOW_MS,
  CLAIM_LEASE_MS,
  DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX,
  DELIVERIES_PER_ROUND_MAX,
  DELIVERY_TIMEOUT_MS,
  claimLeaseMs,
  WebhookConflictError,
  WebhookInputError,
  backoffMs,
  createEndpoint,
  createWebhookDispatcher,
  disableEndpoint,
  enqueueWebhooks,
  jsonbTextBytes,
  listDeliveries,
  listEndpoints,
  signWebhook,
  verifyWebhookSignature,
  webhooksMigrationSql,
  type EndpointInput,
  type WebhookEvent,
} from "./index.js";
import { claimDue, recordAttempt } from "./store.js";

/** The receiver here listens on 127.0.0.1: endpoints and dispatchers aimed at it opt out of the egress policy. */
const PRIVATE = { allowPrivateNetworks: true } as const;

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

  it("sizes a round to fit its claim: waves x timeout + margin", () => {
    expect(claimLeaseMs(DELIVERIES_PER_ROUND_MAX, 8, DELIVERY_TIMEOUT_MS)).toBe(CLAIM_LEASE_MS);
    expect(CLAIM_LEASE_MS).toBe(60_000);
    expect(claimLeaseMs(100, 8, 10_000)).toBe(150_000);
    expect(() => createWebhookDispatcher({ db: {} as Queryable, clock: { now: () => new Date() }, logger: { warn: () => undefined }, inFlightMax: 0 })).toThrow(/inFlightMax/);
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

    /** Rounds until one finds nothing to do; the deliveries it recorded delivered. */
    const drain = async (d: { runOnce(): Promise<{ delivered: number; retried: number; failed: number }> }): Promise<number> => {
      for (let n = 0; ; ) {
        const s = await d.runOnce();
        if (s.delivered + s.retried + s.failed === 0) return n;
        n += s.delivered;
      }
    };

    /**
     * A simulated world of slow endpoints on the fake clock: each POST takes `postMs` (POSTs run
     * concurrently, as they do for real). `fetch` parks a POST; `run` waits until every dispatcher is
     * parked on a POST (no query running), moves the clock to the earliest POST's end, answers it
     * with `status(url)`, and so on until nothing is parked. `hooks` fire once the clock reaches
     * their offset (e.g. a second dispatcher starting). Deterministic: no real timers.
     */
    const slowWorld = (postMs: number, status: (url: string) => number = () => 200) => {
      let busy = 0;
      const q = {
        query: (sql: string, params?: unknown[]) => {
          busy++;
          return db.query(sql, params).finally(() => busy--);
        },
      } as Queryable;
      const parked: Array<{ at: number; answer: () => void }> = [];
      const posts: string[] = [];
      const fetch = ((url: string | URL | Request, init?: RequestInit) => {
        posts.push(`${String(url)} ${(init?.headers as Record<string, string>)["nanobill-event-id"]}`);
        return new Promise<Response>((resolve) => parked.push({ at: now.getTime() + postMs, answer: () => resolve(new Response(null, { status: status(String(url)) })) }));
      }) as typeof globalThis.fetch;
      const settle = async () => {
        for (let idle = 0; idle < 3; ) {
          await new Promise((r) => setImmediate(r));
          idle = busy === 0 ? idle + 1 : 0;
        }
      };
      const run = async (hooks: Array<{ atMs: number; fire: () => void }> = []) => {
        const start = now.getTime();
        for (;;) {
          await settle();
          if (parked.length === 0) return;
          const t = Math.min(...parked.map((p) => p.at));
          const hook = hooks.find((h) => start + h.atMs <= t);
          if (hook) {
            // A hook due first fires alone, and everything it starts settles before the next POST ends.
            if (start + hook.atMs > now.getTime()) now = new Date(start + hook.atMs);
            hooks.splice(hooks.indexOf(hook), 1);
            hook.fire();
            continue;
          }
          if (t > now.getTime()) now = new Date(t);
          for (const p of parked.filter((p) => p.at <= now.getTime())) {
            parked.splice(parked.indexOf(p), 1);
            p.answer();
          }
        }
      };
      return { q, fetch, posts, run };
    };

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
      const a = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: ["margin_below", "cost_mix_shift"] }, now, PRIVATE);
      expect(a.created).toBe(true);
      expect(a.secret).toMatch(/^whsec_[A-Za-z0-9_-]{32}$/);
      const again = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: ["cost_mix_shift", "margin_below"] }, now, PRIVATE);
      expect(again).toMatchObject({ created: false, secret: a.secret });
      // Past the replay window a replay (anyone can copy the visible fields) does not reveal the secret.
      const later = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: ["margin_below", "cost_mix_shift"] }, new Date(now.getTime() + SECRET_REPLAY_WINDOW_MS + 1), PRIVATE);
      expect(later).toMatchObject({ created: false, secret: "" });
      await expect(createEndpoint(db, T, { id: "ops", url: `${rx.url}2`, eventKinds: [] }, now, PRIVATE)).rejects.toBeInstanceOf(WebhookConflictError);
      const cases: Array<[EndpointInput, string]> = [
        [{ id: "bad id", url: rx.url, eventKinds: [] }, "id"],
        [{ id: "x", url: "ftp://example.com/", eventKinds: [] }, "url"],
        [{ id: "x", url: "not a url", eventKinds: [] }, "url"],
        [{ id: "x", url: "https://user:pw@example.com/", eventKinds: [] }, "url"],
        [{ id: "x", url: rx.url, eventKinds: ["Upper"] }, "event_kinds[0]"],
        [{ id: "x", url: `https://example.com/${"a".repeat(2_100)}`, eventKinds: [] }, "url"],
        // Control characters: a NUL reached PostgreSQL (Internal) before they were refused.
        [{ id: "x", url: "https://example.com/a\u0000b", eventKinds: [] }, "url"],
        [{ id: "x", url: rx.url, eventKinds: [], description: "ops\u0000" }, "description"],
        [{ id: "x", url: rx.url, eventKinds: [], description: "line\nbreak" }, "description"],
        [{ id: "x", url: rx.url, eventKinds: [], description: "del\u007f" }, "description"],
      ];
      for (const [input, field] of cases) {
        const e = await createEndpoint(db, T, input, now, PRIVATE).catch((x: unknown) => x);
        expect(e, JSON.stringify(input).slice(0, 60)).toBeInstanceOf(WebhookInputError);
        expect((e as WebhookInputError).field).toBe(field);
      }
      for (let i = 1; i < 16; i++) await createEndpoint(db, T, { id: `e${i}`, url: rx.url, eventKinds: [] }, now, PRIVATE);
      await expect(createEndpoint(db, T, { id: "e16", url: rx.url, eventKinds: [] }, now, PRIVATE)).rejects.toMatchObject({ kind: "too_many_endpoints" });
      expect((await listEndpoints(db, T)).length).toBe(16);
      expect(await listEndpoints(db, "tnt_other")).toEqual([]);
    });

    it("fans an event out to the enabled endpoints subscribed to its kind, once per (endpoint, event), in the caller's transaction", async () => {
      await createEndpoint(db, T, { id: "all", url: rx.url, eventKinds: [] }, now, PRIVATE);
      await createEndpoint(db, T, { id: "margin", url: rx.url, eventKinds: ["margin_below"] }, now, PRIVATE);
      await createEndpoint(db, T, { id: "mix", url: rx.url, eventKinds: ["cost_mix_shift"] }, now, PRIVATE);
      await createEndpoint(db, T, { id: "off", url: rx.url, eventKinds: [] }, now, PRIVATE);
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
      // An id that cannot be a header value could never be POSTed: refused.
      await expect(enqueueWebhooks(db, T, [event("alr_bad\nx")], now)).rejects.toMatchObject({ field: "events[0].id" });
      // Data that fits compact but not as jsonb renders it (a space after each : and ,): refused by
      // name here, not by the database's own check (that was an Internal error).
      const tight = Array.from({ length: 25_000 }, (_, k) => k % 10);
      expect(JSON.stringify({ tight }).length).toBeLessThan(64 * 1024 - 1_024);
      await expect(enqueueWebhooks(db, T, [event("tight", "margin_below", { tight })], now)).rejects.toMatchObject({ field: "events[0].data" });
      expect(jsonbTextBytes('{"a":[1,2],"b":"x,y:z"}')).toBe('{"a": [1, 2], "b": "x,y:z"}'.length);
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
      await createEndpoint(db, T, { id: "low", url: rx.url, eventKinds: ["low_balance"] }, now, PRIVATE);
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
      const { secret } = await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: [] }, now, PRIVATE);
      await enqueueWebhooks(db, T, [event("alrt_1"), event("alrt_2")], now);
      const d = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true });
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

    it("deletes delivered and given-up deliveries past the retention, keeps pending and recent ones", async () => {
      await createEndpoint(db, T, { id: "ops", url: rx.url, eventKinds: [] }, now, PRIVATE);
      await enqueueWebhooks(db, T, [event("old_ok"), event("old_failed"), event("new_ok"), event("pending")], now);
      const day = 24 * 3_600_000;
      const at = (ms: number) => new Date(now.getTime() + ms);
      await db.query("UPDATE webhook_deliveries SET delivered_at = $1 WHERE event_id = 'old_ok'", [at(-31 * day)]);
      await db.query("UPDATE webhook_deliveries SET failed_at = $1 WHERE event_id = 'old_failed'", [at(-31 * day)]);
      await db.query("UPDATE webhook_deliveries SET delivered_at = $1 WHERE event_id = 'new_ok'", [at(-29 * day)]);
      await db.query("UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE event_id = 'pending'", [at(day)]);
      const d = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true });
      expect(await d.purgeOnce()).toBe(2);
      expect((await listDeliveries(db, T, {})).map((x) => x.eventId).sort()).toEqual(["new_ok", "pending"]);
      expect(await d.purgeOnce()).toBe(0);
    });

    it("retries a failing endpoint with backoff, delivers once it answers 2xx, and gives up after ATTEMPTS_MAX", async () => {
      await createEndpoint(db, T, { id: "flaky", url: rx.url, eventKinds: [] }, now, PRIVATE);
      await enqueueWebhooks(db, T, [event("alrt_1")], now);
      const d = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true, random: () => 0 });
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
      await createEndpoint(db, T, { id: "slow", url: rx.url, eventKinds: ["slow"] }, now, PRIVATE);
      await enqueueWebhooks(db, T, [event("alrt_slow", "slow")], now);
      rx.respond = () => -1;
      const d = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true, timeoutMs: 200 });
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 1, failed: 0 });
      expect((await listDeliveries(db, T, {}))[0]!.lastError).toBe("timed out after 200 ms");

      await disableEndpoint(db, T, "slow", now);
      now = new Date(now.getTime() + 3_600_000);
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 0, failed: 1 });
      expect((await listDeliveries(db, T, { state: "failed" }))[0]!.lastError).toBe("endpoint disabled");

      rx.respond = () => 200;
      rx.got.length = 0;
      await createEndpoint(db, T, { id: "ok", url: rx.url, eventKinds: [] }, now, PRIVATE);
      await enqueueWebhooks(db, T, Array.from({ length: 40 }, (_, i) => event(`alrt_${i}`)), now);
      // (Default timeouts here: PGlite runs on this thread, so a receiver in this process can be slow.)
      const d1 = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true });
      const d2 = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true });
      const [a, b] = await Promise.all([drain(d1), drain(d2)]);
      expect(a + b).toBe(40);
      expect(new Set(rx.got.map((g) => g.headers["nanobill-event-id"])).size).toBe(40);
      expect(rx.got.length).toBe(40);
    });

    it("two dispatchers with 10 s POSTs send each of 100 events once and burn no attempts: a round fits its claim", async () => {
      // The reviewer's case: 100 deliveries, every POST 10 s, a second dispatcher joins at 70 s.
      // Before the fix one round claimed 100 rows for 60 s and 44 were POSTed twice.
      const tenants = Array.from({ length: 10 }, (_, i) => `tnt_s${i}`);
      for (const t of tenants) {
        for (const ep of ["a", "b"]) await createEndpoint(db, t, { id: ep, url: `https://${t}.example/${ep}`, eventKinds: [] }, now);
        await enqueueWebhooks(db, t, Array.from({ length: 5 }, (_, i) => event(`alrt_${i}`)), now);
      }
      const w = slowWorld(DELIVERY_TIMEOUT_MS);
      const warnings: string[] = [];
      const log = { warn: (m: string) => void warnings.push(m) };
      const d1 = createWebhookDispatcher({ db: w.q, clock, logger: log, fetch: w.fetch });
      const d2 = createWebhookDispatcher({ db: w.q, clock, logger: log, fetch: w.fetch });
      const runs: Array<Promise<number>> = [drain(d1)];
      await w.run([{ atMs: 70_000, fire: () => void runs.push(drain(d2)) }]);
      expect(runs.length).toBe(2);
      expect((await Promise.all(runs)).reduce((a, b) => a + b)).toBe(100);
      expect(w.posts.length).toBe(100);
      expect(new Set(w.posts).size).toBe(100);
      expect(warnings).toEqual([]);
      const all = (await Promise.all(tenants.map((t) => listDeliveries(db, t, {})))).flat();
      expect(all.length).toBe(100);
      expect(all.every((d) => d.state === "delivered" && d.attempts === 1)).toBe(true);
    });

    it("skips a claimed delivery its claim no longer covers (left for the next claim, not recorded)", async () => {
      await createEndpoint(db, T, { id: "stall", url: "https://stall.example/hook", eventKinds: [] }, now);
      await enqueueWebhooks(db, T, Array.from({ length: 4 }, (_, i) => event(`alrt_${i}`)), now);
      // Lease 4 x 10 s + 20 s = 60 s; each POST here takes 26 s (a stalled process, not the timeout):
      // the third would start at 52 s and could run (10 s timeout) to 62 s, past its claim.
      const w = slowWorld(26_000);
      const d = createWebhookDispatcher({ db: w.q, clock, logger, fetch: w.fetch, perRoundMax: 4, inFlightMax: 1, timeoutMs: 10_000 });
      expect(d.leaseMs).toBe(60_000);
      const claimedAt = now.getTime();
      const round = d.runOnce();
      await w.run();
      expect(await round).toEqual({ delivered: 2, retried: 0, failed: 0 });
      expect(w.posts).toEqual(["https://stall.example/hook alrt_0", "https://stall.example/hook alrt_1"]);
      const left = (await listDeliveries(db, T, { state: "pending" })).sort((a, b) => (a.seq < b.seq ? -1 : 1));
      expect(left.map((x) => [x.eventId, x.attempts, x.lastError, x.nextAttemptAt.getTime() - claimedAt])).toEqual([
        ["alrt_2", 1, "", 60_000],
        ["alrt_3", 1, "", 60_000],
      ]);
      // Once the claim runs out, the next round sends them.
      now = new Date(claimedAt + 60_000);
      const again = d.runOnce();
      await w.run();
      expect(await again).toEqual({ delivered: 2, retried: 0, failed: 0 });
      expect(w.posts.length).toBe(4);
    });

    it("ignores the outcome of a dispatcher whose claim another dispatcher took over", async () => {
      await createEndpoint(db, T, { id: "fence", url: "https://fence.example/hook", eventKinds: [] }, now);
      await enqueueWebhooks(db, T, [event("alrt_f")], now);
      // Store level: claim 1, its lease runs out, claim 2; claim 1's outcome is refused, claim 2's lands.
      const [c1] = await claimDue(db, now, 10, 30_000);
      now = new Date(now.getTime() + 31_000);
      const [c2] = await claimDue(db, now, 10, 30_000);
      expect([c1!.attempt, c2!.attempt]).toEqual([1, 2]);
      expect(await recordAttempt(db, c1!, { delivered: true, status: 200, error: "", now, retryAt: null })).toBe(false);
      expect((await listDeliveries(db, T, {}))[0]).toMatchObject({ state: "pending", attempts: 2 });
      const retryAt = new Date(now.getTime() + 20_000);
      expect(await recordAttempt(db, c2!, { delivered: false, status: 500, error: "HTTP 500", now, retryAt })).toBe(true);
      const stale = await recordAttempt(db, c1!, { delivered: false, status: 502, error: "HTTP 502", now, retryAt: new Date(now.getTime() + 5_000) });
      expect(stale).toBe(false);
      expect((await listDeliveries(db, T, {}))[0]).toMatchObject({ state: "pending", attempts: 2, lastStatus: 500, nextAttemptAt: retryAt });

      // Dispatcher level: A's POST stalls past its claim; B re-claims, gets a 500 and schedules a
      // retry; A's late 200 does not overwrite it.
      now = new Date(retryAt.getTime());
      let bRound: Promise<unknown> | undefined;
      const warnings: string[] = [];
      const w = slowWorld(40_000, () => 200);
      const a = createWebhookDispatcher({ db: w.q, clock, logger: { warn: (m: string) => void warnings.push(m) }, fetch: w.fetch, perRoundMax: 1, inFlightMax: 1, random: () => 0 });
      const b = createWebhookDispatcher({ db: w.q, clock, logger, fetch: async () => new Response(null, { status: 500 }), perRoundMax: 1, inFlightMax: 1, random: () => 0 });
      expect(a.leaseMs).toBe(30_000);
      const aRound = a.runOnce();
      // A's claim runs out at 30 s; B claims at 35 s and records its 500 before A's POST ends at 40 s.
      await w.run([{ atMs: 35_000, fire: () => void (bRound = b.runOnce()) }]);
      expect(await bRound).toEqual({ delivered: 0, retried: 1, failed: 0 });
      expect(await aRound).toEqual({ delivered: 0, retried: 0, failed: 0 });
      expect(warnings).toEqual(["webhook attempt not recorded: its claim was taken over"]);
      expect((await listDeliveries(db, T, {}))[0]).toMatchObject({ state: "pending", attempts: 4, lastStatus: 500, nextAttemptAt: new Date(retryAt.getTime() + 35_000 + backoffMs(4, 5_000, 3_600_000, 0)) });
    });

    it("caps one endpoint's share of a round: a dead endpoint's backlog does not hold back another tenant", async () => {
      await createEndpoint(db, "tnt_dead", { id: "dead", url: "https://dead.example/hook", eventKinds: [] }, now);
      await createEndpoint(db, "tnt_live", { id: "live", url: "https://live.example/hook", eventKinds: [] }, now);
      // 60 deliveries to the dead endpoint, all due before the live tenant's one.
      await enqueueWebhooks(db, "tnt_dead", Array.from({ length: 60 }, (_, i) => event(`alrt_${i}`)), now);
      now = new Date(now.getTime() + 1_000);
      await enqueueWebhooks(db, "tnt_live", [event("alrt_live")], now);
      const w = slowWorld(DELIVERY_TIMEOUT_MS, (url) => (url.includes("dead") ? 504 : 200));
      const d = createWebhookDispatcher({ db: w.q, clock, logger, fetch: w.fetch });
      const round = d.runOnce();
      await w.run();
      expect(await round).toEqual({ delivered: 1, retried: DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX, failed: 0 });
      expect(w.posts.filter((p) => p.includes("dead")).length).toBe(DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX);
      expect(w.posts).toContain("https://live.example/hook alrt_live");
      expect((await listDeliveries(db, "tnt_live", {}))[0]).toMatchObject({ state: "delivered", attempts: 1 });
      // Claimed round robin: the live endpoint's first delivery goes out in the first wave.
      expect(w.posts.indexOf("https://live.example/hook alrt_live")).toBeLessThan(8);
    });

    it("with the default policy refuses loopback, metadata and IPv4-mapped loopback URLs at creation, by field url", async () => {
      for (const url of [rx.url, "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:8080/hook", "http://localhost./hook", "http://0x7f000001/hook"]) {
        const e = await createEndpoint(db, T, { id: "x", url, eventKinds: [] }, now).catch((x: unknown) => x);
        expect(e, url).toBeInstanceOf(WebhookInputError);
        expect((e as WebhookInputError).field).toBe("url");
      }
      expect(await listEndpoints(db, T)).toEqual([]);
      expect((await createEndpoint(db, T, { id: "public", url: "https://hooks.example.com/x", eventKinds: [] }, now)).created).toBe(true);
    });

    it("with the default policy refuses at delivery a host that is or resolves to loopback: recorded, retried, nothing reaches the receiver", async () => {
      const port = new URL(rx.url).port;
      // Created with the policy off (or its DNS changed after creation): the dispatcher still refuses.
      await createEndpoint(db, T, { id: "literal", url: rx.url, eventKinds: ["a"] }, now, PRIVATE);
      await createEndpoint(db, T, { id: "localhost", url: `http://localhost:${port}/hook`, eventKinds: ["b"] }, now, PRIVATE);
      await createEndpoint(db, T, { id: "rebound", url: `http://hooks.tenant.example:${port}/hook`, eventKinds: ["c"] }, now);
      await enqueueWebhooks(db, T, [event("alrt_a", "a"), event("alrt_b", "b"), event("alrt_c", "c")], now);
      // hooks.tenant.example: one public and one loopback record (a rebinding setup) -> refused as a whole.
      const asked: string[] = [];
      const resolveHost = async (host: string) => {
        asked.push(host);
        return host === "hooks.tenant.example" ? [{ address: "93.184.216.34", family: 4 }, { address: "127.0.0.1", family: 4 }] : [{ address: "127.0.0.1", family: 4 }];
      };
      const d = createWebhookDispatcher({ db, clock, logger, random: () => 0, resolveHost });
      expect(await d.runOnce()).toEqual({ delivered: 0, retried: 3, failed: 0 });
      expect(rx.got).toEqual([]);
      const errors = Object.fromEntries((await listDeliveries(db, T, {})).map((x) => [x.endpointId, [x.state, x.attempts, x.lastStatus, x.lastError]]));
      expect(errors).toEqual({
        literal: ["pending", 1, 0, "refused: 127.0.0.1 is not a public address (webhook egress policy)"],
        localhost: ["pending", 1, 0, "refused: localhost does not resolve to a public address (webhook egress policy)"],
        rebound: ["pending", 1, 0, "refused: hooks.tenant.example does not resolve to a public address (webhook egress policy)"],
      });
      expect(asked.sort()).toEqual(["hooks.tenant.example", "localhost"]);
      // The system resolver too: "localhost" is refused whichever loopback address it answers first.
      const real = createWebhookDispatcher({ db, clock, logger, random: () => 0 });
      now = new Date(now.getTime() + 5_000);
      expect(await real.runOnce()).toEqual({ delivered: 0, retried: 3, failed: 0 });
      expect(rx.got).toEqual([]);
      const [viaDns] = await listDeliveries(db, T, { endpointId: "localhost" });
      expect(viaDns!.lastError).toMatch(/^refused: localhost does not resolve to a public address \(webhook egress policy\)$/);
    });

    it("connects to the address its lookup checked: a name resolved by the injected resolver reaches the receiver when private networks are allowed", async () => {
      const port = new URL(rx.url).port;
      await createEndpoint(db, T, { id: "named", url: `http://hooks.tenant.example:${port}/hook`, eventKinds: [] }, now);
      await enqueueWebhooks(db, T, [event("alrt_n")], now);
      const asked: string[] = [];
      const resolveHost = async (host: string) => (asked.push(host), [{ address: "127.0.0.1", family: 4 }]);
      const d = createWebhookDispatcher({ db, clock, logger, resolveHost, allowPrivateNetworks: true });
      expect(await d.runOnce()).toEqual({ delivered: 1, retried: 0, failed: 0 });
      expect(asked).toEqual(["hooks.tenant.example"]);
      expect(rx.got.map((g) => [g.headers.host, g.headers["nanobill-event-id"]])).toEqual([[`hooks.tenant.example:${port}`, "alrt_n"]]);
    });

    it("runs in the background until stopped", async () => {
      await createEndpoint(db, T, { id: "bg", url: rx.url, eventKinds: [] }, now, PRIVATE);
      const d = createWebhookDispatcher({ db, clock, logger, allowPrivateNetworks: true, intervalMs: 20 });
      d.start();
      await enqueueWebhooks(db, T, [event("alrt_bg")], now);
      for (let i = 0; i < 200 && rx.got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      await d.stop();
      expect(rx.got.map((g) => g.headers["nanobill-event-id"])).toEqual(["alrt_bg"]);
    });
  });
}
