// Known failures -> Connect codes, in one place. Anything else is rethrown for the error
// boundary (Internal, logged, nothing internal sent).
import { Code, ConnectError } from "@connectrpc/connect";
import { isDbError } from "@nanobill/db";
import { unavailable } from "@nanobill/service-kit";
import { AggregationBehindError } from "./store/aggregator.js";
import { IngestQueueFullError, WriterClosedError } from "./store/group-commit.js";

export function toRpcError(e: unknown): unknown {
  if (e instanceof ConnectError) return e;
  if (e instanceof IngestQueueFullError) return unavailable(`overloaded: ${e.message}; retry with backoff`);
  if (e instanceof WriterClosedError) return unavailable("shutting down; retry");
  if (e instanceof AggregationBehindError) return unavailable(`overloaded: ${e.message}; retry with backoff`);
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

