// The stack refuses a fixed port that something already listens on, before it starts anything (a
// leftover service of an earlier stack answered SERVING for the new one, whose own process had
// died with EADDRINUSE: the stack printed "running" with dead pids and a key nobody accepted).
import { createServer } from "node:net";
import { expect, it } from "vitest";
import { startStack } from "../../libs/platform/src/stack.js";

it("refuses a busy fixed port, naming it and its service, before spawning anything", async () => {
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
  const port = (busy.address() as { port: number }).port;
  try {
    const started = Date.now();
    await expect(
      startStack({ databaseUrl: "postgres://nobody@127.0.0.1:1/none", apiKeys: [], ports: { metering: 0, rating: 0, ledger: port, "credit-wallet": 0, invoicing: 0 } }),
    ).rejects.toThrow(new RegExp(`port ${port} \\(ledger\\) on 127\\.0\\.0\\.1 is in use`));
    expect(Date.now() - started).toBeLessThan(5_000); // nothing was spawned or waited for
  } finally {
    await new Promise<void>((r) => busy.close(() => r()));
  }
});
