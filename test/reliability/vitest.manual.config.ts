import { defineConfig } from "vitest/config";

/** The documented-bug tests (`*.manual.ts`), outside the default run: npx vitest run --config test/reliability/vitest.manual.config.ts */
export default defineConfig({
  test: {
    root: new URL("../..", import.meta.url).pathname,
    include: ["test/reliability/**/*.manual.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
  },
});
