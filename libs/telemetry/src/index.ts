export { ATTR, nanosAttr, type AttrName } from "./attributes.js";
export { initTelemetry, getTracer, type Telemetry, type TelemetryOptions } from "./init.js";
export { createTracingInterceptor } from "./interceptor.js";
export { BATCH_LINKS_MAX, currentTraceContext, withBatchTrace, withTraceContext, contextFromTraceContext, type StoredTraceContext } from "./trace-context.js";
