export { ATTR, nanosAttr, type AttrName } from "./attributes.js";
export { initTelemetry, getTracer, type Telemetry, type TelemetryOptions } from "./init.js";
export { createTracingInterceptor } from "./interceptor.js";
export { currentTraceContext, withTraceContext, contextFromTraceContext, type StoredTraceContext } from "./trace-context.js";
