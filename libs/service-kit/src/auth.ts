import { createHash, timingSafeEqual } from "node:crypto";
import { createContextKey, type ContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { ConfigError } from "./config.js";
import { invalidArgument, permissionDenied, unauthenticated } from "./errors.js";
import { API_KEYS_MAX, API_KEY_LENGTH_MAX, API_KEY_LENGTH_MIN, TENANT_ID_LENGTH_MAX } from "./limits.js";

export type Scope = "admin" | "ingest" | "internal" | "read";
export const SCOPES: readonly Scope[] = ["admin", "ingest", "internal", "read"];

/** Who is calling: the tenant the key belongs to ("*" for a cross-tenant internal key). */
export interface Principal {
  tenant: string;
  keyId: string;
  scopes: Scope[];
}

/** One configured API key (the plain key only lives here until createApiKeyAuthenticator hashes it). */
export interface ApiKeyEntry {
  tenant: string;
  scopes: Scope[];
  key: string;
  /** Stable, non-secret id for logs ("key_" + first 12 hex digits of sha256(key) when omitted). */
  keyId?: string;
}

export interface Authenticator {
  /** The principal for an `authorization` header value, or undefined (-> Unauthenticated). */
  authenticate(authorization: string | null): Principal | undefined;
}

/** Header naming the tenant an "internal" key acts for. */
export const TENANT_HEADER = "x-nanobill-tenant";
/** Tenant of a key that may act for any tenant (internal scope only). */
export const ANY_TENANT = "*";

const TENANT_RE = new RegExp(`^[A-Za-z0-9_-]{1,${TENANT_ID_LENGTH_MAX}}$`);
const KEY_RE = /^[\x21-\x7e]+$/; // printable ASCII, no spaces

export function isTenantId(s: string): boolean {
  return TENANT_RE.test(s);
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

/** The non-secret id of a key: "key_" + first 12 hex digits of its sha256. */
export function keyIdOf(key: string): string {
  return "key_" + sha256(key).toString("hex").slice(0, 12);
}

/**
 * Parses NANOBILL_API_KEYS: comma-separated entries `<tenant>:<scopes>:<key>` where scopes is
 * one or more of admin|ingest|read|internal joined by "+", e.g.
 * `tnt_demo:admin:sk_live_abc...,tnt_demo:ingest+read:sk_ing_...,*:internal:sk_int_...`.
 * Tenant "*" is only allowed with the internal scope. Keys are 16..256 printable ASCII
 * characters without spaces or commas; whitespace around entries is ignored. Errors are
 * ConfigError naming NANOBILL_API_KEYS and the entry number (never the key).
 */
export function parseApiKeysEnv(value: string, variable = "NANOBILL_API_KEYS"): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  const parts = value.split(",").map((p) => p.trim()).filter((p) => p !== "");
  if (parts.length > API_KEYS_MAX) throw new ConfigError(variable, `at most ${API_KEYS_MAX} keys, got ${parts.length}`);
  const seen = new Set<string>();
  parts.forEach((part, i) => {
    const where = `entry ${i + 1}`;
    const first = part.indexOf(":");
    const second = first < 0 ? -1 : part.indexOf(":", first + 1);
    if (first < 0 || second < 0) throw new ConfigError(variable, `${where}: expected <tenant>:<scopes>:<key>`);
    const tenant = part.slice(0, first);
    const scopeList = part.slice(first + 1, second);
    const key = part.slice(second + 1);
    if (tenant !== ANY_TENANT && !isTenantId(tenant)) {
      throw new ConfigError(variable, `${where}: tenant must match [A-Za-z0-9_-]{1,${TENANT_ID_LENGTH_MAX}} or be "*"`);
    }
    const scopes: Scope[] = [];
    for (const s of scopeList.split("+")) {
      if (!(SCOPES as readonly string[]).includes(s)) throw new ConfigError(variable, `${where}: unknown scope "${s}" (admin, ingest, read, internal)`);
      if (!scopes.includes(s as Scope)) scopes.push(s as Scope);
    }
    if (tenant === ANY_TENANT && !scopes.includes("internal")) {
      throw new ConfigError(variable, `${where}: tenant "*" is only allowed for internal keys`);
    }
    if (key.length < API_KEY_LENGTH_MIN || key.length > API_KEY_LENGTH_MAX || !KEY_RE.test(key)) {
      throw new ConfigError(variable, `${where}: key must be ${API_KEY_LENGTH_MIN}..${API_KEY_LENGTH_MAX} printable characters without spaces`);
    }
    if (seen.has(key)) throw new ConfigError(variable, `${where}: duplicate key`);
    seen.add(key);
    entries.push({ tenant, scopes, key });
  });
  return entries;
}

const BEARER = "bearer ";

const KEY_ID_RE = /^key_[0-9a-f]{12}$/;

/**
 * Parses NANOBILL_REVOKED_KEY_IDS: comma-separated key ids (`key_` + 12 hex digits, as logged
 * and as returned by keyIdOf) that are refused even while their key is still configured.
 * ConfigError naming the variable and the entry number on a malformed id.
 */
export function parseRevokedKeyIdsEnv(value: string, variable = "NANOBILL_REVOKED_KEY_IDS"): string[] {
  const ids = value.split(",").map((p) => p.trim()).filter((p) => p !== "");
  if (ids.length > API_KEYS_MAX) throw new ConfigError(variable, `at most ${API_KEYS_MAX} key ids, got ${ids.length}`);
  ids.forEach((id, i) => {
    if (!KEY_ID_RE.test(id)) throw new ConfigError(variable, `entry ${i + 1}: expected a key id key_<12 hex digits>`);
  });
  return ids;
}

/** An API-key authenticator whose keys can be replaced or revoked while the server runs. */
export interface ApiKeyAuthenticator extends Authenticator {
  /**
   * Atomically replaces the whole key set (e.g. after re-reading NANOBILL_API_KEYS); calls
   * already authenticated go on, every later call uses the new set. Invalid entries throw and
   * leave the current set in force.
   */
  replaceKeys(entries: ApiKeyEntry[], opts?: { revokedKeyIds?: Iterable<string> }): void;
  /** Refuses a key from now on (by its keyId), whether or not it is configured. */
  revoke(keyId: string): void;
  /** The keyIds of the keys currently accepted (never the keys). */
  keyIds(): string[];
}

interface StoredKey {
  hash: Buffer;
  principal: Principal;
}

function storeKeys(keys: ApiKeyEntry[]): StoredKey[] {
  if (keys.length > API_KEYS_MAX) throw new ConfigError("api keys", `at most ${API_KEYS_MAX} keys, got ${keys.length}`);
  return keys.map((k) => {
    if (k.tenant !== ANY_TENANT && !isTenantId(k.tenant)) throw new ConfigError("api keys", `tenant "${k.tenant}" is not a valid tenant id`);
    if (k.tenant === ANY_TENANT && !k.scopes.includes("internal")) throw new ConfigError("api keys", `tenant "*" is only allowed for internal keys`);
    return {
      hash: sha256(k.key),
      principal: Object.freeze({ tenant: k.tenant, keyId: k.keyId ?? keyIdOf(k.key), scopes: Object.freeze([...k.scopes]) as Scope[] }),
    };
  });
}

/**
 * An authenticator over a key list. Only sha256 hashes of the keys are kept; a presented
 * key is hashed once and compared with every stored hash in constant time (timingSafeEqual,
 * no early exit), so neither the key nor which key nearly matched leaks through timing.
 * Revoked key ids (opts.revokedKeyIds, revoke(), NANOBILL_REVOKED_KEY_IDS) are refused like
 * unknown keys (Unauthenticated, same message). replaceKeys() swaps the set at runtime.
 */
export function createApiKeyAuthenticator(keys: ApiKeyEntry[], opts: { revokedKeyIds?: Iterable<string> } = {}): ApiKeyAuthenticator {
  let stored = storeKeys(keys);
  let revoked = new Set<string>(opts.revokedKeyIds ?? []);
  return {
    authenticate(authorization) {
      if (authorization === null || authorization.length <= BEARER.length) return undefined;
      if (authorization.length > BEARER.length + API_KEY_LENGTH_MAX) return undefined;
      if (authorization.slice(0, BEARER.length).toLowerCase() !== BEARER) return undefined;
      const presented = sha256(authorization.slice(BEARER.length).trim());
      let found: Principal | undefined;
      const keysNow = stored;
      for (const s of keysNow) {
        if (timingSafeEqual(s.hash, presented)) found = s.principal;
      }
      if (found !== undefined && revoked.size > 0 && revoked.has(found.keyId)) return undefined;
      return found;
    },
    replaceKeys(entries, o = {}) {
      const next = storeKeys(entries);
      const nextRevoked = new Set<string>(o.revokedKeyIds ?? revoked);
      stored = next;
      revoked = nextRevoked;
    },
    revoke(keyId) {
      const next = new Set(revoked);
      next.add(keyId);
      revoked = next;
    },
    keyIds() {
      return stored.map((s) => s.principal.keyId).filter((id) => !revoked.has(id));
    },
  };
}

/**
 * The authenticator of a service from its environment: NANOBILL_API_KEYS (required entries,
 * see parseApiKeysEnv) minus NANOBILL_REVOKED_KEY_IDS (optional).
 */
export function createApiKeyAuthenticatorFromEnv(env: Record<string, string | undefined>): ApiKeyAuthenticator {
  return createApiKeyAuthenticator(parseApiKeysEnv(env["NANOBILL_API_KEYS"] ?? ""), {
    revokedKeyIds: parseRevokedKeyIdsEnv(env["NANOBILL_REVOKED_KEY_IDS"] ?? ""),
  });
}

/** Where the auth interceptor puts the caller (undefined on public methods without a key). */
export const kPrincipal: ContextKey<Principal | undefined> = createContextKey<Principal | undefined>(undefined, {
  description: "nanobill principal",
});

/** The caller; Unauthenticated when the method was public and no key was sent. */
export function principalOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(kPrincipal);
  if (p === undefined) throw unauthenticated();
  return p;
}

/** Scopes implied by a key's scopes: admin implies ingest and read; internal implies all. */
export function hasScope(p: Principal, scope: Scope): boolean {
  if (p.scopes.includes(scope) || p.scopes.includes("internal")) return true;
  return p.scopes.includes("admin") && (scope === "ingest" || scope === "read");
}

/** PermissionDenied unless the caller's key has (or implies) scope. */
export function requireScope(ctx: HandlerContext, scope: Scope): void {
  const p = principalOf(ctx);
  if (!hasScope(p, scope)) throw permissionDenied(`key ${p.keyId} lacks scope "${scope}"`);
}

/**
 * The platform's operator: an internal key of tenant "*" (the services' own key). Only it may act
 * across tenants (read the whole event feed, write global cost rates); an internal key bound to one
 * tenant acts for that tenant only.
 */
export function isOperator(p: Principal): boolean {
  return p.tenant === ANY_TENANT && p.scopes.includes("internal");
}

/** PermissionDenied unless the caller is the operator (isOperator). */
export function requireOperator(ctx: HandlerContext): void {
  const p = principalOf(ctx);
  if (!isOperator(p)) throw permissionDenied(`key ${p.keyId} is not the platform's internal key (tenant "*")`);
}

/**
 * The tenant a call acts for: the key's tenant; for "internal" keys the tenant named in the
 * x-nanobill-tenant header (InvalidArgument when absent or malformed; PermissionDenied when an
 * internal key bound to one tenant names another).
 */
export function tenantOf(ctx: HandlerContext): string {
  const p = principalOf(ctx);
  if (!p.scopes.includes("internal")) return p.tenant;
  const t = ctx.requestHeader.get(TENANT_HEADER);
  if (t === null || t === "") {
    if (p.tenant !== ANY_TENANT) return p.tenant;
    throw invalidArgument(TENANT_HEADER, "required for internal keys");
  }
  if (!isTenantId(t)) throw invalidArgument(TENANT_HEADER, `must match [A-Za-z0-9_-]{1,${TENANT_ID_LENGTH_MAX}}`);
  if (p.tenant !== ANY_TENANT && p.tenant !== t) throw permissionDenied(`key ${p.keyId} may not act for tenant ${t}`);
  return t;
}

/**
 * The auth interceptor: authenticates every call except public methods (health and the
 * publicMethods of startServer, matched as "pkg.Service" or "pkg.Service/Method"); on public
 * methods a valid key is still recognised. Unauthenticated on a missing or wrong key.
 */
export function createAuthInterceptor(authenticator: Authenticator, publicMethods: Iterable<string> = []): Interceptor {
  const pub = new Set<string>();
  for (const m of publicMethods) pub.add(m.replace(/^\//, ""));
  return (next) => async (req) => {
    const principal = authenticator.authenticate(req.header.get("authorization"));
    if (principal === undefined) {
      const svc = req.service.typeName;
      if (!pub.has(svc) && !pub.has(`${svc}/${req.method.name}`)) throw unauthenticated();
    } else {
      req.contextValues.set(kPrincipal, principal);
    }
    return next(req);
  };
}
