/**
 * Service bugs the reliability suites found, as failing tests. Kept out of the default run by the
 * `.manual.ts` name (vitest only collects *.test.ts); run with
 *   npx vitest run --config test/reliability/vitest.manual.config.ts
 * Each test passes once its bug is fixed; then move it into the suite that found it.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { silentLogger } from "@nanobill/service-kit";
import { startPlatform, type Platform, type PlatformClients } from "../../libs/platform/src/platform.js";

const codeOf = (p: Promise<unknown>): Promise<Code | "ok"> =>
  p.then(
    () => "ok" as const,
    (e: unknown) => ConnectError.from(e).code,
  );

describe("known service bugs (found by test/reliability/fuzz.test.ts)", () => {
  let platform: Platform;
  let c: PlatformClients;
  const key = `nbk_bug_${randomBytes(16).toString("hex")}`;
  beforeAll(async () => {
    platform = await startPlatform({ apiKeys: [{ tenant: "tnt_bug", scopes: ["admin"], key }], logger: silentLogger });
    c = platform.clients(key);
  }, 60_000);
  afterAll(async () => {
    await platform?.close();
  });

  it("credit-wallet RunExpiry with as_of 9999-12-31T23:59:59Z answers InvalidArgument or OK, not Internal", async () => {
    const code = await codeOf(c.wallet.runExpiry({ asOf: timestampFromDate(new Date("9999-12-31T23:59:59Z")) }));
    expect(code).not.toBe(Code.Internal);
  });

  it("credit-wallet RunRollover with as_of 9999-12-31T23:59:59Z answers InvalidArgument or OK, not Internal", async () => {
    const code = await codeOf(c.wallet.runRollover({ asOf: timestampFromDate(new Date("9999-12-31T23:59:59Z")) }));
    expect(code).not.toBe(Code.Internal);
  });
});
