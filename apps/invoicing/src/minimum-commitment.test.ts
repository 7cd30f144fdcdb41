/**
 * The minimum commitment through ClosePeriod and PreviewInvoice (PGlite and PostgreSQL): the
 * true-up of period n compares the commitment with period n's own lines only — its usage and the
 * flat and seat fees covering it (wherever they were billed) — as rating's RatePeriod does; not
 * the fees billed in advance for the next period, nor a one-off auto top-up.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { LineKind, type Invoice } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const JAN = new Date("2026-01-01T00:00:00Z");
const FEB = new Date("2026-02-01T00:00:00Z");

const kinds = (inv: Invoice) => inv.lines.filter((l) => l.kind !== LineKind.CREDITS_APPLIED).map((l) => [LineKind[l.kind], l.roundedAmountNanos]);

for (const backend of testBackends()) {
  describe(`minimum commitment true-up on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("trues January up to $100 from January's $60 fee only ($40), not from February's fee billed in advance, and February the same", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: JAN });
      w.plans.set("plan_f", { currency: "USD", minimum: "100", charges: [{ chargeId: "platform", name: "Platform fee", kind: "flat", amount: "60" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_f", planVersion: 1, startedAt: JAN, seats: [] });
      const h = await harness(await open(), w, new Date("2026-02-01T00:00:01Z"));
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      const jan = await close(JAN);
      // January's fee, February's fee in advance, and January's true-up $100 - $60
      expect(kinds(jan)).toEqual([["FLAT", 60n * USD], ["FLAT", 60n * USD], ["MINIMUM_TRUE_UP", 40n * USD]]);
      expect(jan.totals!.amountDueNanos).toBe(160n * USD);
      // February: its fee was billed on January's invoice and counts; March's in advance does not
      h.clock.set(new Date("2026-02-15T00:00:00Z"));
      const preview = (await h.client.previewInvoice({ customerId: "cus_1" })).invoice!;
      expect(kinds(preview)).toEqual([["FLAT", 60n * USD], ["MINIMUM_TRUE_UP", 40n * USD]]);
      h.clock.set(new Date("2026-03-01T00:00:01Z"));
      expect(kinds(await close(FEB))).toEqual([["FLAT", 60n * USD], ["MINIMUM_TRUE_UP", 40n * USD]]);
    });

    it("does not count a one-off auto top-up towards the commitment: no usage and a $100 top-up owe a $100 true-up", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: JAN });
      w.plans.set("plan_u", { currency: "USD", minimum: "100", charges: [{ chargeId: "llm", name: "LLM", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_u", planVersion: 1, startedAt: JAN, seats: [] });
      w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: "wal_usd:topup:1", unit: "USD", amountNanos: 100n * USD, at: new Date("2026-01-10T00:00:00Z"), costBasis: "1", costCurrency: "USD" });
      const h = await harness(await open(), w, new Date("2026-02-01T00:00:01Z"));
      const jan = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(JAN) }] })).results[0]!.invoice!;
      expect(kinds(jan)).toEqual([["ONE_OFF", 100n * USD], ["MINIMUM_TRUE_UP", 100n * USD]]);
    });
  });
}
