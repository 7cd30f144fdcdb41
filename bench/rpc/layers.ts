// Layer-by-layer cost of one echo call (CPU µs per call, 1 caller), to find what costs what.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { createClient, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { EchoRequestSchema, EchoService } from "@nanobill/contracts/nanobill/bench/v1/echo_pb";
import { createApiKeyAuthenticator, createClientTransport, parseApiKeysEnv, silentLogger, startServer, closeClientSessions } from "@nanobill/service-kit";

const KEY = "sk_bench_0123456789abcdef0123456789";
const N = Number(process.env["N"] ?? "2000");
const routes = (r: ConnectRouter) => r.service(EchoService, { echo: (req) => ({ text: req.text, payload: req.payload }) });
const request = create(EchoRequestSchema, { text: "hello", payload: new Uint8Array(128) });

async function cpuPerCall(name: string, call: () => Promise<unknown>, callers = 1): Promise<void> {
  for (let i = 0; i < 300; i++) await call();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let left = N;
  await Promise.all(Array.from({ length: callers }, async () => { while (left-- > 0) await call(); }));
  const c = process.cpuUsage(c0);
  console.log(name.padEnd(50), String(callers).padStart(3), ((c.user + c.system) / N).toFixed(0).padStart(6), "cpu us/call", (N / ((performance.now() - t0) / 1000)).toFixed(0).padStart(7), "calls/s");
}

const plain = http2.createServer(connectNodeAdapter({ routes }));
await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
const plainUrl = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;
const kit = await startServer({ name: "echo", host: "127.0.0.1", port: 0, routes, authenticator: createApiKeyAuthenticator(parseApiKeysEnv(`t:admin:${KEY}`)), logger: silentLogger, tenantLimits: { requestsPerSecond: 10_000_000, requestsBurst: 10_000_000, inflightMax: 1_000 } });

const ct1 = createConnectTransport({ baseUrl: plainUrl, httpVersion: "2", useBinaryFormat: true });
const gt1 = createGrpcTransport({ baseUrl: plainUrl });
const ct2 = createConnectTransport({ baseUrl: kit.url, httpVersion: "2", useBinaryFormat: true });
const kc = createClient(EchoService, createClientTransport({ baseUrl: kit.url, apiKey: KEY, protocol: "connect" }));
const kg = createClient(EchoService, createClientTransport({ baseUrl: kit.url, apiKey: KEY, protocol: "grpc" }));
for (const callers of [1, 64]) {
  await cpuPerCall("plain connect server, connect client", () => createClient(EchoService, ct1).echo(request), callers);
  await cpuPerCall("plain connect server, grpc client", () => createClient(EchoService, gt1).echo(request), callers);
  await cpuPerCall("kit server, plain connect client", () => createClient(EchoService, ct2).echo(request, { headers: { authorization: `Bearer ${KEY}` } }), callers);
  await cpuPerCall("kit server, kit connect client", () => kc.echo(request), callers);
  await cpuPerCall("kit server, kit grpc client", () => kg.echo(request), callers);
}
closeClientSessions();
await kit.close();
plain.close();
process.exit(0);
