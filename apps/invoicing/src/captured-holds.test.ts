/**
 * Captured holds on the invoice (PGlite and PostgreSQL). A wallet's Capture burns prepaid money
 * like a Consume item, and invoicing applies every burn as credits; no rated usage line bills a
 * capture, so without a line of its own the captured money came back to the customer as a credit.
 * The "Captured holds" line bills it (whole window, its own residue key), late captures are
 * adjusted on the next close, and Reconcile ties the lines to the wallet's captures.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends, type TestDb } from "@nanobill/db";
import { LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { CHARGE_ID_CAPTURED_HOLDS } from "./domain/bill.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");

function world(): FakeWorld {
  const w = new FakeWorld();
  w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
  w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
  w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
  // $1.00 of rated usage, burned by Consume, and a hold of $0.3051 captured (no rated event)
  w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1000n, priceNanos: USD, unit: "USD", eventCount: 1n });
  w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-10T00:10:00Z"), consumedNanos: USD });
  w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-11T00:00:00Z"), consumedNanos: 305_100_000n, captured: true });
  return w;
}

for (const backend of testBackends()) {
  describe(`captured holds on ${backend.name}`, () => {
    const dbs: TestDb[] = [];
    beforeAll(async () => {
      dbs.push(await backend.open());
    });
    afterAll(async () => {
      for (const db of dbs) await db.dispose();
    });

    it("bills a captured hold as a line of its own, so the prepaid money it burned nets to zero instead of coming back as a credit", async () => {
      const w = world();
      const h = await harness(dbs[0]!, w, new Date("2026-12-01T00:00:01Z"));
      const preview = (await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2026-11-30T00:00:00Z")) })).invoice!;
      expect(preview.lines.filter((l) => l.chargeId === CHARGE_ID_CAPTURED_HOLDS).map((l) => l.amountNanos)).toEqual([305_100_000n]);
      const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      const captured = inv.lines.filter((l) => l.chargeId === CHARGE_ID_CAPTURED_HOLDS);
      // $0.3051 exactly -> $0.31 (half-even), -$0.0049 carried on its own key
      expect(captured.map((l) => [l.kind, l.description, l.amountNanos, l.roundedAmountNanos, l.residueOutNanos])).toEqual([
        [LineKind.USAGE, "Captured holds (burned from the wallet by Capture)", 305_100_000n, 310_000_000n, -4_900_000n],
      ]);
      expect(inv.lines.filter((l) => l.kind === LineKind.CREDITS_APPLIED).map((l) => l.amountNanos)).toEqual([-1_305_100_000n]);
      // nothing carried to the customer as a credit balance: $1.00 + $0.31 - $1.31 = 0
      expect(inv.lines.filter((l) => l.kind === LineKind.CARRIED_FORWARD)).toEqual([]);
      expect(inv.totals!.amountDueNanos).toBe(0n);
      await h.client.finalizeInvoice({ invoiceId: inv.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
    });

    it("bills a hold captured late for an invoiced period on the next close, and Reconcile shows it until then", async () => {
      const w = world();
      const db = await backend.open();
      dbs.push(db);
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      await h.client.finalizeInvoice({ invoiceId: nov.id });
      // a capture dated in November, made after its close
      w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-30T23:30:00Z"), consumedNanos: 200_000_000n, captured: true });
      const diffs = (await h.client.reconcile({})).differences.map((d) => [d.check, d.expectedNanos, d.actualNanos]);
      expect(diffs).toEqual(
        expect.arrayContaining([
          ["rated_usage", 305_100_000n, 505_100_000n],
          ["credits_applied", 1_305_100_000n, 1_505_100_000n],
        ]),
      );
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.invoice!;
      const late = dec.lines.filter((l) => l.chargeId === CHARGE_ID_CAPTURED_HOLDS);
      // takes November's -$0.0049 residue in: $0.1951 -> $0.20, nothing carried
      expect(late.map((l) => [l.kind, l.description, l.amountNanos, l.residueInNanos, l.roundedAmountNanos])).toEqual([
        [LineKind.ADJUSTMENT, "Captured holds: captured late for 2026-11-01 to 2026-12-01", 200_000_000n, -4_900_000n, 200_000_000n],
      ]);
      expect(dec.totals!.amountDueNanos).toBe(0n);
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
    });
  });
}
