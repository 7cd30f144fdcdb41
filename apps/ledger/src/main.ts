/** Standalone ledger process: config -> database + migrations -> service -> server -> signals. */
import { openDb, openEmbeddedPostgres, prepareSchema } from "@nanobill/db";
import {
  createApiKeyAuthenticatorFromEnv,
  createLogger,
  onShutdown,
  runMain,
  startServer,
  clockFromEnv,
} from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { LEDGER_SERVER_LIMITS, createLedgerService, loadConfig, migrationsDir } from "./index.js";

/** Logs a failed start (e.g. a ConfigError naming the variable) before the config is known. */
const bootLogger = createLogger({ service: "ledger" });

runMain(
  async () => {
    const config = loadConfig(process.env);
    const logger = createLogger({ service: "ledger", level: config.logLevel });
    // Traces only where they go somewhere: without an endpoint the RPC interceptors cost one call.
    if (config.otlpTracesEndpoint !== undefined) {
      const telemetry = initTelemetry({ serviceName: "ledger", otlpEndpoint: config.otlpTracesEndpoint, sampleRatio: config.tracesSampleRatio });
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
    logger.info("ledger starting", {
      database: config.databaseUrl ? "postgres" : "embedded",
      schema: config.schema,
      poolMax: config.poolMax,
      migrationsApplied: applied,
      limits: config.ledger,
    });
    const service = await createLedgerService({ db, logger, clock: clockFromEnv(process.env), config: config.ledger });
    onShutdown(() => service.stop());
    const server = await startServer({
      name: "ledger",
      host: config.host,
      port: config.port,
      routes: service.routes,
      authenticator,
      logger,
      limits: LEDGER_SERVER_LIMITS,
    });
    onShutdown(() => server.close());
    await service.start();
    logger.info("ledger listening", { url: server.url });
  },
  { logger: bootLogger },
);
