// Standalone rating server: config from env -> open db + migrate -> service -> server -> signals.
import { createClient } from "@connectrpc/connect";
import { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { migrate, openDb, openEmbeddedPostgres } from "@nanobill/db";
import {
  createApiKeyAuthenticatorFromEnv,
  createClientTransport,
  createLogger,
  envInt,
  envString,
  envUrl,
  onShutdown,
  runMain,
  startServer,
  systemClock,
} from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { ratingConfigFromEnv } from "./config.js";
import { createRatingService, migrationsDir } from "./index.js";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX, TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MAX } from "./limits.js";

runMain(async () => {
  const env = process.env;
  const port = envInt(env, "PORT", 7002, { min: 0, max: 65_535 });
  const host = envString(env, "HOST", "0.0.0.0");
  const databaseUrl = envUrl(env, "DATABASE_URL");
  const dataDir = envString(env, "DATA_DIR", "./.data/rating");
  const schema = envString(env, "DB_SCHEMA", "rating");
  const apiKeys = envString(env, "NANOBILL_API_KEYS");
  const internalKey = envString(env, "NANOBILL_INTERNAL_KEY");
  const meteringUrl = envString(env, "METERING_URL");
  const walletUrl = envString(env, "CREDIT_WALLET_URL");
  const config = ratingConfigFromEnv(env);
  const logger = createLogger({ service: "rating" });
  const telemetry = initTelemetry({ serviceName: "rating", otlpEndpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT });
  onShutdown(() => telemetry.shutdown());
  const embedded = databaseUrl ? undefined : await openEmbeddedPostgres({ dataDir });
  if (embedded) onShutdown(() => embedded.close());
  const db = await openDb({ url: databaseUrl, embedded, schema });
  onShutdown(() => db.close());
  const { applied } = await migrate(db, migrationsDir);
  logger.info("config", { port, database: databaseUrl ? "postgres" : "embedded", schema, migrationsApplied: applied, ...config });
  const service = await createRatingService({
    db,
    logger,
    clock: systemClock,
    config,
    clients: {
      metering: createClient(MeteringService, createClientTransport({ baseUrl: meteringUrl, apiKey: internalKey })),
      wallet: createClient(CreditWalletService, createClientTransport({ baseUrl: walletUrl, apiKey: internalKey })),
    },
  });
  const server = await startServer({
    name: "rating",
    host,
    port,
    routes: service.routes,
    authenticator: createApiKeyAuthenticatorFromEnv(process.env),
    limits: { readMaxBytes: REQUEST_BYTES_MAX, writeMaxBytes: RESPONSE_BYTES_MAX, timeoutMsMax: TIMEOUT_MS_MAX, timeoutMsDefault: TIMEOUT_MS_DEFAULT },
    logger,
  });
  await service.start();
  onShutdown(() => service.stop());
  onShutdown(() => server.close());
  logger.info("rating listening", { url: server.url });
});
