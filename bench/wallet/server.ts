// Benchmark server process: the ledger and the credit wallet (real PostgreSQL, real Redis), each on
// its own h2c port in this process (the wallet calls the ledger over gRPC like in production), plus
// the service-kit echo RPC on the wallet's port. Prints one JSON line {"wallet": url, "ledger": url}
// when listening. Env: DATABASE_URL, REDIS_URL, BENCH_SCHEMA, BENCH_API_KEY, BENCH_REDIS_PREFIX.
import { createClient } from "@connectrpc/connect";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { migrate, openDb } from "@nanobill/db";
import { createApiKeyAuthenticator, createClientTransport, onShutdown, runMain, silentLogger, startServer, systemClock } from "@nanobill/service-kit";
import { LEDGER_SERVER_LIMITS, createLedgerService, migrationsDir as ledgerMigrations } from "../../apps/ledger/src/index.js";
import { WALLET_SERVER_LIMITS, createCreditWalletService, migrationsDir } from "../../apps/credit-wallet/src/index.js";
import { echoRoutes } from "../../libs/service-kit/src/test-echo.js";

runMain(async () => {
  const url = process.env["DATABASE_URL"];
  const schema = process.env["BENCH_SCHEMA"];
  const key = process.env["BENCH_API_KEY"];
  const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379";
  const prefix = process.env["BENCH_REDIS_PREFIX"] ?? "nbbench:wallet:";
  if (!url || !schema || !key) throw new Error("DATABASE_URL, BENCH_SCHEMA and BENCH_API_KEY are required");
  const authenticator = createApiKeyAuthenticator([
    { tenant: "tnt_bench", scopes: ["admin"], key },
    { tenant: "*", scopes: ["internal"], key: key + "_internal" },
  ]);

  const ledgerDb = await openDb({ url, schema: schema + "_ledger", poolMax: 6 });
  onShutdown(() => ledgerDb.close());
  await migrate(ledgerDb, ledgerMigrations);
  const ledger = await createLedgerService({ db: ledgerDb, logger: silentLogger, clock: systemClock });
  onShutdown(() => ledger.stop());
  const ledgerServer = await startServer({ name: "ledger-bench", host: "127.0.0.1", port: 0, routes: ledger.routes, authenticator, logger: silentLogger, limits: LEDGER_SERVER_LIMITS });
  onShutdown(() => ledgerServer.close());

  const db = await openDb({ url, schema: schema + "_wallet", poolMax: 8 });
  onShutdown(() => db.close());
  await migrate(db, migrationsDir);
  const ledgerClient = createClient(LedgerService, createClientTransport({ baseUrl: ledgerServer.url, apiKey: key + "_internal" }));
  const wallet = await createCreditWalletService({ db, logger: silentLogger, clock: systemClock, clients: { ledger: ledgerClient }, config: { redisUrl, redisPrefix: prefix },
    // BENCH_GROUPS_IN_FLIGHT: Authorize group commits in flight per tenant (default: the service's).
    authorizeGroupsInFlight: process.env["BENCH_GROUPS_IN_FLIGHT"] ? Number(process.env["BENCH_GROUPS_IN_FLIGHT"]) : undefined,
  });
  onShutdown(() => wallet.stop());
  await wallet.start();
  const echo = echoRoutes();
  const server = await startServer({
    name: "wallet-bench",
    host: "127.0.0.1",
    port: 0,
    routes: (r) => {
      wallet.routes(r);
      echo(r);
    },
    authenticator,
    logger: silentLogger,
    limits: WALLET_SERVER_LIMITS,
  });
  onShutdown(() => server.close());
  process.stdout.write(JSON.stringify({ wallet: server.url, ledger: ledgerServer.url }) + "\n");
  // SIGUSR2: one JSON line with this process's CPU time (µs), event-loop utilization and the
  // wallet's group-commit counters (the client takes one before and after each scenario).
  process.on("SIGUSR2", () => {
    const elu = performance.eventLoopUtilization();
    process.stdout.write(JSON.stringify({ cpu: process.cpuUsage(), elu: { idle: elu.idle, active: elu.active }, stats: wallet.engine.stats }) + "\n");
  });
});
