// NANOBILL_STOP_WITH_STDIN: a supervised process stops (its shutdown hooks run, exit 0) when its
// stdin ends (the supervisor died, even by SIGKILL); without the variable stdin means nothing.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { STOP_WITH_STDIN_ENV } from "./lifecycle.js";

const fixture = fileURLToPath(new URL("./lifecycle.fixture.ts", import.meta.url));

function start(stopWithStdin: boolean) {
  const env = { ...process.env };
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
