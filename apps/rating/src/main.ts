// Standalone rating server: config from env -> open db + migrate -> service -> server -> signals.
import { createClient } from "@connectrpc/connect";
import { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
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
import { loadConfig } from "./config.js";
import { createRatingService, migrationsDir } from "./index.js";
import { createViewClients } from "./wire.js";
import { RATING_SERVER_LIMITS } from "./limits.js";

runMain(async () => {
  const cfg = loadConfig(process.env);
  const logger = createLogger({ service: "rating", level: cfg.logLevel });
  // Traces only where they go somewhere: without an endpoint the RPC interceptors cost one call.
  if (cfg.otlpTracesEndpoint !== undefined) {
    const telemetry = initTelemetry({ serviceName: "rating", otlpEndpoint: cfg.otlpTracesEndpoint, sampleRatio: cfg.tracesSampleRatio });
    onShutdown(() => telemetry.shutdown());
  }
  const embedded = cfg.databaseUrl ? undefined : await openEmbeddedPostgres({ dataDir: cfg.dataDir });
  if (embedded) onShutdown(() => embedded.close());
  const db = await openDb({ url: cfg.databaseUrl, embedded, schema: cfg.schema, poolMax: cfg.poolMax });
  onShutdown(() => db.close());
  const { applied } = await prepareSchema(db, migrationsDir, cfg.migrateOnStart);
  logger.info("config", {
    port: cfg.port,
    database: cfg.databaseUrl ? "postgres" : "embedded",
    schema: cfg.schema,
    poolMax: cfg.poolMax,
    meteringUrl: cfg.meteringUrl,
    walletUrl: cfg.walletUrl,
    migrationsApplied: applied,
    ...cfg.rating,
  });
  const meteringTransport = createClientTransport({ baseUrl: cfg.meteringUrl, apiKey: cfg.internalApiKey });
  const walletTransport = createClientTransport({ baseUrl: cfg.walletUrl, apiKey: cfg.internalApiKey });
  const service = await createRatingService({
    db,
    logger,
    clock: clockFromEnv(process.env),
    config: cfg.rating,
    clients: {
      metering: createClient(MeteringService, meteringTransport),
      wallet: createClient(CreditWalletService, walletTransport),
      views: createViewClients(meteringTransport, walletTransport),
    },
  });
  const server = await startServer({
    name: "rating",
    host: cfg.host,
    port: cfg.port,
    routes: service.routes,
    authenticator: createApiKeyAuthenticatorFromEnv(process.env),
    limits: RATING_SERVER_LIMITS,
    logger,
  });
  await service.start();
  onShutdown(() => service.stop());
  onShutdown(() => server.close());
  logger.info("rating listening", { url: server.url });
});
