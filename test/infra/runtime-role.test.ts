/**
 * The DML-only runtime role of docs/deployment.md ("The servers do not migrate"), on PostgreSQL:
 * with exactly infra/migrate.ts runtimeRoleGrants, every service's schema is usable (every table
 * and sequence, and objects of a later migration), prepareSchema passes without DDL, and
 * metering's ingest (which reserves sequences with setval) and a ledger commit (locks, COPY-free
 * pipeline, FOR UPDATE) run as that role. Found by review: a recipe with USAGE only on sequences
 * refused every ingest.
 */
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { migrate, openDb, prepareSchema, type Db } from "@nanobill/db";
import { MIGRATE_SERVICES, migrationsDirOf, runtimeRoleGrants } from "../../infra/migrate.js";
import { createMeteringStore } from "../../apps/metering/src/store/store.js";
import { createPgLedgerStore } from "../../apps/ledger/src/store/pg-store.js";
import { newAccount, newTransfer } from "../../apps/ledger/src/domain/test-helpers.js";

const URL_ = process.env.DATABASE_URL;
const tag = `${process.pid}_${randomBytes(3).toString("hex")}`;
const role = `nb_rt_${tag}`;

describe.runIf(URL_)("the runtime role of runtimeRoleGrants (PostgreSQL)", () => {
  const admins = new Map<(typeof MIGRATE_SERVICES)[number], Db>();
  const opened: Db[] = [];
  const asRole = async (schema: string): Promise<Db> => {
    const u = new URL(URL_!);
    u.username = role;
    u.password = "";
    const db = await openDb({ url: u.toString(), schema, poolMax: 2 });
    opened.push(db);
    return db;
  };

  afterAll(async () => {
    for (const db of opened) await db.close().catch(() => {});
    const any = [...admins.values()][0];
    for (const [, db] of admins) {
      await db.query(`DROP SCHEMA "${db.schema}" CASCADE`).catch(() => {});
    }
    if (any) {
      await any.query(`DROP OWNED BY ${role}`).catch(() => {});
      await any.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    }
    for (const [, db] of admins) await db.close();
  });

  it("can use every table and sequence of every service, and what a later migration adds, without DDL", async () => {
    for (const s of MIGRATE_SERVICES) {
      const admin = await openDb({ url: URL_!, schema: `nb_rt_${tag}_${s.replace(/-/g, "_")}`, poolMax: 2 });
      admins.set(s, admin);
      await migrate(admin, await migrationsDirOf(s));
    }
    await [...admins.values()][0]!.query(`CREATE ROLE ${role} LOGIN`);
    for (const [s, admin] of admins) {
      for (const sql of runtimeRoleGrants(admin.schema, role)) await admin.query(sql);
      const db = await asRole(admin.schema);
      expect(await prepareSchema(db, await migrationsDirOf(s), false), s).toEqual({ applied: [] });
      const missing = await admin.query<{ what: string }>(
        `SELECT 'table ' || c.relname AS what FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT has_table_privilege($2, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
         UNION ALL
         SELECT 'sequence ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'S' AND NOT (has_sequence_privilege($2, c.oid, 'USAGE') AND has_sequence_privilege($2, c.oid, 'UPDATE'))`,
        [admin.schema, role],
      );
      expect(missing.rows, s).toEqual([]);
      await expect(db.query("CREATE TABLE not_mine (x int)"), s).rejects.toThrow(/permission denied/);
    }
    // A later migration's objects (the default privileges).
    const later = admins.get("ledger")!;
    await later.query("CREATE TABLE later_table (id BIGSERIAL PRIMARY KEY, x int)");
    await (await asRole(later.schema)).query("INSERT INTO later_table (x) VALUES (1)");
  });

  it("runs metering's ingest (setval on the events sequence) and a ledger commit as that role", async () => {
    const metering = createMeteringStore(await asRole(admins.get("metering")!.schema));
    const nowUs = 1_790_000_000_000_000n;
    const ev = (id: string) => ({ id, customerId: "c1", type: "llm", timestampUs: nowUs, properties: {}, traceparent: "", tracestate: "", propertiesJson: "{}", contentHash: `h_${id}` });
    const out = await metering.ingest([{ tenant: "t1", event: ev("e1") as never }, { tenant: "t1", event: ev("e2") as never }], nowUs);
    expect(out.map((o) => (o as { status?: string }).status ?? o)).toEqual(["accepted", "accepted"]);

    const ledger = createPgLedgerStore({ db: await asRole(admins.get("ledger")!.schema), nowUs: () => nowUs });
    try {
      expect((await ledger.createAccounts("t1", [newAccount("a1"), newAccount("a2")])).map((x) => x.result)).toEqual(["ok", "ok"]);
      const r = await ledger.createTransfers("t1", [newTransfer("x1", { debitAccountId: "a1", creditAccountId: "a2", amountNanos: 5n })]);
      expect(r.map((x) => x.result)).toEqual(["ok"]);
    } finally {
      await ledger.close();
    }
  });
});
