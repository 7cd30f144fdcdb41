/**
 * `npm start`: all five services in one process. Without DATABASE_URL they share one embedded
 * PostgreSQL (PGlite, data under NANOBILL_DATA_DIR, default ./.data) with a schema each; without
 * REDIS_URL the wallet uses its in-process real-time path. Prints each service's address.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import {
  createLogger,
  envInt,
  envString,
  envUrl,
  onShutdown,
  parseApiKeysEnv,
  runMain,
  type ApiKeyEntry,
} from "@nanobill/service-kit";
import { initTelemetry } from "@nanobill/telemetry";
import { DEFAULT_PORTS, SERVICE_NAMES, startPlatform, type ServiceName } from "./platform.js";
import { DEMO, seedDemo } from "./demo.js";

const PORT_ENV: Record<ServiceName, string> = {
  metering: "METERING_PORT",
  rating: "RATING_PORT",
  ledger: "LEDGER_PORT",
  "credit-wallet": "CREDIT_WALLET_PORT",
  invoicing: "INVOICING_PORT",
};

/** The demo key lives in the data folder so it survives restarts (and never in the repo). */
function demoKey(dataDir: string): string {
  const file = join(dataDir, "demo-api-key");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const key = `nbk_demo_${randomBytes(24).toString("hex")}`;
  writeFileSync(file, key + "\n", { mode: 0o600 });
  return key;
}

runMain(async () => {
  const env = process.env;
  const logger = createLogger({ service: "platform", level: (envString(env, "LOG_LEVEL", "info") as "info") });
  const databaseUrl = envUrl(env, "DATABASE_URL");
  const redisUrl = envUrl(env, "REDIS_URL");
  const dataDir = resolve(envString(env, "NANOBILL_DATA_DIR", ".data"));
  mkdirSync(dataDir, { recursive: true });
  const otlp = envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const telemetry = initTelemetry({ serviceName: "nanobill", otlpEndpoint: otlp });
  onShutdown(() => telemetry.shutdown());

  const configured = env.NANOBILL_API_KEYS;
  const apiKeys: ApiKeyEntry[] = configured ? parseApiKeysEnv(configured) : [{ tenant: DEMO.tenant, scopes: ["admin"], key: demoKey(dataDir) }];
  const ports = Object.fromEntries(
    SERVICE_NAMES.map((n) => [n, envInt(env, PORT_ENV[n], DEFAULT_PORTS[n], { min: 0, max: 65535 })]),
  ) as Record<ServiceName, number>;

  const platform = await startPlatform({
    databaseUrl,
    dataDir: databaseUrl === undefined ? join(dataDir, "pglite") : undefined,
    redisUrl,
    host: envString(env, "HOST", "127.0.0.1"),
    ports,
    apiKeys,
    logger,
  });
  onShutdown(() => platform.close());

  if (!configured) {
    const demo = await seedDemo(platform.clients(apiKeys[0]!.key), { customerId: "cus_demo", now: new Date() });
    logger.info("demo tenant ready", { tenant: DEMO.tenant, customer: demo.customerId, wallet: demo.walletId, api_key_file: join(dataDir, "demo-api-key") });
  }
  const lines = SERVICE_NAMES.map((n) => `  ${n.padEnd(14)} ${platform.urls[n]}`).join("\n");
  process.stdout.write(
    `\nNanobill is running (${databaseUrl ? "PostgreSQL" : `embedded PostgreSQL in ${dataDir}`}, ${redisUrl ? "Redis" : "in-process real-time state"}):\n${lines}\n` +
      (configured ? "" : `Demo API key (tenant ${DEMO.tenant}): ${apiKeys[0]!.key}\n`) +
      "Press Ctrl+C to stop.\n\n",
  );
});
