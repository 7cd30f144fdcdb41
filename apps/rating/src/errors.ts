// Known failures -> Connect codes, in one place. Anything else is rethrown for the host server's
// error boundary (Internal, logged, nothing internal sent).
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { isDbError } from "@nanobill/db";
import { MoneyError } from "@nanobill/money";
import { alreadyExists, failedPrecondition, invalidArgument, notFound, rpcError, unavailable } from "@nanobill/service-kit";
import { RatingError } from "./domain/errors.js";

export function toRpcError(e: unknown): unknown {
  if (e instanceof ConnectError) return e;
  if (e instanceof RatingError) {
    switch (e.kind) {
      case "invalid":
        return invalidArgument(e.field, e.rule);
      case "not_found":
        return rpcError(Code.NotFound, ErrorReason.NOT_FOUND, e.message, { what: e.field });
      case "failed_precondition":
        return failedPrecondition(ErrorReason.INVALID_FIELD, e.message, { field: e.field });
      case "already_exists":
        return rpcError(Code.AlreadyExists, ErrorReason.ID_REUSED, e.message, { field: e.field });
      case "limit":
        return rpcError(Code.ResourceExhausted, ErrorReason.LIMIT_EXCEEDED, e.message, { field: e.field });
    }
  }
  if (e instanceof MoneyError) return invalidArgument(e.field, e.rule);
  if (isDbError(e)) {
    switch (e.code) {
      case "serialization":
        return new ConnectError("transaction conflict, retry", Code.Aborted);
      case "unavailable":
        return unavailable("database unavailable, retry later");
      case "timeout":
        return new ConnectError("database timeout, retry later", Code.DeadlineExceeded);
      default:
        return e;
    }
  }
  return e;
}

export { notFound, alreadyExists };
