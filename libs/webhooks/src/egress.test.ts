// The webhook egress policy, pure parts: the address classifier on both sides of every range
// boundary (IPv4, IPv6 in every form net.isIP accepts, IPv4 embedded in IPv6), endpoint URL
// validation by policy, and the socket lookup that checks what it hands to the socket.
import type { LookupAddress } from "node:dns";
import { isIP } from "node:net";
import { describe, expect, it } from "vitest";
import { isLocalhostName, isPublicAddress, nonPublicRange } from "./egress.js";
import { egressLookup, refusalOf, type ResolveAll } from "./sender.js";
import { WebhookInputError, validateEndpoint } from "./store.js";

const PUBLIC = true;
const PRIVATE = false;

/** [address, public?]: the last address before each non-public range, its first and last, the first after. */
const IPV4: Array<[string, boolean]> = [
  ["0.0.0.0", PRIVATE],
  ["0.255.255.255", PRIVATE],
  ["1.0.0.0", PUBLIC],
  ["9.255.255.255", PUBLIC],
  ["10.0.0.0", PRIVATE],
  ["10.255.255.255", PRIVATE],
  ["11.0.0.0", PUBLIC],
  ["100.63.255.255", PUBLIC],
  ["100.64.0.0", PRIVATE],
  ["100.127.255.255", PRIVATE],
  ["100.128.0.0", PUBLIC],
  ["126.255.255.255", PUBLIC],
  ["127.0.0.0", PRIVATE],
  ["127.0.0.1", PRIVATE],
  ["127.255.255.255", PRIVATE],
  ["128.0.0.0", PUBLIC],
  ["169.253.255.255", PUBLIC],
  ["169.254.0.0", PRIVATE],
  ["169.254.169.254", PRIVATE],
  ["169.254.255.255", PRIVATE],
  ["169.255.0.0", PUBLIC],
  ["172.15.255.255", PUBLIC],
  ["172.16.0.0", PRIVATE],
  ["172.31.255.255", PRIVATE],
  ["172.32.0.0", PUBLIC],
  ["191.255.255.255", PUBLIC],
  ["192.0.0.0", PRIVATE],
  ["192.0.0.255", PRIVATE],
  ["192.0.1.0", PUBLIC],
  ["192.0.1.255", PUBLIC],
  ["192.0.2.0", PRIVATE],
  ["192.0.2.255", PRIVATE],
  ["192.0.3.0", PUBLIC],
  ["192.88.98.255", PUBLIC],
  ["192.88.99.0", PRIVATE],
  ["192.88.99.255", PRIVATE],
  ["192.88.100.0", PUBLIC],
  ["192.167.255.255", PUBLIC],
  ["192.168.0.0", PRIVATE],
  ["192.168.255.255", PRIVATE],
  ["192.169.0.0", PUBLIC],
  ["198.17.255.255", PUBLIC],
  ["198.18.0.0", PRIVATE],
  ["198.19.255.255", PRIVATE],
  ["198.20.0.0", PUBLIC],
  ["198.51.99.255", PUBLIC],
  ["198.51.100.0", PRIVATE],
  ["198.51.100.255", PRIVATE],
  ["198.51.101.0", PUBLIC],
  ["203.0.112.255", PUBLIC],
  ["203.0.113.0", PRIVATE],
  ["203.0.113.255", PRIVATE],
  ["203.0.114.0", PUBLIC],
  ["223.255.255.255", PUBLIC],
  ["224.0.0.0", PRIVATE],
  ["239.255.255.255", PRIVATE],
  ["240.0.0.0", PRIVATE],
  ["255.255.255.255", PRIVATE],
  ["8.8.8.8", PUBLIC],
  ["93.184.216.34", PUBLIC],
];

const IPV6: Array<[string, boolean]> = [
  // Unspecified, loopback, and the rest of ::/8 (IPv4-compatible, IPv4-translated: reserved).
  ["::", PRIVATE],
  ["::1", PRIVATE],
  ["0:0:0:0:0:0:0:1", PRIVATE],
  ["0000:0000:0000:0000:0000:0000:0000:0001", PRIVATE],
  ["::2", PRIVATE],
  ["::8.8.8.8", PRIVATE],
  ["::ffff:0:8.8.8.8", PRIVATE],
  ["ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["100::", PRIVATE],
  ["100::ffff:ffff:ffff:ffff", PRIVATE],
  ["100:0:0:1::", PUBLIC],
  // IPv4-mapped ::ffff:0:0/96: the embedded address decides, in dotted or hex form.
  ["::ffff:127.0.0.1", PRIVATE],
  ["::ffff:7f00:1", PRIVATE],
  ["::FFFF:A9FE:A9FE", PRIVATE],
  ["::ffff:169.254.169.254", PRIVATE],
  ["::ffff:10.0.0.1", PRIVATE],
  ["::ffff:0.0.0.0", PRIVATE],
  ["::ffff:255.255.255.255", PRIVATE],
  ["::ffff:8.8.8.8", PUBLIC],
  ["0:0:0:0:0:ffff:808:808", PUBLIC],
  // NAT64 64:ff9b::/96 (embedded decides) and its local-use neighbour 64:ff9b:1::/48 (never).
  ["64:ff9b::8.8.8.8", PUBLIC],
  ["64:ff9b::808:808", PUBLIC],
  ["64:ff9b::7f00:1", PRIVATE],
  ["64:ff9b::10.0.0.1", PRIVATE],
  ["64:ff9b:1::", PRIVATE],
  ["64:ff9b:1:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["64:ff9b:2::", PRIVATE], // still ::/8
  // 6to4 2002::/16: bits 16..47 are an IPv4 address.
  ["2002:808:808::1", PUBLIC],
  ["2002:7f00:1::", PRIVATE],
  ["2002:c0a8:101::1", PRIVATE],
  ["2002:a9fe:a9fe::", PRIVATE],
  ["2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["2003::", PUBLIC],
  // Teredo, benchmarking, documentation.
  ["2001::", PRIVATE],
  ["2001:0:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["2001:1::", PUBLIC],
  ["2001:2::", PRIVATE],
  ["2001:2:0:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["2001:2:1::", PUBLIC],
  ["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["2001:db8::", PRIVATE],
  ["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["2001:db9::", PUBLIC],
  // ORCHID (deprecated) and SRv6 SIDs: not globally reachable.
  ["2001:f:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["2001:10::", PRIVATE],
  ["2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["2001:20::", PUBLIC],
  ["5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["5f00::", PRIVATE],
  ["5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["5f01::", PUBLIC],
  ["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["3fff::", PRIVATE],
  ["3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["3fff:1000::", PUBLIC],
  // Unique local, link-local (zone ids too), site-local, multicast.
  ["fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["fc00::", PRIVATE],
  ["fd12:3456::1", PRIVATE],
  ["fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["fe00::", PUBLIC],
  ["fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC],
  ["fe80::", PRIVATE],
  ["fe80::1%eth0", PRIVATE],
  ["fe80::1%2", PRIVATE],
  ["febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["fec0::1", PRIVATE],
  ["feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  ["ff00::", PRIVATE],
  ["ff02::1", PRIVATE],
  ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIVATE],
  // Ordinary global unicast, in several spellings.
  ["2606:4700::1111", PUBLIC],
  ["2606:4700:0:0:0:0:0:1111", PUBLIC],
  ["2606:4700::1111%1", PUBLIC],
  ["2A00:1450:4001:82B::200E", PUBLIC],
];

describe("the webhook address classifier", () => {
  it.each([...IPV4, ...IPV6])("%s is public: %s", (ip, expected) => {
    expect(isIP(ip), "a form net.isIP accepts").not.toBe(0);
    expect(isPublicAddress(ip)).toBe(expected);
  });

  it("names the range, and the embedded IPv4 address's range for mapped, NAT64 and 6to4 forms", () => {
    expect(nonPublicRange("169.254.169.254")).toBe("169.254.0.0/16 link-local (cloud metadata)");
    expect(nonPublicRange("::1")).toBe("::1/128 loopback");
    expect(nonPublicRange("::ffff:127.0.0.1")).toBe("::ffff:0:0/96 IPv4-mapped of 127.0.0.1 (127.0.0.0/8 loopback)");
    expect(nonPublicRange("2002:c0a8:101::1")).toBe("2002::/16 6to4 of 192.168.1.1 (192.168.0.0/16 private)");
    expect(nonPublicRange("8.8.8.8")).toBeNull();
  });

  it("never calls anything that is not an IP address public", () => {
    for (const s of ["", "localhost", "example.com", "127.1", "0x7f000001", "[::1]", "1.2.3.4.5", "::ffff:1.2.3", "256.0.0.1"]) {
      expect(isPublicAddress(s), s).toBe(false);
      expect(nonPublicRange(s)).toBe("not an IP address");
    }
  });

  it("knows localhost and names under .localhost, with or without a trailing dot", () => {
    expect(["localhost", "LOCALHOST", "localhost.", "a.b.localhost", "x.localhost.."].map(isLocalhostName)).toEqual([true, true, true, true, true]);
    expect(["localhost.example.com", "mylocalhost", "example.com"].map(isLocalhostName)).toEqual([false, false, false]);
  });
});

describe("endpoint URLs under the egress policy", () => {
  const refused = [
    "http://127.0.0.1:8080/hook",
    "http://127.1/hook",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/",
    "http://192.168.1.1/",
    "https://[::1]/hook",
    "https://[::]/",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[fd00::1]/",
    "https://[fe80::1]/",
    "https://[64:ff9b::a00:1]/",
    "https://[2002:7f00:1::]/",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost:3000/",
  ];
  const accepted = ["https://hooks.example.com/x", "https://93.184.216.34/hook", "https://[2606:4700::1111]/hook", "https://[::ffff:8.8.8.8]/", "https://localhost.example.com/"];

  it.each(refused)("refuses %s by field url, unless private networks are allowed", (url) => {
    const e = (() => {
      try {
        validateEndpoint({ id: "x", url, eventKinds: [] });
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(WebhookInputError);
    expect((e as WebhookInputError).field).toBe("url");
    expect((e as WebhookInputError).message).toMatch(/is not a public address/);
    expect(() => validateEndpoint({ id: "x", url, eventKinds: [] }, { allowPrivateNetworks: true })).not.toThrow();
  });

  it.each(accepted)("accepts %s (hostnames are checked at connect time)", (url) => {
    expect(() => validateEndpoint({ id: "x", url, eventKinds: [] })).not.toThrow();
  });
});

describe("the sender's lookup", () => {
  const lookup = (resolve: ResolveAll, allow: boolean, all: boolean) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: string | LookupAddress[]; family?: number }>((done) =>
      egressLookup(resolve, allow)("hooks.example", { all, family: 0 }, (err, address, family) => done({ err, address, family })),
    );
  const answers =
    (...addresses: string[]): ResolveAll =>
    async () =>
      addresses.map((address) => ({ address, family: isIP(address) }));

  it("hands every address to the socket when all are public, in the form it asked for", async () => {
    expect(await lookup(answers("93.184.216.34", "2606:4700::1111"), false, true)).toEqual({
      err: null,
      address: [
        { address: "93.184.216.34", family: 4 },
        { address: "2606:4700::1111", family: 6 },
      ],
      family: undefined,
    });
    expect(await lookup(answers("93.184.216.34"), false, false)).toEqual({ err: null, address: "93.184.216.34", family: 4 });
  });

  it("refuses a name when any of its addresses is not public (a rebinding mix), naming it", async () => {
    for (const all of [true, false]) {
      const r = await lookup(answers("93.184.216.34", "169.254.169.254"), false, all);
      expect(r.err?.message).toBe("refused: hooks.example does not resolve to a public address (webhook egress policy)");
      expect(r.err?.code).toBe("ERR_WEBHOOK_EGRESS_REFUSED");
    }
    expect((await lookup(answers("::ffff:127.0.0.1"), false, true)).err?.message).toMatch(/^refused: [^ ]+ does not resolve to a public address/);
    expect(refusalOf("h", [{ address: "8.8.8.8" }])).toBeNull();
  });

  it("allows private addresses when told to, and passes resolver failures and empty answers on as errors", async () => {
    expect((await lookup(answers("127.0.0.1"), true, false)).address).toBe("127.0.0.1");
    const failing: ResolveAll = async () => {
      throw Object.assign(new Error("getaddrinfo ENOTFOUND hooks.example"), { code: "ENOTFOUND" });
    };
    expect((await lookup(failing, true, true)).err?.code).toBe("ENOTFOUND");
    expect((await lookup(answers(), true, true)).err?.code).toBe("ENOTFOUND");
  });

  it("under the policy answers a name that does not resolve exactly like one that resolves to an internal address (no DNS oracle for tenants)", async () => {
    const failing: ResolveAll = async () => {
      throw Object.assign(new Error("getaddrinfo ENOTFOUND hooks.example"), { code: "ENOTFOUND" });
    };
    const internal = (await lookup(answers("10.1.2.3"), false, true)).err;
    for (const r of [await lookup(failing, false, true), await lookup(answers(), false, true)]) {
      expect(r.err?.code).toBe("ERR_WEBHOOK_EGRESS_REFUSED");
      expect(r.err?.message).toBe(internal?.message);
    }
  });
});
