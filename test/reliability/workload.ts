/**
 * A seeded random workload for the reliability suites: customers on the demo plan with prepaid
 * wallets and random extra grants, LLM-call events in random batches with duplicates and late
 * arrivals (inside the current period), and holds that are captured or released. Everything it
 * was told was ACCEPTED / captured is recorded for the auditor.
 */
import { randomBytes } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { IngestStatus } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { GrantKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { seedDemo } from "../../libs/platform/src/demo.js";
import type { PlatformClients } from "../../libs/platform/src/platform.js";
import type { AuditCustomer, AuditTenant } from "../../libs/platform/src/auditor.js";

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
}

export interface WorkloadResult {
  customers: AuditCustomer[];
  accepted: number;
  duplicates: number;
  holdsCaptured: number;
  holdsReleased: number;
  retries: number;
}

const RETRYABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Aborted, Code.Canceled, Code.Unknown, Code.Internal]);

type Ev = {
  id: string;
  customerId: string;
  type: string;
  timestamp: ReturnType<typeof timestampFromDate>;
  properties: Record<string, { kind: { case: "stringValue"; value: string } | { case: "intValue"; value: bigint } }>;
};

export async function runWorkload(c: PlatformClients, opts: WorkloadOptions): Promise<WorkloadResult> {
  const r = prng(opts.seed);
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
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  };

  const periodStart = new Date(Date.UTC(opts.now.getUTCFullYear(), opts.now.getUTCMonth(), 1));
  const customers: AuditCustomer[] = [];
  const walletOf = new Map<string, string>();
  for (let i = 0; i < opts.customers; i++) {
    const customerId = `cus_${opts.runId}_${i}`;
    const demo = await call(() => seedDemo(c, { customerId, now: opts.now }));
    walletOf.set(customerId, demo.walletId);
    const grants = r.int(0, 3);
    for (let g = 0; g < grants; g++) {
      const amountNanos = BigInt(r.int(1, 500)) * 1_000_000n; // $0.001 .. $0.5
      await call(() => c.wallet.grant({ id: `grant_${customerId}_${g}`, walletId: demo.walletId, kind: r.pick([GrantKind.PURCHASED, GrantKind.PROMOTIONAL]), amountNanos, priority: r.int(1, 5) }));
    }
    customers.push({ customerId, walletIds: [demo.walletId], acceptedEventIds: [], consumption: { unit: "USD", capturedNanos: 0n } });
  }
  const byId = new Map(customers.map((x) => [x.customerId, x]));

  const sent: Ev[] = [];
  let seq = 0;
  let accepted = 0;
  let duplicates = 0;
  const lateMsMax = Math.max(0, Math.min(2 * 86_400_000, opts.now.getTime() - periodStart.getTime() - 60_000));
  for (let b = 0; b < opts.batches; b++) {
    if (opts.between) await opts.between(b);
    const n = r.int(1, opts.batchEventsMax);
    const batch: Ev[] = [];
    for (let k = 0; k < n; k++) {
      if (sent.length > 0 && r.chance(0.1)) {
        batch.push(r.pick(sent)); // a duplicate (same id, same content)
        continue;
      }
      const cust = r.pick(customers);
      const late = r.chance(0.2) ? r.int(0, lateMsMax) : r.int(0, 5_000);
      batch.push({
        id: `evt_${opts.runId}_${seq++}`,
        customerId: cust.customerId,
        type: "llm.call",
        timestamp: timestampFromDate(new Date(opts.now.getTime() - late)),
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
      if (x.status === IngestStatus.ACCEPTED) {
        accepted++;
        byId.get(ev.customerId)!.acceptedEventIds.push(ev.id);
        sent.push(ev);
      } else if (x.status === IngestStatus.DUPLICATE) {
        duplicates++;
        // a retried batch whose first attempt was stored: acknowledged now, counted once
        const cust = byId.get(ev.customerId)!;
        if (!cust.acceptedEventIds.includes(ev.id)) {
          cust.acceptedEventIds.push(ev.id);
          accepted++;
          sent.push(ev);
        }
      } else {
        throw new Error(`event ${ev.id} not accepted: status ${x.status} ${x.field} ${x.reason} ${x.message}`);
      }
    });
  }

  let holdsCaptured = 0;
  let holdsReleased = 0;
  for (let h = 0; h < opts.holds; h++) {
    const cust = r.pick(customers);
    const amountNanos = BigInt(r.int(1, 2_000)) * 1_000n;
    const holdId = `hold_${opts.runId}_${h}`;
    let held: bigint;
    try {
      const a = await call(() => c.wallet.authorize({ id: holdId, customerId: cust.customerId, unit: "USD", amountNanos, ttlMs: 120_000n }));
      held = a.hold?.amountNanos ?? 0n;
    } catch (e) {
      if (ConnectError.from(e).code === Code.FailedPrecondition) continue; // not enough credits: refused, nothing held
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
  }
  return { customers, accepted, duplicates, holdsCaptured, holdsReleased, retries };
}

export function auditTenant(tenant: string, clients: PlatformClients, w: WorkloadResult): AuditTenant {
  return { tenant, clients, customers: w.customers };
}
