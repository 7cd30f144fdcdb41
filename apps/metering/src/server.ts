// Routes of the metering service. Known errors are mapped inside each handler (router-level
// interceptors of the host server - auth, tracing, error boundary - stay in force: per-service
// router options would replace them).
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { toRpcError } from "./errors.js";
import { createHandlers, type HandlerDeps } from "./service.js";

function withErrorMapping<T extends object>(impl: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(impl)) {
    out[name] = async (...args: unknown[]) => {
      try {
        return await (fn as (...a: unknown[]) => Promise<unknown>)(...args);
      } catch (e) {
        throw toRpcError(e);
      }
    };
  }
  return out as T;
}

export function createMeteringRoutes(deps: HandlerDeps): (router: ConnectRouter) => void {
  const impl: ServiceImpl<typeof MeteringService> = withErrorMapping(createHandlers(deps));
  return (router) => {
    router.service(MeteringService, impl);
  };
}
