/**
 * `npm start`: all five services in one process. Without DATABASE_URL they share one embedded
 * PostgreSQL (PGlite, data under NANOBILL_DATA_DIR, default ./.data) with a schema each; without
 * REDIS_URL the wallet uses its in-process real-time path. Prints each service's address.
 * Variables: the one scheme of docs/deployment.md ("Environment"): <SERVICE>_PORT and
 * <SERVICE>_HOST per service (default 7001..7005 on 127.0.0.1), DATABASE_URL, REDIS_URL,
 * NANOBILL_API_KEYS, NANOBILL_DATA_DIR, NANOBILL_LOG_LEVEL, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (traces
 * only when set), OTEL_TRACES_SAMPLER_ARG (fraction of new traces sampled, default 1),
 * NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS (webhooks to a receiver on this machine; default false).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import {
  ConfigError,
  createLogger,
  envBool,
  envEnum,
  envFraction,
  envInt,
  envString,
  envUrl,
  onShutdown,
  parseApiKeysEnv,
  runMain,
  LOG_LEVELS,
  type ApiKeyEntry,
} from "@nanobill/service-kit";
import { ensureOwnerOnlyDir } from "@nanobill/db";
import { initTelemetry } from "@nanobill/telemetry";
import { DEFAULT_PORTS, SERVICE_NAMES, startPlatform, type ServiceName } from "./platform.js";
import { DEMO, seedDemo } from "./demo.js";

/** The prefix of each service's own variables (<SERVICE>_PORT, <SERVICE>_HOST). */
const ENV_PREFIX: Record<ServiceName, string> = {
  metering: "METERING",
  rating: "RATING",
  ledger: "LEDGER",
  "credit-wallet": "CREDIT_WALLET",
  invoicing: "INVOICING",
};

/** The demo key lives in the data folder so it survives restarts (and never in the repo). */
function demoKey(dataDir: string): string {
  const file = join(dataDir, "demo-api-key");
  if (existsSync(file)) {
    const key = readFileSync(file, "utf8").trim();
    // Checked like any configured key (a truncated or emptied file is named, not "invalid API key" later).
    parseApiKeysEnv(`${DEMO.tenant}:admin:${key}`, file);
    return key;
  }
  const key = `nbk_demo_${randomBytes(24).toString("hex")}`;
  writeFileSync(file, key + "\n", { mode: 0o600 });
  return key;
}

runMain(async () => {
  const env = process.env;
  const logger = createLogger({ service: "platform", level: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info") });
  const databaseUrl = envUrl(env, "DATABASE_URL");
  const redisUrl = envUrl(env, "REDIS_URL");
  const dataDir = resolve(envString(env, "NANOBILL_DATA_DIR", ".data"));
  // Owner only: the embedded database (webhook secrets) and the demo key live here.
  await ensureOwnerOnlyDir(dataDir);
  const otlp = envUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  if (otlp !== undefined) {
    const telemetry = initTelemetry({ serviceName: "nanobill", otlpEndpoint: otlp, sampleRatio: envFraction(env, "OTEL_TRACES_SAMPLER_ARG", 1) });
    onShutdown(() => telemetry.shutdown());
  }

  // NANOBILL_API_KEYS replaces the demo tenant's key (and the key file); set, it must hold a key.
  const configured = env.NANOBILL_API_KEYS?.trim() || undefined; // empty = unset, as for every variable
  const apiKeys: ApiKeyEntry[] = configured !== undefined ? parseApiKeysEnv(configured) : [{ tenant: DEMO.tenant, scopes: ["admin"], key: demoKey(dataDir) }];
  if (!apiKeys.some((k) => k.tenant !== "*")) throw new ConfigError("NANOBILL_API_KEYS", "holds no tenant key, only internal ones (<tenant>:<scopes>:<key>,...); unset it to use the demo tenant's key");
  const ports = Object.fromEntries(
    SERVICE_NAMES.map((n) => [n, envInt(env, `${ENV_PREFIX[n]}_PORT`, DEFAULT_PORTS[n], { min: 0, max: 65535 })]),
  ) as Record<ServiceName, number>;
  const hosts = Object.fromEntries(SERVICE_NAMES.map((n) => [n, envString(env, `${ENV_PREFIX[n]}_HOST`, "127.0.0.1")])) as Record<ServiceName, string>;

  const platform = await startPlatform({
    databaseUrl,
    dataDir: databaseUrl === undefined ? join(dataDir, "pglite") : undefined,
    redisUrl,
    redisCluster: envBool(env, "CREDIT_WALLET_REDIS_CLUSTER", false),
    hosts,
    ports,
    apiKeys,
    logger,
    // Local development: set it to send webhooks to a receiver on this machine.
    webhooksAllowPrivateNetworks: envBool(env, "NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", false),
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
