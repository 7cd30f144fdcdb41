/** Auto top-up: once per downward crossing of the threshold, at most once per cooldown. */

export interface AutoTopUpConfig {
  enabled: boolean;
  thresholdNanos: bigint;
  amountNanos: bigint;
  /** When > 0: top up to this balance instead of a fixed amount. */
  targetBalanceNanos: bigint;
  cooldownMs: number;
  /** Currency paid per unit of a top-up grant (exact decimal) and its currency. */
  costBasis: string;
  costBasisCurrency: string;
}

export interface AutoTopUpState {
  /** true while the balance is at or above the threshold (the next crossing may top up). */
  armed: boolean;
  lastTopUpAtMs: number | null;
}

export interface AutoTopUpDecision {
  topUpNanos: bigint;
  state: AutoTopUpState;
  /** The balance crossed the threshold downwards (a low_balance alert is due). */
  crossed: boolean;
}

/** Decides after a balance change whether to top up (pure). */
export function decideAutoTopUp(cfg: AutoTopUpConfig, st: AutoTopUpState, balanceNanos: bigint, nowMs: number): AutoTopUpDecision {
  if (balanceNanos >= cfg.thresholdNanos) {
    return { topUpNanos: 0n, state: { armed: true, lastTopUpAtMs: st.lastTopUpAtMs }, crossed: false };
  }
  if (!st.armed) return { topUpNanos: 0n, state: st, crossed: false };
  if (!cfg.enabled) return { topUpNanos: 0n, state: { armed: false, lastTopUpAtMs: st.lastTopUpAtMs }, crossed: true };
  if (st.lastTopUpAtMs !== null && nowMs - st.lastTopUpAtMs < cfg.cooldownMs) {
    // In cooldown: stay armed so that a later change after the cooldown tops up.
    return { topUpNanos: 0n, state: st, crossed: false };
  }
  const amount = cfg.targetBalanceNanos > 0n ? cfg.targetBalanceNanos - balanceNanos : cfg.amountNanos;
  if (amount <= 0n) return { topUpNanos: 0n, state: { armed: false, lastTopUpAtMs: st.lastTopUpAtMs }, crossed: true };
  return { topUpNanos: amount, state: { armed: false, lastTopUpAtMs: nowMs }, crossed: true };
}
