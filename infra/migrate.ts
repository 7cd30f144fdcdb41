/**
 * Migrations of one service, for the Kubernetes migrations Job and init containers.
 *
 *   tsx infra/migrate.ts <service>          apply the service's pending migrations, then exit
 *   tsx infra/migrate.ts <service> --wait   exit 0 once every migration file of the service is
 *                                           recorded in its schema (init container: new code never
 *                                           starts on an old schema, and replicas never run DDL)
 *
 * DATABASE_URL (required) is opened with schema `<SERVICE>_DB_SCHEMA`, default the service name
 * with '-' -> '_' (the same rule as infra/k8s/render.ts). The migrations folder is the
 * `migrationsDir` export of the service package `@nanobill/<service>`. Exit codes: 0 done,
 * 1 failed, 64 usage error.
 */
import { migrate, openDb, pendingMigrations, type Db } from "@nanobill/db";

export { pendingMigrations };

/** The services this CLI knows (package `@nanobill/<name>`). */
export const MIGRATE_SERVICES = ["metering", "rating", "ledger", "credit-wallet", "invoicing"] as const;
export type MigrateService = (typeof MIGRATE_SERVICES)[number];

/**
 * --wait: how often the schema is checked, and how long before giving up (the pod then restarts
 * the init container): longer than the migrations Job may run (MIGRATE_DEADLINE_S in
 * infra/k8s/render.ts, 600 s; a test keeps them in that order), so a slow but healthy migration
 * never crash-loops the pods waiting for it.
 */
export const MIGRATE_WAIT_POLL_MS = 2_000;
export const MIGRATE_WAIT_MS_MAX = 660_000;
/** One connection is all a migration needs. */
export const MIGRATE_POOL_MAX = 2;
/** Exit code of a usage error (EX_USAGE). */
export const EXIT_USAGE = 64;

export class UsageError extends Error {}

export interface MigrateArgs {
  service: MigrateService;
  wait: boolean;
}

export function parseArgs(argv: readonly string[]): MigrateArgs {
  const rest = argv.filter((a) => a !== "--wait");
  const wait = rest.length !== argv.length;
  const [service, ...extra] = rest;
  if (service === undefined || extra.length > 0) throw new UsageError(`usage: migrate.ts <service> [--wait]; service one of ${MIGRATE_SERVICES.join(", ")}`);
  if (!(MIGRATE_SERVICES as readonly string[]).includes(service)) {
    throw new UsageError(`service: unknown "${service}"; one of ${MIGRATE_SERVICES.join(", ")}`);
  }
  return { service: service as MigrateService, wait };
}

/** The PostgreSQL schema of a service: `<SERVICE>_DB_SCHEMA` when set, else the name with '-' -> '_'. */
export function schemaFor(service: MigrateService, env: Record<string, string | undefined>): string {
  const variable = `${service.toUpperCase().replace(/-/g, "_")}_DB_SCHEMA`;
  const value = env[variable];
  if (value !== undefined && value !== "") {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value)) throw new UsageError(`${variable}: must match [a-z_][a-z0-9_]{0,62}`);
    return value;
  }
  return service.replace(/-/g, "_");
}

/** `migrationsDir` of `@nanobill/<service>` (imported by name, so this file needs no service at compile time). */
export async function migrationsDirOf(service: MigrateService): Promise<string> {
  const pkg = `@nanobill/${service}`;
  const mod = (await import(pkg)) as { migrationsDir?: unknown };
  if (typeof mod.migrationsDir !== "string" || mod.migrationsDir === "") throw new Error(`${pkg}: does not export migrationsDir (a folder path)`);
  return mod.migrationsDir;
}

/**
 * The grants that let `role` run a service on its schema without DDL rights (the servers'
 * role with NANOBILL_MIGRATE_ON_START=false; docs/deployment.md), run by the schema's owner (the
 * migrations role) after the first migration: USAGE on the schema, DML on every table, USAGE and
 * UPDATE on every sequence (metering reserves event sequences with setval), and the same by
 * default for what later migrations create. EXECUTE on functions is PostgreSQL's default for PUBLIC.
 */
export function runtimeRoleGrants(schema: string, role: string): string[] {
  for (const [what, v] of [["schema", schema], ["role", role]] as const) {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(v)) throw new UsageError(`${what}: must match [a-z_][a-z0-9_]{0,62}`);
  }
  return [
    `GRANT USAGE ON SCHEMA ${schema} TO ${role}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${schema} TO ${role}`,
    `GRANT USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA ${schema} TO ${role}`,
    `ALTER DEFAULT PRIVILEGES IN SCHEMA ${schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${role}`,
    `ALTER DEFAULT PRIVILEGES IN SCHEMA ${schema} GRANT USAGE, UPDATE ON SEQUENCES TO ${role}`,
  ];
}

export interface RunOptions {
  env: Record<string, string | undefined>;
  log: (line: string) => void;
  sleep?: (ms: number) => Promise<void>;
  waitMsMax?: number;
  /** Opens the service's Db (default: DATABASE_URL with that schema); run() closes it. */
  open?: (url: string, schema: string) => Promise<Db>;
  /** The service's migrations folder (default: migrationsDirOf). */
  dirOf?: (service: MigrateService) => Promise<string>;
}

/** Runs the CLI; resolves to the exit code. */
export async function run(argv: readonly string[], opts: RunOptions): Promise<number> {
  const log = (msg: string, fields: object = {}): void => opts.log(JSON.stringify({ level: "info", service: "migrate", msg, ...fields }));
  let args: MigrateArgs;
  let schema: string;
  try {
    args = parseArgs(argv);
    schema = schemaFor(args.service, opts.env);
    if (!opts.env.DATABASE_URL) throw new UsageError("DATABASE_URL: required (a postgres:// URL)");
  } catch (e) {
    if (e instanceof UsageError) {
      opts.log(JSON.stringify({ level: "error", service: "migrate", msg: e.message }));
      return EXIT_USAGE;
    }
    throw e;
  }
  const dir = await (opts.dirOf ?? migrationsDirOf)(args.service);
  const open = opts.open ?? ((url: string, s: string) => openDb({ url, schema: s, poolMax: MIGRATE_POOL_MAX }));
  const db = await open(opts.env.DATABASE_URL, schema);
  try {
    if (!args.wait) {
      const { applied } = await migrate(db, dir);
      log("migrations applied", { target: args.service, schema, applied });
      return 0;
    }
    const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const limit = opts.waitMsMax ?? MIGRATE_WAIT_MS_MAX;
    for (let waited = 0; ; waited += MIGRATE_WAIT_POLL_MS) {
      const pending = await pendingMigrations(db, dir);
      if (pending.length === 0) {
        log("schema is current", { target: args.service, schema });
        return 0;
      }
      if (waited >= limit) {
        opts.log(JSON.stringify({ level: "error", service: "migrate", msg: "migrations still pending", target: args.service, schema, pending, waitedMs: waited }));
        return 1;
      }
      if (waited === 0) log("waiting for the migrations Job", { target: args.service, schema, pending });
      await sleep(MIGRATE_WAIT_POLL_MS);
    }
  } finally {
    await db.close();
  }
}

if (process.argv[1] !== undefined && /[\\/]infra[\\/]migrate\.ts$/.test(process.argv[1])) {
  // As PID 1 in a container node ignores SIGTERM unless it handles it: a deleted Job or a pod
  // stuck waiting would otherwise sit out its whole grace period. Exiting mid-run is safe: each
  // migration file is its own transaction (rolled back by PostgreSQL when the connection drops).
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => process.exit(signal === "SIGTERM" ? 143 : 130));
  run(process.argv.slice(2), { env: process.env, log: (line) => process.stdout.write(line + "\n") }).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(JSON.stringify({ level: "error", service: "migrate", msg: "failed", err: err instanceof Error ? err.message : String(err) }) + "\n");
      process.exit(1);
    },
  );
}
