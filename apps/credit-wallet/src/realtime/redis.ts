import { Cluster, Redis } from "ioredis";
import { burnKey, burnUntilMs } from "../domain/burn-order.js";
import type { Slice } from "../domain/types.js";
import { CREDIT_LUA, DEBIT_LUA, DEBIT_MANY_LUA, LOAD_LUA } from "./lua.js";
import type { DebitRequest, DebitResult, RealtimeStore, WalletRef, WalletSnapshot } from "./types.js";

interface WalletCommands {
  nbDebit(s: string, a: string, m: string, o: string, ...argv: string[]): Promise<string[]>;
  nbDebitMany(s: string, a: string, m: string, o: string, ...argv: string[]): Promise<string[] | string[][]>;
  nbCredit(s: string, a: string, m: string, o: string, ...argv: string[]): Promise<string[]>;
  nbLoad(s: string, a: string, m: string, o: string, ...argv: string[]): Promise<string>;
}

/** A debit script's reply -> DebitResult. */
function debitResultOf(r: string[]): DebitResult {
  if (r[0] === "nostate") return { kind: "no_state" };
  if (r[0] === "insufficient") {
    return { kind: "insufficient", gen: r[1]!, slices: [], overdraftNanos: 0n, uncoveredNanos: 0n, shortfallNanos: BigInt(r[2]!), availableAfterNanos: BigInt(r[3]!) };
  }
  const slices: Slice[] = [];
  for (let i = 6; i < r.length; i += 2) slices.push({ grantId: r[i]!, amountNanos: BigInt(r[i + 1]!) });
  return {
    kind: "ok",
    gen: r[1]!,
    overdraftNanos: BigInt(r[2]!),
    uncoveredNanos: BigInt(r[3]!),
    shortfallNanos: BigInt(r[4]!),
    availableAfterNanos: BigInt(r[5]!),
    slices,
  };
}

/** Scan page size when dropping every wallet's state. */
const SCAN_COUNT = 1_000;

/** How many MOVED/ASK redirections one command follows (a resharding in progress) before failing. */
const CLUSTER_REDIRECTIONS_MAX = 16;

/**
 * A Redis Cluster client from one seed node's URL (the client discovers the other nodes and
 * follows MOVED/ASK redirections). Username, password and rediss:// (TLS) apply to every node; a
 * database number is refused (a cluster has only database 0).
 */
export function clusterFromUrl(url: string): Cluster {
  const u = new URL(url);
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") throw new Error("REDIS_URL: a Redis Cluster seed must be redis:// or rediss://");
  if (u.pathname !== "" && u.pathname !== "/" && u.pathname !== "/0") throw new Error("REDIS_URL: a Redis Cluster has only database 0; remove the database number from the URL");
  return new Cluster([{ host: u.hostname, port: u.port === "" ? 6379 : Number(u.port) }], {
    enableAutoPipelining: true,
    maxRedirections: CLUSTER_REDIRECTIONS_MAX,
    redisOptions: {
      maxRetriesPerRequest: 2,
      ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      ...(u.protocol === "rediss:" ? { tls: {} } : {}),
    },
  });
}

/**
 * The Redis real-time store: every decision is one atomic Lua script (EVALSHA through ioredis's
 * defineCommand, auto-pipelined), so any number of service replicas share one consistent view.
 * Keys: `<prefix><tenant>:{<wallet id>}:<s|a|m|o>`: the braces are the Redis Cluster hash tag, so
 * the four keys of a wallet live in one slot and its scripts stay atomic on a cluster too
 * (`cluster: true`: `url` is a seed node; a standalone server otherwise).
 */
export function createRedisRealtime(opts: {
  url?: string;
  cluster?: boolean;
  client?: Redis | Cluster;
  prefix: string;
  onConnectionError?: (err: Error) => void;
}): RealtimeStore & { readonly client: Redis | Cluster } {
  const url = opts.url ?? "redis://127.0.0.1:6379";
  const client = opts.client ?? (opts.cluster ? clusterFromUrl(url) : new Redis(url, { enableAutoPipelining: true, maxRetriesPerRequest: 2, lazyConnect: false }));
  // ioredis reports connection trouble as 'error' events (without a listener it prints "Unhandled
  // error event" on every reconnect attempt); commands still fail on their own, and Redis state is
  // rebuilt from PostgreSQL when it is back.
  if (opts.onConnectionError) client.on("error", opts.onConnectionError);
  client.defineCommand("nbDebit", { numberOfKeys: 4, lua: DEBIT_LUA });
  client.defineCommand("nbDebitMany", { numberOfKeys: 4, lua: DEBIT_MANY_LUA });
  client.defineCommand("nbCredit", { numberOfKeys: 4, lua: CREDIT_LUA });
  client.defineCommand("nbLoad", { numberOfKeys: 4, lua: LOAD_LUA });
  const cmd = client as unknown as (Redis | Cluster) & WalletCommands;

  const keys = (w: WalletRef): [string, string, string, string] => {
    const b = `${opts.prefix}${w.tenant}:{${w.walletId}}:`;
    return [b + "s", b + "a", b + "m", b + "o"];
  };

  const debitOne = async (w: WalletRef, req: DebitRequest): Promise<DebitResult> =>
    debitResultOf(await cmd.nbDebit(...keys(w), req.amountNanos.toString(), req.mode, String(req.ctx.nowMs), req.ctx.chargeId, req.ctx.model));

  return {
    kind: "redis",
    client,
    async debit(w: WalletRef, req: DebitRequest): Promise<DebitResult> {
      return debitOne(w, req);
    },
    async debitMany(w: WalletRef, reqs: DebitRequest[]): Promise<DebitResult[]> {
      if (reqs.length === 0) return [];
      if (reqs.length === 1) return [await debitOne(w, reqs[0]!)];
      const nowMs = reqs[0]!.ctx.nowMs;
      const argv: string[] = [String(nowMs)];
      for (const r of reqs) {
        if (r.ctx.nowMs !== nowMs) throw new Error("debitMany: one now_ms per call");
        argv.push(r.amountNanos.toString(), r.mode, r.ctx.chargeId, r.ctx.model);
      }
      const rs = await cmd.nbDebitMany(...keys(w), ...argv);
      if (rs[0] === "nostate") return [{ kind: "no_state" }];
      return (rs as string[][]).map(debitResultOf);
    },
    async credit(w: WalletRef, gen: string, slices: Slice[], overdraftNanos: bigint) {
      const argv = [gen, overdraftNanos.toString()];
      for (const s of slices) if (s.amountNanos > 0n) argv.push(s.grantId, s.amountNanos.toString());
      const r = await cmd.nbCredit(...keys(w), ...argv);
      return r[0] === "ok" ? "ok" : "stale";
    },
    async load(w: WalletRef, snap: WalletSnapshot, gen: string) {
      const argv = [gen, snap.overdraftLimitNanos.toString(), snap.overdraftUsedNanos.toString(), snap.uncoveredAllowed ? "1" : "0"];
      for (const g of snap.grants) {
        argv.push(g.id, g.availableNanos.toString(), burnKey(g), `${g.effectiveAtMs}|${burnUntilMs(g) ?? ""}|${g.scope.chargeIds.join(",")}|${g.scope.models.join(",")}`);
      }
      return cmd.nbLoad(...keys(w), ...argv);
    },
    async invalidate(w: WalletRef) {
      await client.del(...keys(w));
    },
    async invalidateAll() {
      // A cluster's keys are scanned node by node (SCAN sees one node) and deleted one by one
      // (a multi-key DEL across slots is refused), routed by the cluster client.
      const nodes = client instanceof Cluster ? client.nodes("master") : [client];
      let n = 0;
      for (const node of nodes) {
        let cursor = "0";
        do {
          const [next, found] = await node.scan(cursor, "MATCH", `${opts.prefix}*`, "COUNT", SCAN_COUNT);
          cursor = next;
          if (found.length === 0) continue;
          if (client instanceof Cluster) n += (await Promise.all(found.map((k) => client.del(k)))).reduce((a, b) => a + b, 0);
          else n += await client.del(...found);
        } while (cursor !== "0");
      }
      return n;
    },
    async gen(w: WalletRef) {
      return client.hget(keys(w)[0], "gen");
    },
    async read(w: WalletRef) {
      const [s, a] = keys(w);
      const [st, av] = await Promise.all([client.hgetall(s), client.hgetall(a)]);
      if (!st.gen) return null;
      return {
        gen: st.gen,
        availableByGrant: new Map(Object.entries(av).map(([k, v]) => [k, BigInt(v)])),
        overdraftUsedNanos: BigInt(st.od ?? "0"),
      };
    },
    async close() {
      if (!opts.client) await client.quit().catch(() => undefined);
    },
  };
}
