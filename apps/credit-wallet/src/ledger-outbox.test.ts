// The ledger outbox keeps a tenant's chains in order: when the ledger is unreachable for one
// batch, nothing after it is sent in that round (a post sent ahead of its pending transfer would
// fail for good: the ledger remembers failed ids).
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { fixedClock, silentLogger } from "@nanobill/service-kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { currentTraceContext, getTracer, initTelemetry, type Telemetry } from "@nanobill/telemetry";
import type { PlannedTransfer } from "./domain/ledger-plan.js";
import { createLedgerOutbox } from "./ledger-outbox.js";
import type { LedgerPort } from "./ledger-port.js";
import * as S from "./store/store.js";

let telemetry: Telemetry;
const exporter = new InMemorySpanExporter();
beforeAll(() => {
  telemetry = initTelemetry({ serviceName: "outbox-test", exporter });
});
afterAll(async () => {
  await telemetry?.shutdown();
});

/** Runs fn inside a new span; returns fn's result and the span's traceparent. */
async function inSpan<T>(name: string, fn: () => Promise<T>): Promise<{ value: T; traceparent: string }> {
  return getTracer("outbox-test").startActiveSpan(name, async (span) => {
    try {
      return { value: await fn(), traceparent: currentTraceContext()!.traceparent };
    } finally {
      span.end();
    }
  });
}

const t = (id: string, extra: Partial<PlannedTransfer> = {}): PlannedTransfer => ({ id, debit: "a", credit: "b", amount: "5", unit: "USD", code: 1, ...extra });

for (const backend of testBackends()) {
  describe(`ledger outbox (${backend.name})`, () => {
    let db: TestDb;
    beforeAll(async () => {
      db = await backend.open();
      await migrate(db, S.migrationsDir);
    });
    afterAll(async () => {
      await db?.dispose();
    });

    it("ends the round at a transport failure, so a tenant's post never overtakes its pending transfer", async () => {
      const now = new Date("2026-11-20T10:00:00Z");
      // Rows in order: A's pending hold, B's burn, A's post of the hold (two batches for A).
      await S.enqueueTransfers(db, "tnt_a", [[t("h1", { pending: true })]], now);
      await S.enqueueTransfers(db, "tnt_b", [[t("x1")]], now);
      await S.enqueueTransfers(db, "tnt_a", [[t("p1", { post: true, pendingId: "h1", amount: "0" })]], now);
      const sent: string[][] = [];
      let failNext = 1; // the first call fails (a blip); later ones would succeed
      const ledger: LedgerPort = {
        async createAccounts() {},
        async createTransfers(_tenant, transfers) {
          if (failNext-- > 0) throw new Error("ledger unreachable");
          sent.push(transfers.map((x) => x.id));
          return transfers.map(() => "OK");
        },
      };
      const outbox = createLedgerOutbox({ db, ledger, logger: silentLogger, clock: fixedClock(now) });
      await outbox.flush();
      expect(sent).toEqual([]);
      expect((await S.countOutbox(db)).unposted).toBe(3);
      await outbox.flush();
      expect(sent).toEqual([["h1"], ["x1"], ["p1"]]);
      expect(await S.countOutbox(db)).toEqual({ unposted: 0, failed: 0 });
      expect(outbox.failures).toBe(0);
    });

    it("posts each batch in a span of the trace of its first row's call, linked to its other rows' traces, whoever runs the flush", async () => {
      const now = new Date("2026-11-20T10:00:00Z");
      const a = await inSpan("writes A", () => S.enqueueTransfers(db, "tnt_tr_a", [[t("tr_a1")], [t("tr_a2")]], now));
      const b = await inSpan("writes B", () => S.enqueueTransfers(db, "tnt_tr_a", [[t("tr_b1")]], now)); // same tenant: same batch as A's rows
      await S.enqueueTransfers(db, "tnt_tr_c", [[t("tr_c1")]], now); // outside any trace
      const rows = await S.nextOutbox(db, 100);
      expect(rows.map((r) => [r.tenant, r.trace.traceparent])).toEqual([
        ["tnt_tr_a", a.traceparent],
        ["tnt_tr_a", a.traceparent],
        ["tnt_tr_a", b.traceparent],
        ["tnt_tr_c", ""],
      ]);
      const traceOf = (tp: string | undefined) => tp?.split("-")[1];
      const seen: Array<[string, string | undefined]> = [];
      const ledger: LedgerPort = {
        async createAccounts() {},
        async createTransfers(tenant, transfers) {
          seen.push([tenant, traceOf(currentTraceContext()?.traceparent)]);
          return transfers.map(() => "OK");
        },
      };
      const outbox = createLedgerOutbox({ db, ledger, logger: silentLogger, clock: fixedClock(now) });
      exporter.reset();
      // The flush runs inside an unrelated trace (a flush started for another call, say).
      const other = await inSpan("another call", () => outbox.flush());
      const cSpan = exporter.getFinishedSpans().filter((s) => s.name === "credit-wallet.ledger_outbox.post")[1]!;
      expect(seen).toEqual([
        ["tnt_tr_a", traceOf(a.traceparent)],
        ["tnt_tr_c", cSpan.spanContext().traceId], // its own root trace, not the flusher's
      ]);
      expect(cSpan.parentSpanContext).toBeUndefined();
      expect(seen.map(([, tr]) => tr)).not.toContain(traceOf(other.traceparent));
      // A's batch span is a child of A's writing span and links to B's.
      const aSpan = exporter.getFinishedSpans().filter((s) => s.name === "credit-wallet.ledger_outbox.post")[0]!;
      expect(aSpan.parentSpanContext?.spanId).toBe(a.traceparent.split("-")[2]);
      expect(aSpan.links.map((l) => l.context.traceId)).toEqual([traceOf(b.traceparent)]);
      expect(await S.countOutbox(db)).toEqual({ unposted: 0, failed: 0 });
    });

    it("books a post refused as PENDING_TRANSFER_EXPIRED with its plain (late) transfer, and only then calls the row done", async () => {
      const now = new Date("2026-11-20T10:00:00Z");
      const late = t("p2:late", { debit: "acct_wallet:c:USD", credit: "acct_revenue:USD", amount: "7", code: 20 });
      await S.enqueueTransfers(db, "tnt_late", [[t("p2", { post: true, pendingId: "h2", amount: "7", late }), t("v2", { void: true, pendingId: "h3", amount: "0" })]], now);
      const sent: string[][] = [];
      let lateDown = 1; // the first late call fails (a blip): the row is retried, the post is refused again, the late transfer sent again
      const ledger: LedgerPort = {
        async createAccounts() {},
        async createTransfers(_tenant, transfers) {
          if (transfers.some((x) => x.id === "p2:late") && lateDown-- > 0) throw new Error("ledger unreachable");
          sent.push(transfers.map((x) => x.id));
          return transfers.map((x) => (x.id === "p2" ? "PENDING_TRANSFER_EXPIRED" : x.id === "v2" ? "PENDING_TRANSFER_EXPIRED" : "OK"));
        },
      };
      const outbox = createLedgerOutbox({ db, ledger, logger: silentLogger, clock: fixedClock(now) });
      await outbox.flush();
      expect((await S.countOutbox(db)).unposted).toBe(1);
      await outbox.flush();
      expect(sent).toEqual([["p2", "v2"], ["p2", "v2"], ["p2:late"]]);
      expect(await S.countOutbox(db)).toEqual({ unposted: 0, failed: 0 });
      expect(outbox.failures).toBe(0);
    });

    it("still records a post refused as PENDING_TRANSFER_EXPIRED as failed when it carries no late transfer (rows written before)", async () => {
      const now = new Date("2026-11-20T10:00:00Z");
      await S.enqueueTransfers(db, "tnt_old", [[t("p9", { post: true, pendingId: "h9", amount: "7" })]], now);
      const ledger: LedgerPort = { async createAccounts() {}, async createTransfers(_t, ts) { return ts.map(() => "PENDING_TRANSFER_EXPIRED"); } };
      const outbox = createLedgerOutbox({ db, ledger, logger: silentLogger, clock: fixedClock(now) });
      await outbox.flush();
      expect(outbox.failures).toBe(1);
    });
  });
}
