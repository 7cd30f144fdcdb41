// RPC layer benchmark: an echo RPC through the full service-kit stack (auth, error boundary,
// tracing interceptors with every call sampled into a discarding exporter) over the gRPC and
// Connect protocols, at 1 and 64 concurrent callers, beside a raw node:http2 echo with the same
// payload. Client and server share this process (as the five services do under `npm start`).
//
//   npx tsx bench/rpc/main.ts            # ~40 s
//   BENCH_SECONDS=2 npx tsx bench/rpc/main.ts
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
  const server = await startServer({
    name: "echo",
    host: "127.0.0.1",
    port: 0,
    routes: (router) =>
      router.service(EchoService, {
        echo: (req) => ({ text: req.text, payload: req.payload }),
      }),
    authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_bench:admin:${API_KEY}`)),
    logger: silentLogger,
  });
  const raw = await startRawServer();
  const payload = new Uint8Array(PAYLOAD_BYTES).fill(7);
  const request = create(EchoRequestSchema, { text: "hello", payload });
  const rawBody = toBinary(EchoRequestSchema, request);

  const grpc = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: API_KEY, protocol: "grpc" }));
  const connect = createClient(EchoService, createClientTransport({ baseUrl: server.url, apiKey: API_KEY, protocol: "connect" }));
  const rc = rawClient(raw.url, rawBody);

  const only = process.env["BENCH_ONLY"]; // e.g. "connect" for a profile run (node --cpu-prof)
  if (only) {
    const c = only === "raw" ? () => rc.call() : only === "grpc" ? () => grpc.echo(request) : () => connect.echo(request);
    const r = await measure(only, 64, c);
    console.log(fmt(r, undefined));
  } else {
    const rows: Result[] = [];
    const raws = new Map<number, Result>();
    for (const callers of [1, 64]) {
      const r = await measure("raw node:http2 echo", callers, () => rc.call());
      raws.set(callers, r);
      rows.push(r);
      rows.push(await measure("service-kit gRPC (auth, tracing 100%)", callers, () => grpc.echo(request)));
      rows.push(await measure("service-kit Connect (auth, tracing 100%)", callers, () => connect.echo(request)));
    }
    await telemetry.forceFlush();
    const spans = exporter.spans;
    await telemetry.shutdown(); // interceptors stay installed, no provider: pass-through
    for (const callers of [1, 64]) {
      rows.push(await measure("service-kit Connect (auth, telemetry off)", callers, () => connect.echo(request)));
    }
    rows.push(await measure("service-kit gRPC (auth, telemetry off)", 64, () => grpc.echo(request)));
    telemetry = initTelemetry({ serviceName: "bench", exporter, exporterBatch: true, sampleRatio: 0 });
    rows.push(await measure("service-kit Connect (auth, tracing 0% sampled)", 64, () => connect.echo(request)));
    rows.push(await measure("raw node:http2 echo (again)", 64, () => rc.call()));

    console.log(`\nRPC echo, ${PAYLOAD_BYTES}-byte payload, ${SECONDS}s per row, node ${process.version}, client+server in one process, load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores`);
    console.log("wall = calls/s measured; cpu = calls per CPU-second of this process (robust when the machine is shared)");
    console.log(
      ["case".padEnd(46), "callers".padStart(7), "calls/s".padStart(9), "p50 us".padStart(8), "p99 us".padStart(8), "wall/raw".padStart(8), "cpu us/call".padStart(10), "calls/cpu-s".padStart(11), "cpu/raw".padStart(8)].join(" "),
    );
    for (const r of rows) console.log(fmt(r, raws.get(r.callers)));
    console.log(`(${spans} spans exported while tracing was on)`);
  }
  await telemetry.shutdown();

  rc.close();
  closeClientSessions();
  await server.close();
  await raw.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
