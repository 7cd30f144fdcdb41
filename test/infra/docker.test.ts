/**
 * infra/docker: no docker daemon in CI, so the Dockerfile, entry point and ignore file are checked
 * as text against the repository: every workspace manifest is copied (npm ci needs them all), the
 * dev-only runtime pieces copied by hand (tsx and its dependency closure) match the lockfile, no
 * runtime source imports a dev dependency, and the entry point runs what exists.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { builtinModules } from "node:module";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { SERVICE_NAMES } from "../../infra/k8s/render.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const DOCKERFILE = readFileSync(join(ROOT, "infra/docker/Dockerfile"), "utf8");
const IGNORE = readFileSync(join(ROOT, "infra/docker/Dockerfile.dockerignore"), "utf8");
const ENTRYPOINT = join(ROOT, "infra/docker/entrypoint.sh");
const rootPkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string>; devDependencies: Record<string, string>; workspaces: string[] };
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
  packages: Record<string, { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; dev?: boolean }>;
};

/** Dockerfile instructions with line continuations joined. */
const instructions = DOCKERFILE.replace(/\\\n/g, " ")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

function workspaceManifests(): string[] {
  return ["apps", "libs"].flatMap((top) =>
    readdirSync(join(ROOT, top))
      .filter((n) => existsSync(join(ROOT, top, n, "package.json")))
      .map((n) => `${top}/${n}/package.json`),
  );
}

describe("Dockerfile", () => {
  test("builds on node:20-bookworm-slim with npm ci, runs as uid 10001 through the entry point", () => {
    expect(instructions).toContain("ARG NODE_IMAGE=node:20-bookworm-slim");
    expect(instructions.filter((l) => l.startsWith("RUN npm ci")).length).toBeGreaterThanOrEqual(1);
    expect(instructions.some((l) => /^RUN npm ci --omit=dev\b/.test(l))).toBe(true);
    expect(instructions.filter((l) => l.startsWith("USER ")).at(-1)).toBe("USER 10001:10001");
    expect(instructions.at(-1)).toBe('ENTRYPOINT ["/bin/sh", "/app/infra/docker/entrypoint.sh"]');
    expect(instructions).toContain("EXPOSE 8080");
    expect(instructions.some((l) => /^RUN .*useradd .*--uid 10001/.test(l))).toBe(true);
  });

  test("copies the lockfile and every workspace's package.json (npm ci fails without them)", () => {
    const copied = new Set(instructions.filter((l) => l.startsWith("COPY ") && !l.includes("--from")).flatMap((l) => l.split(/\s+/).slice(1, -1)));
    expect(copied.has("package-lock.json")).toBe(true);
    for (const m of workspaceManifests()) expect(copied.has(m), `Dockerfile must COPY ${m}`).toBe(true);
    for (const c of copied) if (c.endsWith("/package.json")) expect(existsSync(join(ROOT, c)), `${c} is copied but does not exist`).toBe(true);
  });

  test("tsx and its whole dependency closure (per package-lock.json) are copied into the runtime image", () => {
    const closure = new Set<string>();
    const visit = (name: string): void => {
      if (closure.has(name)) return;
      closure.add(name);
      for (const d of Object.keys(lock.packages[`node_modules/${name}`]?.dependencies ?? {})) visit(d);
    };
    visit("tsx");
    const fromDev = instructions.filter((l) => l.startsWith("COPY --from=deps-dev")).map((l) => l.split(/\s+/)[2]!);
    for (const name of closure) {
      if (!lock.packages[`node_modules/${name}`]?.dev) continue; // a production dependency: already there
      expect(fromDev, `COPY --from=deps-dev /app/node_modules/${name}`).toContain(`/app/node_modules/${name}`);
    }
    // esbuild's platform binary lives in an optional @esbuild/<platform> package.
    expect(Object.keys(lock.packages["node_modules/esbuild"]?.optionalDependencies ?? {}).every((d) => d.startsWith("@esbuild/"))).toBe(true);
    expect(fromDev).toContain("/app/node_modules/@esbuild");
  });

  test("no runtime source imports a devDependency (the image installs production dependencies only)", () => {
    const allowed = new Set([...Object.keys(rootPkg.dependencies), ...builtinModules, "tsx"]);
    const files = [
      ...["apps", "libs"].flatMap((top) =>
        readdirSync(join(ROOT, top)).flatMap((n) => (existsSync(join(ROOT, top, n, "src")) ? walk(join(ROOT, top, n, "src")) : [])),
      ),
      join(ROOT, "infra/migrate.ts"),
    ].filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts") && !f.includes("/test-support") && !f.endsWith("/testing.ts"));
    const bad: string[] = [];
    for (const f of files) {
      const src = readFileSync(f, "utf8");
      for (const m of src.matchAll(/^\s*(import|export)\s+(?!type\b)[^;]*?from\s+["']([^"'.][^"']*)["']/gm)) {
        const spec = m[2]!;
        if (spec.startsWith("node:") || spec.startsWith("@nanobill/")) continue;
        const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
        if (!allowed.has(name)) bad.push(`${relative(ROOT, f)} imports ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });
});

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

describe("Dockerfile.dockerignore", () => {
  test("sends only what the image runs: sources, manifests, the migrate CLI and entry point; never node_modules or data", () => {
    const lines = IGNORE.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
    expect(lines[0]).toBe("*");
    for (const keep of ["!package.json", "!package-lock.json", "!apps/*/package.json", "!apps/*/src/**", "!libs/*/package.json", "!libs/*/src/**", "!infra/migrate.ts", "!infra/docker/entrypoint.sh"]) {
      expect(lines).toContain(keep);
    }
    for (const drop of ["**/node_modules", "**/.data", "**/*.test.ts"]) expect(lines).toContain(drop);
  });
});

describe("entrypoint.sh", () => {
  const sh = (args: string[], env: Record<string, string>) => spawnSync("/bin/sh", [ENTRYPOINT, ...args], { env: { PATH: process.env.PATH ?? "", ...env }, encoding: "utf8" });

  test("is valid sh and knows exactly the deployed services", () => {
    expect(spawnSync("/bin/sh", ["-n", ENTRYPOINT]).status).toBe(0);
    const listed = /case "\$\{NANOBILL_SERVICE:-\}" in\s*\n\s*([^)]+)\)/.exec(readFileSync(ENTRYPOINT, "utf8"))![1]!.split("|").map((s) => s.trim());
    expect(listed).toEqual([...SERVICE_NAMES]);
  });

  test("an unknown or missing NANOBILL_SERVICE, or an unknown command, exits 64 before starting anything", () => {
    expect(sh([], {}).status).toBe(64);
    expect(sh([], { NANOBILL_SERVICE: "payments" }).stderr).toContain("NANOBILL_SERVICE must be one of");
    const r = sh(["shell"], { NANOBILL_SERVICE: "ledger" });
    expect(r.status).toBe(64);
    expect(r.stderr).toContain("unknown command 'shell'");
  });

  test("refuses arguments after the command (migrate --wait must not migrate), exit 64", () => {
    const r = sh(["migrate", "--wait"], { NANOBILL_SERVICE: "ledger" });
    expect(r.status).toBe(64);
    expect(r.stderr).toContain("unexpected arguments after 'migrate': --wait");
  });

  test("defaults <SERVICE>_PORT to the EXPOSEd 8080 and keeps a port that is set", () => {
    // A stand-in for node on PATH prints the port the service would read.
    const bin = mkdtempSync(join(tmpdir(), "nb-entry-"));
    try {
      writeFileSync(join(bin, "node"), '#!/bin/sh\necho "port=${CREDIT_WALLET_PORT:-unset} ledger=${LEDGER_PORT:-unset}"\n', { mode: 0o755 });
      const run = (env: Record<string, string>) => spawnSync("/bin/sh", [ENTRYPOINT], { env: { PATH: `${bin}:${process.env.PATH ?? ""}`, ...env }, encoding: "utf8" }).stdout.trim();
      expect(run({ NANOBILL_SERVICE: "credit-wallet" })).toBe("port=8080 ledger=unset");
      expect(run({ NANOBILL_SERVICE: "credit-wallet", CREDIT_WALLET_PORT: "7004" })).toBe("port=7004 ledger=unset");
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  test("runs files that exist: the migrate CLI, and the entry of every service that has one", () => {
    const text = readFileSync(ENTRYPOINT, "utf8");
    expect(text).toContain('exec node --import tsx "apps/${NANOBILL_SERVICE}/src/main.ts"');
    expect(existsSync(join(ROOT, "infra/migrate.ts"))).toBe(true);
    const withMain = SERVICE_NAMES.filter((s) => existsSync(join(ROOT, "apps", s, "src/main.ts")));
    expect(withMain.length).toBeGreaterThanOrEqual(1);
  });
});
