import { fileURLToPath } from "node:url";

/** migrationsDir: the absolute path of src/store/migrations. */
export const migrationsDir: string = fileURLToPath(new URL("./store/migrations", import.meta.url));
