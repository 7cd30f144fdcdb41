export type { Row, Queryable, Tx, PipelineStatement, Db, EmbeddedPostgres, IsolationLevel, TransactionOptions, OpenDbOptions } from "./types.js";
export { DbError, isDbError, type DbErrorCode } from "./errors.js";
export { openDb } from "./open.js";
export { ensureOwnerOnlyDir, openEmbeddedPostgres } from "./pglite-backend.js";
export { migrate, pendingMigrations, prepareSchema, readMigrations, type MigrationFile } from "./migrate.js";
export { dropSchemasWithPrefix, testBackends, TEST_POOL_MAX, type TestBackend, type TestDb } from "./testing.js";
export * from "./limits.js";
export { unnestInsert } from "./unnest-insert.js";
