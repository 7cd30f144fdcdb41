import { readFileSync } from "node:fs";

/** The webhook tables (webhooks.sql): a service's migration holds this text verbatim. */
export const webhooksMigrationSql: string = readFileSync(new URL("./webhooks.sql", import.meta.url), "utf8");
