/**
 * The full path under sustained load: IngestEvents batches -> metering -> rating (consumer) ->
 * credit-wallet Consume -> ledger transfers, on real PostgreSQL (and Redis when REDIS_URL is set).
 * Prints: events/s accepted, rated and posted; acceptance -> rated and acceptance -> ledger-posted
 * lag (p50/p99) of probe events; RSS of each service process over time; and, in the same run, the
 * raw PostgreSQL COPY rate of equivalent event rows (the yardstick).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/9 \
 *     npx tsx bench/system/main.ts [--seconds 60] [--soak] [--in-process] [--concurrency 4] [--batch 500] [--rate 0]
 *
 * --rate N paces the callers to N events/s in total (lag below saturation); 0 (default) offers as
 * much as metering accepts, so rating runs behind and the probe lag is mostly queueing.
 *
 * --soak = 600 s. Default mode is the multi-process stack (per-service RSS); --in-process runs
 * startPlatform in this process (one RSS for all five).
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Redis } from "ioredis";
import { openDb } from "@nanobill/db";
import { silentLogger } from "@nanobill/service-kit";
import { GrantKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { IngestStatus } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { startPlatform, type PlatformClients, type ServiceName } from "../../libs/platform/src/platform.js";
import { startStack, STACK_SERVICES } from "../../libs/platform/src/stack.js";
import { seedDemo } from "../../libs/platform/src/demo.js";

const args = process.argv.slice(2);
const flag = (name: string): boolean => args.includes(`--${name}`);
const opt = (name: string, def: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const SECONDS = flag("soak") ? 600 : opt("seconds", 60);
const CONCURRENCY = opt("concurrency", 4);
const BATCH = opt("batch", 500);
const CUSTOMERS = opt("customers", 20);
/** Offered load in events/s over all callers (0 = as fast as the platform accepts). */
const RATE = opt("rate", 0);
const DRAIN_TIMEOUT_MS = 300_000;
const RSS_SAMPLE_MS = flag("soak") ? 30_000 : 5_000;
const COPY_ROWS = 200_000;
const COPY_BATCH = 10_000;

const DATABASE_URL = process.env.DATABASE_URL;
if (!DATABASE_URL) {
  process.stderr.write("bench/system needs DATABASE_URL (real PostgreSQL)\n");
  process.exit(2);
}
const REDIS_URL = process.env.REDIS_URL || undefined;
const run = randomBytes(3).toString("hex");
const prefix = `bsys_${run}_`;
const TENANT = "tnt_bench";
const key = `nbk_bench_${randomBytes(16).toString("hex")}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const rssMb = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};

async function main(): Promise<void> {
  const inProcess = flag("in-process");
  process.stdout.write(`bench/system: ${SECONDS} s, ${RATE > 0 ? `${RATE} events/s offered` : "unpaced"}, ${inProcess ? "in-process platform" : "multi-process stack"}, PostgreSQL${REDIS_URL ? " + Redis" : ""}, ${CONCURRENCY} x ${BATCH}-event batches, ${CUSTOMERS} customers\n`);

  let clients: PlatformClients;
  let pids: Array<[string, number]>;
  let close: () => Promise<void>;
  if (inProcess) {
    const p = await startPlatform({ databaseUrl: DATABASE_URL, redisUrl: REDIS_URL, schemaPrefix: prefix, apiKeys: [{ tenant: TENANT, scopes: ["admin"], key }], logger: silentLogger, consumerWaitMs: 100 });
    clients = p.clients(key);
    pids = [["platform (all five)", process.pid]];
    close = () => p.close();
  } else {
    const s = await startStack({
      databaseUrl: DATABASE_URL!,
      redisUrl: REDIS_URL,
      redisPrefix: `nb:${prefix}wallet:`,
      schemaPrefix: prefix,
      apiKeys: [{ tenant: TENANT, scopes: ["admin"], key }],
      env: { NANOBILL_LOG_LEVEL: "warn", RATING_CONSUMER_WAIT_MS: "100" },
    });
    clients = s.clients(key);
    pids = STACK_SERVICES.map((n: ServiceName) => [n, s.pid(n)!]);
    close = () => s.stop();
  }
  const c = clients;
  try {
    const now = new Date();
    const customers: string[] = [];
    for (let i = 0; i < CUSTOMERS + 1; i++) {
      const d = await seedDemo(c, { customerId: `cus_b${run}_${i}`, now });
      await c.wallet.grant({ id: `grant_big_${d.customerId}`, walletId: d.walletId, kind: GrantKind.PURCHASED, amountNanos: 1_000_000_000_000_000n, priority: 2 });
      customers.push(d.customerId);
    }
    const probeCustomer = customers.pop()!;
    const probeWallet = (await c.wallet.getBalance({ customerId: probeCustomer, unit: "USD" })).wallet!;
    const probeAccount = probeWallet.ledgerAccountId;

    const ev = (id: string, customerId: string, inTok: bigint, outTok: bigint) => ({
      id,
      customerId,
      type: "llm.call",
      timestamp: timestampFromDate(new Date()),
      properties: {
        model: { kind: { case: "stringValue" as const, value: "gpt-x" } },
        provider: { kind: { case: "stringValue" as const, value: "openai" } },
        input_tokens: { kind: { case: "intValue" as const, value: inTok } },
        output_tokens: { kind: { case: "intValue" as const, value: outTok } },
      },
    });

    const rss: Array<{ t: number; mb: number[] }> = [];
    const t0 = Date.now();
    const sampler = setInterval(() => rss.push({ t: Math.round((Date.now() - t0) / 1000), mb: pids.map(([, pid]) => rssMb(pid)) }), RSS_SAMPLE_MS);
    rss.push({ t: 0, mb: pids.map(([, pid]) => rssMb(pid)) });
    const verify0 = await c.ledger.verify({});
    const end = t0 + SECONDS * 1000;
    let accepted = 0;
    let lastId = "";
    let seq = 0;
    const workers = Array.from({ length: CONCURRENCY }, async (_, w) => {
      const started = Date.now();
      let sent = 0;
      while (Date.now() < end) {
        if (RATE > 0) {
          const due = started + (sent / (RATE / CONCURRENCY)) * 1000;
          if (due > Date.now()) await sleep(due - Date.now());
        }
        sent += BATCH;
        const events = Array.from({ length: BATCH }, () => ev(`evt_b${run}_${w}_${seq++}`, customers[seq % customers.length]!, BigInt(100 + (seq % 4000)), BigInt(seq % 1500)));
        const res = await c.metering.ingestEvents({ events }, { timeoutMs: 60_000 });
        res.results.forEach((r, i) => {
          if (r.status === IngestStatus.ACCEPTED) {
            accepted++;
            lastId = events[i]!.id;
          }
        });
      }
    });
    // probe: one event at a time for a customer of its own; lag to rated and to the ledger posting
    const lagRated: number[] = [];
    const lagPosted: number[] = [];
    const probe = (async () => {
      let n = 0;
      while (Date.now() < end) {
        const before = (await c.ledger.lookupAccounts({ ids: [probeAccount] })).accounts[0]!.debitsPostedNanos;
        const id = `evt_b${run}_probe_${n++}`;
        await c.metering.ingestEvents({ events: [ev(id, probeCustomer, 1000n, 100n)] });
        const acceptedAt = Date.now();
        let rated = false;
        for (;;) {
          if (!rated) {
            const r = await c.rating.getRatedEvent({ eventId: id }).catch(() => undefined);
            if (r?.rated) {
              rated = true;
              lagRated.push(Date.now() - acceptedAt);
            }
          }
          if (rated) {
            const a = (await c.ledger.lookupAccounts({ ids: [probeAccount] })).accounts[0]!;
            if (a.debitsPostedNanos > before) {
              lagPosted.push(Date.now() - acceptedAt);
              break;
            }
          }
          if (Date.now() - acceptedAt > DRAIN_TIMEOUT_MS) break;
          await sleep(20);
        }
        await sleep(200);
      }
    })();
    await Promise.all(workers);
    const ingestS = (Date.now() - t0) / 1000;
    await probe;
    // drain: the last accepted event rated (the consumer reads in sequence order), then the ledger stops growing
    let ratedAt = NaN;
    for (const deadline = Date.now() + DRAIN_TIMEOUT_MS; Date.now() < deadline; await sleep(250)) {
      const r = await c.rating.getRatedEvent({ eventId: lastId }).catch(() => undefined);
      if (r?.rated) {
        ratedAt = Date.now();
        break;
      }
    }
    let postedAt = NaN;
    let transfers = 0n;
    for (let prev = -1n, deadline = Date.now() + DRAIN_TIMEOUT_MS; Date.now() < deadline; await sleep(1_000)) {
      transfers = (await c.ledger.verify({})).transfersChecked - verify0.transfersChecked;
      if (transfers === prev) break;
      prev = transfers;
      postedAt = Date.now();
    }
    clearInterval(sampler);
    rss.push({ t: Math.round((Date.now() - t0) / 1000), mb: pids.map(([, pid]) => rssMb(pid)) });
    const verify = await c.ledger.verify({});

    // the yardstick: COPY of equivalent rows into an indexed table, same database, same run
    const db = await openDb({ url: DATABASE_URL, schema: `${prefix}copy` });
    let copyRate = NaN;
    try {
      await db.query(`CREATE TABLE events (tenant TEXT NOT NULL, event_id TEXT NOT NULL, customer_id TEXT NOT NULL, type TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, properties JSONB NOT NULL, sequence BIGINT NOT NULL, PRIMARY KEY (tenant, event_id))`);
      const props = JSON.stringify({ model: "gpt-x", provider: "openai", input_tokens: 1234, output_tokens: 567 });
      const ts = new Date();
      const c0 = Date.now();
      for (let i = 0; i < COPY_ROWS; i += COPY_BATCH) {
        const rows = Array.from({ length: COPY_BATCH }, (_, k) => [TENANT, `evt_copy_${i + k}`, `cus_${(i + k) % 20}`, "llm.call", ts, props, BigInt(i + k)]);
        await db.copyRows("events", ["tenant", "event_id", "customer_id", "type", "ts", "properties", "sequence"], rows);
      }
      copyRate = COPY_ROWS / ((Date.now() - c0) / 1000);
    } finally {
      await db.query(`DROP SCHEMA "${prefix}copy" CASCADE`).catch(() => undefined);
      await db.close();
    }

    const ratedS = (ratedAt - t0) / 1000;
    const postedS = (postedAt - t0) / 1000;
    const lines = [
      "",
      `accepted            ${accepted} events in ${ingestS.toFixed(1)} s = ${Math.round(accepted / ingestS)} events/s`,
      `rated (drained)     ${accepted} events by ${ratedS.toFixed(1)} s = ${Math.round(accepted / ratedS)} events/s`,
      `ledger transfers    ${transfers} posted by ${postedS.toFixed(1)} s = ${Math.round(Number(transfers) / postedS)} transfers/s; verify ok=${verify.ok}`,
      `lag accept->rated   p50 ${pct(lagRated, 50)} ms, p99 ${pct(lagRated, 99)} ms (${lagRated.length} probes)`,
      `lag accept->posted  p50 ${pct(lagPosted, 50)} ms, p99 ${pct(lagPosted, 99)} ms (${lagPosted.length} probes)`,
      `COPY yardstick      ${Math.round(copyRate)} rows/s (${COPY_ROWS} event-shaped rows, indexed, same database)`,
      `RSS MB over time    t(s) ${pids.map(([n]) => n).join(" / ")}`,
      ...rss.filter((_, i) => i === 0 || i === rss.length - 1 || i % Math.max(1, Math.floor(rss.length / 8)) === 0).map((r) => `  ${String(r.t).padStart(5)}  ${r.mb.join(" / ")}`),
      "",
    ];
    process.stdout.write(lines.join("\n"));
  } finally {
    await close();
    const db = await openDb({ url: DATABASE_URL, schema: "public" });
    const { rows } = await db.query<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", [`${prefix}%`]);
    for (const r of rows) await db.query(`DROP SCHEMA "${r.nspname}" CASCADE`);
    await db.close();
    if (REDIS_URL) {
      const redis = new Redis(REDIS_URL);
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", `nb:${prefix}*`, "COUNT", 1000);
        if (keys.length > 0) await redis.del(...keys);
        cursor = next;
      } while (cursor !== "0");
      redis.disconnect();
    }
  }
}

await main();
process.exit(0);
