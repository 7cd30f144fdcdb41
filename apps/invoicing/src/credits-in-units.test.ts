/**
 * Credits in credit units on the invoice (PGlite and PostgreSQL): how many credits of which
 * credit type paid the period's usage priced in credits, beside their money value, in the
 * invoice and its JSON, HTML and PDF renderings; the money totals are unchanged. And the
 * postpaid overage of a credit wallet billed at its overage rate.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends, type TestDb } from "@nanobill/db";
import { LineKind, RenderFormat } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { creditsInUnits, roundHalfEven } from "./domain/bill.js";
import { CREDIT_TYPES_PER_INVOICE_MAX } from "./limits.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");

describe("credits in units (domain)", () => {
  it("values credits at the rate in force at the period end, half-even to the nano", () => {
    const types = new Map([
      [
        "cr_tokens",
        {
          name: "Token credits",
          rates: [
            { rate: "0.01", currency: "USD", effectiveAt: new Date("2026-01-01T00:00:00Z") },
            { rate: "0.0123456789", currency: "USD", effectiveAt: new Date("2026-11-15T00:00:00Z") },
            { rate: "0.5", currency: "USD", effectiveAt: DEC },
          ],
        },
      ],
    ]);
    const [c] = creditsInUnits([{ unit: "cr_tokens", creditsNanos: 1_234_500_000_000n }, { unit: "cr_none", creditsNanos: 0n }], types, DEC);
    // 1,234.5 x 0.0123456789 = 15.24074060205 -> 15,240,740,602 nanos (half-even)
    expect(c).toEqual({ creditTypeId: "cr_tokens", name: "Token credits", creditsNanos: 1_234_500_000_000n, rate: "0.0123456789", rateCurrency: "USD", valueNanos: 15_240_740_602n });
    expect([roundHalfEven(5n, 2n), roundHalfEven(7n, 2n), roundHalfEven(-5n, 2n), roundHalfEven(-7n, 2n), roundHalfEven(11n, 4n)]).toEqual([2n, 4n, -2n, -4n, 3n]);
    const [unknown] = creditsInUnits([{ unit: "cr_x", creditsNanos: 5n }], new Map(), DEC);
    expect(unknown).toMatchObject({ name: "cr_x", rate: "", valueNanos: 0n });
  });
});

for (const backend of testBackends()) {
  describe(`credits in units on ${backend.name}`, () => {
    const dbs: TestDb[] = [];
    beforeAll(async () => {
      dbs.push(await backend.open());
    });
    afterAll(async () => {
      for (const db of dbs) await db.dispose();
    });

    it("shows the credits of each credit type consumed for the period beside their money value, in every rendering", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", {
        currency: "USD",
        minimum: "",
        charges: [
          { chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" },
          { chargeId: "gpu", name: "GPU", kind: "usage", amount: "0" },
        ],
      });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      // GPU usage in money; LLM tokens priced in credits and paid from a credit wallet
      w.buckets.push({ customerId: "cus_1", chargeId: "gpu", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1n, priceNanos: 4n * USD, unit: "USD", eventCount: 1n });
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1000n, priceNanos: 1_234_500_000_000n, unit: "cr_tokens", eventCount: 3n });
      w.consumption.push({ customerId: "cus_1", unit: "cr_tokens", chargeId: "llm_tokens", occurredAt: new Date("2026-11-10T00:10:00Z"), consumedNanos: 1_234_500_000_000n });
      w.creditTypes.set("cr_tokens", { name: "Token credits", currency: "USD", rates: [{ rate: "0.01", at: new Date("2026-01-01T00:00:00Z") }] });
      const h = await harness(dbs[0]!, w, new Date("2026-12-01T00:00:01Z"));
      const preview = (await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2026-11-30T00:00:00Z")) })).invoice!;
      expect(preview.creditsInUnits.map((c) => [c.creditTypeId, c.creditsNanos, c.valueNanos])).toEqual([["cr_tokens", 1_234_500_000_000n, 12_345_000_000n]]);
      const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect(inv.creditsInUnits.map((c) => ({ ...c, $typeName: undefined }))).toEqual([
        { $typeName: undefined, creditTypeId: "cr_tokens", name: "Token credits", creditsNanos: 1_234_500_000_000n, rate: "0.01", rateCurrency: "USD", valueNanos: 12_345_000_000n },
      ]);
      // paid in credits: the money totals are the GPU usage only
      expect(inv.totals!.amountDueNanos).toBe(4n * USD);
      const stored = (await h.client.getInvoice({ invoiceId: inv.id })).invoice!;
      expect(stored.creditsInUnits[0]!.creditsNanos).toBe(1_234_500_000_000n);
      const json = JSON.parse(new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: inv.id, format: RenderFormat.JSON })).content)) as { creditsInUnits: Array<Record<string, string>> };
      expect(json.creditsInUnits).toEqual([{ creditTypeId: "cr_tokens", name: "Token credits", creditsNanos: "1234500000000", rate: "0.01", rateCurrency: "USD", valueNanos: "12345000000" }]);
      const html = new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: inv.id, format: RenderFormat.HTML })).content);
      expect(html).toContain("1234.5 cr_tokens credits of Token credits (cr_tokens) applied, worth 12.345 USD at 0.01 USD per credit");
      const pdf = Buffer.from((await h.client.renderInvoice({ invoiceId: inv.id, format: RenderFormat.PDF })).content).toString("latin1");
      expect(pdf).toContain("1234.5 cr_tokens credits of Token credits");
      // a refresh keeps them (nothing changed)
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: 86_400_000n } });
      expect((await h.client.refreshInvoice({ invoiceId: inv.id })).changed).toBe(false);
      // more credits burned late for November: the refreshed draft shows them
      w.consumption.push({ customerId: "cus_1", unit: "cr_tokens", chargeId: "llm_tokens", occurredAt: new Date("2026-11-30T23:10:00Z"), consumedNanos: 500_000_000_000n });
      const r = await h.client.refreshInvoice({ invoiceId: inv.id });
      expect(r.changed).toBe(true);
      expect(r.invoice!.creditsInUnits[0]!.creditsNanos).toBe(1_734_500_000_000n);
    });

    it("bills the postpaid overage of a credit wallet (its shortfall) at the wallet's overage rate, exactly, with the remainder carried", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1000n, priceNanos: 1_012_345_000_000n, unit: "cr_tokens", eventCount: 3n });
      // the wallet covered 1,000 credits; 12.345 were not covered (POSTPAID_OVERAGE at $0.0133 per credit)
      w.consumption.push({ customerId: "cus_1", unit: "cr_tokens", chargeId: "llm_tokens", occurredAt: new Date("2026-11-10T00:10:00Z"), consumedNanos: 1_000n * USD, shortfallNanos: 12_345_000_000n });
      w.creditTypes.set("cr_tokens", { name: "Token credits", currency: "USD", rates: [{ rate: "0.01", at: new Date("2026-01-01T00:00:00Z") }] });
      w.overagePolicies.set("cus_1|cr_tokens", { rate: "0.0133", currency: "USD" });
      const db = await backend.open();
      dbs.push(db);
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      const over = inv.lines.filter((l) => l.kind === LineKind.OVERAGE);
      // 12.345 x $0.0133 = $0.1641885 exactly -> $0.16 (half-even), $0.0041885 carried
      expect(over.map((l) => [l.chargeId, l.quantity, l.unitPrice, l.amountNanos, l.roundedAmountNanos, l.residueOutNanos])).toEqual([
        ["_overage:cr_tokens", "12.345", "0.0133", 164_188_500n, 160_000_000n, 4_188_500n],
      ]);
      expect(over[0]!.description).toBe("Postpaid overage: 12.345 cr_tokens credits of Token credits not covered by the wallet, at 0.0133 USD per credit");
      expect(inv.totals!.amountDueNanos).toBe(160_000_000n);
      expect(inv.creditsInUnits[0]!.creditsNanos).toBe(1_000n * USD);
      // no overage terms (a HARD_STOP wallet): the shortfall is not billed
      w.overagePolicies.clear();
      const preview = (await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2026-11-30T00:00:00Z")) })).invoice!;
      expect(preview.lines.filter((l) => l.kind === LineKind.OVERAGE)).toEqual([]);
      await h.client.finalizeInvoice({ invoiceId: inv.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
    });

    it("bills the overage of every credit type (11 > CREDIT_TYPES_PER_INVOICE_MAX); only credits_in_units is capped", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      const units = Array.from({ length: CREDIT_TYPES_PER_INVOICE_MAX + 1 }, (_, i) => `cr_${String(i).padStart(2, "0")}`);
      for (const u of units) {
        w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1n, priceNanos: 3n * USD, unit: u, eventCount: 1n });
        // 2 credits covered, 1 not (overage at $0.50 per credit)
        w.consumption.push({ customerId: "cus_1", unit: u, chargeId: "llm_tokens", occurredAt: new Date("2026-11-10T00:10:00Z"), consumedNanos: 2n * USD, shortfallNanos: 1n * USD });
        w.creditTypes.set(u, { name: `Credits ${u}`, currency: "USD", rates: [{ rate: "0.5", at: new Date("2026-01-01T00:00:00Z") }] });
        w.overagePolicies.set(`cus_1|${u}`, { rate: "0.5", currency: "USD" });
      }
      const db = await backend.open();
      dbs.push(db);
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const inv = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      // every shortfall billed: 11 x 1 credit x $0.50
      expect(inv.lines.filter((l) => l.kind === LineKind.OVERAGE).map((l) => l.chargeId)).toEqual(units.map((u) => `_overage:${u}`));
      expect(inv.totals!.amountDueNanos).toBe(5_500_000_000n);
      expect(inv.creditsInUnits.map((c) => c.creditTypeId)).toEqual(units.slice(0, CREDIT_TYPES_PER_INVOICE_MAX));
      const preview = (await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2026-11-30T00:00:00Z")) })).invoice!;
      expect(preview.lines.filter((l) => l.kind === LineKind.OVERAGE)).toHaveLength(units.length);
    });
  });
}
