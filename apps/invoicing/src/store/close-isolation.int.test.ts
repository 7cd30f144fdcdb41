/**
 * closeMany isolates an item whose invoice cannot be written (PGlite and PostgreSQL): the batch
 * transaction fails, the store splits the batch down to that item, every other item is written,
 * and the failing one is refused with nothing written for it. A transient failure (connection
 * lost, serialization failure after the retries, timeout) still fails the whole batch, unsplit.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DbError, migrate, testBackends, type DbErrorCode, type TestDb } from "@nanobill/db";
import { assembleInvoice, type AssembledInvoice, type ChargeInput } from "../domain/assemble.js";
import { defaultSettings } from "../domain/invoice.js";
import { exact } from "../domain/rounding.js";
import { LINES_PER_INVOICE_MAX } from "../limits.js";
import { createInvoiceStore, type CloseItem, type CloseParams, type CloseRefused, type CloseOutcome, type InvoiceStore } from "./invoice-store.js";
import { migrationsDir } from "../migrations-dir.js";

const T = "tnt_iso";
const jan = new Date("2026-01-01T00:00:00Z");
const feb = new Date("2026-02-01T00:00:00Z");
const mar = new Date("2026-03-01T00:00:00Z");

function params(invoiceId: string, customerId: string, start = jan, end = feb): CloseParams {
  return {
    invoiceId, customerId, subscriptionId: `sub_${customerId}`, periodIndex: 0, periodStart: start, periodEnd: end, usageFrom: start, usageTo: end,
    timeZone: "UTC", unit: "USD", roundingMode: "half_even", taxRateBps: 0, now: end,
  };
}

function charge(customerId: string, chargeId: string, nanos: bigint, start: Date, end: Date): ChargeInput {
  return { kind: "usage", residueKey: chargeId, chargeId, subscriptionId: `sub_${customerId}`, description: chargeId, quantity: "1", unitPrice: "0", amount: exact(nanos), periodStart: start, periodEnd: end, expandable: true };
}

/** item: an invoice of $3.685 usage (368 cents billed, 0.5 cent carried); `charges` overrides its charges. */
function item(invoiceId: string, customerId: string, opts: { start?: Date; end?: Date; charges?: number; edit?: (a: AssembledInvoice) => void; periodIndex?: number } = {}): CloseItem & { calls: number } {
  const start = opts.start ?? jan;
  const end = opts.end ?? feb;
  const it: CloseItem & { calls: number } = {
    calls: 0,
    params: { ...params(invoiceId, customerId, start, end), periodIndex: opts.periodIndex ?? 0 },
    assemble: (residues, deferredIn) => {
      it.calls += 1;
      const n = opts.charges ?? 1;
      const a = assembleInvoice({
        currency: "USD",
        settings: defaultSettings(customerId),
        charges: Array.from({ length: n }, (_, k) => charge(customerId, `ch_${k}`, 3_685_000_000n, start, end)),
        minimumCommitmentNanos: 0n,
        creditsAppliedNanos: 0n,
        residues,
        deferredIn,
        periodStart: start,
        periodEnd: end,
      });
      opts.edit?.(a);
      return a;
    },
  };
  return it;
}

function refused(o: CloseOutcome | CloseRefused | undefined): string {
  return o !== undefined && "refused" in o ? o.refused : "";
}

for (const backend of testBackends()) {
  describe(`closeMany failure isolation on ${backend.name}`, () => {
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

    const count = async (sql: string, p: unknown[]) => (await db.query<{ n: number }>(sql, p)).rows[0]!.n;

    it("writes every other item when one item's invoice is over the line limit, has a value out of range or violates a CHECK; refuses each of those alone, nothing written for it; a replay returns the same invoices", async () => {
      const batch = [
        item("inv_a1", "cus_a"),
        // period_index is an INTEGER column: 2^31 is out of range (22003) when the invoice rows are copied
        item("inv_b1", "cus_b", { periodIndex: 2 ** 31 }),
        item("inv_c1", "cus_c"),
        // a residue with a zero denominator violates residues' CHECK (sub_nano_den > 0), after its invoice and lines were copied
        item("inv_d1", "cus_d", { edit: (a) => a.residues.set("ch_bad", { residueNanos: 0n, subNanoNum: 0n, subNanoDen: 0n }) }),
        // more charges than an invoice has lines for: assembleInvoice refuses it under the lock
        item("inv_e1", "cus_e", { charges: LINES_PER_INVOICE_MAX }),
        // cus_a's next period in the same batch carries on the residue of inv_a1
        item("inv_a2", "cus_a", { start: feb, end: mar }),
      ];
      const out = await store.closeMany(T, batch);
      expect(out.map((o) => ("refused" in o ? "refused" : o.created ? "created" : "existing"))).toEqual(["created", "refused", "created", "refused", "refused", "created"]);
      expect(refused(out[1])).toMatch(/SQLSTATE 22003.*nothing was written for this item/);
      expect(refused(out[3])).toMatch(/check_violation \(SQLSTATE 23514\).*residues.*nothing was written for this item/);
      expect(refused(out[4])).toBe(`lines: an invoice holds at most ${LINES_PER_INVOICE_MAX} lines: nothing was written for this item`);
      const a2 = out[5] as CloseOutcome;
      expect(a2.invoice.lines[0]!.residueInNanos).toBe(5_000_000n);
      expect(a2.invoice.lines[0]!.amountMinor).toBe(369n);
      // the good items once each; nothing at all for the refused ones (invoice, lines, residues)
      expect(await count(`SELECT count(*)::int AS n FROM invoices WHERE tenant = $1`, [T])).toBe(3);
      for (const c of ["cus_b", "cus_d", "cus_e"]) {
        expect(await count(`SELECT count(*)::int AS n FROM invoices WHERE tenant = $1 AND customer_id = $2`, [T, c])).toBe(0);
        expect(await count(`SELECT count(*)::int AS n FROM invoice_lines WHERE tenant = $1 AND subscription_id = $2`, [T, `sub_${c}`])).toBe(0);
        expect(await count(`SELECT count(*)::int AS n FROM residues WHERE tenant = $1 AND customer_id = $2`, [T, c])).toBe(0);
      }
      expect(await store.residueTotal(T, "cus_a", "USD")).toBe(0n);
      expect(await store.residueTotal(T, "cus_c", "USD")).toBe(5_000_000n);

      // a replay (new invoice ids, as a retrying caller would make) returns the first invoices and refuses the bad ones again
      const again = await store.closeMany(T, batch.map((b) => ({ ...b, params: { ...b.params, invoiceId: `${b.params.invoiceId}_retry` } })));
      expect(again.map((o) => ("refused" in o ? "refused" : o.created ? "created" : o.invoice.id))).toEqual(["inv_a1", "refused", "inv_c1", "refused", "refused", "inv_a2"]);
      expect(await count(`SELECT count(*)::int AS n FROM invoices WHERE tenant = $1`, [T])).toBe(3);
    });

    it("splits a failing batch only down to the failing item: the good items of a 16-item batch are assembled in at most 2 log2(16) transactions each", async () => {
      const batch = Array.from({ length: 16 }, (_, k) => item(`inv_s${k}`, `cus_s${k}`, k === 11 ? { charges: LINES_PER_INVOICE_MAX } : {}));
      const out = await store.closeMany(T, batch);
      expect(out.filter((o) => "refused" in o)).toHaveLength(1);
      expect(refused(out[11])).toMatch(/at most 500 lines/);
      expect(out.filter((o) => !("refused" in o) && o.created)).toHaveLength(15);
      // 16 -> 8 -> 4 -> 2 -> 1: the bad item is assembled 5 times; an item of the good half once more than the first try
      expect(batch[11]!.calls).toBe(5);
      expect(batch[0]!.calls).toBe(2);
      expect(Math.max(...batch.map((b) => b.calls))).toBeLessThanOrEqual(5);
    });

    it("fails the whole batch on an error that is no item's fault (a bug, a missing table), without splitting it; nothing is written", async () => {
      const good = item("inv_bug_good", "cus_bug_good");
      const bad = item("inv_bug_bad", "cus_bug_bad", {
        edit: () => {
          throw new Error("a bug in assembly");
        },
      });
      await expect(store.closeMany(T, [good, bad])).rejects.toThrow("a bug in assembly");
      expect(good.calls).toBe(1);
      const missing = item("inv_tbl_bad", "cus_tbl_bad", {
        edit: () => {
          throw new DbError("query", "relation does not exist", { sqlState: "42P01" });
        },
      });
      await expect(store.closeMany(T, [item("inv_tbl_good", "cus_tbl_good"), missing])).rejects.toMatchObject({ code: "query" });
      expect(await count(`SELECT count(*)::int AS n FROM invoices WHERE tenant = $1 AND customer_id = ANY($2::text[])`, [T, ["cus_bug_good", "cus_bug_bad", "cus_tbl_good", "cus_tbl_bad"]])).toBe(0);
    });

    it.each<DbErrorCode>(["unavailable", "serialization", "timeout"])("fails the whole batch on a transient %s error, without splitting it; nothing is written (the caller retries)", async (code) => {
      const good = item(`inv_t_${code}`, `cus_t_${code}`);
      const bad = item(`inv_u_${code}`, `cus_u_${code}`, {
        edit: () => {
          throw new DbError(code, `${code}: simulated`);
        },
      });
      await expect(store.closeMany(T, [good, bad])).rejects.toMatchObject({ code });
      // serialization is retried by the transaction as a whole (libs/db), never item by item
      expect(good.calls).toBe(bad.calls);
      expect(good.calls).toBe(code === "serialization" ? 6 : 1);
      expect(await count(`SELECT count(*)::int AS n FROM invoices WHERE tenant = $1 AND customer_id = ANY($2::text[])`, [T, [`cus_t_${code}`, `cus_u_${code}`]])).toBe(0);
    });

    it("closePeriod (one item) still throws its failure", async () => {
      const bad = item("inv_one", "cus_one", { charges: LINES_PER_INVOICE_MAX });
      await expect(store.closePeriod(T, bad.params, (r, d) => bad.assemble(r, d, new Set(), new Map(), new Set()))).rejects.toThrow(/at most 500 lines/);
    });
  });
}
