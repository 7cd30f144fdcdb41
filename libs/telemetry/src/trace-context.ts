import { context, trace, type Context, type TextMapGetter, type TextMapSetter } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

/** A W3C trace context as stored with an event (nanobill.common.v1.TraceContext). */
export interface StoredTraceContext {
  traceparent: string;
  tracestate: string;
}

/** The W3C propagator, used directly so that storing/continuing works without globals. */
export const w3c = new W3CTraceContextPropagator();

type Carrier = Record<string, string>;
const recordSetter: TextMapSetter<Carrier> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};
const recordGetter: TextMapGetter<Carrier> = {
  get(carrier, key) {
    return carrier[key];
  },
  keys(carrier) {
    return Object.keys(carrier);
  },
};

/**
 * The active span's trace context as W3C header values, to store with an event so that an
 * asynchronous step can continue the trace later; undefined when no valid span is active.
 */
export function currentTraceContext(ctx: Context = context.active()): StoredTraceContext | undefined {
  const sc = trace.getSpanContext(ctx);
  if (sc === undefined || !trace.isSpanContextValid(sc)) return undefined;
  const carrier: Carrier = {};
  w3c.inject(ctx, carrier, recordSetter);
  const traceparent = carrier["traceparent"];
  if (traceparent === undefined) return undefined;
  return { traceparent, tracestate: carrier["tracestate"] ?? "" };
}

/** The context that continues a stored trace context (base unchanged when absent or malformed). */
export function contextFromTraceContext(
  tc: { traceparent: string; tracestate?: string } | undefined,
  base: Context = context.active(),
): Context {
  if (tc === undefined || tc.traceparent === "") return base;
  const carrier: Carrier = { traceparent: tc.traceparent };
  if (tc.tracestate) carrier["tracestate"] = tc.tracestate;
  return w3c.extract(base, carrier, recordGetter);
}

/**
 * Run fn with the stored trace context active: spans started inside (also after awaits in an
 * async fn, thanks to the AsyncLocalStorage context manager installed by initTelemetry) become
 * children of the stored span. With tc undefined/empty/malformed, fn runs in the current
 * context unchanged. Without initTelemetry (no context manager) fn simply runs.
 */
export function withTraceContext<T>(tc: { traceparent: string; tracestate?: string } | undefined, fn: () => T): T {
  return context.with(contextFromTraceContext(tc), fn);
}
