import { Code, ConnectError, createContextKey, type Interceptor, type StreamRequest, type StreamResponse } from "@connectrpc/connect";
import type { DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { randomBytes } from "node:crypto";
import type { Logger } from "./logger.js";

/** google.rpc.ErrorInfo.domain of every error detail Nanobill sends. */
export const ERROR_DOMAIN = "nanobill.dev";
const ERROR_INFO_TYPE = "google.rpc.ErrorInfo";

/** google.rpc.ErrorInfo { reason = 1; domain = 2; map<string,string> metadata = 3 }, hand-encoded. */
function encodeErrorInfo(reason: string, metadata: Record<string, string>): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, 2).string(reason);
  w.tag(2, 2).string(ERROR_DOMAIN);
  for (const [k, v] of Object.entries(metadata)) {
    w.tag(3, 2).fork().tag(1, 2).string(k).tag(2, 2).string(v).join();
  }
  return w.finish();
}

function decodeErrorInfo(bytes: Uint8Array): { reason: string; domain: string; metadata: Record<string, string> } {
  const r = new BinaryReader(bytes);
  const out = { reason: "", domain: "", metadata: {} as Record<string, string> };
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1) out.reason = r.string();
    else if (no === 2) out.domain = r.string();
    else if (no === 3) {
      const e = new BinaryReader(r.bytes());
      let k = "";
      let v = "";
      while (e.pos < e.len) {
        const [eno, ewt] = e.tag();
        if (eno === 1) k = e.string();
        else if (eno === 2) v = e.string();
        else e.skip(ewt);
      }
      out.metadata[k] = v;
    } else r.skip(wt);
  }
  return out;
}

/**
 * A ConnectError with a google.rpc.ErrorInfo detail (reason = "ERROR_REASON_<NAME>" of
 * nanobill.common.v1.ErrorReason, domain "nanobill.dev", metadata as given).
 */
export function rpcError(code: Code, reason: ErrorReason, message: string, metadata: Record<string, string> = {}): ConnectError {
  const err = new ConnectError(message, code);
  err.details.push({ type: ERROR_INFO_TYPE, value: encodeErrorInfo(`ERROR_REASON_${ErrorReason[reason]}`, metadata) });
  return err;
}

/** The ErrorReason and metadata carried by an error (client side), if any. */
export function errorInfoOf(err: unknown): { reason: ErrorReason; metadata: Record<string, string> } | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  for (const d of err.details) {
    if ("type" in d && d.type === ERROR_INFO_TYPE) {
      const info = decodeErrorInfo(d.value);
      if (info.domain !== ERROR_DOMAIN) continue;
      const name = info.reason.replace(/^ERROR_REASON_/, "") as keyof typeof ErrorReason;
      const reason = ErrorReason[name];
      if (typeof reason === "number") return { reason, metadata: info.metadata };
    }
  }
  return undefined;
}

/** InvalidArgument, message "<field>: <rule>", reason INVALID_FIELD with metadata {field, rule}. */
export function invalidArgument(field: string, rule: string): ConnectError {
  return rpcError(Code.InvalidArgument, ErrorReason.INVALID_FIELD, `${field}: ${rule}`, { field, rule });
}

/** NotFound, message "<what> <id> not found", reason NOT_FOUND. */
export function notFound(what: string, id: string): ConnectError {
  return rpcError(Code.NotFound, ErrorReason.NOT_FOUND, `${what} ${id} not found`, { what, id });
}

/** FailedPrecondition with a reason (INSUFFICIENT_BALANCE, PERIOD_CLOSED, ...). */
export function failedPrecondition(reason: ErrorReason, message: string, metadata: Record<string, string> = {}): ConnectError {
  return rpcError(Code.FailedPrecondition, reason, message, metadata);
}

/** AlreadyExists: an idempotency id reused with different content (reason ID_REUSED). */
export function alreadyExists(field: string, id: string): ConnectError {
  return rpcError(Code.AlreadyExists, ErrorReason.ID_REUSED, `${field}: ${id} was already used with different content`, { field, id });
}

/** ResourceExhausted: a size/count/rate limit (reason LIMIT_EXCEEDED). */
export function limitExceeded(field: string, limit: number | bigint): ConnectError {
  return rpcError(Code.ResourceExhausted, ErrorReason.LIMIT_EXCEEDED, `${field}: exceeds the limit of ${limit}`, {
    field,
    limit: String(limit),
  });
}

export function unauthenticated(message = "missing or invalid API key"): ConnectError {
  return rpcError(Code.Unauthenticated, ErrorReason.UNAUTHENTICATED, message);
}

export function permissionDenied(message: string): ConnectError {
  return rpcError(Code.PermissionDenied, ErrorReason.PERMISSION_DENIED, message);
}

export function unavailable(message = "service unavailable, retry later"): ConnectError {
  return new ConnectError(message, Code.Unavailable);
}

/** Message sent to the client for any unexpected error (the cause is only logged). */
export const INTERNAL_MESSAGE = "internal error";

/**
 * Maps anything a handler throws to what the client may see:
 * ConnectError as is; DbError-like {code: "serialization"} -> Aborted (retry),
 * {code: "unavailable"} -> Unavailable; MoneyError-like {field, rule} -> InvalidArgument naming
 * the field; anything else -> Internal "internal error (ref err_...)", logged with its stack.
 */
export function toConnectError(err: unknown, logger: Logger, where: string, signal?: AbortSignal): ConnectError {
  if (err instanceof ConnectError) return err;
  if (signal?.aborted && signal.reason instanceof ConnectError) return signal.reason;
  if (typeof err === "object" && err !== null) {
    const e = err as { code?: unknown; field?: unknown; rule?: unknown };
    if (e.code === "serialization") {
      logger.warn("transaction conflict", { rpc: where, err });
      return new ConnectError("transaction conflict, retry", Code.Aborted);
    }
    if (e.code === "unavailable") {
      logger.warn("dependency unavailable", { rpc: where, err });
      return unavailable();
    }
    if (typeof e.field === "string" && typeof e.rule === "string") {
      return invalidArgument(e.field, e.rule);
    }
  }
  const ref = "err_" + randomBytes(6).toString("hex");
  logger.error("unexpected error", { rpc: where, ref, err });
  return new ConnectError(`${INTERNAL_MESSAGE} (ref ${ref})`, Code.Internal);
}

async function* guardStream<T>(it: AsyncIterable<T>, logger: Logger, where: string, signal: AbortSignal, check?: (m: T) => void): AsyncGenerator<T> {
  try {
    for await (const m of it) {
      check?.(m);
      yield m;
    }
  } catch (e) {
    throw toConnectError(e, logger, where, signal);
  }
}

const TIMESTAMP_SECONDS_MIN = -62_135_596_800n; // 0001-01-01T00:00:00Z
const TIMESTAMP_SECONDS_MAX = 253_402_300_799n; // 9999-12-31T23:59:59Z
const DURATION_SECONDS_MAX = 315_576_000_000n; // 10,000 years

/**
 * jsonWritable: throws what protobuf JSON would refuse to write in `msg` — a Timestamp outside
 * years 1..9999 or with nanos outside 0..999,999,999, a Duration past 10,000 years — at any depth
 * (fields, lists, maps, oneofs). Much cheaper than encoding the message to JSON a second time.
 */
export function jsonWritable(desc: DescMessage, msg: unknown, depth = 0): void {
  if (msg === undefined || msg === null || depth > 64) return;
  const m = msg as Record<string, unknown>;
  if (desc.typeName === "google.protobuf.Timestamp") {
    const { seconds, nanos } = m as { seconds: bigint; nanos: number };
    if (seconds < TIMESTAMP_SECONDS_MIN || seconds > TIMESTAMP_SECONDS_MAX || nanos < 0 || nanos > 999_999_999) {
      throw new Error(`cannot encode google.protobuf.Timestamp to JSON: ${seconds} s ${nanos} ns is outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z`);
    }
    return;
  }
  if (desc.typeName === "google.protobuf.Duration") {
    const { seconds, nanos } = m as { seconds: bigint; nanos: number };
    const signsDiffer = (seconds > 0n && nanos < 0) || (seconds < 0n && nanos > 0);
    if (seconds > DURATION_SECONDS_MAX || seconds < -DURATION_SECONDS_MAX || nanos > 999_999_999 || nanos < -999_999_999 || signsDiffer) {
      throw new Error(`cannot encode google.protobuf.Duration to JSON: ${seconds} s ${nanos} ns is out of range`);
    }
    return;
  }
  for (const f of desc.fields) {
    if (f.message === undefined) continue;
    let v: unknown;
    if (f.oneof) {
      const o = m[f.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (o?.case !== f.localName) continue;
      v = o.value;
    } else v = m[f.localName];
    if (v === undefined || v === null) continue;
    if (f.fieldKind === "message") jsonWritable(f.message, v, depth + 1);
    else if (f.fieldKind === "list") for (const x of v as unknown[]) jsonWritable(f.message, x, depth + 1);
    else if (f.fieldKind === "map") for (const x of Object.values(v as Record<string, unknown>)) jsonWritable(f.message, x, depth + 1);
  }
}

/** connect-es's error for a request message protobuf cannot read ("parse binary: premature EOF"). */
const PARSE_BINARY_PREFIX = "parse binary: ";
/** connect-es's (and envelope.ts's) error for a compressed envelope when no compression was negotiated. */
export const COMPRESSED_ENVELOPE_MESSAGE = "received compressed envelope, but do not know how to decompress";

/**
 * A client's undecodable request, as connect-es (and the fast path) raise it — Internal "parse
 * binary: <why>", or Internal for a compressed envelope without a negotiated compression — made
 * the client's mistake it is: InvalidArgument "request: not a valid <Message> (<why>)", or
 * InvalidArgument naming the header that should have named the compression (`grpc-encoding`;
 * `connect-content-encoding` for Connect streams). Undefined for any other error. Only for errors
 * raised while reading the request (a downstream call's undecodable answer stays Internal).
 */
export function requestDecodeError(err: unknown, input: DescMessage, contentType: string | null | undefined): ConnectError | undefined {
  if (!(err instanceof ConnectError) || err.code !== Code.Internal) return undefined;
  if (err.rawMessage.startsWith(PARSE_BINARY_PREFIX)) {
    return invalidArgument("request", `not a valid ${input.typeName} (${err.rawMessage.slice(PARSE_BINARY_PREFIX.length)})`);
  }
  if (err.rawMessage === COMPRESSED_ENVELOPE_MESSAGE) {
    const header = contentType?.toLowerCase().startsWith("application/connect") === true ? "connect-content-encoding" : "grpc-encoding";
    return invalidArgument(header, "a compressed message needs a compression named here (none or identity was sent)");
  }
  return undefined;
}

/**
 * Set on a call's context values when it reaches the error boundary: startServer tells by it that
 * an error answer of connect-es's came before any interceptor (from reading the request).
 */
export const kReachedBoundary = createContextKey(false, { description: "nanobill.reachedBoundary" });

/** A stream request's messages, with undecodable ones refused as {@link requestDecodeError}. */
async function* decodeChecked<T>(it: AsyncIterable<T>, input: DescMessage, contentType: string | null): AsyncGenerator<T> {
  try {
    for await (const m of it) yield m;
  } catch (e) {
    throw requestDecodeError(e, input, contentType) ?? e;
  }
}

/** The error boundary: one interceptor, installed by startServer, applying {@link toConnectError}. */
export function createErrorBoundary(logger: Logger): Interceptor {
  return (next) => async (req) => {
    req.contextValues.set(kReachedBoundary, true);
    // A stream's request messages are read inside the handler: one that cannot be decoded is
    // the client's mistake (a unary request is decoded before the interceptors: see startServer).
    if (req.stream) {
      const s: StreamRequest = { ...req, message: decodeChecked(req.message, req.method.input, req.header.get("content-type")) };
      req = s as typeof req;
    }
    let res;
    try {
      res = await next(req);
    } catch (e) {
      throw toConnectError(e, logger, `${req.service.typeName}/${req.method.name}`, req.signal);
    }
    // A JSON answer is written after this boundary: a message JSON cannot hold (a Timestamp past
    // year 9999, say) would leave as Internal with the encoder's text and no log. Checking it here
    // first (JSON calls only) makes it a logged, redacted Internal like any other fault.
    const json = req.header.get("content-type")?.toLowerCase().includes("json") === true;
    if (res.stream) {
      const check = json ? (m: unknown) => jsonWritable(req.method.output, m) : undefined;
      const s: StreamResponse = { ...res, message: guardStream(res.message, logger, `${req.service.typeName}/${req.method.name}`, req.signal, check) };
      return s as typeof res;
    }
    if (json) {
      try {
        jsonWritable(req.method.output, res.message);
      } catch (e) {
        throw toConnectError(e, logger, `${req.service.typeName}/${req.method.name}`, req.signal);
      }
    }
    return res;
  };
}
