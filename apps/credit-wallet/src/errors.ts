/**
 * Wallet outcomes that are not success, and their one mapping to Connect codes.
 * Expected outcomes (insufficient, hold not pending, ...) are values in batch results and
 * WalletError on single-item RPCs; broken invariants are plain Errors (the error boundary
 * turns them into Internal).
 */
import type { ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { alreadyExists, failedPrecondition, invalidArgument, limitExceeded, notFound, unavailable } from "@nanobill/service-kit";

export type WalletErrorKind =
  | { kind: "invalid"; field: string; rule: string }
  | { kind: "limit"; field: string; limit: number | bigint }
  | { kind: "not_found"; what: string; id: string }
  | { kind: "id_reused"; field: string; id: string }
  | { kind: "insufficient"; walletId: string; availableNanos: bigint }
  | { kind: "hold_not_pending"; holdId: string; state: string }
  | { kind: "hold_expired"; holdId: string }
  | { kind: "unavailable"; message: string };

export class WalletError extends Error {
  readonly detail: WalletErrorKind;
  constructor(detail: WalletErrorKind) {
    super(describe(detail));
    this.name = "WalletError";
    this.detail = detail;
  }
}

export const invalid = (field: string, rule: string) => new WalletError({ kind: "invalid", field, rule });

export function describe(d: WalletErrorKind): string {
  switch (d.kind) {
    case "invalid":
      return `${d.field}: ${d.rule}`;
    case "limit":
      return `${d.field}: exceeds the limit of ${d.limit}`;
    case "not_found":
      return `${d.what} ${d.id} not found`;
    case "id_reused":
      return `${d.field}: ${d.id} was already used with different content`;
    case "insufficient":
      return `wallet ${d.walletId}: insufficient balance (available ${d.availableNanos} nanos)`;
    case "hold_not_pending":
      return `hold ${d.holdId} is ${d.state}, not pending`;
    case "hold_expired":
      return `hold ${d.holdId} has expired`;
    case "unavailable":
      return d.message;
  }
}

/** The one mapping from wallet outcomes to Connect errors. */
export function toConnect(e: WalletError): ConnectError {
  const d = e.detail;
  switch (d.kind) {
    case "invalid":
      return invalidArgument(d.field, d.rule);
    case "limit":
      return limitExceeded(d.field, d.limit);
    case "not_found":
      return notFound(d.what, d.id);
    case "id_reused":
      return alreadyExists(d.field, d.id);
    case "insufficient":
      return failedPrecondition(ErrorReason.INSUFFICIENT_BALANCE, describe(d), { wallet_id: d.walletId, available_nanos: d.availableNanos.toString() });
    case "hold_not_pending":
      return failedPrecondition(ErrorReason.INVALID_FIELD, describe(d), { hold_id: d.holdId, state: d.state });
    case "hold_expired":
      return failedPrecondition(ErrorReason.INVALID_FIELD, describe(d), { hold_id: d.holdId });
    case "unavailable":
      return unavailable(d.message);
  }
}
