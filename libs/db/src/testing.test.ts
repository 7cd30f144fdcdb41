import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { dropSchemasWithPrefix, openDb } from "./index.js";

const URL_ = process.env.DATABASE_URL;

describe.runIf(URL_)("dropSchemasWithPrefix (PostgreSQL)", () => {
  it("drops the schemas that start with the prefix (their objects too) and no other", async () => {
    const tag = `dsp_${randomBytes(3).toString("hex")}`;
    const admin = await openDb({ url: URL_!, schema: `${tag}_a`, poolMax: 1 });
    try {
      await admin.query("CREATE TABLE t (x int)");
      await admin.query(`CREATE SCHEMA ${tag}_b`);
      await admin.query(`CREATE SCHEMA ${tag}x_keep`); // starts with the tag, not with the prefix "<tag>_"
      await dropSchemasWithPrefix(URL_!, `${tag}_`);
      const left = await admin.query<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1", [tag]);
      expect(left.rows.map((r) => r.nspname)).toEqual([`${tag}x_keep`]);
      await admin.query(`DROP SCHEMA ${tag}x_keep`);
    } finally {
      await admin.close();
    }
  });

  it("refuses a prefix that is not a plain identifier start (a wildcard or a quote would match others)", async () => {
    for (const bad of ["", "e2", "%", "a%", "a_b'", "A_b"]) await expect(dropSchemasWithPrefix(URL_!, bad), bad).rejects.toThrow(/prefix: must match/);
  });
});
