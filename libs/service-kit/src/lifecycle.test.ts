// NANOBILL_STOP_WITH_STDIN: a supervised process stops (its shutdown hooks run, exit 0) when its
// stdin ends (the supervisor died, even by SIGKILL); without the variable stdin means nothing. A
// signal repeated at once (npm start: the terminal's Ctrl-C and npm's forwarded one) is one request;
// a later second one exits at once.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { STOP_WITH_STDIN_ENV } from "./lifecycle.js";

const fixture = fileURLToPath(new URL("./lifecycle.fixture.ts", import.meta.url));

function start(stopWithStdin: boolean, hookMs = 0) {
  const env: NodeJS.ProcessEnv = { ...process.env, FIXTURE_HOOK_MS: String(hookMs) };
  if (stopWithStdin) env[STOP_WITH_STDIN_ENV] = "1";
  else delete env[STOP_WITH_STDIN_ENV];
  const child = spawn(process.execPath, ["--import", "tsx", fixture], { env, stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", () => out.includes("ready\n") && resolve());
    child.once("exit", (code) => reject(new Error(`fixture exited early with ${code}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, ready, exited, output: () => out };
}

it("stops gracefully when stdin ends, with the variable set", async () => {
  const p = start(true);
  await p.ready;
  p.child.stdin.end();
  expect(await p.exited).toBe(0);
  expect(p.output()).toBe("ready\nhook ran\n");
}, 60_000);

it("ignores the end of stdin without the variable (only a signal stops it)", async () => {
  const p = start(false);
  await p.ready;
  p.child.stdin.end();
  const early = await Promise.race([p.exited.then(() => "exited"), new Promise((r) => setTimeout(() => r("running"), 1_500))]);
  expect(early).toBe("running");
  p.child.kill("SIGTERM");
  expect(await p.exited).toBe(0);
  expect(p.output()).toBe("ready\nhook ran\n");
}, 60_000);

it("takes a signal repeated at once as one request (graceful, exit 0), a later second one as exit now (1)", async () => {
  const twice = start(false, 1_500);
  await twice.ready;
  twice.child.kill("SIGINT");
  twice.child.kill("SIGINT");
  expect(await twice.exited).toBe(0);
  expect(twice.output()).toBe("ready\nhook ran\n");

  const later = start(false, 10_000);
  await later.ready;
  later.child.kill("SIGINT");
  await new Promise((r) => setTimeout(r, 1_300));
  later.child.kill("SIGINT");
  expect(await later.exited).toBe(1);
  expect(later.output()).toBe("ready\n");
}, 60_000);
