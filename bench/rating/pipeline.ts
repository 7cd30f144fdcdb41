// Rating pipeline benchmark: the consumer's whole path per batch (ReadEvents from an in-process
// metering fake, load state, rate, COPY rated rows, upsert buckets/state/outbox/cursor in one
// transaction, Consume to an in-process wallet fake) on PostgreSQL (DATABASE_URL) or PGlite.
// Prints events/s and the per-batch time (an event waits at most about one batch time to be
// rated once the consumer keeps up, so p99 batch time bounds the rating lag at that rate).
//
// Then the rating lag at a fixed offered rate: BENCH_RATE events/s pushed in 10 ms ticks for
// BENCH_LAG_SECONDS while the running loop rates them; lag = push (accepted) -> the item reaches the
// wallet fake (after the batch committed; sampled every 2 ms), p50/p99/max over all events.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/rating/pipeline.ts
//   BENCH_EVENTS=20000 BENCH_BATCH=1000 npx tsx bench/rating/pipeline.ts   (default batch: the service default)
//   BENCH_RATE=5000 BENCH_LAG_SECONDS=10 npx tsx bench/rating/pipeline.ts   (BENCH_RATE=0: no lag run)
//
// BENCH_METERING=router (default): ReadEvents through an in-process Connect router transport, so
// metering's encoding of every page runs in this process too (about 40 ms of CPU per 1,000
// events, more than rating's own decoding). BENCH_METERING=preencoded: each event is encoded once
// when pushed (as metering would, in its own process) and a page is the concatenation of those
// bytes, decoded by the consumer as from the network. In both modes the lag run's events are built
// (and, preencoded, encoded) before its clock starts: a tick only makes the due ones visible, so
// the process spends its CPU on rating, not on metering's side of the feed.
//
// BENCH_VIEWS=0: the consumer reads and consumes through the generated protobuf-es codecs instead
// of its hand-written ones (apps/rating/src/wire.ts). BENCH_APP_SRC=<dir>: the rating sources to
// run (default apps/rating/src; a copy of an older tree, inside the repository so that its packages
// resolve, compares before/after in one harness: git archive <commit> apps/rating/src | tar -x
// --strip-components=3 -C bench/rating/.before).
// BENCH_CPU_PROFILE=<file.cpuprofile>: a CPU profile of the running loop and lag runs only (not the
// set-up, not the framing of events); BENCH_HEAP_PROFILE=<file.heapprofile>: a sampling allocation
// profile of the same window; BENCH_SQL_PROFILE=1: the SQL time per statement.
import { randomBytes } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { Client } from "@connectrpc/connect";
import { ReadEventsResponseSchema, StoredEventSchema, type MeteringService, type StoredEvent } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { migrate, openDb, openEmbeddedPostgres, type Db } from "@nanobill/db";
import { timedDb } from "../timed-db.js";
import { silentLogger, systemClock } from "@nanobill/service-kit";
import { fileURLToPath, pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import type * as RatingIndex from "../../apps/rating/src/index.js";
import type * as RatingTestSupport from "../../apps/rating/src/test-support.js";
import type * as RatingCompile from "../../apps/rating/src/domain/compile.js";
import type * as RatingFixtures from "../../apps/rating/src/domain/fixtures.js";
import type * as RatingWire from "../../apps/rating/src/wire.js";
import type * as RatingConfig from "../../apps/rating/src/config.js";

const APP_SRC = resolve(process.env.BENCH_APP_SRC ?? fileURLToPath(new URL("../../apps/rating/src", import.meta.url)));
const load = <T>(rel: string): Promise<T> => import(pathToFileURL(`${APP_SRC}/${rel}`).href) as Promise<T>;
const { createRatingService, migrationsDir } = await load<typeof RatingIndex>("index.ts");
const { FakeMetering, FakeWallet } = await load<typeof RatingTestSupport>("test-support.ts");
const { compilePlanVersion } = await load<typeof RatingCompile>("domain/compile.ts");
const { llmCosts, llmMatrixVersion } = await load<typeof RatingFixtures>("domain/fixtures.ts");
// Older trees have no wire.ts: they run on the generated codecs.
const wire = await load<typeof RatingWire>("wire.ts").catch(() => undefined);
const VIEWS = wire !== undefined && process.env.BENCH_VIEWS !== "0";
// Default: the batch size the tree under test ships (RATING_CONSUMER_BATCH_EVENTS's default).
const { RATING_CONFIG_DEFAULT } = await load<typeof RatingConfig>("config.ts");
const BATCH = Number(process.env.BENCH_BATCH ?? RATING_CONFIG_DEFAULT.consumerBatchEvents);

const N = Number(process.env.BENCH_EVENTS ?? 20_000);

const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 100);
// Consumer loops in this process, one per customer partition of the feed (RATING_CONSUMER_PARTITIONS).
const PARTITIONS = Number(process.env.BENCH_PARTITIONS ?? 1);
const RATE = Number(process.env.BENCH_RATE ?? 2_000);
const LAG_SECONDS = Number(process.env.BENCH_LAG_SECONDS ?? 10);
const METERING_MODE = process.env.BENCH_METERING ?? "router";
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
  // Pre-encoded events (BENCH_METERING=preencoded): field 1 of ReadEventsResponse, framed once.
  const framed = new WeakMap<StoredEvent, Uint8Array>();
  const frame = (e: StoredEvent): Uint8Array => {
    let b = framed.get(e);
    if (b === undefined) {
      b = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(toBinary(StoredEventSchema, e)).finish();
      framed.set(e, b);
    }
    return b;
  };
  const frameAll = (from: number) => {
    if (METERING_MODE === "preencoded") for (let i = from; i < metering.events.length; i++) frame(metering.events[i]!);
  };
  const pageBytes = (req: { afterSequence?: bigint; maxEvents?: number; partitionCount?: number; partition?: number }): Uint8Array => {
    const { events, lastSequence } = metering.page({ afterSequence: req.afterSequence ?? 0n, maxEvents: req.maxEvents ?? 0, partitionCount: req.partitionCount ?? 0, partition: req.partition ?? 0 });
    const w = new BinaryWriter();
    for (const e of events) w.raw(frame(e));
    w.tag(2, WireType.Varint).int64(lastSequence);
    return w.finish();
  };
  const meteringClient: Client<typeof MeteringService> =
    METERING_MODE === "preencoded"
      ? ({
          async readEvents(req: { afterSequence?: bigint; maxEvents?: number; partitionCount?: number; partition?: number }) {
            return fromBinary(ReadEventsResponseSchema, pageBytes(req));
          },
        } as unknown as Client<typeof MeteringService>)
      : metering.client();
  // The consumer's view clients (hand-written codecs): preencoded pages are read through the view
  // schema as the transport would; Consume goes through the wallet fake's router transport.
  let views: RatingWire.ViewClients | undefined;
  if (VIEWS && wire !== undefined) {
    const viaRouter = wire.createViewClients(metering.transport(), wallet.transport());
    views =
      METERING_MODE === "preencoded"
        ? { readEvents: async (req) => fromBinary(wire.ReadEventsResponseViewSchema, pageBytes(req)) as unknown as RatingWire.ReadEventsPageView, consume: viaRouter.consume }
        : viaRouter;
  }
  const svc = await createRatingService({ db, logger: silentLogger, clock: systemClock, config: { consumerEnabled: false, consumerBatchEvents: BATCH, consumerPartitions: PARTITIONS }, clients: { metering: meteringClient, wallet: wallet.client(), ...(views ? { views } : {}) } });
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
  frameAll(0);
  const times: number[] = [];
  let done = 0;
  const t0 = performance.now();
  let idleRounds = 0;
  while (done < N) {
    const before = done;
    for (const c of svc.consumers) {
      const t = performance.now();
      done += await c.pollOnce(0);
      times.push(performance.now() - t);
    }
    if (done === before && ++idleRounds > 100) throw new Error(`the consumers stopped rating at ${done} of ${N} events`);
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
  frameAll(N);
  // The lag run's events, built (and framed) before any clock starts; its ticks append the due ones to the feed.
  const end = 2 * N + Math.round(RATE * LAG_SECONDS);
  const builtAt = Date.now();
  for (let i = 2 * N; i < end; i++) {
    metering.push(tenant, { id: `evt_${i}`, customerId: `cus_${i % CUSTOMERS}`, type: "llm.call", timestampMs: builtAt - 1_000 + Math.floor(((i - 2 * N) / RATE) * 1000), properties: { model: "gpt-x", provider: "openai", input_tokens: 100 + (i % 5000), output_tokens: 10 + (i % 700) } });
  }
  frameAll(2 * N);
  const staged = metering.events.splice(2 * N);
  const profile = process.env.BENCH_CPU_PROFILE;
  const heapProfile = process.env.BENCH_HEAP_PROFILE;
  const inspector = profile || heapProfile ? new Session() : undefined;
  if (inspector) inspector.connect();
  if (inspector && profile) {
    await inspector.post("Profiler.enable");
    await inspector.post("Profiler.start");
  }
  if (inspector && heapProfile) {
    await inspector.post("HeapProfiler.enable");
    await inspector.post("HeapProfiler.startSampling", { samplingInterval: 64 * 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
  }
  const cpuLoop0 = process.cpuUsage();
  const tl = performance.now();
  for (const c of svc.consumers) c.start();
  while (wallet.consumed.length < 2 * N) {
    if (performance.now() - tl > 300_000) throw new Error(`the running loop handed ${wallet.consumed.length} of ${2 * N} items in 300 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
  const loopS = (performance.now() - tl) / 1000;
  // CPU of this whole process (all threads: GC helpers, libuv) per event of the running loop: less
  // sensitive to a shared box than wall-clock rates (it still includes the fakes' share).
  const cpuLoop = process.cpuUsage(cpuLoop0);
  const cpuPerEventUs = (cpuLoop.user + cpuLoop.system) / N;
  await Promise.all(svc.consumers.map((c) => c.stop()));
  const loopItems = wallet.consumed.length;
  // Rating lag at a fixed offered rate.
  let lagLine = "";
  if (RATE > 0) {
    const pushedMs = new Map<string, number>();
    const lags: number[] = [];
    let seen = wallet.consumed.length;
    let next = 2 * N;
    const sample = setInterval(() => {
      const at = performance.now();
      for (; seen < wallet.consumed.length; seen++) {
        const id = wallet.consumed[seen]!.item.eventId;
        const p = pushedMs.get(id);
        if (p !== undefined) lags.push(at - p);
      }
    }, 2);
    for (const c of svc.consumers) c.start();
    const startMs = performance.now();
    while (next < end) {
      const due = Math.min(end, 2 * N + Math.floor(((performance.now() - startMs) / 1000) * RATE));
      const at = performance.now();
      for (; next < due; next++) {
        pushedMs.set(`evt_${next}`, at);
        metering.events.push(staged[next - 2 * N]!);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    const offeredS = (performance.now() - startMs) / 1000;
    while (lags.length < end - 2 * N && performance.now() - startMs < (LAG_SECONDS + 60) * 1000) await new Promise((r) => setTimeout(r, 10));
    clearInterval(sample);
    await Promise.all(svc.consumers.map((c) => c.stop()));
    lags.sort((a, b) => a - b);
    const lq = (p: number): string => (lags.length === 0 ? "-" : lags[Math.min(lags.length - 1, Math.floor(p * lags.length))]!.toFixed(0));
    lagLine = `  lag at ${RATE.toLocaleString("en-US")} events/s offered for ${offeredS.toFixed(1)} s (running loop): accepted -> rated (handed to the wallet) p50 ${lq(0.5)} ms, p99 ${lq(0.99)} ms, max ${lq(1)} ms; ${lags.length} of ${end - 2 * N} events rated`;
  }
  if (inspector && profile) {
    const { profile: p } = await inspector.post("Profiler.stop");
    writeFileSync(profile, JSON.stringify(p));
  }
  if (inspector && heapProfile) {
    const { profile: p } = await inspector.post("HeapProfiler.stopSampling");
    writeFileSync(heapProfile, JSON.stringify(p));
  }
  inspector?.disconnect();
  const usage = await svc.rated.buckets(tenant, "cus_0", now - 7_200_000, now + 3_600_000, "", 100_000);
  console.log(`rating pipeline on ${url ? "PostgreSQL" : "PGlite"}: ${N} events, ${CUSTOMERS} customers, batches of ${BATCH}, ${PARTITIONS} partition loop(s), metering ${METERING_MODE}, ${VIEWS ? "hand-written codecs (views)" : "generated codecs"}, app ${APP_SRC}`);
  console.log(`  serial (pollOnce): throughput ${Math.round(N / total).toLocaleString("en-US")} events/s; batch time p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms; cus_0 buckets ${usage.length}`);
  console.log(`  running loop (pipelined): ${Math.round(N / loopS).toLocaleString("en-US")} events/s = ${(N / loopS / (N / total)).toFixed(2)}x serial; wallet items ${loopItems} of ${2 * N}; process CPU ${cpuPerEventUs.toFixed(1)} µs per event`);
  if (lagLine !== "") console.log(lagLine);
  for (const [k, v] of [...sqlTimes].sort((a, b) => b[1].reduce((x, y) => x + y, 0) - a[1].reduce((x, y) => x + y, 0)).slice(0, 15))
    console.log(`  sql ${v.reduce((x, y) => x + y, 0).toFixed(0).padStart(7)} ms total  x${String(v.length).padStart(5)}  ${k}`);
} finally {
  await rawDb.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await rawDb.close();
  await embedded?.close();
}
