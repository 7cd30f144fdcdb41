// Webhook egress policy, the pure part: which IP addresses a webhook may be POSTed to. An address is
// public unless it falls in a non-public range (loopback, private, link-local incl. the cloud
// metadata address 169.254.169.254, shared/CGNAT, documentation, benchmarking, multicast, reserved).
// IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4
// 2002::/16) are classified by the IPv4 address they embed. No I/O here: the sender (sender.ts)
// resolves names and checks every address it would connect to; endpoint validation checks literals.
import { isIP } from "node:net";

interface Range4 {
  base: number;
  bits: number;
  /** "10.0.0.0/8" (the network policies of infra/k8s exclude these too). */
  cidr: string;
  name: string;
}
interface Range6 {
  base: bigint;
  bits: number;
  cidr: string;
  name: string;
}

function ipv4ToInt(ip: string): number {
  const p = ip.split(".").map(Number);
  return ((p[0]! << 24) >>> 0) + (p[1]! << 16) + (p[2]! << 8) + p[3]!;
}

function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** An IPv6 address (any form net.isIP accepts: compressed, embedded IPv4 tail, zone id) as a 128-bit integer. */
function ipv6ToBigInt(ip: string): bigint {
  let s = ip;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const dot = s.lastIndexOf(".");
  if (dot >= 0) {
    const colon = s.lastIndexOf(":");
    const v4 = ipv4ToInt(s.slice(colon + 1));
    s = `${s.slice(0, colon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head, tail] = s.split("::") as [string, string | undefined];
  const groups = (part: string | undefined) => (part === undefined || part === "" ? [] : part.split(":"));
  const h = groups(head);
  const t = groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

const r4 = (cidr: string, name: string): Range4 => {
  const [ip, bits] = cidr.split("/") as [string, string];
  return { base: ipv4ToInt(ip), bits: Number(bits), cidr, name: `${cidr} ${name}` };
};
const r6 = (cidr: string, name: string): Range6 => {
  const [ip, bits] = cidr.split("/") as [string, string];
  return { base: ipv6ToBigInt(ip), bits: Number(bits), cidr, name: `${cidr} ${name}` };
};

/** IPv4 ranges a webhook never goes to (IANA special-purpose registry, not globally reachable). */
export const NON_PUBLIC_IPV4: readonly Range4[] = [
  r4("0.0.0.0/8", "this network"),
  r4("10.0.0.0/8", "private"),
  r4("100.64.0.0/10", "shared address space (CGNAT)"),
  r4("127.0.0.0/8", "loopback"),
  r4("169.254.0.0/16", "link-local (cloud metadata)"),
  r4("172.16.0.0/12", "private"),
  r4("192.0.0.0/24", "IETF protocol assignments"),
  r4("192.0.2.0/24", "documentation (TEST-NET-1)"),
  r4("192.88.99.0/24", "6to4 relay anycast"),
  r4("192.168.0.0/16", "private"),
  r4("198.18.0.0/15", "benchmarking"),
  r4("198.51.100.0/24", "documentation (TEST-NET-2)"),
  r4("203.0.113.0/24", "documentation (TEST-NET-3)"),
  r4("224.0.0.0/4", "multicast"),
  r4("240.0.0.0/4", "reserved (incl. broadcast)"),
];

/**
 * IPv6 ranges a webhook never goes to. The ranges that embed an IPv4 address (EMBEDDING_IPV6) are
 * checked first; `::/8` (reserved: unspecified, loopback, the deprecated IPv4-compatible and
 * IPv4-translated forms) comes last so that it does not shadow them.
 */
export const NON_PUBLIC_IPV6: readonly Range6[] = [
  r6("::/128", "unspecified"),
  r6("::1/128", "loopback"),
  r6("64:ff9b:1::/48", "local-use NAT64"),
  r6("100::/64", "discard-only"),
  r6("2001::/32", "Teredo (embeds an obfuscated IPv4 address)"),
  r6("2001:2::/48", "benchmarking"),
  r6("2001:db8::/32", "documentation"),
  r6("3fff::/20", "documentation"),
  r6("fc00::/7", "unique local"),
  r6("fe80::/10", "link-local"),
  r6("fec0::/10", "site-local (deprecated)"),
  r6("2001:10::/28", "ORCHID (deprecated)"),
  r6("5f00::/16", "SRv6 SIDs (not globally reachable)"),
  r6("ff00::/8", "multicast"),
  r6("::/8", "reserved"),
];

/** IPv6 ranges whose addresses carry an IPv4 address: classified by that address. `shift` places it. */
const EMBEDDING_IPV6: ReadonlyArray<Range6 & { shift: bigint }> = [
  { ...r6("::ffff:0:0/96", "IPv4-mapped"), shift: 0n },
  { ...r6("64:ff9b::/96", "NAT64"), shift: 0n },
  { ...r6("2002::/16", "6to4"), shift: 80n },
];

function in6(v: bigint, r: Range6): boolean {
  const drop = BigInt(128 - r.bits);
  return v >> drop === r.base >> drop;
}

function in4(v: number, r: Range4): boolean {
  // r.bits is 4..24 here; a /0 or /32 would need care with JS shifts.
  const drop = 32 - r.bits;
  return v >>> drop === r.base >>> drop;
}

function nonPublic4(v: number): string | null {
  return NON_PUBLIC_IPV4.find((r) => in4(v, r))?.name ?? null;
}

/**
 * Why `ip` is not a public address (the range, e.g. "127.0.0.0/8 loopback"), or null when it is
 * public. Anything net.isIP does not accept is "not an IP address" (never public).
 */
export function nonPublicRange(ip: string): string | null {
  const kind = isIP(ip);
  if (kind === 4) return nonPublic4(ipv4ToInt(ip));
  if (kind !== 6) return "not an IP address";
  const v = ipv6ToBigInt(ip);
  for (const r of EMBEDDING_IPV6) {
    if (!in6(v, r)) continue;
    const v4 = Number((v >> r.shift) & 0xffffffffn);
    const inner = nonPublic4(v4);
    return inner === null ? null : `${r.name} of ${intToIpv4(v4)} (${inner})`;
  }
  return NON_PUBLIC_IPV6.find((r) => in6(v, r))?.name ?? null;
}

/** True when `ip` is an IP address outside every non-public range (see nonPublicRange). */
export function isPublicAddress(ip: string): boolean {
  return nonPublicRange(ip) === null;
}

/** The IP address a URL hostname is, if it is one ("[::1]" -> "::1"); null for a name. */
export function ipLiteralOf(hostname: string): string | null {
  const h = hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
  return isIP(h) === 0 ? null : h;
}

/** `localhost`, `localhost.` and names under `.localhost` (RFC 6761: always loopback). */
export function isLocalhostName(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.+$/, "");
  return h === "localhost" || h.endsWith(".localhost");
}
