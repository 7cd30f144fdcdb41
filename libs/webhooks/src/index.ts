export * from "./limits.js";
export { SIGNATURE_HEADER, signWebhook, verifyWebhookSignature, type VerifyResult } from "./signature.js";
export {
  WebhookConflictError,
  WebhookInputError,
  createEndpoint,
  disableEndpoint,
  enqueueWebhooks,
  jsonbTextBytes,
  listDeliveries,
  listEndpoints,
  validateEndpoint,
  type Delivery,
  type DeliveryState,
  type Endpoint,
  type EndpointInput,
  type EndpointPolicy,
  type WebhookEvent,
} from "./store.js";
export { backoffMs, claimLeaseMs, createWebhookDispatcher, type DispatchStats, type DispatcherOptions } from "./dispatcher.js";
export { webhooksMigrationSql } from "./sql.js";
export { webhookRpcs, endpointToProto, deliveryToProto } from "./rpc.js";
export { NON_PUBLIC_IPV4, NON_PUBLIC_IPV6, ipLiteralOf, isLocalhostName, isPublicAddress, nonPublicRange } from "./egress.js";
export { WebhookEgressError, createEgressSender, egressLookup, type ResolveAll, type WebhookSender } from "./sender.js";
