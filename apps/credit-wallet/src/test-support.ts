/** Test harness: the wallet with the REAL ledger in-process, both behind createRouterTransport with real auth. */
import { randomUUID } from "node:crypto";
import { ConnectError, createClient, createRouterTransport, type Client, type Code, type Interceptor } from "@connectrpc/connect";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { migrate, testBackends, type Queryable, type TestBackend, type TestDb } from "@nanobill/db";
import { createLedgerService, migrationsDir as ledgerMigrations, type LedgerServiceHandle } from "@nanobill/ledger";
import { createApiKeyAuthenticator, createAuthInterceptor, createLogger, createErrorBoundary, fixedClock, silentLogger, type ApiKeyEntry } from "@nanobill/service-kit";
import { createCreditWalletService, migrationsDir, type CreditWalletServiceHandle } from "./index.js";
import type { CreditWalletConfig } from "./config.js";
import { createMemoryRealtime } from "./realtime/memory.js";
import { createRedisRealtime } from "./realtime/redis.js";
import { startRedisCluster, type RedisClusterFixture } from "../../../test/support/redis-cluster.js";
import type { RealtimeStore } from "./realtime/types.js";
import type { Engine } from "./engine.js";
import { createWalletRoutes } from "./server.js";
import { createWalletServiceImpl, type AuthorizeStreamLimits } from "./service.js";

export const KEYS = {
  adminA: "sk_test_wallet_admin_a_0001",
  readA: "sk_test_wallet_read_a_00001",
  ingestA: "sk_test_wallet_ingest_a_0001",
  adminB: "sk_test_wallet_admin_b_0001",
  internal: "sk_test_wallet_internal_0001",
} as const;

const ENTRIES: ApiKeyEntry[] = [
  { tenant: "tnt_a", scopes: ["admin"], key: KEYS.adminA },
  { tenant: "tnt_a", scopes: ["read"], key: KEYS.readA },
  { tenant: "tnt_a", scopes: ["ingest"], key: KEYS.ingestA },
  { tenant: "tnt_b", scopes: ["admin"], key: KEYS.adminB },
  { tenant: "*", scopes: ["internal"], key: KEYS.internal },
];

/** WALLET_TEST_LOG=1 prints the service's logs (unexpected errors are logged by the error boundary). */
const testLogger = process.env.WALLET_TEST_LOG ? createLogger({ service: "credit-wallet-test", level: "debug" }) : silentLogger;

export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

export type RealtimeKind = "memory" | "redis" | "redis-cluster";

let cluster: Promise<RedisClusterFixture> | undefined;
/** One Redis Cluster (three local nodes) per test process, started on first use, gone at exit. */
export function testRedisCluster(): Promise<RedisClusterFixture> {
  cluster ??= startRedisCluster().then((c) => {
    process.once("exit", () => c.killNow());
    return c;
  });
  return cluster;
}

/**
 * The combinations the service tests run on. With DATABASE_URL: the whole suite on
 * postgres + Redis and the core tests (slice, concurrency, flush/restart, bad input) on
 * pglite + the in-process store (and, with `cluster`, on postgres + a Redis Cluster); without it,
 * the whole suite on pglite + the in-process store. (The store SQL runs on both backends in
 * store.int.test.ts; the real-time stores pass one suite in realtime.test.ts.)
 */
export function walletBackends(opts: { cluster?: boolean } = {}): Array<{ name: string; backend: TestBackend; realtime: RealtimeKind; full: boolean }> {
  const bs = testBackends();
  const pg = bs.find((b) => b.name === "postgres");
  const lite = bs.find((b) => b.name === "pglite")!;
  if (!pg) return [{ name: "pglite+memory", backend: lite, realtime: "memory", full: true }];
  return [
    { name: "postgres+redis", backend: pg, realtime: "redis", full: true },
    { name: "pglite+memory", backend: lite, realtime: "memory", full: false },
    ...(opts.cluster ? [{ name: "postgres+redis-cluster", backend: pg, realtime: "redis-cluster" as const, full: false }] : []),
  ];
}

export interface WalletHarness {
  db: TestDb;
  ledgerDb: TestDb;
  clock: ReturnType<typeof fixedClock>;
  wallet: CreditWalletServiceHandle;
  ledger: LedgerServiceHandle;
  realtime: RealtimeStore;
  prefix: string;
  client(key?: string, tenant?: string): Client<typeof CreditWalletService>;
  ledgerClient(tenant: string): Client<typeof LedgerService>;
  /** A client of a second service instance on the same engine (or another one), with its own stream limits and coalescers. */
  clientWith(opts: { key?: string; tenant?: string; streamLimits?: Partial<AuthorizeStreamLimits>; engine?: Engine; authorizeGroupsInFlight?: number }): Client<typeof CreditWalletService>;
  /** A second wallet process on the same databases and real-time store (a restart or a replica). */
  restart(opts?: { keepRealtime?: boolean }): Promise<void>;
  close(): Promise<void>;
}

function transportFor(routes: (r: import("@connectrpc/connect").ConnectRouter) => void, key: string | undefined, tenant: string | undefined) {
  const authenticator = createApiKeyAuthenticator(ENTRIES);
  const headers: Interceptor = (next) => (req) => {
    if (key) req.header.set("authorization", `Bearer ${key}`);
    if (tenant) req.header.set("x-nanobill-tenant", tenant);
    return next(req);
  };
  return createRouterTransport(routes, { router: { interceptors: [createErrorBoundary(testLogger), createAuthInterceptor(authenticator)] }, transport: { interceptors: [headers] } });
}

export async function openWalletHarness(b: { backend: TestBackend; realtime: RealtimeKind }, config: Partial<CreditWalletConfig> = {}): Promise<WalletHarness> {
  const db = await b.backend.open();
  const ledgerDb = await b.backend.open();
  await migrate(db, migrationsDir);
  await migrate(ledgerDb, ledgerMigrations);
  const clock = fixedClock(new Date("2026-11-01T00:00:00Z"));
  const ledger = await createLedgerService({ db: ledgerDb, logger: silentLogger, clock, config: { expirySweepIntervalMs: 0 } });
  const ledgerClient = createClient(LedgerService, transportFor(ledger.routes, KEYS.internal, undefined));
  const prefix = `nbtest:${randomUUID()}:`;
  const clusterUrl = b.realtime === "redis-cluster" ? (await testRedisCluster()).seedUrl : undefined;
  const makeRealtime = (): RealtimeStore =>
    b.realtime === "redis"
      ? createRedisRealtime({ url: REDIS_URL, prefix })
      : clusterUrl !== undefined
        ? createRedisRealtime({ url: clusterUrl, cluster: true, prefix })
        : createMemoryRealtime();
  let realtime = makeRealtime();
  const make = async (rt: RealtimeStore) => {
    const w = await createCreditWalletService({ db, logger: testLogger, clock, clients: { ledger: ledgerClient }, realtime: rt, config: { backgroundIntervalMs: 0, ...config } });
    await w.start();
    return w;
  };
  let wallet = await make(realtime);
  const h: WalletHarness = {
    db,
    ledgerDb,
    clock,
    get wallet() {
      return wallet;
    },
    ledger,
    get realtime() {
      return realtime;
    },
    prefix,
    client(key: string | undefined = KEYS.adminA, tenant?: string) {
      return createClient(CreditWalletService, transportFor((r) => wallet.routes(r), key, tenant));
    },
    ledgerClient(tenant: string) {
      return createClient(LedgerService, transportFor(ledger.routes, KEYS.internal, tenant));
    },
    clientWith(opts) {
      const routes = createWalletRoutes(createWalletServiceImpl({ engine: opts.engine ?? wallet.engine, db, clock, streamLimits: opts.streamLimits, authorizeGroupsInFlight: opts.authorizeGroupsInFlight }));
      return createClient(CreditWalletService, transportFor(routes, opts.key ?? KEYS.adminA, opts.tenant));
    },
    async restart(opts = {}) {
      await wallet.stop();
      // A memory store dies with its process; Redis survives (unless flushed by the test).
      realtime = b.realtime === "memory" && !opts.keepRealtime ? makeRealtime() : b.realtime !== "memory" ? makeRealtime() : realtime;
      wallet = await make(realtime);
    },
    async close() {
      await realtime.invalidateAll().catch(() => 0);
      await wallet.stop();
      await ledger.stop();
      await db.dispose();
      await ledgerDb.dispose();
    },
  } as WalletHarness;
  return h;
}

/** The code and raw message of the error a call fails with (throws when it succeeds). */
export async function code(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (e) {
    const c = ConnectError.from(e);
    return { code: c.code, message: c.rawMessage };
  }
  throw new Error("expected an error");
}

/**
 * Routes every query made inside h.db's transactions through `query(tx, sql, params)` (which runs
 * it with tx.query, before or after what the test injects: a pause, a real PostgreSQL error).
 */
export function interceptTransactionQueries(db: TestDb, query: (tx: Queryable, sql: string, params: unknown[] | undefined) => Promise<unknown>): void {
  type TxFn = (tx: Queryable) => Promise<unknown>;
  const d = db as unknown as { transaction: (fn: TxFn, opts?: unknown) => Promise<unknown> };
  const orig = d.transaction.bind(d);
  d.transaction = (fn: TxFn, opts?: unknown) =>
    orig(
      (tx: Queryable) =>
        fn(
          new Proxy(tx, {
            get(t, p) {
              if (p === "query") return (sql: string, params?: unknown[]) => query(t, sql, params);
              const v = (t as unknown as Record<string | symbol, unknown>)[p];
              return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(t) : v;
            },
          }),
        ),
      opts,
    );
}
