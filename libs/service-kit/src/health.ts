import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from "@nanobill/contracts/grpc/health/v1/health_pb";

export { ServingStatus };

/**
 * Serving status per service name ("" = the whole server), the state behind the standard
 * grpc.health.v1.Health service (Check + Watch).
 */
export interface HealthState {
  get(service: string): ServingStatus | undefined;
  set(service: string, status: ServingStatus): void;
  /** Every known service (and "") becomes NOT_SERVING; Watch streams send it and end. */
  shutdown(): void;
}

export function createHealthState(): HealthState & { watch(): { changed: Promise<void>; dispose(): void }; readonly stopped: boolean } {
  const statuses = new Map<string, ServingStatus>();
  let wake: Array<() => void> = [];
  let stopped = false;
  const notify = (): void => {
    const w = wake;
    wake = [];
    for (const f of w) f();
  };
  return {
    get: (s) => statuses.get(s),
    set(s, st) {
      if (stopped) return;
      if (statuses.get(s) !== st) {
        statuses.set(s, st);
        notify();
      }
    },
    shutdown() {
      for (const k of statuses.keys()) statuses.set(k, ServingStatus.NOT_SERVING);
      stopped = true;
      notify();
    },
    get stopped() {
      return stopped;
    },
    watch() {
      let f!: () => void;
      const changed = new Promise<void>((r) => (f = r));
      wake.push(f);
      return {
        changed,
        dispose() {
          wake = wake.filter((x) => x !== f);
        },
      };
    },
  };
}

type WatchableHealth = ReturnType<typeof createHealthState>;

function response(status: ServingStatus): HealthCheckResponse {
  return create(HealthCheckResponseSchema, { status });
}

/** Registers grpc.health.v1.Health (public: no key; no tracing; own error handling). */
export function registerHealth(router: ConnectRouter, state: WatchableHealth): void {
  router.service(
    Health,
    {
      check(req: HealthCheckRequest) {
        const st = state.get(req.service);
        if (st === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
        return response(st);
      },
      async *watch(req: HealthCheckRequest, ctx: HandlerContext) {
        let last: ServingStatus | undefined;
        for (;;) {
          const w = state.watch();
          const st = state.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
          if (st !== last) {
            last = st;
            yield response(st);
          }
          if (state.stopped || ctx.signal.aborted) {
            w.dispose();
            return;
          }
          const aborted = new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true }));
          await Promise.race([w.changed, aborted]);
          w.dispose();
        }
      },
    },
    { interceptors: [] },
  );
}
