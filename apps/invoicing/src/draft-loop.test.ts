/**
 * The draft loop (INVOICING_DRAFT_LOOP_MS; PGlite and PostgreSQL): drafts inside their grace period
 * are refreshed by the service itself, drafts past it are finalized when the customer's
 * auto_finalize is on; idempotent, and safe with two replicas (one number, one ledger posting).
 */
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { InvoiceStatus, LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const DAY = 86_400_000;
const NOV = new Date("2026-11-01T00:00:00Z");

function world(customers: number): FakeWorld {
  const w = new FakeWorld();
  w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
  for (let i = 1; i <= customers; i++) {
    w.customers.set(`cus_${i}`, { customerId: `cus_${i}`, currency: "USD", timeZone: "UTC", billingAnchor: NOV });
    w.subscriptions.push({ subscriptionId: `sub_${i}`, customerId: `cus_${i}`, planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
    w.buckets.push({ customerId: `cus_${i}`, chargeId: "llm_tokens", hourStart: new Date("2026-11-10T05:00:00Z"), quantity: 1n, priceNanos: BigInt(i) * USD, unit: "USD", eventCount: 1n });
  }
  return w;
}

for (const backend of testBackends()) {
  describe(`draft loop on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("refreshes a draft inside its grace period (once per interval, nothing written when nothing is new) and finalizes it when the grace period has ended with auto_finalize on", async () => {
      const w = world(1);
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"), { draftLoopMs: 60_000 });
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(3 * DAY), autoFinalize: true } });
      expect((await h.client.getBillingSettings({ customerId: "cus_1" })).settings!.autoFinalize).toBe(true);
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      // a late November event arrives in the grace period
      w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date("2026-11-30T23:00:00Z"), quantity: 1n, priceNanos: 250_000_000n, unit: "USD", eventCount: 1n });
      h.clock.set(new Date("2026-12-02T00:00:00Z"));
      expect(await h.svc.runDraftPass()).toEqual({ claimed: 1, refreshed: 1, unchanged: 0, finalized: 0, skipped: 0, failed: 0 });
      const draft = (await h.client.getInvoice({ invoiceId: nov.id })).invoice!;
      expect(draft.status).toBe(InvoiceStatus.DRAFT);
      expect(draft.lines.find((l) => l.kind === LineKind.USAGE)!.roundedAmountNanos).toBe(1_250_000_000n);
      // claimed at most once per interval
      expect((await h.svc.runDraftPass()).claimed).toBe(0);
      h.clock.set(new Date("2026-12-02T00:01:00Z"));
      expect(await h.svc.runDraftPass()).toEqual({ claimed: 1, refreshed: 0, unchanged: 1, finalized: 0, skipped: 0, failed: 0 });
      expect((await h.client.getInvoice({ invoiceId: nov.id })).invoice!.refreshedAt).toEqual(timestampFromDate(new Date("2026-12-02T00:00:00Z")));
      // the grace period ends: finalized, numbered, posted to the ledger
      h.clock.set(new Date("2026-12-04T00:00:00Z"));
      expect(await h.svc.runDraftPass()).toEqual({ claimed: 1, refreshed: 0, unchanged: 0, finalized: 1, skipped: 0, failed: 0 });
      const fin = (await h.client.getInvoice({ invoiceId: nov.id })).invoice!;
      expect([fin.status, fin.number, fin.totals!.amountDueNanos]).toEqual([InvoiceStatus.FINALIZED, "INV-000001", 1_250_000_000n]);
      expect(w.balance("acct_inv_recv_cus_1_USD")).toBe(-1_250_000_000n);
      h.clock.set(new Date("2026-12-05T00:00:00Z"));
      expect((await h.svc.runDraftPass()).claimed).toBe(0);
      expect((await h.client.reconcile({})).differences).toEqual([]);
    });

    it("leaves drafts alone without a grace period or past it without auto_finalize", async () => {
      const w = world(2);
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(DAY) } });
      const r = await h.client.closePeriod({
        items: [
          { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) },
          { customerId: "cus_2", subscriptionId: "sub_2", periodStart: timestampFromDate(NOV) },
        ],
      });
      // cus_1 is inside its grace period (refreshed, unchanged); cus_2 has none (not claimed)
      expect(await h.svc.runDraftPass()).toEqual({ claimed: 1, refreshed: 0, unchanged: 1, finalized: 0, skipped: 0, failed: 0 });
      h.clock.set(new Date("2026-12-03T00:00:00Z"));
      expect((await h.svc.runDraftPass()).claimed).toBe(0);
      for (const x of r.results) expect((await h.client.getInvoice({ invoiceId: x.invoice!.id })).invoice!.status).toBe(InvoiceStatus.DRAFT);
    });

    it("with two replicas and a caller racing, finalizes each draft once: one number each, one ledger posting", async () => {
      const w = world(4);
      const db = await open();
      const now = new Date("2026-12-01T00:00:01Z");
      const a = await harness(db, w, now, { draftLoopBatch: 3 });
      const b = await harness(db, w, now, { draftLoopBatch: 3 });
      const ids: string[] = [];
      for (let i = 1; i <= 4; i++) {
        await a.client.setBillingSettings({ settings: { customerId: `cus_${i}`, autoFinalize: true } });
        ids.push((await a.client.closePeriod({ items: [{ customerId: `cus_${i}`, subscriptionId: `sub_${i}`, periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!.id);
      }
      const [ra, rb, caller] = await Promise.all([a.svc.runDraftPass(), b.svc.runDraftPass(), b.client.finalizeInvoice({ invoiceId: ids[3]! }).then(() => 1, () => 0)]);
      // the replicas claimed disjoint drafts (never one twice); a draft the caller finalized first is skipped or not claimed
      expect(ra.claimed + rb.claimed).toBeLessThanOrEqual(4);
      expect(ra.claimed + rb.claimed).toBeGreaterThanOrEqual(3);
      // a retried or racing FinalizeInvoice answers the finalized invoice: the caller always succeeds,
      // and the replicas finalized the other three (or all four, when they took the caller's draft first)
      expect(caller).toBe(1);
      expect([3, 4]).toContain(ra.finalized + rb.finalized);
      expect(ra.failed + rb.failed).toBe(0);
      const numbers = [];
      for (const id of ids) {
        const inv = (await a.client.getInvoice({ invoiceId: id })).invoice!;
        expect(inv.status).toBe(InvoiceStatus.FINALIZED);
        numbers.push(inv.number);
      }
      expect(numbers.sort()).toEqual(["INV-000001", "INV-000002", "INV-000003", "INV-000004"]);
      // each receivable holds its invoice once ($1..$4)
      for (let i = 1; i <= 4; i++) expect(w.balance(`acct_inv_recv_cus_${i}_USD`)).toBe(-BigInt(i) * USD);
      expect((await a.svc.runDraftPass()).claimed + (await b.svc.runDraftPass()).claimed).toBe(0);
    });

    it("runs by itself every INVOICING_DRAFT_LOOP_MS once started, and stops", async () => {
      const w = world(1);
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"), { draftLoopMs: 20 });
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", autoFinalize: true } });
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      await h.svc.start();
      try {
        let status = InvoiceStatus.DRAFT;
        for (let i = 0; i < 250 && status !== InvoiceStatus.FINALIZED; i++) {
          await new Promise((r) => setTimeout(r, 20));
          status = (await h.client.getInvoice({ invoiceId: nov.id })).invoice!.status;
        }
        expect(status).toBe(InvoiceStatus.FINALIZED);
      } finally {
        await h.svc.stop();
      }
    });
  });
}
