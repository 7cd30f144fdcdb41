import { describe, expect, it } from "vitest";
import { burnTransfers, expiryTransfer, grantTransfers, holdTransfers, ledgerId, resolveHoldTransfers, walletAccounts, walletLedger } from "./ledger-plan.js";

const l = walletLedger("cus_1", "USD", "prepaid");
const lc = walletLedger("cus_1", "cr_tokens", "credits");

describe("ledger mapping", () => {
  it("names the customer's accounts after the ledger's chart (2100 wallet, 1100 receivable)", () => {
    expect([l.wallet, l.receivable, l.revenue, l.breakage]).toEqual(["acct_wallet:cus_1:USD", "acct_receivable:cus_1:USD", "acct_revenue:USD", "acct_breakage:USD"]);
    const accts = walletAccounts(l);
    expect(accts.find((a) => a.id === l.wallet)).toMatchObject({ code: 2100, noOverdraw: true, history: true, shared: false });
    expect(accts.some((a) => a.code === 3000)).toBe(false);
    expect(walletAccounts(lc).some((a) => a.id === "acct_issuance:cr_tokens" && a.code === 3000)).toBe(true);
  });

  const grants = [
    { kind: "purchased" as const, ll: l, debit: "acct_receivable:cus_1:USD", code: 10 },
    { kind: "purchased" as const, ll: lc, debit: "acct_issuance:cr_tokens", code: 10 },
    { kind: "promotional" as const, ll: l, debit: "acct_promo:USD", code: 11 },
    { kind: "allowance" as const, ll: l, debit: "acct_promo:USD", code: 12 },
  ];
  for (const g of grants) {
    it(`funds a ${g.kind} grant in ${g.ll.unit} from ${g.debit}`, () => {
      const [t] = grantTransfers({ grantId: "g1", walletId: "wal_1", l: g.ll, kind: g.kind, amountNanos: 5n, repayNanos: 0n, invoiceId: "" });
      expect(t).toMatchObject({ id: "xfer_w:g:g1", debit: g.debit, credit: g.ll.wallet, amount: "5", code: g.code, linked: false });
    });
  }

  it("repays an overdraft in the same chain as the grant", () => {
    const ts = grantTransfers({ grantId: "g1", walletId: "wal_1", l, kind: "purchased", amountNanos: 5n, repayNanos: 3n, invoiceId: "inv_1" });
    expect(ts.map((t) => [t.debit, t.credit, t.amount, t.linked])).toEqual([
      [l.receivable, l.wallet, "5", true],
      [l.wallet, l.receivable, "3", false],
    ]);
    expect(ts[0]!.refs).toMatchObject({ invoice_id: "inv_1" });
  });

  it("burns one linked transfer per slice, then the overdraft part", () => {
    const ts = burnTransfers({ sourceId: "evt_1:chg", l, slices: [{ grantId: "B", amountNanos: 20n }, { grantId: "A", amountNanos: 30n }], overdraftNanos: 5n, eventId: "evt_1" });
    expect(ts.map((t) => [t.id, t.debit, t.credit, t.amount, t.linked])).toEqual([
      ["xfer_w:b:evt_1:chg:0", l.wallet, l.revenue, "20", true],
      ["xfer_w:b:evt_1:chg:1", l.wallet, l.revenue, "30", true],
      ["xfer_w:b:evt_1:chg:od", l.receivable, l.revenue, "5", false],
    ]);
  });

  it("holds as pending transfers with a timeout and resolves each slice by post (burned > 0) or void", () => {
    const hs = holdTransfers({ holdId: "h1", l, slices: [{ grantId: "A", amountNanos: 10n }, { grantId: "B", amountNanos: 5n }], overdraftNanos: 0n, timeoutSeconds: 120 });
    expect(hs.every((t) => t.pending && t.timeoutSeconds === 120)).toBe(true);
    const rs = resolveHoldTransfers({ holdId: "h1", burn: [{ grantId: "A", amountNanos: 7n }, { grantId: "B", amountNanos: 0n }], overdraftHeldNanos: 0n, overdraftBurnNanos: 0n });
    expect(rs.map((t) => [t.id, t.post ?? false, t.void ?? false, t.amount, t.pendingId])).toEqual([
      ["xfer_w:p:h1:0", true, false, "7", "xfer_w:h:h1:0"],
      ["xfer_w:v:h1:1", false, true, "0", "xfer_w:h:h1:1"],
    ]);
  });

  it("moves an expired remainder to breakage", () => {
    expect(expiryTransfer({ grantId: "g1", l, amountNanos: 9n })).toMatchObject({ debit: l.wallet, credit: l.breakage, amount: "9", code: 30 });
    // A hold's breakage never shares an id with a grant's own breakage (caller ids may contain ':').
    expect(expiryTransfer({ grantId: "gA", l, amountNanos: 1n, holdId: "h1" }).id).toBe("xfer_w:xh:2:gA:h1");
    expect(expiryTransfer({ grantId: "gA:h1", l, amountNanos: 1n }).id).toBe("xfer_w:x:gA:h1");
    expect(expiryTransfer({ grantId: "a:b", l, amountNanos: 1n, holdId: "c" }).id).not.toBe(expiryTransfer({ grantId: "a", l, amountNanos: 1n, holdId: "b:c" }).id);
    // A capture's post carries the plain transfer booked instead when the pending one timed out.
    const [post, od] = resolveHoldTransfers({ holdId: "h1", burn: [{ grantId: "g1", amountNanos: 5n }], overdraftHeldNanos: 3n, overdraftBurnNanos: 2n, l });
    expect(post!.late).toMatchObject({ id: "xfer_w:p:h1:0:late", debit: l.wallet, credit: l.revenue, amount: "5", unit: l.unit, code: 20 });
    expect(od!.late).toMatchObject({ id: "xfer_w:p:h1:od:late", debit: l.receivable, credit: l.revenue, amount: "2", code: 22 });
  });

  it("keeps every ledger id within 128 characters, deterministically", () => {
    const long = "x".repeat(200);
    expect(ledgerId(long).length).toBeLessThanOrEqual(128);
    expect(ledgerId(long)).toBe(ledgerId(long));
    expect(ledgerId(long)).not.toBe(ledgerId(long + "y"));
    expect(ledgerId("short")).toBe("short");
    expect(walletLedger("c".repeat(128), "cr_" + "a".repeat(61), "credits").receivable.length).toBeLessThanOrEqual(128);
  });
});
