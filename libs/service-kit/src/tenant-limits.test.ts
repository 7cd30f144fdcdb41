import { afterAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { createApiKeyAuthenticator, keyIdOf, parseApiKeysEnv } from "./auth.js";
import { closeClientSessions, createClientTransport, forTenant } from "./client.js";
import { errorInfoOf } from "./errors.js";
import { TENANT_INFLIGHT_MAX_DEFAULT, TENANT_REQUESTS_BURST_DEFAULT, TENANT_REQUESTS_PER_SECOND_DEFAULT } from "./limits.js";
import { silentLogger } from "./logger.js";
import { startServer, type StartedServer } from "./server.js";
import { createTenantLimiter, resolveTenantLimits, TENANT_INFLIGHT_FIELD, TENANT_RATE_FIELD } from "./tenant-limits.js";
import { echoRoutes } from "./test-echo.js";

describe("createTenantLimiter", () => {
  it("lets a tenant burst up to requestsBurst, then refills at requestsPerSecond", () => {
    let t = 0;
    const lim = createTenantLimiter({ requestsPerSecond: 10, requestsBurst: 3, inflightMax: 100 }, () => t);
    for (let i = 0; i < 3; i++) expect(typeof lim.acquire("tnt_a")).toBe("function");
    expect(lim.acquire("tnt_a")).toBe(TENANT_RATE_FIELD);
    // Another tenant has its own bucket.
    expect(typeof lim.acquire("tnt_b")).toBe("function");
    t = 99; // 0.99 token
    expect(lim.acquire("tnt_a")).toBe(TENANT_RATE_FIELD);
    t = 200; // 0.99 + 1.01 tokens
    expect(typeof lim.acquire("tnt_a")).toBe("function");
    expect(typeof lim.acquire("tnt_a")).toBe("function");
    expect(lim.acquire("tnt_a")).toBe(TENANT_RATE_FIELD);
    t = 10_000; // never more than the burst
    for (let i = 0; i < 3; i++) expect(typeof lim.acquire("tnt_a")).toBe("function");
    expect(lim.acquire("tnt_a")).toBe(TENANT_RATE_FIELD);
  });

  it("counts calls in flight per tenant and frees the slot once on release", () => {
    const lim = createTenantLimiter({ requestsPerSecond: 1000, requestsBurst: 1000, inflightMax: 2 }, () => 0);
    const a = lim.acquire("tnt_a");
    const b = lim.acquire("tnt_a");
    expect(lim.acquire("tnt_a")).toBe(TENANT_INFLIGHT_FIELD);
    expect(typeof lim.acquire("tnt_b")).toBe("function");
    (a as () => void)();
    (a as () => void)(); // idempotent
    expect(typeof lim.acquire("tnt_a")).toBe("function");
    expect(lim.acquire("tnt_a")).toBe(TENANT_INFLIGHT_FIELD);
    (b as () => void)();
  });

  it("has named defaults and refuses invalid limits naming the field", () => {
    expect(resolveTenantLimits({})).toEqual({
      requestsPerSecond: TENANT_REQUESTS_PER_SECOND_DEFAULT,
      requestsBurst: TENANT_REQUESTS_BURST_DEFAULT,
      inflightMax: TENANT_INFLIGHT_MAX_DEFAULT,
      limitInternal: false,
    });
    expect(() => resolveTenantLimits({ inflightMax: 0 })).toThrow(/tenantLimits.inflightMax/);
    expect(() => resolveTenantLimits({ requestsPerSecond: 1.5 })).toThrow(/tenantLimits.requestsPerSecond/);
  });
});

const KEY_A = "sk_test_limits_a_0123456789abcdef";
const KEY_B = "sk_test_limits_b_0123456789abcdef";
const INTERNAL = "sk_test_limits_int_0123456789abcdef";
const INTERNAL_A = "sk_test_limits_int_a_0123456789abcdef";
const servers: StartedServer[] = [];
afterAll(async () => {
  closeClientSessions();
  for (const s of servers) await s.close();
});

/** Echoes once the tenant's slot is free again (a released slot is seen within ~2 s), else throws. */
async function echoOnceFreed(c: Client<typeof EchoService>): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      expect((await c.echo({ text: "after" })).text).toBe("after");
      return;
    } catch (e) {
      if (i >= 100 || ConnectError.from(e).code !== Code.ResourceExhausted) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function codeOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

describe.each([true, false])("a server with tenant limits (fastPath %s)", (fastPath) => {
  it("answers ResourceExhausted LIMIT_EXCEEDED past a tenant's concurrency, other tenants and internal keys unaffected", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered = 0;
    const s = await startServer({
      name: "limits",
      host: "127.0.0.1",
      port: 0,
      fastPath,
      routes: echoRoutes({ onEcho: (text) => (text === "hold" ? (entered++, gate) : undefined) }),
      authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY_A},tnt_b:admin:${KEY_B},*:internal:${INTERNAL},tnt_a:internal:${INTERNAL_A}`)),
      logger: silentLogger,
      tenantLimits: { inflightMax: 2, requestsPerSecond: 1000, requestsBurst: 1000 },
    });
    servers.push(s);
    const a = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_A }));
    const b = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_B }));
    const internal = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: INTERNAL }));
    const held = [a.echo({ text: "hold" }), a.echo({ text: "hold" })];
    while (entered < 2) await new Promise((r) => setTimeout(r, 5));
    const err = await codeOf(a.echo({ text: "x" }));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toBe("tenant.inflight: exceeds the limit of 2");
    expect(errorInfoOf(err)).toEqual({ reason: ErrorReason.LIMIT_EXCEEDED, metadata: { field: "tenant.inflight", limit: "2" } });
    expect((await b.echo({ text: "y" })).text).toBe("y");
    expect((await internal.echo({ text: "z" }, forTenant("tnt_a"))).text).toBe("z");
    // An internal key bound to tnt_a is tnt_a's: it counts against tnt_a (only the operator's "*" key is exempt).
    const boundA = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: INTERNAL_A }));
    expect((await codeOf(boundA.echo({ text: "w" }))).code).toBe(Code.ResourceExhausted);
    release();
    await Promise.all(held);
    expect((await a.echo({ text: "after" })).text).toBe("after");
  });

  it("counts an open server stream as in flight until it ends (a tenant's open streams are capped)", async () => {
    const s = await startServer({
      name: "limits-streams",
      host: "127.0.0.1",
      port: 0,
      fastPath,
      routes: echoRoutes(),
      authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY_A},tnt_b:admin:${KEY_B}`)),
      logger: silentLogger,
      tenantLimits: { inflightMax: 2, requestsPerSecond: 1000, requestsBurst: 1000 },
    });
    servers.push(s);
    const a = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_A }));
    const b = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_B }));
    // Two long streams, each read once and then left open: both of tnt_a's slots are taken.
    const cancel = new AbortController();
    const open = [0, 1].map(() => a.echoStream({ text: "s", count: 1_000_000 }, { signal: cancel.signal })[Symbol.asyncIterator]());
    for (const it of open) expect((await it.next()).value?.text).toBe("s");
    const third = await codeOf((async () => {
      for await (const m of a.echoStream({ text: "t", count: 1 })) void m;
    })());
    expect(third.code).toBe(Code.ResourceExhausted);
    expect(errorInfoOf(third)).toEqual({ reason: ErrorReason.LIMIT_EXCEEDED, metadata: { field: "tenant.inflight", limit: "2" } });
    expect((await codeOf(a.echo({ text: "x" }))).code).toBe(Code.ResourceExhausted);
    expect((await b.echo({ text: "y" })).text).toBe("y");
    // Cancelling the streams (connect's way: the call's signal) frees the slots.
    cancel.abort();
    for (const it of open) await it.next().catch(() => undefined);
    await echoOnceFreed(a);
  });

  it("frees a stream's slot when its call is cancelled even if the handler never yields again nor heeds its signal", async () => {
    const s = await startServer({
      name: "limits-stalled-streams",
      host: "127.0.0.1",
      port: 0,
      fastPath,
      // "stall": the first message goes out, then the handler waits forever, ignoring ctx.signal.
      routes: echoRoutes({ onStream: (text, i) => (text === "stall" && i === 1 ? new Promise(() => {}) : undefined) }),
      authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY_A}`)),
      logger: silentLogger,
      tenantLimits: { inflightMax: 1, requestsPerSecond: 1000, requestsBurst: 1000 },
    });
    servers.push(s);
    const a = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_A }));
    for (let round = 0; round < 3; round++) {
      const cancel = new AbortController();
      const it = a.echoStream({ text: "stall", count: 2 }, { signal: cancel.signal })[Symbol.asyncIterator]();
      expect((await it.next()).value?.text).toBe("stall");
      expect((await codeOf(a.echo({ text: "x" }))).code).toBe(Code.ResourceExhausted); // the one slot is the stream's
      cancel.abort();
      await it.next().catch(() => undefined);
      // Freed: each round gets the slot again (before, the first stalled stream held it for good).
      await echoOnceFreed(a);
    }
  });

  it("answers ResourceExhausted LIMIT_EXCEEDED past a tenant's rate", async () => {
    const s = await startServer({
      name: "limits-rate",
      host: "127.0.0.1",
      port: 0,
      fastPath,
      routes: echoRoutes(),
      authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY_A},tnt_b:admin:${KEY_B}`)),
      logger: silentLogger,
      tenantLimits: { requestsPerSecond: 1, requestsBurst: 3 },
    });
    servers.push(s);
    const a = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_A }));
    for (let i = 0; i < 3; i++) await a.echo({ text: "ok" });
    const err = await codeOf(a.echo({ text: "over" }));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(errorInfoOf(err)).toEqual({ reason: ErrorReason.LIMIT_EXCEEDED, metadata: { field: "tenant.requests_per_second", limit: "1" } });
    const b = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_B }));
    expect((await b.echo({ text: "b" })).text).toBe("b");
  });

  it("refuses a key revoked while the server runs (Unauthenticated), and accepts a key added by replaceKeys", async () => {
    const auth = createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY_A}`));
    const s = await startServer({ name: "revoke", host: "127.0.0.1", port: 0, fastPath, routes: echoRoutes(), authenticator: auth, logger: silentLogger });
    servers.push(s);
    const a = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_A }));
    const b = createClient(EchoService, createClientTransport({ baseUrl: s.url, apiKey: KEY_B }));
    expect((await a.echo({ text: "1" })).text).toBe("1");
    expect((await codeOf(b.echo({ text: "1" }))).code).toBe(Code.Unauthenticated);
    auth.revoke(keyIdOf(KEY_A));
    const err = await codeOf(a.echo({ text: "2" }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(errorInfoOf(err)?.reason).toBe(ErrorReason.UNAUTHENTICATED);
    auth.replaceKeys(parseApiKeysEnv(`tnt_a:admin:${KEY_A},tnt_b:read:${KEY_B}`));
    expect((await codeOf(a.echo({ text: "3" }))).code).toBe(Code.Unauthenticated);
    expect((await b.echo({ text: "3" })).text).toBe("3");
  });
});
