import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { assembleInvoice } from "../domain/assemble.js";
import { defaultSettings } from "../domain/invoice.js";
import { exact } from "../domain/rounding.js";
import { InvoicingError } from "../domain/lifecycle.js";
import { createInvoiceStore, type CloseParams, type InvoiceStore } from "./invoice-store.js";
import { migrationsDir } from "../migrations-dir.js";

const T = "tnt_a";
const jan = new Date("2026-01-01T00:00:00Z");
const feb = new Date("2026-02-01T00:00:00Z");
const mar = new Date("2026-03-01T00:00:00Z");

function params(id: string, start: Date, end: Date, sub = "sub_1"): CloseParams {
  return {
    invoiceId: id,
    customerId: "cus_1",
    subscriptionId: sub,
    periodIndex: 0,
    periodStart: start,
    periodEnd: end,
    usageFrom: start,
    usageTo: end,
    timeZone: "UTC",
    unit: "USD",
    roundingMode: "half_even",
    taxRateBps: 0,
    now: end,
  };
}

const usage = (nanos: bigint, start: Date, end: Date) => (residues: ReadonlyMap<string, never> | ReadonlyMap<string, import("../domain/rounding.js").ResidueState>, deferredIn: import("../domain/invoice.js").Deferral | undefined) =>
  assembleInvoice({
    currency: "USD",
    settings: defaultSettings("cus_1"),
    charges: [
      { kind: "usage", residueKey: "ch_u", chargeId: "ch_u", subscriptionId: "sub_1", description: "usage", quantity: "55", unitPrice: "0.067", amount: exact(nanos), periodStart: start, periodEnd: end, expandable: true },
    ],
    minimumCommitmentNanos: 0n,
    creditsAppliedNanos: 0n,
    residues,
    deferredIn,
    periodStart: start,
    periodEnd: end,
  });

for (const backend of testBackends()) {
  describe(`invoice store on ${backend.name}`, () => {
    let db: TestDb;
    let store: InvoiceStore;
    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, migrationsDir);
      store = createInvoiceStore(db);
    });
    afterAll(async () => {
      await db?.dispose();
    });

    it("closes a period once, carries the residue to the next period, and replays the same invoice", async () => {
      const first = await store.closePeriod(T, params("inv_1", jan, feb), usage(3_685_000_000n, jan, feb));
      expect(first.created).toBe(true);
      expect(first.invoice.lines[0]!.amountMinor).toBe(368n);
      expect((await store.readResidues(T, "cus_1")).get("ch_u")?.residueNanos).toBe(5_000_000n);
      const again = await store.closePeriod(T, params("inv_other", jan, feb), usage(1n, jan, feb));
      expect(again.created).toBe(false);
      expect(again.invoice.id).toBe("inv_1");
      const second = await store.closePeriod(T, params("inv_2", feb, mar), usage(3_685_000_000n, feb, mar));
      expect(second.invoice.lines[0]!.residueInNanos).toBe(5_000_000n);
      expect(second.invoice.lines[0]!.amountMinor).toBe(369n);
      expect(await store.residueTotal(T, "cus_1", "USD")).toBe(0n);
    });

    it("makes one invoice of two concurrent closes of the same period", async () => {
      const apr = new Date("2026-04-01T00:00:00Z");
      const results = await Promise.all([
        store.closePeriod(T, params("inv_c1", mar, apr, "sub_c"), usage(1_000_000_000n, mar, apr)),
        store.closePeriod(T, params("inv_c2", mar, apr, "sub_c"), usage(1_000_000_000n, mar, apr)),
      ]);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(results[0]!.invoice.id).toBe(results[1]!.invoice.id);
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM invoices WHERE tenant = $1 AND subscription_id = 'sub_c'`, [T]);
      expect(rows[0]!.n).toBe(1);
    });

    it("numbers finalized invoices gaplessly, refuses a second finalize, and guards paid and void", async () => {
      const a = await store.finalize(T, "inv_1", feb, (i) => [`xfer_${i.id}_due`]);
      expect(a.number).toBe("INV-000001");
      expect(a.ledgerPending).toBe(true);
      await expect(store.finalize(T, "inv_1", feb, () => [])).rejects.toThrow(/only a draft can be finalized/);
      const b = await store.finalize(T, "inv_2", mar, () => []);
      expect(b.number).toBe("INV-000002");
      await expect(store.finalize(T, "inv_missing", mar, () => [])).rejects.toBeInstanceOf(InvoicingError);

      const paid = await store.markPaid(T, "inv_1", "pay_1", mar, () => ["xfer_pay"]);
      expect(paid.invoice.status).toBe("paid");
      expect((await store.markPaid(T, "inv_1", "pay_1", mar, () => [])).replay).toBe(true);
      await expect(store.markPaid(T, "inv_2", "pay_1", mar, () => [])).rejects.toThrow(/already paid invoice inv_1/);

      await expect(store.voidInvoice(T, "inv_1", "wrong", "", mar, () => [])).rejects.toThrow(/requires a credit note/);
      const unchanged = await store.getInvoice(T, "inv_1");
      expect(unchanged?.status).toBe("paid");
      const voided = await store.voidInvoice(T, "inv_1", "refund", "cn_1", mar, () => ["xfer_void"]);
      expect(voided.invoice.status).toBe("void");
      expect(voided.invoice.creditNote?.number).toBe("CN-000001");
      expect(voided.invoice.creditNote?.amountNanos).toBe(a.totals.amountDueNanos);
      expect(voided.invoice.number).toBe("INV-000001");
    });

    it("does not consume a number when the finalize transaction fails", async () => {
      await expect(
        store.finalize(T, "inv_c1", mar, () => {
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      const next = await store.finalize(T, "inv_c1", mar, () => []);
      expect(next.number).toBe("INV-000003");
    });

    it("lists invoices newest period first with a cursor", async () => {
      const page1 = await store.listInvoices(T, { customerId: "cus_1", status: "", limit: 2, after: undefined });
      expect(page1.map((i) => i.id)).toEqual(["inv_c1", "inv_2"]);
      const page2 = await store.listInvoices(T, { customerId: "cus_1", status: "", limit: 2, after: { periodStart: page1[1]!.periodStart, invoiceId: page1[1]!.id } });
      expect(page2.map((i) => i.id)).toEqual(["inv_1"]);
    });
  });
}
