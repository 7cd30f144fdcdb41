// Replay storm (issue: metering reliability): 200,000 events sent through the SDK with random
// duplicates, whole-batch retries and reordering, while the metering process is SIGKILLed and
// restarted twice. Afterwards every event is stored exactly once and the usage buckets (through
// QueryUsage) equal a recomputation from the events that were sent.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { Aggregation, MeteringService, Window } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { createMeteringClient, type TrackEvent, type TrackResult } from "@nanobill/sdk";
import { closeClientSessions, createClientTransport } from "@nanobill/service-kit";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { prng, seedFromEnv } from "./workload.js";

const DATABASE_URL = process.env.DATABASE_URL || undefined;
/** The storm's size (the issue asks for 200,000). */
const EVENTS = 200_000;
const BATCH = 1_000;
/** Share of extra sends of an already-sent id (a duplicate), and of whole batches sent twice (a retry). */
const DUPLICATE_SHARE = 0.2;
const BATCH_RETRY_SHARE = 0.05;
const CUSTOMERS = 40;
const MODELS = ["small", "medium", "large"] as const;
const KEY = `sk_storm_${randomBytes(12).toString("hex")}`;
const TENANT = "tnt_storm";
const HOUR_MS = 3_600_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The event of id i: its content depends only on i, so every resend is a true duplicate. */
function eventOf(i: number, baseMs: number): TrackEvent {
  return {
    id: `storm_${i}`,
    customerId: `cus_${i % CUSTOMERS}`,
    type: "llm.call",
    timestamp: new Date(baseMs + (i % 7200) * 1000),
    properties: { model: MODELS[i % MODELS.length]!, input_tokens: 1 + ((i * 7919) % 5000) },
  };
}

if (DATABASE_URL === undefined) {
  describe("metering replay storm (needs DATABASE_URL)", () => {
    it("is only allowed to be absent outside CI", () => {
      expect(process.env.CI, "DATABASE_URL must be set when CI=true (the storm runs on real PostgreSQL)").not.toBe("true");
    });
  });
} else {
  const seed = seedFromEnv();
  const schema = `storm_${process.pid}_${randomBytes(3).toString("hex")}`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> | undefined;

  async function start(port: number): Promise<void> {
    const c = spawn(process.execPath, ["--import", "tsx", "apps/metering/src/main.ts"], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        DATABASE_URL,
        METERING_DB_SCHEMA: schema,
        METERING_PORT: String(port),
        METERING_HOST: "127.0.0.1",
        METERING_OTLP_PORT: "-1",
        NANOBILL_API_KEYS: `${TENANT}:admin+ingest+read:${KEY}`,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    child = c;
    exited = new Promise((r) => c.once("exit", () => r()));
    const lines = createInterface({ input: c.stdout! });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("metering did not start in 60 s")), 60_000);
      lines.on("line", (l) => {
        if (l.includes('"metering listening"')) {
          clearTimeout(t);
          resolve();
        }
      });
      c.once("exit", (code) => reject(new Error(`metering exited with ${code} before listening`)));
    });
  }

  async function kill(): Promise<void> {
    child?.kill("SIGKILL");
    await exited;
    child = undefined;
  }

  afterAll(async () => {
    await kill();
    closeClientSessions();
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await c.end();
  });

  describe(`metering replay storm (seed ${seed}; rerun with NANOBILL_SEED=${seed})`, () => {
    it(
      "counts 200,000 events exactly once through duplicates, retries, reordering and two SIGKILLs",
      async () => {
        const rnd = prng(seed);
        const port = await freePort();
        const baseUrl = `http://127.0.0.1:${port}`;
        await start(port);
        const admin = createClient(MeteringService, createClientTransport({ baseUrl, apiKey: KEY }));
        await admin.createMeter({ meter: { id: "tokens", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", groupBy: ["model"] } });

        // The schedule: every id once, plus duplicates of random ids, shuffled (reordering);
        // some whole batches are sent a second time (a client retry after a lost reply).
        const baseMs = Math.floor(Date.now() / HOUR_MS) * HOUR_MS - 3 * HOUR_MS;
        const schedule: number[] = Array.from({ length: EVENTS }, (_, i) => i);
        for (let d = 0; d < EVENTS * DUPLICATE_SHARE; d++) schedule.push(rnd.int(0, EVENTS - 1));
        for (let i = schedule.length - 1; i > 0; i--) {
          const j = rnd.int(0, i);
          [schedule[i], schedule[j]] = [schedule[j]!, schedule[i]!];
        }
        const batches: number[][] = [];
        for (let i = 0; i < schedule.length; i += BATCH) {
          const b = schedule.slice(i, i + BATCH);
          batches.push(b);
          if (rnd.chance(BATCH_RETRY_SHARE)) batches.push(b);
        }
        const killAt = new Set([Math.floor(batches.length / 3), Math.floor((2 * batches.length) / 3)]);

        const client = createMeteringClient({
          baseUrl,
          apiKey: KEY,
          batchSizeMax: BATCH,
          inFlightBatchesMax: 4,
          flushIntervalMs: 5,
          retry: { attemptsMax: 100, backoffMsInitial: 50, backoffMsMax: 1_000 },
        });
        const final = new Map<number, TrackResult>();
        const acceptedIds = new Set<number>();
        let failedThenResent = 0;
        const pending: Array<Promise<void>> = [];
        async function send(i: number): Promise<void> {
          for (;;) {
            const r = await (await client.track(eventOf(i, baseMs))).result;
            if (r.status === "accepted") {
              // A second acceptance of one id would be a double count.
              expect(acceptedIds.has(i), `storm_${i} accepted twice`).toBe(false);
              acceptedIds.add(i);
            }
            if (r.status === "failed") {
              // What a caller does with an event the SDK gave up on: send it again, same id.
              failedThenResent++;
              continue;
            }
            expect(r.status === "accepted" || r.status === "duplicate", `event storm_${i}: ${r.status} ${r.reason ?? ""} ${r.message ?? ""}`).toBe(true);
            final.set(i, r);
            return;
          }
        }
        const restarts: Array<Promise<void>> = [];
        for (const [bi, b] of batches.entries()) {
          if (killAt.has(bi)) {
            // SIGKILL with batches in flight; restart after a pause while the client keeps retrying.
            await kill();
            restarts.push(new Promise((r) => setTimeout(r, 300)).then(() => start(port)));
          }
          for (const i of b) pending.push(send(i));
          if (pending.length > 20_000) await Promise.all(pending.splice(0, pending.length - 10_000));
        }
        await Promise.all(restarts);
        await Promise.all(pending);
        await client.close();

        // Every id answered accepted or duplicate, none accepted twice. (An id may never be
        // answered accepted: its first commit's reply was lost to a kill and the retry found it.)
        expect(final.size).toBe(EVENTS);
        console.log(`storm: ${schedule.length} sends in ${batches.length} batches, ${acceptedIds.size} answered accepted, ${failedThenResent} given up by the SDK and resent`);

        // Stored exactly once.
        const db = new pg.Client({ connectionString: DATABASE_URL });
        await db.connect();
        try {
          const { rows } = await db.query(`SELECT count(*)::int AS n, count(DISTINCT event_id)::int AS d FROM "${schema}".events WHERE tenant = $1`, [TENANT]);
          expect(rows[0]).toEqual({ n: EVENTS, d: EVENTS });
        } finally {
          await db.end();
        }

        // Buckets equal the recomputation from the events sent (per customer and model, per hour).
        const expected = new Map<string, bigint>();
        for (let i = 0; i < EVENTS; i++) {
          const e = eventOf(i, baseMs);
          const hour = Math.floor(e.timestamp!.getTime() / HOUR_MS) * HOUR_MS;
          const k = `${e.customerId}|${String(e.properties!.model)}|${hour}`;
          expected.set(k, (expected.get(k) ?? 0n) + BigInt(e.properties!.input_tokens as number));
        }
        const res = await admin.queryUsage({
          meterId: "tokens",
          startTime: { seconds: BigInt(baseMs / 1000), nanos: 0 },
          endTime: { seconds: BigInt(baseMs / 1000 + 3 * 3600), nanos: 0 },
          window: Window.HOUR,
          groupBy: ["model"],
          groupByCustomer: true,
        });
        const got = new Map<string, bigint>();
        for (const r of res.rows) got.set(`${r.customerId}|${r.group.model}|${Number(r.windowStart!.seconds) * 1000}`, BigInt(r.value));
        expect(got).toEqual(expected);
      },
      600_000,
    );
  });
}
