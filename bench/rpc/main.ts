// RPC layer benchmark: an echo RPC through the full service-kit stack (auth, tenant limits, error
// boundary, tracing interceptors with every call sampled into a discarding exporter) over the
// Connect protocol on the kit's FAST path (lean client + fast-path server) and on connect-es's
// generic path (connect-node client + connectNodeAdapter), and the same two over gRPC, at 1 and 64 concurrent
// callers, beside a raw node:http2 echo with the same payload, all in the same run. Client and
// server share this process (as the five services do under `npm start`).
//
//   npx tsx bench/rpc/main.ts            # ~40 s
//   BENCH_SECONDS=2 npx tsx bench/rpc/main.ts
//   BENCH_ROUNDS=5 BENCH_SECONDS=2 npx tsx bench/rpc/main.ts   # interleaved raw/FAST/generic rounds, medians
import * as http2 from "node:http2";
import * as os from "node:os";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";
import { EchoRequestSchema, EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { initTelemetry } from "@nanobill/telemetry";
import {
  closeClientSessions,
  createApiKeyAuthenticator,
  createClientTransport,
  parseApiKeysEnv,
  silentLogger,
  startServer,
} from "@nanobill/service-kit";

const SECONDS = Number(process.env["BENCH_SECONDS"] ?? "4");
const WARMUP_MS = 700;
const PAYLOAD_BYTES = 128;
const API_KEY = "sk_bench_0123456789abcdef0123456789";

/** Counts spans and drops them (tracing on, export cost excluded). */
class DiscardExporter implements SpanExporter {
  spans = 0;
  export(spans: ReadableSpan[], done: (r: { code: ExportResultCode }) => void): void {
    this.spans += spans.length;
    done({ code: ExportResultCode.SUCCESS });
  }
  async shutdown(): Promise<void> {}
}

interface Result {
  name: string;
  callers: number;
  calls: number;
  seconds: number;
  /** CPU time (user+system) of this process per call: client + server + transport. */
  cpuUsPerCall: number;
  p50Us: number;
  p99Us: number;
}

async function measure(name: string, callers: number, call: () => Promise<unknown>): Promise<Result> {
  const run = async (ms: number, lat: number[] | undefined): Promise<number> => {
    const end = performance.now() + ms;
    let calls = 0;
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (performance.now() < end) {
          const t0 = performance.now();
          await call();
          lat?.push((performance.now() - t0) * 1000);
          calls++;
        }
      }),
    );
    return calls;
  };
  await run(WARMUP_MS, undefined);
  const lat: number[] = [];
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const calls = await run(SECONDS * 1000, lat);
  const cpu = process.cpuUsage(c0);
  const seconds = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  return { name, callers, calls, seconds, cpuUsPerCall: (cpu.user + cpu.system) / calls, p50Us: q(0.5), p99Us: q(0.99) };
}

async function startRawServer(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/octet-stream" });
      stream.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s));
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}

function rawClient(url: string, body: Uint8Array): { call(): Promise<Buffer>; close(): void } {
  const session = http2.connect(url);
  return {
    call: () =>
      new Promise<Buffer>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/echo", "content-type": "application/octet-stream" });
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => resolve(Buffer.concat(chunks)));
        req.on("error", reject);
        req.end(body);
      }),
    close: () => session.close(),
  };
}

function fmt(r: Result, raw: Result | undefined): string {
  const rate = r.calls / r.seconds;
  const cpuRate = 1e6 / r.cpuUsPerCall;
  return [
    r.name.padEnd(46),
    String(r.callers).padStart(7),
    rate.toFixed(0).padStart(9),
    r.p50Us.toFixed(0).padStart(8),
    r.p99Us.toFixed(0).padStart(8),
    (raw ? (rate / (raw.calls / raw.seconds)).toFixed(2) : "").padStart(8),
    r.cpuUsPerCall.toFixed(0).padStart(10),
    cpuRate.toFixed(0).padStart(11),
    (raw ? (raw.cpuUsPerCall / r.cpuUsPerCall).toFixed(2) : "").padStart(8),
  ].join(" ");
}

async function main(): Promise<void> {
  const exporter = new DiscardExporter();
  // Batch processor, as in production (initTelemetry uses one for OTLP).
  let telemetry = initTelemetry({ serviceName: "bench", exporter, exporterBatch: true });
  const start = (fastPath: boolean) =>
    startServer({
      name: "echo",
      host: "127.0.0.1",
      port: 0,
      fastPath,
      routes: (router) =>
        router.service(EchoService, {
          echo: (req) => ({ text: req.text, payload: req.payload }),
        }),
      authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_bench:admin:${API_KEY}`)),
      logger: silentLogger,
      // The per-tenant limiter runs (its cost is measured) but must not throttle the benchmark.
      tenantLimits: { requestsPerSecond: 10_000_000, requestsBurst: 10_000_000, inflightMax: 1_000 },
    });
  const fastServer = await start(true);
  const genericServer = await start(false);
  const raw = await startRawServer();
  const payload = new Uint8Array(PAYLOAD_BYTES).fill(7);
  const request = create(EchoRequestSchema, { text: "hello", payload });
  const rawBody = toBinary(EchoRequestSchema, request);

  const client = (url: string, protocol: "grpc" | "connect", lean = true) =>
    createClient(EchoService, createClientTransport({ baseUrl: url, apiKey: API_KEY, protocol, lean }));
  /** gRPC, generic path on both ends: connect-node's gRPC client -> connectNodeAdapter only. */
  const grpc = client(genericServer.url, "grpc", false);
  /** gRPC, fast path on both ends: the kit's lean gRPC client -> fast-path server. */
  const grpcFast = client(fastServer.url, "grpc");
  /** Fast path on both ends: lean client -> fast-path server. */
  const fast = client(fastServer.url, "connect");
  /** Generic path on both ends: connect-node client -> connectNodeAdapter only. */
  const generic = client(genericServer.url, "connect", false);
  const fastServerOnly = client(fastServer.url, "connect", false);
  const leanClientOnly = client(genericServer.url, "connect");
  const rc = rawClient(raw.url, rawBody);

  const only = process.env["BENCH_ONLY"]; // e.g. "fast" for a profile run (node --cpu-prof)
  const rounds = Number(process.env["BENCH_ROUNDS"] ?? "0");
  if (rounds > 0) {
    // Interleaved rounds (raw, FAST, generic, raw, FAST, ...) at 64 callers; medians of the
    // per-round ratios, so that load swings on a shared machine hit all three alike.
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    for (const mode of ["tracing 100%", "telemetry off"]) {
      if (mode === "telemetry off") await telemetry.shutdown();
      const wall = { fast: [] as number[], generic: [] as number[] };
      const cpu = { fast: [] as number[], generic: [] as number[] };
      const us = { raw: [] as number[], fast: [] as number[], generic: [] as number[] };
      for (let i = 0; i < rounds; i++) {
        const r = await measure("raw", 64, () => rc.call());
        const f = await measure("fast", 64, () => fast.echo(request));
        const g = await measure("generic", 64, () => generic.echo(request));
        const rate = (x: Result): number => x.calls / x.seconds;
        wall.fast.push(rate(f) / rate(r));
        wall.generic.push(rate(g) / rate(r));
        cpu.fast.push(r.cpuUsPerCall / f.cpuUsPerCall);
        cpu.generic.push(r.cpuUsPerCall / g.cpuUsPerCall);
        us.raw.push(r.cpuUsPerCall);
        us.fast.push(f.cpuUsPerCall);
        us.generic.push(g.cpuUsPerCall);
        console.log(`${mode} round ${i + 1}: raw ${rate(r).toFixed(0)}/s ${r.cpuUsPerCall.toFixed(0)}us, FAST ${rate(f).toFixed(0)}/s ${f.cpuUsPerCall.toFixed(0)}us, generic ${rate(g).toFixed(0)}/s ${g.cpuUsPerCall.toFixed(0)}us`);
      }
      console.log(
        `${mode}, 64 callers, median of ${rounds} interleaved rounds (load ${os.loadavg()[0]!.toFixed(1)}): ` +
          `CPU us/call raw ${median(us.raw).toFixed(0)}, FAST ${median(us.fast).toFixed(0)}, generic ${median(us.generic).toFixed(0)}; ` +
          `FAST/raw wall ${median(wall.fast).toFixed(2)} cpu ${median(cpu.fast).toFixed(2)}; generic/raw wall ${median(wall.generic).toFixed(2)} cpu ${median(cpu.generic).toFixed(2)}`,
      );
    }
  } else if (only) {
    const c = only === "raw" ? () => rc.call() : only === "grpc" ? () => grpc.echo(request) : only === "grpc-fast" ? () => grpcFast.echo(request) : only === "generic" ? () => generic.echo(request) : () => fast.echo(request);
    const r = await measure(only, 64, c);
    console.log(fmt(r, undefined));
  } else {
    const rows: Result[] = [];
    const raws = new Map<number, Result>();
    const byName = new Map<string, Result>();
    const row = async (name: string, callers: number, call: () => Promise<unknown>): Promise<void> => {
      const r = await measure(name, callers, call);
      rows.push(r);
      byName.set(`${name}/${callers}`, r);
    };
    for (const callers of [1, 64]) {
      const r = await measure("raw node:http2 echo", callers, () => rc.call());
      raws.set(callers, r);
      rows.push(r);
      await row("kit Connect FAST (tracing 100%)", callers, () => fast.echo(request));
      await row("kit Connect generic (tracing 100%)", callers, () => generic.echo(request));
      await row("kit gRPC FAST (tracing 100%)", callers, () => grpcFast.echo(request));
      await row("kit gRPC generic (tracing 100%)", callers, () => grpc.echo(request));
    }
    await telemetry.forceFlush();
    const spans = exporter.spans;
    await telemetry.shutdown(); // interceptors stay installed, no provider: pass-through
    for (const callers of [1, 64]) {
      await row("kit Connect FAST (telemetry off)", callers, () => fast.echo(request));
      await row("kit Connect generic (telemetry off)", callers, () => generic.echo(request));
    }
    await row("fast server + connect-node client (off)", 64, () => fastServerOnly.echo(request));
    await row("generic server + lean client (off)", 64, () => leanClientOnly.echo(request));
    telemetry = initTelemetry({ serviceName: "bench", exporter, exporterBatch: true, sampleRatio: 0 });
    await row("kit Connect FAST (tracing 0% sampled)", 64, () => fast.echo(request));
    await row("kit Connect generic (tracing 0% sampled)", 64, () => generic.echo(request));
    rows.push(await measure("raw node:http2 echo (again)", 64, () => rc.call()));

    console.log(`\nRPC echo, ${PAYLOAD_BYTES}-byte payload, ${SECONDS}s per row, node ${process.version}, client+server in one process, load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores`);
    console.log("wall = calls/s measured; cpu = calls per CPU-second of this process (robust when the machine is shared)");
    console.log(
      ["case".padEnd(46), "callers".padStart(7), "calls/s".padStart(9), "p50 us".padStart(8), "p99 us".padStart(8), "wall/raw".padStart(8), "cpu us/call".padStart(10), "calls/cpu-s".padStart(11), "cpu/raw".padStart(8)].join(" "),
    );
    for (const r of rows) console.log(fmt(r, raws.get(r.callers)));
    console.log(`(${spans} spans exported while tracing was on)`);
    const ratio = (a: string, b: string): string => {
      const x = byName.get(a);
      const y = byName.get(b);
      if (!x || !y) return "n/a";
      return `wall ${(x.calls / x.seconds / (y.calls / y.seconds)).toFixed(2)}, cpu ${(y.cpuUsPerCall / x.cpuUsPerCall).toFixed(2)}`;
    };
    const raw64 = raws.get(64)!;
    const vsRaw = (a: string): string => {
      const x = byName.get(a)!;
      return `wall ${(x.calls / x.seconds / (raw64.calls / raw64.seconds)).toFixed(2)}, cpu ${(raw64.cpuUsPerCall / x.cpuUsPerCall).toFixed(2)}`;
    };
    console.log("\nsummary at 64 callers (ratios of calls/s and of calls per CPU-second, same run):");
    for (const mode of ["telemetry off", "tracing 0% sampled", "tracing 100%"]) {
      console.log(`  ${mode.padEnd(20)} FAST/raw ${vsRaw(`kit Connect FAST (${mode})/64`)}; generic/raw ${vsRaw(`kit Connect generic (${mode})/64`)}; FAST/generic ${ratio(`kit Connect FAST (${mode})/64`, `kit Connect generic (${mode})/64`)}`);
    }
  }
  await telemetry.shutdown();

  rc.close();
  closeClientSessions();
  await fastServer.close();
  await genericServer.close();
  await raw.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
