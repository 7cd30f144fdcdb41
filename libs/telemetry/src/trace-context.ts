import { context, ROOT_CONTEXT, SpanStatusCode, trace, type Context, type Link, type TextMapGetter, type TextMapSetter } from "@opentelemetry/api";
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

/** Most links a batch span carries (the SDK's default span link limit); the rest are counted. */
export const BATCH_LINKS_MAX = 128;

/**
 * Runs fn for a batch of items that each carry the trace context of the call that produced them
 * (OpenTelemetry's pattern for batch processing): inside a span named `name` that continues the
 * first item's trace (a root span when it has none) and links to every other distinct trace
 * context of the batch, at most BATCH_LINKS_MAX (`nanobill.batch.links_dropped` counts the rest),
 * so an item whose trace is not the parent's is still found from the batch and its RPCs.
 * The span ends when fn settles (an error marks it failed and is rethrown).
 */
export async function withBatchTrace<T>(name: string, items: ReadonlyArray<StoredTraceContext | undefined>, fn: () => Promise<T>): Promise<T> {
  const parent = contextFromTraceContext(items[0], ROOT_CONTEXT);
  const parentSc = trace.getSpanContext(parent);
  const seen = new Set<string>(parentSc ? [`${parentSc.traceId}-${parentSc.spanId}`] : []);
  const links: Link[] = [];
  let dropped = 0;
  for (const tc of items) {
    const sc = trace.getSpanContext(contextFromTraceContext(tc, ROOT_CONTEXT));
    if (sc === undefined || !trace.isSpanContextValid(sc)) continue;
    const key = `${sc.traceId}-${sc.spanId}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (links.length < BATCH_LINKS_MAX) links.push({ context: sc });
    else dropped++;
  }
  const span = trace.getTracer("@nanobill/telemetry").startSpan(name, { links, attributes: { "nanobill.batch.items": items.length, "nanobill.batch.links_dropped": dropped } }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), fn);
  } catch (e) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: String((e as Error)?.message ?? e).slice(0, 500) });
    throw e;
  } finally {
    span.end();
  }
}
