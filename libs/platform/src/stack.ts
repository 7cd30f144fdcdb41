/**
 * `npm run stack`: every service as its own OS process (`tsx apps/<svc>/src/main.ts`) on a real
 * PostgreSQL (a schema per service) and Redis, wired by addresses. Importable (`startStack`, used
 * by the fault suite and the system bench) and runnable as a script:
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/9 \
 *     NANOBILL_STACK_CONFIG=stack.json npx tsx libs/platform/src/stack.ts
 *
 * One config (a JSON file named by NANOBILL_STACK_CONFIG, fields of `StackConfig`; env wins for the
 * URLs): ports, schema prefix, API keys. Each service gets the one variable scheme of
 * docs/deployment.md ("Environment"): <SERVICE>_PORT / _HOST / _DB_SCHEMA of its own, <SERVICE>_URL
 * of every peer, and the shared DATABASE_URL, REDIS_URL, NANOBILL_API_KEYS, NANOBILL_INTERNAL_API_KEY.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { createClient, type Client } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "@nanobill/contracts/grpc/health/v1/health_pb";
import { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { ensureOwnerOnlyDir, openDb } from "@nanobill/db";
import { createClientTransport, parseApiKeysEnv, STOP_WITH_STDIN_ENV, type ApiKeyEntry } from "@nanobill/service-kit";
import type { PlatformClients, ServiceName } from "./platform.js";

/** Start order: each service only calls services started before it. */
export const STACK_SERVICES = ["ledger", "credit-wallet", "metering", "rating", "invoicing"] as const satisfies readonly ServiceName[];

/** How long one service may take from spawn to SERVING (tsx compiles on first start). */
export const STACK_START_TIMEOUT_MS = 60_000;
/** How long stop() waits after SIGTERM before SIGKILL (service-kit caps its shutdown at 30 s). */
export const STACK_STOP_TIMEOUT_MS = 35_000;
/** Health poll interval while waiting for SERVING. */
export const STACK_HEALTH_POLL_MS = 100;

export interface StackConfig {
  databaseUrl: string;
  redisUrl?: string;
  host?: string;
  /** Fixed ports (0 or absent = a free port picked once, kept across restarts). */
  ports?: Partial<Record<ServiceName, number>>;
  /** Schema names are `<prefix><service>` (`-` -> `_`). */
  schemaPrefix?: string;
  /** Tenant API keys (NANOBILL_API_KEYS entries); the internal key is added. */
  apiKeys: ApiKeyEntry[];
  internalKey?: string;
  /** Redis key prefix of the wallet's real-time state. */
  redisPrefix?: string;
  /** Where each service's stdout/stderr go (`<dir>/<service>.log`); default: discarded. */
  logDir?: string;
  /** Extra env for every service (limits, consumer wait, ...). */
  env?: Record<string, string>;
}

export interface Stack {
  readonly urls: Record<ServiceName, string>;
  readonly schemas: Record<ServiceName, string>;
  readonly internalKey: string;
  clients(apiKey: string): PlatformClients;
  pid(service: ServiceName): number | undefined;
  /** Sends a signal; resolves when the process has exited. */
  kill(service: ServiceName, signal?: NodeJS.Signals): Promise<void>;
  /** Kills (SIGKILL) if still running, starts it again on the same port, waits for SERVING. */
  restart(service: ServiceName): Promise<void>;
  /**
   * Cuts every PostgreSQL connection of the stack's services (pg_terminate_backend of each session
   * whose application_name is one of the stack's `nanobill:<schema>`; nothing else on the server is
   * touched). Resolves to the number of sessions terminated.
   */
  terminateDbSessions(): Promise<number>;
  /** SIGTERM every service in reverse start order (SIGKILL after STACK_STOP_TIMEOUT_MS). */
  stop(): Promise<void>;
  /** Resolves when the current process of a service exits (for any reason). */
  exited(service: ServiceName): Promise<void>;
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

function schemaOf(prefix: string, name: ServiceName): string {
  return `${prefix}${name.replace("-", "_")}`;
}

async function freePort(host: string): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, host, () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

/** Refuses a fixed port something already listens on (a leftover service would answer SERVING for ours). */
async function assertPortFree(port: number, host: string, name: ServiceName): Promise<void> {
  await new Promise<void>((res, rej) => {
    const s = createServer();
    s.once("error", (e: NodeJS.ErrnoException) =>
      rej(e.code === "EADDRINUSE" ? new Error(`port ${port} (${name}) on ${host} is in use: a service of an earlier stack still running? (pkill -f 'apps/.*/src/main.ts')`) : e),
    );
    s.listen(port, host, () => s.close(() => res()));
  });
}

function formatKeys(keys: ApiKeyEntry[]): string {
  return keys.map((k) => `${k.tenant}:${k.scopes.join("+")}:${k.key}`).join(",");
}

/** "credit-wallet" -> "CREDIT_WALLET": the prefix of a service's own variables. */
export function envPrefixOf(name: ServiceName): string {
  return name.toUpperCase().replace(/-/g, "_");
}

/** application_name of a service's PostgreSQL sessions in a stack: libs/db names them `nanobill:<schema>`. */
export function applicationNameOf(schema: string): string {
  return `nanobill:${schema}`;
}

/**
 * The env of one service process, in the one scheme: its own <SERVICE>_PORT, _HOST, _DB_SCHEMA,
 * every peer's <SERVICE>_URL, and DATABASE_URL, REDIS_URL, NANOBILL_API_KEYS (tenant keys plus
 * `*:internal:<key>`), NANOBILL_INTERNAL_API_KEY, NANOBILL_LOG_LEVEL. Nothing else of this process's env.
 */
export function serviceEnv(
  name: ServiceName,
  cfg: StackConfig,
  ctx: { ports: Record<ServiceName, number>; urls: Record<ServiceName, string>; internalKey: string; schemaPrefix: string },
): Record<string, string> {
  const p = envPrefixOf(name);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "/tmp",
    NODE_ENV: process.env.NODE_ENV ?? "production",
    NANOBILL_LOG_LEVEL: process.env.NANOBILL_LOG_LEVEL ?? "info",
    DATABASE_URL: cfg.databaseUrl,
    NANOBILL_API_KEYS: formatKeys([...cfg.apiKeys, { tenant: "*", scopes: ["internal"], key: ctx.internalKey }]),
    NANOBILL_INTERNAL_API_KEY: ctx.internalKey,
    [`${p}_PORT`]: String(ctx.ports[name]),
    [`${p}_HOST`]: cfg.host ?? "127.0.0.1",
    [`${p}_DB_SCHEMA`]: schemaOf(ctx.schemaPrefix, name),
    ...Object.fromEntries(STACK_SERVICES.filter((n) => n !== name).map((n) => [`${envPrefixOf(n)}_URL`, ctx.urls[n]])),
    OTEL_SERVICE_NAME: name,
    ...(name === "metering" ? { METERING_OTLP_PORT: "-1" } : {}), // its OTLP/HTTP receiver: off unless `env` turns it on
    ...(name === "rating" ? { RATING_CONSUMER_PARTITIONS: "4" } : {}), // one consumer loop per customer partition
    ...(cfg.redisUrl ? { REDIS_URL: cfg.redisUrl } : {}),
    ...(name === "credit-wallet" && cfg.redisPrefix ? { CREDIT_WALLET_REDIS_PREFIX: cfg.redisPrefix } : {}),
    ...(cfg.env ?? {}),
  };
  return env;
}

interface Proc {
  child?: ChildProcess;
  exited?: Promise<void>;
  /** The service's log file, open for appending (its stdout and stderr write to it directly). */
  logFd?: number;
}

/** Starts the five services as processes and waits until each reports SERVING. */
export async function startStack(cfg: StackConfig): Promise<Stack> {
  const host = cfg.host ?? "127.0.0.1";
  const internalKey = cfg.internalKey ?? `nbk_int_${randomBytes(24).toString("hex")}`;
  const schemaPrefix = cfg.schemaPrefix ?? "";
  const ports = {} as Record<ServiceName, number>;
  for (const n of STACK_SERVICES) {
    const fixed = cfg.ports?.[n];
    if (fixed) await assertPortFree(fixed, host, n);
    ports[n] = fixed || (await freePort(host));
  }
  const urls = Object.fromEntries(STACK_SERVICES.map((n) => [n, `http://${host}:${ports[n]}`])) as Record<ServiceName, string>;
  const schemas = Object.fromEntries(STACK_SERVICES.map((n) => [n, schemaOf(schemaPrefix, n)])) as Record<ServiceName, string>;
  const procs = Object.fromEntries(STACK_SERVICES.map((n) => [n, {} as Proc])) as Record<ServiceName, Proc>;
  if (cfg.logDir) await ensureOwnerOnlyDir(cfg.logDir); // logs carry tenant ids and request details

  const health = Object.fromEntries(
    STACK_SERVICES.map((n) => [n, createClient(Health, createClientTransport({ baseUrl: urls[n], apiKey: internalKey, timeoutMs: 1_000 }))]),
  ) as Record<ServiceName, Client<typeof Health>>;

  const spawnOne = (name: ServiceName): void => {
    const p = procs[name];
    const env = serviceEnv(name, cfg, { ports, urls, internalKey, schemaPrefix });
    // node itself (not the tsx CLI, which forks a second process): a signal reaches the service
    // Its own process group (detached): a terminal's Ctrl-C reaches only the stack, which stops the
    // services once, in order (before, each also got the SIGINT and exited on the "second signal");
    // script mode also stops them on SIGHUP and kills what is left when the stack exits.
    // stdin is a pipe the stack never writes or closes: when the stack dies, even SIGKILLed, the
    // service sees its end and shuts down (STOP_WITH_STDIN_ENV) instead of holding its port.
    // Its output goes to its log file directly (not relayed by the stack): the lines it writes
    // after the stack died, such as why it stopped, are kept, and no broken pipe can crash it.
    const out = cfg.logDir ? (p.logFd ??= openSync(join(cfg.logDir, `${name}.log`), "a", 0o600)) : "ignore";
    const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, `apps/${name}/src/main.ts`)], {
      cwd: repoRoot,
      env: { ...env, [STOP_WITH_STDIN_ENV]: "1" },
      stdio: ["pipe", out, out],
      detached: true,
    });
    child.stdin!.on("error", () => {}); // EPIPE once the service has exited: nothing to do
    p.child = child;
    p.exited = new Promise((res) => child.once("exit", () => res()));
  };

  const waitServing = async (name: ServiceName): Promise<void> => {
    const deadline = Date.now() + STACK_START_TIMEOUT_MS;
    const child = procs[name].child;
    let last: unknown;
    for (;;) {
      if (child?.exitCode !== null && child?.exitCode !== undefined) {
        throw new Error(`${name} exited with code ${child.exitCode} before SERVING${cfg.logDir ? ` (see ${join(cfg.logDir, name + ".log")})` : ""}`);
      }
      try {
        const r = await health[name].check({ service: "" });
        if (r.status === HealthCheckResponse_ServingStatus.SERVING) return;
        last = `status ${r.status}`;
      } catch (e) {
        last = e;
      }
      if (Date.now() > deadline) throw new Error(`${name} not SERVING within ${STACK_START_TIMEOUT_MS} ms: ${String(last)}`);
      await new Promise((r) => setTimeout(r, STACK_HEALTH_POLL_MS));
    }
  };

  const closeLogs = (): void => {
    for (const n of STACK_SERVICES) {
      const p = procs[n];
      if (p.logFd !== undefined) closeSync(p.logFd);
      p.logFd = undefined;
    }
  };

  const killOne = async (name: ServiceName, signal: NodeJS.Signals = "SIGKILL"): Promise<void> => {
    const p = procs[name];
    if (!p.child || p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill(signal);
    await p.exited;
  };

  // One stop at a time: a second SIGTERM to a service still draining would make it skip its
  // graceful shutdown ("second signal"), so concurrent callers share the first stop.
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => (stopping ??= stopAll().finally(() => (stopping = undefined)));
  const stopAll = async (): Promise<void> => {
    for (const n of [...STACK_SERVICES].reverse()) {
      const p = procs[n];
      if (!p.child || p.child.exitCode !== null || p.child.signalCode !== null) continue;
      p.child.kill("SIGTERM");
      const timer = setTimeout(() => p.child?.kill("SIGKILL"), STACK_STOP_TIMEOUT_MS);
      await p.exited;
      clearTimeout(timer);
    }
    closeLogs();
  };

  try {
    // all at once (migrations touch separate schemas; callers retry until their peers are up)
    for (const n of STACK_SERVICES) spawnOne(n);
    await Promise.all(STACK_SERVICES.map((n) => waitServing(n)));
  } catch (e) {
    for (const n of STACK_SERVICES) await killOne(n);
    closeLogs();
    throw e;
  }

  return {
    urls,
    schemas,
    internalKey,
    clients(apiKey) {
      const t = (name: ServiceName) => createClientTransport({ baseUrl: urls[name], apiKey });
      return {
        metering: createClient(MeteringService, t("metering")),
        rating: createClient(RatingService, t("rating")),
        ledger: createClient(LedgerService, t("ledger")),
        wallet: createClient(CreditWalletService, t("credit-wallet")),
        invoicing: createClient(InvoicingService, t("invoicing")),
      };
    },
    pid: (n) => procs[n].child?.pid,
    exited: (n) => procs[n].exited ?? Promise.resolve(),
    kill: killOne,
    terminateDbSessions: () => terminateSessions(cfg.databaseUrl, Object.values(schemas)),
    async restart(name) {
      await killOne(name, "SIGKILL");
      spawnOne(name);
      await waitServing(name);
    },
    stop,
  };
}

/** PostgreSQL truncates application_name to NAMEDATALEN - 1 bytes. */
const APPLICATION_NAME_BYTES_MAX = 63;

/** pg_terminate_backend of every session of the current database named `nanobill:<schema>` for one of `schemas`. */
export async function terminateSessions(databaseUrl: string, schemas: readonly string[]): Promise<number> {
  const names = schemas.map((s) => applicationNameOf(s).slice(0, APPLICATION_NAME_BYTES_MAX));
  const db = await openDb({ url: databaseUrl, schema: "public", poolMax: 1 });
  try {
    const { rows } = await db.query<{ terminated: boolean }>(
      `SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ANY($1::text[])`,
      [names],
    );
    return rows.filter((r) => r.terminated).length;
  } finally {
    await db.close();
  }
}

/** NANOBILL_STACK_CONFIG (a JSON StackConfig) + env: DATABASE_URL, REDIS_URL, NANOBILL_API_KEYS win. */
export function stackConfigFromEnv(env: NodeJS.ProcessEnv): StackConfig {
  const file = env.NANOBILL_STACK_CONFIG;
  const fromFile: Partial<StackConfig> = file ? (JSON.parse(readFileSync(file, "utf8")) as Partial<StackConfig>) : {};
  const databaseUrl = env.DATABASE_URL || fromFile.databaseUrl;
  if (!databaseUrl) throw new Error("DATABASE_URL (or databaseUrl in NANOBILL_STACK_CONFIG) is required: the stack runs on a real PostgreSQL");
  const apiKeys: ApiKeyEntry[] = env.NANOBILL_API_KEYS
    ? parseApiKeysEnv(env.NANOBILL_API_KEYS).filter((k) => k.tenant !== "*")
    : fromFile.apiKeys ?? [{ tenant: "tnt_demo", scopes: ["admin"], key: `nbk_demo_${randomBytes(24).toString("hex")}` }];
  return {
    ...fromFile,
    databaseUrl,
    redisUrl: env.REDIS_URL || fromFile.redisUrl,
    apiKeys,
    ports: fromFile.ports ?? { metering: 7101, rating: 7102, ledger: 7103, "credit-wallet": 7104, invoicing: 7105 },
    schemaPrefix: fromFile.schemaPrefix ?? "stack_",
    logDir: fromFile.logDir ?? env.NANOBILL_STACK_LOG_DIR ?? ".data/stack-logs",
  };
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const cfg = stackConfigFromEnv(process.env);
  const stack = await startStack(cfg);
  const lines = STACK_SERVICES.map((n) => `  ${n.padEnd(14)} ${stack.urls[n]}  pid ${stack.pid(n)}  schema ${stack.schemas[n]}`).join("\n");
  process.stdout.write(
    `\nNanobill stack is running (PostgreSQL, ${cfg.redisUrl ? "Redis" : "in-process real-time state"}; logs in ${cfg.logDir}):\n${lines}\n` +
      cfg.apiKeys.map((k) => `API key (tenant ${k.tenant}, ${k.scopes.join("|")}): ${k.key}\n`).join("") +
      "Press Ctrl+C to stop.\n\n",
  );
  let stopping = false;
  const onSignal = (): void => {
    if (stopping) return;
    stopping = true;
    void stack.stop().then(() => process.exit(0));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal); // the terminal closed: the services (own sessions) would not hear it
  // Whatever ends this process, no service outlives it.
  process.once("exit", () => {
    for (const n of STACK_SERVICES) {
      const pid = stack.pid(n);
      if (pid !== undefined) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // exited already
        }
      }
    }
  });
  // A service that dies on its own takes the stack down (non-zero), rather than leaving a stack
  // that looks up but is not.
  for (const n of STACK_SERVICES) {
    void stack.exited(n).then(() => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`${n} exited (see ${join(cfg.logDir ?? "", n + ".log")}); stopping the stack\n`);
      void stack.stop().then(() => process.exit(1));
    });
  }
}
