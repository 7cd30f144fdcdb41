/** Flat fees and seats of a partial first period, through ClosePeriod (PGlite and PostgreSQL). */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends, type TestDb } from "@nanobill/db";
import { LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { createInvoiceStore } from "./store/invoice-store.js";

const NOV = new Date("2026-11-01T00:00:00Z");
const START = new Date("2026-11-10T05:00:00Z");

for (const backend of testBackends()) {
  describe(`fees of a partial first period on ${backend.name}`, () => {
    const dbs: TestDb[] = [];
    beforeAll(async () => {
      dbs.push(await backend.open());
    });
    afterAll(async () => {
      for (const db of dbs) await db.dispose();
    });

    it("prorates the first period's flat fee by the millisecond, rounds it half-even and carries the remainder into the next fee", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_f", { currency: "USD", minimum: "", charges: [{ chargeId: "platform", name: "Platform fee", kind: "flat", amount: "25" }] });
      // starts on Nov 10 05:00, the customer's periods run from the 1st: period 0 is 20 days 19 hours of 30 days
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_f", planVersion: 1, startedAt: START, seats: [] });
      const db = dbs[0]!;
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(START) }] })).results[0]!.invoice!;
      const fees = inv.lines.filter((l) => l.kind === LineKind.FLAT);
      // $25 x 1,796,400,000 / 2,592,000,000 = $17.3263888... -> booked 17,326,388,889 nanos (sub-nano -1/9 carried), billed $17.33
      expect(fees.map((l) => [l.amountNanos, l.roundedAmountNanos, l.residueOutNanos])).toEqual([
        [17_326_388_889n, 17_330_000_000n, -3_611_111n],
        // December in full, with the carried remainder: 25 - 0.003611111 -> $25.00, carried on
        [25_000_000_000n, 25_000_000_000n, -3_611_111n],
      ]);
      expect(fees[0]!.description).toContain("prorated for a partial first period: 1796400000 of 2592000000 ms");
      const r = (await createInvoiceStore(db).readResidues("tnt_a", "cus_1")).get("platform")!;
      // billed + carried (residue and sub-nano) == exact: 25 x 1796.4/2592 + 25
      const exactNum = 25_000_000_000n * 1_796_400_000n + 25_000_000_000n * 2_592_000_000n;
      const billed = fees.reduce((s, l) => s + l.roundedAmountNanos, 0n);
      expect(((billed + r.residueNanos) * r.subNanoDen + r.subNanoNum) * 2_592_000_000n).toBe(exactNum * r.subNanoDen);
    });
  });
}
