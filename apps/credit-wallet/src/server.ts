/** The credit wallet's Connect routes and the limits its standalone server runs with. */
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import type { ServerLimits } from "@nanobill/service-kit";
import { REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX, TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MAX } from "./limits.js";

/** Registers CreditWalletService on a router. */
export function createWalletRoutes(impl: ServiceImpl<typeof CreditWalletService>): (router: ConnectRouter) => void {
  return (router) => {
    router.service(CreditWalletService, impl);
  };
}

/** Server limits of the wallet. */
export const WALLET_SERVER_LIMITS: Partial<ServerLimits> = {
  readMaxBytes: REQUEST_BYTES_MAX,
  writeMaxBytes: RESPONSE_BYTES_MAX,
  timeoutMsMax: TIMEOUT_MS_MAX,
  timeoutMsDefault: TIMEOUT_MS_DEFAULT,
};
