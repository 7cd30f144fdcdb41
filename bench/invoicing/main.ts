// Invoicing benchmark: ClosePeriod for many subscriptions whose rated usage is spread over hour
// buckets, on real PostgreSQL (DATABASE_URL; PGlite when unset, which is much slower).
// Rating and the wallet are in-process fakes behind Connect router transports (protobuf on the
// wire), holding each customer's November usage as hour buckets in typed arrays; only the
// invoicing service and its database are measured. Prints figures; bounded by BENCH_DEADLINE_S.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/invoicing/main.ts
//   BENCH_SUBS=10000 BENCH_EVENTS=10000000 BENCH_CONCURRENT_REQUESTS=2 ...
import { createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { ClosePeriodResult, InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { migrate, openDb, openEmbeddedPostgres } from "@nanobill/db";
import { createApiKeyAuthenticator, createAuthInterceptor, fixedClock, silentLogger } from "@nanobill/service-kit";
import { createInvoicingService, migrationsDir } from "../../apps/invoicing/src/index.js";
import { CLOSE_PERIOD_ITEMS_MAX } from "../../apps/invoicing/src/limits.js";
import { createInvoiceStore, type CloseItem } from "../../apps/invoicing/src/store/invoice-store.js";
import { assembleInvoice, type ChargeInput } from "../../apps/invoicing/src/domain/assemble.js";
import { defaultSettings } from "../../apps/invoicing/src/domain/invoice.js";
import { exact } from "../../apps/invoicing/src/domain/rounding.js";

const SUBS = Number(process.env.BENCH_SUBS ?? "10000");
const EVENTS = Number(process.env.BENCH_EVENTS ?? "10000000");
const CONCURRENT = Number(process.env.BENCH_CONCURRENT_REQUESTS ?? "2");
const BATCH = Math.min(Number(process.env.BENCH_BATCH ?? "500"), CLOSE_PERIOD_ITEMS_MAX);
const POOL = Number(process.env.BENCH_POOL ?? "12");
const DEADLINE_S = Number(process.env.BENCH_DEADLINE_S ?? "240");
const SEED = Number(process.env.BENCH_SEED ?? "42");

const NOV = Date.UTC(2026, 10, 1);
const DEC = Date.UTC(2026, 11, 1);
const HOURS = (DEC - NOV) / 3_600_000;
const TENANT = "tnt_bench";
const KEY = "k_bench_admin";

const deadline = setTimeout(() => {
  console.error(`deadline of ${DEADLINE_S}s reached: aborting`);
  process.exit(2);
}, DEADLINE_S * 1000);
deadline.unref();

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main(): Promise<void> {
  const t0 = performance.now();
  // 1. Rated usage: EVENTS events over SUBS customers (one subscription each), hour buckets.
  const price = new BigInt64Array(SUBS * HOURS);
  const qty = new BigInt64Array(SUBS * HOURS);
  const count = new Int32Array(SUBS * HOURS);
  const rnd = mulberry32(SEED);
  let ratedTotal = 0n;
  for (let i = 0; i < EVENTS; i++) {
    const s = Math.floor(rnd() * SUBS);
    const h = Math.floor(rnd() * HOURS);
    const tokens = 1 + Math.floor(rnd() * 4000);
    const nanos = BigInt(tokens) * 2_500n / 1_000n + 1n; // ~$2.50 per 1M tokens, whole nanos (rating's carry is upstream)
    const k = s * HOURS + h;
    price[k] = price[k]! + nanos;
    qty[k] = qty[k]! + BigInt(tokens);
    count[k] = count[k]! + 1;
    ratedTotal += nanos;
  }
  let buckets = 0;
  for (let k = 0; k < count.length; k++) if (count[k]! > 0) buckets++;
  const tGen = performance.now();
  const cusIndex = (id: string) => Number(id.slice(4));

  // Upstream RPCs made by invoicing, per method (counted on the fakes' transports).
  const rpcs = new Map<string, number>();
  const countRpc: Interceptor = (next) => (req) => {
    rpcs.set(req.method.name, (rpcs.get(req.method.name) ?? 0) + 1);
    return next(req);
  };
  const rating = createClient(
    RatingService,
    createRouterTransport((r) =>
      r.service(RatingService, {
        getCustomer: (req) => ({ customer: { customerId: req.customerId, currency: "USD", timeZone: "UTC", billingAnchor: timestampFromDate(new Date(NOV)) } }),
        listSubscriptions: (req) => ({
          subscriptions: [
            {
              subscriptionId: `sub_${cusIndex(req.customerId)}`,
              customerId: req.customerId,
              startTime: timestampFromDate(new Date(NOV)),
              phases: [{ planId: "plan_llm", planVersion: 1, startTime: timestampFromDate(new Date(NOV)) }],
            },
          ],
        }),
        getPlan: () => ({
          plan: {
            planId: "plan_llm",
            versions: [
              {
                version: 1,
                currency: "USD",
                charges: [
                  { chargeId: "llm_tokens", name: "LLM tokens", unit: "USD", pricing: { case: "perUnit" as const, value: { unitPrice: { amount: "2.5", perQuantity: 1_000_000n } } } },
                  { chargeId: "platform", name: "Platform fee", unit: "USD", pricing: { case: "flat" as const, value: { amount: "19.99" } } },
                ],
              },
            ],
          },
        }),
        listRatedUsage: (req) => {
          const s = cusIndex(req.customerId);
          const from = Math.max(0, Math.floor((timestampDate(req.from!).getTime() - NOV) / 3_600_000));
          const to = Math.min(HOURS, Math.ceil((timestampDate(req.to!).getTime() - NOV) / 3_600_000));
          let p = 0n;
          let q = 0n;
          for (let h = from; h < to; h++) {
            p += price[s * HOURS + h]!;
            q += qty[s * HOURS + h]!;
          }
          // Totals only: the close path needs the per-charge sums, not the buckets.
          return { totals: p === 0n ? [] : [{ chargeId: "llm_tokens", quantity: q, priceNanos: p, unit: "USD" }] };
        },
      }),
      { transport: { interceptors: [countRpc] } },
    ),
  );
  const wallet = createClient(
    CreditWalletService,
    createRouterTransport((r) => r.service(CreditWalletService, { listConsumption: (req) => ({ unit: req.unit, consumedNanos: 0n }), listAlerts: () => ({ alerts: [] }) }), { transport: { interceptors: [countRpc] } }),
  );
  const ledger = createClient(LedgerService, createRouterTransport((r) => r.service(LedgerService, {})));

  // 2. Invoicing on PostgreSQL in a fresh schema.
  const url = process.env.DATABASE_URL;
  const embedded = url === undefined ? await openEmbeddedPostgres({}) : undefined;
  const schema = `bench_invoicing_${process.pid}`;
  const db = await openDb({ url, embedded, schema, poolMax: POOL });
  await migrate(db, migrationsDir);
  // Open the pool's connections before timing (a new PostgreSQL backend costs a fork).
  await Promise.all(Array.from({ length: POOL }, () => db.query("SELECT pg_sleep(0.05)")));
  const svc = await createInvoicingService({ db, logger: silentLogger, clock: fixedClock(new Date(DEC + 60_000)), clients: { rating, wallet, ledger } });
  const withKey: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${KEY}`);
    return next(req);
  };
  const client = createClient(
    InvoicingService,
    createRouterTransport(svc.routes, {
      router: {
        interceptors: [
          createAuthInterceptor(createApiKeyAuthenticator([{ key: KEY, tenant: TENANT, scopes: ["admin"] }])),
          (next) => async (req) => {
            try {
              return await next(req);
            } catch (e) {
              console.error("handler error:", e);
              throw e;
            }
          },
        ],
      },
      transport: { interceptors: [withKey] },
    }),
  );

  // 3. ClosePeriod for every subscription, BATCH items per request, CONCURRENT requests in flight.
  const batches: number[][] = [];
  for (let s = 0; s < SUBS; s += BATCH) batches.push(Array.from({ length: Math.min(BATCH, SUBS - s) }, (_, i) => s + i));
  const latencies: number[] = [];
  let created = 0;
  let invoicedUsage = 0n;
  let next = 0;
  const tClose = performance.now();
  const worker = async () => {
    while (next < batches.length) {
      const b = batches[next++]!;
      const t = performance.now();
      const r = await client.closePeriod({ items: b.map((s) => ({ customerId: `cus_${s}`, subscriptionId: `sub_${s}`, periodStart: timestampFromDate(new Date(NOV)) })) });
      latencies.push(performance.now() - t);
      for (const x of r.results) {
        if (x.result !== ClosePeriodResult.CREATED) throw new Error(`unexpected result ${ClosePeriodResult[x.result]}: ${x.message}`);
        created++;
        for (const l of x.invoice!.lines) if (l.chargeId === "llm_tokens") invoicedUsage += l.roundedAmountNanos;
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENT }, worker));
  const closeMs = performance.now() - tClose;
  const closeRpcs = [...rpcs].sort((a, b) => b[1] - a[1]);
  const closeRpcTotal = closeRpcs.reduce((n, [, c]) => n + c, 0);

  // 4. Replay: every close again must return the existing invoice (idempotency), timed.
  const tReplay = performance.now();
  const replay = await client.closePeriod({ items: batches[0]!.map((s) => ({ customerId: `cus_${s}`, subscriptionId: `sub_${s}`, periodStart: timestampFromDate(new Date(NOV)) })) });
  const replayMs = performance.now() - tReplay;
  if (replay.results.some((x) => x.result !== ClosePeriodResult.ALREADY_CLOSED)) throw new Error("replay created an invoice");

  // 5. The invoicing-owned path alone (domain + store, no RPC): December closed straight through
  //    store.closeMany with the same usage, in transactions of BATCH subscriptions.
  const store = createInvoiceStore(db);
  const decStart = new Date(DEC);
  const decEnd = new Date(Date.UTC(2027, 0, 1));
  const settings = defaultSettings("");
  const tStore = performance.now();
  let storeCreated = 0;
  for (const b of batches) {
    const items: CloseItem[] = b.map((s) => {
      let p = 0n;
      let q = 0n;
      for (let h = 0; h < HOURS; h++) {
        p += price[s * HOURS + h]!;
        q += qty[s * HOURS + h]!;
      }
      const charges: ChargeInput[] = [
        { kind: "usage", residueKey: "llm_tokens", chargeId: "llm_tokens", subscriptionId: `sub_${s}`, description: "LLM tokens: usage", quantity: q.toString(), unitPrice: "", amount: exact(p), periodStart: decStart, periodEnd: decEnd, expandable: true },
      ];
      return {
        params: { invoiceId: `inv_dec_${s}`, customerId: `cus_${s}`, subscriptionId: `sub_${s}`, periodIndex: 1, periodStart: decStart, periodEnd: decEnd, usageFrom: decStart, usageTo: decEnd, timeZone: "UTC", unit: "USD", roundingMode: "half_even", taxRateBps: 0, now: decEnd },
        assemble: (residues, deferredIn) =>
          assembleInvoice({ currency: "USD", settings: { ...settings, customerId: `cus_${s}` }, charges, minimumCommitmentNanos: 0n, creditsAppliedNanos: 0n, residues, deferredIn, periodStart: decStart, periodEnd: decEnd }),
      };
    });
    for (const o of await store.closeMany(TENANT, items)) if (o.created) storeCreated++;
  }
  const storeMs = performance.now() - tStore;
  ratedTotal *= 2n;
  const { rows: dec } = await db.query<{ s: string }>(`SELECT COALESCE(SUM(rounded_amount_nanos), 0)::text AS s FROM invoice_lines WHERE charge_id = 'llm_tokens' AND period_start = $1`, [decStart]);
  invoicedUsage += BigInt(dec[0]!.s);

  // 6. Conservation over both periods: invoiced usage + carried residue == rated nanos, exactly.
  const { rows } = await db.query<{ s: string }>(`SELECT COALESCE(SUM(residue_nanos), 0)::text AS s FROM residues WHERE residue_key = 'llm_tokens'`);
  const carried = BigInt(rows[0]!.s);
  const { rows: n } = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM invoices`);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(0);
  console.log(`invoicing ClosePeriod benchmark (${db.kind}${url === undefined ? ", embedded" : ""}, pool ${POOL}, ${CONCURRENT} concurrent requests of ${BATCH} items)`);
  console.log(`  subscriptions            ${SUBS}`);
  console.log(`  rated events             ${EVENTS} in ${buckets} hour buckets (generated in ${((tGen - t0) / 1000).toFixed(1)} s)`);
  console.log(`  invoices created         ${created} (invoice rows after both periods: ${n[0]!.n})`);
  console.log(`  ClosePeriod wall time    ${(closeMs / 1000).toFixed(2)} s  (${((created * 1000) / closeMs).toFixed(0)} invoices/s)`);
  console.log(`  request latency (ms)     p50 ${pct(0.5)}  p99 ${pct(0.99)}  max ${latencies[latencies.length - 1]!.toFixed(0)}`);
  console.log(`  upstream RPCs            ${closeRpcTotal} (${(closeRpcTotal / Math.max(1, created)).toFixed(2)} per close: ${closeRpcs.map(([m, c]) => `${m} ${c}`).join(", ")})`);
  console.log(`  replay of ${batches[0]!.length} closes      ${replayMs.toFixed(0)} ms (all ALREADY_CLOSED)`);
  console.log(`  store path only          ${storeCreated} December invoices in ${(storeMs / 1000).toFixed(2)} s (${((storeCreated * 1000) / storeMs).toFixed(0)} invoices/s; domain + one transaction per ${BATCH}, no RPC)`);
  console.log(`  rated nanos (2 periods)  ${ratedTotal}`);
  console.log(`  invoiced + carried       ${invoicedUsage} + ${carried} = ${invoicedUsage + carried} (${invoicedUsage + carried === ratedTotal ? "exact" : "MISMATCH"})`);
  await db.query(`DROP SCHEMA "${schema}" CASCADE`);
  await db.close();
  await embedded?.close();
  if (invoicedUsage + carried !== ratedTotal) process.exit(1);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
