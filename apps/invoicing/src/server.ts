/** createInvoicingRoutes: registers InvoicingService on a Connect router. */
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";

export function createInvoicingRoutes(impl: ServiceImpl<typeof InvoicingService>): (router: ConnectRouter) => void {
  return (router) => {
    router.service(InvoicingService, impl);
  };
}

/** INVOICING_SERVER_LIMITS: the request/response and deadline limits of the server. */
export { READ_MAX_BYTES, WRITE_MAX_BYTES, TIMEOUT_MS_MAX, TIMEOUT_MS_DEFAULT } from "./limits.js";
