// Standalone metering server: config from env -> open db + migrate -> service -> server -> signals.
import { openDb, openEmbeddedPostgres, prepareSchema } from "@nanobill/db";
import { createApiKeyAuthenticatorFromEnv, createLogger, createTenantLimiter, onShutdown, runMain, startServer, clockFromEnv } from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { loadConfig } from "./config.js";
import { createMeteringService, migrationsDir } from "./index.js";
import { startOtlpServer } from "./otlp-http.js";
import { METERING_SERVER_LIMITS } from "./limits.js";

runMain(async () => {
  const cfg = loadConfig(process.env);
  const logger = createLogger({ service: "metering", level: cfg.logLevel });
  // Traces only where they go somewhere: without an endpoint the RPC interceptors cost one call.
  if (cfg.otlpTracesEndpoint !== undefined) {
    const telemetry = initTelemetry({ serviceName: "metering", otlpEndpoint: cfg.otlpTracesEndpoint, sampleRatio: cfg.tracesSampleRatio });
    onShutdown(() => telemetry.shutdown());
  }
  const embedded = cfg.databaseUrl ? undefined : await openEmbeddedPostgres({ dataDir: cfg.dataDir });
  if (embedded) onShutdown(() => embedded.close());
  const db = await openDb({ url: cfg.databaseUrl, embedded, schema: cfg.schema, poolMax: cfg.poolMax });
  onShutdown(() => db.close());
  const { applied } = await prepareSchema(db, migrationsDir, cfg.migrateOnStart);
  logger.info("config", { port: cfg.port, database: cfg.databaseUrl ? "postgres" : "embedded", schema: cfg.schema, poolMax: cfg.poolMax, migrationsApplied: applied, ...cfg.metering });
  const service = await createMeteringService({ db, logger, clock: clockFromEnv(process.env), config: cfg.metering });
  const authenticator = createApiKeyAuthenticatorFromEnv(process.env);
  // One per-tenant budget for both listeners (gRPC/Connect and OTLP/HTTP).
  const limiter = createTenantLimiter();
  const server = await startServer({
    name: "metering",
    host: cfg.host,
    port: cfg.port,
    routes: service.routes,
    authenticator,
    limits: METERING_SERVER_LIMITS,
    tenantLimiter: limiter,
    logger,
  });
  await service.start();
  onShutdown(() => service.stop());
  onShutdown(() => server.close());
  if (cfg.otlpPort >= 0) {
    const otlp = await startOtlpServer({ authenticator, limiter, logger, ingest: service.ingest, mappingFor: service.genAiMapping }, cfg.otlpPort, cfg.host);
    onShutdown(() => otlp.close());
    logger.info("metering OTLP/HTTP receiver listening", { url: `${otlp.url}/v1/traces` });
  }
  logger.info("metering listening", { url: server.url });
});
