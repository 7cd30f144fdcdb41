// Routes of the rating service. Known errors are mapped inside each handler (router-level
// interceptors of the host server - auth, tracing, error boundary - stay in force).
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
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

/** createRatingRoutes: registers RatingService on a router. */
export function createRatingRoutes(deps: HandlerDeps): (router: ConnectRouter) => void {
  const impl: ServiceImpl<typeof RatingService> = withErrorMapping(createHandlers(deps));
  return (router) => {
    router.service(RatingService, impl);
  };
}
