import { BPS_ONE } from "../limits.js";

export type RolloverMode = "none" | "all" | "capped" | "percentage";

export interface RolloverRule {
  mode: RolloverMode;
  capNanos: bigint;
  percentBps: number;
  /** Lifetime of the rollover grant after the period end (0: no expiry). */
  expiresAfterMs: number;
}

export const NO_ROLLOVER: RolloverRule = { mode: "none", capNanos: 0n, percentBps: 0, expiresAfterMs: 0 };

export interface RolloverPlan {
  rolledOverNanos: bigint;
  /** To breakage; rolledOver + expired == remainder. */
  expiredNanos: bigint;
}

/**
 * What of an allowance's unused remainder rolls into the next period. Percentage rounds down
 * (named: floor); the residue goes to breakage with the rest, visibly.
 */
export function planRollover(rule: RolloverRule, remainderNanos: bigint): RolloverPlan {
  if (remainderNanos < 0n) throw new Error("remainder_nanos: must be >= 0");
  let rolled: bigint;
  switch (rule.mode) {
    case "none":
      rolled = 0n;
      break;
    case "all":
      rolled = remainderNanos;
      break;
    case "capped":
      rolled = remainderNanos < rule.capNanos ? remainderNanos : rule.capNanos;
      break;
    case "percentage":
      rolled = (remainderNanos * BigInt(rule.percentBps)) / BigInt(BPS_ONE); // floor (non-negative)
      break;
  }
  return { rolledOverNanos: rolled, expiredNanos: remainderNanos - rolled };
}

/** The next allowance period of a renewing allowance: the same length, starting at the end. */
export function nextPeriod(effectiveAtMs: number, periodEndMs: number): { effectiveAtMs: number; periodEndMs: number } {
  const len = periodEndMs - effectiveAtMs;
  if (len <= 0) throw new Error("period_end: must be after effective_at");
  return { effectiveAtMs: periodEndMs, periodEndMs: periodEndMs + len };
}
