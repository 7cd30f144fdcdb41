// Test support (used by *.test.ts only): a metering service on a test database, reached through
// createRouterTransport with the real auth interceptor.
import * as http2 from "node:http2";
import { createClient, createRouterTransport, type Client, type Interceptor } from "@connectrpc/connect";
import { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { migrate, type TestDb } from "@nanobill/db";
import { createApiKeyAuthenticator, createAuthInterceptor, fixedClock, silentLogger } from "@nanobill/service-kit";
import type { MeteringConfig } from "./config.js";
import { createMeteringService, migrationsDir, type MeteringServiceHandle } from "./index.js";

export const KEYS = {
  adminA: "sk_test_admin_tenant_a_0001",
  adminB: "sk_test_admin_tenant_b_0001",
  ingestA: "sk_test_ingest_tenant_a_001",
  readA: "sk_test_read_tenant_a_00001",
  internal: "sk_test_internal_any_000001",
  /** An internal key bound to tnt_a: acts for tnt_a only. */
  internalA: "sk_test_internal_tnt_a_00001",
} as const;

export const authenticator = createApiKeyAuthenticator([
  { tenant: "tnt_a", scopes: ["admin"], key: KEYS.adminA },
  { tenant: "tnt_b", scopes: ["admin"], key: KEYS.adminB },
  { tenant: "tnt_a", scopes: ["ingest"], key: KEYS.ingestA },
  { tenant: "tnt_a", scopes: ["read"], key: KEYS.readA },
  { tenant: "*", scopes: ["internal"], key: KEYS.internal },
  { tenant: "tnt_a", scopes: ["internal"], key: KEYS.internalA },
]);

export const T0 = new Date("2026-11-20T10:00:00Z");

export interface Harness {
  db: TestDb;
  service: MeteringServiceHandle;
  clock: ReturnType<typeof fixedClock>;
  /** A client of the in-process routes; `json`: the Connect protocol's JSON encoding instead of binary. */
  client(key: string, tenant?: string, json?: boolean): Client<typeof MeteringService>;
  close(): Promise<void>;
}

export async function openHarness(db: TestDb, config: Partial<MeteringConfig> = {}): Promise<Harness> {
  await migrate(db, migrationsDir);
  const clock = fixedClock(T0);
  const service = await createMeteringService({ db, logger: silentLogger, clock, config: { backfillIntervalMs: 0, readPollIntervalMs: 50, ...config } });
  return {
    db,
    service,
    clock,
    client(key, tenant, json = false) {
      const headers: Interceptor = (next) => (req) => {
        req.header.set("authorization", `Bearer ${key}`);
        if (tenant) req.header.set("x-nanobill-tenant", tenant);
        return next(req);
      };
      const t = createRouterTransport(service.routes, { router: { interceptors: [createAuthInterceptor(authenticator)] }, transport: { interceptors: [headers], useBinaryFormat: !json } });
      return createClient(MeteringService, t);
    },
    async close() {
      await service.stop();
      await db.dispose();
    },
  };
}

/**
 * One raw POST over its own HTTP/2 connection (a body exactly as written: JSON numbers the
 * generated clients would never send), answered with its status and text.
 */
export function rawPost(url: string, path: string, contentType: string, body: string | Buffer, key: string = KEYS.ingestA): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url);
    s.on("error", reject);
    const req = s.request({ ":method": "POST", ":path": path, "content-type": contentType, authorization: `Bearer ${key}` });
    let status = 0;
    let text = "";
    req.on("response", (hd) => (status = Number(hd[":status"])));
    req.setEncoding("utf8");
    req.on("data", (c: string) => (text += c));
    req.on("end", () => {
      s.close();
      resolve({ status, text });
    });
    req.on("error", reject);
    req.end(body);
  });
}
