import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@nanobill/service-kit";
import { CreateTransferResult } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { startPlatform, type Platform } from "../../libs/platform/src/platform.js";
import { audit, auditWhenSettled, formatFindings, type Finding } from "../../libs/platform/src/auditor.js";
import { e2eBackends } from "../e2e/support.js";
import { auditTenant, prng, runWorkload, seedFromEnv, type SimClock, type WorkloadResult } from "./workload.js";

/**
 * A seeded random workload against the in-process platform (real PostgreSQL + Redis when
 * DATABASE_URL / REDIS_URL are set, else embedded PGlite), then the auditor. The platform runs on a
 * simulated clock that starts at a seed-chosen moment and that the workload moves past period
 * ends, so billing periods close (ClosePeriod, duplicated concurrently), invoices are finalized
 * and paid, and late events arrive after a close. A failure prints the seed: rerun with
 * NANOBILL_SEED=<seed> (the same customers, events, closes and moments; only rating's timing varies).
 */
const backend = e2eBackends().at(-1)!;
const seed = seedFromEnv();
const TENANT = "tnt_sim";

/** Real time shifted by an offset; set() moves it forward only (never back). */
function simClock(start: Date): SimClock {
  let offset = start.getTime() - Date.now();
  return {
    now: () => new Date(Date.now() + offset),
    set(d: Date) {
      offset = Math.max(offset, d.getTime() - Date.now());
    },
  };
}

/** A seed-chosen start inside a 2026 month (day 3..25), so period lengths (28..31 days) and boundaries vary by seed. */
function simStart(s: number): Date {
  const r = prng(s ^ 0x5eed5eed);
  return new Date(Date.UTC(2026, r.int(0, 11), r.int(3, 25), r.int(0, 23), r.int(0, 59), r.int(0, 59)));
}

describe(`simulation on ${backend.name} (seed ${seed}, NANOBILL_SEED=${seed} replays it)`, () => {
  let platform: Platform;
  const key = `nbk_sim_${randomBytes(16).toString("hex")}`;
  const start = simStart(seed);
  const clock = simClock(start);
  let w: WorkloadResult | undefined;

  beforeAll(async () => {
    platform = await startPlatform({ ...backend.options(), apiKeys: [{ tenant: TENANT, scopes: ["admin"], key }], logger: silentLogger, consumerWaitMs: 100, clock });
  }, 60_000);
  afterAll(async () => {
    await platform?.close();
    await backend.cleanup();
  }, 30_000);

  it("keeps every nano accounted for through period closes, late events, duplicates and holds", async () => {
    const c = platform.clients(key);
    const t0 = Date.now();
    w = await runWorkload(c, {
      seed,
      runId: `s${seed.toString(36)}`,
      customers: 6,
      batches: 18,
      batchEventsMax: 40,
      holds: 12,
      now: start,
      periods: { clock, count: 2, closeShare: 0.6, finalizeShare: 0.7, paidShare: 0.4, lateShare: 0.25 },
    });
    const t1 = Date.now();
    const findings = await auditWhenSettled([auditTenant(TENANT, c, w)], { timeoutMs: 20_000 });
    const t2 = Date.now();
    console.log(
      `simulation seed ${seed} (start ${start.toISOString()}, end ${clock.now().toISOString()}): ${w.accepted} events accepted, ${w.duplicates} duplicates, ` +
        `${w.lateAfterCloseAccepted} late after a close accepted / ${w.lateAfterCloseRejected} rejected, ${w.holdsCaptured}+${w.holdsReleased} holds, ` +
        `${w.closeCalls} ClosePeriod calls -> ${w.invoicesCreated} invoices (${w.invoicesFinalized} finalized, ${w.invoicesPaid} paid); ` +
        `workload ${t1 - t0} ms, audit ${t2 - t1} ms, ${findings.length} findings`,
    );
    expect(w.accepted, `seed ${seed}`).toBeGreaterThan(0);
    expect(w.lateAfterCloseAccepted! + w.lateAfterCloseRejected!, `seed ${seed}: late events after a close were sent`).toBeGreaterThan(0);
    expect(w.invoicesCreated, `seed ${seed}: every closing subscription gets one invoice per closed period`).toBe(w.customers.filter((x) => x.closes !== undefined).length * 2);
    expect(findings, `seed ${seed} (rerun with NANOBILL_SEED=${seed}):\n${formatFindings(findings)}`).toEqual([]);
  }, 150_000);

  it("the auditor reports tampered workload records and a stray ledger transfer", async () => {
    if (w === undefined) throw new Error(`seed ${seed}: the workload did not run`);
    const c = platform.clients(key);
    const seen = (fs: Finding[]) => new Set(fs.map((x) => `${x.check}|${x.subject}|${x.message}`));
    const baseline = seen(await audit([auditTenant(TENANT, c, w)]));
    const fresh = async (mutate: (x: WorkloadResult) => void): Promise<Finding[]> => {
      const m = structuredClone(w!);
      mutate(m);
      return (await audit([auditTenant(TENANT, c, m)])).filter((x) => !baseline.has(`${x.check}|${x.subject}|${x.message}`));
    };
    const closer = (x: WorkloadResult) => x.customers.find((k) => k.closes !== undefined && (k.finalizedInvoiceIds?.length ?? 0) > 0) ?? x.customers.find((k) => k.closes !== undefined)!;
    const checks = (fs: Finding[]) => [...new Set(fs.map((x) => x.check))].sort();
    // an event billed by no invoice yet, counted as invoiced: the money identity breaks
    const withPending = w.customers.find((k) => (k.pendingLateEventIds?.length ?? 0) > 0);
    if (withPending !== undefined) {
      expect(checks(await fresh((x) => void (x.customers.find((k) => k.customerId === withPending.customerId)!.pendingLateEventIds = []))), `seed ${seed}`).toContain("identity");
    }
    expect(checks(await fresh((x) => void closer(x).closes!.pop())), `seed ${seed}`).toContain("invoice-once");
    expect(checks(await fresh((x) => void closer(x).closes![0]!.outcomes.forEach((o) => (o.result = "CREATED")))), `seed ${seed}`).toContain("invoice-once");
    // an invoice's state misreported: one not paid claimed paid or, when the workload paid every
    // invoice it made, a paid one claimed unpaid
    const invoicesOf = (k: WorkloadResult["customers"][number]) => [...new Set([...(k.finalizedInvoiceIds ?? []), ...(k.closes ?? []).map((r) => r.outcomes[0]!.invoiceId)])];
    const unpaid = w.customers.find((k) => invoicesOf(k).some((id) => !(k.paidInvoiceIds ?? []).includes(id)));
    const paid = w.customers.find((k) => (k.paidInvoiceIds?.length ?? 0) > 0);
    const misreport = unpaid ?? paid;
    if (misreport !== undefined) {
      const mutate = (x: WorkloadResult) => {
        const k = x.customers.find((y) => y.customerId === misreport.customerId)!;
        k.paidInvoiceIds = unpaid !== undefined ? invoicesOf(k) : [];
      };
      expect(checks(await fresh(mutate)), `seed ${seed}`).toContain("invoice");
    }
    expect(checks(await fresh((x) => void x.customers[0]!.acceptedEventIds.pop())), `seed ${seed}`).toContain("buckets");
    expect(checks(await fresh((x) => void (x.anomalies = ["a contract violation"]))), `seed ${seed}`).toContain("workload");
    // one nano moved out of a finalized invoice's receivable by someone else
    // (a customer whose finalized invoices posted to the ledger: one that owed nothing has no
    // receivable account to move money out of)
    const finalized = w.customers.filter((x) => (x.finalizedInvoiceIds?.length ?? 0) > 0);
    const { accounts } = finalized.length > 0 ? await c.ledger.lookupAccounts({ ids: finalized.map((x) => `acct_inv_recv_${x.customerId}_USD`) }) : { accounts: [] };
    const receivable = accounts[0];
    if (receivable !== undefined) {
      await c.ledger.createAccounts({ accounts: [{ id: "acct_sim_stray", unit: "USD", code: 1000 }] });
      const moved = await c.ledger.createTransfers({ transfers: [{ id: "xfer_sim_stray", debitAccountId: receivable.id, creditAccountId: "acct_sim_stray", amountNanos: 1n, unit: "USD", code: 1 }] });
      expect(moved.results.map((r) => r.result), `seed ${seed}`).toEqual([CreateTransferResult.OK]);
      expect(checks(await fresh(() => {})), `seed ${seed}`).toContain("ledger-tie");
    }
  }, 120_000);
});
