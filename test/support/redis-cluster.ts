// A real Redis Cluster for tests: three master nodes (redis-server --cluster-enabled yes, no
// persistence) on free loopback ports, joined with `redis-cli --cluster create` (all 16,384 slots
// covered), torn down by stop() or, at the latest, when the test process is gone. Needs the redis-server and redis-cli binaries (the machine's
// Redis package); a missing binary is an error, never a skip.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RedisClusterFixture {
  /** redis://127.0.0.1:<port> of the first node (a seed: clients discover the rest). */
  seedUrl: string;
  ports: number[];
  /** FLUSHALL on every node (what a flush of the whole cluster does). */
  flushAll(): void;
  stop(): Promise<void>;
  /** SIGKILL every node now (synchronous: for a process "exit" hook). */
  killNow(): void;
}

/** Cluster nodes also listen on port + 10000 (the cluster bus). */
const BUS_OFFSET = 10_000;
const READY_MS_MAX = 20_000;

/**
 * Each node runs under a small sh watchdog: it stops its redis-server on SIGTERM, and by itself as
 * soon as the test process (NANOBILL_CLUSTER_PARENT) is gone, however it ended (a vitest worker
 * killed without running "exit" hooks left three redis-servers behind per run).
 */
const WATCHDOG = `redis-server "$@" &
r=$!
trap 'kill $r 2>/dev/null; wait $r; exit 0' TERM INT
while kill -0 "$NANOBILL_CLUSTER_PARENT" 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done
kill $r 2>/dev/null
wait $r`;

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** A free port whose bus port is free too. */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    if (taken.has(port) || taken.has(port + BUS_OFFSET)) continue;
    if ((await isFree(port)) && (await isFree(port + BUS_OFFSET))) return port;
  }
  throw new Error("no free port pair for a Redis Cluster node");
}

function cli(port: number, ...args: string[]): string {
  const r = spawnSync("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], { encoding: "utf8", timeout: 30_000 });
  if (r.error) throw new Error(`redis-cli: ${r.error.message} (install the machine's Redis package)`);
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(" ")}: exit ${r.status}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

export async function startRedisCluster(nodes = 3): Promise<RedisClusterFixture> {
  const dir = mkdtempSync(join(tmpdir(), "nanobill-redis-cluster-"));
  const taken = new Set<number>();
  const ports: number[] = [];
  for (let i = 0; i < nodes; i++) {
    const p = await freeClusterPort(taken);
    taken.add(p).add(p + BUS_OFFSET);
    ports.push(p);
  }
  const procs: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve();
            p.once("exit", () => resolve());
            p.kill("SIGTERM"); // the watchdog stops its redis-server and waits for it
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      const p = spawn(
        "sh",
        ["-c", WATCHDOG, "sh", "--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--dir", dir, "--save", "", "--appendonly", "no"],
        { stdio: "ignore", env: { ...process.env, NANOBILL_CLUSTER_PARENT: String(process.pid) } },
      );
      const failed = new Promise<never>((_, reject) => {
        p.once("error", (e) => reject(new Error(`sh: ${e.message}`)));
        p.once("exit", (code) => reject(new Error(code === 127 ? "redis-server: not found (install the machine's Redis package)" : `redis-server on port ${port} exited with ${code}`)));
      });
      failed.catch(() => undefined);
      procs.push(p);
      const deadline = Date.now() + READY_MS_MAX;
      for (;;) {
        const r = spawnSync("redis-cli", ["-h", "127.0.0.1", "-p", String(port), "ping"], { encoding: "utf8" });
        if (r.stdout?.trim() === "PONG") break;
        if (p.exitCode !== null || Date.now() > deadline) await Promise.race([failed, Promise.reject(new Error(`redis-server on port ${port} not answering`))]);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    cli(ports[0]!, "--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes");
    const deadline = Date.now() + READY_MS_MAX;
    while (!ports.every((p) => cli(p, "cluster", "info").includes("cluster_state:ok"))) {
      if (Date.now() > deadline) throw new Error("Redis Cluster not ok in time");
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    seedUrl: `redis://127.0.0.1:${ports[0]}`,
    ports,
    flushAll: () => ports.forEach((p) => cli(p, "flushall")),
    stop,
    killNow: () => {
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
