export {
  type Principal,
  type Scope,
  type ApiKeyEntry,
  type Authenticator,
  type ApiKeyAuthenticator,
  SCOPES,
  TENANT_HEADER,
  ANY_TENANT,
  kPrincipal,
  principalOf,
  tenantOf,
  requireScope,
  requireOperator,
  isOperator,
  hasScope,
  createApiKeyAuthenticator,
  parseApiKeysEnv,
  parseRevokedKeyIdsEnv,
  createApiKeyAuthenticatorFromEnv,
  keyIdOf,
  isTenantId,
  createAuthInterceptor,
} from "./auth.js";
export {
  type TenantLimits,
  type TenantLimiter,
  TENANT_LIMITS_DEFAULT,
  TENANT_RATE_FIELD,
  TENANT_INFLIGHT_FIELD,
  createTenantLimiter,
  createTenantLimitInterceptor,
  resolveTenantLimits,
} from "./tenant-limits.js";
export { type ServerLimits, type StartedServer, type StartServerOptions, SERVER_LIMITS_DEFAULT, startServer, resolveLimits } from "./server.js";
export { type ClientTransportOptions, createClientTransport, closeClientSessions, forTenant } from "./client.js";
export {
  ERROR_DOMAIN,
  INTERNAL_MESSAGE,
  rpcError,
  errorInfoOf,
  invalidArgument,
  notFound,
  failedPrecondition,
  alreadyExists,
  limitExceeded,
  unauthenticated,
  permissionDenied,
  unavailable,
  toConnectError,
  createErrorBoundary,
} from "./errors.js";
export { type Logger, type LogLevel, LOG_LEVELS, createLogger, silentLogger, toJsonLine } from "./logger.js";
export { ConfigError, type Env, envString, envInt, envUrl, envBool, envEnum, envFraction, envRetired } from "./config.js";
export { type Clock, systemClock, fixedClock, clockFromEnv, FILE_CLOCK_REREAD_MS } from "./clock.js";
export { onShutdown, runMain, runShutdownHooks, SHUTDOWN_TOTAL_MS_MAX, STOP_WITH_STDIN_ENV } from "./lifecycle.js";
export { type HealthState, ServingStatus } from "./health.js";
export * from "./limits.js";
export { ProtoReader, WireError, tagOf, WT_VARINT, WT_I64, WT_LEN, WT_SGROUP, WT_EGROUP, WT_I32 } from "./proto-reader.js";
export { int64Unsigned, varint64Size, varintSize, writeVarint, writeVarint64 } from "./proto-writer.js";
export { registerBinaryView, type BinaryView } from "./fast-path.js";
export { usToTimestamp } from "./time.js";
export { LEDGER_ID_CHARS_MAX, ledgerId } from "./ledger-id.js";
