import { describe, expect, it } from "vitest";
import { createAccounts } from "./create-accounts.js";
import { CREATE_ACCOUNT_RESULTS, type CreateAccountResult } from "./results.js";
import { newAccount, testClock } from "./test-helpers.js";
import type { NewAccount } from "./types.js";
import { WorkingSet } from "./working-set.js";

interface Row {
  name: string;
  setup?: NewAccount[];
  item: NewAccount;
  want: CreateAccountResult;
}

const rows: Row[] = [
  { name: "a new account is ok", item: newAccount("acct_1"), want: "ok" },
  { name: "an empty id is id_invalid before bad flags", item: newAccount("", { flags: { debitsMustNotExceedCredits: true, creditsMustNotExceedDebits: true } }), want: "id_invalid" },
  { name: "both balance flags are flags_are_mutually_exclusive before a bad unit", item: newAccount("acct_1", { unit: "??", flags: { debitsMustNotExceedCredits: true, creditsMustNotExceedDebits: true } }), want: "flags_are_mutually_exclusive" },
  { name: "an unknown unit is unit_invalid before code 0", item: newAccount("acct_1", { unit: "usd", code: 0 }), want: "unit_invalid" },
  { name: "a credit type unit is ok", item: newAccount("acct_1", { unit: "cr_gpu_minutes" }), want: "ok" },
  { name: "code 0 is code_must_not_be_zero", item: newAccount("acct_1", { code: 0 }), want: "code_must_not_be_zero" },
  // TigerBeetle 0.16.4+: an existing id is compared before the item's own checks.
  { name: "a retry of an existing account with code 0 is exists_with_different_code", setup: [newAccount("acct_1")], item: newAccount("acct_1", { code: 0 }), want: "exists_with_different_code" },
  { name: "a retry of an existing account with both balance flags is exists_with_different_flags", setup: [newAccount("acct_1")], item: newAccount("acct_1", { flags: { debitsMustNotExceedCredits: true, creditsMustNotExceedDebits: true } }), want: "exists_with_different_flags" },
  { name: "a retry of an existing account with a bad unit is exists_with_different_unit", setup: [newAccount("acct_1")], item: newAccount("acct_1", { unit: "??" }), want: "exists_with_different_unit" },
  { name: "17 metadata entries is metadata_invalid", item: newAccount("acct_1", { metadata: Object.fromEntries([...Array(17).keys()].map((i) => [`k${i}`, "v"])) }), want: "metadata_invalid" },
  // PostgreSQL's JSONB refuses NUL, and an unpaired surrogate has no UTF-8 form: both would fail the whole group commit.
  { name: "a NUL in a metadata value is metadata_invalid", item: newAccount("acct_1", { metadata: { k: "x\u0000" } }), want: "metadata_invalid" },
  { name: "a NUL in a metadata key is metadata_invalid", item: newAccount("acct_1", { metadata: { "\u0000": "v" } }), want: "metadata_invalid" },
  { name: "an unpaired surrogate in a metadata value is metadata_invalid", item: newAccount("acct_1", { metadata: { k: "\ud83d" } }), want: "metadata_invalid" },
  { name: "an unpaired surrogate in a metadata key is metadata_invalid", item: newAccount("acct_1", { metadata: { "k\ude00": "v" } }), want: "metadata_invalid" },
  { name: "a surrogate pair (emoji) in metadata is ok", item: newAccount("acct_1", { metadata: { "\u{1F600}": "caf\u00e9 \u{1F600}" } }), want: "ok" },
  { name: "a 257-byte metadata value is metadata_invalid", item: newAccount("acct_1", { metadata: { k: "v".repeat(257) } }), want: "metadata_invalid" },
  { name: "the same account again is exists", setup: [newAccount("acct_1", { metadata: { a: "1", b: "2" } })], item: newAccount("acct_1", { metadata: { b: "2", a: "1" } }), want: "exists" },
  { name: "different flags outrank a different unit", setup: [newAccount("acct_1")], item: newAccount("acct_1", { unit: "EUR", flags: { history: true } }), want: "exists_with_different_flags" },
  { name: "a different unit outranks a different code", setup: [newAccount("acct_1")], item: newAccount("acct_1", { unit: "EUR", code: 9 }), want: "exists_with_different_unit" },
  { name: "a different code", setup: [newAccount("acct_1")], item: newAccount("acct_1", { code: 9 }), want: "exists_with_different_code" },
  { name: "different metadata", setup: [newAccount("acct_1")], item: newAccount("acct_1", { metadata: { a: "1" } }), want: "exists_with_different_metadata" },
  { name: "a timestamp on an account that is not imported is timestamp_must_be_zero (before id_invalid)", item: newAccount("", { timestampUs: 5n }), want: "timestamp_must_be_zero" },
  { name: "an imported account without a timestamp is imported_event_timestamp_out_of_range", item: newAccount("acct_1", { flags: { imported: true } }), want: "imported_event_timestamp_out_of_range" },
  { name: "an imported account timed at the ledger's clock is imported_event_timestamp_must_not_advance (before id_invalid)", item: newAccount("", { timestampUs: 1_700_000_000_000_000n, flags: { imported: true } }), want: "imported_event_timestamp_must_not_advance" },
  { name: "an imported account in the past is ok", item: newAccount("acct_1", { timestampUs: 1_600_000_000_000_000n, flags: { imported: true } }), want: "ok" },
  { name: "an imported account before the last ledger timestamp is imported_event_timestamp_must_not_regress", setup: [newAccount("acct_0")], item: newAccount("acct_1", { timestampUs: 1_600_000_000_000_000n, flags: { imported: true } }), want: "imported_event_timestamp_must_not_regress" },
  { name: "exists outranks imported_event_timestamp_must_not_regress", setup: [newAccount("acct_1", { timestampUs: 1_600_000_000_000_000n, flags: { imported: true } })], item: newAccount("acct_1", { timestampUs: 1_500_000_000_000_000n, flags: { imported: true } }), want: "exists" },
  { name: "an account may be created closed", item: newAccount("acct_1", { flags: { closed: true } }), want: "ok" },
  { name: "closed is state, not compared on create again", setup: [newAccount("acct_1", { flags: { closed: true } })], item: newAccount("acct_1"), want: "exists" },
];

describe("createAccounts result precedence", () => {
  it("lists every result code once, ok first", () => {
    expect(new Set(CREATE_ACCOUNT_RESULTS).size).toBe(CREATE_ACCOUNT_RESULTS.length);
    expect(CREATE_ACCOUNT_RESULTS[0]).toBe("ok");
  });
  for (const row of rows) {
    it(row.name, () => {
      const ws = new WorkingSet();
      const clock = testClock();
      if (row.setup) expect(createAccounts(ws, row.setup, clock).every((r) => r.result === "ok")).toBe(true);
      const before = ws.newAccounts.length;
      const [got] = createAccounts(ws, [row.item], clock);
      expect(got!.result).toBe(row.want);
      if (row.want !== "ok") expect(ws.newAccounts.length).toBe(before);
    });
  }
});

describe("createAccounts imported", () => {
  it("takes the first item's imported flag for the whole request", () => {
    const ws = new WorkingSet();
    const clock = testClock();
    const imp = (id: string, us: bigint) => newAccount(id, { timestampUs: us, flags: { imported: true } });
    expect(createAccounts(ws, [imp("a1", 10n), newAccount("a2")], clock).map((r) => r.result)).toEqual(["ok", "imported_event_expected"]);
    expect(createAccounts(ws, [newAccount("a3"), imp("a4", 1_699_000_000_000_000n)], clock).map((r) => r.result)).toEqual(["ok", "imported_event_not_expected"]);
  });
  it("stamps imported accounts with the caller's time, strictly increasing within a request", () => {
    const ws = new WorkingSet();
    const clock = testClock();
    const imp = (id: string, us: bigint) => newAccount(id, { timestampUs: us, flags: { imported: true } });
    const res = createAccounts(ws, [imp("a1", 100n), imp("a2", 100n), imp("a3", 101n)], clock);
    expect(res.map((r) => [r.result, r.timestampUs])).toEqual([["ok", 100n], ["imported_event_timestamp_must_not_regress", null], ["ok", 101n]]);
    expect(ws.accounts.get("a1")!.flags.imported).toBe(true);
    expect(clock.last).toBe(101n);
  });
});

describe("createAccounts chains", () => {
  it("creates a linked chain all or nothing", () => {
    const ws = new WorkingSet();
    const res = createAccounts(ws, [newAccount("a1", { flags: { linked: true } }), newAccount("a2", { code: 0 }), newAccount("a3")], testClock());
    expect(res.map((r) => r.result)).toEqual(["linked_event_failed", "code_must_not_be_zero", "ok"]);
    expect([...ws.accounts.keys()]).toEqual(["a3"]);
  });
  it("fails an open chain at the end of the batch", () => {
    const ws = new WorkingSet();
    const res = createAccounts(ws, [newAccount("a1", { flags: { linked: true } }), newAccount("a2", { flags: { linked: true } })], testClock());
    expect(res.map((r) => r.result)).toEqual(["linked_event_failed", "linked_event_chain_open"]);
    expect(ws.accounts.size).toBe(0);
  });
  it("returns the original creation time on exists", () => {
    const ws = new WorkingSet();
    const clock = testClock();
    const [first] = createAccounts(ws, [newAccount("a1")], clock);
    const [again] = createAccounts(ws, [newAccount("a1")], clock);
    expect(again!.result).toBe("exists");
    expect(again!.timestampUs).toBe(first!.timestampUs);
  });
});
