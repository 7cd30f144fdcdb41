/** Test harness: the ledger service on a test database, called through createRouterTransport with real auth. */
import { createClient, createRouterTransport, type Client, type Interceptor } from "@connectrpc/connect";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { migrate, type TestBackend, type TestDb } from "@nanobill/db";
import { createApiKeyAuthenticator, createAuthInterceptor, fixedClock, silentLogger, type ApiKeyEntry } from "@nanobill/service-kit";
import type { LedgerConfig } from "./config.js";
import { createLedgerService, migrationsDir, type LedgerServiceHandle } from "./index.js";

export const KEYS = {
  adminA: "sk_test_admin_tenant_a_0001",
  readA: "sk_test_read_tenant_a_00001",
  adminB: "sk_test_admin_tenant_b_0001",
  internal: "sk_test_internal_any_000001",
} as const;

const ENTRIES: ApiKeyEntry[] = [
  { tenant: "tnt_a", scopes: ["admin"], key: KEYS.adminA },
  { tenant: "tnt_a", scopes: ["read"], key: KEYS.readA },
  { tenant: "tnt_b", scopes: ["admin"], key: KEYS.adminB },
  { tenant: "*", scopes: ["internal"], key: KEYS.internal },
];

export interface LedgerHarness {
  db: TestDb;
  service: LedgerServiceHandle;
  clock: ReturnType<typeof fixedClock>;
  client(key?: string, tenant?: string): Client<typeof LedgerService>;
  close(): Promise<void>;
}

export async function openLedgerHarness(backend: TestBackend, config: Partial<LedgerConfig> = {}): Promise<LedgerHarness> {
  const db = await backend.open();
  await migrate(db, migrationsDir);
  const clock = fixedClock(new Date("2026-11-01T00:00:00Z"));
  const service = await createLedgerService({ db, logger: silentLogger, clock, config: { expirySweepIntervalMs: 0, ...config } });
  const authenticator = createApiKeyAuthenticator(ENTRIES);
  return {
    db,
    service,
    clock,
    client(key: string | undefined = KEYS.adminA, tenant?: string) {
      const headers: Interceptor = (next) => (req) => {
        if (key) req.header.set("authorization", `Bearer ${key}`);
        if (tenant) req.header.set("x-nanobill-tenant", tenant);
        return next(req);
      };
      const t = createRouterTransport(service.routes, {
        router: { interceptors: [createAuthInterceptor(authenticator)] },
        transport: { interceptors: [headers] },
      });
      return createClient(LedgerService, t);
    },
    async close() {
      await service.stop();
      await db.dispose();
    },
  };
}
