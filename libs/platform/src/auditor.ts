/**
 * The whole-system auditor: after a workload, checks through the public APIs (an admin key per
 * tenant) that every nano is accounted for. Returns findings; an empty list means the books hold.
 *
 * Checks, per tenant:
 * - ledger `Verify` ok: debits == credits per unit, every stored balance == its transfers;
 * - no wallet below its floor (HARD_STOP / POSTPAID: balance >= 0; SOFT_NEGATIVE: >= -limit);
 * - every accepted event rated exactly once (GetRatedEvent finds it; bucket event counts == events);
 * - per customer and unit: sum of rated event prices == sum of rated buckets (ListRatedUsage)
 *   == invoice preview usage lines (amount before minor-unit rounding; each line's
 *   rounded + residue_out == amount + residue_in), to the nano;
 * - wallet consumption: consumed + shortfall == rated prices + captured holds (when the caller
 *   says the customer's prices burn that wallet).
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { PolicyMode } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { LineKind } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import type { PlatformClients } from "./platform.js";

/** Parallel lookups of rated events per tenant. */
export const AUDIT_CONCURRENCY = 16;

export interface AuditCustomer {
  customerId: string;
  /** Wallets to check against their floor. */
  walletIds: string[];
  /** Every event id the platform acknowledged as ACCEPTED for this customer. */
  acceptedEventIds: string[];
  /** The wallet (unit) its rated prices burn, for the consumption check; absent = not checked. */
  consumption?: { unit: string; capturedNanos: bigint };
}

export interface AuditTenant {
  tenant: string;
  clients: PlatformClients;
  customers: AuditCustomer[];
}

export interface Finding {
  tenant: string;
  check: "ledger" | "wallet-floor" | "rated-once" | "rated-sum" | "buckets" | "invoice" | "consumption" | "error";
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

/** Runs every check once; `period` bounds ListRatedUsage (default: the preview's period). */
export async function audit(tenants: AuditTenant[], opts: { period?: { from: Date; to: Date } } = {}): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const t of tenants) {
    const f = (check: Finding["check"], subject: string, message: string) => findings.push({ tenant: t.tenant, check, subject, message });
    const c = t.clients;
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
      let rated = 0;
      let ratedLines = 0n;
      await pool(cust.acceptedEventIds, AUDIT_CONCURRENCY, async (eventId) => {
        try {
          const r = await c.rating.getRatedEvent({ eventId });
          if (r.rated === undefined) return void f("rated-once", eventId, "accepted event not rated");
          if (r.rated.customerId !== cust.customerId) f("rated-once", eventId, `rated for ${r.rated.customerId}, sent for ${cust.customerId}`);
          const charges = new Set<string>();
          for (const l of r.rated.lines) {
            const key = `${l.chargeId}|${JSON.stringify(Object.entries(l.dimensions).sort())}`;
            if (charges.has(key)) f("rated-once", eventId, `charge ${l.chargeId} rated twice`);
            charges.add(key);
            add(priced, l.unit, l.priceNanos);
            ratedLines++;
          }
          rated++;
        } catch (e) {
          if (ConnectError.from(e).code === Code.NotFound) f("rated-once", eventId, "accepted event not rated (NotFound)");
          else f("error", `rating.getRatedEvent ${eventId}`, String(e));
        }
      });

      try {
        const { invoice } = await c.invoicing.previewInvoice({ customerId: cust.customerId });
        const period = opts.period ?? {
          from: invoice?.periodStart ? new Date(Number(invoice.periodStart.seconds) * 1000) : new Date(0),
          to: invoice?.periodEnd ? new Date(Number(invoice.periodEnd.seconds) * 1000) : new Date(),
        };
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
        if (bucketEvents !== ratedLines) f("rated-once", cust.customerId, `buckets count ${bucketEvents} event lines, the ${rated} rated events (of ${cust.acceptedEventIds.length} accepted) have ${ratedLines}`);
        if (!sameTotals(priced, buckets)) f("buckets", cust.customerId, `rated events sum ${fmt(priced)} != rated buckets ${fmt(buckets)}`);
        if (usage.totals.length > 0 && !sameTotals(buckets, totals)) f("buckets", cust.customerId, `buckets ${fmt(buckets)} != charge totals ${fmt(totals)}`);

        const lines = new Map<string, bigint>();
        for (const l of invoice?.lines ?? []) {
          if (l.kind !== LineKind.USAGE) continue;
          add(lines, invoice!.unit, l.amountNanos);
          if (l.roundedAmountNanos + l.residueOutNanos !== l.amountNanos + l.residueInNanos) {
            f("invoice", `${cust.customerId}/${l.id}`, `rounded ${l.roundedAmountNanos} + residue out ${l.residueOutNanos} != amount ${l.amountNanos} + residue in ${l.residueInNanos}`);
          }
        }
        if (!sameTotals(priced, lines)) f("invoice", cust.customerId, `rated events sum ${fmt(priced)} != invoice preview usage ${fmt(lines)}`);

        if (cust.consumption) {
          const u = cust.consumption.unit;
          const cons = await c.wallet.listConsumption({ customerId: cust.customerId, unit: u, from: timestampFromDate(period.from), to: timestampFromDate(period.to) });
          const want = (priced.get(u) ?? 0n) + cust.consumption.capturedNanos;
          const got = cons.consumedNanos + cons.shortfallNanos;
          if (got !== want) f("consumption", cust.customerId, `consumed ${cons.consumedNanos} + shortfall ${cons.shortfallNanos} = ${got} != rated ${priced.get(u) ?? 0n} + captured ${cust.consumption.capturedNanos} = ${want} ${u}`);
        }
      } catch (e) {
        f("error", `usage/invoice ${cust.customerId}`, String(e));
      }
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
