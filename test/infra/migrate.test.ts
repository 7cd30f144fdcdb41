/**
 * infra/migrate.ts: argument and schema rules, apply and --wait against both database backends,
 * and the migrationsDir export of every service package that exists.
 */
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Db, testBackends } from "@nanobill/db";
import {
  EXIT_USAGE,
  MIGRATE_SERVICES,
  MIGRATE_WAIT_MS_MAX,
  MIGRATE_WAIT_POLL_MS,
  UsageError,
  migrationsDirOf,
  parseArgs,
  pendingMigrations,
  run,
  schemaFor,
} from "../../infra/migrate.js";
import { MIGRATE_DEADLINE_S, SERVICE_NAMES, schemaOf } from "../../infra/k8s/render.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

test("the init container waits longer than the migrations Job may run", () => {
  expect(MIGRATE_WAIT_MS_MAX).toBeGreaterThan(MIGRATE_DEADLINE_S * 1000);
});

describe("arguments and schema", () => {
  test("the CLI knows exactly the services the manifests deploy, with the same schema rule", () => {
    expect([...MIGRATE_SERVICES]).toEqual([...SERVICE_NAMES]);
    for (const s of MIGRATE_SERVICES) expect(schemaFor(s, {})).toBe(schemaOf(s));
  });

  test.each([
    [["ledger"], { service: "ledger", wait: false }],
    [["credit-wallet", "--wait"], { service: "credit-wallet", wait: true }],
    [["--wait", "invoicing"], { service: "invoicing", wait: true }],
  ])("parseArgs(%j) reads the service and mode", (argv, want) => {
    expect(parseArgs(argv)).toEqual(want);
  });

  test.each([[[]], [["payments"]], [["ledger", "extra"]]])("parseArgs(%j) is a usage error", (argv) => {
    expect(() => parseArgs(argv)).toThrow(UsageError);
  });

  test("<SERVICE>_DB_SCHEMA overrides the schema and must be a plain identifier", () => {
    expect(schemaFor("credit-wallet", { CREDIT_WALLET_DB_SCHEMA: "wallet_v2" })).toBe("wallet_v2");
    expect(() => schemaFor("ledger", { LEDGER_DB_SCHEMA: 'x"; DROP SCHEMA public; --' })).toThrow(/LEDGER_DB_SCHEMA/);
  });

  test("a missing DATABASE_URL or an unknown service exits 64 without touching a database", async () => {
    const lines: string[] = [];
    const open = (): Promise<Db> => Promise.reject(new Error("must not open"));
    expect(await run(["ledger"], { env: {}, log: (l) => lines.push(l), open })).toBe(EXIT_USAGE);
    expect(await run(["payments"], { env: { DATABASE_URL: "postgres://x@y/z" }, log: (l) => lines.push(l), open })).toBe(EXIT_USAGE);
    expect(lines.join("\n")).toContain("DATABASE_URL: required");
  });
});

describe("service packages", () => {
  // A service is checked once its package entry (src/index.ts) exists.
  const present = SERVICE_NAMES.filter((s) => existsSync(join(ROOT, "apps", s, "src/index.ts")));
  test.each(present)("@nanobill/%s exports migrationsDir, a folder of NNNN_name.sql files", async (s) => {
    const dir = await migrationsDirOf(s);
    expect(readdirSync(dir).filter((n) => /^\d{4}_[a-z0-9_]+\.sql$/.test(n)).length).toBeGreaterThan(0);
  });
});

describe.each(testBackends())("apply and wait on $name", (backend) => {
  let db: Db & { dispose(): Promise<void> };
  let dir: string;
  /** run() closes what it opens: hand it a view of the test Db whose close() is a no-op. */
  const borrowed = (): Db =>
    new Proxy(db, {
      get(t, p) {
        if (p === "close") return async () => {};
        const v = Reflect.get(t, p, t) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
  const env = { DATABASE_URL: "postgres://unused@localhost/test" };

  beforeAll(async () => {
    db = await backend.open();
    dir = await mkdtemp(join(tmpdir(), "nanobill-migrate-"));
    await writeFile(join(dir, "0001_first.sql"), "CREATE TABLE things (id TEXT PRIMARY KEY);");
    await writeFile(join(dir, "0002_second.sql"), "ALTER TABLE things ADD COLUMN amount_nanos BIGINT NOT NULL DEFAULT 0;");
  });
  afterAll(async () => {
    await db?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("--wait gives up with exit 1 while migrations are pending, apply runs them, then --wait exits 0", async () => {
    const lines: string[] = [];
    const slept: number[] = [];
    const opts = {
      env,
      log: (l: string) => lines.push(l),
      open: async (_url: string, schema: string) => {
        expect(schema).toBe("ledger");
        return borrowed();
      },
      dirOf: async () => dir,
      sleep: async (ms: number) => {
        slept.push(ms);
      },
      waitMsMax: 3 * MIGRATE_WAIT_POLL_MS,
    };
    expect(await pendingMigrations(db, dir)).toEqual(["0001_first.sql", "0002_second.sql"]);
    expect(await run(["ledger", "--wait"], opts)).toBe(1);
    expect(slept).toEqual([MIGRATE_WAIT_POLL_MS, MIGRATE_WAIT_POLL_MS, MIGRATE_WAIT_POLL_MS]);
    expect(lines.at(-1)).toContain("migrations still pending");

    expect(await run(["ledger"], opts)).toBe(0);
    expect(lines.at(-1)).toContain('"applied":["0001_first.sql","0002_second.sql"]');
    expect(await pendingMigrations(db, dir)).toEqual([]);
    expect(await run(["ledger", "--wait"], opts)).toBe(0);
    expect(await run(["ledger"], opts)).toBe(0);
    expect(lines.at(-1)).toContain('"applied":[]');
  });

  test("a new migration file is pending until applied", async () => {
    await writeFile(join(dir, "0003_third.sql"), "CREATE INDEX things_amount ON things (amount_nanos);");
    expect(await pendingMigrations(db, dir)).toEqual(["0003_third.sql"]);
    const opts = { env, log: () => {}, open: async () => borrowed(), dirOf: async () => dir };
    expect(await run(["ledger"], opts)).toBe(0);
    expect(await pendingMigrations(db, dir)).toEqual([]);
  });
});

describe.runIf(process.env.DATABASE_URL)("the CLI process (PostgreSQL)", () => {
  test("exits at once on SIGTERM while it waits for the migrations Job (node as PID 1 ignores an unhandled SIGTERM)", async () => {
    const { spawn } = await import("node:child_process");
    const { randomBytes } = await import("node:crypto");
    const { dropSchemasWithPrefix } = await import("@nanobill/db");
    const schema = `mig_sig_${randomBytes(4).toString("hex")}`;
    const child = spawn(process.execPath, ["--import", "tsx", "infra/migrate.ts", "ledger", "--wait"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, DATABASE_URL: process.env.DATABASE_URL, LEDGER_DB_SCHEMA: schema },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      await new Promise<void>((resolveWait, reject) => {
        const t = setTimeout(() => reject(new Error(`no "waiting" line in 60 s: ${out}`)), 60_000);
        child.stdout.on("data", (d) => {
          out += String(d);
          if (out.includes("waiting for the migrations Job")) (clearTimeout(t), resolveWait());
        });
        child.on("exit", (code) => reject(new Error(`exited early with ${code}: ${out}`)));
      });
      const sent = Date.now();
      child.kill("SIGTERM");
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
      expect(code).toBe(143);
      expect(Date.now() - sent).toBeLessThan(MIGRATE_WAIT_POLL_MS + 3_000);
    } finally {
      child.kill("SIGKILL");
      await dropSchemasWithPrefix(process.env.DATABASE_URL!, schema);
    }
  }, 90_000);
});
