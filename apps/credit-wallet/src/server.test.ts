import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { closeClientSessions, createApiKeyAuthenticator, createClientTransport, silentLogger, startServer, type StartedServer } from "@nanobill/service-kit";
import { WALLET_SERVER_LIMITS } from "./index.js";
import { REQUEST_BYTES_MAX } from "./limits.js";
import { openWalletHarness, walletBackends, type WalletHarness } from "./test-support.js";

const KEY = "sk_test_wallet_server_0001";

describe("credit wallet over a real h2c server (gRPC)", () => {
  let h: WalletHarness;
  let server: StartedServer;
  beforeAll(async () => {
    h = await openWalletHarness(walletBackends()[0]!);
    server = await startServer({
      name: "credit-wallet-test",
      host: "127.0.0.1",
      port: 0,
      routes: (r) => h.wallet.routes(r),
      authenticator: createApiKeyAuthenticator([{ tenant: "tnt_srv", scopes: ["admin"], key: KEY }]),
      logger: silentLogger,
      limits: WALLET_SERVER_LIMITS,
    });
  });
  afterAll(async () => {
    closeClientSessions();
    await server?.close();
    await h?.close();
  });

  it("creates, funds and holds over gRPC, and refuses a request above the byte limit and a missing key", async () => {
    const c = createClient(pb.CreditWalletService, createClientTransport({ baseUrl: server.url, apiKey: KEY, protocol: "grpc" }));
    const w = (await c.createWallet({ customerId: "cus_srv", unit: "EUR" })).wallet!;
    await c.grant({ id: "grt_srv", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 1_000n });
    const hold = await c.authorize({ id: "hld_srv", customerId: "cus_srv", unit: "EUR", amountNanos: 400n });
    expect([hold.hold!.state, hold.availableNanos]).toEqual([pb.HoldState.PENDING, 600n]);
    const big = await c.authorize({ id: "hld_big", customerId: "cus_srv", unit: "EUR", amountNanos: 1n, model: "m".repeat(REQUEST_BYTES_MAX + 1) }).catch((e: unknown) => ConnectError.from(e));
    expect((big as ConnectError).code).toBe(Code.ResourceExhausted);
    const anon = createClient(pb.CreditWalletService, createClientTransport({ baseUrl: server.url, apiKey: "sk_wrong_key_000000000000", protocol: "grpc" }));
    const e = await anon.getBalance({ walletId: w.id }).catch((x: unknown) => ConnectError.from(x));
    expect((e as ConnectError).code).toBe(Code.Unauthenticated);
  });

  it("runs an AuthorizeStream over gRPC h2c: 200 messages pipelined on one stream, answered in order, exactly what the wallet covers", async () => {
    const c = createClient(pb.CreditWalletService, createClientTransport({ baseUrl: server.url, apiKey: KEY, protocol: "grpc" }));
    const w = (await c.createWallet({ customerId: "cus_srv_st", unit: "EUR" })).wallet!;
    await c.grant({ id: "grt_srv_st", walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos: 150n });
    async function* requests() {
      for (let i = 0; i < 200; i++) yield { item: { id: `hld_srv_st_${i}`, customerId: "cus_srv_st", unit: "EUR", amountNanos: 1n } };
    }
    const out: pb.AuthorizeStreamResponse[] = [];
    for await (const r of c.authorizeStream(requests(), { timeoutMs: 30_000 })) out.push(r);
    expect(out.map((r) => r.sequence)).toEqual(Array.from({ length: 200 }, (_, i) => BigInt(i + 1)));
    expect(out.map((r) => r.result!.id)).toEqual(Array.from({ length: 200 }, (_, i) => `hld_srv_st_${i}`));
    expect(out.filter((r) => r.result!.result === pb.AuthorizeResult.OK).length).toBe(150);
    const bal = await c.getBalance({ walletId: w.id });
    expect([bal.heldNanos, bal.availableNanos]).toEqual([150n, 0n]);
  });
});
