import { MoneyError } from "./errors.js";
import { ALLOCATE_WEIGHTS_MAX } from "./limits.js";
import { checkInt64, type Nanos } from "./nanos.js";

/**
 * allocate: splits `total` nanos by `weights` with the largest-remainder method.
 * - sum(result) == total exactly; result[i] is floor(total * w[i] / W) or one more (W = sum of
 *   weights); the leftover nanos go to the largest remainders, ties to the lowest index.
 * - A zero weight always gets 0.
 * - A negative total is split as -allocate(-total) (so shares are symmetric, rounding toward zero).
 * Rules (MoneyError): total an int64 bigint; 1..ALLOCATE_WEIGHTS_MAX weights, each a bigint >= 0,
 * with a positive sum. `field` (default "total") names the total; weights are "<field>.weights[i]".
 */
export function allocate(total: bigint, weights: bigint[], field = "total"): Nanos[] {
  if (typeof total !== "bigint") throw new MoneyError(field, `must be a bigint, got ${typeof total}`);
  checkInt64(total, field);
  const wf = `${field}.weights`;
  if (!Array.isArray(weights) || weights.length === 0) {
    throw new MoneyError(wf, "must be a non-empty array of bigint weights");
  }
  if (weights.length > ALLOCATE_WEIGHTS_MAX) {
    throw new MoneyError(wf, `must have at most ${ALLOCATE_WEIGHTS_MAX} weights, got ${weights.length}`);
  }
  let sum = 0n;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if (typeof w !== "bigint") throw new MoneyError(`${wf}[${i}]`, `must be a bigint, got ${typeof w}`);
    if (w < 0n) throw new MoneyError(`${wf}[${i}]`, `must be >= 0, got ${w}`);
    sum += w;
  }
  if (sum === 0n) throw new MoneyError(wf, "must have a positive sum");

  const negative = total < 0n;
  const t = negative ? -total : total;
  const n = weights.length;
  const shares: bigint[] = new Array<bigint>(n);
  const rems: bigint[] = new Array<bigint>(n);
  let given = 0n;
  for (let i = 0; i < n; i++) {
    const p = t * (weights[i] as bigint);
    const s = p / sum;
    shares[i] = s;
    rems[i] = p - s * sum;
    given += s;
  }
  let leftover = t - given; // 0 <= leftover < number of positive remainders
  if (leftover > 0n) {
    const order: number[] = [];
    for (let i = 0; i < n; i++) if ((rems[i] as bigint) > 0n) order.push(i);
    order.sort((a, b) => {
      const ra = rems[a] as bigint;
      const rb = rems[b] as bigint;
      return ra > rb ? -1 : ra < rb ? 1 : a - b;
    });
    for (let k = 0; leftover > 0n; k++, leftover--) {
      const i = order[k] as number;
      shares[i] = (shares[i] as bigint) + 1n;
    }
  }
  return (negative ? shares.map((s) => -s) : shares) as Nanos[];
}
