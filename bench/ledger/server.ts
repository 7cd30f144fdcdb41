// Benchmark server process: the ledger service (real PostgreSQL, group commit) plus the
// service-kit echo RPC on one h2c port, so the client (bench/ledger/main.ts) runs in another
// process. Prints one JSON line {"url": ...} when listening. Env: DATABASE_URL, BENCH_SCHEMA,
// BENCH_API_KEY, LEDGER_PORT (0 = any; the ledger's own variable, docs/deployment.md "Environment").
import { migrate, openDb } from "@nanobill/db";
import { createApiKeyAuthenticator, runMain, onShutdown, silentLogger, startServer, systemClock, TENANT_REQUESTS_PER_SECOND_MAX } from "@nanobill/service-kit";
import { LEDGER_SERVER_LIMITS, createLedgerService, migrationsDir } from "../../apps/ledger/src/index.js";
import { echoRoutes } from "../../libs/service-kit/src/test-echo.js";

runMain(async () => {
  const url = process.env["DATABASE_URL"];
  const schema = process.env["BENCH_SCHEMA"];
  const key = process.env["BENCH_API_KEY"];
  if (!url || !schema || !key) throw new Error("DATABASE_URL, BENCH_SCHEMA and BENCH_API_KEY are required");
  const db = await openDb({ url, schema, poolMax: 8 });
  onShutdown(() => db.close());
  await migrate(db, migrationsDir);
  const ledger = await createLedgerService({ db, logger: silentLogger, clock: systemClock });
  onShutdown(() => ledger.stop());
  const echo = echoRoutes();
  const server = await startServer({
    name: "ledger-bench",
    host: "127.0.0.1",
    port: Number(process.env["LEDGER_PORT"] ?? "0"),
    routes: (r) => {
      ledger.routes(r);
      echo(r);
    },
    authenticator: createApiKeyAuthenticator([{ tenant: "tnt_bench", scopes: ["admin"], key }]),
    logger: silentLogger,
    limits: LEDGER_SERVER_LIMITS,
    // The bench's tenant key calls far above a tenant's default quota (5,000 calls/s: on a quiet
    // box the echo at 32 clients passed it and the run stopped at resource_exhausted); the limiter
    // still counts every call, it just never refuses one here.
    tenantLimits: { requestsPerSecond: TENANT_REQUESTS_PER_SECOND_MAX, requestsBurst: TENANT_REQUESTS_PER_SECOND_MAX },
  });
  onShutdown(() => server.close());
  process.stdout.write(JSON.stringify({ url: server.url }) + "\n");
});
