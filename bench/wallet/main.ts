// Credit-wallet benchmark (prints figures; not a pass/fail test). Starts bench/wallet/server.ts
// (ledger + wallet on real PostgreSQL and Redis) in a child process and drives it over gRPC:
//   - Authorize p50/p99 and throughput at 1, 16 and 64 concurrent clients on one hot wallet and on
//     BENCH_WALLETS (default 10,000) wallets;
//   - in the same run: a bare Redis EVALSHA round trip from Node (p99) and the service-kit echo RPC
//     (throughput, p99), printed as ratios;
//   - AuthorizeBatch (the batched path for gateways): authorizations/s;
//   - AuthorizeStream (bidi, BENCH_STREAMS streams, each keeping BENCH_STREAM_WINDOW messages in
//     flight) against unary Authorize at 64 clients in the same run: holds/s and the ratio.
// Env: DATABASE_URL (required), REDIS_URL, BENCH_SECONDS (per scenario, default 3),
// BENCH_WALLETS (default 10000), BENCH_SETUP_SECONDS (budget to create the wallets, default 120),
// BENCH_ONLY=stream (only echo, unary Authorize at 64 clients and AuthorizeStream: the quick
// comparison), BENCH_STREAMS (default 4), BENCH_STREAM_WINDOW (default 256), BENCH_GROUPS_IN_FLIGHT
// (Authorize group commits in flight per tenant in the server; default the service's).
// Each scenario (but the bare EVALSHA) also prints the server process's CPU time per call, its
// event-loop busy share and the Authorize items per group commit (probed before and after it):
// on a shared box these move less than the throughput does.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { EchoRequestSchema, EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { CreditWalletService, GrantKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { closeClientSessions, createClientTransport } from "@nanobill/service-kit";
import { PING_LUA } from "../../apps/credit-wallet/src/realtime/lua.js";

const DATABASE_URL = process.env["DATABASE_URL"];
if (!DATABASE_URL) throw new Error("DATABASE_URL is required (real PostgreSQL)");
const REDIS_URL = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379";
const SECONDS = Number(process.env["BENCH_SECONDS"] ?? "3");
const WALLETS = Number(process.env["BENCH_WALLETS"] ?? "10000");
const SETUP_SECONDS = Number(process.env["BENCH_SETUP_SECONDS"] ?? "120");
const ONLY_STREAM = process.env["BENCH_ONLY"] === "stream";
const CONCURRENCY = ONLY_STREAM ? [64] : [1, 16, 64];
const STREAMS = Number(process.env["BENCH_STREAMS"] ?? "4");
const STREAM_WINDOW = Number(process.env["BENCH_STREAM_WINDOW"] ?? "256");
const KEY = "sk_bench_wallet_" + randomUUID().replaceAll("-", "");
const SCHEMA = "bench_wallet_" + randomUUID().replaceAll("-", "").slice(0, 8);
const PREFIX = `nbbench:${SCHEMA}:`;

interface Figures {
  ops: number;
  seconds: number;
  p50: number;
  p99: number;
  failures: number;
  /** Server process CPU µs per op, event-loop busy share, authorize items per group commit (when probed). */
  server?: { cpuUsPerOp: number; busy: number; itemsPerGroup: number };
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Runs `call` from `clients` concurrent loops for SECONDS; latency per call in ms. */
async function load(clients: number, call: (worker: number, i: number) => Promise<boolean>, seconds = SECONDS): Promise<Figures> {
  const lat: number[] = [];
  let failures = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  let n = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      while (performance.now() < end) {
        const i = n++;
        const s = performance.now();
        const ok = await call(w, i).catch(() => false);
        lat.push(performance.now() - s);
        if (!ok) failures++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { ops: lat.length, seconds: secs, p50: pct(lat, 50), p99: pct(lat, 99), failures };
}

const fmt = (f: Figures) =>
  `${(f.ops / f.seconds).toFixed(0).padStart(7)} /s   p50 ${f.p50.toFixed(2).padStart(6)} ms   p99 ${f.p99.toFixed(2).padStart(7)} ms` +
  (f.server ? `   server ${f.server.cpuUsPerOp.toFixed(0).padStart(4)} µs cpu/op, busy ${(100 * f.server.busy).toFixed(0).padStart(3)}%${f.server.itemsPerGroup ? `, ${f.server.itemsPerGroup.toFixed(1)} items/group` : ""}` : "") +
  (f.failures ? `   failures ${f.failures}` : "");

async function main() {
  // BENCH_SERVER_NODE_ARGS: extra node flags for the server process (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
  const serverArgs = (process.env["BENCH_SERVER_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
  const child = spawn(process.execPath, [...serverArgs, "--import", "tsx", new URL("./server.ts", import.meta.url).pathname], {
    env: { ...process.env, BENCH_SCHEMA: SCHEMA, BENCH_API_KEY: KEY, BENCH_REDIS_PREFIX: PREFIX },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! });
  const waiting: Array<(l: string) => void> = [];
  lines.on("line", (l) => waiting.shift()?.(l));
  const nextLine = () => new Promise<string>((resolve) => waiting.push(resolve));
  const line = await new Promise<string>((resolve, reject) => {
    void nextLine().then(resolve);
    child.once("exit", (c) => reject(new Error(`server exited ${c}`)));
  });
  const urls = JSON.parse(line) as { wallet: string; ledger: string };
  /** The server process's counters now (CPU µs, event-loop busy ms, group commits). */
  const serverProbe = async () => {
    const p = nextLine();
    child.kill("SIGUSR2");
    return JSON.parse(await p) as { cpu: { user: number; system: number }; elu: { idle: number; active: number }; stats: { authorizeGroups: number; authorizeItems: number } };
  };
  const transport = createClientTransport({ baseUrl: urls.wallet, apiKey: KEY, protocol: "grpc" });
  const wallet = createClient(CreditWalletService, transport);
  const echo = createClient(EchoService, transport);
  const redis = new Redis(REDIS_URL, { enableAutoPipelining: true });
  redis.defineCommand("nbPing", { numberOfKeys: 1, lua: PING_LUA });
  const ping = (redis as unknown as { nbPing(k: string, a: string): Promise<string> }).nbPing.bind(redis);

  console.log(`credit-wallet benchmark: ${SECONDS}s per scenario, gRPC h2c, PostgreSQL ${new URL(DATABASE_URL!).host}, Redis ${new URL(REDIS_URL).host}, cpus ${(await import("node:os")).cpus().length}, loadavg ${(await import("node:os")).loadavg().map((x) => x.toFixed(1)).join(" ")}`);

  // Fixtures: one hot wallet, then as many of WALLETS wallets as the setup budget allows.
  const hot = (await wallet.createWallet({ customerId: "cus_hot", unit: "USD" })).wallet!;
  await wallet.grant({ id: "grt_hot", walletId: hot.id, kind: GrantKind.PURCHASED, amountNanos: 10n ** 17n });
  const setupEnd = performance.now() + SETUP_SECONDS * 1000;
  const t0 = performance.now();
  let made = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (performance.now() < setupEnd) {
        const i = next++;
        if (i >= WALLETS) return;
        const w = (await wallet.createWallet({ customerId: `cus_${i}`, unit: "USD" })).wallet!;
        await wallet.grant({ id: `grt_${i}`, walletId: w.id, kind: GrantKind.PURCHASED, amountNanos: 10n ** 15n });
        made++;
      }
    }),
  );
  console.log(`setup: ${made} wallets created and funded in ${((performance.now() - t0) / 1000).toFixed(1)}s (CreateWallet + Grant over gRPC, 32 concurrent)`);
  const customers = made;

  const results: Record<string, Figures> = {};
  /** Runs a scenario between two server probes: adds the server's CPU per op and group sizes. */
  const probed = async (run: () => Promise<Figures>): Promise<Figures> => {
    const a = await serverProbe();
    const f = await run();
    const b = await serverProbe();
    const cpu = b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system;
    const active = b.elu.active - a.elu.active;
    const total = active + b.elu.idle - a.elu.idle;
    const groups = b.stats.authorizeGroups - a.stats.authorizeGroups;
    return { ...f, server: { cpuUsPerOp: f.ops ? cpu / f.ops : 0, busy: total ? active / total : 0, itemsPerGroup: groups ? (b.stats.authorizeItems - a.stats.authorizeItems) / groups : 0 } };
  };
  const echoReq = create(EchoRequestSchema, { text: "x", payload: new Uint8Array(64) });
  for (const c of CONCURRENCY) {
    results[`echo ${c}`] = await probed(() => load(c, async () => (await echo.echo(echoReq), true)));
    results[`evalsha ${c}`] = await load(c, async (_w, i) => (await ping(`${PREFIX}{ping}`, String(i))) === String(i));
    results[`authorize hot ${c}`] = await probed(() => load(c, async (w, i) => !!(await wallet.authorize({ id: `h_${c}_${w}_${i}`, customerId: "cus_hot", unit: "USD", amountNanos: 1n, ttlMs: 600_000n })).hold));
    results[`authorize many ${c}`] = await probed(() => load(c, async (w, i) => !!(await wallet.authorize({ id: `m_${c}_${w}_${i}`, customerId: `cus_${(i * 7919) % customers}`, unit: "USD", amountNanos: 1n, ttlMs: 600_000n })).hold));
  }
  // Batched path: AuthorizeBatch of 500 items, 4 and 16 concurrent callers (hot wallet and many wallets).
  const BATCH = 500;
  const batch = async (c: number, many: boolean) => {
    const f = await load(c, async (w, i) => {
      const r = await wallet.authorizeBatch(
        {
        items: Array.from({ length: BATCH }, (_, k) => ({ id: `b_${many ? "m" : "h"}_${c}_${w}_${i}_${k}`, customerId: many ? `cus_${(i * BATCH + k) % customers}` : "cus_hot", unit: "USD", amountNanos: 1n, ttlMs: 600_000n })),
        },
        { timeoutMs: 60_000 },
      );
      return r.results.every((x) => x.result === 1);
    });
    return { ...f, ops: f.ops * BATCH };
  };
  if (!ONLY_STREAM) {
    results["batch hot 4"] = await probed(() => batch(4, false));
    results["batch many 16"] = await probed(() => batch(16, true));
  }

  // Streaming path: STREAMS bidi streams, each keeping up to STREAM_WINDOW messages unanswered
  // (latency = message sent -> its answer received).
  const stream = async (many: boolean, tag: string): Promise<Figures> => {
    const lat: number[] = [];
    let failures = 0;
    const end = performance.now() + SECONDS * 1000;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: STREAMS }, async (_, s) => {
        let outstanding = 0;
        let wake: (() => void) | null = null;
        const sentAt: number[] = [];
        async function* requests() {
          for (let i = 0; ; i++) {
            while (outstanding >= STREAM_WINDOW && performance.now() < end) await new Promise<void>((r) => (wake = r));
            if (performance.now() >= end) return;
            outstanding++;
            sentAt.push(performance.now());
            yield { item: { id: `s_${tag}_${s}_${i}`, customerId: many ? `cus_${(i * 7919 + s) % customers}` : "cus_hot", unit: "USD", amountNanos: 1n, ttlMs: 600_000n } };
          }
        }
        try {
          for await (const r of wallet.authorizeStream(requests(), { timeoutMs: 60_000 })) {
            lat.push(performance.now() - sentAt.shift()!);
            if (r.result?.result !== 1) failures++;
            outstanding--;
            const w = wake as (() => void) | null;
            wake = null;
            w?.();
          }
        } catch (e) {
          failures++;
          console.error(`stream ${s} failed: ${String(e)}`);
        }
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    lat.sort((a, b) => a - b);
    return { ops: lat.length, seconds: secs, p50: pct(lat, 50), p99: pct(lat, 99), failures };
  };
  results[`stream hot ${STREAMS}x${STREAM_WINDOW}`] = await probed(() => stream(false, "h"));
  results[`stream many ${STREAMS}x${STREAM_WINDOW}`] = await probed(() => stream(true, "m"));

  console.log("\nscenario                       throughput       latency per call");
  for (const [k, f] of Object.entries(results)) console.log(`${k.padEnd(28)} ${fmt(f)}`);
  console.log("\nratios (same run):");
  for (const c of CONCURRENCY) {
    const ah = results[`authorize hot ${c}`]!;
    const am = results[`authorize many ${c}`]!;
    const e = results[`echo ${c}`]!;
    const r = results[`evalsha ${c}`]!;
    console.log(
      `  c=${String(c).padEnd(3)} authorize/echo throughput: hot ${((ah.ops / ah.seconds) / (e.ops / e.seconds)).toFixed(2)}, many ${((am.ops / am.seconds) / (e.ops / e.seconds)).toFixed(2)};` +
        `  authorize p99 / EVALSHA p99: hot ${(ah.p99 / r.p99).toFixed(1)}x, many ${(am.p99 / r.p99).toFixed(1)}x;  authorize p99 / echo p99: hot ${(ah.p99 / e.p99).toFixed(1)}x`,
    );
  }
  const rate = (f: Figures) => f.ops / f.seconds;
  const sh = results[`stream hot ${STREAMS}x${STREAM_WINDOW}`]!;
  const sm = results[`stream many ${STREAMS}x${STREAM_WINDOW}`]!;
  console.log(
    `  AuthorizeStream (${STREAMS} streams x ${STREAM_WINDOW} in flight) vs unary Authorize at 64 clients, holds/s: hot ${rate(sh).toFixed(0)} vs ${rate(results["authorize hot 64"]!).toFixed(0)} = ${(rate(sh) / rate(results["authorize hot 64"]!)).toFixed(2)}x,` +
      ` many ${rate(sm).toFixed(0)} vs ${rate(results["authorize many 64"]!).toFixed(0)} = ${(rate(sm) / rate(results["authorize many 64"]!)).toFixed(2)}x;  stream / echo at 64: hot ${(rate(sh) / rate(results["echo 64"]!)).toFixed(2)}x`,
  );
  await redis.quit();
  closeClientSessions();
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
  // Drop the bench schemas and keys.
  const { openDb } = await import("@nanobill/db");
  for (const s of [SCHEMA + "_wallet", SCHEMA + "_ledger"]) {
    const db = await openDb({ url: DATABASE_URL!, schema: s, poolMax: 1 });
    await db.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    await db.close();
  }
  const r2 = new Redis(REDIS_URL);
  let cursor = "0";
  do {
    const [nx, keys] = await r2.scan(cursor, "MATCH", `${PREFIX}*`, "COUNT", 1000);
    cursor = nx;
    if (keys.length) await r2.del(...keys);
  } while (cursor !== "0");
  await r2.quit();
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
