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

    it("bills a subscription that ends on day 10 only up to its end: prorated in advance when the end is known, credited at the close when it was billed in full; usage up to the end", async () => {
      const OCT = new Date("2026-10-01T00:00:00Z");
      const END = new Date("2026-11-10T05:00:00Z");
      const mk = (endKnown: boolean) => {
        const w = new FakeWorld();
        w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: OCT });
        w.plans.set("plan_f", { currency: "USD", minimum: "", charges: [{ chargeId: "platform", name: "Platform fee", kind: "flat", amount: "30" }, { chargeId: "llm", name: "LLM", kind: "usage", amount: "0" }] });
        w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_f", planVersion: 1, startedAt: OCT, seats: [], endedAt: endKnown ? END : undefined });
        w.buckets.push({ customerId: "cus_1", chargeId: "llm", hourStart: new Date("2026-11-05T10:00:00Z"), quantity: 3n, priceNanos: 1_500_000_000n, unit: "USD", eventCount: 3n });
        return w;
      };
      // $30 x 795,600,000 / 2,592,000,000 ms = $9.208333... exact
      const exactNov = { num: 30_000_000_000n * 795_600_000n, den: 2_592_000_000n };
      for (const endKnown of [true, false]) {
        const w = mk(endKnown);
        const db = await backend.open();
        dbs.push(db);
        const h = await harness(db, w, new Date("2026-11-01T00:00:01Z"));
        const close = (d: Date) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] });
        const oct = (await close(OCT)).results[0]!.invoice!;
        const novFee = oct.lines.find((l) => l.kind === LineKind.FLAT && l.periodStart!.seconds === timestampFromDate(NOV).seconds)!;
        if (endKnown) {
          // not billed after the end: 9,208,333,333 nanos booked (1/3 nano carried), $9.21 billed
          expect([novFee.amountNanos, novFee.roundedAmountNanos, novFee.residueOutNanos]).toEqual([9_208_333_333n, 9_210_000_000n, -1_666_667n]);
          expect(novFee.description).toContain("prorated to the subscription's end at 2026-11-10T05:00:00.000Z: 795600000 of 2592000000 ms");
        } else {
          expect(novFee.roundedAmountNanos).toBe(30_000_000_000n);
          // the subscription is ended on day 10, after November was billed in advance
          w.subscriptions[0]!.endedAt = END;
          // the preview after the end shows what November's close will credit
          h.clock.set(new Date("2026-11-20T00:00:00Z"));
          const preview = (await h.client.previewInvoice({ customerId: "cus_1" })).invoice!;
          expect(preview.lines.filter((l) => l.kind === LineKind.ADJUSTMENT).map((l) => [l.chargeId, l.amountNanos])).toEqual([["platform", -20_791_666_667n]]);
          expect(preview.lines.filter((l) => l.kind === LineKind.FLAT)).toEqual([]);
        }
        h.clock.set(new Date("2026-12-01T00:00:01Z"));
        const nov = (await close(NOV)).results[0]!.invoice!;
        // usage in arrears up to the end; no December fee
        expect(nov.lines.filter((l) => l.kind === LineKind.USAGE).map((l) => l.roundedAmountNanos)).toEqual([1_500_000_000n]);
        expect(nov.lines.filter((l) => l.kind === LineKind.FLAT)).toEqual([]);
        const credit = nov.lines.filter((l) => l.kind === LineKind.ADJUSTMENT);
        if (endKnown) expect(credit).toEqual([]);
        else {
          // -$20.791666... credited: booked -20,791,666,667 nanos, billed -$20.79 ($30 - $20.79 = $9.21 for November)
          expect(credit.map((l) => [l.chargeId, l.amountNanos, l.roundedAmountNanos, l.residueOutNanos])).toEqual([["platform", -20_791_666_667n, -20_790_000_000n, -1_666_667n]]);
          expect(credit[0]!.description).toContain("credit for seat or fee changes and the subscription's end at 2026-11-10T05:00:00.000Z in 2026-11-01 to 2026-12-01");
        }
        // billed + carried (residue and sub-nano) == $30 (October) + $30 x part / full, exactly
        const billed = [...oct.lines, ...nov.lines].filter((l) => l.chargeId === "platform").reduce((s, l) => s + l.roundedAmountNanos, 0n);
        expect(billed).toBe(39_210_000_000n);
        const r = (await createInvoiceStore(db).readResidues("tnt_a", "cus_1")).get("platform")!;
        expect(((billed + r.residueNanos) * r.subNanoDen + r.subNanoNum) * exactNov.den).toBe((30_000_000_000n * exactNov.den + exactNov.num) * r.subNanoDen);
      }
    });
  });
}
