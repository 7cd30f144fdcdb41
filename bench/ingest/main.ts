// Ingestion benchmark: durable ingestion through gRPC with the SDK against real PostgreSQL.
// The metering server runs in its own process (apps/metering/src/main.ts); this process is the
// client. Prints events/s for batches of 1, 100 and 1,000 events with 0% and 30% duplicates,
// the p50/p99 latency of a 100-event batch, and in the same run the raw bulk-insert (COPY)
// rate of the same rows into a copy of the events table, with our ratio to it.
// Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/ingest/main.ts
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { Aggregation, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { openDb, type Db } from "@nanobill/db";
import { createMeteringClient, type TrackEvent } from "@nanobill/sdk";
import { createClientTransport, closeClientSessions } from "@nanobill/service-kit";
import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
import { EventSchema, IngestEventsRequestSchema } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { validateEvent } from "../../apps/metering/src/domain/event.js";
import { createMeteringStore } from "../../apps/metering/src/store/store.js";
import { aggregateAll } from "../../apps/metering/src/store/aggregator.js";
import { AGGREGATE_CHUNK_EVENTS } from "../../apps/metering/src/limits.js";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const SCHEMA = `bench_ingest_${process.pid}`;
const KEY = "sk_bench_ingest_admin_key_0001";
/** Events sent before the measured scenarios (see main). */
const WARM_UP_EVENTS = 100_000;
/** Upper bound of the whole run; each scenario is also bounded by its event count. */
const RUN_MS_MAX = 300_000;
const started = Date.now();
// INGEST_BENCH_PROTOCOL=connect|grpc: the SDK's wire protocol (default grpc: the "through the gRPC API").
const PROTOCOL = (process.env.INGEST_BENCH_PROTOCOL ?? "grpc") as "grpc" | "connect";
if (PROTOCOL !== "grpc" && PROTOCOL !== "connect") throw new Error("INGEST_BENCH_PROTOCOL must be grpc or connect");

// INGEST_BENCH_BATCHES=1000 runs only the scenarios of those batch sizes (profiling).
const SCENARIOS: Array<{ batch: number; events: number; inFlight: number }> = [
  { batch: 1, events: 2_000, inFlight: 64 },
  { batch: 100, events: 30_000, inFlight: 8 },
  // 300,000 events: ~6 s on a quiet box, long enough that start and drain are a few per cent.
  { batch: 1_000, events: 300_000, inFlight: 4 },
]
  .filter((s) => !process.env.INGEST_BENCH_BATCHES || process.env.INGEST_BENCH_BATCHES.split(",").includes(String(s.batch)))
  // INGEST_BENCH_IN_FLIGHT=16 overrides the in-flight batches of every scenario.
  .map((s) => (process.env.INGEST_BENCH_IN_FLIGHT ? { ...s, inFlight: Number(process.env.INGEST_BENCH_IN_FLIGHT) } : s))
  // INGEST_BENCH_EVENTS_SCALE=4 sends 4x the events of every scenario (longer, steadier runs; profiles).
  .map((s) => ({ ...s, events: s.events * Number(process.env.INGEST_BENCH_EVENTS_SCALE ?? 1) }));

async function startMetering(): Promise<{ url: string; child: ChildProcess }> {
  // INGEST_BENCH_CPU_PROF=<dir>: the server writes a V8 CPU profile there on exit.
  const prof = process.env.INGEST_BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.INGEST_BENCH_CPU_PROF}`] : [];
  // INGEST_BENCH_SERVER_NODE_ARGS="--max-semi-space-size=32": extra node flags for the server (A/B runs).
  const nodeArgs = (process.env.INGEST_BENCH_SERVER_NODE_ARGS ?? "").split(" ").filter((a) => a !== "");
  const child = spawn(process.execPath, [...prof, ...nodeArgs, "--import", "tsx", "apps/metering/src/main.ts"], {
    env: {
      ...process.env,
      DATABASE_URL,
      METERING_DB_SCHEMA: SCHEMA,
      METERING_PORT: "0",
      METERING_HOST: "127.0.0.1",
      NANOBILL_API_KEYS: `tnt_bench:admin:${KEY}`,
      METERING_OTLP_PORT: "-1",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! });
  const url = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("metering did not start in 60 s")), 60_000);
    lines.on("line", (l) => {
      try {
        const j = JSON.parse(l) as { msg?: string; url?: string };
        if (j.msg === "metering listening" && j.url) {
          clearTimeout(t);
          resolve(j.url);
        }
      } catch {
        // not a log line
      }
    });
    child.on("exit", (code) => reject(new Error(`metering exited with ${code}`)));
  });
  return { url, child };
}

/** CPU time (user + system, ms) of a process from /proc (Linux; 0 elsewhere): 10 ms resolution. */
function cpuMsOf(pid: number | undefined): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

let seq = 0;
function makeEvents(n: number, dupShare: number, pool: TrackEvent[]): TrackEvent[] {
  const out: TrackEvent[] = [];
  const ts = new Date();
  for (let i = 0; i < n; i++) {
    if (pool.length > 0 && (i * 0.618034) % 1 < dupShare) {
      out.push(pool[(i * 7919) % pool.length]!);
      continue;
    }
    seq++;
    const e: TrackEvent = {
      id: `evt_b_${seq}`,
      customerId: `cus_${seq % 500}`,
      type: "llm.call",
      timestamp: ts,
      properties: { model: seq % 3 === 0 ? "gpt-x" : "gpt-y", provider: "openai", input_tokens: 1000 + (seq % 977), output_tokens: 100 + (seq % 313) },
    };
    out.push(e);
    pool.push(e);
  }
  return out;
}

/**
 * CPU ms of each PostgreSQL backend of the metering server (application_name nanobill:<schema>),
 * by pid; a backend that appears between two readings counts from zero.
 */
async function pgCpuMs(monitor: Db): Promise<Map<number, number>> {
  const r = await monitor.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [`nanobill:${SCHEMA}`]);
  return new Map(r.rows.map((x) => [Number(x.pid), cpuMsOf(Number(x.pid))]));
}
function pgCpuDeltaMs(a: Map<number, number>, b: Map<number, number>): number {
  let ms = 0;
  for (const [pid, t] of b) ms += t - (a.get(pid) ?? 0);
  return ms;
}

async function runScenario(url: string, batch: number, inFlight: number, events: TrackEvent[], serverPid: number | undefined, monitor: Db) {
  const pg0 = await pgCpuMs(monitor);
  const server0 = cpuMsOf(serverPid);
  const client0 = process.cpuUsage();
  const c = createMeteringClient({ baseUrl: url, apiKey: KEY, protocol: PROTOCOL, batchSizeMax: batch, inFlightBatchesMax: inFlight, flushIntervalMs: 1, queueLengthMax: Math.max(batch * inFlight * 2, 10_000) });
  const t0 = performance.now();
  const results = [];
  for (const e of events) results.push((await c.track(e)).result);
  await c.flush();
  const outs = await Promise.all(results);
  const ms = performance.now() - t0;
  const serverCpuMs = cpuMsOf(serverPid) - server0;
  const pgMs = pgCpuDeltaMs(pg0, await pgCpuMs(monitor));
  const cu = process.cpuUsage(client0);
  const clientCpuMs = (cu.user + cu.system) / 1000;
  await c.close();
  const by = (s: string) => outs.filter((o) => o.status === s).length;
  return { ms, serverCpuMs, clientCpuMs, pgMs, accepted: by("accepted"), duplicate: by("duplicate"), other: outs.length - by("accepted") - by("duplicate") };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

let metering: ChildProcess | undefined;

async function main(): Promise<void> {
  const { url, child } = await startMetering();
  metering = child;
  const admin = createClient(MeteringService, createClientTransport({ baseUrl: url, apiKey: KEY }));
  await admin.createMeter({ meter: { id: "input_tokens", eventType: "llm.call", aggregation: Aggregation.SUM, valueProperty: "input_tokens", groupBy: ["model"] } });
  console.log(`metering at ${url} (SDK over ${PROTOCOL}), schema ${SCHEMA}; one meter (sum of input_tokens by model) kept in minute/hour/day buckets`);
  const monitor = await openDb({ url: DATABASE_URL, schema: "public", poolMax: 1 });
  console.log("scenario                       events    accepted  duplicate  other   seconds   events/s  server µs/ev  client µs/ev  PostgreSQL µs/ev (CPU)");
  const pool: TrackEvent[] = [];
  const rates: Record<string, number> = {};
  // Warm-up, not in the table: a server that has run a while has its code optimized by the JIT
  // (the first 100,000 events of a fresh process ran ~25% slower, 2026-11-30). Printed, so a cold
  // server's rate stays visible.
  {
    const warm = makeEvents(WARM_UP_EVENTS, 0, []);
    const r = await runScenario(url, 1_000, 4, warm, child.pid, monitor);
    console.log(`(warm-up, not counted: ${warm.length} events in 1,000-event batches x 4 in flight at ${Math.round(warm.length / (r.ms / 1000))} events/s)`);
  }
  for (const s of SCENARIOS) {
    for (const dup of [0, 0.3]) {
      if (Date.now() - started > RUN_MS_MAX) break;
      const events = makeEvents(s.events, dup, pool);
      const r = await runScenario(url, s.batch, s.inFlight, events, child.pid, monitor);
      const rate = events.length / (r.ms / 1000);
      rates[`${s.batch}/${dup}`] = rate;
      console.log(
        `batch ${String(s.batch).padStart(5)} dup ${String(dup * 100).padStart(2)}% (x${String(s.inFlight).padStart(2)} in flight) ${String(events.length).padStart(8)} ${String(r.accepted).padStart(10)} ${String(r.duplicate).padStart(10)} ${String(r.other).padStart(6)} ${(r.ms / 1000).toFixed(2).padStart(9)} ${Math.round(rate).toString().padStart(10)} ${((r.serverCpuMs * 1000) / events.length).toFixed(1).padStart(13)} ${((r.clientCpuMs * 1000) / events.length).toFixed(1).padStart(13)} ${((r.pgMs * 1000) / events.length).toFixed(1).padStart(17)}`,
      );
    }
  }

  // Latency of a 100-event batch, one caller, unloaded server.
  const lat: number[] = [];
  for (let b = 0; b < 200 && (b < 30 || Date.now() - started < RUN_MS_MAX); b++) {
    const events = makeEvents(100, 0, []).map((e) => ({
      id: e.id!,
      customerId: e.customerId,
      type: e.type,
      timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
      properties: { input_tokens: { kind: { case: "intValue" as const, value: 5n } } },
    }));
    const t0 = performance.now();
    await admin.ingestEvents({ events });
    lat.push(performance.now() - t0);
  }
  lat.sort((a, b) => a - b);
  console.log(`100-event batch latency (1 caller, ${lat.length} batches): p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms`);

  // Raw bulk insert of the same rows (same columns, same indexes) in the same run.
  const db = await openDb({ url: DATABASE_URL, schema: SCHEMA, poolMax: 2 });
  await db.query("CREATE TABLE events_raw (LIKE events INCLUDING ALL)");
  const nowUs = BigInt(Date.now()) * 1000n;
  const rows: unknown[][] = [];
  for (let i = 0; i < 120_000; i++) {
    seq++;
    const v = validateEvent(
      { id: `evt_r_${seq}`, customerId: `cus_${seq % 500}`, type: "llm.call", timestamp: nowUs, properties: { model: { kind: "string", value: "gpt-x" }, provider: { kind: "string", value: "openai" }, input_tokens: { kind: "int", value: BigInt(1000 + (seq % 977)) }, output_tokens: { kind: "int", value: BigInt(100 + (seq % 313)) } } },
      { nowUs, lateEventAgeUs: 86_400_000_000n },
    );
    if (!v.ok) throw new Error(v.rejection.message);
    const e = v.event;
    rows.push(["tnt_bench", e.id, e.customerId, e.type, e.timestampUs, e.propertiesJson, e.traceparent, e.tracestate, e.contentHash, nowUs]);
  }
  const cols = ["tenant", "event_id", "customer_id", "type", "timestamp_us", "properties", "traceparent", "tracestate", "content_hash", "received_us"];
  const t0 = performance.now();
  for (let i = 0; i < rows.length; i += 10_000) await db.copyRows("events_raw", cols, rows.slice(i, i + 10_000));
  const rawMs = performance.now() - t0;
  const raw = rows.length / (rawMs / 1000);
  console.log(`raw COPY of the same rows into a copy of the events table: ${rows.length} rows in ${(rawMs / 1000).toFixed(2)} s = ${Math.round(raw)} rows/s`);

  // The store alone (validation + group-commit transaction incl. buckets, no RPC), same rows shape,
  // same tenant (so the meter's buckets are written), 1,000-event transactions.
  const store = createMeteringStore(db);
  const items = rows.slice(0, 60_000).map((r) => {
    seq++;
    const v = validateEvent(
      { id: `evt_s_${seq}`, customerId: r[2] as string, type: "llm.call", timestamp: nowUs, properties: { model: { kind: "string", value: seq % 3 ? "gpt-x" : "gpt-y" }, input_tokens: { kind: "int", value: 1000n } } },
      { nowUs, lateEventAgeUs: 86_400_000_000n },
    );
    if (!v.ok) throw new Error(v.rejection.message);
    return { tenant: "tnt_bench", event: v.event };
  });
  await aggregateAll(store, AGGREGATE_CHUNK_EVENTS); // the scenarios' events, not timed
  const cpuUs = () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  };
  const ts0 = performance.now();
  const tc0 = cpuUs();
  for (let i = 0; i < items.length; i += 1000) await store.ingest(items.slice(i, i + 1000), nowUs);
  const ingestMs = performance.now() - ts0;
  const ingestCpuUs = cpuUs() - tc0;
  const ta0 = performance.now();
  const tac0 = cpuUs();
  await aggregateAll(store, AGGREGATE_CHUNK_EVENTS);
  const aggMs = performance.now() - ta0;
  const aggCpuUs = cpuUs() - tac0;
  const storeRate = items.length / (ingestMs / 1000);
  console.log(
    `store alone (no RPC): store.ingest ${Math.round(storeRate)} events/s (1,000-event transactions) = ${(storeRate / raw).toFixed(2)} of raw COPY; ` +
      `usage aggregation ${Math.round(items.length / (aggMs / 1000))} events/s (${AGGREGATE_CHUNK_EVENTS}-event steps); both one after the other ${Math.round(items.length / ((ingestMs + aggMs) / 1000))} events/s; ` +
      `JavaScript CPU per event: store.ingest ${(ingestCpuUs / items.length).toFixed(1)} µs, aggregation ${(aggCpuUs / items.length).toFixed(1)} µs`,
  );

  // Protobuf-es (reflective) cost per event of an IngestEvents request, in this process.
  const req = create(IngestEventsRequestSchema, {
    events: Array.from({ length: 10_000 }, (_, i) =>
      create(EventSchema, { id: `evt_${i}`, customerId: `cus_${i % 500}`, type: "llm.call", timestamp: { seconds: 1_764_000_000n, nanos: 0 }, properties: { model: { kind: { case: "stringValue", value: "gpt-x" } }, input_tokens: { kind: { case: "intValue", value: 1000n } }, output_tokens: { kind: { case: "intValue", value: 100n } } } }),
    ),
  });
  const te = performance.now();
  const bin = toBinary(IngestEventsRequestSchema, req);
  const encUs = ((performance.now() - te) * 1000) / 10_000;
  const td = performance.now();
  fromBinary(IngestEventsRequestSchema, bin);
  const decUs = ((performance.now() - td) * 1000) / 10_000;
  console.log(`protobuf-es per event: encode ${encUs.toFixed(1)} µs, decode ${decUs.toFixed(1)} µs (10,000-event request, ${bin.length} bytes)`);

  const ours = rates["1000/0"];
  if (ours) console.log(`ours (1,000-event batches, 0% duplicates) / raw COPY = ${(ours / raw).toFixed(2)}`);

  await db.query(`DROP SCHEMA "${SCHEMA}" CASCADE`);
  await db.close();
  await monitor.close();
  closeClientSessions();
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
}

main().catch(async (e) => {
  console.error(e);
  metering?.kill("SIGTERM");
  const db = await openDb({ url: DATABASE_URL, schema: SCHEMA, poolMax: 1 }).catch(() => undefined);
  await db?.query(`DROP SCHEMA "${SCHEMA}" CASCADE`).catch(() => {});
  await db?.close();
  process.exit(1);
});
