// Rating pipeline benchmark: the consumer's whole path per batch (ReadEvents from an in-process
// metering fake, load state, rate, COPY rated rows, upsert buckets/state/outbox/cursor in one
// transaction, Consume to an in-process wallet fake) on PostgreSQL (DATABASE_URL) or PGlite.
// Prints events/s and the per-batch time (an event waits at most about one batch time to be
// rated once the consumer keeps up, so p99 batch time bounds the rating lag at that rate).
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/rating/pipeline.ts
//   BENCH_EVENTS=20000 BENCH_BATCH=1000 npx tsx bench/rating/pipeline.ts
import { randomBytes } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { migrate, openDb, openEmbeddedPostgres, type Db } from "@nanobill/db";
import { timedDb } from "../timed-db.js";
import { silentLogger, systemClock } from "@nanobill/service-kit";
import { createRatingService, migrationsDir } from "../../apps/rating/src/index.js";
import { FakeMetering, FakeWallet } from "../../apps/rating/src/test-support.js";
import { compilePlanVersion } from "../../apps/rating/src/domain/compile.js";
import { llmCosts, llmMatrixVersion } from "../../apps/rating/src/domain/fixtures.js";

const N = Number(process.env.BENCH_EVENTS ?? 20_000);
const BATCH = Number(process.env.BENCH_BATCH ?? 1_000);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 100);
const url = process.env.DATABASE_URL;

const embedded = url ? undefined : await openEmbeddedPostgres({});
const schema = `bench_rating_${randomBytes(4).toString("hex")}`;
const rawDb = await openDb({ url, embedded, schema });
// BENCH_SQL_PROFILE=1 prints where the batches' SQL time goes (per statement, after the run).
const sqlTimes = new Map<string, number[]>();
const db: Db = process.env.BENCH_SQL_PROFILE ? timedDb(rawDb, sqlTimes) : rawDb;
try {
  await migrate(db, migrationsDir);
  const metering = new FakeMetering();
  const wallet = new FakeWallet();
  const svc = await createRatingService({ db, logger: silentLogger, clock: systemClock, config: { consumerEnabled: false, consumerBatchEvents: BATCH }, clients: { metering: metering.client(), wallet: wallet.client() } });
  const tenant = "tnt_bench";
  const start = Date.UTC(2026, 10, 1);
  const v = llmMatrixVersion();
  compilePlanVersion(v, "v");
  await svc.catalog.createPlan(tenant, "plan", "P", v, start);
  await svc.catalog.publishPlanVersion(tenant, "plan", 1, start, () => {});
  await svc.catalog.upsertCostRates(tenant, llmCosts());
  for (let c = 0; c < CUSTOMERS; c++) {
    await svc.catalog.createCustomer(tenant, { customerId: `cus_${c}`, name: "", currency: "USD", billingAnchorMs: start, timeZone: "UTC", createTimeMs: start });
    await svc.catalog.createSubscription(tenant, { subscriptionId: `sub_${c}`, customerId: `cus_${c}`, phases: [{ planId: "plan", planVersion: 1, startMs: start, endMs: null }], seatChanges: [], startMs: start, endMs: null }, 0, start);
  }
  const now = Date.now();
  for (let i = 0; i < N; i++) {
    metering.push(tenant, { id: `evt_${i}`, customerId: `cus_${i % CUSTOMERS}`, type: "llm.call", timestampMs: now - 60_000 + (i % 60_000), properties: { model: "gpt-x", provider: "openai", input_tokens: 100 + (i % 5000), output_tokens: 10 + (i % 700) } });
  }
  const times: number[] = [];
  let done = 0;
  const t0 = performance.now();
  while (done < N) {
    const t = performance.now();
    done += await svc.consumer.pollOnce(0);
    times.push(performance.now() - t);
  }
  const total = (performance.now() - t0) / 1000;
  times.sort((a, b) => a - b);
  const q = (p: number): string => times[Math.min(times.length - 1, Math.floor(p * times.length))]!.toFixed(0);
  // The same work through the running loop (pipelined: read-ahead and wallet hand-off overlap the
  // rating transaction), N more events, same run.
  const pushedAt = Date.now();
  for (let i = N; i < 2 * N; i++) {
    metering.push(tenant, { id: `evt_${i}`, customerId: `cus_${i % CUSTOMERS}`, type: "llm.call", timestampMs: pushedAt - 60_000 + (i % 60_000), properties: { model: "gpt-x", provider: "openai", input_tokens: 100 + (i % 5000), output_tokens: 10 + (i % 700) } });
  }
  const tl = performance.now();
  svc.consumer.start();
  while (wallet.consumed.length < 2 * N) await new Promise((r) => setTimeout(r, 5));
  const loopS = (performance.now() - tl) / 1000;
  await svc.consumer.stop();
  const usage = await svc.rated.buckets(tenant, "cus_0", now - 7_200_000, now + 3_600_000, "", 100_000);
  console.log(`rating pipeline on ${url ? "PostgreSQL" : "PGlite"}: ${N} events, ${CUSTOMERS} customers, batches of ${BATCH}`);
  console.log(`  serial (pollOnce): throughput ${Math.round(N / total).toLocaleString("en-US")} events/s; batch time p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms; cus_0 buckets ${usage.length}`);
  console.log(`  running loop (pipelined): ${Math.round(N / loopS).toLocaleString("en-US")} events/s = ${(N / loopS / (N / total)).toFixed(2)}x serial; wallet items ${wallet.consumed.length} of ${2 * N}`);
  for (const [k, v] of [...sqlTimes].sort((a, b) => b[1].reduce((x, y) => x + y, 0) - a[1].reduce((x, y) => x + y, 0)).slice(0, 15))
    console.log(`  sql ${v.reduce((x, y) => x + y, 0).toFixed(0).padStart(7)} ms total  x${String(v.length).padStart(5)}  ${k}`);
} finally {
  await rawDb.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await rawDb.close();
  await embedded?.close();
}
