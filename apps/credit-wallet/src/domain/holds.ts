import type { Slice } from "./types.js";

/** What a hold reserved. */
export interface HeldParts {
  /** Per grant, in burn-down order. */
  slices: Slice[];
  /** Reserved below zero (soft negative). */
  overdraftNanos: bigint;
  /** Allowed without cover (postpaid overage); nothing is reserved for it. */
  uncoveredNanos: bigint;
}

export interface CapturePlan {
  /** Per held slice, the part burned (0: the slice is released whole). Same order as the hold. */
  burnSlices: Slice[];
  /** Per held slice, the part released back to its grant. */
  releaseSlices: Slice[];
  /** Overdraft burned / released. */
  overdraftBurnNanos: bigint;
  overdraftReleaseNanos: bigint;
  /** actual - reserved when positive: a new debit that follows the wallet's policy. */
  extraNanos: bigint;
}

/** The amount a hold reserved (grants + overdraft; uncovered is not reserved). */
export function reservedNanos(h: HeldParts): bigint {
  let s = h.overdraftNanos;
  for (const x of h.slices) s += x.amountNanos;
  return s;
}

/**
 * Capture of a hold with the actual amount: burns the held slices in their (burn-down) order,
 * then the held overdraft; releases the rest; whatever is above the reservation is `extraNanos`
 * (less than held: the rest is released; more: the overage is a new debit under the policy).
 */
export function planCapture(h: HeldParts, actualNanos: bigint): CapturePlan {
  if (actualNanos < 0n) throw new Error("amount_nanos: must be >= 0");
  let rest = actualNanos;
  const burnSlices: Slice[] = [];
  const releaseSlices: Slice[] = [];
  for (const s of h.slices) {
    const burn = s.amountNanos < rest ? s.amountNanos : rest;
    rest -= burn;
    burnSlices.push({ grantId: s.grantId, amountNanos: burn });
    releaseSlices.push({ grantId: s.grantId, amountNanos: s.amountNanos - burn });
  }
  const odBurn = h.overdraftNanos < rest ? h.overdraftNanos : rest;
  rest -= odBurn;
  return {
    burnSlices,
    releaseSlices,
    overdraftBurnNanos: odBurn,
    overdraftReleaseNanos: h.overdraftNanos - odBurn,
    extraNanos: rest,
  };
}

export type HoldState = "pending" | "captured" | "released" | "expired";

export type HoldTransitionError = "hold_not_pending" | "hold_expired";

/**
 * Whether a pending hold may be captured or released at nowMs. A hold past its expiry can only be
 * expired (Release of an expired hold is answered with its expired state, not an error).
 */
export function checkHoldTransition(
  state: HoldState,
  expiresAtMs: number,
  nowMs: number,
  op: "capture" | "release",
): HoldTransitionError | null {
  if (state !== "pending") return "hold_not_pending";
  if (op === "capture" && nowMs >= expiresAtMs) return "hold_expired";
  return null;
}
