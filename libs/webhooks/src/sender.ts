// The dispatcher's default POST: node:http / node:https with the webhook egress policy enforced on
// the address the socket actually connects to. A hostname is resolved once, by the socket's own
// `lookup` (so there is no gap between the check and the connection for DNS rebinding to use), and
// refused when ANY of its addresses is not public (a name mixing public and internal records is a
// rebinding or misconfiguration sign, and "connect only to the public ones" would depend on
// happy-eyeballs order); an IP-literal host is checked the same way before connecting (the socket
// does not look literals up). No redirects (node:http follows none), no keep-alive (one connection
// per POST, closed once the status line and headers are read: the body is discarded unread).
import * as dns from "node:dns";
import * as http from "node:http";
import * as https from "node:https";
import type { LookupFunction } from "node:net";
import { ipLiteralOf, nonPublicRange } from "./egress.js";

/** One POST: resolves with the response status, rejects on a connection error, a refusal or the signal. */
export type WebhookSender = (url: string, init: { headers: Record<string, string>; body: string; signal: AbortSignal }) => Promise<number>;

/** Resolves a hostname to all its addresses (dns.lookup with `all`; tests inject their own). */
export type ResolveAll = (hostname: string, options: { family?: number; hints?: number }) => Promise<Array<{ address: string; family: number }>>;

/** A POST refused by the egress policy (recorded as the delivery's last error, retried like a connection error). */
export class WebhookEgressError extends Error {
  readonly code = "ERR_WEBHOOK_EGRESS_REFUSED";
  constructor(message: string) {
    super(message);
    this.name = "WebhookEgressError";
  }
}

const POLICY = "not a public address (webhook egress policy)";

export const resolveAllDefault: ResolveAll = (hostname, options) =>
  dns.promises.lookup(hostname, { all: true, family: options.family ?? 0, hints: options.hints ?? 0 });

/**
 * The one refusal text for a hostname, whether it resolves to a non-public address or not at all:
 * last_error is the tenant's to read, and naming the address, or telling "internal" from "no such
 * name", would let a tenant map the service's network and DNS through its endpoints.
 */
function notPublic(hostname: string): WebhookEgressError {
  return new WebhookEgressError(`refused: ${hostname} does not resolve to a public address (webhook egress policy)`);
}

/** The refusal for a hostname whose addresses are not all public, or null when every one is. */
export function refusalOf(hostname: string, addresses: ReadonlyArray<{ address: string }>): WebhookEgressError | null {
  const bad = addresses.find((a) => nonPublicRange(a.address) !== null);
  return bad ? notPublic(hostname) : null;
}

/**
 * A socket `lookup` (net.connect / http.request option) that resolves with `resolve` and, unless
 * `allowPrivateNetworks`, fails with a WebhookEgressError when any address is not public. Answers
 * both forms net asks for: `all: true` (happy eyeballs, Node's default) and a single address.
 */
export function egressLookup(resolve: ResolveAll, allowPrivateNetworks: boolean): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { family: typeof options.family === "number" ? options.family : 0, hints: options.hints ?? 0 }).then(
      (addresses) => {
        if (addresses.length === 0) {
          return callback(allowPrivateNetworks ? Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" }) : notPublic(hostname), "", 0);
        }
        const refused = allowPrivateNetworks ? null : refusalOf(hostname, addresses);
        if (refused) return callback(refused, "", 0);
        if (options.all) return callback(null, addresses);
        return callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      // Under the policy a failed lookup reads like a refusal (see notPublic); it is retried alike.
      (err: NodeJS.ErrnoException) => callback(allowPrivateNetworks ? err : notPublic(hostname), "", 0),
    );
  };
}

/** The default sender: POSTs with node:http(s) through egressLookup (see the file comment). */
export function createEgressSender(opts: { allowPrivateNetworks: boolean; resolve?: ResolveAll }): WebhookSender {
  const lookup = egressLookup(opts.resolve ?? resolveAllDefault, opts.allowPrivateNetworks);
  return (url, init) =>
    new Promise<number>((resolve, reject) => {
      const u = new URL(url);
      const literal = ipLiteralOf(u.hostname);
      if (literal !== null && !opts.allowPrivateNetworks && nonPublicRange(literal) !== null) {
        return reject(new WebhookEgressError(`refused: ${literal} is ${POLICY}`));
      }
      const client = u.protocol === "https:" ? https : u.protocol === "http:" ? http : null;
      if (!client) return reject(new Error(`unsupported protocol ${u.protocol}`));
      const req = client.request(
        u,
        {
          method: "POST",
          headers: { ...init.headers, "content-length": String(Buffer.byteLength(init.body)) },
          signal: init.signal,
          agent: false,
          lookup,
        },
        (res) => {
          resolve(res.statusCode ?? 0);
          res.destroy();
        },
      );
      req.on("error", reject);
      req.end(init.body);
    });
}
