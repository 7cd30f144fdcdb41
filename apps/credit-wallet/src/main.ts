/** Standalone credit-wallet process: config -> database + migrations -> ledger client -> service -> server -> signals. */
import { createClient } from "@connectrpc/connect";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { openDb, openEmbeddedPostgres, prepareSchema } from "@nanobill/db";
import {
  createApiKeyAuthenticatorFromEnv,
  createClientTransport,
  createLogger,
  onShutdown,
  runMain,
  startServer,
  clockFromEnv,
} from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { WALLET_SERVER_LIMITS, createCreditWalletService, loadConfig, migrationsDir } from "./index.js";

/** Logs a failed start (e.g. a ConfigError naming the variable) before the config is known. */
const bootLogger = createLogger({ service: "credit-wallet" });

runMain(
  async () => {
    const config = loadConfig(process.env);
    const logger = createLogger({ service: "credit-wallet", level: config.logLevel });
    // Traces only where they go somewhere: without an endpoint the RPC interceptors cost one call.
    if (config.otlpTracesEndpoint !== undefined) {
      const telemetry = initTelemetry({ serviceName: "credit-wallet", otlpEndpoint: config.otlpTracesEndpoint, sampleRatio: config.tracesSampleRatio });
      onShutdown(() => telemetry.shutdown());
    }
    const authenticator = createApiKeyAuthenticatorFromEnv(process.env);
    const embedded = config.databaseUrl ? undefined : await openEmbeddedPostgres({ dataDir: config.dataDir });
    const db = await openDb({ url: config.databaseUrl, embedded, schema: config.schema, poolMax: config.poolMax });
    onShutdown(async () => {
      await db.close();
      await embedded?.close();
    });
    const { applied } = await prepareSchema(db, migrationsDir, config.migrateOnStart);
    logger.info("credit-wallet starting", {
      database: config.databaseUrl ? "postgres" : "embedded",
      realtime: config.wallet.redisUrl ? "redis" : "in-process",
      schema: config.schema,
      poolMax: config.poolMax,
      ledgerUrl: config.ledgerUrl,
      migrationsApplied: applied,
      config: { ...config.wallet, redisUrl: config.wallet.redisUrl ? "(set)" : undefined },
    });
    const ledger = createClient(LedgerService, createClientTransport({ baseUrl: config.ledgerUrl, apiKey: config.internalApiKey }));
    const service = await createCreditWalletService({ db, logger, clock: clockFromEnv(process.env), clients: { ledger }, config: config.wallet });
    onShutdown(() => service.stop());
    const server = await startServer({ name: "credit-wallet", host: config.host, port: config.port, routes: service.routes, authenticator, logger, limits: WALLET_SERVER_LIMITS });
    onShutdown(() => server.close());
    await service.start();
    logger.info("credit-wallet listening", { url: server.url });
  },
  { logger: bootLogger },
);
