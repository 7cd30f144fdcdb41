/**
 * Every limit of the RPC layer, in one place. Each server limit can be overridden per server
 * through startServer({ limits }) (services read them from env with envInt and these bounds).
 */

/** Largest request message a server reads (after decompression): 4 MiB. Larger -> ResourceExhausted. */
export const READ_MAX_BYTES_DEFAULT = 4 * 1024 * 1024;
/** Largest response message a server writes: 4 MiB. Larger -> ResourceExhausted. */
export const WRITE_MAX_BYTES_DEFAULT = 4 * 1024 * 1024;
/** Longest deadline a client may ask for; a larger grpc-timeout / connect-timeout-ms -> InvalidArgument. */
export const TIMEOUT_MS_MAX_DEFAULT = 60_000;
/** Deadline applied to a call that sends none. */
export const TIMEOUT_MS_DEFAULT = 30_000;
/** Most concurrent HTTP/2 connections a server accepts (further connections are refused). */
export const CONNECTIONS_MAX_DEFAULT = 1_024;
/** Most concurrent streams (calls) per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
export const STREAMS_PER_CONNECTION_MAX = 256;
/** How long close() lets in-flight calls finish before it aborts them and destroys sessions. */
export const SHUTDOWN_GRACE_MS_DEFAULT = 10_000;
/** Generic path: how long a call whose request body arrived may run past its deadline (+1 s) before its stream is reset. */
export const HANDLER_OVERRUN_MS_DEFAULT = 10_000;
export const HANDLER_OVERRUN_MS_MAX = 600_000;
/** A connection with no stream open for this long is closed (GOAWAY), so idle sockets cannot hold connectionsMax. */
export const IDLE_CONNECTION_MS_DEFAULT = 60_000;
export const IDLE_CONNECTION_MS_MAX = 3_600_000;
/** A connection that has not sent the HTTP/2 preface and its SETTINGS this long after it opened is destroyed. */
export const HANDSHAKE_MS_DEFAULT = 10_000;
export const HANDSHAKE_MS_MAX = 60_000;

/** Bounds of the limits themselves (envInt ranges, startServer validation). */
export const READ_MAX_BYTES_MAX = 64 * 1024 * 1024;
export const TIMEOUT_MS_MAX_MAX = 15 * 60_000;
export const SHUTDOWN_GRACE_MS_MAX = 120_000;

/** Client side: an HTTP/2 connection with no call for this long is closed by the client (below the server's idleConnectionMs default). */
export const CLIENT_IDLE_CONNECTION_MS = 30_000;
/** Client side: default deadline of a call made through createClientTransport. */
export const CLIENT_TIMEOUT_MS_DEFAULT = 30_000;
/** Client side: largest response a client reads / request it writes. */
export const CLIENT_READ_MAX_BYTES = 16 * 1024 * 1024;
export const CLIENT_WRITE_MAX_BYTES = 16 * 1024 * 1024;

/** API keys: accepted key length (characters) and most keys in NANOBILL_API_KEYS. */
export const API_KEY_LENGTH_MIN = 16;
export const API_KEY_LENGTH_MAX = 256;
export const API_KEYS_MAX = 1_000;
/** Tenant ids: [A-Za-z0-9_-]{1,64}. */
export const TENANT_ID_LENGTH_MAX = 64;

/** Per tenant per server: sustained requests per second (token bucket refill rate). */
export const TENANT_REQUESTS_PER_SECOND_DEFAULT = 5_000;
/** Per tenant per server: token bucket size (calls a tenant may burst above the rate). */
export const TENANT_REQUESTS_BURST_DEFAULT = 10_000;
/** Per tenant per server: calls of one tenant in flight at once. */
export const TENANT_INFLIGHT_MAX_DEFAULT = 256;
/** Bounds of the tenant limits themselves (startServer validation). */
export const TENANT_REQUESTS_PER_SECOND_MAX = 10_000_000;
export const TENANT_INFLIGHT_MAX_MAX = 1_000_000;
/** Most tenants tracked by one server's limiter; idle full buckets are dropped beyond it. */
export const TENANT_LIMITER_ENTRIES_MAX = 10_000;

/**
 * Kill switch of the unary fast path (server fast path and lean client): NANOBILL_RPC_FAST_PATH=off
 * in the environment makes startServer and createClientTransport use connect-es only.
 */
export const FAST_PATH_ENV = "NANOBILL_RPC_FAST_PATH";
export function fastPathEnabledByEnv(env: Record<string, string | undefined> = process.env): boolean {
  const v = env[FAST_PATH_ENV];
  return v === undefined || !/^(off|0|false|no)$/i.test(v.trim());
}
