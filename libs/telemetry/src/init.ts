import { context, propagation, trace, type Context, type Tracer, type TracerProvider } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type Sampler,
  type Span,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";

/** Options of {@link initTelemetry}. */
export interface TelemetryOptions {
  /** service.name of the provider's resource (the first caller in a process names it). */
  serviceName: string;
  /** Spans go to this exporter through a SimpleSpanProcessor (tests: InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Send `exporter`'s spans through a BatchSpanProcessor instead (cheaper per span; tests need forceFlush). */
  exporterBatch?: boolean;
  /** OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces), through a BatchSpanProcessor. */
  otlpEndpoint?: string;
  /** Fraction of new root traces sampled, 0..1 (default 1). Children follow their parent's decision. */
  sampleRatio?: number;
}

/** What {@link initTelemetry} returns. */
export interface Telemetry {
  provider: TracerProvider;
  /** Flushes and removes this caller's exporters; the last caller also unregisters the globals. */
  shutdown(): Promise<void>;
  /** Exports every finished span now (tests call it before reading an exporter). */
  forceFlush(): Promise<void>;
}

/**
 * A span processor whose children can be added and removed after the provider exists: in one
 * process (npm start, the e2e test) five services and the test share one global provider,
 * and each initTelemetry call contributes its own exporter.
 */
class DynamicSpanProcessor implements SpanProcessor {
  children: SpanProcessor[] = [];
  onStart(span: Span, parentContext: Context): void {
    for (const c of this.children) c.onStart(span, parentContext);
  }
  onEnd(span: ReadableSpan): void {
    for (const c of this.children) c.onEnd(span);
  }
  async forceFlush(): Promise<void> {
    await Promise.all(this.children.map((c) => c.forceFlush()));
  }
  async shutdown(): Promise<void> {
    const cs = this.children;
    this.children = [];
    await Promise.all(cs.map((c) => c.shutdown()));
  }
}

interface State {
  provider: BasicTracerProvider;
  processor: DynamicSpanProcessor;
  contextManager: AsyncLocalStorageContextManager;
  tracer: Tracer;
  users: number;
}

let state: State | undefined;

const TRACER_NAME = "@nanobill/telemetry";

/**
 * The RPC interceptors' tracer, or undefined while initTelemetry has not registered a provider
 * (the interceptors then cost one function call: no span, no header parsing).
 */
export function rpcTracer(): Tracer | undefined {
  return state?.tracer;
}

function sampler(ratio: number | undefined): Sampler {
  if (ratio === undefined || ratio >= 1) return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  if (!(ratio >= 0)) throw new RangeError(`sampleRatio: must be between 0 and 1, got ${ratio}`);
  return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
}

/**
 * Registers (once per process) a tracer provider, the AsyncLocalStorage context manager and the
 * W3C trace-context propagator as the OpenTelemetry globals, and adds this caller's exporters.
 * Later calls reuse the same provider (its resource keeps the first serviceName; RPC spans
 * carry `nanobill.service` to tell services apart) and only add their exporters.
 */
export function initTelemetry(opts: TelemetryOptions): Telemetry {
  if (state === undefined) {
    const processor = new DynamicSpanProcessor();
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ "service.name": opts.serviceName }),
      sampler: sampler(opts.sampleRatio),
      spanProcessors: [processor],
    });
    const contextManager = new AsyncLocalStorageContextManager();
    contextManager.enable();
    context.setGlobalContextManager(contextManager);
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    trace.setGlobalTracerProvider(provider);
    state = { provider, processor, contextManager, tracer: provider.getTracer(TRACER_NAME), users: 0 };
  }
  const s = state;
  s.users++;
  const mine: SpanProcessor[] = [];
  if (opts.exporter) mine.push(opts.exporterBatch ? new BatchSpanProcessor(opts.exporter) : new SimpleSpanProcessor(opts.exporter));
  if (opts.otlpEndpoint) mine.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: opts.otlpEndpoint })));
  s.processor.children.push(...mine);
  let done = false;
  return {
    provider: s.provider,
    async forceFlush() {
      await Promise.all(mine.map((p) => p.forceFlush()));
    },
    async shutdown() {
      if (done) return;
      done = true;
      s.processor.children = s.processor.children.filter((p) => !mine.includes(p));
      await Promise.all(mine.map((p) => p.shutdown()));
      s.users--;
      if (s.users === 0 && state === s) {
        state = undefined;
        await s.provider.shutdown();
        trace.disable();
        propagation.disable();
        context.disable();
      }
    },
  };
}

/** A tracer from the global provider (a no-op tracer until initTelemetry is called). */
export function getTracer(name: string): Tracer {
  return trace.getTracer(name);
}
