/** @nanobill/ledger: the double-entry nano-unit ledger as a library (createLedgerService) and a process (main.ts). */
import type { ConnectRouter } from "@connectrpc/connect";
import type { Db } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import { LEDGER_CONFIG_DEFAULT, type LedgerConfig } from "./config.js";
import { EXPIRY_SWEEP_BATCH_MAX } from "./limits.js";
import { createLedgerRoutes } from "./server.js";
import { createPgLedgerStore } from "./store/pg-store.js";
import type { LedgerStore } from "./store/types.js";

export { migrationsDir } from "./store/migrations-dir.js";
export { LEDGER_SERVER_LIMITS } from "./server.js";
export { type LedgerConfig, LEDGER_CONFIG_DEFAULT, loadConfig } from "./config.js";
export * as ledgerLimits from "./limits.js";

export interface LedgerDeps {
  db: Db;
  logger: Logger;
  clock: Clock;
  /** The ledger calls no other service. */
  clients?: Record<string, never>;
  config?: Partial<LedgerConfig>;
}

export interface LedgerServiceHandle {
  routes(router: ConnectRouter): void;
  /** Starts the pending-transfer expiry sweep; idempotent. */
  start(): Promise<void>;
  /** Stops the sweep and waits for queued writes to commit. */
  stop(): Promise<void>;
  /** The store (tests, benchmarks, the platform's auditor). */
  readonly store: LedgerStore;
}

/** The wall clock in µs since the epoch from a Clock (millisecond precision; the ledger bumps ties by 1 µs). */
export function clockUs(clock: Clock): () => bigint {
  return () => BigInt(clock.now().getTime()) * 1000n;
}

export async function createLedgerService(deps: LedgerDeps): Promise<LedgerServiceHandle> {
  const config: LedgerConfig = { ...LEDGER_CONFIG_DEFAULT, ...deps.config };
  const store = createPgLedgerStore({
    db: deps.db,
    nowUs: clockUs(deps.clock),
    queueItemsMax: config.commitQueueItemsMax,
    itemsPerCommitMax: config.commitItemsPerTransactionMax,
  });
  const routes = createLedgerRoutes(store);
  let timer: NodeJS.Timeout | undefined;
  let sweeping: Promise<void> | undefined;
  let stopped = false;

  async function sweep(): Promise<void> {
    try {
      for (;;) {
        const n = await store.expireDue();
        if (n > 0) deps.logger.info("expired pending transfers", { count: n });
        if (n < EXPIRY_SWEEP_BATCH_MAX || stopped) break;
      }
    } catch (err) {
      deps.logger.warn("expiry sweep failed; retrying at the next interval", { err });
    }
  }

  return {
    routes,
    store,
    async start() {
      if (timer || stopped || config.expirySweepIntervalMs === 0) return;
      timer = setInterval(() => {
        if (!sweeping) sweeping = sweep().finally(() => (sweeping = undefined));
      }, config.expirySweepIntervalMs);
      timer.unref();
    },
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      if (sweeping) await sweeping;
      await store.close();
    },
  };
}
