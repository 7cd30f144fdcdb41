/** Builders shared by the ledger's tests (not used by production code). */
import { LedgerClock } from "./clock.js";
import type { AccountFlags, NewAccount, NewTransfer, TransferFlags } from "./types.js";
import { NO_ACCOUNT_FLAGS, NO_TRANSFER_FLAGS } from "./types.js";

export function newAccount(id: string, over: Partial<Omit<NewAccount, "flags">> & { flags?: Partial<AccountFlags> } = {}): NewAccount {
  return {
    id,
    unit: over.unit ?? "USD",
    code: over.code ?? 2100,
    flags: { ...NO_ACCOUNT_FLAGS, ...over.flags },
    metadata: over.metadata ?? {},
    timestampUs: over.timestampUs ?? 0n,
  };
}

export function newTransfer(id: string, over: Partial<Omit<NewTransfer, "flags">> & { flags?: Partial<TransferFlags> } = {}): NewTransfer {
  return {
    id,
    debitAccountId: over.debitAccountId ?? "acct_a",
    creditAccountId: over.creditAccountId ?? "acct_b",
    amountNanos: over.amountNanos ?? 10n,
    unit: over.unit ?? "USD",
    pendingId: over.pendingId ?? "",
    timeoutSeconds: over.timeoutSeconds ?? 0,
    code: over.code ?? 20,
    flags: { ...NO_TRANSFER_FLAGS, ...over.flags },
    references: over.references ?? {},
    timestampUs: over.timestampUs ?? 0n,
  };
}

/** A clock whose wall time is set by the test (µs). */
export function testClock(startUs = 1_700_000_000_000_000n): LedgerClock & { set(us: bigint): void; advanceSeconds(s: number): void } {
  let now = startUs;
  const c = new LedgerClock(0n, () => now) as LedgerClock & { set(us: bigint): void; advanceSeconds(s: number): void };
  c.set = (us: bigint) => {
    now = us;
  };
  c.advanceSeconds = (s: number) => {
    now += BigInt(s) * 1_000_000n;
  };
  return c;
}
