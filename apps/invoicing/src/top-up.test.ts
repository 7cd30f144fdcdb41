/**
 * Wallet auto top-ups as one-off invoice lines (PGlite and PostgreSQL): one line per top-up made
 * in the period, priced exactly at the grant's cost basis with a named rounding and the remainder
 * carried, billed once per grant ever, shown in every rendering.
 */
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { testBackends } from "@nanobill/db";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClosePeriodResult, InvoiceStatus, LineKind, RenderFormat } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { FakeWorld, harness } from "./testing/fakes.js";
import { createInvoiceStore } from "./store/invoice-store.js";
import { TOP_UPS_PER_PERIOD_MAX } from "./limits.js";
import type { Logger } from "@nanobill/service-kit";
import { suiteDbs } from "./testing/suite.js";

const USD = 1_000_000_000n;
const NOV = new Date("2026-11-01T00:00:00Z");
const DEC = new Date("2026-12-01T00:00:00Z");

function world(): FakeWorld {
  const w = new FakeWorld();
  w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
  w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
  w.plans.set("plan_b", { currency: "USD", minimum: "", charges: [{ chargeId: "gpu", name: "GPU", kind: "usage", amount: "0" }] });
  w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
  w.subscriptions.push({ subscriptionId: "sub_2", customerId: "cus_1", planId: "plan_b", planVersion: 1, startedAt: NOV, seats: [] });
  // a prepaid USD wallet topped up by $50 (cost basis 1), a credits wallet topped up by 1,000.5
  // credits at $0.0123 each, and a top-up bought in EUR (not billable on a USD invoice)
  w.topUps.push(
    { customerId: "cus_1", walletId: "wal_usd", grantId: "wal_usd:topup:1", unit: "USD", amountNanos: 50n * USD, at: new Date("2026-11-05T10:00:00Z"), costBasis: "1", costCurrency: "USD" },
    { customerId: "cus_1", walletId: "wal_cr", grantId: "wal_cr:topup:1", unit: "cr_tokens", amountNanos: 1_000_500_000_000n, at: new Date("2026-11-20T10:00:00Z"), costBasis: "0.0123", costCurrency: "USD" },
    { customerId: "cus_1", walletId: "wal_eur", grantId: "wal_eur:topup:1", unit: "cr_eur", amountNanos: 10n * USD, at: new Date("2026-11-21T10:00:00Z"), costBasis: "2", costCurrency: "EUR" },
    // December: another grant of the credits wallet
    { customerId: "cus_1", walletId: "wal_cr", grantId: "wal_cr:topup:2", unit: "cr_tokens", amountNanos: 500_000_000_000n, at: new Date("2026-12-03T10:00:00Z"), costBasis: "0.0123", costCurrency: "USD" },
  );
  w.walletTerms.set("wal_cr", { costBasis: "0.0123", costCurrency: "USD", prepaid: false, unit: "cr_tokens" });
  return w;
}

for (const backend of testBackends()) {
  describe(`auto top-up one-off lines on ${backend.name}`, () => {
    const open = suiteDbs(backend, { beforeAll, afterAll });

    it("bills each top-up of the period once, at exactly amount x cost basis, rounded half-even with the remainder carried", async () => {
      const w = world();
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      // the preview of November shows them before the close
      const preview = (await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2026-11-30T00:00:00Z")) })).invoice!;
      expect(preview.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => l.chargeId)).toEqual(["wal_usd:topup:1", "wal_cr:topup:1"]);
      const r = await h.client.closePeriod({
        items: [
          { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) },
          { customerId: "cus_1", subscriptionId: "sub_2", periodStart: timestampFromDate(NOV) },
        ],
      });
      const [nov, other] = r.results.map((x) => x.invoice!);
      const oneOffs = nov!.lines.filter((l) => l.kind === LineKind.ONE_OFF);
      expect(oneOffs.map((l) => [l.chargeId, l.quantity, l.unitPrice, l.amountNanos, l.roundedAmountNanos, l.residueOutNanos])).toEqual([
        ["wal_usd:topup:1", "50", "1", 50n * USD, 50n * USD, 0n],
        // 1,000.5 x $0.0123 = $12.30615 exactly -> $12.31 (half-even), -$0.00385 carried
        ["wal_cr:topup:1", "1000.5", "0.0123", 12_306_150_000n, 12_310_000_000n, -3_850_000n],
      ]);
      expect(oneOffs[1]!.description).toContain("Auto top-up of 1000.5 cr_tokens on 2026-11-20T10:00:00.000Z at 0.0123 USD per unit");
      expect(nov!.totals!.amountDueNanos).toBe(62_310_000_000n);
      // the customer's other subscription does not bill them again; the EUR top-up is not billed in USD
      expect(other!.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
      // closing again (and a refresh of the draft) bills nothing twice
      expect((await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.result).toBe(ClosePeriodResult.ALREADY_CLOSED);
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: 86_400_000n } });
      const refreshed = await h.client.refreshInvoice({ invoiceId: nov!.id });
      expect(refreshed.changed).toBe(false);
      // December: the top-up at its grant's cost basis, with November's carried residue
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.invoice!;
      const d = dec.lines.filter((l) => l.kind === LineKind.ONE_OFF);
      // 500 x $0.0123 = $6.15; with -$0.00385 carried in: $6.14615 -> $6.15, -$0.00385 carried on
      expect(d.map((l) => [l.chargeId, l.amountNanos, l.residueInNanos, l.roundedAmountNanos, l.residueOutNanos])).toEqual([["wal_cr:topup:2", 6_150_000_000n, -3_850_000n, 6_150_000_000n, -3_850_000n]]);
      // invoiced + carried == what the top-ups cost, exactly
      const residue = (await createInvoiceStore(db).readResidues("tnt_a", "cus_1")).get("_top_up")!.residueNanos;
      expect(50n * USD + 12_310_000_000n + 6_150_000_000n + residue).toBe(50n * USD + 12_306_150_000n + 6_150_000_000n);
      // renderings show the one-off lines
      const html = new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: nov!.id, format: RenderFormat.HTML })).content);
      expect(html).toContain("One-off");
      expect(html).toContain("wal_cr:topup:1");
      const json = JSON.parse(new TextDecoder().decode((await h.client.renderInvoice({ invoiceId: nov!.id, format: RenderFormat.JSON })).content)) as { lines: Array<{ kind: string; chargeId: string }> };
      expect(json.lines.filter((l) => l.kind === "one_off").map((l) => l.chargeId)).toEqual(["wal_usd:topup:1", "wal_cr:topup:1"]);
      const pdf = Buffer.from((await h.client.renderInvoice({ invoiceId: nov!.id, format: RenderFormat.PDF })).content).toString("latin1");
      expect(pdf).toContain("One-off");
      await h.client.finalizeInvoice({ invoiceId: nov!.id });
      await h.client.finalizeInvoice({ invoiceId: dec.id });
      expect((await h.client.reconcile({})).differences).toEqual([]);
    });

    it("never bills a grant twice, even when another period's window lists it again or its invoice was voided", async () => {
      const w = world();
      const h = await harness(await open(), w, new Date("2027-01-01T00:00:01Z"));
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect(nov.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toHaveLength(2);
      await h.client.voidInvoice({ invoiceId: nov.id, reason: "test" });
      // the wallet re-lists November's top-up with a December time (a replayed alert): still billed once
      w.topUps.push({ ...w.topUps[1]!, at: new Date("2026-12-10T00:00:00Z") });
      const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.invoice!;
      expect(dec.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => l.chargeId)).toEqual(["wal_cr:topup:2"]);
    });

    it("bills a top-up recorded after its period's close on the next invoice, naming its period, once; replays and later closes create nothing", async () => {
      const w = world();
      w.topUps = [];
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const close = (d: Date) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] });
      const nov = (await close(NOV)).results[0]!.invoice!;
      expect(nov.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
      // the wallet commits a top-up made at the very end of November after November's close read the alerts
      w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: "wal_usd:topup:late", unit: "USD", amountNanos: 20n * USD, at: new Date("2026-11-30T23:59:59.900Z"), costBasis: "1", costCurrency: "USD" });
      // the preview of December shows it
      h.clock.set(new Date("2026-12-15T00:00:00Z"));
      const preview = (await h.client.previewInvoice({ customerId: "cus_1" })).invoice!;
      expect(preview.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.amountNanos])).toEqual([["wal_usd:topup:late", 20n * USD]]);
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      // two closes of December racing: one invoice, the top-up on it once
      const raced = await Promise.all([close(DEC), close(DEC)]);
      expect(raced.map((x) => x.results[0]!.result).sort()).toEqual([ClosePeriodResult.CREATED, ClosePeriodResult.ALREADY_CLOSED]);
      const dec = raced.find((x) => x.results[0]!.result === ClosePeriodResult.CREATED)!.results[0]!.invoice!;
      const lines = dec.lines.filter((l) => l.kind === LineKind.ONE_OFF);
      expect(lines.map((l) => [l.chargeId, l.amountNanos, l.roundedAmountNanos, l.periodStart, l.periodEnd])).toEqual([
        ["wal_usd:topup:late", 20n * USD, 20n * USD, timestampFromDate(NOV), timestampFromDate(DEC)],
      ]);
      expect(lines[0]!.description).toContain("for 2026-11-01 to 2026-12-01 (not billed by that period's invoice)");
      expect(dec.totals!.amountDueNanos).toBe(20n * USD);
      // replays create nothing; the next close and preview do not bill it again
      const again = (await close(DEC)).results[0]!;
      expect(again.result).toBe(ClosePeriodResult.ALREADY_CLOSED);
      expect(again.invoice!.id).toBe(dec.id);
      h.clock.set(new Date("2027-02-01T00:00:01Z"));
      expect((await h.client.previewInvoice({ customerId: "cus_1", at: timestampFromDate(new Date("2027-01-31T00:00:00Z")) })).invoice!.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
      const jan = (await close(new Date("2027-01-01T00:00:00Z"))).results[0]!.invoice!;
      expect(jan.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM invoice_lines WHERE tenant = 'tnt_a' AND charge_id = 'wal_usd:topup:late'`);
      expect(rows[0]!.n).toBe(1);
    });

    it("puts a late top-up on its own period's draft during the grace period; the next invoice does not bill it again", async () => {
      const w = world();
      w.topUps = [];
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: 3n * 86_400_000n } });
      const close = (d: Date) => h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) }] });
      const nov = (await close(NOV)).results[0]!.invoice!;
      w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: "wal_usd:topup:late", unit: "USD", amountNanos: 20n * USD, at: new Date("2026-11-30T23:59:59.900Z"), costBasis: "1", costCurrency: "USD" });
      h.clock.set(new Date("2026-12-02T00:00:00Z"));
      const r = await h.client.refreshInvoice({ invoiceId: nov.id });
      expect(r.changed).toBe(true);
      expect(r.invoice!.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.periodStart])).toEqual([["wal_usd:topup:late", timestampFromDate(NOV)]]);
      expect((await h.client.refreshInvoice({ invoiceId: nov.id })).changed).toBe(false);
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await close(DEC)).results[0]!.invoice!;
      expect(dec.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
    });

    it("bills more top-ups than one invoice bills over two invoices (oldest first, each once), and the other items of the batch close", async () => {
      const w = world();
      w.topUps = [];
      w.customers.set("cus_2", { customerId: "cus_2", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.subscriptions.push({ subscriptionId: "sub_c2", customerId: "cus_2", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      w.buckets.push({ customerId: "cus_2", chargeId: "llm_tokens", hourStart: new Date("2026-11-10T00:00:00Z"), quantity: 1n, priceNanos: 7n * USD, unit: "USD", eventCount: 1n });
      const n = TOP_UPS_PER_PERIOD_MAX + 3;
      for (let k = 0; k < n; k++) {
        w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: `wal_usd:topup:${String(k).padStart(3, "0")}`, unit: "USD", amountNanos: 1n * USD, at: new Date(Date.UTC(2026, 10, 2, 0, k)), costBasis: "1", costCurrency: "USD" });
      }
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const items = (d: Date) => [
        { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(d) },
        { customerId: "cus_2", subscriptionId: "sub_c2", periodStart: timestampFromDate(d) },
      ];
      const r = await h.client.closePeriod({ items: items(NOV) });
      expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.CREATED, ClosePeriodResult.CREATED]);
      const nov = r.results[0]!.invoice!;
      const novIds = nov.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => l.chargeId);
      expect(novIds).toEqual(w.topUps.slice(0, TOP_UPS_PER_PERIOD_MAX).map((t) => t.grantId));
      expect(r.results[1]!.invoice!.totals!.amountDueNanos).toBe(7n * USD);
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await h.client.closePeriod({ items: items(DEC) })).results[0]!.invoice!;
      expect(dec.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => l.chargeId)).toEqual(w.topUps.slice(TOP_UPS_PER_PERIOD_MAX).map((t) => t.grantId));
      // every grant billed once: $1 each
      expect(nov.totals!.amountDueNanos + dec.totals!.amountDueNanos).toBe(BigInt(n) * USD);
      const { rows } = await db.query(`SELECT count(DISTINCT charge_id)::int AS d, count(*)::int AS n FROM invoice_lines WHERE tenant = 'tnt_a' AND kind = 'one_off'`);
      expect(rows[0]).toEqual({ d: n, n });
    });

    it("refuses only the customer's item when top-ups beyond one invoice would leave the next close's look-back; the other items close, nothing is written for it", async () => {
      const w = world();
      w.topUps = [];
      w.customers.set("cus_2", { customerId: "cus_2", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.subscriptions.push({ subscriptionId: "sub_c2", customerId: "cus_2", planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
      // made in early October (November's look-back starts 35 days before November; December's does not reach them)
      for (let k = 0; k < TOP_UPS_PER_PERIOD_MAX + 1; k++) {
        w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: `wal_usd:topup:${String(k).padStart(3, "0")}`, unit: "USD", amountNanos: 1n * USD, at: new Date(Date.UTC(2026, 9, 2, 0, k)), costBasis: "1", costCurrency: "USD" });
      }
      const db = await open();
      const h = await harness(db, w, new Date("2026-12-01T00:00:01Z"));
      const r = await h.client.closePeriod({
        items: [
          { customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) },
          { customerId: "cus_1", subscriptionId: "sub_2", periodStart: timestampFromDate(NOV) },
          { customerId: "cus_2", subscriptionId: "sub_c2", periodStart: timestampFromDate(NOV) },
        ],
      });
      expect(r.results.map((x) => x.result)).toEqual([ClosePeriodResult.FAILED_PRECONDITION, ClosePeriodResult.CREATED, ClosePeriodResult.CREATED]);
      expect(r.results[0]!.message).toContain(`at most ${TOP_UPS_PER_PERIOD_MAX}`);
      expect(r.results[0]!.invoice).toBeUndefined();
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM invoices WHERE tenant = 'tnt_a' AND subscription_id = 'sub_1'`);
      expect(rows[0]!.n).toBe(0);
    });

    it("refuses FinalizeInvoice in the grace period (never finalizes without them) when the refresh finds top-ups it could only bill by dropping some", async () => {
      const w = world();
      w.topUps = [];
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      await h.client.setBillingSettings({ settings: { customerId: "cus_1", gracePeriodMs: 3n * 86_400_000n } });
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      // alerts of early October become visible after the close: too many for one invoice, and December's look-back does not reach them
      for (let k = 0; k < TOP_UPS_PER_PERIOD_MAX + 1; k++) {
        w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: `wal_usd:topup:${String(k).padStart(3, "0")}`, unit: "USD", amountNanos: 1n * USD, at: new Date(Date.UTC(2026, 9, 2, 0, k)), costBasis: "1", costCurrency: "USD" });
      }
      h.clock.set(new Date("2026-12-02T00:00:00Z"));
      let code: Code | "ok" = "ok";
      try {
        await h.client.finalizeInvoice({ invoiceId: nov.id });
      } catch (e) {
        code = ConnectError.from(e).code;
      }
      expect(code).toBe(Code.FailedPrecondition);
      expect((await h.client.getInvoice({ invoiceId: nov.id })).invoice!.status).toBe(InvoiceStatus.DRAFT);
    });

    it("does not bill a top-up whose grant the wallet does not list (no guess from the wallet's current terms): logged, billed once the grant is listed", async () => {
      const w = world();
      // the wallet's auto top-up terms changed since the grant was bought ($0.0123 then, $0.05 now); GetBalance no longer lists it
      w.topUps = [{ customerId: "cus_1", walletId: "wal_cr", grantId: "wal_cr:topup:old", unit: "cr_tokens", amountNanos: 100n * USD, at: new Date("2026-11-20T10:00:00Z"), costBasis: "", costCurrency: "" }];
      w.walletTerms.set("wal_cr", { costBasis: "0.05", costCurrency: "USD", prepaid: false, unit: "cr_tokens" });
      const warnings: Array<{ msg: string; fields: Record<string, unknown> }> = [];
      const logger: Logger = {
        debug: () => {},
        info: () => {},
        warn: (msg, fields) => warnings.push({ msg, fields: (fields ?? {}) as Record<string, unknown> }),
        error: () => {},
        child: () => logger,
      };
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"), {}, logger);
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect(nov.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
      const warned = warnings.find((x) => x.fields.grant_id === "wal_cr:topup:old");
      expect(warned?.msg).toContain("its price is not known");
      expect(String(warned?.fields.reason)).toContain("does not list grant wal_cr:topup:old");
      // once the wallet lists the grant (with the cost basis it was bought at), the next close bills it, naming November
      w.topUps[0]!.costBasis = "0.0123";
      w.topUps[0]!.costCurrency = "USD";
      h.clock.set(new Date("2027-01-01T00:00:01Z"));
      const dec = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(DEC) }] })).results[0]!.invoice!;
      expect(dec.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.unitPrice, l.amountNanos, l.periodStart])).toEqual([["wal_cr:topup:old", "0.0123", 1_230_000_000n, timestampFromDate(NOV)]]);
    });

    it("prices a top-up from the cost basis its alert carries (the wallet's grant list no longer has it); an older alert without it falls back to GetBalance", async () => {
      const w = world();
      w.topUps = [
        // the alert carries what the grant was bought at: billed though GetBalance does not list it
        { customerId: "cus_1", walletId: "wal_cr", grantId: "wal_cr:topup:a", unit: "cr_tokens", amountNanos: 100n * USD, at: new Date("2026-11-20T10:00:00Z"), costBasis: "0.0123", costCurrency: "USD", unlisted: true },
        // an alert from before alerts carried it, grant not listed either: not priced, not billed
        { customerId: "cus_1", walletId: "wal_cr", grantId: "wal_cr:topup:b", unit: "cr_tokens", amountNanos: 100n * USD, at: new Date("2026-11-21T10:00:00Z"), costBasis: "0.0123", costCurrency: "USD", unlisted: true, legacyAlert: true },
        // an older alert whose grant GetBalance lists: priced from the grant
        { customerId: "cus_1", walletId: "wal_usd", grantId: "wal_usd:topup:c", unit: "USD", amountNanos: 7n * USD, at: new Date("2026-11-22T10:00:00Z"), costBasis: "1", costCurrency: "USD", legacyAlert: true },
      ];
      w.walletTerms.set("wal_cr", { costBasis: "0.05", costCurrency: "USD", prepaid: false, unit: "cr_tokens" });
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      const nov = (await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_1", periodStart: timestampFromDate(NOV) }] })).results[0]!.invoice!;
      expect(nov.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.unitPrice, l.amountNanos])).toEqual([
        ["wal_cr:topup:a", "0.0123", 1_230_000_000n],
        ["wal_usd:topup:c", "1", 7n * USD],
      ]);
    });

    it("lists the auto top-ups of a request closing many customers once, bills each on its own customer's invoice, and reads each customer's wallet once per window", async () => {
      const w = new FakeWorld();
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.plans.set("plan_b", { currency: "USD", minimum: "", charges: [{ chargeId: "gpu", name: "GPU", kind: "usage", amount: "0" }] });
      const items = [];
      for (let i = 1; i <= 25; i++) {
        w.customers.set(`cus_${i}`, { customerId: `cus_${i}`, currency: "USD", timeZone: "UTC", billingAnchor: NOV });
        w.subscriptions.push({ subscriptionId: `sub_${i}`, customerId: `cus_${i}`, planId: "plan_llm", planVersion: 1, startedAt: NOV, seats: [] });
        w.subscriptions.push({ subscriptionId: `sub_${i}_b`, customerId: `cus_${i}`, planId: "plan_b", planVersion: 1, startedAt: NOV, seats: [] });
        items.push({ customerId: `cus_${i}`, subscriptionId: `sub_${i}`, periodStart: timestampFromDate(NOV) }, { customerId: `cus_${i}`, subscriptionId: `sub_${i}_b`, periodStart: timestampFromDate(NOV) });
        // odd customers topped up $i in November (one of them late in October, not billed yet)
        if (i % 2 === 1) w.topUps.push({ customerId: `cus_${i}`, walletId: `wal_${i}`, grantId: `wal_${i}:topup:1`, unit: "USD", amountNanos: BigInt(i) * USD, at: new Date(i === 1 ? "2026-10-31T23:00:00Z" : "2026-11-15T00:00:00Z"), costBasis: "1", costCurrency: "USD" });
        w.consumption.push({ customerId: `cus_${i}`, unit: "USD", chargeId: "gpu", occurredAt: new Date("2026-11-20T00:00:00Z"), consumedNanos: 1n * USD });
      }
      const h = await harness(await open(), w, new Date("2026-12-01T00:00:01Z"));
      w.calls.clear();
      const r = await h.client.closePeriod({ items });
      expect(r.results.every((x) => x.result === ClosePeriodResult.CREATED)).toBe(true);
      for (let i = 1; i <= 25; i++) {
        const inv = r.results.find((x) => x.subscriptionId === `sub_${i}`)!.invoice!;
        expect(inv.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.amountNanos])).toEqual(i % 2 === 1 ? [[`wal_${i}:topup:1`, BigInt(i) * USD]] : []);
        // the prepaid burn of the second subscription's charge is applied on its own invoice
        const other = r.results.find((x) => x.subscriptionId === `sub_${i}_b`)!.invoice!;
        expect(other.totals!.creditsAppliedNanos).toBe(-1n * USD);
        expect(other.lines.filter((l) => l.kind === LineKind.ONE_OFF)).toEqual([]);
      }
      // one paged listing (pages of 2 in the fake) for 25 customers instead of 25 listings; one ListConsumption per customer for its two subscriptions
      expect(w.calls.get("ListAlerts")).toBe(7);
      expect(w.calls.get("ListConsumption")).toBe(25);
      // the preview and a second request still bill nothing twice
      expect((await h.client.closePeriod({ items })).results.every((x) => x.result === ClosePeriodResult.ALREADY_CLOSED)).toBe(true);
    });

    it("bills top-ups of a period on the invoice of the first subscription alive in it (an ended subscription's successor)", async () => {
      const w = new FakeWorld();
      w.customers.set("cus_1", { customerId: "cus_1", currency: "USD", timeZone: "UTC", billingAnchor: NOV });
      w.plans.set("plan_llm", { currency: "USD", minimum: "", charges: [{ chargeId: "llm_tokens", name: "LLM tokens", kind: "usage", amount: "0" }] });
      w.subscriptions.push({ subscriptionId: "sub_1", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: NOV, endedAt: DEC, seats: [] });
      w.subscriptions.push({ subscriptionId: "sub_3", customerId: "cus_1", planId: "plan_llm", planVersion: 1, startedAt: DEC, seats: [] });
      w.topUps.push({ customerId: "cus_1", walletId: "wal_usd", grantId: "wal_usd:topup:dec", unit: "USD", amountNanos: 20n * USD, at: new Date("2026-12-03T10:00:00Z"), costBasis: "1", costCurrency: "USD" });
      const h = await harness(await open(), w, new Date("2027-01-01T00:00:01Z"));
      const r = await h.client.closePeriod({ items: [{ customerId: "cus_1", subscriptionId: "sub_3", periodStart: timestampFromDate(DEC) }] });
      // before: sub_1 (the customer's first subscription, ended) was the only one to bill top-ups
      expect(r.results[0]!.invoice!.lines.filter((l) => l.kind === LineKind.ONE_OFF).map((l) => [l.chargeId, l.amountNanos])).toEqual([["wal_usd:topup:dec", 20n * USD]]);
    });
  });
}
