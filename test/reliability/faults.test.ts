import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { dropSchemasWithPrefix } from "@nanobill/db";
import { FILE_CLOCK_REREAD_MS } from "@nanobill/service-kit";
import { Redis } from "ioredis";
import { startStack, STACK_SERVICES, type Stack } from "../../libs/platform/src/stack.js";
import { auditWhenSettled, formatFindings } from "../../libs/platform/src/auditor.js";
import type { ServiceName } from "../../libs/platform/src/platform.js";
import { auditTenant, prng, runWorkload, seedFromEnv, type SimClock } from "./workload.js";

/** Connection cuts during the PostgreSQL fault run (the background cutter stops at this many). */
const PG_CUTS_MAX = 25;
/** Pause between two background cuts: seeded, in [min, max] ms. */
const PG_CUT_GAP_MS_MIN = 100;
const PG_CUT_GAP_MS_MAX = 600;
/** Every this many batches the workload itself waits for a cut before sending the next one. */
const PG_CUT_EVERY_BATCHES = 3;

/** True while the process exists (signal 0 checks without signalling). */
function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The stack as five OS processes on real PostgreSQL and Redis; the seeded workload runs while each
 * service in turn is SIGKILLed and restarted, and while the wallet's Redis db is flushed; then
 * again while every PostgreSQL connection of the stack is cut (pg_terminate_backend) over and
 * over. The auditor must still hold and every acknowledged event must be rated exactly once.
 * Redis: a dedicated db index (NANOBILL_FAULTS_REDIS_DB, default 9) so FLUSHDB touches no one else.
 * PostgreSQL: only the stack's sessions are cut (application_name `nanobill:<schema>` of its own
 * schemas, `Stack.terminateDbSessions`), so other users of the database are untouched.
 */
const DATABASE_URL = process.env.DATABASE_URL || undefined;
const REDIS_URL = process.env.REDIS_URL || undefined;
const enabled = DATABASE_URL !== undefined && REDIS_URL !== undefined;
const TENANT = "tnt_faults";

function dedicatedRedisUrl(url: string): string {
  const u = new URL(url);
  u.pathname = `/${process.env.NANOBILL_FAULTS_REDIS_DB ?? "9"}`;
  return u.toString();
}

if (!enabled) {
  describe("faults (needs DATABASE_URL and REDIS_URL)", () => {
    it("is only allowed to be absent outside CI", () => {
      expect(process.env.CI, "DATABASE_URL and REDIS_URL must be set when CI=true (the fault suite runs on real PostgreSQL and Redis)").not.toBe("true");
    });
  });
} else {
  const seed = seedFromEnv();
  const prefix = `faults_${process.pid}_${randomBytes(3).toString("hex")}_`;
  const redisUrl = dedicatedRedisUrl(REDIS_URL!);
  const logDir = join(tmpdir(), `nanobill-${prefix}logs`);

  // One clock for every process of the stack: the system clock plus the offset in this file
  // (service-kit clockFromEnv), so the workload can move the whole stack past a period end.
  const clockFile = join(tmpdir(), `nanobill-${prefix}clock`);
  writeFileSync(clockFile, "0");
  let offsetMs = 0;
  const stackClock: SimClock = {
    now: () => new Date(Date.now() + offsetMs),
    set(d: Date) {
      offsetMs = Math.max(offsetMs, d.getTime() - Date.now());
      writeFileSync(clockFile, String(offsetMs));
      // every process re-reads the file within FILE_CLOCK_REREAD_MS: wait that long (and a margin)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, FILE_CLOCK_REREAD_MS * 3);
    },
  };

  describe(`faults on the multi-process stack (seed ${seed}, logs ${logDir})`, () => {
    let stack: Stack;
    const key = `nbk_faults_${randomBytes(16).toString("hex")}`;

    beforeAll(async () => {
      stack = await startStack({
        databaseUrl: DATABASE_URL!,
        redisUrl,
        redisPrefix: `nb:${prefix}wallet:`,
        schemaPrefix: prefix,
        apiKeys: [{ tenant: TENANT, scopes: ["admin"], key }],
        logDir,
        env: { RATING_CONSUMER_WAIT_MS: "200", NANOBILL_LOG_LEVEL: "warn", NANOBILL_TEST_CLOCK_FILE: clockFile },
      });
    }, 150_000);

    afterAll(async () => {
      await stack?.stop();
      await dropSchemasWithPrefix(DATABASE_URL, prefix);
      const redis = new Redis(redisUrl);
      try {
        let cursor = "0";
        do {
          const [next, keys] = await redis.scan(cursor, "MATCH", `nb:${prefix}*`, "COUNT", 1000);
          if (keys.length > 0) await redis.del(...keys);
          cursor = next;
        } while (cursor !== "0");
      } finally {
        redis.disconnect();
      }
    }, 60_000);

    it("loses nothing acknowledged and keeps the books while each service is SIGKILLed and Redis is flushed", async () => {
      const c = stack.clients(key);
      const restarts: Promise<void>[] = [];
      const faultAt = new Map<number, ServiceName | "redis">();
      STACK_SERVICES.forEach((s, i) => faultAt.set(2 + i * 3, s));
      faultAt.set(2 + STACK_SERVICES.length * 3, "redis");
      const log: string[] = [];
      const w = await runWorkload(c, {
        seed,
        runId: `f${seed.toString(36)}`,
        customers: 3,
        batches: 4 + STACK_SERVICES.length * 3,
        batchEventsMax: 30,
        holds: 8,
        now: stackClock.now(),
        retryMs: 60_000,
        // billing periods too: the stack's clock is moved past the period end and periods are closed
        // (concurrent duplicate closes, finalize, pay) while services are being killed
        periods: { clock: stackClock, count: 1, closeShare: 0.6, finalizeShare: 0.7, paidShare: 0.4, lateShare: 0.25 },
        async between(b) {
          const fault = faultAt.get(b);
          if (fault === undefined) return;
          // wait for the previous restart so one service at a time is down
          await Promise.all(restarts);
          if (fault === "redis") {
            const redis = new Redis(redisUrl);
            await redis.flushdb();
            redis.disconnect();
            log.push(`batch ${b}: FLUSHDB ${redisUrl}`);
            return;
          }
          await stack.kill(fault, "SIGKILL");
          log.push(`batch ${b}: SIGKILL ${fault}`);
          restarts.push(stack.restart(fault));
        },
      });
      await Promise.all(restarts);
      // the periods really were closed through the killings (invoices exist for the auditor to tie)
      expect(w.customers.flatMap((k) => k.closes ?? []).length, `seed ${seed}: no period was closed`).toBeGreaterThan(0);
      const findings = await auditWhenSettled([auditTenant(TENANT, c, w)], { timeoutMs: 45_000 });
      expect(
        findings,
        `seed ${seed} (rerun with NANOBILL_SEED=${seed}); faults: ${log.join(", ")}; ${w.accepted} accepted, ${w.retries} retries:\n${formatFindings(findings)}`,
      ).toEqual([]);
      expect(w.accepted).toBeGreaterThan(0);
    }, 240_000);

    it("cuts only the stack's own PostgreSQL sessions", async () => {
      // a bystander session on the same database, named like a Nanobill service of another stack
      const bystander = new pg.Client({ connectionString: DATABASE_URL, application_name: `nanobill:${prefix}x_not_this_stack` });
      await bystander.connect();
      try {
        const n = await stack.terminateDbSessions();
        expect(n, "the services hold pooled connections, so a cut ends some").toBeGreaterThan(0);
        const { rows } = await bystander.query<{ one: number }>("SELECT 1 AS one");
        expect(rows[0]!.one).toBe(1);
      } finally {
        await bystander.end().catch(() => undefined);
      }
    }, 30_000);

    it("loses nothing acknowledged and keeps the books while every PostgreSQL connection of the stack is cut, again and again", async () => {
      const c = stack.clients(key);
      const r = prng((seed ^ 0x5bd1e995) >>> 0);
      const pidsBefore = STACK_SERVICES.map((s) => stack.pid(s));
      const t0 = Date.now();
      const log: string[] = [];
      let terminated = 0;
      const cut = async (why: string): Promise<void> => {
        const n = await stack.terminateDbSessions();
        terminated += n;
        log.push(`${Date.now() - t0} ms ${why}: ${n} sessions`);
      };
      // cuts at random moments (mid-transaction, mid-COPY, idle pool connections), from the first
      // batch on: the set-up (customers, plans, grants) runs uncut, because workload.ts draws a
      // grant's kind and priority inside its retried closure, so a retried Grant would differ.
      let running = true;
      let cutter: Promise<void> | undefined;
      const startCutter = (): Promise<void> =>
        (async () => {
          for (let i = 0; running && i < PG_CUTS_MAX; i++) {
            await new Promise((res) => setTimeout(res, r.int(PG_CUT_GAP_MS_MIN, PG_CUT_GAP_MS_MAX)));
            if (running) await cut("background");
          }
        })();
      let w: Awaited<ReturnType<typeof runWorkload>>;
      try {
        w = await runWorkload(c, {
          seed,
          runId: `p${seed.toString(36)}`,
          customers: 3,
          batches: 30,
          batchEventsMax: 30,
          holds: 12,
          now: stackClock.now(),
          retryMs: 60_000,
          // ... and at fixed points of the workload, so every run has some whatever the timing
          async between(b) {
            cutter ??= startCutter();
            if (b > 0 && b % PG_CUT_EVERY_BATCHES === 0) await cut(`before batch ${b}`);
          },
        });
      } catch (e) {
        const dead = STACK_SERVICES.filter((s) => !alive(stack.pid(s)));
        throw new Error(`workload failed (seed ${seed}; cuts: ${log.join(", ")}; processes gone: ${dead.join(", ") || "none"}, see the logs): ${String(e)}`, { cause: e });
      } finally {
        running = false;
        await cutter;
      }
      // once more while rating, the wallet outbox and the ledger drain what was accepted
      await cut("after the workload");
      const findings = await auditWhenSettled([auditTenant(TENANT, c, w)], { timeoutMs: 60_000 });
      expect(
        findings,
        `seed ${seed} (rerun with NANOBILL_SEED=${seed}); cuts: ${log.join(", ")}; ${w.accepted} accepted, ${w.retries} retries:\n${formatFindings(findings)}`,
      ).toEqual([]);
      expect(w.accepted).toBeGreaterThan(0);
      expect(terminated, `cuts: ${log.join(", ")}`).toBeGreaterThan(0);
      console.info(`PostgreSQL cuts: ${log.length} cuts, ${terminated} sessions ended; ${w.accepted} events accepted, ${w.retries} client retries`);
      // no service died of a lost connection: the same processes still run and answer
      expect(STACK_SERVICES.map((s) => stack.pid(s))).toEqual(pidsBefore);
      for (const s of STACK_SERVICES) expect(alive(stack.pid(s)), `${s} (pid ${stack.pid(s)}) is still running`).toBe(true);
    }, 240_000);
  });
}