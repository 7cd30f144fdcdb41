// Where a metering commit spends its time: times each statement of store.ingest (1,000-event
// transactions, one sum meter by model, 500 customers) on real PostgreSQL, beside the raw COPY of
// the same rows. Usage: npx tsx bench/ingest/profile.ts
import { openDb, migrate } from "@nanobill/db";
import { timedDb } from "../timed-db.js";
import { validateEvent } from "../../apps/metering/src/domain/event.js";
import { createMeteringStore } from "../../apps/metering/src/store/store.js";
import { aggregateAll } from "../../apps/metering/src/store/aggregator.js";
import { AGGREGATE_CHUNK_EVENTS } from "../../apps/metering/src/limits.js";
import { migrationsDir } from "../../apps/metering/src/index.js";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const SCHEMA = `bench_ingest_prof_${process.pid}`;
const N = Number(process.env.EVENTS ?? 60_000);
const BATCH = Number(process.env.BATCH ?? 1_000);

const timings = new Map<string, number[]>();
async function main() {
  const raw = await openDb({ url: DATABASE_URL, schema: SCHEMA, poolMax: 2 });
  await raw.query(`CREATE SCHEMA IF NOT EXISTS "${SCHEMA}"`);
  await migrate(raw, migrationsDir);
  const nowUs = BigInt(Date.now()) * 1000n;
  await raw.query(
    `INSERT INTO meters (tenant, meter_id, event_type, definition, created_us, backfill_through_sequence, backfill_done_sequence) VALUES ('t', 'tokens', 'llm.call', $1::jsonb, 0, 0, 0)`,
    [JSON.stringify({ id: "tokens", eventType: "llm.call", aggregation: "sum", valueProperty: "input_tokens", filters: [], groupBy: ["model"] })],
  );
  const items = Array.from({ length: N }, (_, i) => {
    const v = validateEvent(
      { id: `evt_${i}`, customerId: `cus_${i % 500}`, type: "llm.call", timestamp: nowUs, properties: { model: { kind: "string", value: i % 3 ? "gpt-x" : "gpt-y" }, provider: { kind: "string", value: "openai" }, input_tokens: { kind: "int", value: BigInt(1000 + (i % 977)) }, output_tokens: { kind: "int", value: BigInt(100 + (i % 313)) } } },
      { nowUs, lateEventAgeUs: 86_400_000_000n },
    );
    if (!v.ok) throw new Error(v.rejection.message);
    return { tenant: "t", event: v.event };
  });
  const store = createMeteringStore(timedDb(raw, timings, 60));
  const t0 = performance.now();
  for (let i = 0; i < items.length; i += BATCH) await store.ingest(items.slice(i, i + BATCH), nowUs);
  const ms = performance.now() - t0;
  console.log(`store.ingest: ${N} events in ${BATCH}-event transactions: ${Math.round(N / (ms / 1000))} events/s, ${(ms / (N / BATCH)).toFixed(1)} ms per transaction`);
  const ta = performance.now();
  await aggregateAll(store, AGGREGATE_CHUNK_EVENTS);
  const ams = performance.now() - ta;
  console.log(`aggregation of the same events (${AGGREGATE_CHUNK_EVENTS}-event steps): ${Math.round(N / (ams / 1000))} events/s; ingest + aggregation: ${Math.round(N / ((ms + ams) / 1000))} events/s`);
  for (const [k, v] of timings) {
    v.sort((a, b) => a - b);
    console.log(`  ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(2).padStart(8)} ms avg  p50 ${v[v.length >> 1]!.toFixed(2).padStart(7)}  x${v.length}  ${k}`);
  }
  await raw.query(`DROP SCHEMA "${SCHEMA}" CASCADE`);
  await raw.close();
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
