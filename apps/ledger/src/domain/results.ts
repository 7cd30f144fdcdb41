/**
 * Result codes of CreateAccounts / CreateTransfers, listed in order of descending precedence:
 * when several apply to one item, the first listed is returned. The proto enums list the same
 * names in the same order (mapping.ts converts by name).
 */

export const CREATE_ACCOUNT_RESULTS = [
  "ok",
  "linked_event_failed",
  "linked_event_chain_open",
  "imported_event_expected",
  "imported_event_not_expected",
  "timestamp_must_be_zero",
  "imported_event_timestamp_out_of_range",
  "imported_event_timestamp_must_not_advance",
  "id_invalid",
  // An existing id is compared before the item's own checks (TigerBeetle 0.16.4 and later): a
  // retry of an account that exists answers EXISTS*, whatever else is wrong with the retry.
  "exists_with_different_flags",
  "exists_with_different_unit",
  "exists_with_different_code",
  "exists_with_different_metadata",
  "exists",
  "flags_are_mutually_exclusive",
  "unit_invalid",
  "code_must_not_be_zero",
  "metadata_invalid",
  "imported_event_timestamp_must_not_regress",
] as const;
export type CreateAccountResult = (typeof CREATE_ACCOUNT_RESULTS)[number];

export const CREATE_TRANSFER_RESULTS = [
  "ok",
  "linked_event_failed",
  "linked_event_chain_open",
  "imported_event_expected",
  "imported_event_not_expected",
  "timestamp_must_be_zero",
  "imported_event_timestamp_out_of_range",
  "imported_event_timestamp_must_not_advance",
  "id_invalid",
  "exists_with_different_flags",
  "exists_with_different_pending_id",
  "exists_with_different_timeout",
  "exists_with_different_debit_account_id",
  "exists_with_different_credit_account_id",
  "exists_with_different_amount",
  "exists_with_different_references",
  "exists_with_different_unit",
  "exists_with_different_code",
  "exists",
  "id_already_failed",
  "flags_are_mutually_exclusive",
  "debit_account_id_invalid",
  "credit_account_id_invalid",
  "accounts_must_be_different",
  "pending_id_must_be_empty",
  "pending_id_invalid",
  "pending_id_must_be_different",
  "timeout_reserved_for_pending_transfer",
  "closing_transfer_must_be_pending",
  "unit_invalid",
  "code_must_not_be_zero",
  "amount_must_not_be_negative",
  "amount_must_not_be_zero",
  "amount_exceeds_max",
  "references_invalid",
  "debit_account_not_found",
  "credit_account_not_found",
  "accounts_must_have_the_same_unit",
  "transfer_must_have_the_same_unit_as_accounts",
  "pending_transfer_not_found",
  "pending_transfer_not_pending",
  "pending_transfer_has_different_debit_account_id",
  "pending_transfer_has_different_credit_account_id",
  "pending_transfer_has_different_unit",
  "pending_transfer_has_different_code",
  "exceeds_pending_transfer_amount",
  "pending_transfer_has_different_amount",
  "pending_transfer_already_posted",
  "pending_transfer_already_voided",
  "pending_transfer_expired",
  "imported_event_timestamp_must_not_regress",
  "imported_event_timestamp_must_postdate_debit_account",
  "imported_event_timestamp_must_postdate_credit_account",
  "imported_event_timeout_must_be_zero",
  "debit_account_already_closed",
  "credit_account_already_closed",
  "overflows_debits_pending",
  "overflows_credits_pending",
  "overflows_debits_posted",
  "overflows_credits_posted",
  "overflows_debits",
  "overflows_credits",
  "overflows_timeout",
  "exceeds_credits",
  "exceeds_debits",
] as const;
export type CreateTransferResult = (typeof CREATE_TRANSFER_RESULTS)[number];

/**
 * The transient results of TigerBeetle 0.16 (`CreateTransferResult.transient()` in
 * src/tigerbeetle.zig): outcomes that depend on the ledger's state at the time, so that the same
 * request could succeed later. A transfer id that fails with one of these is remembered and any
 * later transfer with that id answers id_already_failed (the id is spent; retry with a new id).
 * Every other failure depends only on the request (or on a final state) and is not remembered.
 */
export const TRANSIENT_TRANSFER_RESULTS: ReadonlySet<CreateTransferResult> = new Set<CreateTransferResult>([
  "debit_account_not_found",
  "credit_account_not_found",
  "pending_transfer_not_found",
  "exceeds_credits",
  "exceeds_debits",
  "debit_account_already_closed",
  "credit_account_already_closed",
]);

/** True for results after which the item is (or already was) stored: ok and exists. */
export function isSuccess(r: CreateAccountResult | CreateTransferResult): boolean {
  return r === "ok" || r === "exists";
}

export interface CreateAccountItemResult {
  result: CreateAccountResult;
  id: string;
  /** The account's creation time when ok / exists. */
  timestampUs: bigint | null;
}

export interface CreateTransferItemResult {
  result: CreateTransferResult;
  id: string;
  /** The stored transfer's amount when ok / exists, else 0n. */
  amountNanos: bigint;
  /** The stored transfer's time when ok / exists. */
  timestampUs: bigint | null;
}
