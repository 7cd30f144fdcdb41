/** Domain results -> Connect codes, in one exhaustive place. */
import { Code, ConnectError } from "@connectrpc/connect";
import { MoneyError } from "@nanobill/money";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { invalidArgument, rpcError } from "@nanobill/service-kit";
import { InvoicingError } from "./domain/lifecycle.js";
import { PeriodError } from "./domain/periods.js";
import { InvalidInput } from "./domain/settings.js";

/** toConnectError: an expected refusal as a ConnectError; anything else is rethrown as is. */
export function toConnectError(e: unknown): unknown {
  if (e instanceof ConnectError) return e;
  if (e instanceof InvalidInput || e instanceof PeriodError || e instanceof MoneyError) return invalidArgument(e.field, e.rule);
  if (e instanceof InvoicingError) {
    switch (e.kind) {
      case "not_found":
        return rpcError(Code.NotFound, ErrorReason.NOT_FOUND, e.message);
      case "failed_precondition":
        return new ConnectError(e.message, Code.FailedPrecondition);
      case "already_exists":
        return rpcError(Code.AlreadyExists, ErrorReason.ID_REUSED, e.message, e.field === "" ? {} : { field: e.field });
      case "invalid_argument":
        return rpcError(Code.InvalidArgument, ErrorReason.INVALID_FIELD, e.message, { field: e.field });
      case "aborted":
        return new ConnectError(e.message, Code.Aborted);
    }
  }
  return e;
}

/** guard: runs a handler body, mapping expected refusals. */
export async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toConnectError(e);
  }
}
