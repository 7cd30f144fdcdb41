import { isEligible, sortForBurn } from "./burn-order.js";
import type { BurnGrant, DebitContext, DebitRoom, Slice } from "./types.js";

/**
 * "all": a hold: either the whole amount is covered (grants, then overdraft room, then -- under
 * postpaid overage -- uncovered) or nothing is taken. "partial": a burn of usage that already
 * happened: take what can be taken; the rest is shortfall.
 */
export type DebitMode = "all" | "partial";

export interface DebitPlan {
  /** false only in "all" mode when the amount cannot be covered (nothing is taken then). */
  ok: boolean;
  /** Per grant, in burn-down order; sum <= amount. */
  slices: Slice[];
  /** Taken below zero (soft negative limit). */
  overdraftNanos: bigint;
  /** Allowed without cover (postpaid overage; holds only: a burn reports it as shortfall). */
  uncoveredNanos: bigint;
  /** Not taken at all (partial mode; and, in partial mode, postpaid overage). */
  shortfallNanos: bigint;
}

/**
 * Splits a debit across grants in burn-down order. Pure; never mutates its input.
 * Invariant: sum(slices) + overdraft + uncovered + shortfall == amount; every slice <= its grant's
 * available; overdraft <= room.overdraftRoomNanos.
 */
export function planDebit(
  grants: readonly BurnGrant[],
  amountNanos: bigint,
  ctx: DebitContext,
  room: DebitRoom,
  mode: DebitMode,
): DebitPlan {
  if (amountNanos <= 0n) throw new Error("amount_nanos: must be > 0");
  let rest = amountNanos;
  const slices: Slice[] = [];
  for (const g of sortForBurn(grants)) {
    if (rest === 0n) break;
    if (g.availableNanos <= 0n || !isEligible(g, ctx)) continue;
    const take = g.availableNanos < rest ? g.availableNanos : rest;
    slices.push({ grantId: g.id, amountNanos: take });
    rest -= take;
  }
  const room0 = room.overdraftRoomNanos > 0n ? room.overdraftRoomNanos : 0n;
  const overdraftNanos = rest < room0 ? rest : room0;
  rest -= overdraftNanos;
  if (mode === "all") {
    if (rest > 0n && !room.uncoveredAllowed) {
      return { ok: false, slices: [], overdraftNanos: 0n, uncoveredNanos: 0n, shortfallNanos: amountNanos };
    }
    return { ok: true, slices, overdraftNanos, uncoveredNanos: rest, shortfallNanos: 0n };
  }
  return { ok: true, slices, overdraftNanos, uncoveredNanos: 0n, shortfallNanos: rest };
}

/** Sum of slice amounts. */
export function sumSlices(slices: readonly Slice[]): bigint {
  let s = 0n;
  for (const x of slices) s += x.amountNanos;
  return s;
}
