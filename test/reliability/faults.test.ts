import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { Redis } from "ioredis";
import { startStack, STACK_SERVICES, type Stack } from "../../libs/platform/src/stack.js";
import { auditWhenSettled, formatFindings } from "../../libs/platform/src/auditor.js";
import type { ServiceName } from "../../libs/platform/src/platform.js";
import { auditTenant, runWorkload, seedFromEnv } from "./workload.js";

/**
 * The stack as five OS processes on real PostgreSQL and Redis; the seeded workload runs while each
 * service in turn is SIGKILLed and restarted, and while the wallet's Redis db is flushed. The
 * auditor must still hold and every acknowledged event must be rated exactly once.
 * Redis: a dedicated db index (NANOBILL_FAULTS_REDIS_DB, default 9) so FLUSHDB touches no one else.
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
        env: { RATING_CONSUMER_WAIT_MS: "200", LOG_LEVEL: "warn" },
      });
    }, 150_000);

    afterAll(async () => {
      await stack?.stop();
      const client = new pg.Client({ connectionString: DATABASE_URL });
      await client.connect();
      try {
        const { rows } = await client.query<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", [`${prefix}%`]);
        for (const r of rows) await client.query(`DROP SCHEMA "${r.nspname}" CASCADE`);
      } finally {
        await client.end();
      }
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
        now: new Date(),
        retryMs: 60_000,
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
      const findings = await auditWhenSettled([auditTenant(TENANT, c, w)], { timeoutMs: 45_000 });
      expect(
        findings,
        `seed ${seed} (rerun with NANOBILL_SEED=${seed}); faults: ${log.join(", ")}; ${w.accepted} accepted, ${w.retries} retries:\n${formatFindings(findings)}`,
      ).toEqual([]);
      expect(w.accepted).toBeGreaterThan(0);
    }, 240_000);
  });
}
