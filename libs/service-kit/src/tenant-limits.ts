import type { Interceptor, StreamResponse } from "@connectrpc/connect";
import { ANY_TENANT, isOperator, kPrincipal, TENANT_HEADER, type Principal } from "./auth.js";
import { limitExceeded } from "./errors.js";
import {
  TENANT_INFLIGHT_MAX_DEFAULT,
  TENANT_INFLIGHT_MAX_MAX,
  TENANT_LIMITER_ENTRIES_MAX,
  TENANT_REQUESTS_BURST_DEFAULT,
  TENANT_REQUESTS_PER_SECOND_DEFAULT,
  TENANT_REQUESTS_PER_SECOND_MAX,
} from "./limits.js";

/** Per-tenant limits of one server (each server process counts on its own). */
export interface TenantLimits {
  /** Sustained calls per second per tenant (token bucket refill). */
  requestsPerSecond: number;
  /** Bucket size: calls a tenant may make at once above the sustained rate. */
  requestsBurst: number;
  /** Calls of one tenant in flight at once (a stream counts until it ends). */
  inflightMax: number;
  /** Count the operator's internal key (tenant "*") too (default false: service-to-service calls are limited at the edge). */
  limitInternal: boolean;
}

export const TENANT_LIMITS_DEFAULT: TenantLimits = {
  requestsPerSecond: TENANT_REQUESTS_PER_SECOND_DEFAULT,
  requestsBurst: TENANT_REQUESTS_BURST_DEFAULT,
  inflightMax: TENANT_INFLIGHT_MAX_DEFAULT,
  limitInternal: false,
};

/** Field names in the LIMIT_EXCEEDED error (metadata.field). */
export const TENANT_RATE_FIELD = "tenant.requests_per_second";
export const TENANT_INFLIGHT_FIELD = "tenant.inflight";

function check(name: string, v: number, min: number, max: number): void {
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new RangeError(`tenantLimits.${name}: must be an integer between ${min} and ${max}, got ${v}`);
  }
}

export function resolveTenantLimits(partial: Partial<TenantLimits> | undefined): TenantLimits {
  const l: TenantLimits = { ...TENANT_LIMITS_DEFAULT };
  for (const [k, v] of Object.entries(partial ?? {})) if (v !== undefined) (l as unknown as Record<string, unknown>)[k] = v;
  check("requestsPerSecond", l.requestsPerSecond, 1, TENANT_REQUESTS_PER_SECOND_MAX);
  check("requestsBurst", l.requestsBurst, 1, TENANT_REQUESTS_PER_SECOND_MAX);
  check("inflightMax", l.inflightMax, 1, TENANT_INFLIGHT_MAX_MAX);
  return l;
}

interface Bucket {
  tokens: number;
  /** ms (monotonic) of the last refill. */
  at: number;
  inflight: number;
}

/** A token bucket and an in-flight counter per tenant. `now` is a monotonic ms clock (injected in tests). */
export interface TenantLimiter {
  /** Takes one token and one in-flight slot; returns the release function, or the exceeded field. */
  acquire(tenant: string): (() => void) | typeof TENANT_RATE_FIELD | typeof TENANT_INFLIGHT_FIELD;
  readonly limits: TenantLimits;
  /** Tenants currently tracked. */
  readonly size: number;
}

export function createTenantLimiter(partial?: Partial<TenantLimits>, now: () => number = () => performance.now()): TenantLimiter {
  const limits = resolveTenantLimits(partial);
  const perMs = limits.requestsPerSecond / 1000;
  const buckets = new Map<string, Bucket>();
  const prune = (t: number): void => {
    for (const [k, b] of buckets) {
      if (b.inflight === 0 && b.tokens + (t - b.at) * perMs >= limits.requestsBurst) buckets.delete(k);
    }
  };
  return {
    limits,
    get size() {
      return buckets.size;
    },
    acquire(tenant) {
      const t = now();
      let b = buckets.get(tenant);
      if (b === undefined) {
        if (buckets.size >= TENANT_LIMITER_ENTRIES_MAX) prune(t);
        b = { tokens: limits.requestsBurst, at: t, inflight: 0 };
        buckets.set(tenant, b);
      } else if (t > b.at) {
        b.tokens = Math.min(limits.requestsBurst, b.tokens + (t - b.at) * perMs);
        b.at = t;
      }
      if (b.inflight >= limits.inflightMax) return TENANT_INFLIGHT_FIELD;
      if (b.tokens < 1) return TENANT_RATE_FIELD;
      b.tokens -= 1;
      b.inflight++;
      const bucket = b;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        bucket.inflight--;
      };
    },
  };
}

/** The tenant a call is counted against: the key's tenant, or the acting tenant of an internal key. */
function limitedTenant(p: Principal, header: string | null): string {
  if (p.tenant !== ANY_TENANT) return p.tenant;
  return header !== null && header !== "" ? header : ANY_TENANT;
}

async function* releaseAfter<T>(it: AsyncIterable<T>, release: () => void): AsyncGenerator<T> {
  try {
    yield* it;
  } finally {
    release();
  }
}

/** release, at most once. */
function once(release: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    release();
  };
}

/**
 * Per-tenant rate and concurrency limits, installed by startServer right inside auth:
 * a call over the tenant's token bucket or in-flight limit fails with ResourceExhausted
 * (reason LIMIT_EXCEEDED, metadata.field = tenant.requests_per_second | tenant.inflight).
 * Calls without a principal (public methods) and, unless limitInternal, the operator's internal key
 * (tenant "*") are not counted; an internal key bound to a tenant counts for that tenant.
 */
export function createTenantLimitInterceptor(partial?: Partial<TenantLimits>, limiter?: TenantLimiter): Interceptor {
  const lim = limiter ?? createTenantLimiter(partial);
  const { limits } = lim;
  return (next) => async (req) => {
    const p = req.contextValues.get(kPrincipal);
    if (p === undefined) return next(req);
    const internal = p.scopes.includes("internal");
    // Only the operator's key (tenant "*") is exempt; an internal key bound to a tenant counts for it.
    if (isOperator(p) && !limits.limitInternal) return next(req);
    const got = lim.acquire(internal ? limitedTenant(p, req.header.get(TENANT_HEADER)) : p.tenant);
    if (typeof got === "string") {
      throw limitExceeded(got, got === TENANT_RATE_FIELD ? limits.requestsPerSecond : limits.inflightMax);
    }
    let res;
    try {
      res = await next(req);
    } catch (e) {
      got();
      throw e;
    }
    if (res.stream) {
      // Freed when the stream ends, or when the call is aborted (the client went away, the deadline
      // passed) even if the response was never iterated: a generator never started runs no finally.
      const release = once(got);
      req.signal.addEventListener("abort", release, { once: true });
      const s: StreamResponse = { ...res, message: releaseAfter(res.message, release) };
      return s as typeof res;
    }
    got();
    return res;
  };
}
