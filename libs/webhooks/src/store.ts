// Endpoints and the delivery outbox, on the service's own schema (see webhooks.sql).
import { createHash, randomBytes } from "node:crypto";
import { isDbError, type Queryable } from "@nanobill/db";
import { ipLiteralOf, isLocalhostName, nonPublicRange } from "./egress.js";
import * as L from "./limits.js";

/** Bad input, naming the field (services answer InvalidArgument). */
export class WebhookInputError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = "WebhookInputError";
  }
}

/** An endpoint id reused with other content, or the per-tenant limit (services answer AlreadyExists / ResourceExhausted). */
export class WebhookConflictError extends Error {
  constructor(
    readonly kind: "id_reused" | "too_many_endpoints",
    message: string,
  ) {
    super(message);
    this.name = "WebhookConflictError";
  }
}

export interface EndpointInput {
  id: string;
  url: string;
  /** Empty: every kind. */
  eventKinds: string[];
  description?: string;
}

export interface Endpoint {
  id: string;
  url: string;
  eventKinds: string[];
  description: string;
  enabled: boolean;
  createdAt: Date;
  disabledAt: Date | null;
}

/** One event to deliver; `data` must be JSON-safe (money as strings of nanos). */
export interface WebhookEvent {
  id: string;
  kind: string;
  occurredAt: Date;
  data: Record<string, unknown>;
}

export type DeliveryState = "pending" | "delivered" | "failed";

export interface Delivery {
  seq: bigint;
  endpointId: string;
  eventId: string;
  eventKind: string;
  state: DeliveryState;
  attempts: number;
  nextAttemptAt: Date;
  deliveredAt: Date | null;
  failedAt: Date | null;
  lastStatus: number;
  lastError: string;
  payload: string;
}

/** Endpoint policy: with allowPrivateNetworks false (the default), a URL whose host is a non-public IP literal or `localhost` is refused. */
export interface EndpointPolicy {
  allowPrivateNetworks?: boolean;
}

/**
 * Checks an endpoint by field. Unless `policy.allowPrivateNetworks`, the URL's host must not be an
 * IP literal in a non-public range (egress.ts) nor `localhost` (or a name under `.localhost`);
 * other hostnames are checked where it matters, at connect time (the dispatcher's sender), since
 * what a name resolves to can change after creation.
 */
export function validateEndpoint(input: EndpointInput, policy: EndpointPolicy = {}): void {
  if (!L.ENDPOINT_ID_PATTERN.test(input.id)) throw new WebhookInputError("id", "must be 1-64 characters of A-Z a-z 0-9 _ . -");
  if (input.url.length === 0 || input.url.length > L.URL_CHARS_MAX) throw new WebhookInputError("url", `must be 1-${L.URL_CHARS_MAX} characters`);
  refuseControlChars("url", input.url);
  let u: URL;
  try {
    u = new URL(input.url);
  } catch {
    throw new WebhookInputError("url", "must be an absolute http or https URL");
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") throw new WebhookInputError("url", "must be an http or https URL");
  if (u.username !== "" || u.password !== "") throw new WebhookInputError("url", "must not carry credentials (the signature authenticates the sender)");
  if (!policy.allowPrivateNetworks) {
    const ip = ipLiteralOf(u.hostname);
    const range = ip === null ? null : nonPublicRange(ip);
    if (range !== null) throw new WebhookInputError("url", `host ${ip} is not a public address (${range}); webhook endpoints must be reachable on the internet`);
    if (isLocalhostName(u.hostname)) throw new WebhookInputError("url", `host ${u.hostname} is not a public address (loopback); webhook endpoints must be reachable on the internet`);
  }
  if (input.eventKinds.length > L.EVENT_KINDS_MAX) throw new WebhookInputError("event_kinds", `at most ${L.EVENT_KINDS_MAX}`);
  input.eventKinds.forEach((k, i) => {
    if (!L.EVENT_KIND_PATTERN.test(k)) throw new WebhookInputError(`event_kinds[${i}]`, "must be 1-64 characters of a-z 0-9 _ .");
  });
  if ((input.description ?? "").length > L.DESCRIPTION_CHARS_MAX) throw new WebhookInputError("description", `at most ${L.DESCRIPTION_CHARS_MAX} characters`);
  refuseControlChars("description", input.description ?? "");
}

/** Refuses control characters (CONTROL_CHARS_RE) in a free-text field, naming it. */
export function refuseControlChars(field: string, value: string): void {
  if (L.CONTROL_CHARS_RE.test(value)) throw new WebhookInputError(field, "must not contain control characters (U+0000-U+001F, U+007F)");
}

function requestHash(input: EndpointInput): string {
  const kinds = [...new Set(input.eventKinds)].sort();
  return createHash("sha256").update(JSON.stringify([input.url, kinds, input.description ?? ""])).digest("hex");
}

function endpointOf(r: Record<string, unknown>): Endpoint {
  return {
    id: r.id as string,
    url: r.url as string,
    eventKinds: r.event_kinds as string[],
    description: r.description as string,
    enabled: r.enabled as boolean,
    createdAt: new Date(r.created_at as string | Date),
    disabledAt: r.disabled_at === null ? null : new Date(r.disabled_at as string | Date),
  };
}

/**
 * Creates an endpoint, idempotent on (tenant, id): the same content answers the existing endpoint
 * (and its secret within SECRET_REPLAY_WINDOW_MS of its creation, so a retried create still learns
 * it; "" after that); other content -> WebhookConflictError. `policy`: see validateEndpoint.
 */
export async function createEndpoint(
  q: Queryable,
  tenant: string,
  input: EndpointInput,
  now: Date,
  policy: EndpointPolicy = {},
): Promise<{ endpoint: Endpoint; secret: string; created: boolean }> {
  validateEndpoint(input, policy);
  const hash = requestHash(input);
  const secret = `whsec_${randomBytes(24).toString("base64url")}`;
  const kinds = [...new Set(input.eventKinds)].sort();
  // One statement: the count guard and the insert (a race past the limit by a few concurrent creates is harmless).
  const ins = await q.query(
    `INSERT INTO webhook_endpoints (tenant, id, url, secret, event_kinds, description, request_hash, enabled, created_at)
     SELECT $1, $2, $3, $4, $5::text[], $6, $7, TRUE, $8
     WHERE (SELECT count(*) FROM webhook_endpoints WHERE tenant = $1) < $9
     ON CONFLICT (tenant, id) DO NOTHING
     RETURNING *`,
    [tenant, input.id, input.url, secret, kinds, input.description ?? "", hash, now, L.ENDPOINTS_PER_TENANT_MAX],
  );
  if (ins.rows[0]) return { endpoint: endpointOf(ins.rows[0]), secret, created: true };
  const { rows } = await q.query(`SELECT * FROM webhook_endpoints WHERE tenant = $1 AND id = $2`, [tenant, input.id]);
  const row = rows[0];
  if (!row) throw new WebhookConflictError("too_many_endpoints", `a tenant has at most ${L.ENDPOINTS_PER_TENANT_MAX} webhook endpoints`);
  if (row.request_hash !== hash) throw new WebhookConflictError("id_reused", `webhook endpoint ${input.id} already exists with other content`);
  // A retried create learns the secret only shortly after the endpoint was made (a lost answer);
  // later, anyone replaying the visible fields gets the endpoint without its secret.
  const createdAt = new Date(row.created_at as string | Date).getTime();
  const secretShown = now.getTime() - createdAt <= L.SECRET_REPLAY_WINDOW_MS ? (row.secret as string) : "";
  return { endpoint: endpointOf(row), secret: secretShown, created: false };
}

export async function listEndpoints(q: Queryable, tenant: string): Promise<Endpoint[]> {
  const { rows } = await q.query(`SELECT * FROM webhook_endpoints WHERE tenant = $1 ORDER BY id`, [tenant]);
  return rows.map(endpointOf);
}

/** Disables an endpoint (idempotent): nothing more is enqueued for it and its pending deliveries fail. Null when unknown. */
export async function disableEndpoint(q: Queryable, tenant: string, id: string, now: Date): Promise<Endpoint | null> {
  const { rows } = await q.query(
    `UPDATE webhook_endpoints SET enabled = FALSE, disabled_at = COALESCE(disabled_at, $3) WHERE tenant = $1 AND id = $2 RETURNING *`,
    [tenant, id, now],
  );
  return rows[0] ? endpointOf(rows[0]) : null;
}

/**
 * Queues each event for every enabled endpoint of the tenant that subscribes to its kind, in the
 * caller's transaction (so an event and its deliveries commit together), through the schema's
 * webhook_enqueue() (the same function services' alert triggers call). Idempotent on (endpoint,
 * event id). Returns the deliveries created.
 */
export async function enqueueWebhooks(tx: Queryable, tenant: string, events: WebhookEvent[], now: Date): Promise<number> {
  if (events.length === 0) return 0;
  if (events.length > L.EVENTS_PER_ENQUEUE_MAX) throw new WebhookInputError("events", `at most ${L.EVENTS_PER_ENQUEUE_MAX} per call`);
  const data: string[] = [];
  events.forEach((e, i) => {
    if (!L.EVENT_KIND_PATTERN.test(e.kind)) throw new WebhookInputError(`events[${i}].kind`, "must be 1-64 characters of a-z 0-9 _ .");
    // The id goes out as the nanobill-event-id header: header-safe characters only.
    if (!L.EVENT_ID_PATTERN.test(e.id)) throw new WebhookInputError(`events[${i}].id`, "must be 1-256 characters of A-Z a-z 0-9 _ . : -");
    const d = JSON.stringify(e.data);
    // The body is the jsonb text of the envelope (id, kind, tenant, time) and the data: keep a
    // margin for the envelope and count the data as jsonb renders it (a space after each : and ,).
    if (jsonbTextBytes(d) > L.PAYLOAD_BYTES_MAX - 1_024) throw new WebhookInputError(`events[${i}].data`, `the JSON body is over ${L.PAYLOAD_BYTES_MAX} bytes`);
    data.push(d);
  });
  try {
    const { rows } = await tx.query<{ n: string | number | null }>(
      `SELECT sum(webhook_enqueue($1, ev.id, ev.kind, ev.at, ev.data::jsonb, $6))::bigint AS n
       FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[]) WITH ORDINALITY AS ev(id, kind, at, data, n)`,
      [tenant, events.map((e) => e.id), events.map((e) => e.kind), events.map((e) => e.occurredAt.toISOString()), data, now],
    );
    return Number(rows[0]?.n ?? 0);
  } catch (e) {
    // webhook_enqueue's own size check (SQLSTATE 22023): the caller's input, not a server fault.
    if (isDbError(e) && e.sqlState === "22023") throw new WebhookInputError("events", e.message);
    throw e;
  }
}

/** Bytes of a compact JSON text once rendered by jsonb (a space after every : and , outside strings). */
export function jsonbTextBytes(json: string): number {
  let extra = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x3a || c === 0x2c) extra++;
  }
  return Buffer.byteLength(json) + extra;
}

function deliveryOf(r: Record<string, unknown>): Delivery {
  const date = (v: unknown) => (v === null ? null : new Date(v as string | Date));
  return {
    seq: BigInt(r.seq as string | number | bigint),
    endpointId: r.endpoint_id as string,
    eventId: r.event_id as string,
    eventKind: r.event_kind as string,
    state: r.delivered_at !== null ? "delivered" : r.failed_at !== null ? "failed" : "pending",
    attempts: Number(r.attempts),
    nextAttemptAt: new Date(r.next_attempt_at as string | Date),
    deliveredAt: date(r.delivered_at),
    failedAt: date(r.failed_at),
    lastStatus: Number(r.last_status),
    lastError: r.last_error as string,
    payload: r.payload as string,
  };
}

/** Deliveries of a tenant, newest first, optionally of one endpoint, event or state. */
export async function listDeliveries(
  q: Queryable,
  tenant: string,
  f: { endpointId?: string; eventId?: string; state?: DeliveryState; beforeSeq?: bigint; pageSize?: number },
): Promise<Delivery[]> {
  const limit = Math.min(Math.max(f.pageSize ?? 100, 1), L.DELIVERIES_PER_PAGE_MAX);
  const state = f.state ?? "";
  const { rows } = await q.query(
    `SELECT * FROM webhook_deliveries
     WHERE tenant = $1 AND ($2 = '' OR endpoint_id = $2) AND ($3 = '' OR event_id = $3) AND ($4::bigint IS NULL OR seq < $4::bigint)
       AND ($5 = '' OR ($5 = 'delivered' AND delivered_at IS NOT NULL) OR ($5 = 'failed' AND failed_at IS NOT NULL)
            OR ($5 = 'pending' AND delivered_at IS NULL AND failed_at IS NULL))
     ORDER BY seq DESC LIMIT $6`,
    [tenant, f.endpointId ?? "", f.eventId ?? "", f.beforeSeq === undefined ? null : f.beforeSeq.toString(), state, limit],
  );
  return rows.map(deliveryOf);
}

/** A claimed delivery with what the dispatcher needs to send it. */
export interface ClaimedDelivery {
  seq: bigint;
  tenant: string;
  endpointId: string;
  eventId: string;
  eventKind: string;
  payload: string;
  /** The attempt count this claim set: the claim's fence (recordAttempt applies only while it is unchanged). */
  attempt: number;
  /** When this claim runs out (another dispatcher may claim the row from then on). */
  leaseUntil: Date;
  url: string;
  secret: string;
  enabled: boolean;
}

/**
 * Claims due deliveries: their next attempt moves `leaseMs` ahead (so a dispatcher that dies
 * mid-POST gives them back) and their attempt count goes up (each claim sets a new count: the
 * fence recordAttempt checks). SKIP LOCKED: dispatchers of several replicas never claim the same
 * row in one round.
 *
 * Fairness: at most `perEndpointMax` rows of one (tenant, endpoint) per round, and rows are taken
 * round robin: every endpoint's oldest due row (by due time) before any endpoint's second, so an
 * endpoint with a large backlog (one that never answers) cannot fill a round. The window function
 * picks candidates in an inner query (PostgreSQL refuses FOR UPDATE at the level of a window
 * function); the outer query locks them and re-checks they are still due (a row another dispatcher
 * claimed and committed meanwhile is re-read under the lock and dropped). Returned in claim order.
 */
export async function claimDue(
  q: Queryable,
  now: Date,
  limit: number,
  leaseMs = L.CLAIM_LEASE_MS,
  perEndpointMax = L.DELIVERIES_PER_ENDPOINT_PER_ROUND_MAX,
): Promise<ClaimedDelivery[]> {
  const leaseUntil = new Date(now.getTime() + leaseMs);
  const { rows } = await q.query(
    `WITH picked AS (
       SELECT w.seq, c.rn, c.due FROM webhook_deliveries w
       JOIN (SELECT seq, rn, due FROM (
               SELECT seq, next_attempt_at AS due,
                      row_number() OVER (PARTITION BY tenant, endpoint_id ORDER BY next_attempt_at, seq) AS rn
               FROM webhook_deliveries
               WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1) ranked
             WHERE rn <= $4
             ORDER BY rn, due, seq
             LIMIT $3) c ON c.seq = w.seq
       WHERE w.delivered_at IS NULL AND w.failed_at IS NULL AND w.next_attempt_at <= $1
       FOR UPDATE OF w SKIP LOCKED
     )
     UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = $2
     FROM webhook_endpoints e, picked p
     WHERE d.seq = p.seq AND e.tenant = d.tenant AND e.id = d.endpoint_id
     RETURNING d.seq, d.tenant, d.endpoint_id, d.event_id, d.event_kind, d.payload, d.attempts, e.url, e.secret, e.enabled, p.rn, p.due`,
    [now, leaseUntil, limit, perEndpointMax],
  );
  const order = (r: Record<string, unknown>) => [Number(r.rn), new Date(r.due as string | Date).getTime(), BigInt(r.seq as string | number | bigint)] as const;
  rows.sort((x, y) => {
    const [a, b] = [order(x), order(y)];
    return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0);
  });
  return rows.map((r) => ({
    seq: BigInt(r.seq as string | number | bigint),
    tenant: r.tenant as string,
    endpointId: r.endpoint_id as string,
    eventId: r.event_id as string,
    eventKind: r.event_kind as string,
    payload: r.payload as string,
    attempt: Number(r.attempts),
    leaseUntil,
    url: r.url as string,
    secret: r.secret as string,
    enabled: r.enabled as boolean,
  }));
}

/**
 * Records one attempt's outcome: delivered, retry at `retryAt`, or given up (retryAt null); fenced
 * on the claim: applies only while the row's attempt count is still the one `claim` set, so the
 * outcome of a dispatcher whose claim ran out (and another dispatcher re-claimed the row) is
 * ignored. Returns whether it applied.
 */
export async function recordAttempt(
  q: Queryable,
  claim: { seq: bigint; attempt: number },
  o: { delivered: boolean; status: number; error: string; now: Date; retryAt: Date | null },
): Promise<boolean> {
  const r = await q.query(
    `UPDATE webhook_deliveries SET last_status = $2, last_error = $3,
       delivered_at = CASE WHEN $4 THEN $5::timestamptz END,
       failed_at = CASE WHEN NOT $4 AND $6::timestamptz IS NULL THEN $5::timestamptz END,
       next_attempt_at = COALESCE($6::timestamptz, next_attempt_at)
     WHERE seq = $1::bigint AND attempts = $7 AND delivered_at IS NULL AND failed_at IS NULL`,
    [claim.seq.toString(), o.status, o.error.slice(0, L.ERROR_CHARS_MAX), o.delivered, o.now, o.retryAt, claim.attempt],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Deletes at most `limit` deliveries that were delivered or given up before `before` (oldest first); returns how many. */
export async function purgeFinished(q: Queryable, before: Date, limit: number): Promise<number> {
  const r = await q.query(
    `DELETE FROM webhook_deliveries WHERE seq IN (
       SELECT seq FROM webhook_deliveries
        WHERE (delivered_at IS NOT NULL AND delivered_at < $1) OR (failed_at IS NOT NULL AND failed_at < $1)
        ORDER BY seq LIMIT $2)`,
    [before, limit],
  );
  return r.rowCount;
}
