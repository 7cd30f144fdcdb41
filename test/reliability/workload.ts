/**
 * A seeded random workload for the reliability suites: customers on the demo plan with prepaid
 * wallets and random extra grants, LLM-call events in random batches with duplicates and late
 * arrivals (inside the current period), and holds that are captured or released. Everything it
 * was told was ACCEPTED / captured is recorded for the auditor.
 *
 * With `periods` (a clock the platform runs on), it also walks through billing periods: events in
 * period 0, then the clock moves past each period end and, for a seeded subset of subscriptions,
 * the ended period is closed through invoicing's ClosePeriod (two or three concurrent duplicate
 * calls for the same subscription/period), some invoices are finalized (sometimes twice at once)
 * and paid, and the next period's events include late ones for the period just closed (metering
 * may reject them as period_closed; otherwise they must land as an adjustment on the next
 * invoice). What was closed, finalized, paid and is still awaiting its adjustment is recorded
 * for the auditor.
 */
import { randomBytes } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { IngestStatus } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { GrantKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { ClosePeriodResult, RoundingMode, type ClosePeriodResponse } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { seedDemo } from "../../libs/platform/src/demo.js";
import type { PlatformClients } from "../../libs/platform/src/platform.js";
import type { AuditCustomer, AuditTenant, CloseRecord } from "../../libs/platform/src/auditor.js";

/** mulberry32: a small seeded PRNG (the workload never calls Math.random). */
export function prng(seed: number): { next(): number; int(lo: number, hi: number): number; pick<T>(xs: readonly T[]): T; chance(p: number): boolean } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (xs) => xs[Math.floor(next() * xs.length)]!,
    chance: (p) => next() < p,
  };
}

/** NANOBILL_SEED, or a fresh one (printed by the suites on failure). */
export function seedFromEnv(): number {
  const s = process.env.NANOBILL_SEED;
  if (s !== undefined && s !== "") return Number.parseInt(s, 10) >>> 0;
  return randomBytes(4).readUInt32BE(0);
}

export interface WorkloadOptions {
  seed: number;
  /** Unique per run: prefixes customer and event ids. */
  runId: string;
  customers: number;
  batches: number;
  batchEventsMax: number;
  holds: number;
  now: Date;
  /** Called between batches (fault injection); its index is the batch number. */
  between?: (batch: number) => Promise<void>;
  /** Retries of one call that failed with Unavailable/DeadlineExceeded/Aborted/Internal-by-transport (fault runs). */
  retryMs?: number;
  /**
   * Billing periods and their closes (needs a platform started with `clock`). Absent: every event
   * is inside the current period and nothing is closed (the workload of the fault suite).
   */
  periods?: PeriodOptions;
}

/** The clock the platform runs on; the workload only moves it forward (past period ends). */
export interface SimClock {
  now(): Date;
  set(d: Date): void;
}

export interface PeriodOptions {
  clock: SimClock;
  /** Periods closed: 0 .. count-1 (the workload ends inside period `count`, which stays open). */
  count: number;
  /** Share of customers whose periods are closed (at least one is closed, one left open). */
  closeShare: number;
  /** Share of created invoices finalized (ledger receivable/revenue posted). */
  finalizeShare: number;
  /** Share of finalized invoices marked paid. */
  paidShare: number;
  /** Share of new events of a period that are late events of the previous period. */
  lateShare: number;
  /** How long to wait for rating, wallet consumption and ledger posting before each close. */
  settleTimeoutMs?: number;
}

export interface WorkloadResult {
  customers: AuditCustomer[];
  accepted: number;
  duplicates: number;
  holdsCaptured: number;
  holdsReleased: number;
  retries: number;
  /** Period mode: ClosePeriod requests sent, invoices created, finalized, paid. */
  closeCalls?: number;
  invoicesCreated?: number;
  invoicesFinalized?: number;
  invoicesPaid?: number;
  /** Period mode: late events of an already closed period (accepted / rejected as period_closed). */
  lateAfterCloseAccepted?: number;
  lateAfterCloseRejected?: number;
  /** Period mode: answers that contradict the API contract (each one becomes an audit finding). */
  anomalies?: string[];
}

const RETRYABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Aborted, Code.Canceled, Code.Unknown, Code.Internal]);
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** Duplicates re-send only events at most this old (metering refuses events older than 35 days). */
const RESEND_AGE_MS_MAX = 30 * DAY_MS;

type Ev = {
  id: string;
  customerId: string;
  type: string;
  timestamp: ReturnType<typeof timestampFromDate>;
  properties: Record<string, { kind: { case: "stringValue"; value: string } | { case: "intValue"; value: bigint } }>;
};

/** One stretch of the run inside one billing period. */
interface Phase {
  /** The moment events are stamped from (an event is `base - late`). */
  base: number;
  /** Start of the period `base` is in. */
  periodStart: number;
  /** The longest in-period lateness. */
  lateMsMax: number;
  /** Period mode, after the first period: share of events late for the previous period. */
  lateForPrevious?: { share: number; msMax: number };
}

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

export async function runWorkload(c: PlatformClients, opts: WorkloadOptions): Promise<WorkloadResult> {
  const r = prng(opts.seed);
  const pe = opts.periods;
  if (pe !== undefined && (!Number.isInteger(pe.count) || pe.count < 1 || pe.count > 12)) throw new Error(`periods.count must be an integer in 1..12, got ${pe.count}`);
  let retries = 0;
  /** Calls fn again while the failure is transient and the retry window lasts (idempotent ids make it safe). */
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    const deadline = Date.now() + (opts.retryMs ?? 0);
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        const code = ConnectError.from(e).code;
        if (!RETRYABLE.has(code) || Date.now() > deadline) throw e;
        retries++;
        await sleep(200);
      }
    }
  };

  const periodStart = new Date(Date.UTC(opts.now.getUTCFullYear(), opts.now.getUTCMonth(), 1));
  /** Start of billing period k (the demo subscriptions start on the 1st of the month, UTC, monthly). */
  const periodStartOf = (k: number) => Date.UTC(periodStart.getUTCFullYear(), periodStart.getUTCMonth() + k, 1);
  const customers: AuditCustomer[] = [];
  const walletOf = new Map<string, string>();
  const subOf = new Map<string, string>();
  const closing = new Set<string>();
  for (let i = 0; i < opts.customers; i++) {
    const customerId = `cus_${opts.runId}_${i}`;
    const demo = await call(() => seedDemo(c, { customerId, now: opts.now }));
    walletOf.set(customerId, demo.walletId);
    subOf.set(customerId, demo.subscriptionId);
    const grants = r.int(0, 3);
    for (let g = 0; g < grants; g++) {
      const amountNanos = BigInt(r.int(1, 500)) * 1_000_000n; // $0.001 .. $0.5
      // Drawn before the call: a retried Grant must send the same content (else id reused).
      const kind = r.pick([GrantKind.PURCHASED, GrantKind.PROMOTIONAL]);
      const priority = r.int(1, 5);
      await call(() => c.wallet.grant({ id: `grant_${customerId}_${g}`, walletId: demo.walletId, kind, amountNanos, priority }));
    }
    customers.push({ customerId, walletIds: [demo.walletId], acceptedEventIds: [], consumption: { unit: "USD", capturedNanos: 0n } });
    if (pe !== undefined) {
      // some wallets never run dry, so late events still burn prepaid money after a close
      if (r.chance(0.5)) await call(() => c.wallet.grant({ id: `grant_${customerId}_big`, walletId: demo.walletId, kind: GrantKind.PURCHASED, amountNanos: 20_000_000_000n, priority: 5 }));
      if (r.chance(pe.closeShare)) closing.add(customerId);
    }
  }
  if (pe !== undefined && customers.length > 0) {
    if (closing.size === 0) closing.add(customers[0]!.customerId);
    if (closing.size === customers.length && customers.length > 1) closing.delete(customers[customers.length - 1]!.customerId);
    for (const cust of customers) {
      cust.subscriptionIds = [subOf.get(cust.customerId)!];
      if (!closing.has(cust.customerId)) continue;
      cust.closes = [];
      cust.finalizedInvoiceIds = [];
      cust.paidInvoiceIds = [];
      cust.pendingLateEventIds = [];
      cust.lateAfterCloseEventIds = [];
      // invoicing settings: rounding mode, tax, discount, a minimum billable amount with deferral
      const minimum = r.chance(0.4) ? BigInt(r.int(1, 50)) * 100_000_000n : 0n; // $0.10 .. $5.00
      await call(() =>
        c.invoicing.setBillingSettings({
          settings: {
            customerId: cust.customerId,
            roundingMode: r.pick([RoundingMode.HALF_EVEN, RoundingMode.HALF_UP, RoundingMode.HALF_DOWN, RoundingMode.FLOOR, RoundingMode.CEIL, RoundingMode.DOWN, RoundingMode.UP]),
            taxRateBps: r.chance(0.5) ? r.int(1, 2_500) : 0,
            discountBps: r.chance(0.3) ? r.int(1, 3_000) : 0,
            minimumBillableNanos: minimum,
            deferralPeriodsMax: minimum > 0n ? r.int(1, 2) : 0,
          },
        }),
      );
    }
  }
  const byId = new Map(customers.map((x) => [x.customerId, x]));
  const ackd = new Map(customers.map((x) => [x.customerId, new Set<string>()]));

  const sent: Ev[] = [];
  let seq = 0;
  let accepted = 0;
  let duplicates = 0;
  let batchNo = 0;
  let lateAfterCloseAccepted = 0;
  let lateAfterCloseRejected = 0;
  /** Late events of the period each closing customer closed last, accepted after that close. */
  const pendingLate = new Map<string, Set<string>>();
  /** The last period closed (period mode). */
  let closedThrough = -1;

  const sendBatch = async (ph: Phase): Promise<void> => {
    if (opts.between) await opts.between(batchNo);
    batchNo++;
    const n = r.int(1, opts.batchEventsMax);
    const batch: Ev[] = [];
    // retries re-send events young enough for metering's late-event limit (35 days): an older
    // stored event is answered REJECTED, not DUPLICATE (validation runs before the dedupe)
    const resendable = sent.filter((e) => Number(e.timestamp.seconds) * 1000 >= ph.base - RESEND_AGE_MS_MAX);
    for (let k = 0; k < n; k++) {
      if (resendable.length > 0 && r.chance(0.1)) {
        batch.push(r.pick(resendable)); // a duplicate (same id, same content)
        continue;
      }
      const cust = r.pick(customers);
      let ts: number;
      if (ph.lateForPrevious !== undefined && r.chance(ph.lateForPrevious.share)) ts = ph.periodStart - r.int(1, ph.lateForPrevious.msMax);
      else ts = ph.base - (r.chance(0.2) ? r.int(0, ph.lateMsMax) : r.int(0, 5_000));
      batch.push({
        id: `evt_${opts.runId}_${seq++}`,
        customerId: cust.customerId,
        type: "llm.call",
        timestamp: timestampFromDate(new Date(ts)),
        properties: {
          model: { kind: { case: "stringValue", value: "gpt-x" } },
          provider: { kind: { case: "stringValue", value: "openai" } },
          input_tokens: { kind: { case: "intValue", value: BigInt(r.int(1, 5_000)) } },
          output_tokens: { kind: { case: "intValue", value: BigInt(r.int(0, 2_000)) } },
        },
      });
    }
    // one id at most once per batch (a batch repeating an id is a client bug, not a duplicate)
    const seen = new Set<string>();
    const unique = batch.filter((e) => (seen.has(e.id) ? false : (seen.add(e.id), true)));
    const res = await call(() => c.metering.ingestEvents({ events: unique }));
    res.results.forEach((x, i) => {
      const ev = unique[i]!;
      const cust = byId.get(ev.customerId)!;
      const mine = ackd.get(ev.customerId)!;
      // late for a period this customer's subscription already closed
      const afterClose = pe !== undefined && closing.has(ev.customerId) && Number(ev.timestamp.seconds) * 1000 < periodStartOf(closedThrough + 1);
      const acknowledge = () => {
        mine.add(ev.id);
        cust.acceptedEventIds.push(ev.id);
        accepted++;
        sent.push(ev);
        if (afterClose) {
          lateAfterCloseAccepted++;
          cust.lateAfterCloseEventIds!.push(ev.id);
          let p = pendingLate.get(ev.customerId);
          if (p === undefined) pendingLate.set(ev.customerId, (p = new Set()));
          p.add(ev.id);
        }
      };
      if (x.status === IngestStatus.ACCEPTED) {
        acknowledge();
      } else if (x.status === IngestStatus.DUPLICATE) {
        duplicates++;
        // a retried batch whose first attempt was stored: acknowledged now, counted once
        if (!mine.has(ev.id)) acknowledge();
      } else if (afterClose && x.status === IngestStatus.REJECTED && x.reason === "period_closed") {
        lateAfterCloseRejected++; // metering knows the period is invoiced: refused, nothing stored
      } else {
        throw new Error(`event ${ev.id} (timestamp ${new Date(Number(ev.timestamp.seconds) * 1000).toISOString()}${pe ? `, clock ${pe.clock.now().toISOString()}` : ""}) not accepted: status ${IngestStatus[x.status]} ${x.field} ${x.reason} ${x.message}`);
      }
    });
  };

  let holdsCaptured = 0;
  let holdsReleased = 0;
  let holdNo = 0;
  const runHold = async (): Promise<void> => {
    const cust = r.pick(customers);
    const amountNanos = BigInt(r.int(1, 2_000)) * 1_000n;
    const holdId = `hold_${opts.runId}_${holdNo++}`;
    let held: bigint;
    try {
      const a = await call(() => c.wallet.authorize({ id: holdId, customerId: cust.customerId, unit: "USD", amountNanos, ttlMs: 120_000n }));
      held = a.hold?.amountNanos ?? 0n;
    } catch (e) {
      if (ConnectError.from(e).code === Code.FailedPrecondition) return; // not enough credits: refused, nothing held
      throw e;
    }
    if (r.chance(0.6)) {
      const capture = held === 0n ? 0n : BigInt(r.int(0, Number(held / 1_000n))) * 1_000n;
      const cap = await call(() => c.wallet.capture({ holdId, amountNanos: capture, eventId: `${holdId}_use`, chargeId: "agent_task" }));
      cust.consumption!.capturedNanos += cap.capturedNanos;
      holdsCaptured++;
    } else {
      await call(() => c.wallet.release({ holdId }));
      holdsReleased++;
    }
  };

  if (pe === undefined) {
    const lateMsMax = Math.max(0, Math.min(2 * DAY_MS, opts.now.getTime() - periodStart.getTime() - 60_000));
    const ph: Phase = { base: opts.now.getTime(), periodStart: periodStart.getTime(), lateMsMax };
    for (let b = 0; b < opts.batches; b++) await sendBatch(ph);
    for (let h = 0; h < opts.holds; h++) await runHold();
    return { customers, accepted, duplicates, holdsCaptured, holdsReleased, retries };
  }

  // ---- period mode: phases 0 .. count, each inside period k; period k-1 is closed at the start of phase k
  const anomalies: string[] = [];
  let closeCalls = 0;
  let invoicesCreated = 0;
  let invoicesFinalized = 0;
  let invoicesPaid = 0;
  const ratedUsd = new Map<string, bigint>();
  const closers = customers.filter((x) => closing.has(x.customerId));

  /** Waits until every accepted event is rated, its wallet consumption recorded and the ledger has nothing pending. */
  const settle = async (label: string): Promise<void> => {
    const deadline = Date.now() + (pe.settleTimeoutMs ?? 30_000);
    for (;;) {
      const todo = customers.flatMap((x) => x.acceptedEventIds.filter((id) => !ratedUsd.has(id)));
      await pool(todo, 16, async (eventId) => {
        try {
          const g = await c.rating.getRatedEvent({ eventId });
          if (g.rated === undefined) return;
          let p = 0n;
          for (const l of g.rated.lines) if (l.unit === "USD" && l.priceNanos > 0n) p += l.priceNanos;
          ratedUsd.set(eventId, p);
        } catch (e) {
          if (ConnectError.from(e).code !== Code.NotFound) throw e;
        }
      });
      const unrated = customers.reduce((n, x) => n + x.acceptedEventIds.filter((id) => !ratedUsd.has(id)).length, 0);
      const lagging: string[] = [];
      let pending = false;
      if (unrated === 0) {
        const now = pe.clock.now().getTime();
        for (const x of customers) {
          const cons = await c.wallet.listConsumption({ customerId: x.customerId, unit: "USD", from: timestampFromDate(new Date(periodStart.getTime() - DAY_MS)), to: timestampFromDate(new Date(now + DAY_MS)), page: { pageSizeMax: 1 } });
          const want = x.acceptedEventIds.reduce((s, id) => s + ratedUsd.get(id)!, 0n) + x.consumption!.capturedNanos;
          if (cons.consumedNanos + cons.shortfallNanos !== want) lagging.push(`${x.customerId} (${cons.consumedNanos + cons.shortfallNanos} of ${want})`);
        }
        if (lagging.length === 0) pending = (await c.ledger.verify({})).units.some((u) => BigInt(u.debitsPendingNanos) !== 0n || BigInt(u.creditsPendingNanos) !== 0n);
      }
      if (unrated === 0 && lagging.length === 0 && !pending) return;
      if (Date.now() > deadline) {
        throw new Error(`${label}: not settled after ${pe.settleTimeoutMs ?? 30_000} ms: ${unrated} accepted events not rated; consumption behind for ${lagging.join(", ") || "none"}; ledger pending ${pending}`);
      }
      await sleep(200);
    }
  };

  const closePeriod = async (p: number, k: number): Promise<void> => {
    const ps = new Date(periodStartOf(p));
    const items = closers.map((x) => ({ customerId: x.customerId, subscriptionId: subOf.get(x.customerId)! }));
    const shuffled = [...items].sort(() => r.next() - 0.5).map((it) => ({ ...it, periodStart: timestampFromDate(ps) }));
    const one = r.pick(items);
    // the same subscription periods closed by concurrent requests: latest-ended, by period start, and one alone
    const requests = [{ items }, { items: shuffled }, { items: [{ ...one, periodStart: timestampFromDate(ps) }] }];
    const before = retries;
    const answers: ClosePeriodResponse[] = await Promise.all(requests.map((req) => call(() => c.invoicing.closePeriod(req))));
    closeCalls += requests.length;
    const retried = retries > before;
    const bySub = new Map<string, CloseRecord>();
    for (const x of closers) {
      const rec: CloseRecord = { subscriptionId: subOf.get(x.customerId)!, periodStart: ps, outcomes: [], retried };
      bySub.set(rec.subscriptionId, rec);
      x.closes!.push(rec);
    }
    answers.forEach((a, ri) => {
      if (a.results.length !== requests[ri]!.items.length) anomalies.push(`ClosePeriod of period ${p}: ${a.results.length} results for ${requests[ri]!.items.length} items`);
      a.results.forEach((res, i) => {
        const sub = requests[ri]!.items[i]!.subscriptionId;
        const rec = bySub.get(sub)!;
        rec.outcomes.push({ result: ClosePeriodResult[res.result] ?? String(res.result), invoiceId: res.invoice?.id ?? "", message: res.message });
        if (res.subscriptionId !== sub) anomalies.push(`ClosePeriod result ${i} names ${res.subscriptionId}, item was ${sub}`);
      });
    });
    // late events of the period closed before this one are billed now (an adjustment line on this invoice)
    for (const x of closers) pendingLate.delete(x.customerId);
    closedThrough = p;
    // a period that has not ended is refused
    const probeItem = r.pick(items);
    const probe = await call(() => c.invoicing.closePeriod({ items: [{ ...probeItem, periodStart: timestampFromDate(new Date(periodStartOf(k))) }] }));
    closeCalls++;
    if (probe.results[0]?.result !== ClosePeriodResult.PERIOD_NOT_ENDED) {
      anomalies.push(`ClosePeriod of the current period ${k} answered ${ClosePeriodResult[probe.results[0]?.result ?? 0]} (want PERIOD_NOT_ENDED): ${probe.results[0]?.message ?? ""}`);
    }
    // finalize some (sometimes twice at once: a retry is answered as a replay, so both get the
    // same finalized invoice; the books below show it was finalized once), pay some
    for (const x of closers) {
      const rec = bySub.get(subOf.get(x.customerId)!)!;
      const created = rec.outcomes.filter((o) => o.result === "CREATED");
      invoicesCreated += created.length;
      const invoiceId = rec.outcomes.find((o) => o.invoiceId !== "")?.invoiceId;
      if (invoiceId === undefined || !r.chance(pe.finalizeShare)) continue;
      const twice = r.chance(0.3);
      const attempts = await Promise.allSettled((twice ? [0, 1] : [0]).map(() => c.invoicing.finalizeInvoice({ invoiceId })));
      const ok = attempts.flatMap((a) => (a.status === "fulfilled" ? [a.value] : []));
      for (const a of attempts) if (a.status === "rejected") anomalies.push(`FinalizeInvoice ${invoiceId}: ${String(a.reason)}`);
      if (ok.length !== attempts.length) {
        anomalies.push(`FinalizeInvoice ${invoiceId} called ${attempts.length}x concurrently: ${ok.length} succeeded (want every one: a retry is a replay)`);
        if (ok.length === 0) continue;
      }
      const seen = new Set(ok.map((o) => `${o.invoice?.number}|${o.invoice?.status}|${o.invoice?.totals?.amountDueNanos ?? ""}`));
      if (seen.size !== 1 || ok.some((o) => !o.invoice?.number)) anomalies.push(`FinalizeInvoice ${invoiceId} called ${attempts.length}x concurrently answered different invoices: ${[...seen].join(", ")}`);
      x.finalizedInvoiceIds!.push(invoiceId);
      invoicesFinalized++;
      if (!r.chance(pe.paidShare)) continue;
      const paymentId = `pay_${invoiceId}`;
      const first = await c.invoicing.markInvoicePaid({ invoiceId, paymentId });
      const again = await c.invoicing.markInvoicePaid({ invoiceId, paymentId }); // idempotent replay
      if (first.invoice?.paymentId !== paymentId || again.invoice?.paymentId !== paymentId) anomalies.push(`MarkInvoicePaid ${invoiceId}: payment ids ${first.invoice?.paymentId} / ${again.invoice?.paymentId}`);
      x.paidInvoiceIds!.push(invoiceId);
      invoicesPaid++;
    }
  };

  const phases = pe.count + 1;
  for (let k = 0; k < phases; k++) {
    const ps = periodStartOf(k);
    let base = opts.now.getTime();
    if (k > 0) {
      await settle(`before closing period ${k - 1}`);
      base = ps + r.int(1, 6) * HOUR_MS + r.int(0, 59) * 60_000;
      pe.clock.set(new Date(base));
      await closePeriod(k - 1, k);
    }
    const ph: Phase = {
      base,
      periodStart: ps,
      lateMsMax: Math.max(0, Math.min(2 * DAY_MS, base - ps - 60_000)),
      lateForPrevious: k > 0 ? { share: pe.lateShare, msMax: 10 * DAY_MS } : undefined,
    };
    const nb = Math.floor(opts.batches / phases) + (k < opts.batches % phases ? 1 : 0);
    const nh = Math.floor(opts.holds / phases) + (k < opts.holds % phases ? 1 : 0);
    for (let b = 0; b < nb; b++) await sendBatch(ph);
    for (let h = 0; h < nh; h++) await runHold();
  }
  for (const x of closers) x.pendingLateEventIds = [...(pendingLate.get(x.customerId) ?? [])];
  return {
    customers,
    accepted,
    duplicates,
    holdsCaptured,
    holdsReleased,
    retries,
    closeCalls,
    invoicesCreated,
    invoicesFinalized,
    invoicesPaid,
    lateAfterCloseAccepted,
    lateAfterCloseRejected,
    anomalies,
  };
}

export function auditTenant(tenant: string, clients: PlatformClients, w: WorkloadResult): AuditTenant {
  return { tenant, clients, customers: w.customers, anomalies: w.anomalies };
}
