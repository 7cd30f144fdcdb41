import * as http2 from "node:http2";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApiKeyAuthenticator, parseApiKeysEnv } from "./auth.js";
import { closeClientSessions } from "./client.js";
import { findUnsafeJsonInteger } from "./json-int64.js";
import { silentLogger } from "./logger.js";
import { startServer, type StartedServer } from "./server.js";
import { echoRoutes } from "./test-echo.js";

describe("findUnsafeJsonInteger", () => {
  const rows: Array<[string, { field: string; literal: string } | undefined]> = [
    ['{"a":9007199254740991}', undefined], // 2^53-1: exact
    ['{"a":-9007199254740991}', undefined],
    ['{"a":9007199254740992}', { field: "a", literal: "9007199254740992" }],
    ['{"a":-9007199254740993}', { field: "a", literal: "-9007199254740993" }],
    ['{"a":"9007199254740993"}', undefined], // quoted: proto3 JSON's int64, exact
    ['{"a":9007199254740993.0}', { field: "a", literal: "9007199254740993.0" }],
    ['{"a":9.007199254740993e15}', { field: "a", literal: "9.007199254740993e15" }],
    ['{"a":1e16}', { field: "a", literal: "1e16" }],
    ['{"a":1e15, "b":12.5, "c":1e-3, "d":1e400}', undefined], // safe, fractional, infinite (the parser's concern)
    ['{"a":1234567890123456.5}', undefined], // 16 digits, not an integer
    ['{"events":[{"id":"e","properties":{"n":{"intValue":"1"}}},{"properties":{"input_tokens":{"intValue":9007199254740993}}}]}', { field: "events[1].properties.input_tokens.intValue", literal: "9007199254740993" }],
    ['{"x":[1,[2,3],{"y":[4, 18446744073709551615]}]}', { field: "x[2].y[1]", literal: "18446744073709551615" }],
    ['{"s":"a,12345678901234567 \\" :1e99","t":1}', undefined], // candidates only inside strings
    ['{"k\\"ey": 99999999999999999}', { field: 'k"ey', literal: "99999999999999999" }],
    ['[1, 99999999999999999]', { field: "[1]", literal: "99999999999999999" }],
    ['{"a": 1e17, "b": 99999999999999999}', { field: "a", literal: "1e17" }], // the first one
    ['{"a":[{}, {"b": 1e20}]}', { field: "a[1].b", literal: "1e20" }],
    ['{"a": 99999999999999999', { field: "a", literal: "99999999999999999" }], // malformed after it: still named
    ['{"a": "unterminated, 99999999999999999}', undefined], // malformed: left to the parser
    ['{"a":,99999999999999999}', { field: "a", literal: "99999999999999999" }],
  ];
  it.each(rows)("%s -> %j", (text, expected) => {
    expect(findUnsafeJsonInteger(text)).toEqual(expected);
  });

  it("bounds the texts it quotes: a megabyte key and a 300-digit literal are cut", () => {
    const out = findUnsafeJsonInteger(`{"${"k".repeat(1_000_000)}":${"9".repeat(300)}}`)!; // 300 digits: finite (more is Infinity, which the parser refuses)
    expect(out.field.length).toBeLessThanOrEqual(257);
    expect(out.literal.length).toBeLessThanOrEqual(41);
  });

  it("finds exactly the first unsafe integer of random JSON, at its path (JSON.stringify's key order)", () => {
    const firstUnsafe = (v: unknown, path: string): string | undefined => {
      if (typeof v === "number") return Number.isInteger(v) && !Number.isSafeInteger(v) ? (path === "" ? "request" : path) : undefined;
      if (Array.isArray(v)) {
        for (const [i, x] of v.entries()) {
          const p = firstUnsafe(x, `${path}[${i}]`);
          if (p !== undefined) return p;
        }
      } else if (typeof v === "object" && v !== null) {
        for (const [k, x] of Object.entries(v)) {
          const p = firstUnsafe(x, path === "" ? k : `${path}.${k}`);
          if (p !== undefined) return p;
        }
      }
      return undefined;
    };
    const num = fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(Number), fc.constantFrom(2 ** 53, 2 ** 53 - 1, -(2 ** 53), 1e21, 1e300));
    const key = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom("a", "b.c", "1", '"q', "x,1e99"));
    const value = fc.letrec((tie) => ({
      v: fc.oneof({ depthSize: "small" }, num, fc.string({ maxLength: 20 }), fc.boolean(), fc.constant(null), fc.array(tie("v"), { maxLength: 4 }), fc.dictionary(key, tie("v"), { maxKeys: 4 })),
    })).v;
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 5 }), (obj) => {
        // JSON.stringify writes a key's last value once; the walk sees the same object.
        const text = JSON.stringify(obj);
        expect(findUnsafeJsonInteger(text)?.field).toBe(firstUnsafe(JSON.parse(text), ""));
      }),
      { numRuns: 2_000 },
    );
  });
});

describe("JSON requests on a real server", () => {
  const KEY = "sk_test_admin_0123456789abcdef";
  let server: StartedServer;
  beforeAll(async () => {
    server = await startServer({
      name: "json-int64",
      host: "127.0.0.1",
      port: 0,
      routes: echoRoutes(),
      authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`tnt_a:admin:${KEY}`)),
      logger: silentLogger,
    });
  });
  afterAll(async () => {
    closeClientSessions();
    await server?.close();
  });

  const call = (headers: Record<string, string>, body: Uint8Array): Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders }> =>
    new Promise((resolve, reject) => {
      const session = http2.connect(server.url);
      session.on("error", reject);
      const req = session.request({ ":method": "POST", ":path": headers[":path"] ?? "/nanobill.bench.v1.EchoService/Echo", authorization: `Bearer ${KEY}`, ...headers });
      let status = 0;
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("trailers", (t) => (trailers = t));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        session.close();
        resolve({ status, body: Buffer.concat(chunks).toString("latin1"), trailers });
      });
      req.on("error", reject);
      req.end(body);
    });
  const envelope = (json: string) => {
    const b = Buffer.from(json);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(b.length, 1);
    return Buffer.concat([head, b]);
  };
  const RULE = "is an integer beyond 2^53-1 sent as a JSON number";

  it("refuses an integer past 2^53-1 sent as a bare JSON number (even in an unknown field, which connect-es ignores) with InvalidArgument naming it, on Connect JSON unary (plain and gzip), streaming and gRPC-JSON", async () => {
    const text = '{"text":"x","extra":{"n":[1,9007199254740993]}}';
    const unary = await call({ "content-type": "application/json" }, Buffer.from(text));
    expect(unary.status).toBe(400);
    expect(JSON.parse(unary.body)).toMatchObject({ code: "invalid_argument", message: `extra.n[1]: 9007199254740993 ${RULE}, which loses precision; send 64-bit integers as JSON strings` });

    const gz = await call({ "content-type": "application/json", "content-encoding": "gzip" }, gzipSync(Buffer.from(text)));
    expect([gz.status, JSON.parse(gz.body).message]).toEqual([400, expect.stringContaining(`extra.n[1]: 9007199254740993 ${RULE}`)]);

    const stream = await call({ ":path": "/nanobill.bench.v1.EchoService/EchoStream", "content-type": "application/connect+json" }, envelope('{"text":"x","count":2,"big":-1e300}'));
    expect(stream.body).toContain("invalid_argument");
    expect(stream.body).toContain(`big: -1e300 ${RULE}`);

    const grpc = await call({ "content-type": "application/grpc+json", te: "trailers" }, envelope(text));
    expect(grpc.trailers["grpc-status"]).toBe("3");
    expect(decodeURIComponent(String(grpc.trailers["grpc-message"]))).toContain(`extra.n[1]: 9007199254740993 ${RULE}`);
  });

  it("answers JSON with safe numbers and quoted 64-bit integers as before", async () => {
    const ok = await call({ "content-type": "application/json" }, Buffer.from('{"text":"9007199254740993","extra":[9007199254740991,"18446744073709551615",12.5]}'));
    expect([ok.status, JSON.parse(ok.body)]).toEqual([200, { text: "9007199254740993" }]);
  });
});
