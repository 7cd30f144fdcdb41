// Shared pieces of the invoicing service test files (used by *.test.ts only). It ships in the
// image with the other sources, so it imports no devDependency: the test runner's hooks come in.
import { ConnectError, type Code } from "@connectrpc/connect";
import type { TestBackend, TestDb } from "@nanobill/db";

/**
 * Databases of one backend for the enclosing describe(): open() gives a fresh schema each time; all
 * are disposed after the suite. The first open (an in-process PGlite takes seconds to start) runs
 * in a hook, whose timeout is longer than a test's.
 */
export function suiteDbs(backend: TestBackend, hooks: { beforeAll(fn: () => Promise<void>): void; afterAll(fn: () => Promise<void>): void }): () => Promise<TestDb> {
  const dbs: TestDb[] = [];
  const open = async (): Promise<TestDb> => {
    const db = await backend.open();
    dbs.push(db);
    return db;
  };
  hooks.beforeAll(async () => {
    await open();
  });
  hooks.afterAll(async () => {
    for (const db of dbs) await db.dispose();
  });
  return open;
}

/** ["ok", ""] when the call succeeds, else its Connect code and raw message. */
export async function outcomeOf(p: Promise<unknown>): Promise<[Code | "ok", string]> {
  try {
    await p;
    return ["ok", ""];
  } catch (e) {
    const c = ConnectError.from(e);
    return [c.code, c.rawMessage];
  }
}
