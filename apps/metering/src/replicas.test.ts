// Two metering replicas on one schema: an event committed by one wakes a ReadEvents long poll
// waiting on the other at once (NOTIFY at commit, LISTEN in start()), not after the fallback poll.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { EventSchema, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { testBackends } from "@nanobill/db";
import { createAuthInterceptor, fixedClock, silentLogger } from "@nanobill/service-kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMeteringService, type MeteringServiceHandle } from "./index.js";
import { LISTEN_RETRY_MS } from "./limits.js";
import { authenticator, KEYS, openHarness, T0, type Harness } from "./test-support.js";

const POLL_MS = 20_000;

for (const backend of testBackends()) {
  describe(`metering replicas (${backend.name})`, () => {
    let a: Harness;
    let b: MeteringServiceHandle;
    beforeAll(async () => {
      a = await openHarness(await backend.open());
      // Replica B: its own service (own commit signal), a poll interval far above the test's wait.
      b = await createMeteringService({ db: a.db, logger: silentLogger, clock: fixedClock(T0), config: { backfillIntervalMs: 0, readPollIntervalMs: POLL_MS } });
      await b.start();
    });
    afterAll(async () => {
      await b?.stop();
      await a?.close();
    });

    it("wakes a long poll on the other replica at once when an event commits", async () => {
      const headers: Interceptor = (next) => (req) => {
        req.header.set("authorization", `Bearer ${KEYS.internal}`);
        return next(req);
      };
      const onB = createClient(MeteringService, createRouterTransport(b.routes, { router: { interceptors: [createAuthInterceptor(authenticator)] }, transport: { interceptors: [headers] } }));
      const head = await onB.readEvents({ afterSequence: 0n, maxEvents: 10_000 });
      const started = Date.now();
      const waiting = onB.readEvents({ afterSequence: head.lastSequence, waitMs: 15_000 });
      await new Promise((r) => setTimeout(r, 50));
      await a.client(KEYS.adminA).ingestEvents({
        events: [create(EventSchema, { id: "evt_replica_1", customerId: "cus_1", type: "llm.call", timestamp: timestampFromDate(new Date(T0.getTime() - 60_000)) })],
      });
      const got = await waiting;
      expect(got.events.map((e) => e.event!.id)).toEqual(["evt_replica_1"]);
      // Without the notification B would answer after POLL_MS (or the 15 s wait).
      expect(Date.now() - started).toBeLessThan(POLL_MS / 4);
    });

    it("retries a LISTEN that could not start (the database away at start-up) until it works", async () => {
      let refused = 0;
      // The same Db, except that its first listen() fails as a cut connection would.
      const flaky = new Proxy(a.db, {
        get(target, p, recv) {
          if (p === "listen")
            return (channel: string, cb: (payload: string) => void) => {
              if (refused++ === 0) return Promise.reject(new Error("connection refused"));
              return target.listen(channel, cb);
            };
          const v = Reflect.get(target, p, recv);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const c = await createMeteringService({ db: flaky, logger: silentLogger, clock: fixedClock(T0), config: { backfillIntervalMs: 0, readPollIntervalMs: POLL_MS } });
      try {
        await c.start();
        expect(refused).toBe(1);
        const headers: Interceptor = (next) => (req) => {
          req.header.set("authorization", `Bearer ${KEYS.internal}`);
          return next(req);
        };
        const onC = createClient(MeteringService, createRouterTransport(c.routes, { router: { interceptors: [createAuthInterceptor(authenticator)] }, transport: { interceptors: [headers] } }));
        // After the retry (LISTEN_RETRY_MS) the listen is up: a commit elsewhere wakes a long poll at once.
        await new Promise((r) => setTimeout(r, LISTEN_RETRY_MS + 500));
        expect(refused).toBe(2);
        const head = await onC.readEvents({ afterSequence: 0n, maxEvents: 10_000 });
        const started = Date.now();
        const waiting = onC.readEvents({ afterSequence: head.lastSequence, waitMs: 15_000 });
        await new Promise((r) => setTimeout(r, 50));
        await a.client(KEYS.adminA).ingestEvents({
          events: [create(EventSchema, { id: "evt_replica_2", customerId: "cus_1", type: "llm.call", timestamp: timestampFromDate(new Date(T0.getTime() - 60_000)) })],
        });
        expect((await waiting).events.map((e) => e.event!.id)).toEqual(["evt_replica_2"]);
        expect(Date.now() - started).toBeLessThan(POLL_MS / 4);
      } finally {
        await c.stop();
      }
    }, 30_000);
  });
}
