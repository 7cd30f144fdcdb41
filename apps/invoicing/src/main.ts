/** Standalone invoicing server: config -> database + migrations -> clients -> server -> signals. */
import { createClient } from "@connectrpc/connect";
import { openDb, openEmbeddedPostgres, prepareSchema } from "@nanobill/db";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { createApiKeyAuthenticatorFromEnv, createClientTransport, createLogger, onShutdown, runMain, startServer, clockFromEnv } from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { loadConfig } from "./config.js";
import { createInvoicingService, migrationsDir } from "./index.js";
import { INVOICING_SERVER_LIMITS } from "./limits.js";

runMain(async () => {
  const config = loadConfig(process.env);
  const logger = createLogger({ service: "invoicing", level: config.logLevel });
  logger.info("config", { ...config, databaseUrl: config.databaseUrl === undefined ? undefined : "(set)", apiKeys: "(set)", internalApiKey: "(set)" });
  // Traces only where they go somewhere: without an endpoint the RPC interceptors cost one call.
  if (config.otlpTracesEndpoint !== undefined) {
    const telemetry = initTelemetry({ serviceName: "invoicing", otlpEndpoint: config.otlpTracesEndpoint, sampleRatio: config.tracesSampleRatio });
    onShutdown(() => telemetry.shutdown());
  }
  const embedded = config.databaseUrl === undefined ? await openEmbeddedPostgres({ dataDir: config.dataDir }) : undefined;
  const db = await openDb({ url: config.databaseUrl, embedded, schema: config.schema, poolMax: config.poolMax });
  onShutdown(async () => {
    await db.close();
    await embedded?.close();
  });
  const { applied } = await prepareSchema(db, migrationsDir, config.migrateOnStart);
  logger.info("migrations", { applied });
  const transport = (baseUrl: string) => createClientTransport({ baseUrl, apiKey: config.internalApiKey });
  const service = await createInvoicingService({
    db,
    logger,
    clock: clockFromEnv(process.env),
    config: config.invoicing,
    clients: {
      rating: createClient(RatingService, transport(config.ratingUrl)),
      wallet: createClient(CreditWalletService, transport(config.walletUrl)),
      ledger: createClient(LedgerService, transport(config.ledgerUrl)),
    },
  });
  await service.start();
  onShutdown(() => service.stop());
  const server = await startServer({
    name: "invoicing",
    host: config.host,
    port: config.port,
    routes: service.routes,
    authenticator: createApiKeyAuthenticatorFromEnv(process.env),
    limits: INVOICING_SERVER_LIMITS,
    logger,
  });
  onShutdown(() => server.close());
  logger.info("listening", { url: server.url });
});
