/**
 * The whole-system auditor: after a workload, checks through the public APIs (an admin key per
 * tenant) that every nano is accounted for. Returns findings; an empty list means the books hold.
 *
 * Checks, per tenant:
 * - ledger `Verify` ok: debits == credits per unit, every stored balance == its transfers;
 * - no wallet below its floor (HARD_STOP / POSTPAID: balance >= 0; SOFT_NEGATIVE: >= -limit);
 * - every accepted event rated exactly once (GetRatedEvent finds it; bucket event counts == events);
 * - per customer and unit: sum of rated event prices == sum of rated buckets (ListRatedUsage over
 *   every hour the events, invoices and the open period touch);
 * - the money identity, per (customer, unit, charge), to the nano:
 *     rated event prices == invoiced (rounded usage + adjustment lines) + carried rounding residue
 *                           + late usage awaiting its adjustment + usage of periods not invoiced;
 *   each event is placed by its timestamp: inside an invoice's usage window (its own
 *   subscription's invoice, [floorHour(start), floorHour(end))), late for a closed period
 *   (`pendingLateEventIds`: accepted after the close, billed by the next close), or open;
 *   the invoiced part must equal the exact usage + adjustment lines of the invoices, and those
 *   must equal their rounded amounts + the residue carried out of the last line (residue chain:
 *   every line's residue in == the previous line's residue out of the same key, from 0);
 * - the open period: the preview's usage lines == the events in its window, and its residue in
 *   == the residue the last invoice carried out;
 * - invoices: one per subscription per period; each close the workload made answered CREATED
 *   exactly once and the same invoice to every duplicate call; no invoice nobody closed; the
 *   statuses the workload left (draft / finalized / paid); rounded lines sum to the amount due;
 *   deferrals (minimum billable amount): sum of amounts due + the deferral carried out of the
 *   last invoice == sum of the rounded non-carried lines; finalized numbers gapless per tenant;
 * - credits applied: prepaid money consumed in an invoice's window now == the credits lines naming
 *   that window (its own invoice's, or a later invoice's), less what late events awaiting their
 *   adjustment burned; the holds captured in it (a burn no rated event bills) == its "Captured
 *   holds" lines (usage + adjustment);
 * - finalized / paid invoices tie to the ledger: their transfers exist, posted, in the invoice
 *   unit; net receivable == amount due (0 once paid, cash == amount due) less its credit-balance
 *   lines (a credit carried out stays in the receivable until applied), tax payable == tax,
 *   rounding-residue account == the residue delta; each customer's receivable and residue
 *   account balances == the sums over its finalized invoices (nothing else touched them);
 * - wallet consumption: consumed + shortfall == rated prices + captured holds (when the caller
 *   says the customer's prices burn that wallet).
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { currency } from "@nanobill/money";
import { ledgerId } from "@nanobill/service-kit";
import { PolicyMode } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { InvoiceStatus, LineKind, type Invoice } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { TransferState } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import type { PlatformClients } from "./platform.js";

/** CAPTURED_HOLDS: the charge id of invoicing's "Captured holds" lines (no rated event bills a capture; checked against the wallet's captures). */
const CAPTURED_HOLDS = "_captured_holds";

/** Parallel lookups of rated events per tenant. */
export const AUDIT_CONCURRENCY = 16;
/** Invoices listed per page (ListInvoices caps pages at 500). */
const INVOICE_PAGE = 500;
/** At most this many invoices are read per customer (a limit on the audit itself). */
const INVOICES_PER_CUSTOMER_MAX = 1_000;
const HOUR_MS = 3_600_000;
/** Consumption entries read per page, and pages per invoice window, when late events must be told apart. */
const CONSUMPTION_PAGE = 1_000;
const CONSUMPTION_PAGES_MAX = 100;

/** One ClosePeriod of one subscription period as the workload saw it (every duplicate call's answer). */
export interface CloseRecord {
  subscriptionId: string;
  periodStart: Date;
  outcomes: Array<{ result: string; invoiceId: string; message: string }>;
  /** A transport retry happened during the calls (a retried CREATED may come back ALREADY_CLOSED). */
  retried: boolean;
}

export interface AuditCustomer {
  customerId: string;
  /** Wallets to check against their floor. */
  walletIds: string[];
  /** Every event id the platform acknowledged as ACCEPTED for this customer. */
  acceptedEventIds: string[];
  /** The wallet (unit) its rated prices burn, for the consumption check; absent = not checked. */
  consumption?: { unit: string; capturedNanos: bigint };
  /** The customer's subscriptions (informational; events name theirs). */
  subscriptionIds?: string[];
  /** Periods the workload closed; absent = it closed none (then no invoice may exist). */
  closes?: CloseRecord[];
  /** Invoices the workload finalized (FINALIZED or PAID now) and paid (PAID now); the rest are drafts. */
  finalizedInvoiceIds?: string[];
  paidInvoiceIds?: string[];
  /** Accepted events late for a closed period, after its close: billed by the next close, not yet. */
  pendingLateEventIds?: string[];
  /** Every accepted event that was late for a period already closed (explains credits findings). */
  lateAfterCloseEventIds?: string[];
}

export interface AuditTenant {
  tenant: string;
  clients: PlatformClients;
  customers: AuditCustomer[];
  /** Answers the workload saw that contradict the API contract (each becomes a finding). */
  anomalies?: string[];
}

export interface Finding {
  tenant: string;
  check:
    | "ledger"
    | "wallet-floor"
    | "rated-once"
    | "rated-sum"
    | "buckets"
    | "invoice"
    | "invoice-once"
    | "identity"
    | "residue"
    | "deferral"
    | "credits"
    | "ledger-tie"
    | "preview"
    | "consumption"
    | "workload"
    | "error";
  subject: string;
  message: string;
}

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

function add(m: Map<string, bigint>, unit: string, v: bigint): void {
  m.set(unit, (m.get(unit) ?? 0n) + v);
}

function fmt(m: Map<string, bigint>): string {
  return [...m.entries()].map(([u, v]) => `${v} ${u}`).join(", ") || "0";
}

function sameTotals(a: Map<string, bigint>, b: Map<string, bigint>): boolean {
  const units = new Set([...a.keys(), ...b.keys()]);
  for (const u of units) if ((a.get(u) ?? 0n) !== (b.get(u) ?? 0n)) return false;
  return true;
}

const ms = (t: { seconds: bigint; nanos: number } | undefined): number | undefined => (t === undefined ? undefined : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
const floorHour = (t: number): number => Math.floor(t / HOUR_MS) * HOUR_MS;
const iso = (t: number | undefined): string => (t === undefined ? "?" : new Date(t).toISOString());

interface RatedView {
  eventId: string;
  ts: number;
  subscriptionId: string;
  lines: Array<{ key: string; unit: string; chargeId: string; priceNanos: bigint }>;
}

/** Every invoice of a customer (with lines), oldest period first. */
async function invoicesOf(c: PlatformClients, customerId: string): Promise<Invoice[]> {
  const out: Invoice[] = [];
  let pageToken = "";
  do {
    const page = await c.invoicing.listInvoices({ customerId, pageSizeMax: INVOICE_PAGE, pageToken });
    for (const inv of page.invoices) {
      const full = await c.invoicing.getInvoice({ invoiceId: inv.id });
      if (full.invoice !== undefined) out.push(full.invoice);
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "" && out.length < INVOICES_PER_CUSTOMER_MAX);
  return out.sort((a, b) => (ms(a.periodStart) ?? 0) - (ms(b.periodStart) ?? 0) || (a.id < b.id ? -1 : 1));
}

/** Runs every check once; `period` bounds ListRatedUsage (default: every hour the events, invoices and preview touch). */
export async function audit(tenants: AuditTenant[], opts: { period?: { from: Date; to: Date } } = {}): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const t of tenants) {
    const f = (check: Finding["check"], subject: string, message: string) => findings.push({ tenant: t.tenant, check, subject, message });
    const c = t.clients;
    for (const a of t.anomalies ?? []) f("workload", "answer", a);
    try {
      const v = await c.ledger.verify({});
      if (!v.ok) f("ledger", "verify", v.violations.join("; ") || "not ok");
      for (const u of v.units) {
        if (u.debitsPostedNanos !== u.creditsPostedNanos) f("ledger", u.unit, `posted debits ${u.debitsPostedNanos} != credits ${u.creditsPostedNanos}`);
        if (u.debitsPendingNanos !== u.creditsPendingNanos) f("ledger", u.unit, `pending debits ${u.debitsPendingNanos} != credits ${u.creditsPendingNanos}`);
      }
    } catch (e) {
      f("error", "ledger.verify", String(e));
    }

    const numbers: string[] = [];
    let invoicingAudited = false;
    for (const cust of t.customers) {
      for (const walletId of cust.walletIds) {
        try {
          const b = await c.wallet.getBalance({ walletId });
          const policy = b.wallet?.policy;
          const floor = policy?.mode === PolicyMode.SOFT_NEGATIVE ? -policy.negativeLimitNanos : 0n;
          if (b.balanceNanos < floor) f("wallet-floor", walletId, `balance ${b.balanceNanos} below floor ${floor}`);
          if (b.availableNanos < floor) f("wallet-floor", walletId, `available ${b.availableNanos} below floor ${floor}`);
          for (const g of b.grants) {
            if (g.availableNanos < 0n) f("wallet-floor", `${walletId}/${g.grantId}`, `grant available ${g.availableNanos} < 0`);
          }
        } catch (e) {
          f("error", `wallet.getBalance ${walletId}`, String(e));
        }
      }

      // every accepted event rated exactly once; prices summed per unit
      const priced = new Map<string, bigint>();
      const rated: RatedView[] = [];
      let ratedLines = 0n;
      await pool(cust.acceptedEventIds, AUDIT_CONCURRENCY, async (eventId) => {
        try {
          const r = await c.rating.getRatedEvent({ eventId });
          if (r.rated === undefined) return void f("rated-once", eventId, "accepted event not rated");
          if (r.rated.customerId !== cust.customerId) f("rated-once", eventId, `rated for ${r.rated.customerId}, sent for ${cust.customerId}`);
          const charges = new Set<string>();
          const view: RatedView = { eventId, ts: ms(r.rated.timestamp) ?? 0, subscriptionId: r.rated.subscriptionId, lines: [] };
          for (const l of r.rated.lines) {
            const key = `${l.chargeId}|${JSON.stringify(Object.entries(l.dimensions).sort())}`;
            if (charges.has(key)) f("rated-once", eventId, `charge ${l.chargeId} rated twice`);
            charges.add(key);
            add(priced, l.unit, l.priceNanos);
            view.lines.push({ key: `${l.unit}|${l.chargeId}`, unit: l.unit, chargeId: l.chargeId, priceNanos: l.priceNanos });
            ratedLines++;
          }
          rated.push(view);
        } catch (e) {
          if (ConnectError.from(e).code === Code.NotFound) f("rated-once", eventId, "accepted event not rated (NotFound)");
          else f("error", `rating.getRatedEvent ${eventId}`, String(e));
        }
      });

      try {
        // ---- invoices: one per subscription period, as closed, statuses, internal sums
        const invoices = await invoicesOf(c, cust.customerId);
        if (cust.closes !== undefined) invoicingAudited = true;
        const live = invoices.filter((i) => i.status !== InvoiceStatus.VOID);
        const byPeriod = new Map<string, Invoice[]>();
        for (const inv of invoices) {
          const k = `${inv.subscriptionId}|${iso(ms(inv.periodStart))}`;
          byPeriod.set(k, [...(byPeriod.get(k) ?? []), inv]);
          if (inv.number !== "") numbers.push(inv.number);
        }
        for (const [k, xs] of byPeriod) if (xs.length > 1) f("invoice-once", `${cust.customerId} ${k}`, `${xs.length} invoices for one subscription period: ${xs.map((x) => x.id).join(", ")}`);
        const expected = new Set<string>();
        for (const rec of cust.closes ?? []) {
          const k = `${rec.subscriptionId}|${rec.periodStart.toISOString()}`;
          const subject = `${cust.customerId} ${k}`;
          const created = rec.outcomes.filter((o) => o.result === "CREATED").length;
          const other = rec.outcomes.filter((o) => o.result !== "CREATED" && o.result !== "ALREADY_CLOSED");
          const ids = new Set(rec.outcomes.map((o) => o.invoiceId));
          if (other.length > 0) f("invoice-once", subject, `ClosePeriod answered ${other.map((o) => `${o.result} (${o.message})`).join("; ")}`);
          if (created > 1 || (created === 0 && !rec.retried)) f("invoice-once", subject, `${rec.outcomes.length} concurrent ClosePeriod calls answered CREATED ${created} times (want exactly once)`);
          if (ids.size !== 1 || ids.has("")) f("invoice-once", subject, `duplicate ClosePeriod calls returned invoices ${[...ids].map((x) => x || "(none)").join(", ")} (want one)`);
          const listed = byPeriod.get(k) ?? [];
          if (listed.length === 0) f("invoice-once", subject, "closed, but no invoice is listed for the period");
          else if (!ids.has(listed[0]!.id)) f("invoice-once", subject, `listed invoice ${listed[0]!.id} is not the one ClosePeriod returned (${[...ids].join(", ")})`);
          expected.add(k);
        }
        for (const [k, xs] of byPeriod) if (!expected.has(k)) f("invoice-once", `${cust.customerId} ${k}`, `invoice ${xs.map((x) => x.id).join(", ")} exists for a period the workload did not close`);
        const finalized = new Set(cust.finalizedInvoiceIds ?? []);
        const paid = new Set(cust.paidInvoiceIds ?? []);
        for (const inv of invoices) {
          const want = paid.has(inv.id) ? InvoiceStatus.PAID : finalized.has(inv.id) ? InvoiceStatus.FINALIZED : InvoiceStatus.DRAFT;
          if (inv.status !== want) f("invoice", inv.id, `status ${InvoiceStatus[inv.status]}, want ${InvoiceStatus[want]}`);
          const per = currency(inv.unit, "unit").nanosPerMinor;
          let due = 0n;
          // residue carried: per residue key, the residue out of the invoice's last line on it (an
          // earlier line on a shared key passed its residue to the next; one-off lines share "_top_up")
          const lastOut = new Map<string, bigint>();
          for (const l of inv.lines) {
            due += l.roundedAmountNanos;
            if (l.kind !== LineKind.CARRIED_FORWARD) lastOut.set(l.kind === LineKind.ONE_OFF ? "_top_up" : l.chargeId, l.residueOutNanos);
            if (l.roundedAmountNanos + l.residueOutNanos !== l.amountNanos + l.residueInNanos) {
              f("invoice", `${inv.id}/${l.id}`, `rounded ${l.roundedAmountNanos} + residue out ${l.residueOutNanos} != amount ${l.amountNanos} + residue in ${l.residueInNanos}`);
            }
            if (l.roundedAmountNanos !== l.amountMinor * per) f("invoice", `${inv.id}/${l.id}`, `rounded ${l.roundedAmountNanos} nanos is not ${l.amountMinor} minor units of ${inv.unit}`);
          }
          let carried = 0n;
          for (const v of lastOut.values()) carried += v;
          const tot = inv.totals;
          if (tot === undefined) f("invoice", inv.id, "no totals");
          else {
            if (due !== tot.amountDueNanos) f("invoice", inv.id, `rounded lines sum to ${due}, amount due ${tot.amountDueNanos}`);
            if (carried !== tot.residueCarriedNanos) f("invoice", inv.id, `last line residues out per key sum to ${carried}, residue carried ${tot.residueCarriedNanos}`);
          }
        }

        // ---- residue chain per key across the invoices, then the preview
        const chain = new Map<string, bigint>();
        for (const inv of live) {
          for (const l of inv.lines) {
            if (l.kind === LineKind.CARRIED_FORWARD) continue;
            const key = `${inv.unit}|${l.chargeId}`;
            const prev = chain.get(key) ?? 0n;
            if (l.residueInNanos !== prev) f("residue", `${inv.id}/${l.id}`, `${l.chargeId}: residue in ${l.residueInNanos} != residue out ${prev} of the previous line of the key`);
            chain.set(key, l.residueOutNanos);
          }
        }

        // ---- deferrals: what was not billed is carried, never lost
        if (live.length > 0) {
          let dueSum = 0n;
          let billed = 0n;
          for (const inv of live) {
            dueSum += inv.totals?.amountDueNanos ?? 0n;
            for (const l of inv.lines) if (l.kind !== LineKind.CARRIED_FORWARD) billed += l.roundedAmountNanos;
          }
          const deferredOut = live[live.length - 1]!.totals?.deferredNanos ?? 0n;
          if (dueSum + deferredOut !== billed) f("deferral", cust.customerId, `amounts due ${dueSum} + deferral carried out ${deferredOut} != rounded lines ${billed}`);
        }

        // ---- the money identity per (unit, charge)
        const windows = new Map<string, Array<{ from: number; to: number }>>();
        for (const inv of live) {
          const w = { from: floorHour(ms(inv.periodStart) ?? 0), to: floorHour(ms(inv.periodEnd) ?? 0) };
          windows.set(inv.subscriptionId, [...(windows.get(inv.subscriptionId) ?? []), w]);
        }
        const pendingIds = new Set(cust.pendingLateEventIds ?? []);
        const lateIds = new Set(cust.lateAfterCloseEventIds ?? []);
        const inInvoiced = new Map<string, bigint>();
        const pending = new Map<string, bigint>();
        const open = new Map<string, bigint>();
        const allByKey = new Map<string, bigint>();
        for (const e of rated) {
          const invoiced = (windows.get(e.subscriptionId) ?? []).some((w) => w.from <= e.ts && e.ts < w.to);
          for (const l of e.lines) {
            if (l.chargeId === "") continue;
            add(allByKey, l.key, l.priceNanos);
            if (pendingIds.has(e.eventId)) {
              add(pending, l.key, l.priceNanos);
              if (!invoiced) f("identity", e.eventId, `recorded as late for a closed period, but ${iso(e.ts)} is in no invoiced window`);
            } else if (invoiced) add(inInvoiced, l.key, l.priceNanos);
            else add(open, l.key, l.priceNanos);
          }
        }
        const exactLines = new Map<string, bigint>();
        const rounded = new Map<string, bigint>();
        for (const inv of live) {
          for (const l of inv.lines) {
            if ((l.kind !== LineKind.USAGE && l.kind !== LineKind.ADJUSTMENT) || l.chargeId === CAPTURED_HOLDS) continue;
            add(exactLines, `${inv.unit}|${l.chargeId}`, l.amountNanos);
            add(rounded, `${inv.unit}|${l.chargeId}`, l.roundedAmountNanos);
          }
        }
        for (const key of new Set([...allByKey.keys(), ...exactLines.keys()])) {
          const want = inInvoiced.get(key) ?? 0n;
          const got = exactLines.get(key) ?? 0n;
          const residue = chain.get(key) ?? 0n;
          const r = rounded.get(key) ?? 0n;
          const describe = `rated ${allByKey.get(key) ?? 0n} = invoiced ${r} + residue ${residue} + late awaiting adjustment ${pending.get(key) ?? 0n} + not invoiced ${open.get(key) ?? 0n}?`;
          if (got !== want) f("identity", `${cust.customerId} ${key}`, `events in invoiced periods sum to ${want}, invoices' usage + adjustment lines to ${got} (diff ${got - want}); ${describe}`);
          if (r + residue !== got) f("identity", `${cust.customerId} ${key}`, `invoiced lines: rounded ${r} + residue carried ${residue} != exact ${got}; ${describe}`);
        }

        // ---- the open period: preview, buckets, consumption
        const { invoice: preview } = await c.invoicing.previewInvoice({ customerId: cust.customerId });
        const pFrom = floorHour(ms(preview?.periodStart) ?? 0);
        const pTo = ms(preview?.periodEnd) ?? pFrom;
        const pAt = ms(preview?.createdAt) ?? pTo;
        const inPreview = new Map<string, bigint>();
        for (const e of rated) {
          if (pendingIds.has(e.eventId) || e.ts < pFrom || e.ts >= pAt) continue;
          for (const l of e.lines) if (l.chargeId !== "") add(inPreview, l.key, l.priceNanos);
        }
        const previewLines = new Map<string, bigint>();
        // Residues chain per key through the preview's lines too (a late adjustment or a second
        // credits line follows the line before it of the same charge).
        const pchain = new Map(chain);
        for (const l of preview?.lines ?? []) {
          if (l.kind === LineKind.USAGE && l.chargeId !== CAPTURED_HOLDS) add(previewLines, `${preview!.unit}|${l.chargeId}`, l.amountNanos);
          if (l.roundedAmountNanos + l.residueOutNanos !== l.amountNanos + l.residueInNanos) {
            f("preview", `${cust.customerId}/${l.id}`, `rounded ${l.roundedAmountNanos} + residue out ${l.residueOutNanos} != amount ${l.amountNanos} + residue in ${l.residueInNanos}`);
          }
          if (l.kind !== LineKind.CARRIED_FORWARD) {
            const pk = `${preview!.unit}|${l.chargeId}`;
            if (l.residueInNanos !== (pchain.get(pk) ?? 0n))
              f("preview", `${cust.customerId}/${l.id}`, `${l.chargeId}: preview residue in ${l.residueInNanos} != residue carried before it ${pchain.get(pk) ?? 0n}`);
            pchain.set(pk, l.residueOutNanos);
          }
        }
        if (!sameTotals(inPreview, previewLines)) f("preview", cust.customerId, `events of the open period ${iso(pFrom)} .. ${iso(pAt)} sum to ${fmt(inPreview)}, preview usage lines to ${fmt(previewLines)}`);

        let from = pFrom;
        let to = Math.max(pTo, pAt);
        for (const e of rated) {
          from = Math.min(from, floorHour(e.ts));
          to = Math.max(to, floorHour(e.ts) + HOUR_MS);
        }
        for (const inv of invoices) {
          from = Math.min(from, floorHour(ms(inv.periodStart) ?? from));
          to = Math.max(to, ms(inv.periodEnd) ?? to);
        }
        const period = opts.period ?? { from: new Date(from), to: new Date(to) };
        const usage = await c.rating.listRatedUsage({ customerId: cust.customerId, from: timestampFromDate(period.from), to: timestampFromDate(period.to) });
        const buckets = new Map<string, bigint>();
        let bucketEvents = 0n;
        for (const b of usage.buckets) {
          add(buckets, b.unit, b.priceNanos);
          bucketEvents += b.eventCount;
        }
        const totals = new Map<string, bigint>();
        for (const tot of usage.totals) add(totals, tot.unit, tot.priceNanos);
        // a bucket counts each event once per line (charge x dimensions) it contributed
        if (bucketEvents !== ratedLines) f("rated-once", cust.customerId, `buckets count ${bucketEvents} event lines, the ${rated.length} rated events (of ${cust.acceptedEventIds.length} accepted) have ${ratedLines}`);
        if (!sameTotals(priced, buckets)) f("buckets", cust.customerId, `rated events sum ${fmt(priced)} != rated buckets ${fmt(buckets)}`);
        if (usage.totals.length > 0 && !sameTotals(buckets, totals)) f("buckets", cust.customerId, `buckets ${fmt(buckets)} != charge totals ${fmt(totals)}`);

        if (cust.consumption) {
          const u = cust.consumption.unit;
          const cons = await c.wallet.listConsumption({ customerId: cust.customerId, unit: u, from: timestampFromDate(period.from), to: timestampFromDate(period.to), page: { pageSizeMax: 1 } });
          const want = (priced.get(u) ?? 0n) + cust.consumption.capturedNanos;
          const got = cons.consumedNanos + cons.shortfallNanos;
          if (got !== want) f("consumption", cust.customerId, `consumed ${cons.consumedNanos} + shortfall ${cons.shortfallNanos} = ${got} != rated ${priced.get(u) ?? 0n} + captured ${cust.consumption.capturedNanos} = ${want} ${u}`);
        }

        // ---- credits applied: the prepaid money consumed in an invoice's window (now) is applied by
        // the credits lines naming that window (its own, or a later invoice's adjustment), except
        // what late events awaiting their adjustment burned
        // The holds captured in it are billed by the "Captured holds" lines naming it.
        const creditsFor = new Map<number, bigint>();
        const capturedFor = new Map<number, bigint>();
        for (const inv of live) {
          for (const l of inv.lines) {
            const at = floorHour(ms(l.periodStart) ?? 0);
            if (l.kind === LineKind.CREDITS_APPLIED) creditsFor.set(at, (creditsFor.get(at) ?? 0n) - l.amountNanos);
            if ((l.kind === LineKind.USAGE || l.kind === LineKind.ADJUSTMENT) && l.chargeId === CAPTURED_HOLDS) capturedFor.set(at, (capturedFor.get(at) ?? 0n) + l.amountNanos);
          }
        }
        for (const inv of live) {
          const w = { from: floorHour(ms(inv.periodStart) ?? 0), to: floorHour(ms(inv.periodEnd) ?? 0) };
          const range = { customerId: cust.customerId, unit: inv.unit, from: timestampFromDate(new Date(w.from)), to: timestampFromDate(new Date(w.to)) };
          const cons = await c.wallet.listConsumption({ ...range, page: { pageSizeMax: 1 } });
          let pendingBurn = 0n;
          let lateBurn = 0n;
          let lateEvents = 0;
          if (rated.some((e) => lateIds.has(e.eventId) && w.from <= e.ts && e.ts < w.to)) {
            let pageToken = "";
            for (let pages = 0; pages < CONSUMPTION_PAGES_MAX; pages++) {
              const page = await c.wallet.listConsumption({ ...range, page: { pageSizeMax: CONSUMPTION_PAGE, pageToken } });
              for (const x of page.entries) {
                if (pendingIds.has(x.eventId)) pendingBurn += x.consumedNanos;
                else if (lateIds.has(x.eventId)) (lateBurn += x.consumedNanos), lateEvents++;
              }
              pageToken = page.page?.nextPageToken ?? "";
              if (pageToken === "") break;
            }
          }
          const applied = creditsFor.get(w.from) ?? 0n;
          if (applied !== cons.consumedNanos - pendingBurn) {
            f(
              "credits",
              inv.id,
              `prepaid ${inv.unit} consumed in ${iso(w.from)} .. ${iso(w.to)} is ${cons.consumedNanos} now (${pendingBurn} of it by late events awaiting the next close), credits lines naming the period apply ${applied}: ` +
                `${cons.consumedNanos - pendingBurn - applied} is applied on no invoice (${lateEvents} consumption entries of events accepted after the close burned ${lateBurn}; their usage was billed as an adjustment, their prepaid money never credited)`,
            );
          }
          const billedCaptured = capturedFor.get(w.from) ?? 0n;
          if (billedCaptured !== cons.capturedNanos) f("credits", inv.id, `holds captured in ${iso(w.from)} .. ${iso(w.to)} burned ${cons.capturedNanos} ${inv.unit} now, "Captured holds" lines naming the period bill ${billedCaptured}`);
        }

        // ---- finalized / paid invoices tie to the ledger
        const wantBalance = new Map<string, bigint>();
        for (const inv of live) {
          if (inv.status !== InvoiceStatus.FINALIZED && inv.status !== InvoiceStatus.PAID) continue;
          const tot = inv.totals!;
          const delta = inv.lines.reduce((s, l) => s + l.residueOutNanos - l.residueInNanos, 0n);
          const isPaid = inv.status === InvoiceStatus.PAID;
          // invoicing's account ids (apps/invoicing/src/ledger.ts accounts): long ones end in a hash
          const acc = { recv: ledgerId(`acct_inv_recv_${cust.customerId}_${inv.unit}`), residue: ledgerId(`acct_inv_residue_${cust.customerId}_${inv.unit}`), tax: `acct_inv_tax_${inv.unit}`, cash: `acct_inv_cash_${inv.unit}` };
          // a credit balance carried out (+) or applied (-) is not revenue: the receivable keeps it
          const credit = inv.lines.reduce((s, l) => s + (l.kind === LineKind.CARRIED_FORWARD && l.chargeId === "_credit_balance" ? l.roundedAmountNanos : 0n), 0n);
          const wantRecv = (isPaid ? 0n : tot.amountDueNanos) - credit;
          add(wantBalance, acc.recv, wantRecv);
          add(wantBalance, acc.residue, delta);
          const net = new Map<string, bigint>();
          const found = inv.ledgerTransferIds.length === 0 ? [] : (await c.ledger.lookupTransfers({ ids: inv.ledgerTransferIds })).transfers;
          const missing = inv.ledgerTransferIds.filter((id) => !found.some((x) => x.id === id));
          if (missing.length > 0) f("ledger-tie", inv.id, `transfers ${missing.join(", ")} are not in the ledger`);
          for (const x of found) {
            if (x.state !== TransferState.POSTED) f("ledger-tie", `${inv.id}/${x.id}`, `state ${TransferState[x.state]}, want POSTED`);
            if (x.unit !== inv.unit) f("ledger-tie", `${inv.id}/${x.id}`, `unit ${x.unit}, invoice ${inv.unit}`);
            add(net, x.debitAccountId, x.amountNanos);
            add(net, x.creditAccountId, -x.amountNanos);
          }
          const checkNet = (account: string, want: bigint, what: string) => {
            const got = net.get(account) ?? 0n;
            if (got !== want) f("ledger-tie", inv.id, `${what}: ${account} net debit ${got}, want ${want}`);
          };
          checkNet(acc.recv, wantRecv, "receivable");
          checkNet(acc.cash, isPaid ? tot.amountDueNanos : 0n, "cash");
          checkNet(acc.tax, -tot.taxNanos, "tax payable");
          checkNet(acc.residue, delta, "rounding residue");
        }
        if (wantBalance.size > 0) {
          const ids = [...wantBalance.keys()];
          const accounts = (await c.ledger.lookupAccounts({ ids })).accounts;
          for (const id of ids) {
            const a = accounts.find((x) => x.id === id);
            const got = a === undefined ? 0n : a.debitsPostedNanos - a.creditsPostedNanos;
            if (got !== wantBalance.get(id)) f("ledger-tie", id, `balance ${got} (posted debits - credits), the finalized invoices account for ${wantBalance.get(id)}`);
          }
        }
      } catch (e) {
        f("error", `usage/invoice ${cust.customerId}`, String(e));
      }
    }
    if (invoicingAudited) {
      // gapless numbering: INV-000001 .. INV-n, each once (the audited customers hold the tenant's invoices)
      const seen = numbers.filter((n) => n.startsWith("INV-")).map((n) => Number.parseInt(n.slice(4), 10)).sort((a, b) => a - b);
      if (seen.some((n, i) => n !== i + 1)) f("invoice", "numbering", `finalized numbers are ${seen.join(", ")}: want 1..${seen.length}, each once`);
    }
  }
  return findings;
}

/**
 * Audits until the books hold (rating and wallet consumption are asynchronous) or the deadline
 * passes; returns the last findings (empty = OK).
 */
export async function auditWhenSettled(
  tenants: AuditTenant[],
  opts: { timeoutMs?: number; intervalMs?: number; period?: { from: Date; to: Date } } = {},
): Promise<Finding[]> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const findings = await audit(tenants, opts);
    if (findings.length === 0 || Date.now() > deadline) return findings;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 500));
  }
}

export function formatFindings(findings: Finding[], max = 30): string {
  const shown = findings.slice(0, max).map((x) => `  [${x.tenant}] ${x.check} ${x.subject}: ${x.message}`);
  if (findings.length > max) shown.push(`  ... and ${findings.length - max} more`);
  return shown.join("\n");
}
