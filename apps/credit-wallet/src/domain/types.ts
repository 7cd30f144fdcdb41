/** Domain types of the credit wallet. Amounts are bigint nano-units of the wallet's unit; times are epoch milliseconds. */

export type GrantKind = "purchased" | "promotional" | "allowance" | "rollover";
export const GRANT_KINDS: readonly GrantKind[] = ["purchased", "promotional", "allowance", "rollover"];

export type PolicyMode = "hard_stop" | "soft_negative" | "postpaid_overage";

/** What a wallet does when a debit passes its grants. */
export interface Policy {
  mode: PolicyMode;
  /** How far below zero the wallet may go (soft_negative only). */
  negativeLimitNanos: bigint;
  /** Currency amount per unit of overage (postpaid_overage only), an exact decimal string. */
  overageRate: string;
  overageCurrency: string;
}

export const HARD_STOP: Policy = { mode: "hard_stop", negativeLimitNanos: 0n, overageRate: "", overageCurrency: "" };

/** What may burn a grant; empty lists mean anything. */
export interface Scope {
  chargeIds: string[];
  models: string[];
}

/** The part of a grant that burn-down needs. */
export interface BurnGrant {
  id: string;
  kind: GrantKind;
  priority: number;
  effectiveAtMs: number;
  /** null: never expires. */
  expiresAtMs: number | null;
  /**
   * An allowance's period end (null / absent otherwise): it stops burning there, like at an
   * expiry (its remainder is RunRollover's), without changing its place in the burn-down order.
   */
  periodEndMs?: number | null;
  createdAtMs: number;
  /** amount - burned - held - expired. */
  availableNanos: bigint;
  scope: Scope;
}

/** One grant's part of a debit (a hold or a burn). */
export interface Slice {
  grantId: string;
  amountNanos: bigint;
}

/** What a debit may take beyond the grants. */
export interface DebitRoom {
  /** How much more the wallet may go below zero (soft_negative: limit - overdraft used; else 0). */
  overdraftRoomNanos: bigint;
  /** postpaid_overage: what nothing covers is allowed (uncovered) instead of refused. */
  uncoveredAllowed: boolean;
}

/** The context that decides which grants may burn. */
export interface DebitContext {
  nowMs: number;
  chargeId: string;
  model: string;
}
