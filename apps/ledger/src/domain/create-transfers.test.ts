import { describe, expect, it } from "vitest";
import { createAccounts } from "./create-accounts.js";
import { createTransfers, expireDue } from "./create-transfers.js";
import type { CreateTransferResult } from "./results.js";
import { CREATE_TRANSFER_RESULTS } from "./results.js";
import { newAccount, newTransfer, testClock } from "./test-helpers.js";
import type { Account, NewTransfer } from "./types.js";
import { NO_ACCOUNT_FLAGS } from "./types.js";
import { verifyLedger, addTransferToSums } from "./verify.js";
import { WorkingSet } from "./working-set.js";
import { LedgerClock } from "./clock.js";

const INT64_MAX = 9_223_372_036_854_775_807n;

function account(id: string, over: Partial<Account> = {}): Account {
  return {
    id,
    unit: "USD",
    code: 2100,
    flags: { ...NO_ACCOUNT_FLAGS, ...over.flags },
    metadata: {},
    debitsPendingNanos: 0n,
    debitsPostedNanos: 0n,
    creditsPendingNanos: 0n,
    creditsPostedNanos: 0n,
    timestampUs: 1n,
    ...over,
  };
}

/** acct_a, acct_b: plain USD; acct_w: wallet (debits<=credits) holding 100; acct_h: credits<=debits with 50 debited; acct_e: EUR; acct_big: near int64. */
function fixture() {
  const clock = testClock();
  const ws = new WorkingSet({
    accounts: [
      account("acct_a", { creditsPostedNanos: 0n, debitsPostedNanos: 100n }),
      account("acct_b"),
      account("acct_w", { creditsPostedNanos: 100n, flags: { ...NO_ACCOUNT_FLAGS, debitsMustNotExceedCredits: true } }),
      account("acct_h", { debitsPostedNanos: 50n, flags: { ...NO_ACCOUNT_FLAGS, creditsMustNotExceedDebits: true } }),
      account("acct_e", { unit: "EUR" }),
      account("acct_big", { debitsPostedNanos: INT64_MAX - 5n, creditsPostedNanos: INT64_MAX - 5n }),
      account("acct_bigp", { debitsPendingNanos: INT64_MAX - 5n, creditsPendingNanos: INT64_MAX - 5n }),
      // pending and posted each at half: neither alone overflows, their sum does
      account("acct_both", { debitsPendingNanos: INT64_MAX / 2n, debitsPostedNanos: INT64_MAX / 2n, creditsPendingNanos: INT64_MAX / 2n, creditsPostedNanos: INT64_MAX / 2n }),
      // Created at 50 µs (the clock starts at 0, so imported transfers can land between 1 and 50).
      account("acct_late", { timestampUs: 50n }),
    ],
    transfers: [],
    pendingStatuses: [],
  });
  return { ws, clock };
}

function run(ws: WorkingSet, clock: ReturnType<typeof testClock>, items: NewTransfer[]): CreateTransferResult[] {
  return createTransfers(ws, items, clock).map((r) => r.result);
}

const pend = (id: string, over: Partial<Omit<NewTransfer, "flags">> & { flags?: Partial<NewTransfer["flags"]> } = {}) =>
  newTransfer(id, { debitAccountId: "acct_w", creditAccountId: "acct_b", amountNanos: 40n, ...over, flags: { pending: true, ...(over.flags ?? {}) } });

interface Row {
  name: string;
  setup?: NewTransfer[];
  item: NewTransfer;
  want: CreateTransferResult;
}

const PAST_US = 1_600_000_000_000_000n;
const imp = (id: string, us: bigint, over: Parameters<typeof newTransfer>[1] = {}) =>
  newTransfer(id, { ...over, timestampUs: us, flags: { ...(over.flags ?? {}), imported: true } });
const postOf = (id: string, pendingId: string, flags: Partial<NewTransfer["flags"]> = {}) =>
  newTransfer(id, { pendingId, debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { postPendingTransfer: true, ...flags } });
const voidOf = (id: string, pendingId: string, flags: Partial<NewTransfer["flags"]> = {}) =>
  newTransfer(id, { pendingId, debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { voidPendingTransfer: true, ...flags } });

const rows: Row[] = [
  { name: "a plain transfer is ok", item: newTransfer("t1"), want: "ok" },
  { name: "a timestamp on a transfer that is not imported is timestamp_must_be_zero (before id_invalid)", item: newTransfer("", { timestampUs: 5n }), want: "timestamp_must_be_zero" },
  { name: "an imported transfer without a timestamp is imported_event_timestamp_out_of_range", item: imp("t1", 0n), want: "imported_event_timestamp_out_of_range" },
  { name: "an imported transfer before the epoch is imported_event_timestamp_out_of_range", item: imp("t1", -1n), want: "imported_event_timestamp_out_of_range" },
  { name: "an imported transfer timed at the ledger's clock is imported_event_timestamp_must_not_advance (before id_invalid)", item: imp("", 1_700_000_000_000_000n), want: "imported_event_timestamp_must_not_advance" },
  { name: "an imported transfer in the past, after everything, is ok", item: imp("t1", PAST_US), want: "ok" },
  { name: "an imported transfer before the last ledger timestamp is imported_event_timestamp_must_not_regress", setup: [newTransfer("t0")], item: imp("t1", PAST_US), want: "imported_event_timestamp_must_not_regress" },
  { name: "amount_must_not_be_zero outranks imported_event_timestamp_must_not_regress", setup: [newTransfer("t0")], item: imp("t1", PAST_US, { amountNanos: 0n }), want: "amount_must_not_be_zero" },
  { name: "imported_event_timestamp_must_not_regress comes after the unit checks", setup: [newTransfer("t0")], item: imp("t1", PAST_US, { debitAccountId: "acct_w", amountNanos: 1000n }), want: "imported_event_timestamp_must_not_regress" },
  { name: "an imported transfer not after its debit account's creation is imported_event_timestamp_must_postdate_debit_account", item: imp("t1", 10n, { debitAccountId: "acct_late" }), want: "imported_event_timestamp_must_postdate_debit_account" },
  { name: "an imported transfer not after its credit account's creation is imported_event_timestamp_must_postdate_credit_account", item: imp("t1", 10n, { creditAccountId: "acct_late" }), want: "imported_event_timestamp_must_postdate_credit_account" },
  { name: "an imported pending transfer with a timeout is imported_event_timeout_must_be_zero", item: imp("t1", PAST_US, { timeoutSeconds: 5, flags: { pending: true } }), want: "imported_event_timeout_must_be_zero" },
  { name: "imported_event_timeout_must_be_zero outranks exceeds_credits", item: imp("t1", PAST_US, { debitAccountId: "acct_w", amountNanos: 1000n, timeoutSeconds: 5, flags: { pending: true } }), want: "imported_event_timeout_must_be_zero" },
  { name: "closing_debit on a plain transfer is closing_transfer_must_be_pending (before unit_invalid)", item: newTransfer("t1", { unit: "XYZ1", flags: { closingDebit: true } }), want: "closing_transfer_must_be_pending" },
  { name: "closing_credit on a plain transfer is closing_transfer_must_be_pending", item: newTransfer("t1", { flags: { closingCredit: true } }), want: "closing_transfer_must_be_pending" },
  { name: "a timeout on a plain transfer outranks closing_transfer_must_be_pending", item: newTransfer("t1", { timeoutSeconds: 1, flags: { closingCredit: true } }), want: "timeout_reserved_for_pending_transfer" },
  { name: "closing + void flags are mutually exclusive", item: voidOf("t1", "p", { closingDebit: true }), want: "flags_are_mutually_exclusive" },
  { name: "a pending closing_debit transfer is ok", item: pend("c1", { flags: { pending: true, closingDebit: true } }), want: "ok" },
  { name: "a transfer from a closed account is debit_account_already_closed (before exceeds_credits)", setup: [pend("c1", { flags: { pending: true, closingDebit: true } })], item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 1000n }), want: "debit_account_already_closed" },
  { name: "a transfer to a closed account is credit_account_already_closed", setup: [pend("c1", { flags: { pending: true, closingCredit: true } })], item: newTransfer("t1", { debitAccountId: "acct_a", creditAccountId: "acct_b" }), want: "credit_account_already_closed" },
  { name: "accounts_must_have_the_same_unit outranks debit_account_already_closed", setup: [pend("c1", { flags: { pending: true, closingDebit: true } })], item: newTransfer("t1", { debitAccountId: "acct_w", creditAccountId: "acct_e" }), want: "accounts_must_have_the_same_unit" },
  { name: "posting the closing transfer of a closed account is debit_account_already_closed", setup: [pend("c1", { flags: { pending: true, closingDebit: true } })], item: postOf("t1", "c1"), want: "debit_account_already_closed" },
  { name: "posting another pending transfer into a closed account is credit_account_already_closed", setup: [pend("p1"), pend("c1", { debitAccountId: "acct_a", flags: { pending: true, closingCredit: true } })], item: postOf("t1", "p1"), want: "credit_account_already_closed" },
  { name: "voiding a pending transfer of a closed account is ok", setup: [pend("p1"), pend("c1", { flags: { pending: true, closingDebit: true } })], item: voidOf("t1", "p1"), want: "ok" },
  { name: "a closing flag makes a retry exists_with_different_flags", setup: [pend("p1")], item: pend("p1", { flags: { pending: true, closingDebit: true } }), want: "exists_with_different_flags" },
  { name: "an empty id is id_invalid (before everything else)", item: newTransfer("", { amountNanos: 0n, debitAccountId: "" }), want: "id_invalid" },
  { name: "an id with a space is id_invalid", item: newTransfer("x y"), want: "id_invalid" },
  { name: "an id of 129 characters is id_invalid", item: newTransfer("x".repeat(129)), want: "id_invalid" },
  { name: "an id of 128 characters is ok", item: newTransfer("x".repeat(128)), want: "ok" },
  { name: "the same transfer again is exists", setup: [newTransfer("t1")], item: newTransfer("t1"), want: "exists" },
  {
    name: "exists_with_different_flags outranks every other difference",
    setup: [newTransfer("t1")],
    item: newTransfer("t1", { amountNanos: 11n, code: 21, flags: { pending: true } }),
    want: "exists_with_different_flags",
  },
  { name: "exists_with_different_timeout", setup: [pend("p1")], item: pend("p1", { timeoutSeconds: 5, amountNanos: 1n }), want: "exists_with_different_timeout" },
  { name: "exists_with_different_debit_account_id", setup: [newTransfer("t1")], item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 3n }), want: "exists_with_different_debit_account_id" },
  { name: "exists_with_different_credit_account_id", setup: [newTransfer("t1")], item: newTransfer("t1", { creditAccountId: "acct_w", amountNanos: 3n }), want: "exists_with_different_credit_account_id" },
  { name: "exists_with_different_amount outranks references, unit and code", setup: [newTransfer("t1")], item: newTransfer("t1", { amountNanos: 3n, code: 9, references: { a: "b" } }), want: "exists_with_different_amount" },
  { name: "exists_with_different_references", setup: [newTransfer("t1")], item: newTransfer("t1", { references: { event_id: "evt_1" }, code: 9 }), want: "exists_with_different_references" },
  { name: "exists_with_different_code", setup: [newTransfer("t1")], item: newTransfer("t1", { code: 9 }), want: "exists_with_different_code" },
  { name: "exists outranks a failure the retry would now meet (account drained since)", setup: [newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 100n })], item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 100n }), want: "exists" },
  { name: "pending + post flags are mutually exclusive", item: newTransfer("t1", { flags: { pending: true, postPendingTransfer: true } }), want: "flags_are_mutually_exclusive" },
  { name: "post + void flags are mutually exclusive", item: newTransfer("t1", { pendingId: "p", flags: { voidPendingTransfer: true, postPendingTransfer: true } }), want: "flags_are_mutually_exclusive" },
  { name: "balancing + void flags are mutually exclusive", item: newTransfer("t1", { pendingId: "p", flags: { voidPendingTransfer: true, balancingDebit: true } }), want: "flags_are_mutually_exclusive" },
  { name: "an empty debit account outside post/void is debit_account_id_invalid", item: newTransfer("t1", { debitAccountId: "", creditAccountId: "" }), want: "debit_account_id_invalid" },
  { name: "an empty credit account is credit_account_id_invalid", item: newTransfer("t1", { creditAccountId: "" }), want: "credit_account_id_invalid" },
  { name: "equal accounts are accounts_must_be_different (before amount checks)", item: newTransfer("t1", { creditAccountId: "acct_a", amountNanos: -1n }), want: "accounts_must_be_different" },
  { name: "a pending id on a plain transfer is pending_id_must_be_empty", item: newTransfer("t1", { pendingId: "p1" }), want: "pending_id_must_be_empty" },
  { name: "a post without pending id is pending_id_invalid", item: newTransfer("t1", { flags: { postPendingTransfer: true } }), want: "pending_id_invalid" },
  { name: "a post naming itself is pending_id_must_be_different", item: newTransfer("t1", { pendingId: "t1", flags: { postPendingTransfer: true } }), want: "pending_id_must_be_different" },
  { name: "a timeout on a plain transfer is timeout_reserved_for_pending_transfer", item: newTransfer("t1", { timeoutSeconds: 3 }), want: "timeout_reserved_for_pending_transfer" },
  { name: "an unknown unit is unit_invalid", item: newTransfer("t1", { unit: "XYZ1" }), want: "unit_invalid" },
  { name: "code 0 is code_must_not_be_zero", item: newTransfer("t1", { code: 0, amountNanos: 0n }), want: "code_must_not_be_zero" },
  { name: "a negative amount is amount_must_not_be_negative", item: newTransfer("t1", { amountNanos: -5n }), want: "amount_must_not_be_negative" },
  { name: "a zero amount is amount_must_not_be_zero", item: newTransfer("t1", { amountNanos: 0n, references: { ["k".repeat(65)]: "v" } }), want: "amount_must_not_be_zero" },
  { name: "an amount above 10^18 is amount_exceeds_max", item: newTransfer("t1", { amountNanos: 10n ** 18n + 1n }), want: "amount_exceeds_max" },
  { name: "an amount of exactly 10^18 passes the bound (then meets the wallet floor)", item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 10n ** 18n }), want: "exceeds_credits" },
  // PostgreSQL's JSONB refuses NUL, and an unpaired surrogate has no UTF-8 form: both would fail the whole group commit.
  { name: "a NUL in a reference value is references_invalid", item: newTransfer("t1", { references: { event_id: "evt\u0000" } }), want: "references_invalid" },
  { name: "a NUL in a reference key is references_invalid", item: newTransfer("t1", { references: { "event\u0000id": "evt_1" } }), want: "references_invalid" },
  { name: "an unpaired high surrogate in a reference value is references_invalid", item: newTransfer("t1", { references: { event_id: "a\ud800b" } }), want: "references_invalid" },
  { name: "an unpaired low surrogate in a reference key is references_invalid", item: newTransfer("t1", { references: { "\udc00k": "v" } }), want: "references_invalid" },
  { name: "a surrogate pair (emoji) in a reference is ok", item: newTransfer("t1", { references: { "\u{1F600}": "\u{1F600}" } }), want: "ok" },
  { name: "nine references is references_invalid", item: newTransfer("t1", { references: Object.fromEntries([...Array(9).keys()].map((i) => [`k${i}`, "v"])) }), want: "references_invalid" },
  { name: "an unknown debit account is debit_account_not_found", item: newTransfer("t1", { debitAccountId: "acct_x", creditAccountId: "acct_y" }), want: "debit_account_not_found" },
  { name: "an unknown credit account is credit_account_not_found", item: newTransfer("t1", { creditAccountId: "acct_y" }), want: "credit_account_not_found" },
  { name: "accounts of different units is accounts_must_have_the_same_unit", item: newTransfer("t1", { creditAccountId: "acct_e" }), want: "accounts_must_have_the_same_unit" },
  { name: "a transfer unit other than the accounts' is transfer_must_have_the_same_unit_as_accounts", item: newTransfer("t1", { unit: "EUR" }), want: "transfer_must_have_the_same_unit_as_accounts" },
  { name: "posting an unknown pending transfer is pending_transfer_not_found", item: newTransfer("t2", { pendingId: "nope", debitAccountId: "", creditAccountId: "", unit: "", code: 0, flags: { postPendingTransfer: true } }), want: "pending_transfer_not_found" },
  { name: "posting a plain transfer is pending_transfer_not_pending", setup: [newTransfer("t1")], item: newTransfer("t2", { pendingId: "t1", flags: { postPendingTransfer: true } }), want: "pending_transfer_not_pending" },
  { name: "a post naming another debit account is pending_transfer_has_different_debit_account_id", setup: [pend("p1")], item: newTransfer("t2", { pendingId: "p1", flags: { postPendingTransfer: true } }), want: "pending_transfer_has_different_debit_account_id" },
  { name: "a post naming another credit account", setup: [pend("p1")], item: newTransfer("t2", { pendingId: "p1", debitAccountId: "acct_w", creditAccountId: "acct_a", flags: { postPendingTransfer: true } }), want: "pending_transfer_has_different_credit_account_id" },
  { name: "a post naming another unit", setup: [pend("p1")], item: newTransfer("t2", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "EUR", flags: { postPendingTransfer: true } }), want: "pending_transfer_has_different_unit" },
  { name: "a post naming another code", setup: [pend("p1")], item: newTransfer("t2", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 77, flags: { postPendingTransfer: true } }), want: "pending_transfer_has_different_code" },
  { name: "posting more than pending is exceeds_pending_transfer_amount", setup: [pend("p1")], item: newTransfer("t2", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 41n, flags: { postPendingTransfer: true } }), want: "exceeds_pending_transfer_amount" },
  { name: "voiding more than pending is exceeds_pending_transfer_amount (TigerBeetle 0.16 checks it for a void too)", setup: [pend("p1")], item: { ...voidOf("t2", "p1"), amountNanos: 41n }, want: "exceeds_pending_transfer_amount" },
  { name: "voiding part of a pending transfer is pending_transfer_has_different_amount", setup: [pend("p1")], item: newTransfer("t2", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 39n, flags: { voidPendingTransfer: true } }), want: "pending_transfer_has_different_amount" },
  { name: "posting a posted transfer is pending_transfer_already_posted", setup: [pend("p1"), newTransfer("t2", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { postPendingTransfer: true } })], item: newTransfer("t3", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { voidPendingTransfer: true } }), want: "pending_transfer_already_posted" },
  { name: "voiding a voided transfer is pending_transfer_already_voided", setup: [pend("p1"), newTransfer("t2", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { voidPendingTransfer: true } })], item: newTransfer("t3", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { postPendingTransfer: true } }), want: "pending_transfer_already_voided" },
  { name: "a pending transfer past int64 posted debits is overflows_debits_posted (TigerBeetle checks posted for pending too)", item: newTransfer("t1", { debitAccountId: "acct_big", flags: { pending: true }, amountNanos: 6n }), want: "overflows_debits_posted" },
  { name: "a pending transfer past int64 posted credits is overflows_credits_posted", item: newTransfer("t1", { creditAccountId: "acct_big", flags: { pending: true }, amountNanos: 6n }), want: "overflows_credits_posted" },
  { name: "a pending transfer whose pending + posted debits pass int64 is overflows_debits", item: newTransfer("t1", { debitAccountId: "acct_both", flags: { pending: true }, amountNanos: 6n }), want: "overflows_debits" },
  { name: "a pending transfer past int64 pending debits is overflows_debits_pending", item: newTransfer("t1", { debitAccountId: "acct_bigp", flags: { pending: true }, amountNanos: 6n }), want: "overflows_debits_pending" },
  { name: "a pending transfer past int64 pending credits is overflows_credits_pending", item: newTransfer("t1", { creditAccountId: "acct_bigp", flags: { pending: true }, amountNanos: 6n }), want: "overflows_credits_pending" },
  { name: "a transfer whose pending + posted credits pass int64 is overflows_credits", item: newTransfer("t1", { creditAccountId: "acct_both", flags: { pending: true }, amountNanos: 6n }), want: "overflows_credits" },
  { name: "a plain transfer past int64 posted debits is overflows_debits_posted", item: newTransfer("t1", { debitAccountId: "acct_big", amountNanos: 6n }), want: "overflows_debits_posted" },
  { name: "a plain transfer past int64 posted credits is overflows_credits_posted", item: newTransfer("t1", { creditAccountId: "acct_big", amountNanos: 6n }), want: "overflows_credits_posted" },
  { name: "a plain transfer that fits is ok on an account near int64", item: newTransfer("t1", { creditAccountId: "acct_big", amountNanos: 5n }), want: "ok" },
  { name: "a wallet debit past its credits is exceeds_credits", item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 101n }), want: "exceeds_credits" },
  { name: "a wallet debit of exactly its credits is ok", item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 100n }), want: "ok" },
  { name: "pending debits count against the wallet", setup: [pend("p1", { amountNanos: 70n })], item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 31n }), want: "exceeds_credits" },
  { name: "a credit past a credits<=debits account's debits is exceeds_debits", item: newTransfer("t1", { creditAccountId: "acct_h", amountNanos: 51n }), want: "exceeds_debits" },
  { name: "balancing_debit on an empty wallet is exceeds_credits", setup: [newTransfer("t0", { debitAccountId: "acct_w", amountNanos: 100n })], item: newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 5n, flags: { balancingDebit: true } }), want: "exceeds_credits" },
  { name: "a closing balancing_debit on an empty wallet is ok (it moves 0 and closes the wallet)", setup: [newTransfer("t0", { debitAccountId: "acct_w", amountNanos: 100n })], item: pend("t1", { amountNanos: 5n, flags: { pending: true, balancingDebit: true, closingDebit: true } }), want: "ok" },
  { name: "a closing balancing_credit that can take nothing is ok (it moves 0)", setup: [newTransfer("t0", { creditAccountId: "acct_h", amountNanos: 50n })], item: newTransfer("t1", { creditAccountId: "acct_h", amountNanos: 5n, flags: { pending: true, balancingCredit: true, closingCredit: true } }), want: "ok" },
  { name: "balancing_credit when nothing can be taken is exceeds_debits", setup: [newTransfer("t0", { creditAccountId: "acct_h", amountNanos: 50n })], item: newTransfer("t1", { creditAccountId: "acct_h", amountNanos: 5n, flags: { balancingCredit: true } }), want: "exceeds_debits" },
];

describe("createTransfers result precedence", () => {
  it("lists every result code once, ok first", () => {
    expect(new Set(CREATE_TRANSFER_RESULTS).size).toBe(CREATE_TRANSFER_RESULTS.length);
    expect(CREATE_TRANSFER_RESULTS[0]).toBe("ok");
  });

  for (const row of rows) {
    it(`${row.name}`, () => {
      const { ws, clock } = fixture();
      if (row.setup) {
        const setup = run(ws, clock, row.setup);
        expect(setup.every((r) => r === "ok")).toBe(true);
      }
      const before = ws.newTransfers.length;
      const [got] = run(ws, clock, [row.item]);
      expect(got).toBe(row.want);
      if (got !== "ok") expect(ws.newTransfers.length).toBe(before);
    });
  }
});

describe("createTransfers semantics", () => {
  it("moves posted balances on both accounts and stamps strictly increasing times", () => {
    const { ws, clock } = fixture();
    const res = createTransfers(ws, [newTransfer("t1", { amountNanos: 7n }), newTransfer("t2", { amountNanos: 3n })], clock);
    expect(res.map((r) => r.result)).toEqual(["ok", "ok"]);
    expect(res[1]!.timestampUs! > res[0]!.timestampUs!).toBe(true);
    expect(ws.accounts.get("acct_a")!.debitsPostedNanos).toBe(110n);
    expect(ws.accounts.get("acct_b")!.creditsPostedNanos).toBe(10n);
  });

  it("applies a linked chain all or nothing: one failure fails the chain, the rest of the batch goes on", () => {
    const { ws, clock } = fixture();
    const res = run(ws, clock, [
      newTransfer("c1", { debitAccountId: "acct_w", amountNanos: 60n, flags: { linked: true } }),
      newTransfer("c2", { debitAccountId: "acct_w", amountNanos: 60n }),
      newTransfer("t3", { amountNanos: 1n }),
    ]);
    expect(res).toEqual(["linked_event_failed", "exceeds_credits", "ok"]);
    expect(ws.accounts.get("acct_w")!.debitsPostedNanos).toBe(0n);
    expect(ws.transfers.has("c1")).toBe(false);
    expect(ws.newTransfers.map((t) => t.id)).toEqual(["t3"]);
  });

  it("fails a chain left open at the end of the batch: chain_open on the last item, linked_event_failed on the others", () => {
    const { ws, clock } = fixture();
    const res = run(ws, clock, [newTransfer("t0"), newTransfer("c1", { flags: { linked: true } }), newTransfer("c2", { flags: { linked: true } })]);
    expect(res).toEqual(["ok", "linked_event_failed", "linked_event_chain_open"]);
    expect(ws.transfers.has("c1")).toBe(false);
  });

  it("answers linked_event_chain_open on the last item of an open chain also when an earlier item broke it (TigerBeetle's order: chain open before chain broken)", () => {
    const { ws, clock } = fixture();
    const res = run(ws, clock, [
      newTransfer("c1", { debitAccountId: "acct_w", amountNanos: 1_000_000n, flags: { linked: true } }),
      newTransfer("c2", { amountNanos: 0n, flags: { linked: true } }),
      newTransfer("c3", { flags: { linked: true } }),
    ]);
    expect(res).toEqual(["exceeds_credits", "linked_event_failed", "linked_event_chain_open"]);
    expect(ws.newTransfers).toEqual([]);
  });

  it("lets a failed chain's ids be used again later in the same batch", () => {
    const { ws, clock } = fixture();
    const res = run(ws, clock, [
      newTransfer("c1", { flags: { linked: true } }),
      newTransfer("c2", { amountNanos: 0n }),
      newTransfer("c1"),
    ]);
    expect(res).toEqual(["linked_event_failed", "amount_must_not_be_zero", "ok"]);
  });

  it("treats exists as success inside a chain, so a retried chain reports exists on every item", () => {
    const { ws, clock } = fixture();
    const chain = [newTransfer("c1", { flags: { linked: true } }), pend("c2", { flags: { linked: true, pending: true } }), newTransfer("c3")];
    expect(run(ws, clock, chain)).toEqual(["ok", "ok", "ok"]);
    const snapshot = JSON.stringify([...ws.accounts.values()], (_k, v) => (typeof v === "bigint" ? v.toString() : v));
    expect(run(ws, clock, chain)).toEqual(["exists", "exists", "exists"]);
    expect(JSON.stringify([...ws.accounts.values()], (_k, v) => (typeof v === "bigint" ? v.toString() : v))).toBe(snapshot);
  });

  it("rolls back a post inside a failed chain: the pending transfer stays pending", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1")]);
    const res = run(ws, clock, [
      newTransfer("post1", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { postPendingTransfer: true, linked: true } }),
      newTransfer("bad", { amountNanos: 0n }),
    ]);
    expect(res).toEqual(["linked_event_failed", "amount_must_not_be_zero"]);
    expect(ws.pending.get("p1")!.state).toBe("pending");
    expect(ws.accounts.get("acct_w")!.debitsPendingNanos).toBe(40n);
    expect(ws.accounts.get("acct_w")!.debitsPostedNanos).toBe(0n);
  });

  it("posts part of a pending amount and releases the rest", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1")]);
    expect(ws.accounts.get("acct_w")!.debitsPendingNanos).toBe(40n);
    const [r] = createTransfers(ws, [newTransfer("post1", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 25n, flags: { postPendingTransfer: true } })], clock);
    expect(r!.result).toBe("ok");
    expect(r!.amountNanos).toBe(25n);
    const w = ws.accounts.get("acct_w")!;
    expect([w.debitsPendingNanos, w.debitsPostedNanos]).toEqual([0n, 25n]);
    const b = ws.accounts.get("acct_b")!;
    expect([b.creditsPendingNanos, b.creditsPostedNanos]).toEqual([0n, 25n]);
    expect(ws.pending.get("p1")!.state).toBe("posted");
  });

  it("posts the whole pending amount when the post's amount is 0, and voids release it all", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1"), pend("p2", { amountNanos: 30n })]);
    const res = createTransfers(ws, [
      newTransfer("post1", { pendingId: "p1", debitAccountId: "acct_w", creditAccountId: "acct_b", amountNanos: 0n, flags: { postPendingTransfer: true } }),
      newTransfer("void2", { pendingId: "p2", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 30n, flags: { voidPendingTransfer: true } }),
    ], clock);
    expect(res.map((r) => [r.result, r.amountNanos])).toEqual([["ok", 40n], ["ok", 30n]]);
    const w = ws.accounts.get("acct_w")!;
    expect([w.debitsPendingNanos, w.debitsPostedNanos]).toEqual([0n, 40n]);
    expect(ws.pending.get("p2")!.state).toBe("voided");
  });

  it("expires a pending transfer after its timeout: the sweep releases it and a later post gets pending_transfer_expired", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1", { timeoutSeconds: 10 }), pend("p2", { timeoutSeconds: 100, amountNanos: 1n })]);
    clock.advanceSeconds(9);
    expect(expireDue(ws, ["p1", "p2"], clock)).toBe(0);
    clock.advanceSeconds(2);
    expect(expireDue(ws, ["p1", "p2"], clock)).toBe(1);
    expect(ws.pending.get("p1")!.state).toBe("expired");
    expect(ws.accounts.get("acct_w")!.debitsPendingNanos).toBe(1n);
    const post = newTransfer("post1", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { postPendingTransfer: true } });
    expect(run(ws, clock, [post])).toEqual(["pending_transfer_expired"]);
  });

  it("expires an overdue pending transfer on a post even before the sweep reached it", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1", { timeoutSeconds: 1 })]);
    clock.advanceSeconds(2);
    const voidIt = newTransfer("v1", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 0n, flags: { voidPendingTransfer: true } });
    expect(run(ws, clock, [voidIt])).toEqual(["pending_transfer_expired"]);
    expect(ws.pending.get("p1")!.state).toBe("expired");
    expect(ws.accounts.get("acct_w")!.debitsPendingNanos).toBe(0n);
  });

  it("stamps a post with the time its expiry was checked against: with a wall clock that moves on every read, it never lands on the expiry instant", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1", { timeoutSeconds: 1 })]);
    const expiresAt = ws.pending.get("p1")!.expiresAtUs!;
    // The wall clock reads expiresAt - 1 first and 1 µs more on every later read.
    let reads = 0n;
    const moving = new LedgerClock(clock.last, () => expiresAt - 1n + reads++);
    const [r] = createTransfers(ws, [postOf("t1", "p1")], moving);
    // TigerBeetle: expires_at <= the transfer's timestamp is pending_transfer_expired. The post was
    // checked at expiresAt - 1, so it is ok and stamped expiresAt - 1 (it was stamped expiresAt before).
    expect([r!.result, r!.timestampUs]).toEqual(["ok", expiresAt - 1n]);
    expect(ws.pending.get("p1")!.state).toBe("posted");
    // At the instant itself: expired.
    run(ws, clock, [pend("p2", { amountNanos: 10n, timeoutSeconds: 1 })]);
    const expiresAt2 = ws.pending.get("p2")!.expiresAtUs!;
    reads = 0n;
    const atExpiry = new LedgerClock(clock.last, () => expiresAt2 + reads++);
    expect(createTransfers(ws, [voidOf("v2", "p2")], atExpiry).map((x) => x.result)).toEqual(["pending_transfer_expired"]);
  });

  it("stamps an expiry (inline or by the sweep) at or after its expires_at, even when the wall clock steps back between reads", () => {
    for (const via of ["post", "sweep"] as const) {
      const { ws, clock } = fixture();
      run(ws, clock, [pend("p1", { timeoutSeconds: 1 })]);
      const expiresAt = ws.pending.get("p1")!.expiresAtUs!;
      // The first read is 1 s past the expiry; then the wall clock steps back 1.5 s (NTP).
      const reads = [expiresAt + 1_000_000n, expiresAt - 500_000n];
      const stepping = new LedgerClock(clock.last, () => (reads.length > 1 ? reads.shift()! : reads[0]!));
      if (via === "post") expect(createTransfers(ws, [postOf("t1", "p1")], stepping).map((x) => x.result)).toEqual(["pending_transfer_expired"]);
      else expect(expireDue(ws, ["p1"], stepping)).toBe(1);
      const s = ws.pending.get("p1")!;
      expect(s.state).toBe("expired");
      expect(s.resolvedAtUs! >= expiresAt).toBe(true);
    }
  });

  it("checks a pending transfer's timeout overflow against the timestamp it gets", () => {
    const { ws } = fixture();
    // int64 µs max minus the timeout: the first read fits exactly, the second would overflow.
    const timeout = 10;
    let reads = 0n;
    const edge = INT64_MAX - BigInt(timeout) * 1_000_000n;
    const moving = new LedgerClock(0n, () => edge + reads++);
    const [r] = createTransfers(ws, [pend("p1", { timeoutSeconds: timeout })], moving);
    expect([r!.result, r!.timestampUs]).toEqual(["ok", edge]);
    expect(ws.pending.get("p1")!.expiresAtUs).toBe(INT64_MAX);
  });

  it("moves only what is available on balancing_debit and reports the amount moved", () => {
    const { ws, clock } = fixture();
    const [r] = createTransfers(ws, [newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 1000n, flags: { balancingDebit: true } })], clock);
    expect([r!.result, r!.amountNanos]).toEqual(["ok", 100n]);
    expect(ws.transfers.get("t1")!.amountRequestedNanos).toBe(1000n);
    // A retry with the requested amount is exists (idempotency compares what was sent).
    expect(run(ws, clock, [newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 1000n, flags: { balancingDebit: true } })])).toEqual(["exists"]);
  });

  it("moves at most the requested amount on balancing_credit", () => {
    const { ws, clock } = fixture();
    const [r] = createTransfers(ws, [newTransfer("t1", { creditAccountId: "acct_h", amountNanos: 20n, flags: { balancingCredit: true } })], clock);
    expect([r!.result, r!.amountNanos]).toEqual(["ok", 20n]);
  });

  it("records balance snapshots of history accounts only", () => {
    const clock = testClock();
    const ws = new WorkingSet();
    createAccounts(ws, [newAccount("acct_a"), newAccount("acct_h", { flags: { history: true } })], clock);
    run(ws, clock, [newTransfer("t1", { creditAccountId: "acct_h" }), pend("p1", { debitAccountId: "acct_a", creditAccountId: "acct_h", amountNanos: 5n })]);
    expect(ws.snapshots.map((s) => [s.accountId, s.creditsPostedNanos, s.creditsPendingNanos])).toEqual([
      ["acct_h", 10n, 0n],
      ["acct_h", 10n, 5n],
    ]);
  });

  it("keeps every invariant after a mixed batch (verifyLedger)", () => {
    const clock = testClock();
    const ws = new WorkingSet();
    createAccounts(ws, [newAccount("acct_a"), newAccount("acct_b"), newAccount("acct_w", { flags: { debitsMustNotExceedCredits: true } })], clock);
    run(ws, clock, [
      newTransfer("f", { debitAccountId: "acct_a", creditAccountId: "acct_w", amountNanos: 100n }),
      pend("p1"),
      pend("p2", { amountNanos: 10n }),
      newTransfer("post", { pendingId: "p1", debitAccountId: "", creditAccountId: "", unit: "", code: 0, amountNanos: 15n, flags: { postPendingTransfer: true } }),
      newTransfer("b", { debitAccountId: "acct_w", amountNanos: 999n, flags: { balancingDebit: true } }),
    ]);
    const sums = new Map();
    for (const t of ws.transfers.values()) addTransferToSums(sums, t, t.flags.pending && ws.pending.get(t.id)!.state === "pending");
    const report = verifyLedger(ws.accounts.values(), sums, ws.transfers.size);
    expect(report.violations).toEqual([]);
    expect(report.ok).toBe(true);
    expect(ws.accounts.get("acct_w")!.debitsPostedNanos + ws.accounts.get("acct_w")!.debitsPendingNanos).toBe(100n);
  });

  it("verifyLedger reports a stored balance that differs from its transfers", () => {
    const report = verifyLedger([account("acct_a", { debitsPostedNanos: 5n })], new Map(), 0);
    expect(report.ok).toBe(false);
    expect(report.violations.join("\n")).toMatch(/acct_a: stored debitsPostedNanos 5 != sum of transfers 0/);
    expect(report.violations.join("\n")).toMatch(/unit USD: posted debits 5 != posted credits 0/);
  });
});

describe("createTransfers spent ids (id_already_failed)", () => {
  it("spends the id of a transfer that failed with exceeds_credits: the retry after a top-up is id_already_failed, a new id is ok", () => {
    const { ws, clock } = fixture();
    const spend = newTransfer("t1", { debitAccountId: "acct_w", amountNanos: 150n });
    expect(run(ws, clock, [spend])).toEqual(["exceeds_credits"]);
    expect(run(ws, clock, [newTransfer("top", { creditAccountId: "acct_w", amountNanos: 100n })])).toEqual(["ok"]);
    expect(run(ws, clock, [spend])).toEqual(["id_already_failed"]);
    expect(run(ws, clock, [{ ...spend, id: "t1b" }])).toEqual(["ok"]);
    expect(ws.newFailedTransferIds.map((f) => [f.id, f.result])).toEqual([["t1", "exceeds_credits"]]);
  });

  it("spends ids on every transient result: account or pending transfer not found, exceeds_debits, a closed account", () => {
    const { ws, clock } = fixture();
    const items = [
      newTransfer("nf_dr", { debitAccountId: "acct_x" }),
      newTransfer("nf_cr", { creditAccountId: "acct_x" }),
      postOf("nf_p", "p_later"),
      newTransfer("x_dr", { creditAccountId: "acct_h", amountNanos: 51n }),
    ];
    expect(run(ws, clock, items)).toEqual(["debit_account_not_found", "credit_account_not_found", "pending_transfer_not_found", "exceeds_debits"]);
    run(ws, clock, [pend("c1", { flags: { pending: true, closingDebit: true } })]);
    expect(run(ws, clock, [newTransfer("closed_dr", { debitAccountId: "acct_w" })])).toEqual(["debit_account_already_closed"]);
    // The causes go away (the pending transfer now exists, the account reopens); the ids stay spent.
    run(ws, clock, [pend("p_later"), voidOf("v1", "c1")]);
    expect(ws.accounts.get("acct_w")!.flags.closed).toBe(false);
    expect(run(ws, clock, [...items, newTransfer("closed_dr", { debitAccountId: "acct_w" })])).toEqual(Array(5).fill("id_already_failed"));
  });

  it("does not spend the id of a failure that depends only on the request (or a final state)", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("p1"), voidOf("v1", "p1")]);
    expect(run(ws, clock, [newTransfer("t1", { amountNanos: 0n }), newTransfer("t2", { creditAccountId: "acct_e" }), postOf("t3", "p1")])).toEqual([
      "amount_must_not_be_zero",
      "accounts_must_have_the_same_unit",
      "pending_transfer_already_voided",
    ]);
    expect(run(ws, clock, [newTransfer("t1"), newTransfer("t2"), newTransfer("t3")])).toEqual(["ok", "ok", "ok"]);
    expect(ws.newFailedTransferIds).toEqual([]);
  });

  it("keeps the id spent when its linked chain is rolled back; the chain's other ids stay free", () => {
    const { ws, clock } = fixture();
    const res = run(ws, clock, [newTransfer("c1", { flags: { linked: true } }), newTransfer("c2", { debitAccountId: "acct_w", amountNanos: 101n })]);
    expect(res).toEqual(["linked_event_failed", "exceeds_credits"]);
    expect(run(ws, clock, [newTransfer("c1"), newTransfer("c2", { debitAccountId: "acct_w", amountNanos: 1n })])).toEqual(["ok", "id_already_failed"]);
  });

  it("answers id_already_failed to the same id later in the same batch, and exists outranks it", () => {
    const { ws, clock } = fixture();
    const bad = newTransfer("t1", { debitAccountId: "acct_x" });
    expect(run(ws, clock, [bad, newTransfer("t1")])).toEqual(["debit_account_not_found", "id_already_failed"]);
    const ws2 = new WorkingSet({ accounts: [], transfers: [], pendingStatuses: [], failedTransferIds: ["t9"] });
    expect(createTransfers(ws2, [newTransfer("t9", { amountNanos: 0n, debitAccountId: "" })], clock).map((r) => r.result)).toEqual(["id_already_failed"]);
  });
});

describe("createTransfers closing accounts", () => {
  it("closes the debit account with a pending closing_debit transfer and reopens it when voided", () => {
    const { ws, clock } = fixture();
    expect(run(ws, clock, [pend("c1", { amountNanos: 1n, flags: { pending: true, closingDebit: true } })])).toEqual(["ok"]);
    expect(ws.accounts.get("acct_w")!.flags.closed).toBe(true);
    expect(ws.accounts.get("acct_b")!.flags.closed).toBe(false);
    expect(run(ws, clock, [newTransfer("in", { creditAccountId: "acct_w" })])).toEqual(["credit_account_already_closed"]);
    expect(run(ws, clock, [voidOf("v1", "c1")])).toEqual(["ok"]);
    expect(ws.accounts.get("acct_w")!.flags.closed).toBe(false);
    expect(run(ws, clock, [newTransfer("in2", { creditAccountId: "acct_w" })])).toEqual(["ok"]);
  });

  it("closes an empty wallet with the README recipe (pending balancing_debit + closing_debit): it moves 0; voiding reopens, expiry reopens", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [newTransfer("t0", { debitAccountId: "acct_w", amountNanos: 100n })]);
    const close = (id: string, timeoutSeconds = 0) => pend(id, { amountNanos: 1_000n, timeoutSeconds, flags: { pending: true, balancingDebit: true, closingDebit: true } });
    const [r] = createTransfers(ws, [close("c1")], clock);
    expect([r!.result, r!.amountNanos]).toEqual(["ok", 0n]);
    const w = () => ws.accounts.get("acct_w")!;
    expect([w().flags.closed, w().debitsPendingNanos, w().debitsPostedNanos, w().creditsPostedNanos]).toEqual([true, 0n, 100n, 100n]);
    expect(ws.newFailedTransferIds).toEqual([]);
    // A retry is exists (with the amount moved); nothing else moves the closed wallet; posting the close is refused.
    expect(createTransfers(ws, [close("c1")], clock).map((x) => [x.result, x.amountNanos])).toEqual([["exists", 0n]]);
    expect(run(ws, clock, [newTransfer("t1", { creditAccountId: "acct_w" }), postOf("t2", "c1")])).toEqual(["credit_account_already_closed", "debit_account_already_closed"]);
    // A void names the whole (zero) amount with 0; anything more exceeds it.
    expect(run(ws, clock, [{ ...voidOf("v0", "c1"), amountNanos: 1n }])).toEqual(["exceeds_pending_transfer_amount"]);
    expect(run(ws, clock, [voidOf("v1", "c1")])).toEqual(["ok"]);
    expect(w().flags.closed).toBe(false);
    // Closed again with a timeout: the expiry reopens it.
    expect(run(ws, clock, [close("c2", 1)])).toEqual(["ok"]);
    expect(w().flags.closed).toBe(true);
    clock.advanceSeconds(2);
    expect(expireDue(ws, ["c2"], clock)).toBe(1);
    expect(w().flags.closed).toBe(false);
    // Without a closing flag, a balancing transfer that can move nothing still fails.
    expect(run(ws, clock, [newTransfer("t3", { debitAccountId: "acct_w", amountNanos: 5n, flags: { balancingDebit: true } })])).toEqual(["exceeds_credits"]);
    expect([w().debitsPendingNanos, w().debitsPostedNanos, w().creditsPostedNanos]).toEqual([0n, 100n, 100n]);
  });

  it("reopens the account when the closing transfer expires (sweep)", () => {
    const { ws, clock } = fixture();
    run(ws, clock, [pend("c1", { creditAccountId: "acct_b", timeoutSeconds: 5, flags: { pending: true, closingCredit: true } })]);
    expect(ws.accounts.get("acct_b")!.flags.closed).toBe(true);
    clock.advanceSeconds(6);
    expect(expireDue(ws, ["c1"], clock)).toBe(1);
    expect(ws.accounts.get("acct_b")!.flags.closed).toBe(false);
  });

  it("rolls a close back with its failed chain", () => {
    const { ws, clock } = fixture();
    const res = run(ws, clock, [pend("c1", { flags: { pending: true, linked: true, closingDebit: true } }), newTransfer("bad", { amountNanos: 0n })]);
    expect(res).toEqual(["linked_event_failed", "amount_must_not_be_zero"]);
    expect(ws.accounts.get("acct_w")!.flags.closed).toBe(false);
    expect(ws.dirtyAccounts.has("acct_w")).toBe(false);
  });
});

describe("createTransfers imported", () => {
  it("takes the first item's imported flag for the whole request", () => {
    const { ws, clock } = fixture();
    expect(run(ws, clock, [imp("i1", 10n), newTransfer("t2")])).toEqual(["ok", "imported_event_expected"]);
    expect(run(ws, clock, [newTransfer("t3"), imp("i4", 1_699_999_000_000_000n)])).toEqual(["ok", "imported_event_not_expected"]);
  });

  it("stamps imported transfers with the caller's time, strictly increasing; later ledger times follow them", () => {
    const { ws, clock } = fixture();
    const res = createTransfers(ws, [imp("i1", PAST_US), imp("i2", PAST_US), imp("i3", PAST_US + 1n, { flags: { pending: true } })], clock);
    expect(res.map((r) => [r.result, r.timestampUs])).toEqual([["ok", PAST_US], ["imported_event_timestamp_must_not_regress", null], ["ok", PAST_US + 1n]]);
    expect(ws.transfers.get("i3")!.expiresAtUs).toBeNull();
    const [post] = createTransfers(ws, [postOf("i4", "i3", { imported: true })].map((t) => ({ ...t, timestampUs: PAST_US + 2n })), clock);
    expect([post!.result, post!.timestampUs]).toEqual(["ok", PAST_US + 2n]);
    const [later] = createTransfers(ws, [newTransfer("t5")], clock);
    expect(later!.timestampUs! > PAST_US + 2n).toBe(true);
    expect(ws.transfers.get("i1")!.flags.imported).toBe(true);
  });

  it("answers exists to a retried import (the timestamp is not compared)", () => {
    const { ws, clock } = fixture();
    expect(run(ws, clock, [imp("i1", PAST_US)])).toEqual(["ok"]);
    expect(run(ws, clock, [imp("i1", PAST_US - 5n)])).toEqual(["exists"]);
  });
});
