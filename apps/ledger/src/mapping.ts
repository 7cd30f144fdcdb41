/** proto <-> domain. Amounts stay bigint end to end; times are µs bigints inside, Timestamps outside. */
import { create } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { usToTimestamp } from "@nanobill/service-kit";
import {
  type Account as PbAccount,
  AccountBalanceSchema,
  AccountSchema,
  CreateAccountResult as PbCreateAccountResult,
  CreateAccountsItemResultSchema,
  CreateTransferResult as PbCreateTransferResult,
  CreateTransfersItemResultSchema,
  type NewAccount as PbNewAccount,
  type NewTransfer as PbNewTransfer,
  TransferSchema,
  TransferState,
  type Transfer as PbTransfer,
  UnitTotalsSchema,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import {
  CREATE_ACCOUNT_RESULTS,
  CREATE_TRANSFER_RESULTS,
  type CreateAccountItemResult,
  type CreateAccountResult,
  type CreateTransferItemResult,
  type CreateTransferResult,
} from "./domain/results.js";
import type { Account, BalanceSnapshot, NewAccount, NewTransfer } from "./domain/types.js";
import type { UnitTotals } from "./domain/verify.js";
import type { StoredTransfer, TransferStateName } from "./store/types.js";

const US_PER_SECOND = 1_000_000n;

export { usToTimestamp };

/** google.protobuf.Timestamp: nanos must be in 0..999,999,999 (negative times use negative seconds). */
const TIMESTAMP_NANOS_MAX = 999_999_999;

/**
 * A Timestamp whose nanos are outside 0..999,999,999 (the well-known type's rule; {seconds: 1,
 * nanos: -5} would otherwise be read as 999,999 µs). The service answers InvalidArgument naming
 * the field (e.g. `transfers[3].timestamp`).
 */
export class TimestampNanosError extends Error {
  constructor(readonly nanos: number) {
    super(`nanos must be in 0..999999999, got ${nanos}`);
    this.name = "TimestampNanosError";
  }
}

/** µs of a Timestamp given as seconds and nanos (sub-microsecond nanos are truncated); TimestampNanosError when nanos is out of range. */
export function timestampPartsToUs(seconds: bigint, nanos: number): bigint {
  if (!Number.isInteger(nanos) || nanos < 0 || nanos > TIMESTAMP_NANOS_MAX) throw new TimestampNanosError(nanos);
  return seconds * US_PER_SECOND + BigInt(Math.floor(nanos / 1000));
}

/** µs of a Timestamp (sub-microsecond nanos are truncated); TimestampNanosError when nanos is out of range. */
export function timestampToUs(ts: Timestamp): bigint {
  return timestampPartsToUs(ts.seconds, ts.nanos);
}

export function newAccountFromPb(a: PbNewAccount): NewAccount {
  return {
    id: a.id,
    unit: a.unit,
    code: a.code,
    flags: {
      linked: a.flags?.linked ?? false,
      debitsMustNotExceedCredits: a.flags?.debitsMustNotExceedCredits ?? false,
      creditsMustNotExceedDebits: a.flags?.creditsMustNotExceedDebits ?? false,
      history: a.flags?.history ?? false,
      imported: a.flags?.imported ?? false,
      closed: a.flags?.closed ?? false,
    },
    metadata: { ...a.metadata },
    timestampUs: a.timestamp ? timestampToUs(a.timestamp) : 0n,
  };
}

export function newTransferFromPb(t: PbNewTransfer): NewTransfer {
  return {
    id: t.id,
    debitAccountId: t.debitAccountId,
    creditAccountId: t.creditAccountId,
    amountNanos: t.amountNanos,
    unit: t.unit,
    pendingId: t.pendingId,
    timeoutSeconds: t.timeoutSeconds,
    code: t.code,
    flags: {
      linked: t.flags?.linked ?? false,
      pending: t.flags?.pending ?? false,
      postPendingTransfer: t.flags?.postPendingTransfer ?? false,
      voidPendingTransfer: t.flags?.voidPendingTransfer ?? false,
      balancingDebit: t.flags?.balancingDebit ?? false,
      balancingCredit: t.flags?.balancingCredit ?? false,
      closingDebit: t.flags?.closingDebit ?? false,
      closingCredit: t.flags?.closingCredit ?? false,
      imported: t.flags?.imported ?? false,
    },
    references: { ...t.references },
    timestampUs: t.timestamp ? timestampToUs(t.timestamp) : 0n,
  };
}

/** Domain result name -> proto enum value (same names, same order). */
const ACCOUNT_RESULT_PB = new Map<CreateAccountResult, PbCreateAccountResult>(
  CREATE_ACCOUNT_RESULTS.map((r) => [r, PbCreateAccountResult[r.toUpperCase() as keyof typeof PbCreateAccountResult]]),
);
const TRANSFER_RESULT_PB = new Map<CreateTransferResult, PbCreateTransferResult>(
  CREATE_TRANSFER_RESULTS.map((r) => [r, PbCreateTransferResult[r.toUpperCase() as keyof typeof PbCreateTransferResult]]),
);

export function accountResultToPb(r: CreateAccountResult): PbCreateAccountResult {
  const v = ACCOUNT_RESULT_PB.get(r);
  if (v === undefined) throw new Error(`ledger invariant: no proto value for account result ${r}`);
  return v;
}

export function transferResultToPb(r: CreateTransferResult): PbCreateTransferResult {
  const v = TRANSFER_RESULT_PB.get(r);
  if (v === undefined) throw new Error(`ledger invariant: no proto value for transfer result ${r}`);
  return v;
}

export function accountItemResultToPb(r: CreateAccountItemResult) {
  return create(CreateAccountsItemResultSchema, {
    result: accountResultToPb(r.result),
    id: r.id,
    createTime: r.timestampUs === null ? undefined : usToTimestamp(r.timestampUs),
  });
}

export function transferItemResultToPb(r: CreateTransferItemResult) {
  return create(CreateTransfersItemResultSchema, {
    result: transferResultToPb(r.result),
    id: r.id,
    amountNanos: r.amountNanos,
    createTime: r.timestampUs === null ? undefined : usToTimestamp(r.timestampUs),
  });
}

export function accountToPb(a: Account): PbAccount {
  return create(AccountSchema, {
    id: a.id,
    unit: a.unit,
    code: a.code,
    flags: { ...a.flags },
    metadata: { ...a.metadata },
    debitsPendingNanos: a.debitsPendingNanos,
    debitsPostedNanos: a.debitsPostedNanos,
    creditsPendingNanos: a.creditsPendingNanos,
    creditsPostedNanos: a.creditsPostedNanos,
    createTime: usToTimestamp(a.timestampUs),
  });
}

const STATE_PB: Record<TransferStateName, TransferState> = {
  posted: TransferState.POSTED,
  pending: TransferState.PENDING,
  pending_posted: TransferState.PENDING_POSTED,
  pending_voided: TransferState.PENDING_VOIDED,
  pending_expired: TransferState.PENDING_EXPIRED,
};

export function transferToPb(t: StoredTransfer): PbTransfer {
  return create(TransferSchema, {
    id: t.id,
    debitAccountId: t.debitAccountId,
    creditAccountId: t.creditAccountId,
    amountNanos: t.amountNanos,
    unit: t.unit,
    pendingId: t.pendingId,
    timeoutSeconds: t.timeoutSeconds,
    code: t.code,
    flags: { ...t.flags },
    references: { ...t.references },
    createTime: usToTimestamp(t.timestampUs),
    state: STATE_PB[t.state],
    expireTime: t.expiresAtUs === null ? undefined : usToTimestamp(t.expiresAtUs),
    resolveTime: t.resolvedAtUs === null ? undefined : usToTimestamp(t.resolvedAtUs),
  });
}

export function balanceToPb(s: BalanceSnapshot) {
  return create(AccountBalanceSchema, {
    time: usToTimestamp(s.timestampUs),
    debitsPendingNanos: s.debitsPendingNanos,
    debitsPostedNanos: s.debitsPostedNanos,
    creditsPendingNanos: s.creditsPendingNanos,
    creditsPostedNanos: s.creditsPostedNanos,
  });
}

export function unitTotalsToPb(u: UnitTotals) {
  return create(UnitTotalsSchema, {
    unit: u.unit,
    debitsPendingNanos: u.debitsPendingNanos.toString(),
    debitsPostedNanos: u.debitsPostedNanos.toString(),
    creditsPendingNanos: u.creditsPendingNanos.toString(),
    creditsPostedNanos: u.creditsPostedNanos.toString(),
  });
}
