import { randomBytes } from "node:crypto";
import { connect, type ClientHttp2Session } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { create, fromJson, toBinary, type DescField, type DescMessage, type DescService, type JsonValue, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { TimestampSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { silentLogger } from "@nanobill/service-kit";
import { IngestStatus, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { RatingService } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { CreditWalletService } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { startPlatform, type Platform, type PlatformClients, type ServiceName } from "../../libs/platform/src/platform.js";
import { seedDemo } from "../../libs/platform/src/demo.js";
import { auditWhenSettled, formatFindings } from "../../libs/platform/src/auditor.js";
import { e2eBackends } from "../e2e/support.js";
import { jsonReadsOf, post, type RawAnswer } from "./json-reads.js";

/**
 * Random and malformed requests (raw Connect JSON over HTTP/2) to every unary RPC of every service,
 * sent with a second tenant's admin key and salted with the first tenant's ids: no `internal` /
 * `unknown`, no crash, no first-tenant id in a successful answer unless the request carried it,
 * and the first tenant's books unchanged. A second pass sends the binary protocol with every
 * Timestamp set to values JSON cannot carry (years 0 and 10000, 2^62 seconds, nanos out of range).
 */
const RUNS_PER_RPC = Number(process.env.NANOBILL_FUZZ_RUNS ?? 30);
const FC_SEED = process.env.NANOBILL_SEED ? Number(process.env.NANOBILL_SEED) : undefined;
const backend = e2eBackends()[0]!; // PGlite: the fuzzer exercises validation and tenancy, not the database
const SERVICES: Array<[ServiceName, DescService]> = [
  ["metering", MeteringService],
  ["rating", RatingService],
  ["ledger", LedgerService],
  ["credit-wallet", CreditWalletService],
  ["invoicing", InvoicingService],
];
const FORBIDDEN_CODES = new Set(["internal", "unknown", "data_loss"]);
const HUGE = "x".repeat(300_000);
const OVERSIZE_LIST = Array.from({ length: 12_000 }, (_, i) => ({ id: `evt_over_${i}` }));

type Answer = RawAnswer;

function codeOf(a: Answer): string | undefined {
  if (a.status === 200) return undefined;
  try {
    return (JSON.parse(a.body) as { code?: string }).code ?? `http_${a.status}`;
  } catch {
    return `http_${a.status}`;
  }
}

describe(`fuzzing every RPC on ${backend.name}`, () => {
  let platform: Platform;
  const keyA = `nbk_fza_${randomBytes(16).toString("hex")}`;
  const keyB = `nbk_fzb_${randomBytes(16).toString("hex")}`;
  /** A third tenant, never fuzzed: the targeted cross-tenant reads (B may legitimately own objects under A's ids). */
  const keyC = `nbk_fzc_${randomBytes(16).toString("hex")}`;
  /** A fourth tenant with its own demo customer: the binary pass writes odd times into its objects, then reads them back as JSON. */
  const keyD = `nbk_fzd_${randomBytes(16).toString("hex")}`;
  const idsD: string[] = [];
  /** First-tenant ids that B sent in a request that succeeded: B may now own an object with that id. */
  const claimedByB = new Set<string>();
  let a: PlatformClients;
  let b: PlatformClients;
  let cc: PlatformClients;
  const sessions = new Map<ServiceName, ClientHttp2Session>();
  /**
   * The raw session to a service, opened again when the server has closed it: servers close a
   * connection idle for 60 s (limits.idleConnectionMs), and on a loaded box a service's session can
   * sit that long while the other services are fuzzed.
   */
  const session = (name: ServiceName): ClientHttp2Session => {
    const s = sessions.get(name);
    if (s !== undefined && !s.closed && !s.destroyed) return s;
    const fresh = connect(platform.urls[name]);
    sessions.set(name, fresh);
    return fresh;
  };
  /** First-tenant ids a second tenant must never be shown. */
  const idsA: string[] = [];
  let snapshotA = "";
  const run = randomBytes(3).toString("hex");

  const snapshot = async (): Promise<string> => {
    const [cust] = [`cus_fza_${run}`];
    const bal = await a.wallet.getBalance({ walletId: `wal_${cust}_usd` });
    const v = await a.ledger.verify({});
    const usage = await a.rating.listRatedUsage({ customerId: cust, from: timestampFromDate(new Date(Date.now() - 40 * 86_400_000)), to: timestampFromDate(new Date(Date.now() + 86_400_000)) });
    const inv = await a.invoicing.listInvoices({ customerId: cust });
    return JSON.stringify(
      { bal: [bal.balanceNanos, bal.heldNanos, bal.grants.length], units: v.units, accts: v.accountsChecked, xfers: v.transfersChecked, usage: usage.totals, inv: inv.invoices?.length },
      (_k, x) => (typeof x === "bigint" ? x.toString() : x),
    );
  };

  beforeAll(async () => {
    platform = await startPlatform({
      ...backend.options(),
      apiKeys: [
        { tenant: "tnt_fuzz_a", scopes: ["admin"], key: keyA },
        { tenant: "tnt_fuzz_b", scopes: ["admin"], key: keyB },
        { tenant: "tnt_fuzz_c", scopes: ["admin"], key: keyC },
        { tenant: "tnt_fuzz_d", scopes: ["admin"], key: keyD },
      ],
      logger: silentLogger,
      consumerWaitMs: 100,
    });
    a = platform.clients(keyA);
    b = platform.clients(keyB);
    cc = platform.clients(keyC);
    const cust = `cus_fza_${run}`;
    const demo = await seedDemo(a, { customerId: cust, now: new Date() });
    const events = Array.from({ length: 3 }, (_, i) => ({
      id: `evt_fza_${run}_${i}`,
      customerId: cust,
      type: "llm.call",
      properties: {
        model: { kind: { case: "stringValue" as const, value: "gpt-x" } },
        provider: { kind: { case: "stringValue" as const, value: "openai" } },
        input_tokens: { kind: { case: "intValue" as const, value: 1000n } },
        output_tokens: { kind: { case: "intValue" as const, value: 100n } },
      },
    }));
    const res = await a.metering.ingestEvents({ events });
    expect(res.results.every((r) => r.status === IngestStatus.ACCEPTED)).toBe(true);
    const hold = await a.wallet.authorize({ id: `hold_fza_${run}`, customerId: cust, unit: "USD", amountNanos: 1_000n, ttlMs: 600_000n });
    const findings = await auditWhenSettled(
      [{ tenant: "tnt_fuzz_a", clients: a, customers: [{ customerId: cust, walletIds: [demo.walletId], acceptedEventIds: events.map((e) => e.id) }] }],
      { timeoutMs: 20_000 },
    );
    expect(findings, formatFindings(findings)).toEqual([]);
    const bal = await a.wallet.getBalance({ walletId: demo.walletId });
    idsA.push(cust, demo.walletId, demo.subscriptionId, bal.wallet!.ledgerAccountId, hold.hold!.id, ...events.map((e) => e.id));
    for (const g of bal.grants) idsA.push(g.grantId);
    const custD = `cus_fzd_${run}`;
    const demoD = await seedDemo(platform.clients(keyD), { customerId: custD, now: new Date() });
    idsD.push(custD, demoD.walletId, demoD.subscriptionId, "llm_tokens", "gpt-x");
    for (const [name] of SERVICES) sessions.set(name, connect(platform.urls[name]));
    snapshotA = await snapshot();
  }, 90_000);

  afterAll(async () => {
    for (const s of sessions.values()) s.close();
    await platform?.close();
    await backend.cleanup();
  }, 30_000);

  /** Values for one field: plausible, adversarial (other tenant's ids, huge, overflowing) and wrongly typed. */
  const junk = (): fc.Arbitrary<unknown> =>
    fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
      fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
      fc.constantFrom("-1", "9223372036854775808", "-9223372036854775809", "1e400", "NaN", "Infinity", "0x10", ""),
    );
  const fieldArb = (f: DescField, depth: number, ids: string[]): fc.Arbitrary<unknown> => {
    const crossId = fc.constantFrom(...ids);
    const single = (): fc.Arbitrary<unknown> => {
      if (f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar") || (f.fieldKind === "map" && f.mapKind === "scalar")) {
        const s = f.scalar;
        if (s === 9 /* string */) return fc.oneof(fc.string({ maxLength: 40 }), crossId, crossId, fc.constant(HUGE.slice(0, 5_000)), fc.constant("USD"), fc.constant(""));
        if (s === 8 /* bool */) return fc.boolean();
        if (s === 1 || s === 2 /* double, float */) return fc.oneof(fc.double(), fc.constantFrom("NaN", "Infinity"));
        if (s === 12 /* bytes */) return fc.base64String({ maxLength: 40 });
        return fc.oneof(
          fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
          fc.integer({ min: -1_000, max: 1_000_000 }),
          fc.constantFrom("9223372036854775807", "-9223372036854775808", "18446744073709551615", "-1", "0", "1000000000000000001"),
        );
      }
      if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum") || (f.fieldKind === "map" && f.mapKind === "enum")) {
        const names = f.enum!.values.map((v) => v.name);
        return fc.oneof(fc.constantFrom(...names), fc.integer({ min: -3, max: 40 }));
      }
      const m = f.message!;
      if (m.typeName === "google.protobuf.Timestamp") {
        const max = new Date(250_000_000_000_000);
        return fc.oneof(
          fc.date({ noInvalidDate: true, min: new Date(-62_000_000_000_000), max }).map((d) => d.toISOString()),
          fc.constantFrom("1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "not a time"),
        );
      }
      if (m.typeName.startsWith("google.protobuf.")) return fc.oneof(fc.constant({}), fc.string({ maxLength: 10 }), fc.integer());
      return depth >= 2 ? fc.constant({}) : messageArb(m, depth + 1, ids);
    };
    const valid = (): fc.Arbitrary<unknown> => {
      if (f.fieldKind === "list") {
        return fc.oneof({ weight: 12, arbitrary: fc.array(single(), { maxLength: 4 }) }, { weight: 1, arbitrary: fc.constant(OVERSIZE_LIST) });
      }
      if (f.fieldKind === "map") return fc.dictionary(fc.oneof(fc.string({ maxLength: 10 }), crossId), single(), { maxKeys: 3 });
      return single();
    };
    return fc.oneof({ weight: 6, arbitrary: valid() }, { weight: 1, arbitrary: junk() }, { weight: 1, arbitrary: fc.constant(HUGE) });
  };
  /** A random message; its string fields are often one of `ids` (another tenant's, or the fuzzing tenant's own). */
  const messageArb = (m: DescMessage, depth: number, ids: string[] = idsA): fc.Arbitrary<Record<string, unknown>> => {
    const fields = m.fields;
    if (fields.length === 0) return fc.constant({});
    const rec: Record<string, fc.Arbitrary<unknown>> = {};
    for (const f of fields) rec[f.jsonName] = fieldArb(f, depth, ids);
    return fc.record(rec, { requiredKeys: [] });
  };
  const bodyArb = (m: DescMessage): fc.Arbitrary<string | Buffer> =>
    fc.oneof(
      { weight: 10, arbitrary: messageArb(m, 0).map((o) => JSON.stringify(o)) },
      { weight: 1, arbitrary: fc.constantFrom("{", "[]", "null", "\"x\"", "{\"a\":" + "[".repeat(5_000), "", "{}{}") },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((u) => Buffer.from(u)) },
      { weight: 1, arbitrary: fc.json({ maxDepth: 3 }) },
    );

  /** Timestamps only the binary protocol can carry: outside years 1..9999, nanos outside 0..999,999,999. */
  const ODD_TIMES: Array<[bigint, number]> = [
    [253_402_300_800n, 0], // 10000-01-01
    [-62_135_596_801n, 0], // year 0
    [2n ** 62n, 0],
    [-(2n ** 62n), 0],
    [0n, -1],
    [0n, 1_000_000_000],
    [-1n, 2_147_483_647],
    [253_402_300_799n, 999_999_999], // the last valid instant
  ];
  /** setTimes: every Timestamp field of `msg` (nested, in lists and oneofs) set to the next of `times`. */
  const setTimes = (desc: DescMessage, msg: Record<string, unknown>, times: Array<[bigint, number]>, depth = 0): void => {
    if (depth > 3) return;
    const next = (): Message => {
      const [seconds, nanos] = times[0]!;
      times.push(times.shift()!);
      return create(TimestampSchema, { seconds, nanos });
    };
    for (const f of desc.fields) {
      if (f.message === undefined) continue;
      const holder = f.oneof ? (msg[f.oneof.localName] as { case?: string; value?: unknown }) : undefined;
      if (f.oneof && holder?.case !== f.localName) continue;
      const get = () => (f.oneof ? holder!.value : msg[f.localName]);
      const put = (v: unknown) => (f.oneof ? (holder!.value = v) : (msg[f.localName] = v));
      if (f.fieldKind === "message") {
        if (f.message.typeName === TimestampSchema.typeName) put(next());
        else if (get() !== undefined) setTimes(f.message, get() as Record<string, unknown>, times, depth + 1);
      } else if (f.fieldKind === "list" && f.listKind === "message") {
        const l = get() as unknown[];
        for (let i = 0; i < l.length; i++) {
          if (f.message.typeName === TimestampSchema.typeName) l[i] = next();
          else setTimes(f.message, l[i] as Record<string, unknown>, times, depth + 1);
        }
      }
    }
  };
  /** A binary request: a random message (as the JSON pass makes them) with odd Timestamps. */
  const binaryArb = (m: DescMessage): fc.Arbitrary<Buffer> =>
    fc.tuple(messageArb(m, 0, idsD), fc.shuffledSubarray(ODD_TIMES, { minLength: 1 })).map(([obj, times]) => {
      let msg: Message;
      try {
        msg = fromJson(m, obj as JsonValue, { ignoreUnknownFields: true });
      } catch {
        msg = create(m);
      }
      setTimes(m, msg as unknown as Record<string, unknown>, times);
      return Buffer.from(toBinary(m, msg));
    });

  /** One Connect streaming envelope (flags 0) around `data`. */
  const envelope = (data: Buffer): Buffer => {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(data.length, 1);
    return Buffer.concat([head, data]);
  };
  /** The error code of a Connect streaming answer: its end-of-stream envelope (flags 2), or the HTTP status. */
  const streamCodeOf = (a: Answer): string | undefined => {
    if (a.status !== 200) return codeOf(a);
    let at = 0;
    while (at + 5 <= a.raw.length) {
      const flags = a.raw[at]!;
      const len = a.raw.readUInt32BE(at + 1);
      const body = a.raw.subarray(at + 5, at + 5 + len).toString("utf8");
      at += 5 + len;
      if (flags & 2) return (JSON.parse(body) as { error?: { code?: string } }).error?.code;
    }
    return "no_end_of_stream";
  };
  const streamBodyArb = (m: DescMessage): fc.Arbitrary<Buffer> =>
    fc
      .array(
        fc.oneof(
          { weight: 8, arbitrary: messageArb(m, 0).map((o) => envelope(Buffer.from(JSON.stringify(o)))) },
          { weight: 1, arbitrary: fc.constantFrom("{", "[]", "null", "").map((t) => envelope(Buffer.from(t))) },
          { weight: 1, arbitrary: fc.uint8Array({ maxLength: 12 }).map((u) => Buffer.from(u)) }, // a torn or bogus envelope
        ),
        { maxLength: 4 },
      )
      .map((parts) => Buffer.concat(parts));

  for (const [name, service] of SERVICES) {
    for (const method of service.methods) {
      if (method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming") {
        it(`${service.typeName}/${method.name} (stream) never answers internal, never shows another tenant's ids`, async () => {
          const path = `/${service.typeName}/${method.name}`;
          await fc.assert(
            fc.asyncProperty(streamBodyArb(method.input), async (body) => {
              const ans = await post(session(name), path, keyB, body, "application/connect+json");
              // A bogus envelope with the compressed flag and no negotiated compression is
              // InvalidArgument naming connect-content-encoding (it was Internal, exempted here:
              // found by seed 398880288).
              const code = streamCodeOf(ans) ?? "ok";
              expect(FORBIDDEN_CODES.has(code) || code === "no_end_of_stream", `${path} answered ${code}: ${ans.body.slice(0, 300)}`).toBe(false);
              const sent = body.toString("utf8");
              for (const id of idsA) if (sent.includes(id)) claimedByB.add(id);
              for (const id of idsA) if (!claimedByB.has(id)) expect(ans.body.includes(id), `${path} showed tenant A's ${id} to tenant B`).toBe(false);
            }),
            { numRuns: RUNS_PER_RPC, seed: FC_SEED, endOnFailure: true },
          );
        }, 120_000);
      }
      if (method.methodKind !== "unary") continue;
      it(`${service.typeName}/${method.name} answers out-of-range times in binary requests without internal, and JSON reads of what they wrote too`, async () => {
        const path = `/${service.typeName}/${method.name}`;
        await fc.assert(
          fc.asyncProperty(binaryArb(method.input), async (body) => {
            const ans = await post(session(name), path, keyD, body, "application/proto");
            const code = codeOf(ans) ?? "ok";
            expect(FORBIDDEN_CODES.has(code), `${path} (binary ${body.toString("base64")}) answered ${code}: ${ans.body.slice(0, 300)}`).toBe(false);
            for (const id of idsA) expect(ans.raw.includes(id), `${path} showed tenant A's ${id} to tenant D`).toBe(false);
          }),
          { numRuns: RUNS_PER_RPC, seed: FC_SEED, endOnFailure: true },
        );
        // What the binary calls wrote must still read as JSON (a Timestamp past 9999 cannot).
        const [cust, wallet] = idsD as [string, string];
        const reads: Array<[ServiceName, string, unknown]> = [...jsonReadsOf(cust, wallet), ["rating", "/nanobill.rating.v1.RatingService/GetCustomer", { customerId: cust }]];
        for (const [svc, readPath, req] of reads) {
          if (!SERVICES.some(([n, d]) => n === svc && d.methods.some((m) => readPath.endsWith(`/${m.name}`)))) throw new Error(`no such read: ${readPath}`);
          const ans = await post(session(svc), readPath, keyD, JSON.stringify(req));
          const code = codeOf(ans) ?? "ok";
          expect(FORBIDDEN_CODES.has(code), `${readPath} after binary ${path} answered ${code}: ${ans.body.slice(0, 300)}`).toBe(false);
        }
      }, 120_000);
      it(`${service.typeName}/${method.name} never answers internal, never shows another tenant's ids`, async () => {
        const path = `/${service.typeName}/${method.name}`;
        const seen = new Map<string, number>();
        await fc.assert(
          fc.asyncProperty(bodyArb(method.input), async (body) => {
            const ans = await post(session(name), path, keyB, body);
            const code = codeOf(ans) ?? "ok";
            seen.set(code, (seen.get(code) ?? 0) + 1);
            expect(FORBIDDEN_CODES.has(code), `${path} answered ${code}: ${ans.body.slice(0, 300)}`).toBe(false);
            expect(ans.status, `${path} HTTP status`).toBeLessThan(500 + (code === "unavailable" || code === "deadline_exceeded" ? 100 : 0));
            if (code === "ok") {
              const sent = typeof body === "string" ? body : body.toString("utf8");
              for (const id of idsA) if (sent.includes(id)) claimedByB.add(id);
              for (const id of idsA) {
                if (!claimedByB.has(id)) expect(ans.body.includes(id), `${path} showed tenant A's ${id} to tenant B: ${ans.body.slice(0, 300)}`).toBe(false);
              }
            }
          }),
          { numRuns: RUNS_PER_RPC, seed: FC_SEED, endOnFailure: true },
        );
        expect([...seen.values()].reduce((x, y) => x + y, 0)).toBe(RUNS_PER_RPC);
      }, 120_000);
    }
  }

  it("refuses tenant A's objects to another tenant by id, and A's books are unchanged by everything B sent", async () => {
    const notFound = async (p: Promise<unknown>, what: string): Promise<void> => {
      const r = await p.then(
        (v) => ({ ok: true as const, v }),
        (e: unknown) => ({ ok: false as const, code: ConnectError.from(e).code }),
      );
      if (r.ok) throw new Error(`tenant C read tenant A's ${what}: ${JSON.stringify(r.v, (_k, x) => (typeof x === "bigint" ? x.toString() : x)).slice(0, 300)}`);
      expect([Code.NotFound, Code.InvalidArgument, Code.PermissionDenied], what).toContain(r.code);
    };
    const cust = idsA[0]!;
    await notFound(cc.rating.getCustomer({ customerId: cust }), "customer");
    await notFound(cc.wallet.getBalance({ walletId: idsA[1]! }), "wallet");
    await notFound(cc.rating.getRatedEvent({ eventId: idsA[5]! }), "rated event");
    await notFound(cc.invoicing.previewInvoice({ customerId: cust }), "invoice preview");
    const accts = await cc.ledger.lookupAccounts({ ids: [idsA[3]!] }).catch(() => ({ accounts: [] }));
    expect(accts.accounts, "tenant C looked up tenant A's ledger account").toEqual([]);
    const subs = await cc.rating.listSubscriptions({ customerId: cust }).catch(() => ({ subscriptions: [] }));
    expect(subs.subscriptions, "tenant C listed tenant A's subscriptions").toEqual([]);
    const custs = await cc.rating.listCustomers({});
    expect(custs.customers.map((x) => x.customerId)).not.toContain(cust);
    expect(await snapshot()).toBe(snapshotA);
    expect((await a.ledger.verify({})).ok).toBe(true);
    expect((await b.ledger.verify({})).ok).toBe(true);
  }, 60_000);
});
