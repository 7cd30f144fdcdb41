import { defineConfig } from "vitest/config";

// One config for `npm test` (every project) and for `npx nx test <project>` (run from a
// project's folder, vitest walks up to this file only when given --config; each project
// therefore passes --root to its own folder and reuses these settings).
export default defineConfig({
  test: {
    include: ["{apps,libs}/*/src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/.data/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default"],
  },
});
