// Follow-ups of the credit-wallet review (2026-11-30): SetAutoTopUp keeps a disarmed wallet
// disarmed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as pb from "@nanobill/contracts/nanobill/wallet/v1/wallet_pb";
import { KEYS, openWalletHarness, walletBackends, type WalletHarness } from "./test-support.js";

describe.each(walletBackends())("credit wallet review follow-ups ($name)", (b) => {
  let h: WalletHarness;
  beforeAll(async () => {
    h = await openWalletHarness(b);
  });
  afterAll(async () => {
    await h?.close();
  });

  const admin = () => h.client(KEYS.adminA);
  const ingest = () => h.client(KEYS.internal, "tnt_a");

  async function wallet(customerId: string, amountNanos: bigint) {
    const w = (await admin().createWallet({ customerId, unit: "USD" })).wallet!;
    await admin().grant({ id: `g_${customerId}`, walletId: w.id, kind: pb.GrantKind.PURCHASED, amountNanos });
    return w;
  }
  const topUps = async (customerId: string) => (await admin().listAlerts({ customerId, kind: pb.AlertKind.AUTO_TOP_UP })).alerts.length;
  const consume = (customerId: string, id: string, amountNanos: bigint) => ingest().consume({ items: [{ id, customerId, unit: "USD", amountNanos }] });

  // ------------------------------------------------------------------ 1: SetAutoTopUp and the armed flag

  it("does not top up a second time below the threshold after the auto top-up config is edited", async () => {
    const w = await wallet("cus_atu_edit", 1_000n);
    // A top-up of 50 does not bring the wallet back to the threshold: it stays disarmed after it.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_edit", "c_atu_edit_1", 600n); // 400 < 500: top-up 50 -> 450, disarmed
    expect(await topUps("cus_atu_edit")).toBe(1);
    // Editing the config (same threshold, another amount) while below it and disarmed keeps it disarmed.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 60n, cooldownMs: 0n } });
    await consume("cus_atu_edit", "c_atu_edit_2", 10n);
    expect(await topUps("cus_atu_edit")).toBe(1);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(440n);
    // Raising the threshold while below does not re-arm either.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 900n, amountNanos: 60n, cooldownMs: 0n } });
    await consume("cus_atu_edit", "c_atu_edit_3", 10n);
    expect(await topUps("cus_atu_edit")).toBe(1);
  });

  it("arms the auto top-up when it is enabled from disabled, even below the threshold", async () => {
    const w = await wallet("cus_atu_enable", 1_000n);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_enable", "c_atu_enable_1", 600n); // top-up 50 -> 450, disarmed
    expect(await topUps("cus_atu_enable")).toBe(1);
    // Disabling while below and disarmed keeps it disarmed; enabling again (from disabled) arms it.
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: false, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_enable", "c_atu_enable_2", 10n);
    expect(await topUps("cus_atu_enable")).toBe(1);
    const on = await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    expect(on.wallet!.autoTopUp!.enabled).toBe(true);
    await consume("cus_atu_enable", "c_atu_enable_3", 10n); // 430 -> top-up 50 -> 480
    expect(await topUps("cus_atu_enable")).toBe(2);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(480n);
  });

  it("re-arms the auto top-up when the threshold is lowered to or below the available balance", async () => {
    const w = await wallet("cus_atu_lower", 1_000n);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 500n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_lower", "c_atu_lower_1", 600n); // top-up 50 -> 450, disarmed
    expect(await topUps("cus_atu_lower")).toBe(1);
    await admin().setAutoTopUp({ walletId: w.id, autoTopUp: { enabled: true, thresholdNanos: 450n, amountNanos: 50n, cooldownMs: 0n } });
    await consume("cus_atu_lower", "c_atu_lower_2", 100n); // 350 < 450: the next crossing tops up
    expect(await topUps("cus_atu_lower")).toBe(2);
    expect((await admin().getBalance({ walletId: w.id })).balanceNanos).toBe(400n);
  });
});

