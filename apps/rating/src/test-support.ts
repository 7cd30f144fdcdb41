// Test support (used by *.test.ts only): a rating service on a test database, reached through
// createRouterTransport with the real auth interceptor, and small in-process fakes of the two
// services rating calls (metering ReadEvents/GetMeter, credit-wallet Consume).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { MeteringService, StoredEventSchema, type StoredEvent } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { ConsumeResult, CreditWalletService, type ConsumeItem } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { migrate, type TestDb } from "@nanobill/db";
import { createApiKeyAuthenticator, createAuthInterceptor, fixedClock, silentLogger, TENANT_HEADER } from "@nanobill/service-kit";
import type { RatingConfig } from "./config.js";
import { createRatingService, migrationsDir, type RatingServiceHandle } from "./index.js";
import { createViewClients } from "./wire.js";

export const KEYS = {
  adminA: "sk_test_admin_tenant_a_0001",
  adminB: "sk_test_admin_tenant_b_0001",
  readA: "sk_test_read_tenant_a_00001",
  internal: "sk_test_internal_any_000001",
  /** An internal key bound to tnt_a: acts for tnt_a only. */
  internalA: "sk_test_internal_tnt_a_00001",
} as const;

export const authenticator = createApiKeyAuthenticator([
  { tenant: "tnt_a", scopes: ["admin"], key: KEYS.adminA },
  { tenant: "tnt_b", scopes: ["admin"], key: KEYS.adminB },
  { tenant: "tnt_a", scopes: ["read"], key: KEYS.readA },
  { tenant: "*", scopes: ["internal"], key: KEYS.internal },
  { tenant: "tnt_a", scopes: ["internal"], key: KEYS.internalA },
]);

export const T0 = new Date("2026-11-20T10:00:00Z");

/** FakeMetering: an in-memory cursor of stored events and a set of meters. */
export class FakeMetering {
  events: StoredEvent[] = [];

  /** The fake's (tenant, customer) -> partition function (stable; metering uses PostgreSQL's hashtext). */
  static partitionOf(tenant: string, customerId: string, count: number): number {
    const key = `${tenant}/${customerId}`;
    let h = 2166136261;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
    return h % count;
  }
  meters = new Map<string, string>(); // tenant\0meter -> event type
  #seq = 0n;
  /** Pages asking for more events than this fail ResourceExhausted (a page past a message limit). */
  pageEventsLimit = Infinity;
  /** The maxEvents of every ReadEvents call, in order. */
  readSizes: number[] = [];

  push(tenant: string, e: { id: string; customerId: string; type: string; timestampMs: number; properties: Record<string, string | number | bigint>; traceparent?: string }): bigint {
    this.#seq += 10n;
    const properties: Record<string, { kind: { case: "stringValue"; value: string } | { case: "intValue"; value: bigint } }> = {};
    for (const [k, v] of Object.entries(e.properties)) {
      properties[k] = { kind: typeof v === "string" ? { case: "stringValue", value: v } : { case: "intValue", value: BigInt(v) } };
    }
    this.events.push(
      create(StoredEventSchema, {
        tenant,
        sequence: this.#seq,
        event: { id: e.id, customerId: e.customerId, type: e.type, timestamp: timestampFromMs(e.timestampMs), properties, traceContext: e.traceparent ? { traceparent: e.traceparent, tracestate: "" } : undefined },
        receiveTime: timestampFromMs(e.timestampMs),
      }),
    );
    return this.#seq;
  }

  /** page: what ReadEvents answers (a page of the feed or of one partition of it). */
  page(req: { afterSequence: bigint; maxEvents: number; partitionCount: number; partition: number }): { events: StoredEvent[]; lastSequence: bigint } {
    this.readSizes.push(req.maxEvents);
    if (req.maxEvents > this.pageEventsLimit) throw new ConnectError("message size larger than configured writeMaxBytes", Code.ResourceExhausted);
    let lo = 0;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.events[mid]!.sequence > req.afterSequence) hi = mid;
      else lo = mid + 1;
    }
    const max = req.maxEvents || 1000;
    if (req.partitionCount <= 1) {
      const evs = this.events.slice(lo, lo + max);
      return { events: evs, lastSequence: evs.length > 0 ? evs[evs.length - 1]!.sequence : req.afterSequence };
    }
    // A partition, as metering serves it: its customers' events only; lastSequence is the
    // highest sequence examined (the last event returned when the page is full).
    const evs: StoredEvent[] = [];
    for (let i = lo; i < this.events.length && evs.length < max; i++) {
      const e = this.events[i]!;
      if (FakeMetering.partitionOf(e.tenant, e.event!.customerId, req.partitionCount) === req.partition) evs.push(e);
    }
    const high = this.events.length > lo ? this.events[this.events.length - 1]!.sequence : req.afterSequence;
    return { events: evs, lastSequence: evs.length === max ? evs[evs.length - 1]!.sequence : high };
  }

  client(): Client<typeof MeteringService> {
    return createClient(MeteringService, this.transport());
  }

  /** An in-process transport to the fake (Connect binary, as over the network). */
  transport(): Transport {
    return createRouterTransport(({ service }) => {
      service(MeteringService, {
        readEvents: (req) => this.page(req),
        getMeter: (req, ctx) => {
          const tenant = ctx.requestHeader.get(TENANT_HEADER) ?? "";
          const et = this.meters.get(`${tenant}\u0000${req.meterId}`);
          if (et === undefined) throw new ConnectError(`meter ${req.meterId} not found`, Code.NotFound);
          return { meter: { id: req.meterId, eventType: et } };
        },
      });
    });
  }
}

/** FakeWallet: records Consume items per tenant; every item is consumed in full. */
export class FakeWallet {
  consumed: Array<{ tenant: string; item: ConsumeItem }> = [];
  failNext = 0;
  readonly #seen = new Set<string>();

  client(): Client<typeof CreditWalletService> {
    return createClient(CreditWalletService, this.transport());
  }

  /** An in-process transport to the fake (Connect binary, as over the network). */
  transport(): Transport {
    return createRouterTransport(({ service }) => {
      service(CreditWalletService, {
        getCreditType: (req) => {
          if (req.creditTypeId !== "cr_credits") throw new ConnectError(`credit type ${req.creditTypeId} not found`, Code.NotFound);
          return { creditType: { id: "cr_credits", currency: "USD", rates: [{ rate: { value: "0.01" }, currency: "USD", effectiveAt: timestampFromMs(0) }] } };
        },
        consume: (req, ctx) => {
          if (this.failNext > 0) {
            this.failNext--;
            throw new ConnectError("wallet down", Code.Unavailable);
          }
          const tenant = ctx.requestHeader.get(TENANT_HEADER) ?? "";
          return {
            results: req.items.map((item) => {
              const key = `${tenant}\u0000${item.id}`;
              const seen = this.#seen.has(key);
              if (!seen) {
                this.#seen.add(key);
                this.consumed.push({ tenant, item });
              }
              return { id: item.id, result: ConsumeResult.OK, consumedNanos: item.amountNanos, shortfallNanos: 0n, replayed: seen };
            }),
          };
        },
      });
    });
  }
}

export interface Harness {
  db: TestDb;
  service: RatingServiceHandle;
  clock: ReturnType<typeof fixedClock>;
  metering: FakeMetering;
  wallet: FakeWallet;
  client(key: string, tenant?: string): Client<typeof RatingService>;
  close(): Promise<void>;
}

/** views false: the consumer reads and consumes through the generated codecs (clients only). */
export async function openHarness(db: TestDb, config: Partial<RatingConfig> = {}, opts: { views?: boolean } = {}): Promise<Harness> {
  await migrate(db, migrationsDir);
  const clock = fixedClock(T0);
  const metering = new FakeMetering();
  const wallet = new FakeWallet();
  const service = await createRatingService({
    db,
    logger: silentLogger,
    clock,
    config: { consumerEnabled: false, cacheTtlMs: 0, ...config },
    // The consumer reads and consumes through the hand-written codecs, as main.ts wires it.
    clients: { metering: metering.client(), wallet: wallet.client(), ...(opts.views === false ? {} : { views: createViewClients(metering.transport(), wallet.transport()) }) },
  });
  return {
    db,
    service,
    clock,
    metering,
    wallet,
    client(key, tenant) {
      const headers: Interceptor = (next) => (req) => {
        req.header.set("authorization", `Bearer ${key}`);
        if (tenant) req.header.set(TENANT_HEADER, tenant);
        return next(req);
      };
      const t = createRouterTransport(service.routes, { router: { interceptors: [createAuthInterceptor(authenticator)] }, transport: { interceptors: [headers] } });
      return createClient(RatingService, t);
    },
    async close() {
      await service.stop();
      await db.dispose();
    },
  };
}

/** "OK", or the code and raw message of the ConnectError a call fails with ("FailedPrecondition: ..."). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    return `${Code[e.code]}: ${e.rawMessage}`;
  }
}
