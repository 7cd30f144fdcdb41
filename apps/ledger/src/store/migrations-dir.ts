import { fileURLToPath } from "node:url";

/** Absolute path of the ledger's SQL migrations. */
export const migrationsDir: string = fileURLToPath(new URL("./migrations", import.meta.url));
