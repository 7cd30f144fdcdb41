import { randomBytes } from "node:crypto";
import { createClient, type Client, type ConnectRouter } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { migrate, openDb, openEmbeddedPostgres, type Db, type EmbeddedPostgres } from "@nanobill/db";
import {
  closeClientSessions,
  createApiKeyAuthenticator,
  createClientTransport,
  createLogger,
  systemClock,
  startServer,
  type ApiKeyEntry,
  type Clock,
  type Logger,
  type ServerLimits,
  type StartedServer,
} from "@nanobill/service-kit";
import { MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { createLedgerService, LEDGER_SERVER_LIMITS, migrationsDir as ledgerMigrations } from "@nanobill/ledger";
import { createMeteringService, METERING_SERVER_LIMITS, migrationsDir as meteringMigrations } from "@nanobill/metering";
import { createRatingService, createViewClients, RATING_SERVER_LIMITS, migrationsDir as ratingMigrations } from "@nanobill/rating";
import { createCreditWalletService, WALLET_SERVER_LIMITS, migrationsDir as walletMigrations } from "@nanobill/credit-wallet";
import { createInvoicingService, INVOICING_SERVER_LIMITS, migrationsDir as invoicingMigrations } from "@nanobill/invoicing";

/** The five services, in start order (each only calls services started before it). */
export const SERVICE_NAMES = ["ledger", "credit-wallet", "metering", "rating", "invoicing"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Default ports of `npm start` (0 = any free port, as tests use). */
export const DEFAULT_PORTS: Record<ServiceName, number> = {
  metering: 7001,
  rating: 7002,
  ledger: 7003,
  "credit-wallet": 7004,
  invoicing: 7005,
};

export interface PlatformOptions {
  /** PostgreSQL URL; without it one embedded PGlite instance serves all five (schema per service). */
  databaseUrl?: string;
  /** Where the embedded instance keeps its data; undefined = in memory. */
  dataDir?: string;
  /** Redis URL for the services that use Redis; without it they use their in-process path. */
  redisUrl?: string;
  /** redisUrl is a seed node of a Redis Cluster (CREDIT_WALLET_REDIS_CLUSTER). */
  redisCluster?: boolean;
  /** Schema prefix (tests give each platform its own schemas on a shared PostgreSQL). */
  schemaPrefix?: string;
  /** Listen address of every service (default 127.0.0.1); `hosts` sets it per service. */
  host?: string;
  hosts?: Partial<Record<ServiceName, string>>;
  ports?: Partial<Record<ServiceName, number>>;
  /** Tenant-facing API keys (NANOBILL_API_KEYS entries). */
  apiKeys: ApiKeyEntry[];
  /** Key the services use to call each other ("internal" scope); random when absent. */
  internalKey?: string;
  logger?: Logger;
  clock?: Clock;
  /** Rating consumer long-poll and idle wait (tests shorten it). */
  consumerWaitMs?: number;
  /** Webhooks of rating and credit-wallet may go to non-public addresses (NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS; default false). */
  webhooksAllowPrivateNetworks?: boolean;
}

export interface Platform {
  urls: Record<ServiceName, string>;
  /** Connect clients for a tenant key (what an external caller would use). */
  clients(apiKey: string): PlatformClients;
  close(): Promise<void>;
}

export interface PlatformClients {
  metering: Client<typeof MeteringService>;
  rating: Client<typeof RatingService>;
  ledger: Client<typeof LedgerService>;
  wallet: Client<typeof CreditWalletService>;
  invoicing: Client<typeof InvoicingService>;
}

interface Running {
  name: ServiceName;
  db: Db;
  server: StartedServer;
  stop(): Promise<void>;
}

function schemaName(prefix: string | undefined, name: ServiceName): string {
  return `${prefix ?? ""}${name.replace("-", "_")}`;
}

/**
 * Starts all five services in this process, each on its own port with its own schema, wired to
 * each other only through their Connect clients (as separate processes would be).
 */
export async function startPlatform(opts: PlatformOptions): Promise<Platform> {
  const logger = opts.logger ?? createLogger({ service: "platform" });
  const clock = opts.clock ?? systemClock;
  const host = opts.host ?? "127.0.0.1";
  const internalKey = opts.internalKey ?? `nbk_int_${randomBytes(24).toString("hex")}`;
  const authenticator = createApiKeyAuthenticator([...opts.apiKeys, { tenant: "*", scopes: ["internal"], key: internalKey }]);
  let embedded: EmbeddedPostgres | undefined;
  if (opts.databaseUrl === undefined) embedded = await openEmbeddedPostgres({ dataDir: opts.dataDir });

  const running: Running[] = [];
  const urls = {} as Record<ServiceName, string>;
  const transportTo = (name: ServiceName) => createClientTransport({ baseUrl: urls[name], apiKey: internalKey });
  const internal = <S extends DescService>(service: S, name: ServiceName): Client<S> => createClient(service, transportTo(name));

  const openFor = async (name: ServiceName, dir: string): Promise<Db> => {
    const db = await openDb({ url: opts.databaseUrl, embedded, schema: schemaName(opts.schemaPrefix, name) });
    await migrate(db, dir);
    return db;
  };

  const launch = async (
    name: ServiceName,
    db: Db,
    svc: { routes(router: ConnectRouter): void; start(): Promise<void>; stop(): Promise<void> },
    limits: Partial<ServerLimits>,
  ): Promise<void> => {
    const server = await startServer({
      name,
      host: opts.hosts?.[name] ?? host,
      port: opts.ports?.[name] ?? 0,
      routes: (router) => svc.routes(router),
      authenticator,
      limits,
      logger: logger.child({ service: name }),
    });
    urls[name] = server.url;
    running.push({ name, db, server, stop: () => svc.stop() });
    await svc.start();
    logger.info("service started", { service: name, url: server.url });
  };

  try {
    const common = (name: ServiceName) => ({ logger: logger.child({ service: name }), clock });

    const ledgerDb = await openFor("ledger", ledgerMigrations);
    await launch("ledger", ledgerDb, await createLedgerService({ ...common("ledger"), db: ledgerDb }), LEDGER_SERVER_LIMITS);

    const walletDb = await openFor("credit-wallet", walletMigrations);
    await launch(
      "credit-wallet",
      walletDb,
      await createCreditWalletService({
        ...common("credit-wallet"),
        db: walletDb,
        config: {
          webhooksAllowPrivateNetworks: opts.webhooksAllowPrivateNetworks ?? false,
          ...(opts.redisUrl === undefined ? {} : { redisUrl: opts.redisUrl, redisCluster: opts.redisCluster ?? false, redisPrefix: `nb:${opts.schemaPrefix ?? ""}wallet:` }),
        },
        clients: { ledger: internal(LedgerService, "ledger") },
      }),
      WALLET_SERVER_LIMITS,
    );

    const meteringDb = await openFor("metering", meteringMigrations);
    await launch("metering", meteringDb, await createMeteringService({ ...common("metering"), db: meteringDb }), METERING_SERVER_LIMITS);

    const ratingDb = await openFor("rating", ratingMigrations);
    await launch(
      "rating",
      ratingDb,
      await createRatingService({
        ...common("rating"),
        db: ratingDb,
        consumerWaitMs: opts.consumerWaitMs,
        config: { consumerPartitions: 2, webhooksAllowPrivateNetworks: opts.webhooksAllowPrivateNetworks ?? false },
        clients: {
          metering: internal(MeteringService, "metering"),
          wallet: internal(CreditWalletService, "credit-wallet"),
          // The consumer's ReadEvents and Consume through rating's hand-written codecs, as main.ts does.
          views: createViewClients(transportTo("metering"), transportTo("credit-wallet")),
        },
      }),
      RATING_SERVER_LIMITS,
    );

    const invoicingDb = await openFor("invoicing", invoicingMigrations);
    await launch(
      "invoicing",
      invoicingDb,
      await createInvoicingService({
        ...common("invoicing"),
        db: invoicingDb,
        clients: {
          rating: internal(RatingService, "rating"),
          wallet: internal(CreditWalletService, "credit-wallet"),
          ledger: internal(LedgerService, "ledger"),
        },
      }),
      INVOICING_SERVER_LIMITS,
    );
  } catch (e) {
    await closeAll(running, embedded);
    throw e;
  }

  return {
    urls,
    clients(apiKey) {
      const t = (name: ServiceName) => createClientTransport({ baseUrl: urls[name], apiKey });
      return {
        metering: createClient(MeteringService, t("metering")),
        rating: createClient(RatingService, t("rating")),
        ledger: createClient(LedgerService, t("ledger")),
        wallet: createClient(CreditWalletService, t("credit-wallet")),
        invoicing: createClient(InvoicingService, t("invoicing")),
      };
    },
    close: () => closeAll(running, embedded),
  };
}

/** Stops background work first (consumers), then servers in reverse start order, then databases. */
async function closeAll(running: Running[], embedded: EmbeddedPostgres | undefined): Promise<void> {
  const reversed = [...running].reverse();
  for (const r of reversed) await r.stop();
  for (const r of reversed) await r.server.close();
  closeClientSessions();
  for (const r of reversed) await r.db.close();
  await embedded?.close();
}
