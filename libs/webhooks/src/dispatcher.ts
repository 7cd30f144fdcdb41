// The webhook dispatcher: claims due deliveries, POSTs each signed body to its endpoint, and
// records the outcome (2xx = delivered; otherwise a retry with exponential backoff until
// ATTEMPTS_MAX, then failed). At least once: a dispatcher that dies after a POST but before
// recording it sends again after CLAIM_LEASE_MS, so receivers dedupe on `nanobill-event-id`.
import type { Queryable } from "@nanobill/db";
import * as L from "./limits.js";
import { SIGNATURE_HEADER, signWebhook } from "./signature.js";
import { claimDue, recordAttempt, type ClaimedDelivery } from "./store.js";

export interface DispatcherLogger {
  warn(msg: string, fields?: object): void;
}

export interface DispatcherOptions {
  db: Queryable;
  clock: { now(): Date };
  logger: DispatcherLogger;
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  timeoutMs?: number;
  attemptsMax?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  perRoundMax?: number;
  inFlightMax?: number;
  intervalMs?: number;
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

export function createWebhookDispatcher(opts: DispatcherOptions) {
  const send = opts.fetch ?? globalThis.fetch;
  const timeoutMs = opts.timeoutMs ?? L.DELIVERY_TIMEOUT_MS;
  const attemptsMax = opts.attemptsMax ?? L.ATTEMPTS_MAX;
  const base = opts.backoffBaseMs ?? L.BACKOFF_BASE_MS;
  const max = opts.backoffMaxMs ?? L.BACKOFF_MAX_MS;
  const random = opts.random ?? Math.random;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<unknown> | undefined;
  let stopped = false;

  async function post(d: ClaimedDelivery): Promise<{ status: number; error: string }> {
    if (!d.enabled) return { status: 0, error: "endpoint disabled" };
    const ts = Math.floor(opts.clock.now().getTime() / 1000);
    try {
      const res = await send(d.url, {
        method: "POST",
        redirect: "manual",
        signal: AbortSignal.timeout(timeoutMs),
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
      await res.body?.cancel().catch(() => undefined);
      return { status: res.status, error: res.status >= 200 && res.status < 300 ? "" : `HTTP ${res.status}` };
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      const what = err.name === "TimeoutError" ? `timed out after ${timeoutMs} ms` : `${err.message}${err.cause?.code ? ` (${err.cause.code})` : ""}`;
      return { status: 0, error: what };
    }
  }

  /** One round: claim up to perRoundMax due deliveries and send them, inFlightMax at a time. */
  async function runOnce(): Promise<DispatchStats> {
    const stats: DispatchStats = { delivered: 0, retried: 0, failed: 0 };
    const due = await claimDue(opts.db, opts.clock.now(), opts.perRoundMax ?? L.DELIVERIES_PER_ROUND_MAX);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < due.length) {
        const d = due[next++]!;
        const r = await post(d);
        const now = opts.clock.now();
        const delivered = r.error === "";
        const giveUp = !delivered && (d.attempt >= attemptsMax || !d.enabled);
        const retryAt = delivered || giveUp ? null : new Date(now.getTime() + backoffMs(d.attempt, base, max, random()));
        await recordAttempt(opts.db, d.seq, { delivered, status: r.status, error: r.error, now, retryAt });
        if (delivered) stats.delivered++;
        else if (giveUp) {
          stats.failed++;
          opts.logger.warn("webhook delivery given up", { tenant: d.tenant, endpoint: d.endpointId, event: d.eventId, attempts: d.attempt, error: r.error });
        } else stats.retried++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.inFlightMax ?? L.DELIVERIES_IN_FLIGHT_MAX, due.length) }, worker));
    return stats;
  }

  function loop(): void {
    if (stopped) return;
    running = runOnce()
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
