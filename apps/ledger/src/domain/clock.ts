/**
 * The ledger's timestamp source: microseconds since the Unix epoch, strictly increasing. When the
 * wall clock has not moved past the last timestamp (or went back), the next timestamp is the last
 * one plus 1 µs. Pure: the wall clock is injected.
 */
export class LedgerClock {
  private lastUs: bigint;
  constructor(
    lastUs: bigint,
    private readonly nowUs: () => bigint,
  ) {
    this.lastUs = lastUs;
  }
  /** The next timestamp: > every timestamp handed out before. */
  next(): bigint {
    const now = this.nowUs();
    this.lastUs = now > this.lastUs ? now : this.lastUs + 1n;
    return this.lastUs;
  }
  /** The current wall-clock time (µs) without handing out a timestamp. */
  peek(): bigint {
    const now = this.nowUs();
    return now > this.lastUs ? now : this.lastUs + 1n;
  }
  /**
   * Hands out `us`, a value peek() returned with nothing handed out since: the timestamp an item
   * was checked against (e.g. a pending transfer's expiry) is the one it gets. A second read of the
   * wall clock (next()) could land later, e.g. exactly on the expiry instant.
   */
  take(us: bigint): bigint {
    if (us <= this.lastUs) throw new Error(`ledger invariant: timestamp ${us} is not after ${this.lastUs}`);
    this.lastUs = us;
    return us;
  }
  /**
   * Hands out a caller-chosen timestamp (imported events): it must be after every timestamp handed
   * out before (the domain checks this first and answers imported_event_timestamp_must_not_regress).
   */
  importAt(us: bigint): bigint {
    if (us <= this.lastUs) throw new Error(`ledger invariant: imported timestamp ${us} is not after ${this.lastUs}`);
    this.lastUs = us;
    return us;
  }
  /** The last timestamp handed out. */
  get last(): bigint {
    return this.lastUs;
  }
}

/** Microseconds since the epoch of a Date (millisecond precision). */
export function dateToUs(d: Date): bigint {
  return BigInt(d.getTime()) * 1000n;
}

/** A Date (millisecond precision, truncated) of a microsecond timestamp. */
export function usToDate(us: bigint): Date {
  return new Date(Number(us / 1000n));
}
