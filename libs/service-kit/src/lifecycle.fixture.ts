// Run by lifecycle.test.ts in a child process (node --import tsx) with NANOBILL_STOP_WITH_STDIN as
// the test sets it: main registers a shutdown hook that prints "hook ran", prints "ready" and
// then waits forever (a timer, like a server's listening socket keeps a process alive). The hook
// takes FIXTURE_HOOK_MS (default 0) before it prints.
import { onShutdown, runMain } from "./lifecycle.js";
import { createLogger } from "./logger.js";

runMain(
  async () => {
    setInterval(() => {}, 1_000);
    onShutdown(async () => {
      await new Promise((r) => setTimeout(r, Number(process.env.FIXTURE_HOOK_MS ?? 0)));
      process.stdout.write("hook ran\n");
    });
    process.stdout.write("ready\n");
  },
  { logger: createLogger({ service: "fixture", level: "error" }) },
);
