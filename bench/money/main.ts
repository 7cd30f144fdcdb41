// Benchmark of the hot paths of @nanobill/money. Prints figures; asserts nothing.
// Run: cd /work/main && npx tsx libs/money/bench/money-bench.ts
import { CarryAccumulator, Rate, allocate, formatNanos, parseDecimalNanos, roundToMinor } from "@nanobill/money";

const sinks: unknown[] = []; // results are kept so the JIT cannot drop the work

function bench(name: string, n: number, fn: (i: number) => unknown): void {
  for (let i = 0; i < Math.min(n, 50_000); i++) fn(i); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sinks.push(fn(i)), sinks.length > 1024 && (sinks.length = 0);
  const ns = Number(process.hrtime.bigint() - t0);
  const perSec = Math.round((n / ns) * 1e9);
  console.log(`${name.padEnd(58)} ${String(perSec).padStart(11)} ops/s  ${(ns / n).toFixed(0).padStart(6)} ns/op`);
}

const N = 1_000_000;
const quantities = Array.from({ length: 1024 }, (_, i) => BigInt(1 + ((i * 7919) % 100_000)));
const integerRate = Rate.parse("2.5", "p", { perQuantity: 1_000_000n }); // 2500/1
const fracRate = Rate.parse("0.0375", "p", { perQuantity: 1_000_000n }); // 75/2
const oddRate = Rate.parse("4.4556", "p", { perQuantity: 7n }); // large den

bench("Rate.times integer rate (2500/1), half_even", N, (i) => integerRate.times(quantities[i & 1023]!, "half_even"));
bench("Rate.times fractional rate (75/2), half_even", N, (i) => fracRate.times(quantities[i & 1023]!, "half_even"));
bench(`Rate.times rate ${oddRate.num}/${oddRate.den}, floor`, N, (i) => oddRate.times(quantities[i & 1023]!, "floor"));
const acc = new CarryAccumulator("half_even");
bench("CarryAccumulator.add(rate.exactTimes(q)) one rate", N, (i) => acc.add(fracRate.exactTimes(quantities[i & 1023]!)));
const acc2 = new CarryAccumulator("floor");
bench("CarryAccumulator.add alternating dens (2 and 7)", N / 4, (i) => acc2.add((i & 1 ? fracRate : oddRate).exactTimes(quantities[i & 1023]!)));
const strings = quantities.map((q) => formatNanos(q * 1234567n));
bench("parseDecimalNanos", N, (i) => parseDecimalNanos(strings[i & 1023]!, "amount"));
bench("formatNanos", N, (i) => formatNanos(quantities[i & 1023]! * 1234567n));
bench("Rate.parse", N / 4, (i) => Rate.parse(strings[i & 1023]!, "p", { perQuantity: 1_000_000n }));
bench("roundToMinor USD half_even", N, (i) => roundToMinor(quantities[i & 1023]! * 1234567n, "USD", "half_even"));
const weights = Array.from({ length: 10 }, (_, i) => BigInt(i + 1));
bench("allocate(total, 10 weights)", N / 4, (i) => allocate(quantities[i & 1023]! * 1000n, weights));
