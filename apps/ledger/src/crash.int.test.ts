/**
 * Crash test: a real ledger process (tsx apps/ledger/src/main.ts on PostgreSQL) is killed with
 * SIGKILL while clients stream batches of linked chains; after a restart every acknowledged
 * transfer is there, no linked chain is partly stored, retries of unacknowledged batches are
 * idempotent, and Verify holds. Runs once: on PostgreSQL when DATABASE_URL is set, otherwise on
 * the embedded PGlite with a data directory (the `npm start` mode).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { CreateTransferResult, LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { openDb, testBackends } from "@nanobill/db";
import { closeClientSessions, createClientTransport } from "@nanobill/service-kit";
import { afterAll, describe, expect, it } from "vitest";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));
const KEY = "sk_test_crash_admin_000000001";
const backend = testBackends().some((b) => b.name === "postgres") ? "postgres" : "pglite";

function startLedger(schema: string, dataDir: string): Promise<{ child: ChildProcess; url: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (backend === "pglite") delete env["DATABASE_URL"];
  const child = spawn(process.execPath, ["--import", "tsx", MAIN], {
    env: {
      ...env,
      LEDGER_DATA_DIR: dataDir,
      LEDGER_PORT: "0",
      LEDGER_HOST: "127.0.0.1",
      LEDGER_DB_SCHEMA: schema,
      NANOBILL_API_KEYS: `tnt_crash:admin:${KEY}`,
      LEDGER_EXPIRY_SWEEP_INTERVAL_MS: "0",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += String(d)));
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on("line", (line) => {
      try {
        const j = JSON.parse(line) as { msg?: string; url?: string };
        if (j.msg === "ledger listening" && j.url) resolve({ child, url: j.url });
      } catch {
        /* not JSON */
      }
    });
    child.once("exit", (code) => reject(new Error(`ledger exited early (${code}): ${stderr.slice(-2000)}`)));
  });
}

describe(`ledger process killed with SIGKILL mid-stream (${backend})`, () => {
  const schema = `crash_${process.pid}_${randomBytes(3).toString("hex")}`;
  let dataDir = "";
  const children: ChildProcess[] = [];
  afterAll(async () => {
    closeClientSessions();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    if (backend === "postgres") {
      const db = await openDb({ url: process.env["DATABASE_URL"]!, schema, poolMax: 1 });
      await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await db.close();
    }
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("keeps every acknowledged transfer, never a partial chain, and Verify holds", async () => {
    dataDir = await mkdtemp(join(tmpdir(), "ledger-crash-"));
    const first = await startLedger(schema, dataDir);
    children.push(first.child);
    const client1 = createClient(LedgerService, createClientTransport({ baseUrl: first.url, apiKey: KEY, timeoutMs: 20_000 }));
    await client1.createAccounts({
      accounts: [
        { id: "acct_a", unit: "USD", code: 1000 },
        { id: "acct_b", unit: "USD", code: 2100 },
        { id: "acct_c", unit: "USD", code: 4000 },
      ],
    });
    // Each batch: 10 linked chains of 3 transfers (a->b, b->c, c->a).
    const sent: string[][][] = []; // batches -> chains -> ids
    const acknowledged = new Set<string>();
    const unacknowledged: number[] = [];
    const batchOf = (n: number) =>
      Array.from({ length: 10 }, (_, c) => {
        const base = `xfer_${n}_${c}`;
        return [
          { id: `${base}_1`, debitAccountId: "acct_a", creditAccountId: "acct_b", amountNanos: 5n, unit: "USD", code: 20, flags: { linked: true } },
          { id: `${base}_2`, debitAccountId: "acct_b", creditAccountId: "acct_c", amountNanos: 5n, unit: "USD", code: 20, flags: { linked: true } },
          { id: `${base}_3`, debitAccountId: "acct_c", creditAccountId: "acct_a", amountNanos: 5n, unit: "USD", code: 20 },
        ];
      });
    let stop = false;
    let next = 0;
    const stream = async () => {
      while (!stop) {
        const n = next++;
        const chains = batchOf(n);
        sent[n] = chains.map((ch) => ch.map((t) => t.id));
        try {
          const res = await client1.createTransfers({ transfers: chains.flat() });
          for (const r of res.results) if (r.result === CreateTransferResult.OK) acknowledged.add(r.id);
        } catch {
          unacknowledged.push(n);
          return;
        }
      }
    };
    const streams = Array.from({ length: 4 }, stream);
    await new Promise((r) => setTimeout(r, 1_500));
    first.child.kill("SIGKILL");
    stop = true;
    await Promise.all(streams);
    expect(acknowledged.size).toBeGreaterThan(0);
    closeClientSessions();

    const second = await startLedger(schema, dataDir);
    children.push(second.child);
    const client2 = createClient(LedgerService, createClientTransport({ baseUrl: second.url, apiKey: KEY, timeoutMs: 20_000 }));
    const allIds = sent.flat(2);
    const stored = new Set<string>();
    for (let i = 0; i < allIds.length; i += 8_000) {
      const { transfers } = await client2.lookupTransfers({ ids: allIds.slice(i, i + 8_000) });
      for (const t of transfers) stored.add(t.id);
    }
    for (const id of acknowledged) expect(stored.has(id), `acknowledged ${id} is stored`).toBe(true);
    for (const chains of sent) {
      for (const chain of chains ?? []) {
        const present = chain.filter((id) => stored.has(id)).length;
        expect([0, chain.length], `chain ${chain[0]} is all or nothing`).toContain(present);
      }
    }
    // Retrying the unacknowledged batches is safe: EXISTS where they were applied, OK otherwise.
    for (const n of unacknowledged) {
      const res = await client2.createTransfers({ transfers: batchOf(n).flat() });
      expect(res.results.every((r) => r.result === CreateTransferResult.OK || r.result === CreateTransferResult.EXISTS)).toBe(true);
    }
    const report = await client2.verify({});
    expect(report.violations).toEqual([]);
    expect(report.ok).toBe(true);
    const exited = new Promise((r) => second.child.once("exit", r));
    second.child.kill("SIGTERM");
    await exited;
  });
});
