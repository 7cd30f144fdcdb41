import { randomBytes } from "node:crypto";
import { connect, type ClientHttp2Session } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { silentLogger } from "@nanobill/service-kit";
import { GrantKind } from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { startPlatform, type Platform, type PlatformClients, type ServiceName } from "../../libs/platform/src/platform.js";
import { seedDemo, type DemoCustomer } from "../../libs/platform/src/demo.js";
import { e2eBackends } from "../e2e/support.js";
import { jsonReadsOf, post } from "./json-reads.js";

/**
 * Every write that takes a time, sent (binary, as the services' own clients speak) at the edges of
 * what a request may name: no write answers Internal, and afterwards every JSON read of what they
 * wrote still answers (a derived time past year 9999, e.g. an expiry plus its grace or a period's
 * end, cannot be written as JSON: the reads would answer Internal). Found this way on 2026-11-29:
 * a grant expiring at the end of 9999 made every JSON read of its wallet fail.
 */
const backend = e2eBackends()[0]!; // PGlite: validation and encoding, not the database
const EDGES: Array<[string, Timestamp]> = [
  ["last instant", { seconds: 253_402_300_799n, nanos: 999_999_999 } as Timestamp],
  ["last day", { seconds: 253_402_214_400n, nanos: 0 } as Timestamp], // 9999-12-31T00:00:00Z
  ["epoch", { seconds: 0n, nanos: 0 } as Timestamp],
  ["year 1", { seconds: -62_135_596_800n, nanos: 0 } as Timestamp],
];
const FORBIDDEN = new Set(["internal", "unknown", "data_loss"]);

describe(`times at the edges on ${backend.name}`, () => {
  let platform: Platform;
  let c: PlatformClients;
  let demo: DemoCustomer;
  const key = `nbk_edge_${randomBytes(16).toString("hex")}`;
  const run = randomBytes(3).toString("hex");
  const sessions = new Map<ServiceName, ClientHttp2Session>();
  const outcomes: string[] = [];

  /** A write's outcome: "ok" or its error code; Internal-like codes fail the test with the call named. */
  const attempt = async (what: string, p: Promise<unknown>): Promise<void> => {
    const code = await p.then(
      () => "ok",
      (e: unknown) => ConnectError.from(e).code.toString(),
    );
    const err = await p.then(
      () => "",
      (e: unknown) => ConnectError.from(e).rawMessage,
    );
    outcomes.push(`${what}: ${code}`);
    expect(["13", "2", "15"].includes(code), `${what} answered code ${code}: ${err}`).toBe(false);
  };

  beforeAll(async () => {
    platform = await startPlatform({ ...backend.options(), apiKeys: [{ tenant: "tnt_edges", scopes: ["admin"], key }], logger: silentLogger, consumerWaitMs: 100 });
    c = platform.clients(key);
    demo = await seedDemo(c, { customerId: `cus_edge_${run}`, now: new Date() });
    for (const name of ["metering", "rating", "ledger", "credit-wallet", "invoicing"] as ServiceName[]) sessions.set(name, connect(platform.urls[name]));
  }, 90_000);

  afterAll(async () => {
    for (const s of sessions.values()) s.close();
    await platform?.close();
    await backend.cleanup();
  }, 30_000);

  it("answers every write at the edge times without Internal, and every JSON read of what they wrote", async () => {
    const cust = demo.customerId;
    for (const [name, t] of EDGES) {
      const tag = `${name.replace(/ /g, "_")}_${run}`;
      // rating
      await attempt(`rating.createCustomer anchor ${name}`, c.rating.createCustomer({ customer: { customerId: `cus_${tag}`, currency: "USD", timeZone: "Pacific/Kiritimati", billingAnchor: t } }));
      await attempt(`rating.createSubscription start ${name}`, c.rating.createSubscription({ subscriptionId: `sub_${tag}`, customerId: `cus_${tag}`, planId: "plan_llm", planVersion: 1, startTime: t }));
      await attempt(`rating.updateSeats ${name}`, c.rating.updateSeats({ subscriptionId: demo.subscriptionId, change: { changeId: `chg_${tag}`, seats: 2, effectiveTime: t } }));
      await attempt(`rating.setPriceOverride ${name}`, c.rating.setPriceOverride({ priceOverride: { overrideId: `ovr_${tag}`, customerId: cust, chargeId: "llm_tokens", charge: { pricing: { case: "perUnit", value: { unitPrice: { amount: "0.000001" } } } }, startTime: t } }));
      await attempt(`rating.upsertCostRates ${name}`, c.rating.upsertCostRates({ rates: [{ provider: "openai", model: "gpt-x", metric: "input_tokens", unitPrice: { amount: "1", perQuantity: 1_000_000n }, currency: "USD", effectiveTime: t }] }));
      // wallet
      await attempt(`wallet.grant expires ${name}`, c.wallet.grant({ id: `grant_exp_${tag}`, walletId: demo.walletId, kind: GrantKind.PURCHASED, amountNanos: 1_000n, expiresAt: t }));
      await attempt(`wallet.grant expires ${name} with grace`, c.wallet.grant({ id: `grant_grace_${tag}`, walletId: demo.walletId, kind: GrantKind.PROMOTIONAL, amountNanos: 1_000n, expiresAt: t, expiryGraceMs: 86_400_000n }));
      await attempt(`wallet.grant effective ${name}`, c.wallet.grant({ id: `grant_eff_${tag}`, walletId: demo.walletId, kind: GrantKind.PURCHASED, amountNanos: 1_000n, effectiveAt: t }));
      await attempt(`wallet.grant period end ${name}`, c.wallet.grant({ id: `grant_pe_${tag}`, walletId: demo.walletId, kind: GrantKind.PROMOTIONAL, amountNanos: 1_000n, periodEnd: t, expiresAt: t }));
      await attempt(`wallet.consume occurred ${name}`, c.wallet.consume({ items: [{ id: `use_${tag}`, customerId: cust, unit: "USD", amountNanos: 1n, occurredAt: t }] }));
      await attempt(`wallet.runExpiry ${name}`, c.wallet.runExpiry({ walletId: demo.walletId, asOf: t }));
      await attempt(`wallet.runRollover ${name}`, c.wallet.runRollover({ walletId: demo.walletId, asOf: t }));
      // metering
      await attempt(`metering.ingestEvents ${name}`, c.metering.ingestEvents({ events: [{ id: `evt_${tag}`, customerId: cust, type: "llm.call", timestamp: t, properties: {} }] }));
      // invoicing
      await attempt(`invoicing.setBillingSettings deferral ${name}`, c.invoicing.setBillingSettings({ settings: { customerId: cust, deferralUntil: t } }));
      await attempt(`invoicing.closePeriod ${name}`, c.invoicing.closePeriod({ items: [{ customerId: cust, subscriptionId: demo.subscriptionId, periodStart: t }] }));
      await attempt(`invoicing.previewInvoice ${name}`, c.invoicing.previewInvoice({ customerId: cust, at: t }));
      await attempt(`rating.ratePeriod ${name}`, c.rating.ratePeriod({ customerId: cust, at: t }));
    }
    const reads: Array<[ServiceName, string, unknown]> = [
      ...jsonReadsOf(cust, demo.walletId),
      ["credit-wallet", "/nanobill.wallet.v1.CreditWalletService/ListConsumption", { customerId: cust }],
      ["rating", "/nanobill.rating.v1.RatingService/ListCustomers", {}],
    ];
    for (const [name] of EDGES) {
      const tag = `${name.replace(/ /g, "_")}_${run}`;
      reads.push(["rating", "/nanobill.rating.v1.RatingService/GetCustomer", { customerId: `cus_${tag}` }]);
      reads.push(["rating", "/nanobill.rating.v1.RatingService/ListSubscriptions", { customerId: `cus_${tag}` }]);
    }
    for (const [svc, path, req] of reads) {
      const ans = await post(sessions.get(svc)!, path, key, JSON.stringify(req));
      const code = ans.status === 200 ? "ok" : ((JSON.parse(ans.body) as { code?: string }).code ?? `http_${ans.status}`);
      expect(FORBIDDEN.has(code), `${path} ${JSON.stringify(req)} answered ${code} after the edge writes: ${ans.body.slice(0, 300)}\n${outcomes.join("\n")}`).toBe(false);
    }
  }, 120_000);
});
