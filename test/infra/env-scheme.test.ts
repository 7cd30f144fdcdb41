/**
 * The one environment scheme of the five services (docs/deployment.md, "Environment"):
 * each service's own variables are <SERVICE>_<WHAT> (SERVICE = METERING | RATING | LEDGER |
 * CREDIT_WALLET | INVOICING), a peer's address is <PEER>_URL, and the shared ones are DATABASE_URL,
 * REDIS_URL, NANOBILL_API_KEYS, NANOBILL_INTERNAL_API_KEY, NANOBILL_LOG_LEVEL,
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS, NANOBILL_MIGRATE_ON_START,
 * OTEL_TRACES_SAMPLER_ARG. Each service's loadConfig is run on the scheme's variables,
 * old names are checked to be refused (Nanobill's own) or to have no effect (generic ones), and the
 * two producers of service env (the stack and the Kubernetes manifests) are checked to set only
 * names of the scheme.
 */
import { describe, expect, test } from "vitest";
import { ConfigError, type Env } from "@nanobill/service-kit";
import { loadConfig as loadMetering } from "../../apps/metering/src/config.js";
import { loadConfig as loadRating } from "../../apps/rating/src/config.js";
import { loadConfig as loadLedger } from "../../apps/ledger/src/config.js";
import { loadConfig as loadWallet } from "../../apps/credit-wallet/src/config.js";
import { loadConfig as loadInvoicing } from "../../apps/invoicing/src/config.js";
import { serviceEnv, STACK_SERVICES } from "../../libs/platform/src/stack.js";
import type { ServiceName } from "../../libs/platform/src/platform.js";
import { CONFIG_MAP, SERVICE_NAMES, deployment, configMap, SERVICES, consumerStatefulSet, migrationsJob } from "../../infra/k8s/render.js";

type Loaded = {
  port: number;
  host: string;
  databaseUrl: string | undefined;
  dataDir: string;
  schema: string;
  poolMax: number;
  apiKeys: string;
  logLevel: string;
};

interface Row {
  service: ServiceName;
  prefix: string;
  load: (env: Env) => Loaded;
  defaultPort: number;
  /** Peers this service calls: variable -> field of its config. */
  peers: Record<string, string>;
  /** Does it call other services (then NANOBILL_INTERNAL_API_KEY is required)? */
  callsOthers: boolean;
  /** Names it read before the scheme, each refused with a ConfigError naming it. */
  retired: string[];
  /** Generic names it read before the scheme: no longer have any effect. */
  ignored: Record<string, { field: keyof Loaded; value: string }>;
}

const ROWS: Row[] = [
  {
    service: "metering",
    prefix: "METERING",
    load: loadMetering,
    defaultPort: 7001,
    peers: {},
    callsOthers: false,
    retired: [],
    ignored: { NANOBILL_DATA_DIR: { field: "dataDir", value: "/old/data" } },
  },
  {
    service: "rating",
    prefix: "RATING",
    load: loadRating,
    defaultPort: 7002,
    peers: { METERING_URL: "meteringUrl", CREDIT_WALLET_URL: "walletUrl" },
    callsOthers: true,
    retired: ["NANOBILL_INTERNAL_KEY"],
    ignored: { PORT: { field: "port", value: "9999" }, HOST: { field: "host", value: "10.9.9.9" }, DB_SCHEMA: { field: "schema", value: "old_rating" }, DATA_DIR: { field: "dataDir", value: "/old/data" } },
  },
  {
    service: "ledger",
    prefix: "LEDGER",
    load: loadLedger,
    defaultPort: 7003,
    peers: {},
    callsOthers: false,
    retired: [],
    ignored: { PORT: { field: "port", value: "9999" }, HOST: { field: "host", value: "10.9.9.9" } },
  },
  {
    service: "credit-wallet",
    prefix: "CREDIT_WALLET",
    load: loadWallet,
    defaultPort: 7004,
    peers: { LEDGER_URL: "ledgerUrl" },
    callsOthers: true,
    retired: [
      "LEDGER_API_KEY",
      "WALLET_DATA_DIR",
      "WALLET_DB_SCHEMA",
      "WALLET_DB_POOL_MAX",
      "WALLET_REDIS_PREFIX",
      "WALLET_REBUILD_ON_START",
      "WALLET_EXPIRY_NOTICE_MS",
      "WALLET_EXPIRY_GRACE_MS",
      "WALLET_BACKGROUND_INTERVAL_MS",
    ],
    ignored: { PORT: { field: "port", value: "9999" }, HOST: { field: "host", value: "10.9.9.9" } },
  },
  {
    service: "invoicing",
    prefix: "INVOICING",
    load: loadInvoicing,
    defaultPort: 7005,
    peers: { RATING_URL: "ratingUrl", CREDIT_WALLET_URL: "walletUrl", LEDGER_URL: "ledgerUrl" },
    callsOthers: true,
    retired: ["WALLET_URL"],
    ignored: { NANOBILL_DATA_DIR: { field: "dataDir", value: "/old/data" } },
  },
];

/** Variables shared by every service (not prefixed by a service). */
const SHARED = new Set([
  "DATABASE_URL",
  "REDIS_URL",
  "NANOBILL_API_KEYS",
  "NANOBILL_INTERNAL_API_KEY",
  "NANOBILL_LOG_LEVEL",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_SERVICE_NAME",
  "NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS",
  "NANOBILL_MIGRATE_ON_START",
  "OTEL_TRACES_SAMPLER_ARG",
]);
/** Process plumbing, not service configuration. */
const PROCESS = new Set(["PATH", "HOME", "NODE_ENV", "NODE_OPTIONS", "NANOBILL_SERVICE"]);
const PREFIXES = ROWS.map((r) => r.prefix);
const ALL_RETIRED = new Set([...ROWS.flatMap((r) => r.retired), "PORT", "HOST", "DB_SCHEMA", "DATA_DIR", "LOG_LEVEL", "OTEL_EXPORTER_OTLP_ENDPOINT"]);

/** A name of the scheme: shared, or <SERVICE>_<WHAT> of one of the five. */
function inScheme(name: string): boolean {
  return SHARED.has(name) || PREFIXES.some((p) => name.startsWith(`${p}_`));
}

/** The scheme's variables with values distinct per service, so a value read from the wrong name shows. */
function schemeEnv(r: Row): Record<string, string> {
  const p = r.prefix;
  return {
    DATABASE_URL: "postgres://svc@db.example:5432/nanobill",
    REDIS_URL: "redis://redis.example:6379/3",
    NANOBILL_API_KEYS: "tnt_a:admin:key_admin_0001,*:internal:key_internal_01",
    NANOBILL_INTERNAL_API_KEY: "key_internal_01",
    NANOBILL_LOG_LEVEL: "warn",
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector.example:4318/v1/traces",
    NANOBILL_MIGRATE_ON_START: "false",
    OTEL_TRACES_SAMPLER_ARG: "0.25",
    [`${p}_PORT`]: String(8100 + ROWS.indexOf(r)),
    [`${p}_HOST`]: `10.0.0.${ROWS.indexOf(r) + 1}`,
    [`${p}_DATA_DIR`]: `/data/${r.service}`,
    [`${p}_DB_SCHEMA`]: `s_${p.toLowerCase()}`,
    [`${p}_DB_POOL_MAX`]: String(20 + ROWS.indexOf(r)),
    METERING_URL: "http://metering.example:1",
    RATING_URL: "http://rating.example:2",
    LEDGER_URL: "http://ledger.example:3",
    CREDIT_WALLET_URL: "http://credit-wallet.example:4",
    INVOICING_URL: "http://invoicing.example:5",
  };
}

/** A field of a loaded config by name. */
function get(c: Loaded, field: string): unknown {
  return (c as unknown as Record<string, unknown>)[field];
}

function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe.each(ROWS)("$service reads the one scheme", (r) => {
  test("every scheme variable lands in its config field", () => {
    const env = schemeEnv(r);
    const c = r.load(env);
    expect(c.port).toBe(Number(env[`${r.prefix}_PORT`]));
    expect(c.host).toBe(env[`${r.prefix}_HOST`]);
    expect(c.databaseUrl).toBe(env.DATABASE_URL);
    expect(c.dataDir).toBe(env[`${r.prefix}_DATA_DIR`]);
    expect(c.schema).toBe(env[`${r.prefix}_DB_SCHEMA`]);
    expect(c.poolMax).toBe(Number(env[`${r.prefix}_DB_POOL_MAX`]));
    expect(c.apiKeys).toBe(env.NANOBILL_API_KEYS);
    expect(c.logLevel).toBe("warn");
    for (const [variable, field] of Object.entries(r.peers)) expect(get(c, field), variable).toBe(env[variable]);
    if (r.callsOthers) expect(get(c, "internalApiKey")).toBe(env.NANOBILL_INTERNAL_API_KEY);
    expect(get(c, "otlpTracesEndpoint")).toBe(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); // every service exports traces
    expect(get(c, "migrateOnStart")).toBe(false);
    expect(get(c, "tracesSampleRatio")).toBe(0.25);
  });

  test("unset, each falls back to its documented default (port 700x as npm start, schema = service name)", () => {
    const env: Env = { NANOBILL_API_KEYS: "tnt_a:admin:key_admin_0001", NANOBILL_INTERNAL_API_KEY: "key_internal_01" };
    const c = r.load(env);
    expect(c.port).toBe(r.defaultPort);
    expect(c.host).toBe("0.0.0.0");
    expect(c.databaseUrl).toBeUndefined();
    expect(c.dataDir).toBe(`./.data/${r.service}`);
    expect(c.schema).toBe(r.service.replace("-", "_"));
    expect(c.poolMax).toBe(10);
    expect(c.logLevel).toBe("info");
    expect(get(c, "migrateOnStart")).toBe(true);
    expect(get(c, "tracesSampleRatio")).toBe(1);
    const defaultPorts: Record<string, number> = { METERING_URL: 7001, RATING_URL: 7002, LEDGER_URL: 7003, CREDIT_WALLET_URL: 7004 };
    for (const [variable, field] of Object.entries(r.peers)) expect(get(c, field), variable).toBe(`http://127.0.0.1:${defaultPorts[variable]}`);
  });

  test("a bad or missing value is a ConfigError naming the variable", () => {
    const env = schemeEnv(r);
    const p = r.prefix;
    expect(configErrorOf(() => r.load({ ...env, [`${p}_PORT`]: "80x" })).variable).toBe(`${p}_PORT`);
    expect(configErrorOf(() => r.load({ ...env, [`${p}_DB_POOL_MAX`]: "1" })).variable).toBe(`${p}_DB_POOL_MAX`);
    expect(configErrorOf(() => r.load({ ...env, DATABASE_URL: "not a url" })).variable).toBe("DATABASE_URL");
    expect(configErrorOf(() => r.load({ ...env, NANOBILL_LOG_LEVEL: "loud" })).variable).toBe("NANOBILL_LOG_LEVEL");
    expect(configErrorOf(() => r.load({ ...env, NANOBILL_MIGRATE_ON_START: "no thanks" })).variable).toBe("NANOBILL_MIGRATE_ON_START");
    for (const bad of ["1.5", "-0.1", "0.1.2", "half", "1e-3"]) expect(configErrorOf(() => r.load({ ...env, OTEL_TRACES_SAMPLER_ARG: bad })).variable).toBe("OTEL_TRACES_SAMPLER_ARG");
    expect(configErrorOf(() => r.load({ ...env, NANOBILL_API_KEYS: "" })).variable).toBe("NANOBILL_API_KEYS");
    for (const variable of Object.keys(r.peers)) expect(configErrorOf(() => r.load({ ...env, [variable]: "::" })).variable).toBe(variable);
    if (r.callsOthers) expect(configErrorOf(() => r.load({ ...env, NANOBILL_INTERNAL_API_KEY: "" })).variable).toBe("NANOBILL_INTERNAL_API_KEY");
  });

  test("generic names it read before the scheme (PORT, HOST, ...) have no effect", () => {
    const env = schemeEnv(r);
    const base = r.load(env);
    for (const [old, { field, value }] of Object.entries(r.ignored)) {
      const c = r.load({ ...env, [old]: value });
      expect(get(c, field), `${old}=${value}`).toBe(get(base, field));
    }
  });
});

describe.each(ROWS.filter((r) => r.retired.length > 0))("$service refuses the names it read before the scheme", (r) => {
  test("each old name still set is a ConfigError naming it and its replacement, a name of the scheme", () => {
    for (const old of r.retired) {
      const e = configErrorOf(() => r.load({ ...schemeEnv(r), [old]: "1" }));
      expect(e.variable).toBe(old);
      expect(e.message).toMatch(/is no longer read: set [A-Z_]+ instead/);
      const replacement = /set ([A-Z_]+) instead/.exec(e.message)![1]!;
      expect(inScheme(replacement) && !ALL_RETIRED.has(replacement), `${old} -> ${replacement} is a name of the scheme`).toBe(true);
    }
  });
});

describe("what the stack and the manifests give each service", () => {
  const ports = Object.fromEntries(STACK_SERVICES.map((n, i) => [n, 7101 + i])) as Record<ServiceName, number>;
  const urls = Object.fromEntries(STACK_SERVICES.map((n) => [n, `http://127.0.0.1:${ports[n]}`])) as Record<ServiceName, string>;

  test.each(ROWS)("stack: $service gets only names of the scheme, none retired, and its loader reads its port, schema and peers from them", (r) => {
    const env = serviceEnv(r.service, { databaseUrl: "postgres://postgres@127.0.0.1:5432/test", redisUrl: "redis://127.0.0.1:6379/9", redisPrefix: "nb:t:wallet:", apiKeys: [{ tenant: "tnt_a", scopes: ["admin"], key: "key_admin_0001" }] }, {
      ports,
      urls,
      internalKey: "key_internal_01",
      schemaPrefix: "t_",
    });
    const names = Object.keys(env).filter((n) => !PROCESS.has(n));
    expect(names.filter((n) => !inScheme(n))).toEqual([]);
    expect(names.filter((n) => ALL_RETIRED.has(n))).toEqual([]);
    const c = r.load(env);
    expect(c.port).toBe(ports[r.service]);
    expect(c.host).toBe("127.0.0.1");
    expect(c.schema).toBe(`t_${r.service.replace("-", "_")}`);
    for (const [variable, field] of Object.entries(r.peers)) {
      const peer = STACK_SERVICES.find((n) => `${n.toUpperCase().replace("-", "_")}_URL` === variable)!;
      expect(get(c, field), variable).toBe(urls[peer]);
    }
    if (r.service === "credit-wallet") expect((c as unknown as { wallet: { redisPrefix: string } }).wallet.redisPrefix).toBe("nb:t:wallet:");
  });

  test("manifests: the ConfigMap and every container set only names of the scheme, none retired", () => {
    const names = new Set(Object.keys(configMap().data ?? {}));
    for (const s of SERVICES) {
      const pods = [deployment(s).spec!.template, migrationsJob(s).spec?.template, consumerStatefulSet(s)?.spec?.template].filter((t) => t !== undefined);
      for (const t of pods) for (const c of [...t.spec!.containers, ...(t.spec!.initContainers ?? [])]) for (const e of c.env ?? []) names.add(e.name);
    }
    const used = [...names].filter((n) => !PROCESS.has(n));
    expect(used.filter((n) => !inScheme(n))).toEqual([]);
    expect(used.filter((n) => ALL_RETIRED.has(n))).toEqual([]);
    expect(CONFIG_MAP).toBe("nanobill-config");
    expect(SERVICE_NAMES.length).toBe(ROWS.length);
  });
});
