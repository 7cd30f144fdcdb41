/** @nanobill/credit-wallet: credits and prepaid wallets with real-time holds, as a library and a process (main.ts). */
import type { ConnectRouter } from "@connectrpc/connect";
import type { Db } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { CREDIT_WALLET_CONFIG_DEFAULT, type CreditWalletConfig } from "./config.js";
import { createEngine, type Engine } from "./engine.js";
import { createLedgerOutbox, type LedgerOutbox } from "./ledger-outbox.js";
import { createLedgerPort, type LedgerClient, type LedgerPort } from "./ledger-port.js";
import { BACKGROUND_TENANTS_MAX } from "./limits.js";
import { createMemoryRealtime } from "./realtime/memory.js";
import { createRedisRealtime } from "./realtime/redis.js";
import type { RealtimeStore } from "./realtime/types.js";
import { createWalletRoutes } from "./server.js";
import { createWalletServiceImpl } from "./service.js";
import { ENDS_AT_EXPIRY_SQL, ENDS_AT_PERIOD_END_SQL } from "./store/store.js";
import { createWebhookDispatcher, type DispatchStats } from "@nanobill/webhooks";

export { migrationsDir } from "./store/store.js";
export { WALLET_SERVER_LIMITS } from "./server.js";
export { type CreditWalletConfig, CREDIT_WALLET_CONFIG_DEFAULT, loadConfig } from "./config.js";
export type { RealtimeStore } from "./realtime/types.js";
export { createMemoryRealtime } from "./realtime/memory.js";
export { createRedisRealtime } from "./realtime/redis.js";
export * as walletLimits from "./limits.js";

export interface CreditWalletDeps {
  db: Db;
  logger: Logger;
  clock: Clock;
  clients: { ledger: LedgerClient };
  config?: Partial<CreditWalletConfig>;
  /** Overrides the real-time store chosen from config (tests, benchmarks). */
  realtime?: RealtimeStore;
  /** Authorize group commits in flight per tenant (default AUTHORIZE_GROUPS_IN_FLIGHT; benchmarks compare). */
  authorizeGroupsInFlight?: number;
}

export interface CreditWalletServiceHandle {
  routes(router: ConnectRouter): void;
  /** Rebuilds real-time state (when configured) and starts the background loop; idempotent. */
  start(): Promise<void>;
  /** Stops the background loop, waits for it, closes the real-time store. */
  stop(): Promise<void>;
  /** Internals for tests, benchmarks and the platform's auditor. */
  readonly engine: Engine;
  readonly realtime: RealtimeStore;
  readonly outbox: LedgerOutbox;
  readonly ledger: LedgerPort;
  /** The webhook dispatcher of wallet alerts (started with the background loop; tests run rounds). */
  readonly webhooks: { runOnce(): Promise<DispatchStats> };
}

export async function createCreditWalletService(deps: CreditWalletDeps): Promise<CreditWalletServiceHandle> {
  const config: CreditWalletConfig = { ...CREDIT_WALLET_CONFIG_DEFAULT, ...deps.config };
  let redisErrorLoggedMs = -Infinity;
  const realtime =
    deps.realtime ??
    (config.redisUrl
      ? createRedisRealtime({
          url: config.redisUrl,
          cluster: config.redisCluster,
          prefix: config.redisPrefix,
          onConnectionError: (err) => {
            // At most one line per REDIS_ERROR_LOG_INTERVAL_MS while Redis stays unreachable.
            const now = Date.now();
            if (now - redisErrorLoggedMs < REDIS_ERROR_LOG_INTERVAL_MS) return;
            redisErrorLoggedMs = now;
            deps.logger.warn("Redis (REDIS_URL) connection error; wallet calls that need it fail until it is back", { err: String(err?.message ?? err) });
          },
        })
      : createMemoryRealtime());
  const ledger = createLedgerPort(deps.clients.ledger);
  const outbox = createLedgerOutbox({ db: deps.db, ledger, logger: deps.logger, clock: deps.clock });
  const engine = createEngine({ db: deps.db, realtime, ledger, outbox, clock: deps.clock, logger: deps.logger, expiryNoticeMs: config.expiryNoticeMs, expiryGraceMs: config.expiryGraceMs });
  const routes = createWalletRoutes(
    createWalletServiceImpl({ engine, db: deps.db, clock: deps.clock, authorizeGroupsInFlight: deps.authorizeGroupsInFlight, webhooksAllowPrivateNetworks: config.webhooksAllowPrivateNetworks }),
  );
  // Wallet alerts are queued for webhook endpoints by a trigger (migration 0004) and sent from here;
  // non-public addresses are refused (at creation and at connect time) unless config allows them.
  const webhooks = createWebhookDispatcher({ db: deps.db, clock: deps.clock, logger: deps.logger, allowPrivateNetworks: config.webhooksAllowPrivateNetworks });
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let started = false;
  let stopped = false;

  async function background(): Promise<void> {
    try {
      await outbox.flush();
      const now = deps.clock.now();
      const due = await deps.db.query<{ tenant: string }>(
        `SELECT DISTINCT tenant FROM (
           SELECT tenant FROM holds WHERE state = 'pending' AND expires_at <= $1
           UNION SELECT tenant FROM grants WHERE state = 'active' AND expires_at <= $1 AND ${ENDS_AT_EXPIRY_SQL}) t LIMIT $2`,
        [now, BACKGROUND_TENANTS_MAX],
      );
      for (const { tenant } of due.rows) {
        if (stopped) break;
        await engine.runExpiry(tenant, now, "");
      }
      // Allowances past their period end: rolled over (and renewed) without waiting for a
      // RunRollover call (they stop burning at the period end either way).
      const ended = await deps.db.query<{ tenant: string }>(
        `SELECT DISTINCT tenant FROM grants WHERE state = 'active' AND kind = 'allowance' AND period_end IS NOT NULL AND period_end <= $1 AND ${ENDS_AT_PERIOD_END_SQL} LIMIT $2`,
        [now, BACKGROUND_TENANTS_MAX],
      );
      for (const { tenant } of ended.rows) {
        if (stopped) break;
        await engine.runRollover(tenant, now, "");
      }
    } catch (err) {
      deps.logger.warn("wallet background round failed; retrying next interval", { err: String(err) });
    }
  }

  return {
    routes,
    engine,
    realtime,
    outbox,
    ledger,
    webhooks,
    async start() {
      if (started || stopped) return;
      started = true;
      if (realtime.kind === "redis") {
        // Fail the start naming the variable (not ioredis's retry-limit message).
        const client = (realtime as { client?: { ping(): Promise<unknown> } }).client;
        let timer: NodeJS.Timeout | undefined;
        try {
          // Bounded: a cluster client queues commands until it has found the cluster's slots.
          await Promise.race([
            client?.ping(),
            new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${REDIS_START_PING_MS} ms`)), REDIS_START_PING_MS))),
          ]);
        } catch (e) {
          started = false; // a later start() tries again
          throw new Error(`REDIS_URL: cannot reach Redis${config.redisCluster ? " Cluster" : ""} at ${redisTarget(config.redisUrl)}: ${(e as Error)?.message ?? e}`, { cause: e });
        } finally {
          clearTimeout(timer);
        }
      }
      if (config.rebuildOnStart) {
        const n = await realtime.invalidateAll();
        deps.logger.info("real-time wallet state dropped; rebuilt from PostgreSQL on use", { keys: n, store: realtime.kind });
      }
      await outbox.flush();
      if (config.backgroundIntervalMs > 0) {
        timer = setInterval(() => {
          if (!running) running = background().finally(() => (running = undefined));
        }, config.backgroundIntervalMs);
        timer.unref();
        webhooks.start();
      }
    },
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      if (running) await running;
      await webhooks.stop();
      await realtime.close();
    },
  };
}

/** How long start() waits for Redis to answer a PING. */
const REDIS_START_PING_MS = 15_000;

/** How often a lasting Redis connection error is logged (ioredis retries every few hundred ms). */
const REDIS_ERROR_LOG_INTERVAL_MS = 10_000;

/** host:port/db of a Redis URL, without its password (for error messages). */
function redisTarget(url: string | undefined): string {
  if (url === undefined) return "(unset)";
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname === "/" ? "" : u.pathname}`;
  } catch {
    return "(malformed URL)";
  }
}
