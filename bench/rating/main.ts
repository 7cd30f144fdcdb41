// Rating benchmark: pure rating throughput (events/s on one core) of rateEvent for per-unit,
// matrix (model x token type, the event-flow plan, with cost) and graduated charges, plus the
// carry/period-state overhead. Prints figures; asserts nothing about time.
//
//   npx tsx bench/rating/main.ts              # ~20 s
//   BENCH_EVENTS=100000 npx tsx bench/rating/main.ts
import * as os from "node:os";
import { rateEvent } from "../../apps/rating/src/domain/rate-event.js";
import { MemoryRatingState } from "../../apps/rating/src/domain/state.js";
import { T0, catalogFor, charge, event, llmCosts, llmMatrixVersion, usage, version } from "../../apps/rating/src/domain/fixtures.js";
import type { UsageEvent } from "../../apps/rating/src/domain/types.js";

const N = Number(process.env.BENCH_EVENTS ?? 300_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CUSTOMERS = 100;

function cat(kind: "per_unit" | "matrix" | "graduated") {
  if (kind === "matrix") {
    return catalogFor(llmMatrixVersion(), llmCosts());
  }
  const v =
    kind === "per_unit"
      ? version([charge("tok", { kind: "per_unit", unitPrice: { amount: "0.0375", perQuantity: "1000000" } }, { usage: usage("llm.call", ["input_tokens"], ["model"]) })])
      : version([
          charge(
            "req",
            {
              kind: "graduated",
              tiers: [
                { upTo: "1000", unitPrice: { amount: "0.01", perQuantity: "" }, flatAmount: "" },
                { upTo: "10000", unitPrice: { amount: "0.008", perQuantity: "" }, flatAmount: "" },
                { upTo: "", unitPrice: { amount: "0.005", perQuantity: "" }, flatAmount: "" },
              ],
            },
            { usage: usage("llm.call", ["input_tokens"]) },
          ),
        ]);
  return catalogFor(v, llmCosts());
}

function events(n: number): UsageEvent[] {
  const out: UsageEvent[] = [];
  for (let i = 0; i < n; i++) {
    const e = event(`evt_${i}`, "llm.call", { model: "gpt-x", provider: "openai", input_tokens: 100 + (i % 5000), output_tokens: 10 + (i % 700) }, T0 + 3_600_000 + i);
    // spread over customers sharing the subscription fixture's catalog (cus_1 only is subscribed:
    // the others are rated cost-only, so keep every event on cus_1 and vary state keys by model)
    out.push(e);
  }
  return out;
}

function run(kind: "per_unit" | "matrix" | "graduated", evs: UsageEvent[]): { perSec: number; perCpuSec: number; priceNanos: bigint } {
  const c = cat(kind);
  const st = new MemoryRatingState();
  let price = 0n;
  // warm-up
  for (let i = 0; i < Math.min(20_000, evs.length); i++) rateEvent(c, new MemoryRatingState(), evs[i]!);
  const cpu0 = process.cpuUsage();
  const t = process.hrtime.bigint();
  for (let i = 0; i < evs.length; i++) {
    const r = rateEvent(c, st, evs[i]!);
    for (const l of r.lines) price += l.priceNanos;
  }
  const ns = Number(process.hrtime.bigint() - t);
  const cpu = process.cpuUsage(cpu0);
  const cpuUs = cpu.user + cpu.system;
  return { perSec: (evs.length * 1e9) / ns, perCpuSec: (evs.length * 1e6) / cpuUs, priceNanos: price };
}

const evs = events(N);
console.log(`rating bench: ${N} events x ${ROUNDS} rounds, node ${process.version}, ${os.cpus()[0]?.model ?? "cpu"} (${os.cpus().length} cores), load ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}; customers ${CUSTOMERS > 0 ? 1 : 0} subscribed`);
for (const kind of ["per_unit", "matrix", "graduated"] as const) {
  const rs: number[] = [];
  const cs: number[] = [];
  let total = 0n;
  for (let r = 0; r < ROUNDS; r++) {
    const x = run(kind, evs);
    rs.push(x.perSec);
    cs.push(x.perCpuSec);
    total = x.priceNanos;
  }
  rs.sort((a, b) => b - a);
  cs.sort((a, b) => b - a);
  const f = (x: number): string => Math.round(x).toLocaleString("en-US").padStart(10);
  console.log(`${kind.padEnd(10)} wall: best ${f(rs[0]!)} events/s, median ${f(rs[Math.floor(rs.length / 2)]!)}; per CPU-second of this process: best ${f(cs[0]!)}, median ${f(cs[Math.floor(cs.length / 2)]!)}  (price of the run ${total} nanos)`);
}
