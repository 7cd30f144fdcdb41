/** Store / domain errors -> Connect codes, in one place. */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { limitExceeded, rpcError, unavailable } from "@nanobill/service-kit";
import { COMMIT_QUEUE_ITEMS_MAX } from "./limits.js";
import { LedgerBusyError, LedgerClosedError } from "./store/types.js";

/**
 * The Connect error for what the store threw: a full commit queue is ResourceExhausted (back off
 * and retry), a closed store Unavailable; anything else is rethrown for the error boundary
 * (DbError serialization -> Aborted, unavailable -> Unavailable, the rest -> Internal).
 */
export function storeError(e: unknown): unknown {
  if (e instanceof LedgerBusyError) return limitExceeded("ledger commit queue items", COMMIT_QUEUE_ITEMS_MAX);
  if (e instanceof LedgerClosedError) return unavailable("ledger is shutting down, retry later");
  return e;
}

/** FailedPrecondition: the account exists but has no `history` flag. */
export function noHistory(accountId: string): ConnectError {
  return rpcError(Code.FailedPrecondition, ErrorReason.INVALID_FIELD, `account_id: account ${accountId} was not created with the history flag`, {
    field: "account_id",
    rule: "account must have the history flag",
  });
}
