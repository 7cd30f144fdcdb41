import { describe, expect, it } from "vitest";
import { checkFinalize, checkMarkPaid, checkVoid, InvoicingError } from "./lifecycle.js";

describe("invoice lifecycle guards", () => {
  const rows: Array<[string, () => unknown, string | "ok"]> = [
    ["finalizes a draft", () => checkFinalize("inv_1", "draft"), "ok"],
    ["refuses to finalize twice", () => checkFinalize("inv_1", "finalized"), "only a draft can be finalized"],
    ["refuses to finalize a void invoice", () => checkFinalize("inv_1", "void"), "only a draft"],
    ["pays a finalized invoice", () => checkMarkPaid("inv_1", "finalized", "", "pay_1"), "ok"],
    ["replays the same payment", () => expect(checkMarkPaid("inv_1", "paid", "pay_1", "pay_1")).toBe("replay"), "ok"],
    ["refuses a second, different payment", () => checkMarkPaid("inv_1", "paid", "pay_1", "pay_2"), "already paid"],
    ["refuses to pay a draft", () => checkMarkPaid("inv_1", "draft", "", "pay_1"), "only a finalized"],
    ["voids a draft without a credit note", () => checkVoid("inv_1", "draft", "", ""), "ok"],
    ["refuses a credit note on a draft", () => checkVoid("inv_1", "draft", "cn_1", ""), "credit_note_id"],
    ["voids a finalized invoice", () => checkVoid("inv_1", "finalized", "", ""), "ok"],
    ["refuses to void a paid invoice without a credit note", () => checkVoid("inv_1", "paid", "", ""), "requires a credit note"],
    ["voids a paid invoice with a credit note", () => checkVoid("inv_1", "paid", "cn_1", ""), "ok"],
    ["replays a void with the same credit note", () => expect(checkVoid("inv_1", "void", "cn_1", "cn_1")).toBe("replay"), "ok"],
    ["replays a void without a credit note (a retry)", () => expect(checkVoid("inv_1", "void", "", "")).toBe("replay"), "ok"],
    ["refuses a second void with another credit note", () => checkVoid("inv_1", "void", "cn_2", "cn_1"), "already void with credit note cn_1"],
    ["refuses a credit note on an invoice voided without one", () => checkVoid("inv_1", "void", "cn_1", ""), "already void without a credit note"],
  ];
  for (const [name, fn, outcome] of rows) {
    it(`${name}`, () => {
      if (outcome === "ok") expect(fn).not.toThrow();
      else {
        expect(fn).toThrow(InvoicingError);
        expect(fn).toThrow(outcome);
      }
    });
  }
});
