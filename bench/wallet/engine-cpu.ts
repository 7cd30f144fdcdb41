// Credit-wallet engine benchmark without RPC and without the ledger: the Authorize group commit
// alone (coalescer -> engine.authorizeMany -> Redis + PostgreSQL), driven in-process by N
// concurrent callers, with the ledger replaced by a stub that accepts every transfer. Prints
// holds/s, latency and this process's CPU time per hold (the wallet's own cost: on a shared box
// this moves far less than throughput does). Not a pass/fail test.
// Env: DATABASE_URL (required), REDIS_URL, BENCH_SECONDS (default 5), BENCH_CLIENTS (default 64),
// BENCH_WALLETS (default 1: one hot wallet; more: callers spread over that many wallets, all warmed
// first), BENCH_GROUPS_IN_FLIGHT (default 1).
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { CreateAccountResult, CreateTransferResult } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { migrate, openDb } from "@nanobill/db";
import { silentLogger, systemClock } from "@nanobill/service-kit";
import { createCoalescer } from "../../apps/credit-wallet/src/coalescer.js";
import type { AuthorizeInput, AuthorizeOutcome } from "../../apps/credit-wallet/src/engine.js";
import { createCreditWalletService, createRedisRealtime, migrationsDir } from "../../apps/credit-wallet/src/index.js";
import type { LedgerClient } from "../../apps/credit-wallet/src/ledger-port.js";

const url = process.env["DATABASE_URL"];
if (!url) throw new Error("DATABASE_URL is required (real PostgreSQL)");
const REDIS_URL = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379";
const SECONDS = Number(process.env["BENCH_SECONDS"] ?? "5");
const CLIENTS = Number(process.env["BENCH_CLIENTS"] ?? "64");
const WALLETS = Number(process.env["BENCH_WALLETS"] ?? "1");
const IN_FLIGHT = Number(process.env["BENCH_GROUPS_IN_FLIGHT"] ?? "1");
const SCHEMA = "bench_wcpu_" + randomUUID().replaceAll("-", "").slice(0, 8);
const PREFIX = `nbbench:${SCHEMA}:`;
const T = "tnt_bench";

const ledger = {
  createAccounts: async (req: { accounts: unknown[] }) => ({ results: req.accounts.map(() => ({ result: CreateAccountResult.OK })) }),
  createTransfers: async (req: { transfers: unknown[] }) => ({ results: req.transfers.map(() => ({ result: CreateTransferResult.OK })) }),
} as unknown as LedgerClient;

async function main() {
  const db = await openDb({ url: url!, schema: SCHEMA, poolMax: 8 });
  await migrate(db, migrationsDir);
  const realtime = createRedisRealtime({ url: REDIS_URL, prefix: PREFIX });
  const svc = await createCreditWalletService({ db, logger: silentLogger, clock: systemClock, clients: { ledger }, realtime, config: { backgroundIntervalMs: 0 } });
  const engine = svc.engine;
  for (let i = 0; i < WALLETS; i++) {
    const { wallet } = await engine.createWallet(T, { customerId: `cus_${i}`, unit: "USD", id: "", policy: { mode: "hard_stop", negativeLimitNanos: 0n, overageRate: "", overageCurrency: "" } });
    await engine.grant(T, {
      id: `grt_${i}`, walletId: wallet.id, kind: "purchased", amountNanos: 10n ** 17n, costBasis: "1", costBasisCurrency: "USD", priority: 0, effectiveAt: new Date(0), expiresAt: null,
      scope: { chargeIds: [], models: [] }, rollover: null, periodEnd: null, renew: false, invoiceId: "", description: "", expiryGraceMs: null,
    });
  }
  // The same coalescer the service puts in front of unary Authorize.
  const opts = { inFlightMax: IN_FLIGHT, keyOf: (x: AuthorizeInput) => `${x.customerId}\u0000${x.unit}` };
  const q = (createCoalescer as (run: (t: string, xs: AuthorizeInput[]) => Promise<AuthorizeOutcome[]>, max: number, o?: unknown) => { submit(t: string, x: AuthorizeInput): Promise<AuthorizeOutcome> })(
    (t, xs) => engine.authorizeMany(t, xs),
    1_000,
    opts,
  );
  const input = (tag: string, i: number): AuthorizeInput => ({ id: `${tag}_${i}`, customerId: `cus_${i % WALLETS}`, unit: "USD", amountNanos: 1n, ttlMs: 600_000, chargeId: "", model: "" });
  // Warm: every wallet's real-time state loaded, the pool connected.
  await Promise.all(Array.from({ length: WALLETS }, (_, i) => q.submit(T, input("warm", i))));
  const run = async (tag: string) => {
    const lat: number[] = [];
    let n = 0;
    let failed = 0;
    const cpu0 = process.cpuUsage();
    const stats0 = { ...engine.stats };
    const t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (performance.now() < end) {
          const s = performance.now();
          const o = await q.submit(T, input(tag, n++));
          lat.push(performance.now() - s);
          if (o.result !== "ok") failed++;
        }
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    lat.sort((a, b) => a - b);
    const groups = engine.stats.authorizeGroups - stats0.authorizeGroups;
    console.log(
      `${tag}: ${(lat.length / secs).toFixed(0)} holds/s, p50 ${lat[Math.floor(lat.length / 2)]!.toFixed(2)} ms, p99 ${lat[Math.floor(lat.length * 0.99)]!.toFixed(2)} ms, ` +
        `cpu ${((cpu.user + cpu.system) / lat.length).toFixed(0)} µs/hold, ${(lat.length / groups).toFixed(1)} holds/group${failed ? `, failed ${failed}` : ""}`,
    );
  };
  console.log(`engine-only Authorize: ${CLIENTS} callers, ${WALLETS} wallet(s), ${IN_FLIGHT} group(s) in flight, ${SECONDS}s, loadavg ${(await import("node:os")).loadavg().map((x) => x.toFixed(1)).join(" ")}`);
  await run("a");
  await run("b");
  await svc.stop();
  await db.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`);
  await db.close();
  const r = new Redis(REDIS_URL);
  let cursor = "0";
  do {
    const [nx, keys] = await r.scan(cursor, "MATCH", `${PREFIX}*`, "COUNT", 1000);
    cursor = nx;
    if (keys.length) await r.del(...keys);
  } while (cursor !== "0");
  await r.quit();
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
