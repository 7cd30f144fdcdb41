import type { DebitRoom, Policy } from "./types.js";

/** What room a policy leaves a debit, given the overdraft already used (posted + held). */
export function debitRoom(p: Policy, overdraftUsedNanos: bigint): DebitRoom {
  switch (p.mode) {
    case "hard_stop":
      return { overdraftRoomNanos: 0n, uncoveredAllowed: false };
    case "soft_negative": {
      const room = p.negativeLimitNanos - overdraftUsedNanos;
      return { overdraftRoomNanos: room > 0n ? room : 0n, uncoveredAllowed: false };
    }
    case "postpaid_overage":
      return { overdraftRoomNanos: 0n, uncoveredAllowed: true };
  }
}

/** The lowest available balance the policy allows (-negative limit; postpaid has no floor on usage but holds never reserve below zero). */
export function floorNanos(p: Policy): bigint {
  return p.mode === "soft_negative" ? -p.negativeLimitNanos : 0n;
}

/** How much of a new grant repays an overdraft first. */
export function repayNanos(overdraftPostedNanos: bigint, grantNanos: bigint): bigint {
  return overdraftPostedNanos < grantNanos ? overdraftPostedNanos : grantNanos;
}
