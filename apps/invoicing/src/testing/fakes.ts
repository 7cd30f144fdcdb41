/**
 * Small in-memory fakes of rating, the credit wallet and the ledger for unit tests (served
 * through createRouterTransport), plus a harness that wires the invoicing service to them.
 */
import { createClient, createRouterTransport, type Client, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { AlertKind, CreditWalletService, PolicyMode, WalletKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { CreateAccountResult, CreateTransferResult, LedgerService, TransferState } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { ConnectError, Code } from "@connectrpc/connect";
import { createApiKeyAuthenticator, createAuthInterceptor, fixedClock, silentLogger, TENANT_HEADER, type Logger } from "@nanobill/service-kit";
import { migrate, type Db } from "@nanobill/db";
import { createInvoicingService, migrationsDir, type InvoicingConfig, type InvoicingServiceHandle } from "../index.js";

export interface FakeCustomer {
  customerId: string;
  currency: string;
  timeZone: string;
  billingAnchor: Date;
}
export interface FakeSubscription {
  subscriptionId: string;
  customerId: string;
  planId: string;
  planVersion: number;
  startedAt: Date;
  seats: Array<{ seats: number; at: Date }>;
  /** endedAt: when the subscription ends (absent: open-ended). */
  endedAt?: Date;
}
export interface FakeCharge {
  chargeId: string;
  name: string;
  kind: "usage" | "flat" | "seats";
  amount: string;
}
export interface FakeBucket {
  customerId: string;
  chargeId: string;
  hourStart: Date;
  quantity: bigint;
  priceNanos: bigint;
  unit: string;
  eventCount: bigint;
}
export interface FakeConsumption {
  customerId: string;
  unit: string;
  chargeId: string;
  occurredAt: Date;
  consumedNanos: bigint;
  /** shortfallNanos: what the wallet could not cover (default 0). */
  shortfallNanos?: bigint;
  /** captured: the burn is a capture of a hold (default: a Consume item). */
  captured?: boolean;
}

/** FakeTopUp: one wallet auto top-up (an ALERT_KIND_AUTO_TOP_UP alert and its purchased grant). */
export interface FakeTopUp {
  customerId: string;
  walletId: string;
  grantId: string;
  unit: string;
  amountNanos: bigint;
  at: Date;
  /** costBasis: the grant's cost basis ("" = the wallet's GetBalance does not list the grant: its price is not known). */
  costBasis: string;
  costCurrency: string;
  /** legacyAlert: the alert was recorded before alerts carried the cost basis (priced through GetBalance). */
  legacyAlert?: boolean;
  /** unlisted: GetBalance does not list the grant (its capped grant list has moved past it). */
  unlisted?: boolean;
}

export class FakeWorld {
  customers = new Map<string, FakeCustomer>();
  subscriptions: FakeSubscription[] = [];
  plans = new Map<string, { currency: string; minimum: string; charges: FakeCharge[] }>();
  buckets: FakeBucket[] = [];
  consumption: FakeConsumption[] = [];
  topUps: FakeTopUp[] = [];
  /** overagePolicies: "customer|unit" -> the wallet's POSTPAID_OVERAGE rate and currency. */
  overagePolicies = new Map<string, { rate: string; currency: string }>();
  /** creditTypes: credit type id -> name, currency and rates (currency per credit, from a time). */
  creditTypes = new Map<string, { name: string; currency: string; rates: Array<{ rate: string; at: Date }> }>();
  /** walletTerms: a wallet's auto top-up cost basis and currency (for grants GetBalance does not list). */
  walletTerms = new Map<string, { costBasis: string; costCurrency: string; prepaid: boolean; unit: string }>();
  accounts = new Map<string, { unit: string; code: number; debits: bigint; credits: bigint }>();
  transfers = new Map<string, { debit: string; credit: string; amountNanos: bigint; unit: string }>();
  tenantsSeen = new Set<string>();
  ledgerDown = false;

  /** hooks: called inside a fake RPC after its response is computed (a test interleaves other calls there). */
  hooks: { afterListAlerts?: () => Promise<void> } = {};

  /** calls: upstream RPCs received, per method name. */
  calls = new Map<string, number>();

  private tenant(ctx: HandlerContext): void {
    this.calls.set(ctx.method.name, (this.calls.get(ctx.method.name) ?? 0) + 1);
    const t = ctx.requestHeader.get(TENANT_HEADER);
    if (t === null) throw new ConnectError("x-nanobill-tenant missing", Code.InvalidArgument);
    this.tenantsSeen.add(t);
  }

  rating(): Client<typeof RatingService> {
    return createClient(
      RatingService,
      createRouterTransport((r) =>
        r.service(RatingService, {
          getCustomer: (req, ctx) => {
            this.tenant(ctx);
            const c = this.customers.get(req.customerId);
            if (c === undefined) throw new ConnectError(`customer ${req.customerId} not found`, Code.NotFound);
            return { customer: { customerId: c.customerId, currency: c.currency, timeZone: c.timeZone, billingAnchor: timestampFromDate(c.billingAnchor), createTime: timestampFromDate(c.billingAnchor) } };
          },
          listSubscriptions: (req, ctx) => {
            this.tenant(ctx);
            return {
              subscriptions: this.subscriptions
                .filter((s) => s.customerId === req.customerId)
                .map((s) => ({
                  subscriptionId: s.subscriptionId,
                  customerId: s.customerId,
                  startTime: timestampFromDate(s.startedAt),
                  endTime: s.endedAt === undefined ? undefined : timestampFromDate(s.endedAt),
                  phases: [{ planId: s.planId, planVersion: s.planVersion, startTime: timestampFromDate(s.startedAt) }],
                  seatChanges: s.seats.map((x, i) => ({ changeId: `chg_${i}`, seats: x.seats, effectiveTime: timestampFromDate(x.at) })),
                })),
            };
          },
          getPlan: (req, ctx) => {
            this.tenant(ctx);
            const p = this.plans.get(req.planId);
            if (p === undefined) throw new ConnectError(`plan ${req.planId} not found`, Code.NotFound);
            return {
              plan: {
                planId: req.planId,
                versions: [
                  {
                    version: 1,
                    currency: p.currency,
                    minimumCommitmentAmount: p.minimum,
                    charges: p.charges.map((c) => ({
                      chargeId: c.chargeId,
                      name: c.name,
                      unit: p.currency,
                      pricing:
                        c.kind === "flat"
                          ? { case: "flat" as const, value: { amount: c.amount } }
                          : c.kind === "seats"
                            ? { case: "seats" as const, value: { perSeatAmount: c.amount } }
                            : { case: "perUnit" as const, value: { unitPrice: { amount: c.amount } } },
                    })),
                  },
                ],
              },
            };
          },
          listRatedUsage: (req, ctx) => {
            this.tenant(ctx);
            const from = Math.floor(timestampDate(req.from!).getTime() / 3_600_000) * 3_600_000;
            const to = timestampDate(req.to!).getTime();
            const bs = this.buckets.filter(
              (b) => b.customerId === req.customerId && b.hourStart.getTime() >= from && b.hourStart.getTime() < to && (req.chargeId === "" || b.chargeId === req.chargeId),
            );
            const totals = new Map<string, { chargeId: string; unit: string; quantity: bigint; priceNanos: bigint }>();
            for (const b of bs) {
              const k = `${b.chargeId}|${b.unit}`;
              const t = totals.get(k) ?? { chargeId: b.chargeId, unit: b.unit, quantity: 0n, priceNanos: 0n };
              t.quantity += b.quantity;
              t.priceNanos += b.priceNanos;
              totals.set(k, t);
            }
            return {
              buckets: bs.map((b) => ({ chargeId: b.chargeId, hourStart: timestampFromDate(b.hourStart), quantity: b.quantity, priceNanos: b.priceNanos, unit: b.unit, eventCount: b.eventCount })),
              totals: [...totals.values()],
            };
          },
        }),
      ),
    );
  }

  wallet(): Client<typeof CreditWalletService> {
    return createClient(
      CreditWalletService,
      createRouterTransport((r) =>
        r.service(CreditWalletService, {
          listAlerts: async (req, ctx) => {
            this.tenant(ctx);
            const since = req.since === undefined ? 0 : timestampDate(req.since).getTime();
            const all = this.topUps
              .filter((t) => (req.customerId === "" || t.customerId === req.customerId) && (req.kind === AlertKind.UNSPECIFIED || req.kind === AlertKind.AUTO_TOP_UP) && t.at.getTime() >= since)
              .sort((a, b) => a.at.getTime() - b.at.getTime());
            // pages of 2, so that the client's paging is exercised
            const offset = req.page?.pageToken === undefined || req.page.pageToken === "" ? 0 : Number(req.page.pageToken);
            const page = all.slice(offset, offset + 2);
            if (this.hooks.afterListAlerts !== undefined) await this.hooks.afterListAlerts();
            return {
              alerts: page.map((t) => ({
                id: `alr_topup_${t.grantId}`,
                kind: AlertKind.AUTO_TOP_UP,
                walletId: t.walletId,
                customerId: t.customerId,
                grantId: t.grantId,
                amountNanos: t.amountNanos,
                unit: t.unit,
                createdAt: timestampFromDate(t.at),
                ...(t.legacyAlert || t.costBasis === "" ? {} : { costBasis: { value: t.costBasis }, costBasisCurrency: t.costCurrency }),
              })),
              page: { nextPageToken: offset + 2 < all.length ? String(offset + 2) : "" },
            };
          },
          getCreditType: (req, ctx) => {
            this.tenant(ctx);
            const t = this.creditTypes.get(req.creditTypeId);
            if (t === undefined) throw new ConnectError(`credit type ${req.creditTypeId} not found`, Code.NotFound);
            return {
              creditType: {
                id: req.creditTypeId,
                name: t.name,
                currency: t.currency,
                rates: t.rates.map((r) => ({ rate: { value: r.rate }, currency: t.currency, effectiveAt: timestampFromDate(r.at) })),
              },
            };
          },
          getBalance: (req, ctx) => {
            this.tenant(ctx);
            if (req.walletId === "") {
              const p = this.overagePolicies.get(`${req.customerId}|${req.unit}`);
              if (p === undefined) throw new ConnectError(`no wallet of ${req.customerId} in ${req.unit}`, Code.NotFound);
              return { wallet: { id: `wal_${req.unit}`, unit: req.unit, kind: WalletKind.CREDITS, policy: { mode: PolicyMode.POSTPAID_OVERAGE, overageRate: { value: p.rate }, overageCurrency: p.currency } } };
            }
            const terms = this.walletTerms.get(req.walletId);
            return {
              wallet: {
                id: req.walletId,
                unit: terms?.unit ?? "",
                kind: terms?.prepaid === true ? WalletKind.PREPAID : WalletKind.CREDITS,
                autoTopUp: terms === undefined ? undefined : { enabled: true, costBasis: { value: terms.costBasis }, costBasisCurrency: terms.costCurrency },
              },
              grants: this.topUps
                .filter((t) => t.walletId === req.walletId && t.costBasis !== "" && t.unlisted !== true)
                .map((t) => ({ grantId: t.grantId, amountNanos: t.amountNanos, costBasis: { value: t.costBasis }, costBasisCurrency: t.costCurrency })),
            };
          },
          listConsumption: (req, ctx) => {
            this.tenant(ctx);
            const from = timestampDate(req.from!).getTime();
            const to = timestampDate(req.to!).getTime();
            const es = this.consumption.filter((c) => c.customerId === req.customerId && c.unit === req.unit && c.occurredAt.getTime() >= from && c.occurredAt.getTime() < to);
            const by = new Map<string, { consumed: bigint; shortfall: bigint; captured: bigint }>();
            for (const e of es) {
              const b = by.get(e.chargeId) ?? { consumed: 0n, shortfall: 0n, captured: 0n };
              b.consumed += e.consumedNanos;
              b.shortfall += e.shortfallNanos ?? 0n;
              b.captured += e.captured === true ? e.consumedNanos : 0n;
              by.set(e.chargeId, b);
            }
            return {
              unit: req.unit,
              walletId: es.length > 0 ? "wal_1" : "",
              consumedNanos: es.reduce((s, e) => s + e.consumedNanos, 0n),
              shortfallNanos: es.reduce((s, e) => s + (e.shortfallNanos ?? 0n), 0n),
              capturedNanos: [...by.values()].reduce((s, b) => s + b.captured, 0n),
              byCharge: [...by].map(([chargeId, b]) => ({ chargeId, consumedNanos: b.consumed, shortfallNanos: b.shortfall, capturedNanos: b.captured })),
            };
          },
        }),
      ),
    );
  }

  ledger(): Client<typeof LedgerService> {
    return createClient(
      LedgerService,
      createRouterTransport((r) =>
        r.service(LedgerService, {
          createAccounts: (req, ctx) => {
            this.tenant(ctx);
            if (this.ledgerDown) throw new ConnectError("ledger down", Code.Unavailable);
            return {
              results: req.accounts.map((a) => {
                if (this.accounts.has(a.id)) return { id: a.id, result: CreateAccountResult.EXISTS };
                this.accounts.set(a.id, { unit: a.unit, code: a.code, debits: 0n, credits: 0n });
                return { id: a.id, result: CreateAccountResult.OK };
              }),
            };
          },
          createTransfers: (req, ctx) => {
            this.tenant(ctx);
            if (this.ledgerDown) throw new ConnectError("ledger down", Code.Unavailable);
            return {
              results: req.transfers.map((t) => {
                if (this.transfers.has(t.id)) return { id: t.id, result: CreateTransferResult.EXISTS, amountNanos: t.amountNanos };
                const d = this.accounts.get(t.debitAccountId);
                const c = this.accounts.get(t.creditAccountId);
                if (d === undefined) return { id: t.id, result: CreateTransferResult.DEBIT_ACCOUNT_NOT_FOUND };
                if (c === undefined) return { id: t.id, result: CreateTransferResult.CREDIT_ACCOUNT_NOT_FOUND };
                if (t.amountNanos <= 0n) return { id: t.id, result: CreateTransferResult.AMOUNT_MUST_NOT_BE_ZERO };
                d.debits += t.amountNanos;
                c.credits += t.amountNanos;
                this.transfers.set(t.id, { debit: t.debitAccountId, credit: t.creditAccountId, amountNanos: t.amountNanos, unit: t.unit });
                return { id: t.id, result: CreateTransferResult.OK, amountNanos: t.amountNanos };
              }),
            };
          },
          lookupTransfers: (req, ctx) => {
            this.tenant(ctx);
            return {
              transfers: req.ids
                .filter((id) => this.transfers.has(id))
                .map((id) => {
                  const t = this.transfers.get(id)!;
                  return { id, debitAccountId: t.debit, creditAccountId: t.credit, amountNanos: t.amountNanos, unit: t.unit, state: TransferState.POSTED };
                }),
            };
          },
        }),
      ),
    );
  }

  /** balance: credits - debits of an account. */
  balance(id: string): bigint {
    const a = this.accounts.get(id);
    return a === undefined ? 0n : a.credits - a.debits;
  }
}

export const TEST_KEYS = {
  admin: { key: "k_admin_tnt_a", tenant: "tnt_a", scopes: ["admin" as const] },
  read: { key: "k_read_tnt_a", tenant: "tnt_a", scopes: ["read" as const] },
  otherTenant: { key: "k_admin_tnt_b", tenant: "tnt_b", scopes: ["admin" as const] },
};

/** harness: the invoicing service over a migrated Db and the fakes, and a client with a key. */
export async function harness(db: Db, world: FakeWorld, now: Date, config: Partial<InvoicingConfig> = {}, logger: Logger = silentLogger) {
  await migrate(db, migrationsDir);
  const clock = fixedClock(now);
  const svc: InvoicingServiceHandle = await createInvoicingService({
    db,
    logger,
    clock,
    clients: { rating: world.rating(), wallet: world.wallet(), ledger: world.ledger() },
    config,
  });
  const auth = createApiKeyAuthenticator(Object.values(TEST_KEYS));
  const clientFor = (key: string) => {
    const withKey: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${key}`);
      return next(req);
    };
    return createClient(
      InvoicingService,
      createRouterTransport(svc.routes, { router: { interceptors: [createAuthInterceptor(auth)] }, transport: { interceptors: [withKey] } }),
    );
  };
  return { svc, clock, client: clientFor(TEST_KEYS.admin.key), reader: clientFor(TEST_KEYS.read.key), other: clientFor(TEST_KEYS.otherTenant.key) };
}
