// A stack killed with SIGKILL (no chance to stop its services) leaves no service behind: each one
// sees its stdin pipe from the stack end and shuts down gracefully (NANOBILL_STOP_WITH_STDIN).
// Before, the five kept running, holding their ports, and the next `npm run stack` refused them.
// Also: the logs it writes are owner-only.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { dropSchemasWithPrefix } from "@nanobill/db";
import { STACK_SERVICES } from "../../libs/platform/src/stack.js";

const DATABASE_URL = process.env.DATABASE_URL || undefined;

/** Alive and not a zombie (a reparented child may wait unreaped where PID 1 reaps nothing). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

if (DATABASE_URL === undefined) {
  describe("stack orphans (needs DATABASE_URL)", () => {
    it("is not skipped in CI", () => {
      expect(process.env.CI, "DATABASE_URL must be set when CI=true").not.toBe("true");
    });
  });
} else {
  const prefix = `orph_${process.pid}_`;
  const dir = mkdtempSync(join(tmpdir(), "nanobill-orphans-"));
  afterAll(async () => {
    await dropSchemasWithPrefix(DATABASE_URL, prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  it("a SIGKILLed stack's services shut down by themselves", async () => {
    const config = join(dir, "stack.json");
    const ports = Object.fromEntries(STACK_SERVICES.map((n) => [n, 0]));
    writeFileSync(config, JSON.stringify({ ports, schemaPrefix: prefix, logDir: join(dir, "logs") }));
    const stack = spawn(process.execPath, ["--import", "tsx", "libs/platform/src/stack.ts"], {
      env: { ...process.env, DATABASE_URL, REDIS_URL: "", NANOBILL_API_KEYS: "", NANOBILL_STACK_CONFIG: config },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    const pids = await new Promise<number[]>((resolve, reject) => {
      stack.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("Press Ctrl+C to stop.")) resolve([...out.matchAll(/ pid (\d+) /g)].map((m) => Number(m[1])));
      });
      stack.once("exit", (code) => reject(new Error(`stack exited with ${code} before running: ${out}`)));
    });
    expect(pids).toHaveLength(STACK_SERVICES.length);
    expect(pids.every(running)).toBe(true);
    // Logs carry tenant ids and request details: owner only.
    expect(statSync(join(dir, "logs")).mode & 0o777).toBe(0o700);
    for (const n of STACK_SERVICES) expect(statSync(join(dir, "logs", `${n}.log`)).mode & 0o777, n).toBe(0o600);

    const stackExited = new Promise((r) => stack.once("exit", r));
    stack.kill("SIGKILL");
    await stackExited;
    const deadline = Date.now() + 40_000; // each service's shutdown is capped at 30 s
    while (pids.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(pids.filter(running), "services still running after the stack was killed").toEqual([]);
    // Gracefully: each ran its shutdown for that reason (not killed by a broken pipe or a crash).
    for (const n of STACK_SERVICES) {
      expect(readFileSync(join(dir, "logs", `${n}.log`), "utf8"), n).toContain("stdin closed: supervisor gone");
    }
  }, 120_000);
}
