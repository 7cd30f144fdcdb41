// Routes of the metering service. Known errors are mapped inside each handler (router-level
// interceptors of the host server - auth, tracing, error boundary - stay in force: per-service
// router options would replace them).
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { IngestEventsRequestViewSchema, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { TraceService } from "@nanobill/contracts/opentelemetry/proto/collector/trace/v1/trace_service_pb";
import { invalidArgument, registerBinaryView, requireScope, tenantOf } from "@nanobill/service-kit";
import { toRpcError } from "./errors.js";
import { exportSpans, OtlpFormatError, spansFromProto } from "./otlp-http.js";
import { createHandlers, genAiMappingOf, ingestEventsBinary, ingestInputs, type HandlerDeps } from "./service.js";

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
  // OTLP/gRPC: OpenTelemetry exporters send GenAI spans here (authorization: Bearer <ingest key>).
  const otlp: ServiceImpl<typeof TraceService> = withErrorMapping({
    async export(req, ctx) {
      requireScope(ctx, "ingest");
      const tenant = tenantOf(ctx);
      let spans;
      try {
        spans = spansFromProto(req);
      } catch (e) {
        if (e instanceof OtlpFormatError) throw invalidArgument(e.field, e.message.slice(e.field.length + 2));
        throw e;
      }
      return exportSpans(spans, await genAiMappingOf(deps.store, tenant), (events) => ingestInputs(deps, tenant, events));
    },
  });
  // Binary IngestEvents calls on the kit's fast path read IngestEventsRequestView (each Event as
  // its bytes, decoded in one pass by wire.ts); JSON and every other call use the generated messages.
  const binary = withErrorMapping({ ingestEvents: ingestEventsBinary(deps) });
  return (router) => {
    router.service(MeteringService, impl);
    registerBinaryView(router, MeteringService.method.ingestEvents, { input: IngestEventsRequestViewSchema, impl: binary.ingestEvents });
    // OTLP's messages have double and fixed64 fields (doubleValue 1e20 is legitimate JSON there):
    // the kit's JSON big-integer check, written for int64 fields, is left out for this service
    // (its own jsonOptions replace the server's); OTLP/HTTP JSON has its own parser (otlp-http.ts).
    router.service(TraceService, otlp, { jsonOptions: {} });
  };
}
