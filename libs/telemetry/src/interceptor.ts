import type { Interceptor, StreamResponse, UnaryResponse } from "@connectrpc/connect";
import { ConnectError, Code } from "@connectrpc/connect";
import {
  context,
  propagation,
  trace,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";
import type { DescMethod } from "@bufbuild/protobuf";
import { ATTR } from "./attributes.js";
import { rpcTracer } from "./init.js";

const headersGetter: TextMapGetter<Headers> = {
  get(h, key) {
    return h.get(key) ?? undefined;
  },
  keys(h) {
    return [...h.keys()];
  },
};
const headersSetter: TextMapSetter<Headers> = {
  set(h, key, value) {
    h.set(key, value);
  },
};

interface MethodInfo {
  name: string;
  attributes: Attributes;
}
/** Span name and fixed attributes per method, computed once per interceptor. */
function infoOf(methodInfo: WeakMap<DescMethod, MethodInfo>, method: DescMethod, serviceName: string | undefined): MethodInfo {
  let info = methodInfo.get(method);
  if (info === undefined) {
    const service = method.parent.typeName;
    const attributes: Attributes = { "rpc.service": service, "rpc.method": method.name };
    if (serviceName !== undefined) attributes[ATTR.SERVICE] = serviceName;
    info = { name: `${service}/${method.name}`, attributes };
    methodInfo.set(method, info);
  }
  return info;
}

/** Marks a span failed with the Connect code of err (the error itself is never recorded). */
function markError(span: Span, err: unknown): void {
  const ce = ConnectError.from(err);
  span.setAttribute("rpc.connect_rpc.error_code", Code[ce.code] ?? String(ce.code));
  span.setStatus({ code: SpanStatusCode.ERROR, message: Code[ce.code] });
}

/** Ends span when a streamed response finishes; each pull runs inside ctx (the handler's context). */
async function* traceStream<T>(it: AsyncIterable<T>, span: Span, ctx: Context): AsyncGenerator<T> {
  const iter = it[Symbol.asyncIterator]();
  try {
    for (;;) {
      const r = await context.with(ctx, () => iter.next());
      if (r.done) break;
      yield r.value;
    }
  } catch (e) {
    markError(span, e);
    throw e;
  } finally {
    span.end();
  }
}

function finish<R extends UnaryResponse | StreamResponse>(res: R, span: Span, ctx: Context): R {
  if (res.stream) {
    return { ...res, message: traceStream(res.message, span, ctx) };
  }
  span.end();
  return res;
}

/**
 * A Connect interceptor that makes one span per RPC, named `<package.Service>/<Method>`, with
 * rpc.system / rpc.service / rpc.method (and nanobill.service when given) and an error status
 * carrying the Connect code. The client side injects the active W3C trace context
 * (traceparent/tracestate) into the request headers; the server side extracts it and makes the
 * server span active for the handler, so spans of downstream calls join the caller's trace.
 * Until initTelemetry has run, the interceptor passes calls through untouched.
 */
export function createTracingInterceptor(side: "server" | "client", opts: { serviceName?: string } = {}): Interceptor {
  const serviceName = opts.serviceName;
  const methodInfo = new WeakMap<DescMethod, MethodInfo>();
  if (side === "server") {
    return (next) => async (req) => {
      const tracer = rpcTracer();
      if (tracer === undefined) return next(req);
      const info = infoOf(methodInfo, req.method, serviceName);
      const hasParent = req.header.has("traceparent");
      const parent = hasParent ? propagation.extract(ROOT_CONTEXT, req.header, headersGetter) : ROOT_CONTEXT;
      const span = tracer.startSpan(info.name, { kind: SpanKind.SERVER, attributes: info.attributes }, parent);
      if (!span.isRecording()) {
        // Not sampled: with no caller context there is nothing to continue or end; skip the
        // context switch (downstream calls of this handler then sample on their own).
        if (!hasParent) return next(req);
      } else {
        span.setAttribute("rpc.system", (req.header.get("content-type") ?? "").startsWith("application/grpc") ? "grpc" : "connect_rpc");
      }
      const ctx = trace.setSpan(parent, span);
      let res;
      try {
        res = await context.with(ctx, () => next(req));
      } catch (e) {
        markError(span, e);
        span.end();
        throw e;
      }
      return finish(res, span, ctx);
    };
  }
  return (next) => async (req) => {
    const tracer = rpcTracer();
    if (tracer === undefined) return next(req);
    const info = infoOf(methodInfo, req.method, serviceName);
    const active = context.active();
    const span = tracer.startSpan(info.name, { kind: SpanKind.CLIENT, attributes: info.attributes }, active);
    if (span.isRecording()) span.setAttribute("rpc.system", "connect_rpc");
    const ctx = trace.setSpan(active, span);
    propagation.inject(ctx, req.header, headersSetter);
    let res;
    try {
      res = await next(req);
    } catch (e) {
      markError(span, e);
      span.end();
      throw e;
    }
    return finish(res, span, ctx);
  };
}
