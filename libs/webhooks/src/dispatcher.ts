// The webhook dispatcher: claims due deliveries, POSTs each signed body to its endpoint, and
// records the outcome (2xx = delivered; otherwise a retry with exponential backoff until
// ATTEMPTS_MAX, then failed). At least once: a dispatcher that dies after a POST but before
// recording it sends again after CLAIM_LEASE_MS, so receivers dedupe on `nanobill-event-id`.
// A round's work fits its claim by construction (claimLeaseMs): a live dispatcher does not lose
// its rows to another replica mid-round; if it is slower than planned anyway, it skips rows its
// claim no longer covers, and recordAttempt ignores an outcome whose claim was taken over.
// Egress: the default sender (sender.ts) refuses non-public addresses at connect time unless
// allowPrivateNetworks; a refusal is recorded and retried like any connection error.
import type { Queryable } from "@nanobill/db";
import * as L from "./limits.js";
import { createEgressSender, type ResolveAll, type WebhookSender } from "./sender.js";
import { SIGNATURE_HEADER, signWebhook } from "./signature.js";
import { claimDue, purgeFinished, recordAttempt, type ClaimedDelivery } from "./store.js";

export interface DispatcherLogger {
  warn(msg: string, fields?: object): void;
}

export interface DispatcherOptions {
  db: Queryable;
  clock: { now(): Date };
  logger: DispatcherLogger;
  /**
   * Send through this fetch instead of the default sender (tests; an egress proxy's client). It is
   * used as-is: the egress policy (allowPrivateNetworks, resolveHost) applies to the default only.
   */
  fetch?: typeof fetch;
  /**
   * Let the default sender connect to non-public addresses (loopback, private, link-local, ...).
   * Default false: a URL whose host is or resolves to one is refused at connect time. Local
   * development and tests with a receiver on 127.0.0.1 set it.
   */
  allowPrivateNetworks?: boolean;
  /** How the default sender resolves hostnames (defaults to dns.lookup, all addresses; tests inject one). */
  resolveHost?: ResolveAll;
  timeoutMs?: number;
  attemptsMax?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Deliveries one round claims (defaults to DELIVERIES_PER_ROUND_MAX). */
  perRoundMax?: number;
  inFlightMax?: number;
  /** Deliveries of one (tenant, endpoint) one round claims (defaults to DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX). */
  perEndpointMax?: number;
  intervalMs?: number;
  /** Finished deliveries are deleted this long after they finished (default DELIVERY_RETENTION_MS). */
  retentionMs?: number;
  /** 0..1 for the jitter; defaults to Math.random (tests pin it). */
  random?: () => number;
}

export interface DispatchStats {
  delivered: number;
  retried: number;
  failed: number;
}

/** The delay before the attempt after attempt `n` (1-based): min(base * 2^(n-1), max) plus up to 10%. */
export function backoffMs(n: number, base: number, max: number, random: number): number {
  const d = Math.min(base * 2 ** Math.min(n - 1, 30), max);
  return Math.round(d + d * 0.1 * random);
}

/**
 * The claim a round needs: its POSTs run in ceil(perRound / inFlight) waves of at most `timeoutMs`
 * each, plus CLAIM_LEASE_MARGIN_MS (60 s with the defaults: 4 waves x 10 s + 20 s).
 */
export function claimLeaseMs(perRound: number, inFlight: number, timeoutMs: number): number {
  return Math.ceil(perRound / inFlight) * timeoutMs + L.CLAIM_LEASE_MARGIN_MS;
}

/** An injected fetch as a sender: POST, no redirects followed, the body discarded. */
function fetchSender(f: typeof fetch): WebhookSender {
  return async (url, init) => {
    const res = await f(url, { method: "POST", redirect: "manual", signal: init.signal, headers: init.headers, body: init.body });
    await res.body?.cancel().catch(() => undefined);
    return res.status;
  };
}

function positiveInt(v: number, name: string): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`webhook dispatcher: ${name} must be a positive integer`);
  return v;
}

export function createWebhookDispatcher(opts: DispatcherOptions) {
  const send: WebhookSender = opts.fetch ? fetchSender(opts.fetch) : createEgressSender({ allowPrivateNetworks: opts.allowPrivateNetworks ?? false, resolve: opts.resolveHost });
  const timeoutMs = opts.timeoutMs ?? L.DELIVERY_TIMEOUT_MS;
  const attemptsMax = opts.attemptsMax ?? L.ATTEMPTS_MAX;
  const base = opts.backoffBaseMs ?? L.BACKOFF_BASE_MS;
  const max = opts.backoffMaxMs ?? L.BACKOFF_MAX_MS;
  const random = opts.random ?? Math.random;
  const perRound = positiveInt(opts.perRoundMax ?? L.DELIVERIES_PER_ROUND_MAX, "perRoundMax");
  const inFlight = positiveInt(opts.inFlightMax ?? L.DELIVERIES_IN_FLIGHT_MAX, "inFlightMax");
  const perEndpoint = positiveInt(opts.perEndpointMax ?? L.DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX, "perEndpointMax");
  positiveInt(timeoutMs, "timeoutMs");
  const leaseMs = claimLeaseMs(perRound, inFlight, timeoutMs);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<unknown> | undefined;
  let stopped = false;

  async function post(d: ClaimedDelivery): Promise<{ status: number; error: string }> {
    if (!d.enabled) return { status: 0, error: "endpoint disabled" };
    const ts = Math.floor(opts.clock.now().getTime() / 1000);
    const signal = AbortSignal.timeout(timeoutMs);
    try {
      const status = await send(d.url, {
        signal,
        headers: {
          "content-type": "application/json",
          "user-agent": "Nanobill-Webhooks/1",
          "nanobill-event-id": d.eventId,
          "nanobill-event-kind": d.eventKind,
          "nanobill-delivery-attempt": String(d.attempt),
          [SIGNATURE_HEADER]: signWebhook(d.secret, ts, d.payload),
        },
        body: d.payload,
      });
      return { status, error: status >= 200 && status < 300 ? "" : `HTTP ${status}` };
    } catch (e) {
      if (signal.aborted) return { status: 0, error: `timed out after ${timeoutMs} ms` };
      const err = e as Error & { cause?: { code?: string } };
      return { status: 0, error: `${err.message}${err.cause?.code ? ` (${err.cause.code})` : ""}` };
    }
  }

  /**
   * One round: claim up to perRound due deliveries (at most perEndpoint per endpoint) for leaseMs
   * and send them, inFlight at a time. A row whose claim would run out before its POST could time
   * out is skipped (not sent, not recorded: the next claim after its lease takes it); an outcome
   * whose claim another dispatcher took over meanwhile is not recorded (that dispatcher's counts).
   */
  async function runOnce(): Promise<DispatchStats> {
    const stats: DispatchStats = { delivered: 0, retried: 0, failed: 0 };
    const due = await claimDue(opts.db, opts.clock.now(), perRound, leaseMs, perEndpoint);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < due.length) {
        const d = due[next++]!;
        if (opts.clock.now().getTime() + timeoutMs > d.leaseUntil.getTime()) {
          opts.logger.warn("webhook delivery skipped: its claim runs out before the POST could finish", { tenant: d.tenant, endpoint: d.endpointId, event: d.eventId, attempt: d.attempt });
          continue;
        }
        const r = await post(d);
        const now = opts.clock.now();
        const delivered = r.error === "";
        const giveUp = !delivered && (d.attempt >= attemptsMax || !d.enabled);
        const retryAt = delivered || giveUp ? null : new Date(now.getTime() + backoffMs(d.attempt, base, max, random()));
        if (!(await recordAttempt(opts.db, d, { delivered, status: r.status, error: r.error, now, retryAt }))) {
          opts.logger.warn("webhook attempt not recorded: its claim was taken over", { tenant: d.tenant, endpoint: d.endpointId, event: d.eventId, attempt: d.attempt, error: r.error });
          continue;
        }
        if (delivered) stats.delivered++;
        else if (giveUp) {
          stats.failed++;
          opts.logger.warn("webhook delivery given up", { tenant: d.tenant, endpoint: d.endpointId, event: d.eventId, attempts: d.attempt, error: r.error });
        } else stats.retried++;
      }
    };
    // Every worker finishes before the round ends (a failing one must not let the next round's
    // claims pile POSTs on top of the others' still in flight); then the first failure is raised.
    const settled = await Promise.allSettled(Array.from({ length: Math.min(inFlight, due.length) }, worker));
    const failed = settled.find((x): x is PromiseRejectedResult => x.status === "rejected");
    if (failed) throw failed.reason;
    return stats;
  }

  /** Deletes delivered and given-up deliveries finished more than retentionMs ago, a batch at a time; returns how many. */
  const retentionMs = opts.retentionMs ?? L.DELIVERY_RETENTION_MS;
  let lastPurgeMs = -Infinity;
  async function purgeOnce(): Promise<number> {
    let n = 0;
    const before = new Date(opts.clock.now().getTime() - retentionMs);
    for (let i = 0; i < L.PURGE_BATCHES_PER_RUN_MAX; i++) {
      const k = await purgeFinished(opts.db, before, L.PURGE_BATCH_ROWS);
      n += k;
      if (k < L.PURGE_BATCH_ROWS) break;
    }
    return n;
  }

  function loop(): void {
    if (stopped) return;
    const nowMs = opts.clock.now().getTime();
    const purge = nowMs - lastPurgeMs >= L.PURGE_INTERVAL_MS ? ((lastPurgeMs = nowMs), purgeOnce().catch((e: unknown) => opts.logger.warn("webhook delivery purge failed; retried later", { err: String(e) }))) : Promise.resolve();
    running = purge
      .then(runOnce)
      .then((s) => (s.delivered + s.retried + s.failed > 0 ? 0 : (opts.intervalMs ?? L.DISPATCH_INTERVAL_MS)))
      .catch((e: unknown) => {
        opts.logger.warn("webhook dispatch round failed; retrying", { err: String(e) });
        return opts.intervalMs ?? L.DISPATCH_INTERVAL_MS;
      })
      .then((wait) => {
        if (!stopped) timer = setTimeout(loop, wait);
      });
  }

  return {
    runOnce,
    purgeOnce,
    /** The claim each round takes (derived from perRoundMax, inFlightMax and timeoutMs). */
    leaseMs,
    /** Starts the background loop (a round, then the next one at once if it found work, else after intervalMs). */
    start(): void {
      stopped = false;
      if (!running) loop();
    },
    /** Stops the loop and waits for the round in progress. */
    async stop(): Promise<void> {
      stopped = true;
      clearTimeout(timer);
      await running;
      running = undefined;
    },
  };
}
