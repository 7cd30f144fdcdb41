/** The ledger's Connect routes and the limits its standalone server runs with. */
import type { ConnectRouter } from "@connectrpc/connect";
import { CreateTransfersRequestViewSchema, CreateTransfersResponseViewSchema, LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { registerBinaryView, type ServerLimits } from "@nanobill/service-kit";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX, TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MAX } from "./limits.js";
import { createLedgerHandlers, createTransfersBinary } from "./service.js";
import type { LedgerStore } from "./store/types.js";

/**
 * Registers LedgerService on a router. Binary CreateTransfers calls on the service kit's fast path
 * read CreateTransfersRequestView and answer CreateTransfersResponseView (the same wire formats,
 * each transfer decoded and each result encoded by wire.ts); JSON and every other call use the
 * generated messages and the regular handler.
 */
export function createLedgerRoutes(store: LedgerStore): (router: ConnectRouter) => void {
  const impl = createLedgerHandlers(store);
  const binary = createTransfersBinary(store);
  return (router) => {
    router.service(LedgerService, impl);
    registerBinaryView(router, LedgerService.method.createTransfers, {
      input: CreateTransfersRequestViewSchema,
      output: CreateTransfersResponseViewSchema,
      impl: binary,
    });
  };
}

/** Server limits for the ledger (a full 8,190-transfer batch fits in a request). */
export const LEDGER_SERVER_LIMITS: Partial<ServerLimits> = {
  readMaxBytes: REQUEST_BYTES_MAX,
  writeMaxBytes: RESPONSE_BYTES_MAX,
  timeoutMsMax: TIMEOUT_MS_MAX,
  timeoutMsDefault: TIMEOUT_MS_DEFAULT,
};
