// The webhook RPCs every service with alerts offers (CreateWebhookEndpoint, ListWebhookEndpoints,
// DisableWebhookEndpoint, ListWebhookDeliveries), shared: a service's handler passes its db, the
// tenant and the request, and gets the response fields (nanobill.common.v1 messages).
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Queryable } from "@nanobill/db";
import {
  WebhookDeliveryState,
  WebhookDeliverySchema,
  WebhookEndpointSchema,
  type WebhookDelivery,
  type WebhookEndpoint,
} from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { alreadyExists, invalidArgument, limitExceeded, notFound } from "@nanobill/service-kit";
import { ENDPOINTS_PER_TENANT_MAX, DELIVERIES_PER_PAGE_MAX } from "./limits.js";
import {
  WebhookConflictError,
  WebhookInputError,
  createEndpoint,
  disableEndpoint,
  listDeliveries,
  listEndpoints,
  refuseControlChars,
  type Delivery,
  type DeliveryState,
  type Endpoint,
  type EndpointPolicy,
} from "./store.js";

export function endpointToProto(e: Endpoint): WebhookEndpoint {
  return create(WebhookEndpointSchema, {
    id: e.id,
    url: e.url,
    eventKinds: e.eventKinds,
    description: e.description,
    enabled: e.enabled,
    createTime: timestampFromDate(e.createdAt),
    disableTime: e.disabledAt ? timestampFromDate(e.disabledAt) : undefined,
  });
}

const STATE_TO_PROTO: Record<DeliveryState, WebhookDeliveryState> = {
  pending: WebhookDeliveryState.PENDING,
  delivered: WebhookDeliveryState.DELIVERED,
  failed: WebhookDeliveryState.FAILED,
};

export function deliveryToProto(d: Delivery): WebhookDelivery {
  return create(WebhookDeliverySchema, {
    seq: d.seq,
    endpointId: d.endpointId,
    eventId: d.eventId,
    eventKind: d.eventKind,
    state: STATE_TO_PROTO[d.state],
    attempts: d.attempts,
    nextAttemptTime: d.state === "pending" ? timestampFromDate(d.nextAttemptAt) : undefined,
    deliverTime: d.deliveredAt ? timestampFromDate(d.deliveredAt) : undefined,
    failTime: d.failedAt ? timestampFromDate(d.failedAt) : undefined,
    lastStatus: d.lastStatus,
    lastError: d.lastError,
    payload: d.payload,
  });
}

function toRpcError(e: unknown, id: string): unknown {
  if (e instanceof WebhookInputError) return invalidArgument(e.field, e.message.slice(e.field.length + 2));
  if (e instanceof WebhookConflictError) return e.kind === "id_reused" ? alreadyExists("id", id) : limitExceeded("webhook endpoints per tenant", ENDPOINTS_PER_TENANT_MAX);
  return e;
}

/**
 * The four RPCs over one service's db (its own schema). `policy.allowPrivateNetworks` (default
 * false) lets CreateWebhookEndpoint take URLs on loopback / private / link-local IP literals and
 * `localhost` (see validateEndpoint); the service passes the same switch to its dispatcher.
 */
export function webhookRpcs(db: Queryable, now: () => Date, policy: EndpointPolicy = {}) {
  return {
    async create(tenant: string, req: { id: string; url: string; eventKinds: string[]; description: string }) {
      try {
        const r = await createEndpoint(db, tenant, { id: req.id, url: req.url, eventKinds: req.eventKinds, description: req.description }, now(), policy);
        return { endpoint: endpointToProto(r.endpoint), signingSecret: r.secret };
      } catch (e) {
        throw toRpcError(e, req.id);
      }
    },
    async list(tenant: string) {
      return { endpoints: (await listEndpoints(db, tenant)).map(endpointToProto) };
    },
    async disable(tenant: string, req: { id: string }) {
      if (req.id === "") throw invalidArgument("id", "is required");
      try {
        refuseControlChars("id", req.id);
      } catch (e) {
        throw toRpcError(e, req.id);
      }
      const e = await disableEndpoint(db, tenant, req.id, now());
      if (!e) throw notFound("webhook endpoint", req.id);
      return { endpoint: endpointToProto(e) };
    },
    async deliveries(tenant: string, req: { endpointId: string; eventId: string; state: WebhookDeliveryState; pageSizeMax: number; beforeSeq: bigint }) {
      if (req.pageSizeMax > DELIVERIES_PER_PAGE_MAX) throw invalidArgument("page_size_max", `at most ${DELIVERIES_PER_PAGE_MAX}`);
      if (req.beforeSeq < 0n) throw invalidArgument("before_seq", "must not be negative");
      try {
        refuseControlChars("endpoint_id", req.endpointId);
        refuseControlChars("event_id", req.eventId);
      } catch (e) {
        throw toRpcError(e, req.endpointId);
      }
      const state = (Object.keys(STATE_TO_PROTO) as DeliveryState[]).find((k) => STATE_TO_PROTO[k] === req.state);
      if (req.state !== WebhookDeliveryState.UNSPECIFIED && state === undefined) throw invalidArgument("state", `unknown value ${req.state}`);
      const ds = await listDeliveries(db, tenant, {
        endpointId: req.endpointId || undefined,
        eventId: req.eventId || undefined,
        state,
        beforeSeq: req.beforeSeq > 0n ? req.beforeSeq : undefined,
        pageSize: req.pageSizeMax || undefined,
      });
      return { deliveries: ds.map(deliveryToProto) };
    },
  };
}
