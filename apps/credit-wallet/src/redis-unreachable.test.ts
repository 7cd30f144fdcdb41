// A REDIS_URL that cannot be reached: the service's start fails naming the variable and the
// address, never the password (before: ioredis's "Reached the max retries per request limit" and
// an "Unhandled error event" line per reconnect attempt), and connection errors are logged at most
// once per interval.
import { createServer } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { createLogger, fixedClock } from "@nanobill/service-kit";
import { createCreditWalletService, migrationsDir } from "./index.js";

let db: TestDb;
beforeAll(async () => {
  db = await testBackends()[0]!.open();
  await migrate(db, migrationsDir);
});
afterAll(async () => {
  await db?.dispose();
});

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

it("fails its start naming REDIS_URL and the address (not the password), and logs connection errors sparingly", async () => {
  const port = await closedPort();
  const lines: string[] = [];
  const logger = createLogger({ service: "credit-wallet", sink: (l) => lines.push(l) });
  const w = await createCreditWalletService({
    db,
    logger,
    clock: fixedClock(new Date("2026-11-29T00:00:00Z")),
    clients: { ledger: {} as never },
    config: { redisUrl: `redis://:s3cret-pass@127.0.0.1:${port}/4`, backgroundIntervalMs: 0 },
  });
  try {
    const err = await w.start().then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(new RegExp(`^REDIS_URL: cannot reach Redis at 127\\.0\\.0\\.1:${port}/4: `));
    expect(err?.message).not.toContain("s3cret");
    // Not marked started: a second start() tries (and fails) again instead of doing nothing.
    await expect(w.start()).rejects.toThrow(/^REDIS_URL: cannot reach Redis/);
    await new Promise((r) => setTimeout(r, 1_500)); // several reconnect attempts
    const warnings = lines.filter((l) => l.includes("Redis (REDIS_URL) connection error"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).not.toContain("s3cret");
  } finally {
    await w.stop();
  }
});
