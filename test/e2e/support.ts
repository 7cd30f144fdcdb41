import { randomBytes } from "node:crypto";
import { dropSchemasWithPrefix } from "@nanobill/db";
import type { PlatformOptions } from "@nanobill/platform";

export interface E2eBackend {
  name: "pglite" | "postgres";
  options(): Pick<PlatformOptions, "databaseUrl" | "redisUrl" | "schemaPrefix">;
  cleanup(): Promise<void>;
}

/**
 * The databases an end-to-end test runs on: embedded PGlite always; PostgreSQL (and Redis) when
 * DATABASE_URL (REDIS_URL) is set. With CI=true a missing DATABASE_URL is a failure, not a skip.
 */
export function e2eBackends(): E2eBackend[] {
  const out: E2eBackend[] = [{ name: "pglite", options: () => ({}), cleanup: async () => {} }];
  const url = process.env.DATABASE_URL;
  if (url === undefined || url === "") {
    if (process.env.CI === "true") throw new Error("DATABASE_URL must be set when CI=true (end-to-end tests run on real PostgreSQL)");
    return out;
  }
  const prefix = `e2e_${process.pid}_${randomBytes(3).toString("hex")}_`;
  out.push({
    name: "postgres",
    options: () => ({ databaseUrl: url, redisUrl: process.env.REDIS_URL || undefined, schemaPrefix: prefix }),
    cleanup: () => dropSchemasWithPrefix(url, prefix),
  });
  return out;
}

/** Polls fn until it returns a value other than undefined (or stops throwing NotFound-like errors). */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
