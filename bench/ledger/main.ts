// Ledger benchmark (prints figures; bounded time, ~1-2 minutes). Over gRPC against a real
// PostgreSQL, with the ledger server in its own process (bench/ledger/server.ts):
//   (a) transfers between random accounts among 10,000, (b) every transfer crediting one hot
//   account; batch sizes 1, 100, 8,190; 1 and 32 concurrent clients; transfers/s per cell;
//   p50/p99 latency of single-transfer calls at 32 clients; the service-kit echo RPC rate at 32
//   clients (the RPC layer's ceiling) with the CPU per call of the client, the server and its
//   PostgreSQL backends (from /proc) for echo and single transfers; and, in the same run, the raw PostgreSQL rate of COPYing
//   the same rows into a copy of the transfers table (same indexes), with our rate as a ratio.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/ledger/main.ts
//   BENCH_SECONDS=2 ... (seconds per cell, default 3; cells of 8,190-transfer batches use
//   BENCH_BATCH_SECONDS, default 15); BENCH_CELLS, BENCH_CPU_PROF (below)
//
// Throughput is the steady state of a closed loop: the window opens at the first answer (every
// client has sent; the first commit is done); the rate is the transfers answered after it divided
// by the time from it to the last answer inside the window (both ends fall on commit boundaries);
// the requests still in flight when the window closes are not counted. A commit of 32 x 8,190 transfers takes over a
// second, so those cells get a longer window. The batched cells' client encodes NewTransfers and
// reads results by hand (the same wire format as CreateTransfersRequest/Response, through the
// server's byte views) so that the load generator, which shares the 2 cores with the server and
// PostgreSQL, costs little; single-transfer calls use the generated client like the echo.
import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import {
  CreateTransferResult,
  CreateTransfersRequestViewSchema,
  CreateTransfersResponseViewSchema,
  LedgerService,
  type NewTransfer,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { create } from "@bufbuild/protobuf";
import { NewTransferSchema } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { openDb } from "@nanobill/db";
import { closeClientSessions, createClientTransport } from "@nanobill/service-kit";
import { TRANSFER_COLUMNS } from "../../apps/ledger/src/store/codec.js";

const DATABASE_URL = process.env["DATABASE_URL"];
const SECONDS = Number(process.env["BENCH_SECONDS"] ?? "3");
const BATCH_SECONDS = Number(process.env["BENCH_BATCH_SECONDS"] ?? "15");
const ACCOUNTS = 10_000;
// BENCH_CELLS=hot/8190/32,random/1/32 runs only those cells (profiling).
const CELLS = process.env["BENCH_CELLS"]?.split(",");
// BENCH_RATIO_ROUNDS: interleaved echo / single-transfer rounds for the ratios (default 5).
const RATIO_ROUNDS = Number(process.env["BENCH_RATIO_ROUNDS"] ?? "5");
const API_KEY = "sk_bench_ledger_0123456789abcdef";
const SCHEMA = `bench_ledger_${process.pid}`;
const HOT = "acct_hot";

if (!DATABASE_URL) {
  console.error("DATABASE_URL is required (a real PostgreSQL)");
  process.exit(2);
}

function startServer(): Promise<{ url: string; child: ChildProcess }> {
  // BENCH_CPU_PROF=<dir>: the server writes a V8 CPU profile there on exit.
  const prof = process.env["BENCH_CPU_PROF"] ? ["--cpu-prof", `--cpu-prof-dir=${process.env["BENCH_CPU_PROF"]}`] : [];
  const child = spawn(process.execPath, [...prof, "--import", "tsx", fileURLToPath(new URL("./server.ts", import.meta.url))], {
    env: { ...process.env, BENCH_SCHEMA: SCHEMA, BENCH_API_KEY: API_KEY, LEDGER_PORT: "0" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on("line", (line) => {
      try {
        const { url } = JSON.parse(line) as { url?: string };
        if (url) resolve({ url, child });
      } catch {
        /* a log line */
      }
    });
    child.on("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
  });
}

let seq = 0;
function transfer(debit: string, credit: string): NewTransfer {
  seq++;
  return create(NewTransferSchema, { id: `xfer_b${seq}`, debitAccountId: debit, creditAccountId: credit, amountNanos: 1_000n, unit: "USD", code: 20 });
}
const acct = (i: number) => `acct_${i}`;

// Hand-encoded NewTransfer {1 id, 2 debit_account_id, 3 credit_account_id, 4 amount_nanos 1000,
// 5 unit "USD", 8 code 20} (ASCII ids below 128 bytes: one-byte lengths).
const TRANSFER_TAIL = Uint8Array.from([0x20, 0xe8, 0x07, 0x2a, 0x03, 0x55, 0x53, 0x44, 0x40, 0x14]);
function encodedTransfer(debit: string, credit: string): Uint8Array {
  seq++;
  const id = `xfer_b${seq}`;
  const out = new Uint8Array(6 + id.length + debit.length + credit.length + TRANSFER_TAIL.length);
  let o = 0;
  for (const [tag, s] of [[0x0a, id], [0x12, debit], [0x1a, credit]] as const) {
    out[o++] = tag;
    out[o++] = s.length;
    for (let i = 0; i < s.length; i++) out[o++] = s.charCodeAt(i);
  }
  out.set(TRANSFER_TAIL, o);
  return out;
}
/** A CreateTransfersItemResult's result field (1, varint; absent = 0). */
const resultOf = (r: Uint8Array): number => (r[0] === 0x08 ? r[1]! : 0);
const rnd = (n: number) => Math.floor(Math.random() * n);

// CPU time of a process from /proc/<pid>/stat (utime + stime, in USER_HZ = 100 ticks/s), in µs;
// 0 when it is gone or /proc is not there.
async function procCpuUs(pid: number): Promise<number> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10_000;
  } catch {
    return 0;
  }
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const { url, child } = await startServer();
  const monitor = await openDb({ url: DATABASE_URL!, schema: SCHEMA, poolMax: 1 });
  const transport = createClientTransport({ baseUrl: url, apiKey: API_KEY, protocol: "grpc", timeoutMs: 60_000 });
  const ledger = createClient(LedgerService, transport);
  const echo = createClient(EchoService, transport);
  const out: string[] = [];
  const say = (s: string) => {
    out.push(s);
    console.log(s);
  };
  try {
    // Accounts: 10,000 plain accounts and one hot revenue account.
    for (let i = 0; i < ACCOUNTS; i += 5_000) {
      const accounts = Array.from({ length: Math.min(5_000, ACCOUNTS - i) }, (_, k) => ({ id: acct(i + k), unit: "USD", code: 2100 }));
      await ledger.createAccounts({ accounts });
    }
    await ledger.createAccounts({ accounts: [{ id: HOT, unit: "USD", code: 4000 }] });

    // CreateTransfers through the server's byte views (same wire format as the generated messages).
    const viewMethod = { ...LedgerService.method.createTransfers, input: CreateTransfersRequestViewSchema, output: CreateTransfersResponseViewSchema };
    const createEncoded = async (transfers: Uint8Array[]) =>
      (await transport.unary(viewMethod as never, undefined, undefined, undefined, { transfers } as never)).message as unknown as { results: Uint8Array[] };
    const cell = async (scenario: "random" | "hot", batch: number, clients: number, lat?: number[]) => {
      const make = () =>
        Array.from({ length: batch }, () => {
          const d = rnd(ACCOUNTS);
          if (scenario === "hot") return encodedTransfer(acct(d), HOT);
          let c = rnd(ACCOUNTS - 1);
          if (c >= d) c++;
          return encodedTransfer(acct(d), acct(c));
        });
      // One warm-up call, then the closed loop; the window opens at the first answer.
      await createEncoded(make());
      const windowMs = (batch >= 8_190 ? BATCH_SECONDS : SECONDS) * 1000;
      let opened = 0;
      let closes = Infinity;
      let last = 0;
      let done = 0;
      let failed = 0;
      await Promise.all(
        Array.from({ length: clients }, async () => {
          while (performance.now() < closes) {
            const transfers = make();
            const s = performance.now();
            const res = await createEncoded(transfers);
            const t = performance.now();
            if (opened === 0) {
              opened = t;
              closes = t + windowMs;
              continue;
            }
            if (t > closes) break;
            last = t;
            if (lat) lat.push(t - s);
            for (const r of res.results) if (resultOf(r) === CreateTransferResult.OK) done++;
            else failed++;
          }
        }),
      );
      // From the first answer to the last one inside the window: whole commits on both ends.
      return { rate: done / ((last - opened) / 1000), failed };
    };

    say(`ledger benchmark — gRPC (h2c), real PostgreSQL, server in its own process, ${SECONDS}s per cell`);
    say(`scenario            batch  clients   transfers/s`);
    const rates = new Map<string, number>();
    let singleLat: number[] = [];
    for (const scenario of ["random", "hot"] as const) {
      for (const batch of [1, 100, 8_190]) {
        for (const clients of [1, 32]) {
          if (CELLS && !CELLS.includes(`${scenario}/${batch}/${clients}`)) continue;
          const lat: number[] | undefined = batch === 1 && clients === 32 && scenario === "random" ? [] : undefined;
          const label = `${(scenario === "random" ? "(a) 10k random" : "(b) hot account").padEnd(18)} ${String(batch).padStart(6)} ${String(clients).padStart(8)}`;
          try {
            const { rate, failed } = await cell(scenario, batch, clients, lat);
            if (lat) singleLat = lat;
            rates.set(`${scenario}/${batch}/${clients}`, rate);
            say(`${label} ${rate.toFixed(0).padStart(13)}${failed ? `  (${failed} not ok)` : ""}`);
          } catch (e) {
            rates.set(`${scenario}/${batch}/${clients}`, NaN);
            say(`${label}   failed: ${(e as Error).message}`);
          }
        }
      }
    }
    singleLat.sort((a, b) => a - b);
    if (singleLat.length > 0) {
      say(`single-transfer calls at 32 clients: p50 ${pct(singleLat, 50).toFixed(2)} ms, p99 ${pct(singleLat, 99).toFixed(2)} ms`);
    }

    // The RPC layer's ceiling: echo through the same server stack at 1 and 32 clients. On a shared
    // machine the load moves between cells, so the single-transfer / echo ratios come from
    // interleaved rounds (echo, hot, random, echo, ...; 1 s each) and are quoted as medians.
    const callsPerSecond = async (clients: number, ms: number, call: () => Promise<unknown>): Promise<number> => {
      let n = 0;
      const t0 = performance.now();
      const end = t0 + ms;
      await Promise.all(
        Array.from({ length: clients }, async () => {
          while (performance.now() < end) {
            await call();
            n++;
          }
        }),
      );
      return n / ((performance.now() - t0) / 1000);
    };
    const echoCall = () => echo.echo({ text: "x", payload: new Uint8Array(128) });
    const single = (scenario: "hot" | "random") => async () => {
      const d = rnd(ACCOUNTS);
      let c = rnd(ACCOUNTS - 1);
      if (c >= d) c++;
      const res = await ledger.createTransfers({ transfers: [transfer(acct(d), scenario === "hot" ? HOT : acct(c))] });
      if (res.results[0]!.result !== CreateTransferResult.OK) throw new Error(`transfer not ok: ${res.results[0]!.result}`);
    };
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    // CPU per call of each process of the run (the client, the server, the server's PostgreSQL
    // backends): on a shared box the rates move with the load, the CPU per call much less, and it
    // shows which process a single transfer costs more in than an echo.
    const cpuNow = async () => {
      const pids = (
        await monitor.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()", [`nanobill:${SCHEMA}`])
      ).rows.map((r) => Number(r.pid));
      const u = process.cpuUsage();
      let pg = 0;
      for (const pid of pids) pg += await procCpuUs(pid);
      return { client: u.user + u.system, server: await procCpuUs(child.pid!), pg };
    };
    const measured = async (clients: number, call: () => Promise<unknown>) => {
      const a = await cpuNow();
      let n = 0;
      const rate = await callsPerSecond(clients, 1000, () => call().then(() => n++));
      const b = await cpuNow();
      return { rate, client: (b.client - a.client) / n, server: (b.server - a.server) / n, pg: (b.pg - a.pg) / n };
    };
    type Measured = Awaited<ReturnType<typeof measured>>;
    const cpuLine = (xs: Measured[]) =>
      `client ${median(xs.map((x) => x.client)).toFixed(0)}, server ${median(xs.map((x) => x.server)).toFixed(0)}, PostgreSQL ${median(xs.map((x) => x.pg)).toFixed(0)}`;
    for (const clients of RATIO_ROUNDS > 0 ? [1, 32] : []) {
      const ratios = { hot: [] as number[], random: [] as number[] };
      const runs = { echo: [] as Measured[], hot: [] as Measured[] };
      for (let round = 0; round < RATIO_ROUNDS; round++) {
        const e = await measured(clients, echoCall);
        runs.echo.push(e);
        const h = await measured(clients, single("hot"));
        runs.hot.push(h);
        ratios.hot.push(h.rate / e.rate);
        ratios.random.push((await callsPerSecond(clients, 1000, single("random"))) / e.rate);
      }
      say(
        `echo RPC at ${clients} client(s): median ${median(runs.echo.map((x) => x.rate)).toFixed(0)} calls/s; single-transfer calls at ${clients} = ` +
          `${(100 * median(ratios.random)).toFixed(0)}% of it (random), ${(100 * median(ratios.hot)).toFixed(0)}% (hot) ` +
          `(medians of ${RATIO_ROUNDS} interleaved 1 s rounds; hot per round: ${ratios.hot.map((r) => (100 * r).toFixed(0)).join(", ")}%)`,
      );
      say(`  CPU µs per call (medians): echo: ${cpuLine(runs.echo)}; single transfer (hot): ${cpuLine(runs.hot)}`);
    }

    // Raw PostgreSQL: COPY the same kind of rows into a copy of the transfers table (same indexes).
    const db = await openDb({ url: DATABASE_URL!, schema: SCHEMA, poolMax: 2 });
    try {
      await db.query("CREATE TABLE transfers_raw (LIKE transfers INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING CONSTRAINTS)");
      let n = 0;
      const t0 = performance.now();
      const end = t0 + SECONDS * 1000;
      while (performance.now() < end) {
        const rows: unknown[][] = [];
        for (let i = 0; i < 8_190; i++) {
          n++;
          rows.push(["tnt_bench", `xfer_raw${n}`, acct(rnd(ACCOUNTS)), HOT, "1000", "1000", "USD", null, 0, 20, 0, null, String(1_800_000_000_000_000 + n), null, null]);
        }
        await db.transaction((tx) => db.copyRows("transfers_raw", TRANSFER_COLUMNS, rows, tx));
      }
      const raw = n / ((performance.now() - t0) / 1000);
      const hot = rates.get("hot/8190/32") ?? NaN;
      const hot1 = rates.get("hot/8190/1") ?? NaN;
      say(`raw PostgreSQL COPY of the same rows (batches of 8,190, same indexes): ${raw.toFixed(0)} rows/s`);
      say(`ledger hot account, batches of 8,190: 1 client ${hot1.toFixed(0)}/s = ${((100 * hot1) / raw).toFixed(0)}% of raw COPY; 32 clients ${hot.toFixed(0)}/s = ${((100 * hot) / raw).toFixed(0)}%`);
      const v = await ledger.verify({});
      say(`Verify after the run: ok=${v.ok}, ${v.transfersChecked} transfers, ${v.accountsChecked} accounts`);
    } finally {
      await db.close();
    }
  } finally {
    await monitor.close();
    closeClientSessions();
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
    const db = await openDb({ url: DATABASE_URL!, schema: SCHEMA, poolMax: 1 });
    await db.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`).catch(() => undefined);
    await db.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
