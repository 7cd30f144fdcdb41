/** The ledger's Connect routes and the limits its standalone server runs with. */
import type { ConnectRouter } from "@connectrpc/connect";
import { CreateTransfersRequestViewSchema, CreateTransfersResponseViewSchema, LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import type { ServerLimits } from "@nanobill/service-kit";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX, TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MAX } from "./limits.js";
import { createLedgerHandlers } from "./service.js";
import type { LedgerStore } from "./store/types.js";

/**
 * LedgerService as the server registers it: CreateTransfers reads CreateTransfersRequestView and
 * answers with CreateTransfersResponseView (the same wire formats, each transfer decoded and each
 * result encoded by wire.ts). Every other method, and every client, uses the generated service.
 */
const createTransfersView = { ...LedgerService.method.createTransfers, input: CreateTransfersRequestViewSchema, output: CreateTransfersResponseViewSchema };
export const LedgerServiceForServer = {
  ...LedgerService,
  methods: LedgerService.methods.map((m) => (m.localName === "createTransfers" ? createTransfersView : m)),
  method: { ...LedgerService.method, createTransfers: createTransfersView },
} as unknown as typeof LedgerService;

/** Registers LedgerService on a router. */
export function createLedgerRoutes(store: LedgerStore): (router: ConnectRouter) => void {
  const impl = createLedgerHandlers(store);
  return (router) => {
    router.service(LedgerServiceForServer, impl);
  };
}

/** Server limits for the ledger (a full 8,190-transfer batch fits in a request). */
export const LEDGER_SERVER_LIMITS: Partial<ServerLimits> = {
  readMaxBytes: REQUEST_BYTES_MAX,
  writeMaxBytes: RESPONSE_BYTES_MAX,
  timeoutMsMax: TIMEOUT_MS_MAX,
  timeoutMsDefault: TIMEOUT_MS_DEFAULT,
};
