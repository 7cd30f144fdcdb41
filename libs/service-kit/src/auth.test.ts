import { describe, expect, it } from "vitest";
import { createApiKeyAuthenticator, createApiKeyAuthenticatorFromEnv, hasScope, keyIdOf, parseApiKeysEnv, parseRevokedKeyIdsEnv } from "./auth.js";
import { ConfigError } from "./config.js";

const K1 = "sk_live_aaaaaaaaaaaaaaaa";
const K2 = "sk_live_bbbbbbbbbbbbbbbb";
const K3 = "sk_int_cccccccccccccccc";

describe("parseApiKeysEnv", () => {
  it("parses tenant:scopes:key entries, scopes joined by +", () => {
    expect(parseApiKeysEnv(` tnt_demo:admin:${K1}, tnt_demo:ingest+read:${K2} ,*:internal:${K3}`)).toEqual([
      { tenant: "tnt_demo", scopes: ["admin"], key: K1 },
      { tenant: "tnt_demo", scopes: ["ingest", "read"], key: K2 },
      { tenant: "*", scopes: ["internal"], key: K3 },
    ]);
    expect(parseApiKeysEnv("")).toEqual([]);
  });

  it.each([
    [`tnt_demo:admin`, "entry 1: expected <tenant>:<scopes>:<key>"],
    [`tnt demo:admin:${K1}`, "entry 1: tenant must match"],
    [`tnt_demo:root:${K1}`, 'entry 1: unknown scope "root"'],
    [`*:admin:${K1}`, 'entry 1: tenant "*" is only allowed for internal keys'],
    [`tnt_demo:admin:short`, "entry 1: key must be 16..256"],
    [`tnt_demo:admin:${K1},tnt_b:read:${K1}`, "entry 2: duplicate key"],
  ])("rejects %j with a ConfigError naming NANOBILL_API_KEYS (%s) and never the key", (value, problem) => {
    let err: unknown;
    try {
      parseApiKeysEnv(value);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain(`NANOBILL_API_KEYS: ${problem}`);
    expect((err as ConfigError).message).not.toContain(K1);
  });
});

describe("createApiKeyAuthenticator", () => {
  const auth = createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${K1},*:internal:${K3}`));

  it("returns the key's principal for `Bearer <key>` (scheme case-insensitive)", () => {
    expect(auth.authenticate(`Bearer ${K1}`)).toEqual({ tenant: "tnt_a", keyId: keyIdOf(K1), scopes: ["admin"] });
    expect(auth.authenticate(`bearer ${K3}`)?.tenant).toBe("*");
  });

  it.each([null, "", "Bearer ", K1, `Basic ${K1}`, `Bearer ${K2}`, `Bearer ${K1}x`, `Bearer ${"x".repeat(10_000)}`])(
    "returns undefined for %j",
    (h) => {
      expect(auth.authenticate(h)).toBeUndefined();
    },
  );

  it('refuses a key of tenant "*" without the internal scope, given directly (not only through the env parser)', () => {
    expect(() => createApiKeyAuthenticator([{ tenant: "*", scopes: ["admin"], key: K1 }])).toThrow(/tenant "\*" is only allowed for internal keys/);
  });

  it("keeps no plain key in memory reachable from the authenticator", () => {
    expect(JSON.stringify(auth)).not.toContain(K1);
    expect(keyIdOf(K1)).toMatch(/^key_[0-9a-f]{12}$/);
  });
});

it("admin implies ingest and read, internal implies every scope", () => {
  const p = (scopes: Array<"admin" | "ingest" | "read" | "internal">) => ({ tenant: "t", keyId: "k", scopes });
  expect(hasScope(p(["admin"]), "read")).toBe(true);
  expect(hasScope(p(["admin"]), "internal")).toBe(false);
  expect(hasScope(p(["ingest"]), "read")).toBe(false);
  expect(hasScope(p(["internal"]), "admin")).toBe(true);
});

describe("key revocation and replacement", () => {
  it("refuses a revoked key id like an unknown key, at creation and at runtime", () => {
    const auth = createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${K1},tnt_a:read:${K2}`), { revokedKeyIds: [keyIdOf(K2)] });
    expect(auth.authenticate(`Bearer ${K1}`)?.tenant).toBe("tnt_a");
    expect(auth.authenticate(`Bearer ${K2}`)).toBeUndefined();
    expect(auth.keyIds()).toEqual([keyIdOf(K1)]);
    auth.revoke(keyIdOf(K1));
    expect(auth.authenticate(`Bearer ${K1}`)).toBeUndefined();
    expect(auth.keyIds()).toEqual([]);
  });

  it("replaceKeys swaps the whole set atomically; an invalid set leaves the old one in force", () => {
    const auth = createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${K1}`));
    auth.replaceKeys(parseApiKeysEnv(`tnt_b:ingest:${K2}`));
    expect(auth.authenticate(`Bearer ${K1}`)).toBeUndefined();
    expect(auth.authenticate(`Bearer ${K2}`)).toEqual({ tenant: "tnt_b", keyId: keyIdOf(K2), scopes: ["ingest"] });
    expect(() => auth.replaceKeys([{ tenant: "bad tenant", scopes: ["read"], key: K3 }])).toThrow(ConfigError);
    expect(auth.authenticate(`Bearer ${K2}`)?.tenant).toBe("tnt_b");
    // Revocations carry over unless the new set names its own.
    auth.revoke(keyIdOf(K2));
    auth.replaceKeys(parseApiKeysEnv(`tnt_b:ingest:${K2},tnt_c:read:${K3}`));
    expect(auth.authenticate(`Bearer ${K2}`)).toBeUndefined();
    auth.replaceKeys(parseApiKeysEnv(`tnt_b:ingest:${K2}`), { revokedKeyIds: [] });
    expect(auth.authenticate(`Bearer ${K2}`)?.tenant).toBe("tnt_b");
  });

  it("parses NANOBILL_REVOKED_KEY_IDS and names the variable on a malformed id", () => {
    expect(parseRevokedKeyIdsEnv(` ${keyIdOf(K1)}, ${keyIdOf(K2)} `)).toEqual([keyIdOf(K1), keyIdOf(K2)]);
    expect(parseRevokedKeyIdsEnv("")).toEqual([]);
    expect(() => parseRevokedKeyIdsEnv(`${keyIdOf(K1)},${K1}`)).toThrow(/NANOBILL_REVOKED_KEY_IDS: entry 2: expected a key id/);
    let err: unknown;
    try {
      parseRevokedKeyIdsEnv(K1);
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).not.toContain(K1);
  });

  it("createApiKeyAuthenticatorFromEnv applies NANOBILL_API_KEYS minus NANOBILL_REVOKED_KEY_IDS", () => {
    const auth = createApiKeyAuthenticatorFromEnv({
      NANOBILL_API_KEYS: `tnt_a:admin:${K1},tnt_a:read:${K2}`,
      NANOBILL_REVOKED_KEY_IDS: keyIdOf(K1),
    });
    expect(auth.authenticate(`Bearer ${K1}`)).toBeUndefined();
    expect(auth.authenticate(`Bearer ${K2}`)?.scopes).toEqual(["read"]);
  });
});
