/** Expiry and the trust tax: notices before, an optional grace, breakage after. */

export interface ExpiringGrant {
  amountNanos: bigint;
  burnedNanos: bigint;
  heldNanos: bigint;
  expiredNanos: bigint;
  expiresAtMs: number | null;
}

/** What is left of a grant that nobody holds. */
export function remainderNanos(g: ExpiringGrant): bigint {
  return g.amountNanos - g.burnedNanos - g.heldNanos - g.expiredNanos;
}

/**
 * The amount that moves to breakage at asOfMs: the unheld remainder, once expires_at + grace has
 * passed (held parts stay until their hold is captured, or go to breakage when released).
 */
export function breakageAt(g: ExpiringGrant, asOfMs: number, graceMs: number): bigint {
  if (g.expiresAtMs === null) return 0n;
  if (asOfMs < g.expiresAtMs + graceMs) return 0n;
  const r = remainderNanos(g);
  return r > 0n ? r : 0n;
}

/** Whether the credits_expiring notice is due: within noticeMs before expiry, something left. */
export function expiryNoticeDue(g: ExpiringGrant, asOfMs: number, noticeMs: number): boolean {
  if (g.expiresAtMs === null) return false;
  return asOfMs >= g.expiresAtMs - noticeMs && asOfMs < g.expiresAtMs && remainderNanos(g) > 0n;
}
