import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { silentLogger } from "@nanobill/service-kit";
import { seedDemo, startPlatform, type Platform, type PlatformClients } from "@nanobill/platform";
import { ClosePeriodResult, LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { e2eBackends } from "./support.js";

/**
 * A hold captured on the prepaid wallet (an agent's task, no metered event) reaches the invoice:
 * credit-wallet (Authorize, Capture) -> ledger -> invoicing (ClosePeriod, Finalize) over gRPC, on
 * the embedded database and on a real PostgreSQL server. Before, the capture was counted as
 * credits applied with no charge: its $0.30 came back to the customer as a credit balance.
 */
const START = new Date("2026-03-05T10:00:00Z");

for (const backend of e2eBackends()) {
  describe(`a captured hold end to end on ${backend.name}`, () => {
    let platform: Platform;
    let c: PlatformClients;
    let offset = START.getTime() - Date.now();
    const clock = { now: () => new Date(Date.now() + offset) };
    const key = `nbk_e2e_${randomBytes(16).toString("hex")}`;

    beforeAll(async () => {
      platform = await startPlatform({ ...backend.options(), apiKeys: [{ tenant: "tnt_demo", scopes: ["admin"], key }], logger: silentLogger, consumerWaitMs: 200, clock });
      c = platform.clients(key);
    });
    afterAll(async () => {
      await platform?.close();
      await backend.cleanup();
    });

    it("bills the captured hold on a 'Captured holds' line that the prepaid money pays: due 0, no credit carried, revenue once", async () => {
      const { subscriptionId } = await seedDemo(c, { customerId: "cus_h", now: START });
      await c.wallet.authorize({ id: "hold_a", customerId: "cus_h", unit: "USD", amountNanos: 300_000_000n, ttlMs: 60_000n, chargeId: "llm_tokens" });
      const cap = await c.wallet.capture({ holdId: "hold_a", amountNanos: 300_000_000n, eventId: "task_a", chargeId: "llm_tokens" });
      expect(cap.capturedNanos).toBe(300_000_000n);

      offset = new Date("2026-04-01T00:10:00Z").getTime() - Date.now();
      const res = (await c.invoicing.closePeriod({ items: [{ customerId: "cus_h", subscriptionId, periodStart: timestampFromDate(new Date("2026-03-01T00:00:00Z")) }] })).results[0]!;
      expect(res.result).toBe(ClosePeriodResult.CREATED);
      const inv = res.invoice!;
      const lines = inv.lines.filter((l) => l.kind !== LineKind.SEATS && l.kind !== LineKind.FLAT && l.roundedAmountNanos !== 0n).map((l) => [LineKind[l.kind], l.chargeId, l.roundedAmountNanos]);
      expect(lines).toEqual([
        ["USAGE", "_captured_holds", 300_000_000n],
        ["CREDITS_APPLIED", "_credits", -300_000_000n],
      ]);
      const fees = inv.lines.filter((l) => l.kind === LineKind.SEATS || l.kind === LineKind.FLAT).reduce((s, l) => s + l.roundedAmountNanos, 0n);
      expect(inv.totals!.amountDueNanos).toBe(fees + inv.totals!.taxNanos);
      await c.invoicing.finalizeInvoice({ invoiceId: inv.id });
      expect((await c.invoicing.reconcile({})).differences).toEqual([]);
      // revenue: the wallet's burn ($0.30) once; the invoice's revenue is its fees only
      const accts = await c.ledger.lookupAccounts({ ids: ["acct_revenue:USD", "acct_inv_revenue_USD"] });
      const bal = (id: string) => {
        const a = accts.accounts.find((x) => x.id === id);
        return a === undefined ? 0n : a.creditsPostedNanos - a.debitsPostedNanos;
      };
      expect([bal("acct_revenue:USD"), bal("acct_inv_revenue_USD")]).toEqual([300_000_000n, fees]);
    });
  });
}
