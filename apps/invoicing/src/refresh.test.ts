/**
 * Draft refresh during the grace period (RefreshInvoice, and FinalizeInvoice inside the grace
 * period): late usage and prepaid consumption land in the draft itself, the next close does not
 * bill them again, and invoiced + carried residue == rated, exactly.
 */
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { InvoiceStatus, LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { createInvoiceStore } from "./store/invoice-store.js";
import { GRACE_PERIOD_MS_MAX } from "./limits.js";
import { suiteDbs, outcomeOf } from "./testing/suite.js";

const USD = 1_000_000_000n;
const DAY = 86_400_000;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");
const JAN = new Date("2027-01-01T00:00:00Z");

const refusal = outcomeOf;

function world(): FakeWorld {
  const w = new FakeWorld();
  w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
  w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
  w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
  return w;
}

function usage(w: FakeWorld, at: string, priceNanos: bigint): void {
  w.buckets.push({ customerId: "cus_1", chargeId: "llm_tokens", hourStart: new Date(at), quantity: 1n, priceNanos, unit: "USD", eventCount: 1n });
}

for (const backend of testBackends()) {
  describe(`draft refresh on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("puts usage and prepaid money rated late for the period in the draft; the next close bills none of it again; invoiced + carried == rated", async () => {
      const w = world();
      // $3.685 in November (half a cent carried), $1 of it prepaid
      usage(w, "2026-11-10T05:00:00Z", 3_685_000_000n);
      w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-10T05:10:00Z"), consumedNanos: 1n * USD });
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(3 * DAY) } });
      const close = (d: Date) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] });
      const nov = (await close(NOV)).results[0]!.invoice!;
      expect(nov.lines.find((l) => l.kind === LineKind.USAGE)!.roundedAmountNanos).toBe(3_680_000_000n);

      // a late November event (rated at its own time, burning prepaid money) arrives in the grace period
      h.clock.set(new Date("2026-12-02T10:00:00Z"));
      usage(w, "2026-11-30T23:00:00Z", 1_000_000_001n);
      w.consumption.push({ customerId: "cus_1", unit: "USD", chargeId: "llm_tokens", occurredAt: new Date("2026-11-30T23:10:00Z"), consumedNanos: 500_000_000n });
      const r = await h.client.refreshInvoice({ invoiceId: nov.id });
      expect(r.changed).toBe(true);
      const draft = r.invoice!;
      expect(draft.status).toBe(InvoiceStatus.DRAFT);
      expect(draft.refreshedAt).toEqual(timestampFromDate(new Date("2026-12-02T10:00:00Z")));
      const line = draft.lines.find((l) => l.kind === LineKind.USAGE)!;
      // the residue carried in stays the input (none); the one carried out is replaced
      expect([line.amountNanos, line.residueInNanos, line.roundedAmountNanos, line.residueOutNanos]).toEqual([4_685_000_001n, 0n, 4_690_000_000n, -4_999_999n]);
      expect(draft.totals!.creditsAppliedNanos).toBe(-1_500_000_000n);
      expect(draft.totals!.amountDueNanos).toBe(3_190_000_000n);
      expect(draft.lines.filter((l) => l.kind === LineKind.ADJUSTMENT)).toEqual([]);

      // idempotent: nothing new, nothing changed
      const again = await h.client.refreshInvoice({ invoiceId: nov.id });
      expect(again.changed).toBe(false);
      expect(again.invoice!.lines).toEqual(draft.lines);

      // one more late event, then FinalizeInvoice (still inside the grace period) refreshes first
      usage(w, "2026-11-29T12:00:00Z", 2_000_000n);
      h.clock.set(new Date("2026-12-03T23:59:59Z"));
      const fin = (await h.client.finalizeInvoice({ invoiceId: nov.id })).invoice!;
      expect(fin.status).toBe(InvoiceStatus.FINALIZED);
      expect(fin.lines.find((l) => l.kind === LineKind.USAGE)!.amountNanos).toBe(4_687_000_001n);
      expect(fin.totals!.amountDueNanos).toBe(3_190_000_000n);
      expect((await h.client.reconcile({})).differences).toEqual([]);

      // December: usage of its own, and no adjustment for November (the draft already billed it)
      usage(w, "2026-12-15T00:00:00Z", 1_000_000_000n);
      h.clock.set(new Date("2027-01-02T00:00:00Z"));
      const dec = (await close(DEC)).results[0]!.invoice!;
      expect(dec.lines.filter((l) => l.kind === LineKind.ADJUSTMENT || (l.kind === LineKind.CREDITS_APPLIED && l.periodStart?.seconds === timestampFromDate(NOV).seconds))).toEqual([]);
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);

      // invoiced usage + carried residue == rated usage, to the nano
      const rated = w.buckets.reduce((s, b) => s + b.priceNanos, 0n);
      const invoiced = [fin, dec].flatMap((i) => i.lines).filter((l) => l.chargeId === "llm_tokens").reduce((s, l) => s + l.roundedAmountNanos, 0n);
      const residues = await createInvoiceStore(db).readResidues("tnt_a", "cus_1");
      expect(invoiced + residues.get("llm_tokens")!.residueNanos).toBe(rated);
    });

    it("re-assembles a draft's deferral: a draft below the minimum is billed once late usage takes it over, and the deferral is gone", async () => {
      const w = world();
      usage(w, "2026-11-10T05:00:00Z", 2n * USD);
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(DAY), minimumBillableNanos: 5n * USD, deferralPeriodsMax: 3 } });
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect(nov.totals!.amountDueNanos).toBe(0n);
      expect(nov.totals!.deferredNanos).toBe(2n * USD);
      const store = createInvoiceStore(db);
      expect((await store.readDeferral("tnt_a", "cus_1"))?.amountNanos).toBe(2n * USD);
      usage(w, "2026-11-30T20:00:00Z", 4n * USD);
      const r = (await h.client.refreshInvoice({ invoiceId: nov.id })).invoice!;
      expect(r.totals!.amountDueNanos).toBe(6n * USD);
      expect(r.totals!.deferredNanos).toBe(0n);
      expect(r.lines.filter((l) => l.kind === LineKind.CARRIED_FORWARD)).toEqual([]);
      expect(await store.readDeferral("tnt_a", "cus_1")).toBeUndefined();
      // and back below the minimum (the late event was a mistake, re-rated to zero): deferred again
      w.buckets.pop();
      const back = (await h.client.refreshInvoice({ invoiceId: nov.id })).invoice!;
      expect(back.totals!.deferredNanos).toBe(2n * USD);
      expect((await store.readDeferral("tnt_a", "cus_1"))?.amountNanos).toBe(2n * USD);
    });

    it("refuses without a grace period, after it, once the next period is invoiced, and for a finalized invoice; FinalizeInvoice then keeps the draft", async () => {
      const w = world();
      usage(w, "2026-11-10T05:00:00Z", 2n * USD);
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      const close = (d: Date) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] });
      const nov = (await close(NOV)).results[0]!.invoice!;
      usage(w, "2026-11-30T23:00:00Z", 1n * USD);
      // no grace period (the default): the draft is what the close made
      const none = await refusal(h.client.refreshInvoice({ invoiceId: nov.id }));
      expect(none[0]).toBe(Code.FailedPrecondition);
      expect(none[1]).toContain("grace_period_ms = 0");
      // after the grace period ends
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(DAY) } });
      h.clock.set(new Date("2026-12-02T00:00:00Z"));
      const over = await refusal(h.client.refreshInvoice({ invoiceId: nov.id }));
      expect(over[0]).toBe(Code.FailedPrecondition);
      expect(over[1]).toContain("grace period ended at 2026-12-02T00:00:00.000Z");
      // inside it, but December is already invoiced (its close billed November's late usage)
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(GRACE_PERIOD_MS_MAX) } });
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await close(DEC)).results[0]!.invoice!;
      expect(dec.lines.find((l) => l.kind === LineKind.ADJUSTMENT)!.amountNanos).toBe(1n * USD);
      h.clock.set(new Date("2026-12-20T00:00:00Z"));
      const later = await refusal(h.client.refreshInvoice({ invoiceId: nov.id }));
      expect(later[0]).toBe(Code.FailedPrecondition);
      expect(later[1]).toContain("already invoiced");
      // finalize keeps the draft as it is (no double billing of the late $1)
      const fin = (await h.client.finalizeInvoice({ invoiceId: nov.id })).invoice!;
      expect(fin.lines.find((l) => l.kind === LineKind.USAGE)!.amountNanos).toBe(2n * USD);
      expect(fin.refreshedAt).toBeUndefined();
      const done = await refusal(h.client.refreshInvoice({ invoiceId: nov.id }));
      expect(done[0]).toBe(Code.FailedPrecondition);
      expect(done[1]).toContain("only a draft can be refreshed");
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
      void JAN;
    });

    it("refuses a refresh when a later invoice of the customer carried the draft's residues on, and keeps concurrent refreshes exact", async () => {
      const w = world();
      // two subscriptions of one customer share the tax residue
      w.subscriptions.push({ subscriptionId: "sub_2", customerId: "cus_1", planId: "plan_b", planVersion: 1, startedAt: NOV, seats: [] });
      w.plans.set("plan_b", { currency: "USD", minimum: "", charges: [{ chargeId: "gpu", name: "GPU", kind: "usage", amount: "0" }] });
      usage(w, "2026-11-10T05:00:00Z", 1_234_567_891n);
      w.buckets.push({ customerId: "cus_1", chargeId: "gpu", hourStart: new Date("2026-11-10T05:00:00Z"), quantity: 1n, priceNanos: 3_333_333_333n, unit: "USD", eventCount: 1n });
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(5 * DAY), taxRateBps: 725 } });
      const close = (sub: string) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: sub, periodStart: timestampFromDate(NOV) }] });
      const a = (await close("sub_1")).results[0]!.invoice!;
      usage(w, "2026-11-20T05:00:00Z", 7n);
      // concurrent refreshes of the same draft: one result, identical to a sequential refresh
      const rs = await Promise.all([h.client.refreshInvoice({ invoiceId: a.id }), h.client.refreshInvoice({ invoiceId: a.id })]);
      expect(rs.filter((r) => r.changed)).toHaveLength(1);
      expect(rs[0]!.invoice!.lines).toEqual(rs[1]!.invoice!.lines);
      const b = (await close("sub_2")).results[0]!.invoice!;
      const tax = b.lines.find((l) => l.kind === LineKind.TAX)!;
      expect(tax.residueInNanos).toBe(rs[0]!.invoice!.lines.find((l) => l.kind === LineKind.TAX)!.residueOutNanos);
      usage(w, "2026-11-21T05:00:00Z", 1n * USD);
      const refused = await refusal(h.client.refreshInvoice({ invoiceId: a.id }));
      expect(refused[0]).toBe(Code.FailedPrecondition);
      expect(refused[1]).toContain(`residue _tax it carried out was carried on by invoice ${b.id}`);
      // sub_2's own draft can still be refreshed (it owns what it carried out)
      expect((await h.client.refreshInvoice({ invoiceId: b.id })).changed).toBe(false);
    });

    it("keeps a refreshed draft's own adjustments for earlier periods and its seat true-ups exact (its own lines are not counted as billed)", async () => {
      const w = world();
      w.plans.set("plan_llm", {
        currency: "USD",
        minimum: "",
        charges: [
          { chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" },
          { chargeId: "seat", name: "Seats", kind: "seats", amount: "30" },
        ],
      });
      w.subscriptions[0]!.seats = [{ seats: 2, at: NOV }];
      usage(w, "2026-11-10T05:00:00Z", 2n * USD);
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      const close = (d: Date) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] });
      const nov = (await close(NOV)).results[0]!.invoice!;
      await h.client.finalizeInvoice({ invoiceId: nov.id });
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(10 * DAY) } });
      usage(w, "2026-11-30T22:00:00Z", 1n * USD);
      // a seat added for the second half of December, after November's invoice billed December's seats in advance
      w.subscriptions[0]!.seats.push({ seats: 3, at: new Date("2026-12-16T00:00:00Z") });
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await close(DEC)).results[0]!.invoice!;
      const adjustments = (ls: typeof dec.lines) => ls.filter((l) => l.kind === LineKind.ADJUSTMENT).map((l) => [l.chargeId, l.amountNanos, l.periodStart?.seconds]);
      // +$1 late November usage; +1 seat for half of December ($15 x 16/31 days)
      expect(adjustments(dec.lines)).toEqual([
        ["llm_tokens", 1n * USD, timestampFromDate(NOV).seconds],
        ["seat", 15_483_870_968n, timestampFromDate(DEC).seconds],
      ]);
      usage(w, "2026-12-20T00:00:00Z", 5n * USD);
      const r = await h.client.refreshInvoice({ invoiceId: dec.id });
      expect(r.changed).toBe(true);
      expect(adjustments(r.invoice!.lines)).toEqual(adjustments(dec.lines));
      expect(r.invoice!.lines.find((l) => l.kind === LineKind.USAGE)!.amountNanos).toBe(5n * USD);
      expect((await h.client.refreshInvoice({ invoiceId: dec.id })).changed).toBe(false);
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
    });

    it("never finalizes a draft from a refresh that read upstream before another refresh added a top-up (optimistic check, retried once)", async () => {
      const w = world();
      usage(w, "2026-11-10T00:00:00Z", 2n * USD);
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: 3n * BigInt(DAY) } });
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      h.clock.set(new Date("2026-12-02T00:00:00Z"));
      const topUp = (k: number) => ({ customerId: "cus_1", walletId: "wal_usd", grantId: `wal_usd:topup:${k}`, unit: "USD", amountNanos: 20n * USD, at: new Date(`2026-11-30T23:00:0${k}Z`), costBasis: "1", costCurrency: "USD" });
      const oneOffs = (ls: Array<{ kind: LineKind; chargeId: string }>) => ls.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => l.chargeId);
      // FinalizeInvoice's refresh lists the top-ups (none yet); before it writes, the wallet commits
      // one and a RefreshInvoice puts it on the draft
      let fired = false;
      w.hooks.afterListAlerts = async () => {
        if (fired) return;
        fired = true;
        w.topUps.push(topUp(1));
        const r = await h.client.refreshInvoice({ invoiceId: nov.id });
        expect(oneOffs(r.invoice!.lines)).toEqual(["wal_usd:topup:1"]);
      };
      const fin = (await h.client.finalizeInvoice({ invoiceId: nov.id })).invoice!;
      expect(fired).toBe(true);
      expect(fin.status).toBe(InvoiceStatus.FINALIZED);
      expect(oneOffs(fin.lines)).toEqual(["wal_usd:topup:1"]);
      expect(fin.totals!.amountDueNanos).toBe(22n * USD);
      // the next close does not bill it again
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.invoice!;
      expect(oneOffs(dec.lines)).toEqual([]);
    });

    it("refuses a refresh with ABORTED when the draft changed under it twice; the draft keeps what the other refreshes added", async () => {
      const w = world();
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: 3n * BigInt(DAY) } });
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      h.clock.set(new Date("2026-12-02T00:00:00Z"));
      let inner = false;
      let k = 0;
      w.hooks.afterListAlerts = async () => {
        if (inner || k >= 2) return;
        inner = true;
        k += 1;
        w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: `wal_usd:topup:${k}`, unit: "USD", amountNanos: BigInt(k) * USD, at: new Date(`2026-11-30T23:00:0${k}Z`), costBasis: "1", costCurrency: "USD" });
        await h.client.refreshInvoice({ invoiceId: nov.id });
        inner = false;
      };
      const r = await refusal(h.client.finalizeInvoice({ invoiceId: nov.id }));
      expect(r[0]).toBe(Code.Aborted);
      const now = (await h.client.getInvoice({ invoiceId: nov.id })).invoice!;
      expect(now.status).toBe(InvoiceStatus.DRAFT);
      expect(now.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => l.chargeId)).toEqual(["wal_usd:topup:1", "wal_usd:topup:2"]);
      w.hooks = {};
      expect((await h.client.finalizeInvoice({ invoiceId: nov.id })).invoice!.totals!.amountDueNanos).toBe(3n * USD);
    });

    it("validates grace_period_ms (0..31 days) and returns it", async () => {
      const h = await harness(await open(), world(), new Date("2026-12-01T00:00:01Z"));
      const bad = await refusal(h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(GRACE_PERIOD_MS_MAX) + 1n } }));
      expect(bad[0]).toBe(Code.InvalidArgument);
      expect(bad[1]).toContain("settings.grace_period_ms");
      expect((await refusal(h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: -1n } })))[0]).toBe(Code.InvalidArgument);
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: BigInt(GRACE_PERIOD_MS_MAX) } });
      expect((await h.client.getBillingSettings({ customerId: "cus_1" })).settings!.gracePeriodMs).toBe(BigInt(GRACE_PERIOD_MS_MAX));
      expect((await refusal(h.client.refreshInvoice({ invoiceId: "inv_404" })))[0]).toBe(Code.NotFound);
      expect((await refusal(h.reader.refreshInvoice({ invoiceId: "inv_404" })))[0]).toBe(Code.PermissionDenied);
    });
  });
}
