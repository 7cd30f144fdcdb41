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
  type WebhookEvent,
} from "./store.js";
export { backoffMs, claimLeaseMs, createWebhookDispatcher, type DispatchStats, type DispatcherOptions } from "./dispatcher.js";
export { webhooksMigrationSql } from "./sql.js";
export { webhookRpcs, endpointToProto, deliveryToProto } from "./rpc.js";
