/**
 * @nanobill/invoicing: billing periods, invoices, credit notes. A library (createInvoicingService)
 * and a standalone server (main.ts).
 */
import type { Client, ConnectRouter } from "@connectrpc/connect";
import type { Db } from "@nanobill/db";
import type { Clock, Logger } from "@nanobill/service-kit";
import type { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import type { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { INVOICING_CONFIG_DEFAULT, type InvoicingConfig } from "./config.js";
import { createLedgerPoster } from "./ledger.js";
import { createInvoicingRoutes } from "./server.js";
import { createInvoicingCore, retryPendingLedger, type DraftPassResult } from "./service.js";
import { createInvoiceStore } from "./store/invoice-store.js";
import { createUpstream } from "./upstream.js";

export { migrationsDir } from "./migrations-dir.js";
export { loadConfig, INVOICING_CONFIG_DEFAULT, type InvoicingConfig } from "./config.js";
export * as limits from "./limits.js";
export { INVOICING_SERVER_LIMITS } from "./limits.js";

export interface InvoicingDeps {
  db: Db;
  logger: Logger;
  clock: Clock;
  clients: {
    rating: Client<typeof RatingService>;
    wallet: Client<typeof CreditWalletService>;
    ledger: Client<typeof LedgerService>;
  };
  config?: Partial<InvoicingConfig>;
}

export type { DraftPassResult } from "./service.js";

export interface InvoicingServiceHandle {
  routes(router: ConnectRouter): void;
  /** start: the background loops (ledger retry; the draft loop unless config.draftLoopMs = 0). */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** runDraftPass: one pass of the draft loop now (what the loop runs every draftLoopMs). */
  runDraftPass(): Promise<DraftPassResult>;
}

export async function createInvoicingService(deps: InvoicingDeps): Promise<InvoicingServiceHandle> {
  const config = { ...INVOICING_CONFIG_DEFAULT, ...deps.config };
  const store = createInvoiceStore(deps.db);
  const ledger = createLedgerPoster(deps.clients.ledger);
  const core = createInvoicingCore({ store, upstream: createUpstream(deps.clients), ledger, clock: deps.clock, logger: deps.logger, lateEventAgeMs: config.lateEventAgeMs });
  const routes = createInvoicingRoutes(core.handlers);
  const runDraftPass = () => core.sweepDrafts(config.draftLoopBatch, config.draftLoopMs);
  let timer: NodeJS.Timeout | undefined;
  let draftTimer: NodeJS.Timeout | undefined;
  let inFlight: Promise<unknown> = Promise.resolve();
  // one pass at a time per process (a pass that outlasts the interval delays the next, never overlaps it)
  let draftsInFlight: Promise<unknown> = Promise.resolve();
  return {
    routes,
    runDraftPass,
    async start() {
      if (timer !== undefined) return;
      timer = setInterval(() => {
        inFlight = inFlight.then(() => retryPendingLedger({ store, ledger, logger: deps.logger })).catch((e: unknown) => deps.logger.warn("ledger retry loop failed", { error: String(e) }));
      }, config.ledgerRetryMs);
      timer.unref();
      if (config.draftLoopMs > 0) {
        let busy = false;
        draftTimer = setInterval(() => {
          if (busy) return;
          busy = true;
          draftsInFlight = runDraftPass()
            .then((r) => {
              if (r.claimed > 0) deps.logger.info("draft loop pass", { ...r });
            })
            .catch((e: unknown) => deps.logger.warn("draft loop pass failed", { error: String(e) }))
            .finally(() => {
              busy = false;
            });
        }, config.draftLoopMs);
        draftTimer.unref();
      }
    },
    async stop() {
      if (timer !== undefined) clearInterval(timer);
      if (draftTimer !== undefined) clearInterval(draftTimer);
      timer = undefined;
      draftTimer = undefined;
      await inFlight;
      await draftsInFlight;
    },
  };
}
