/**
 * NANOBILL_MIGRATE_ON_START=false, through each service's real main.ts on PostgreSQL: on a schema
 * whose migrations were not run, the process refuses to start (exit code 1) naming the first
 * pending file, and creates no table (the migrations Job's job, docs/deployment.md).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { dropSchemasWithPrefix } from "@nanobill/db";

const URL_ = process.env.DATABASE_URL;
const SERVICES = ["metering", "rating", "ledger", "credit-wallet", "invoicing"] as const;
const prefix = `mos_${process.pid}_${randomBytes(3).toString("hex")}_`;

function runMain(service: string, schema: string): Promise<{ code: number | null; out: string }> {
  const p = service.toUpperCase().replace(/-/g, "_");
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", `apps/${service}/src/main.ts`], {
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: URL_,
        [`${p}_DB_SCHEMA`]: schema,
        [`${p}_PORT`]: "0",
        [`${p}_HOST`]: "127.0.0.1",
        NANOBILL_API_KEYS: "tnt_a:admin:key_admin_0001_mos,*:internal:key_internal_01_mos",
        NANOBILL_INTERNAL_API_KEY: "key_internal_01_mos",
        NANOBILL_MIGRATE_ON_START: "false",
        METERING_OTLP_PORT: "-1",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += String(d)));
    child.stderr.on("data", (d) => (out += String(d)));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${service} still running after 60 s (it should have refused to start): ${out.slice(-2000)}`));
    }, 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe.runIf(URL_)("NANOBILL_MIGRATE_ON_START=false (each service's main.ts, PostgreSQL)", () => {
  afterAll(() => dropSchemasWithPrefix(URL_!, prefix));

  it("refuses to start on a schema that was not migrated, naming the pending file, and creates no table", async () => {
    const runs = await Promise.all(SERVICES.map(async (s) => ({ s, schema: `${prefix}${s.replace(/-/g, "_")}`, ...(await runMain(s, `${prefix}${s.replace(/-/g, "_")}`)) })));
    const c = new pg.Client({ connectionString: URL_ });
    await c.connect();
    try {
      for (const r of runs) {
        expect(r.code, `${r.s}: ${r.out.slice(-1000)}`).toBe(1);
        expect(r.out, r.s).toMatch(/0001_[a-z0-9_]+\.sql.*not applied/);
        const tables = await c.query("SELECT tablename FROM pg_tables WHERE schemaname = $1", [r.schema]);
        expect(tables.rows, r.s).toEqual([]);
      }
    } finally {
      await c.end();
    }
  }, 120_000);
});
