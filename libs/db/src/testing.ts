import { randomBytes } from "node:crypto";
import { readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { quoteIdent } from "./common.js";
import { DbError } from "./errors.js";
import { openDb } from "./open.js";
import { openEmbedded } from "./pglite-backend.js";
import type { Db, EmbeddedPostgres } from "./types.js";

/** Pool size of each PostgreSQL Db opened for a test (tests open many; the server has a connection cap). */
export const TEST_POOL_MAX = 4;

export type TestDb = Db & { dispose(): Promise<void> };
export interface TestBackend {
  name: "pglite" | "postgres";
  open(): Promise<TestDb>;
}

/** One in-memory PGlite per process (a fresh schema per open()): starting one costs seconds. */
let sharedEmbedded: Promise<EmbeddedPostgres> | undefined;
/** The per-process in-memory instance behind the "pglite" test backend (for libs/db's own tests). */
export function embeddedForTests(): Promise<EmbeddedPostgres> {
  sharedEmbedded ??= startTestInstance().catch((e) => {
    sharedEmbedded = undefined;
    throw e;
  });
  return sharedEmbedded;
}

/**
 * initdb is most of PGlite's start-up. The first test process on a machine dumps a freshly
 * initialised data dir to a template tarball in the OS temp dir (written under a unique name, then
 * renamed: atomic); later processes load it instead of running initdb (about 3x faster). Any
 * problem with the template falls back to a plain start.
 */
async function startTestInstance(): Promise<EmbeddedPostgres> {
  const template = await templatePath().catch(() => undefined);
  if (template !== undefined) {
    const bytes = await readFile(template).catch(() => undefined);
    if (bytes !== undefined && bytes.length > 0) {
      try {
        return await openEmbedded({ loadDataDir: new Blob([bytes]) });
      } catch {
        await rm(template, { force: true }).catch(() => {});
      }
    }
  }
  const embedded = await openEmbedded({});
  if (template !== undefined) {
    try {
      const dump = await embedded.pglite.dumpDataDir("none");
      const tmp = `${template}.${process.pid}.${randomBytes(4).toString("hex")}`;
      await writeFile(tmp, Buffer.from(await dump.arrayBuffer()));
      await rename(tmp, template).catch(async () => rm(tmp, { force: true }));
    } catch {
      // No template this time; the next process tries again.
    }
  }
  return embedded;
}

/** Template file name keyed by the installed PGlite build (its entry file's size and mtime). */
async function templatePath(): Promise<string> {
  const entry = createRequire(import.meta.url).resolve("@electric-sql/pglite");
  const st = await stat(entry);
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  return join(tmpdir(), `nanobill-pglite-template-${uid}-${st.size}-${Math.floor(st.mtimeMs)}.tar`);
}

let counter = 0;
function uniqueSchema(): string {
  counter += 1;
  return `test_${process.pid}_${counter}_${randomBytes(4).toString("hex")}`;
}

function withDispose(db: Db): TestDb {
  let disposed = false;
  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    try {
      await db.query(`DROP SCHEMA IF EXISTS "${db.schema}" CASCADE`);
    } finally {
      await db.close();
    }
  };
  return Object.assign(db, { dispose });
}

/**
 * The backends a store test must run on: PGlite always; PostgreSQL when DATABASE_URL is set.
 * With CI=true and no DATABASE_URL this throws (never a silent skip). Each open() gives a Db in a
 * fresh unique schema that dispose() drops (CASCADE) before closing the Db.
 */
export function testBackends(env: NodeJS.ProcessEnv = process.env): TestBackend[] {
  const url = env.DATABASE_URL;
  if ((url === undefined || url === "") && env.CI === "true") {
    throw new DbError("invalid_argument", "DATABASE_URL: must be set when CI=true (store tests run on PostgreSQL in CI, never skipped)");
  }
  const backends: TestBackend[] = [
    {
      name: "pglite",
      async open() {
        const embedded = await embeddedForTests();
        return withDispose(await openDb({ embedded, schema: uniqueSchema() }));
      },
    },
  ];
  if (url !== undefined && url !== "") {
    backends.push({
      name: "postgres",
      async open() {
        return withDispose(await openDb({ url, schema: uniqueSchema(), poolMax: TEST_POOL_MAX }));
      },
    });
  }
  return backends;
}

/**
 * Drops every schema whose name starts with `prefix` on the PostgreSQL server at `url` (tests that
 * start services on their own schemas clean up with it). The prefix must be a plain identifier
 * start, so a typo cannot match other tests' schemas by wildcard.
 */
export async function dropSchemasWithPrefix(url: string, prefix: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]{2,}$/.test(prefix)) throw new DbError("invalid_argument", `prefix: must match [a-z_][a-z0-9_]{2,}, got "${prefix}"`);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", [prefix]);
    for (const r of rows) await client.query(`DROP SCHEMA ${quoteIdent(r.nspname, "schema")} CASCADE`);
  } finally {
    await client.end();
  }
}
