import { describe, expect, it } from "vitest";
import { LEDGER_ID_CHARS_MAX, ledgerId } from "./ledger-id.js";

describe("ledgerId", () => {
  it("keeps an id that fits the ledger as it is", () => {
    expect(ledgerId("acct_inv_recv_cus_1_USD")).toBe("acct_inv_recv_cus_1_USD");
    const edge = "a".repeat(LEDGER_ID_CHARS_MAX);
    expect(ledgerId(edge)).toBe(edge);
  });

  it("maps a longer id to an 80-character head and 40 hex digits of its SHA-256, the same every time (ids already in ledgers keep matching)", () => {
    const natural = `acct_wallet:${"c".repeat(120)}:USD`;
    expect(ledgerId(natural)).toBe(`acct_wallet:${"c".repeat(68)}.93f64a785dc14fbc7758bd479457f11961e0283a`);
    expect(ledgerId(natural).length).toBe(121);
    expect(ledgerId(natural + "x")).not.toBe(ledgerId(natural));
    expect(ledgerId("a".repeat(LEDGER_ID_CHARS_MAX + 1)).length).toBeLessThanOrEqual(LEDGER_ID_CHARS_MAX);
  });
});
