import { createLogger, type Logger } from "./logger.js";

const hooks: Array<() => Promise<void>> = [];
let shuttingDown = false;
let installed = false;

/** Registers a hook run on SIGTERM/SIGINT (and when main fails), in reverse order of registration. */
export function onShutdown(fn: () => Promise<void>): void {
  hooks.push(fn);
}

/** Runs every registered hook, last registered first; a failing hook is logged, the rest still run. */
export async function runShutdownHooks(logger?: Logger): Promise<void> {
  while (hooks.length > 0) {
    const fn = hooks.pop()!;
    try {
      await fn();
    } catch (err) {
      logger?.error("shutdown hook failed", { err });
    }
  }
}

/** A second signal this soon after the first is the same request (npm forwards the terminal's Ctrl-C). */
export const REPEATED_SIGNAL_IGNORED_MS = 1_000;

/** Hard limit on the whole shutdown; past it the process exits with code 1. */
export const SHUTDOWN_TOTAL_MS_MAX = 30_000;

/**
 * Set to "1" by a supervisor that spawns this process with a stdin pipe it never closes (the
 * stack, libs/platform/src/stack.ts): when stdin ends, the supervisor is gone (even SIGKILLed, as
 * the kernel closes its end), and the process shuts down as on SIGTERM instead of living on as an
 * orphan that holds its port (the next stack refused to start on it).
 */
export const STOP_WITH_STDIN_ENV = "NANOBILL_STOP_WITH_STDIN";

/**
 * Process entry: runs main; on SIGTERM/SIGINT runs the shutdown hooks (reverse order) and
 * exits 0; if main throws (e.g. ConfigError) logs it, runs the hooks and exits 1. A second
 * signal exits immediately (one within REPEATED_SIGNAL_IGNORED_MS of the first is ignored).
 * With NANOBILL_STOP_WITH_STDIN=1, the end of stdin stops it too.
 */
export function runMain(main: () => Promise<void>, opts: { logger?: Logger } = {}): void {
  const logger = opts.logger ?? createLogger({ service: "main" });
  let firstSignalMs = 0;
  const stop = (code: number, reason: string): void => {
    if (shuttingDown) {
      // One Ctrl-C under `npm start` arrives twice (the terminal's, and npm forwarding its own):
      // only a signal well after the first one means "exit now".
      if (Date.now() - firstSignalMs < REPEATED_SIGNAL_IGNORED_MS) return;
      logger.warn("second signal, exiting now", { reason });
      process.exit(code || 1);
    }
    shuttingDown = true;
    firstSignalMs = Date.now();
    logger.info("shutting down", { reason });
    const timer = setTimeout(() => {
      logger.error("shutdown took too long, exiting", { limitMs: SHUTDOWN_TOTAL_MS_MAX });
      process.exit(1);
    }, SHUTDOWN_TOTAL_MS_MAX);
    timer.unref();
    void runShutdownHooks(logger).then(() => process.exit(code));
  };
  if (!installed) {
    installed = true;
    process.on("SIGTERM", () => stop(0, "SIGTERM"));
    process.on("SIGINT", () => stop(0, "SIGINT"));
    if (process.env[STOP_WITH_STDIN_ENV] === "1") {
      // A shutdown already under way (the supervisor's SIGTERM) is left to finish.
      const supervisorGone = (): void => {
        if (!shuttingDown) stop(0, "stdin closed: supervisor gone");
      };
      process.stdin.on("end", supervisorGone);
      process.stdin.on("error", supervisorGone);
      process.stdin.resume(); // read (and drop) until EOF
    }
  }
  main().catch((err: unknown) => {
    logger.error("fatal", { err });
    stop(1, "main failed");
  });
}
