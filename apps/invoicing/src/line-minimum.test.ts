/**
 * Per-line minimum billable amount through the service and the store (PGlite and PostgreSQL):
 * usage lines below it are carried per charge with their period of origin, billed at the limit
 * or once the accumulated amount reaches the minimum; a refreshed draft re-decides it.
 */
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { LineKind, RenderFormat } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { createInvoiceStore } from "./store/invoice-store.js";
import { suiteDbs, outcomeOf } from "./testing/suite.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");
const JAN = new Date("2027-01-01T00:00:00Z");
const FEB = new Date("2027-02-01T00:00:00Z");

function world(): FakeWorld {
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
  return w;
}

function usage(w: FakeWorld, chargeId: string, at: string, priceNanos: bigint): void {
  w.buckets.push({ customerId: "cus_1", chargeId, hourStart: new Date(at), quantity: 1n, priceNanos, unit: "USD", eventCount: 1n });
}

const refusal = outcomeOf;

for (const backend of testBackends()) {
  describe(`line minimum billable amount on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("carries a small usage line per charge with its period of origin, bills it when the sum reaches the minimum, shows it in every rendering", async () => {
      const w = world();
      usage(w, "llm_tokens", "2026-11-10T00:00:00Z", 400_000_000n);
      usage(w, "gpu", "2026-11-10T00:00:00Z", 5n * USD);
      usage(w, "llm_tokens", "2026-12-10T00:00:00Z", 300_000_000n);
      usage(w, "llm_tokens", "2027-01-10T00:00:00Z", 500_000_000n);
      const db = await open();
      const h = await harness(db, w, new Date("2027-02-02T00:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 3 } });
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      const carried = (ls: Array<{ kind: LineKind; chargeId: string; amountNanos: bigint; periodStart?: { seconds: bigint } }>) =>
        ls.filter((l) => l.kind === LineKind.CARRIED_FORWARD).map((l) => [l.chargeId, l.amountNanos, l.periodStart!.seconds]);
      const nov = await close(NOV);
      // $0.40 of LLM tokens is below the $1 line minimum: carried; GPU ($5) billed
      expect(carried(nov.lines)).toEqual([["llm_tokens", -400_000_000n, timestampFromDate(NOV).seconds]]);
      expect(nov.totals!.amountDueNanos).toBe(5n * USD);
      const store = createInvoiceStore(db);
      expect((await store.readLineDeferrals("tnt_a", "cus_1")).get("llm_tokens")).toMatchObject({ amountNanos: 400_000_000n, periods: 1, since: NOV });
      const dec = await close(DEC);
      expect(carried(dec.lines)).toEqual([
        ["llm_tokens", 400_000_000n, timestampFromDate(NOV).seconds],
        ["llm_tokens", -700_000_000n, timestampFromDate(NOV).seconds],
      ]);
      expect(dec.totals!.amountDueNanos).toBe(0n);
      const jan = await close(JAN);
      // $0.70 carried + $0.50 = $1.20 >= $1: billed, naming November
      expect(carried(jan.lines)).toEqual([["llm_tokens", 700_000_000n, timestampFromDate(NOV).seconds]]);
      expect(jan.totals!.amountDueNanos).toBe(1_200_000_000n);
      const line = jan.lines.find((l) => l.kind === LineKind.CARRIED_FORWARD)!;
      expect(line.description).toBe("LLM tokens: usage below the line minimum carried forward since 2026-11-01 (2 periods)");
      expect((await store.readLineDeferrals("tnt_a", "cus_1")).size).toBe(0);
      // invoiced == rated (whole cents: no residue)
      const rated = w.buckets.reduce((s, b) => s + b.priceNanos, 0n);
      expect(nov.totals!.amountDueNanos + dec.totals!.amountDueNanos + jan.totals!.amountDueNanos).toBe(rated);
      for (const inv of [nov, dec, jan]) await h.client.finalizeInvoice({ invoiceId: inv.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
      const html = new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: jan.id, format: RenderFormat.HTML })).content);
      expect(html).toContain("carried forward since 2026-11-01 (2 periods)");
      const json = JSON.parse(new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: dec.id, format: RenderFormat.JSON })).content)) as { lines: Array<{ description: string }> };
      expect(json.lines.map((l) => l.description)).toContain("LLM tokens: usage below the line minimum, carried to the next invoice (deferred since 2026-11-01)");
      const pdf = Buffer.from((await h.client.renderInvoice({ invoiceId: jan.id, format: RenderFormat.PDF })).content).toString("latin1");
      expect(pdf).toContain("carried forward since 2026-11-01");
      void FEB;
    });

    it("re-decides a draft's line deferral on refresh (late usage takes the line over the minimum)", async () => {
      const w = world();
      usage(w, "llm_tokens", "2026-11-10T00:00:00Z", 400_000_000n);
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T01:00:00Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 3, gracePeriodMs: 86_400_000n } });
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect(nov.totals!.amountDueNanos).toBe(0n);
      usage(w, "llm_tokens", "2026-11-30T23:00:00Z", 700_000_000n);
      const r = (await h.client.refreshInvoice({ invoiceId: nov.id })).invoice!;
      expect(r.lines.filter((l) => l.kind === LineKind.CARRIED_FORWARD)).toEqual([]);
      expect(r.totals!.amountDueNanos).toBe(1_100_000_000n);
      const store = createInvoiceStore(db);
      expect((await store.readLineDeferrals("tnt_a", "cus_1")).size).toBe(0);
      w.buckets.pop();
      const back = (await h.client.refreshInvoice({ invoiceId: nov.id })).invoice!;
      expect(back.totals!.amountDueNanos).toBe(0n);
      expect((await store.readLineDeferrals("tnt_a", "cus_1")).get("llm_tokens")?.amountNanos).toBe(400_000_000n);
    });

    it("bills a small line carried below the line minimum on the subscription's last invoice (it ends mid-period): nothing left in line_deferrals", async () => {
      const w = world();
      w.subscriptions[0]!.endedAt = new Date("2026-12-10T00:00:00Z");
      usage(w, "llm_tokens", "2026-11-10T00:00:00Z", 400_000_000n);
      usage(w, "llm_tokens", "2026-12-05T00:00:00Z", 300_000_000n);
      const db = await open();
      const h = await harness(db, w, new Date("2027-01-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: 1n * USD, deferralPeriodsMax: 3 } });
      const close = async (d: Date) => (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] })).results[0]!.invoice!;
      const nov = await close(NOV);
      expect(nov.totals!.amountDueNanos).toBe(0n);
      const store = createInvoiceStore(db);
      expect((await store.readLineDeferrals("tnt_a", "cus_1")).get("llm_tokens")?.amountNanos).toBe(400_000_000n);
      // December is the last period (the subscription ends on the 10th): $0.40 carried + $0.30 billed, below the minimum or not
      const dec = await close(DEC);
      expect(dec.lines.filter((l) => l.kind === LineKind.CARRIED_FORWARD).map((l) => l.amountNanos)).toEqual([400_000_000n]);
      expect(dec.totals!.amountDueNanos).toBe(700_000_000n);
      expect((await store.readLineDeferrals("tnt_a", "cus_1")).size).toBe(0);
      const rated = w.buckets.reduce((s, b) => s + b.priceNanos, 0n);
      expect(nov.totals!.amountDueNanos + dec.totals!.amountDueNanos).toBe(rated);
    });

    it("validates line_minimum_billable_nanos, naming the field", async () => {
      const h = await harness(await open(), world(), new Date("2026-12-01T01:00:00Z"));
      const noEnd = await refusal(h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: 1n } }));
      expect(noEnd[0]).toBe(Code.InvalidArgument);
      expect(noEnd[1]).toContain("settings.deferral_periods_max");
      const neg = await refusal(h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: -1n, deferralPeriodsMax: 1 } }));
      expect(neg[1]).toContain("settings.line_minimum_billable_nanos");
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", lineMinimumBillableNanos: 2n * USD, deferralPeriodsMax: 1 } });
      expect((await h.client.getBillingSettings({ customerId: "cus_1" })).settings!.lineMinimumBillableNanos).toBe(2n * USD);
    });
  });
}
