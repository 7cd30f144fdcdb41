/**
 * ClosePeriod with one item whose invoice cannot be written (PGlite and PostgreSQL): the other
 * customers' invoices are created and billed once, that item alone is FAILED_PRECONDITION naming
 * the reason with nothing written for it, and a replay gives ALREADY_CLOSED for the others.
 */
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { ClosePeriodResult, LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { LINES_PER_INVOICE_MAX } from "./limits.js";
import { suiteDbs } from "./testing/suite.js";

const NOV = new Date("2026-11-01T00:00:00Z");
const AFTER_NOV = new Date("2026-12-01T00:00:01Z");
const HOUR = new Date("2026-11-15T10:00:00Z");

/** world: cus_1 and cus_3 on a one-charge plan with usage; cus_2 on a plan with more usage charges than an invoice has lines. */
function world(): FakeWorld {
  const w = new FakeWorld();
  w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
  const wide = Array.from({ length: LINES_PER_INVOICE_MAX }, (_, k) => ({ chargeId: `ch_${String(k).padStart(3, "0")}`, name: `Charge ${k}`, kind: "usage" as const, amount: "0" }));
  w.plans.set("plan_wide", { currency: "USD", minimum: "", charges: wide });
  for (const [c, plan] of [["cus_1", "plan_llm"], ["cus_2", "plan_wide"], ["cus_3", "plan_llm"]] as const) {
    w.customers.set(c, { customerId: c, currency: "USD", timeZone: "UTC", billingAnchor: NOV });
    w.subscriptions.push({ subscriptionId: `sub_${c}`, customerId: c, planId: plan, planVersion: 1, startedAt: NOV, seats: [] });
  }
  w.buckets.push(
    { customerId: "cus_1", chargeId: "llm_tokens", hourStart: HOUR, quantity: 1801n, priceNanos: 8_755_000_000n, unit: "USD", eventCount: 1n },
    { customerId: "cus_3", chargeId: "llm_tokens", hourStart: HOUR, quantity: 10n, priceNanos: 1_230_000_000n, unit: "USD", eventCount: 1n },
  );
  for (const ch of wide) w.buckets.push({ customerId: "cus_2", chargeId: ch.chargeId, hourStart: HOUR, quantity: 1n, priceNanos: 1_000_000n, unit: "USD", eventCount: 1n });
  return w;
}

for (const backend of testBackends()) {
  describe(`ClosePeriod isolates an item that cannot be written on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("creates the other customers' invoices (billed once) when one invoice is over the 500-line limit, refuses that item alone with nothing written, and a replay gives ALREADY_CLOSED", async () => {
      const db = await open();
      const h = await harness(db, world(), AFTER_NOV);
      const items = ["cus_1", "cus_2", "cus_3"].map((c) => ({ customerId: c, subscriptionId: `sub_${c}`, periodStart: timestampFromDate(NOV) }));
      const r = await h.client.closePeriod({ items });
      expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.CREATED, ClosePeriodResult.FAILED_PRECONDITION, ClosePeriodResult.CREATED]);
      expect(r.results.map((x) => x.subscriptionId)).toEqual(["sub_cus_1", "sub_cus_2", "sub_cus_3"]);
      expect(r.results[1]!.message).toBe(`lines: an invoice holds at most ${LINES_PER_INVOICE_MAX} lines: nothing was written for this item`);
      expect(r.results[1]!.invoice).toBeUndefined();
      const usage = (i: number) => r.results[i]!.invoice!.lines.filter((l) => l.kind === LineKind.USAGE).map((l) => l.amountNanos);
      expect(usage(0)).toEqual([8_755_000_000n]);
      expect(usage(2)).toEqual([1_230_000_000n]);

      // billed exactly once; nothing at all for cus_2 (invoice, lines, residues, deferrals)
      const n = async (sql: string, p: unknown[] = []) => (await db.query<{ n: number }>(sql, p)).rows[0]!.n;
      expect(await n(`SELECT count(*)::int AS n FROM invoices WHERE tenant = 'tnt_a'`)).toBe(2);
      expect(await n(`SELECT count(*)::int AS n FROM invoice_lines WHERE tenant = 'tnt_a' AND kind = 'usage'`)).toBe(2);
      for (const t of ["invoices", "residues", "deferrals", "line_deferrals"]) {
        expect(await n(`SELECT count(*)::int AS n FROM ${t} WHERE tenant = 'tnt_a' AND customer_id = 'cus_2'`)).toBe(0);
      }

      const again = await h.client.closePeriod({ items });
      expect(again.results.map((x) => x.result)).toEqual([ClosePeriodResult.ALREADY_CLOSED, ClosePeriodResult.FAILED_PRECONDITION, ClosePeriodResult.ALREADY_CLOSED]);
      expect(again.results.map((x) => x.invoice?.id)).toEqual([r.results[0]!.invoice!.id, undefined, r.results[2]!.invoice!.id]);
      expect(await n(`SELECT count(*)::int AS n FROM invoices WHERE tenant = 'tnt_a'`)).toBe(2);
    });
  });
}
