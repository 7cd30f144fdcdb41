/**
 * Offline validation of infra/k8s: every YAML document against the Kubernetes schemas
 * (kubernetes-models, plus a strict unknown-field pass), the base equal to a fresh render of
 * infra/k8s/render.ts, each overlay rendered by test/infra/kustomize-lite.ts and validated again,
 * and the Nanobill invariants (hardening, probes, one full set of objects per service, secrets
 * only by reference, config the services can parse).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { SHUTDOWN_TOTAL_MS_MAX } from "@nanobill/service-kit";
import {
  API_CLIENT_LABEL,
  BASE_DIR,
  CONFIG_MAP,
  DATASTORE_PORTS,
  EGRESS_COMPONENT_DIR,
  SERVICES,
  CONTAINER_PORT,
  PORT_NAME,
  PRESTOP_SLEEP_S,
  SERVICE_NAMES,
  SHARED_SECRET,
  type ServiceName,
  TERMINATION_GRACE_S,
  dbSecretOf,
  renderBase,
  renderEgressComponent,
  schemaOf,
} from "../../infra/k8s/render.js";
import {
  type Container,
  type ServiceExpectations,
  egressAdmits,
  ingressAdmits,
  matchesSelector,
  plaintextSecretProblems,
  podProblems,
  podLabelsOf,
  podSpecOf,
  referenceProblems,
  schemaProblems,
  serviceSetProblems,
} from "./k8s-checks.js";
import { type Doc, build, jsonPatch, kustomizationFile, readYamlDocs, referencedPaths, strategicMerge } from "./kustomize-lite.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const K8S = join(ROOT, "infra/k8s");
const OVERLAYS = ["dev", "prod"] as const;

const EXPECT: ServiceExpectations = {
  services: SERVICE_NAMES,
  port: CONTAINER_PORT,
  portName: PORT_NAME,
  graceSecondsMin: Math.ceil(SHUTDOWN_TOTAL_MS_MAX / 1000),
};

/** Secrets the prod overlay expects to exist (created out of band) -> their keys. Documented in docs/deployment.md. */
const EXTERNAL_SECRETS = new Map<string, string[]>([
  [SHARED_SECRET, ["REDIS_URL", "NANOBILL_API_KEYS", "NANOBILL_INTERNAL_API_KEY"]],
  ...SERVICE_NAMES.map((s) => [dbSecretOf(s), ["DATABASE_URL"]] as [string, string[]]),
]);

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const yamlFiles = walk(K8S).filter((p) => /\.ya?ml$/.test(p));
const kustomizationDirs = yamlFiles.filter((p) => /(^|\/)kustomization\.ya?ml$/.test(p)).map((p) => resolve(p, ".."));

/** Files kustomizations use as patches (partial objects: validated through the rendered overlays). */
function patchFiles(): Set<string> {
  const out = new Set<string>();
  for (const dir of kustomizationDirs) {
    const k = readYamlDocs(kustomizationFile(dir)!)[0] as { patches?: Array<{ path?: string }> };
    for (const p of k.patches ?? []) if (p.path) out.add(join(dir, p.path));
  }
  return out;
}

function docsOf(path: string): Doc[] {
  return readYamlDocs(path) as Doc[];
}

const rendered = new Map(OVERLAYS.map((o) => [o, build(join(K8S, "overlays", o))]));
const base = build(join(K8S, "base"));

describe("infra/k8s files", () => {
  test("the committed base equals a fresh render of infra/k8s/render.ts", () => {
    const files = renderBase();
    const onDisk = readdirSync(BASE_DIR).sort();
    expect(onDisk).toEqual([...files.keys()].sort());
    for (const [name, text] of files) expect(readFileSync(join(BASE_DIR, name), "utf8"), `${name}: run npx tsx infra/k8s/render.ts`).toBe(text);
  });

  test("the committed egress component equals a fresh render", () => {
    const files = renderEgressComponent();
    expect(readdirSync(EGRESS_COMPONENT_DIR).sort()).toEqual([...files.keys()].sort());
    for (const [name, text] of files) expect(readFileSync(join(EGRESS_COMPONENT_DIR, name), "utf8"), `${name}: run npx tsx infra/k8s/render.ts`).toBe(text);
  });

  test("every YAML file parses, and is a kustomization, a resource or a patch that some kustomization uses", () => {
    const used = new Set<string>();
    for (const dir of kustomizationDirs) {
      used.add(kustomizationFile(dir)!);
      for (const r of referencedPaths(dir)) {
        const p = join(dir, r);
        expect(existsSync(p), `${relative(ROOT, dir)} refers to ${r}, which does not exist`).toBe(true);
        if (statSync(p).isDirectory()) expect(kustomizationFile(p), `${r} has no kustomization.yaml`).toBeDefined();
        used.add(p);
      }
    }
    for (const f of yamlFiles) {
      expect(() => readYamlDocs(f), relative(ROOT, f)).not.toThrow();
      expect(used.has(f), `${relative(ROOT, f)} is not used by any kustomization`).toBe(true);
    }
    // Env files of generators are referenced too.
    for (const f of walk(K8S).filter((p) => p.endsWith(".env"))) expect(used.has(f), `${relative(ROOT, f)} is unused`).toBe(true);
  });

  test("every resource document validates against the Kubernetes schemas, with no unknown kinds or fields", () => {
    const patches = patchFiles();
    const problems: string[] = [];
    let count = 0;
    for (const f of yamlFiles) {
      if (/(^|\/)kustomization\.ya?ml$/.test(f) || patches.has(f)) continue;
      for (const d of docsOf(f)) {
        count++;
        problems.push(...schemaProblems(d).map((p) => `${relative(ROOT, f)}: ${p}`));
      }
    }
    expect(problems).toEqual([]);
    expect(count).toBeGreaterThanOrEqual(SERVICE_NAMES.length * 6 + 1);
  });

  test("no Secret is written in YAML; generator files hold only CHANGE_ME placeholders", () => {
    for (const f of yamlFiles) for (const d of docsOf(f)) expect(d.kind, `${relative(ROOT, f)}: Secrets come from generators or out of band`).not.toBe("Secret");
    const envFiles = walk(K8S).filter((p) => p.endsWith(".env"));
    expect(envFiles.length).toBeGreaterThan(0);
    for (const f of envFiles) {
      expect(f, "generator files are examples: name them *.example.env").toMatch(/\.example\.env$/);
      for (const line of readFileSync(f, "utf8").split("\n")) {
        if (line.trim() === "" || line.startsWith("#")) continue;
        expect(line, `${relative(ROOT, f)}: every value must be a CHANGE_ME placeholder`).toMatch(/^[A-Z0-9_]+=.*CHANGE_ME/);
      }
    }
  });

  test("the OpenTelemetry Collector config is OTLP in -> batch -> OTLP out, every named part defined", () => {
    const cm = docsOf(join(K8S, "components/otel-collector/collector.yaml")).find((d) => d.kind === "ConfigMap" && d.metadata.name === "otel-collector-config")!;
    const cfg = parse((cm.data as Record<string, string>)["config.yaml"]!) as {
      receivers: Record<string, unknown>;
      processors: Record<string, unknown>;
      exporters: Record<string, unknown>;
      extensions?: Record<string, unknown>;
      service: { extensions?: string[]; pipelines: Record<string, { receivers: string[]; processors: string[]; exporters: string[] }> };
    };
    expect(Object.keys(cfg.service.pipelines).sort()).toEqual(["metrics", "traces"]);
    for (const [name, p] of Object.entries(cfg.service.pipelines)) {
      expect(p.receivers, name).toEqual(["otlp"]);
      expect(p.exporters, name).toEqual(["otlp"]);
      expect(p.processors.at(-1), `${name}: batch is the last processor`).toBe("batch");
      expect(p.processors[0], `${name}: memory_limiter is the first processor`).toBe("memory_limiter");
      for (const r of p.receivers) expect(cfg.receivers).toHaveProperty(r);
      for (const x of p.processors) expect(cfg.processors).toHaveProperty(x);
      for (const x of p.exporters) expect(cfg.exporters).toHaveProperty(x);
    }
    for (const x of cfg.service.extensions ?? []) expect(cfg.extensions).toHaveProperty(x);
    const otlp = cfg.receivers.otlp as { protocols: { grpc: { endpoint: string }; http: { endpoint: string } } };
    expect(otlp.protocols.grpc.endpoint).toBe("0.0.0.0:4317");
    expect(otlp.protocols.http.endpoint).toBe("0.0.0.0:4318");
  });
});

describe("docs/deployment.md", () => {
  test("names every Secret and key the prod overlay expects to exist", () => {
    const doc = readFileSync(join(ROOT, "docs/deployment.md"), "utf8");
    for (const [name, keys] of EXTERNAL_SECRETS) {
      expect(doc, name).toContain(`\`${name}\``);
      for (const k of keys) expect(doc, `${name} ${k}`).toContain(`\`${k}\``);
    }
  });
});

describe("the base", () => {
  test("each service has a Deployment, Service (port grpc), ServiceAccount, HPA, PDB and migrations Job, wired together", () => {
    expect(serviceSetProblems(base, EXPECT)).toEqual([]);
  });

  test("every pod is non-root, read-only, without capabilities, with resources and no service account token", () => {
    expect(base.flatMap(podProblems).filter((p) => !p.includes("image must have a tag"))).toEqual([]);
  });

  test("no plaintext secrets: secret-looking variables come from secretKeyRefs, config has no credentials", () => {
    expect(base.flatMap(plaintextSecretProblems)).toEqual([]);
  });

  test("pod grace covers preStop plus service-kit's shutdown limit", () => {
    expect(TERMINATION_GRACE_S).toBeGreaterThanOrEqual(PRESTOP_SLEEP_S + Math.ceil(SHUTDOWN_TOTAL_MS_MAX / 1000));
    for (const d of base.filter((x) => x.kind === "Deployment")) expect(podSpecOf(d)!.terminationGracePeriodSeconds).toBe(TERMINATION_GRACE_S);
  });

  test("rating's metering consumer runs only in the rating-consumer StatefulSet (outside the Service), whose pods split the partitions by lease", () => {
    const sts = base.filter((d) => d.kind === "StatefulSet");
    expect(sts.map((d) => d.metadata.name)).toEqual(["rating-consumer"]);
    const flag = (d: Doc): string | undefined => podSpecOf(d)!.containers[0]!.env?.find((e) => e.name === "RATING_CONSUMER_ENABLED")?.value;
    const env = (d: Doc, name: string): string | undefined => podSpecOf(d)!.containers[0]!.env?.find((e) => e.name === name)?.value;
    // Several consumer pods are safe only because batches are fenced by partition leases (on by
    // default: RATING_CONSUMER_LEASES unset or true), and at most one pod per partition works.
    const replicas = (sts[0]!.spec as { replicas: number }).replicas;
    expect(replicas).toBeGreaterThanOrEqual(2);
    expect(env(sts[0]!, "RATING_CONSUMER_LEASES") ?? "true").toBe("true");
    expect(replicas).toBeLessThanOrEqual(Number(env(sts[0]!, "RATING_CONSUMER_PARTITIONS")));
    expect(flag(sts[0]!)).toBe("true");
    expect(flag(base.find((d) => d.kind === "Deployment" && d.metadata.name === "rating")!)).toBe("false");
    for (const svc of base.filter((d) => d.kind === "Service")) {
      const sel = (svc.spec as { selector: Record<string, string> }).selector;
      expect(Object.entries(sel).every(([k, v]) => podLabelsOf(sts[0]!)[k] === v), `Service/${svc.metadata.name} selects the consumer`).toBe(false);
    }
    expect(base.some((d) => d.kind === "HorizontalPodAutoscaler" && (d.spec as { scaleTargetRef: { name: string } }).scaleTargetRef.name === "rating-consumer")).toBe(false);
  });

  test("the ConfigMap names every service's address and schema", () => {
    const cm = base.find((d) => d.kind === "ConfigMap" && d.metadata.name === CONFIG_MAP)!;
    const data = cm.data as Record<string, string>;
    for (const s of SERVICE_NAMES) {
      const p = s.toUpperCase().replace(/-/g, "_");
      expect(data[`${p}_URL`]).toBe(`http://${s}:${CONTAINER_PORT}`);
      expect(data[`${p}_DB_SCHEMA`]).toBe(schemaOf(s));
    }
  });
});

describe.each(OVERLAYS)("overlay %s, rendered", (overlay) => {
  const docs = rendered.get(overlay)!;

  test("every object validates against the Kubernetes schemas, with no unknown kinds or fields", () => {
    expect(docs.flatMap(schemaProblems)).toEqual([]);
  });

  test("each service keeps its full set of objects and the invariants", () => {
    expect(serviceSetProblems(docs, EXPECT)).toEqual([]);
    expect(docs.flatMap(podProblems)).toEqual([]);
    expect(docs.flatMap(plaintextSecretProblems)).toEqual([]);
  });

  test("every Secret, ConfigMap and ServiceAccount a pod reads is defined (Secrets: or documented as created out of band)", () => {
    expect(referenceProblems(docs, overlay === "prod" ? EXTERNAL_SECRETS : new Map())).toEqual([]);
  });

  test("everything lands in the overlay's namespace, which enforces the restricted Pod Security Standard", () => {
    const ns = docs.filter((d) => d.kind === "Namespace");
    expect(ns).toHaveLength(1);
    expect(ns[0]!.metadata.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    for (const d of docs.filter((x) => x.kind !== "Namespace")) expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe(ns[0]!.metadata.name);
  });
});

describe("overlay specifics", () => {
  test("dev: every HPA is 1..2, every service container small, example Secrets present", () => {
    const docs = rendered.get("dev")!;
    for (const h of docs.filter((d) => d.kind === "HorizontalPodAutoscaler")) expect(h.spec).toMatchObject({ minReplicas: 1, maxReplicas: 2 });
    for (const d of docs.filter((x) => x.kind === "Deployment" || x.kind === "StatefulSet")) {
      const c = podSpecOf(d)!.containers[0]!;
      expect(c.resources?.limits?.memory).toBe("512Mi");
      expect(c.env?.find((e) => e.name === "NODE_OPTIONS")?.value).toBe("--max-old-space-size=384");
    }
    expect(docs.filter((d) => d.kind === "Secret").map((d) => d.metadata.name).sort()).toEqual([...EXTERNAL_SECRETS.keys()].sort());
    // Every StatefulSet's pods have a PDB too (a drain evicts one consumer at a time).
    for (const st of docs.filter((d) => d.kind === "StatefulSet")) {
      const budgets = docs.filter((d) => d.kind === "PodDisruptionBudget" && matchesSelector(podLabelsOf(st), (d.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels));
      expect(budgets.map((b) => (b.spec as { maxUnavailable: number }).maxUnavailable), st.metadata.name).toEqual([1]);
    }
    // The reused dev tag is pulled on every start, by every container of every workload.
    const workloads = docs.filter((d) => podSpecOf(d) !== undefined);
    expect(workloads.length).toBeGreaterThanOrEqual(11);
    for (const d of workloads) {
      for (const c of [...podSpecOf(d)!.containers, ...(podSpecOf(d)!.initContainers ?? [])]) expect(c.imagePullPolicy, `${d.kind}/${d.metadata.name} ${c.name}`).toBe("Always");
    }
  });

  test("prod: no generated Secrets, the collector present, services export traces to it, images from the registry", () => {
    const docs = rendered.get("prod")!;
    expect(docs.filter((d) => d.kind === "Secret")).toEqual([]);
    expect(docs.some((d) => d.kind === "Deployment" && d.metadata.name === "otel-collector")).toBe(true);
    const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === CONFIG_MAP)!;
    expect((cm.data as Record<string, string>).OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).toBe("http://otel-collector:4318/v1/traces");
    for (const d of docs.filter((x) => x.kind === "Deployment" && x.metadata.name !== "otel-collector")) {
      for (const c of [...podSpecOf(d)!.containers, ...(podSpecOf(d)!.initContainers ?? [])]) expect(c.image).toBe("ghcr.io/nanobill/nanobill:0.1.0");
    }
    const ledger = podSpecOf(docs.find((d) => d.kind === "Deployment" && d.metadata.name === "ledger")!)!.containers[0]!;
    expect(ledger.resources?.limits?.memory).toBe("1536Mi");
    expect(ledger.env?.filter((e) => e.name === "NODE_OPTIONS")).toEqual([{ name: "NODE_OPTIONS", value: "--max-old-space-size=1152" }]);
  });
});

describe("ingressAdmits follows Kubernetes' NetworkPolicy rules", () => {
  const np = (ingress: unknown[], podSelector: object = { matchLabels: { app: "x" } }) =>
    ({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "p", namespace: "ns1" }, spec: { podSelector, policyTypes: ["Ingress"], ingress } }) as unknown as Doc;
  const x = { app: "x" };

  test("no rule denies; an empty or missing from / ports matches every peer / port; unselected pods are open", () => {
    expect(ingressAdmits([np([])], { pod: {} }, x, 80)).toBe(false);
    expect(ingressAdmits([np([{}])], { pod: {}, namespace: {} }, x, 80)).toBe(true);
    expect(ingressAdmits([np([{ from: [], ports: [] }])], { pod: {}, namespace: {} }, x, 80)).toBe(true);
    expect(ingressAdmits([np([{ ports: [{ port: 81 }] }])], { pod: {} }, x, 80)).toBe(false);
    expect(ingressAdmits([np([])], { pod: {} }, { app: "y" }, 80)).toBe(true);
  });

  test("a podSelector alone is this namespace; a namespaceSelector sees the namespace's name label; both must match", () => {
    const byPod = np([{ from: [{ podSelector: { matchLabels: { role: "c" } } }] }]);
    expect(ingressAdmits([byPod], { pod: { role: "c" } }, x, 80)).toBe(true);
    expect(ingressAdmits([byPod], { pod: { role: "c" }, namespace: {} }, x, 80)).toBe(false);
    const own = np([{ from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "ns1" } } }] }]);
    expect(ingressAdmits([own], { pod: {} }, x, 80)).toBe(true);
    const both = np([{ from: [{ namespaceSelector: { matchLabels: { team: "a" } }, podSelector: { matchLabels: { role: "c" } } }] }]);
    expect(ingressAdmits([both], { pod: { role: "c" }, namespace: { team: "a" } }, x, 80)).toBe(true);
    expect(ingressAdmits([both], { pod: { role: "d" }, namespace: { team: "a" } }, x, 80)).toBe(false);
  });

  test("shapes it does not evaluate throw instead of answering", () => {
    expect(() => ingressAdmits([np([{ ports: [{ port: "grpc" }] }])], { pod: {} }, x, 80)).toThrow(/named ports/);
    expect(() => ingressAdmits([np([{ ports: [{ port: 80, endPort: 90 }] }])], { pod: {} }, x, 80)).toThrow(/endPort/);
    expect(() => ingressAdmits([np([{ from: [{ ipBlock: { cidr: "10.0.0.0/8" } }] }])], { pod: {} }, x, 80)).toThrow(/ipBlock/);
  });
});

describe("egressAdmits follows Kubernetes' NetworkPolicy rules", () => {
  const x = { app: "x" };
  const np = (egress: unknown[], podSelector: unknown = { matchLabels: x }) =>
    ({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "p", namespace: "ns1" }, spec: { podSelector, policyTypes: ["Egress"], egress } }) as unknown as Doc;
  test("unselected pods go anywhere; selected ones only where a rule admits peer, port and protocol", () => {
    expect(egressAdmits([np([])], { app: "y" }, { ip: "1.2.3.4" }, 80)).toBe(true);
    expect(egressAdmits([np([])], x, { ip: "1.2.3.4" }, 80)).toBe(false);
    expect(egressAdmits([np([{}])], x, { ip: "1.2.3.4" }, 80)).toBe(true);
    const dns = np([{ ports: [{ protocol: "UDP", port: 53 }] }]);
    expect(egressAdmits([dns], x, { ip: "10.0.0.10" }, 53, "UDP")).toBe(true);
    expect(egressAdmits([dns], x, { ip: "10.0.0.10" }, 53, "TCP")).toBe(false);
    const block = np([{ to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["10.0.0.0/8", "169.254.0.0/16"] } }] }]);
    expect(egressAdmits([block], x, { ip: "8.8.8.8" }, 443)).toBe(true);
    expect(egressAdmits([block], x, { ip: "10.9.9.9" }, 443)).toBe(false);
    expect(egressAdmits([block], x, { ip: "169.254.169.254" }, 80)).toBe(false);
    expect(egressAdmits([block], x, { ip: "2001:4860::8888" }, 443)).toBe(false); // an IPv4 block holds no IPv6 address
    expect(egressAdmits([block], x, { pod: { app: "z" } }, 443)).toBe(false); // ipBlock peers are not pods
    const pods = np([{ to: [{ podSelector: { matchLabels: { app: "z" } } }] }]);
    expect(egressAdmits([pods], x, { pod: { app: "z" } }, 80)).toBe(true);
    expect(egressAdmits([pods], x, { pod: { app: "z" }, namespace: {} }, 80)).toBe(false);
    expect(egressAdmits([pods], x, { ip: "10.1.1.1" }, 80)).toBe(false);
    expect(() => egressAdmits([np([{ ports: [{ port: "grpc" }] }])], x, { ip: "1.1.1.1" }, 80)).toThrow(/named ports/);
  });
});

describe("the checks catch broken manifests", () => {
  const ledger = (): Doc => structuredClone(base.find((d) => d.kind === "Deployment" && d.metadata.name === "ledger")!);
  const main = (d: Doc): Container => podSpecOf(d)!.containers[0]!;

  test("a misspelt field and a wrong type are reported", () => {
    const d = ledger();
    (main(d).securityContext as Record<string, unknown>).readOnlyRootFileSystem = true;
    (main(d).readinessProbe as { grpc: { port: unknown } }).grpc.port = "grpc";
    const problems = schemaProblems(d).join("\n");
    expect(problems).toContain("unknown field /spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem");
    expect(problems).toContain("readinessProbe/grpc/port must be integer");
  });

  test("an unknown kind is reported", () => {
    expect(schemaProblems({ apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "w" } })).toHaveLength(1);
  });

  test("a writable root filesystem, missing limits, root user and an HTTP probe are reported", () => {
    const d = ledger();
    (main(d).securityContext as Record<string, unknown>).readOnlyRootFilesystem = false;
    delete main(d).resources!.limits;
    (podSpecOf(d)!.securityContext as Record<string, unknown>).runAsNonRoot = false;
    main(d).livenessProbe = { httpGet: { path: "/", port: 8080 } };
    const docs = base.map((x) => (x.kind === "Deployment" && x.metadata.name === "ledger" ? d : x));
    const all = [...podProblems(d), ...serviceSetProblems(docs, EXPECT)].join("\n");
    expect(all).toContain("readOnlyRootFilesystem must be true");
    expect(all).toContain("resources.limits.cpu must be set");
    expect(all).toContain("runAsNonRoot must be true");
    expect(all).toContain("livenessProbe must be grpc");
  });

  test("a missing PDB and a Service without a grpc port are reported", () => {
    const docs = base
      .filter((d) => !(d.kind === "PodDisruptionBudget" && d.metadata.name === "rating"))
      .map((d) => (d.kind === "Service" && d.metadata.name === "rating" ? { ...d, spec: { ...(d.spec as object), ports: [{ name: "http", port: 80 }] } } : d));
    const all = serviceSetProblems(docs, EXPECT).join("\n");
    expect(all).toContain("rating: no PodDisruptionBudget");
    expect(all).toContain("Service/rating: no port named grpc");
  });

  test("a plaintext database URL and a password in the ConfigMap are reported", () => {
    const d = ledger();
    main(d).env = [{ name: "DATABASE_URL", value: "postgres://u:hunter2@db/x" }];
    const cm = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "c" }, data: { LEDGER_URL: "http://admin:pw@ledger:8080" } } as Doc;
    const all = [...plaintextSecretProblems(d), ...plaintextSecretProblems(cm)].join("\n");
    expect(all).toContain("DATABASE_URL must come from a secretKeyRef");
    expect(all).toContain("LEDGER_URL has a URL with a password");
  });

  test("a reference to an undefined Secret key is reported", () => {
    const docs = rendered.get("dev")!.map((d) => (d.kind === "Secret" && d.metadata.name === SHARED_SECRET ? { ...d, data: {} } : d));
    expect(referenceProblems(docs).join("\n")).toContain("reads Secret nanobill-shared key NANOBILL_API_KEYS");
  });

  test("kustomize-lite: strategic merge by name, JSON patch test failures, patches that match nothing", () => {
    expect(strategicMerge({ env: [{ name: "A", value: "1" }, { name: "B", value: "2" }] }, { env: [{ name: "B", value: "3" }, { name: "C", value: "4" }] }, "")).toEqual({
      env: [
        { name: "A", value: "1" },
        { name: "B", value: "3" },
        { name: "C", value: "4" },
      ],
    });
    expect(() => jsonPatch({ a: [{ name: "X" }] }, [{ op: "test", path: "/a/0/name", value: "Y" }], "t")).toThrow(/expected "Y"/);
    expect(jsonPatch({ a: [1, 2] }, [{ op: "replace", path: "/a/1", value: 3 }, { op: "add", path: "/a/-", value: 4 }], "t")).toEqual({ a: [1, 3, 4] });
    expect(() => jsonPatch({ a: {} }, [{ op: "replace", path: "/a/b", value: 1 }], "t")).toThrow(/does not exist/);
  });
});

/** The process-config loader every apps/<svc>/src/config.ts exports (port, schema, databaseUrl in the result). */
const LOADERS = ["loadConfig"];
/** A service's manifests are checked against its code once it has a standalone entry (main.ts). */
const withMain = SERVICE_NAMES.filter((s) => existsSync(join(ROOT, "apps", s, "src/main.ts")));
const loaders = new Map<ServiceName, (env: Record<string, string>) => Record<string, unknown>>();
for (const s of withMain) {
  const p = join(ROOT, "apps", s, "src/config.ts");
  if (!existsSync(p)) continue;
  const mod = (await import(p)) as Record<string, unknown>;
  const f = LOADERS.map((n) => mod[n]).find((x) => typeof x === "function");
  if (f) loaders.set(s, f as (env: Record<string, string>) => Record<string, unknown>);
}

describe("the manifests give each service the variables its code reads", () => {
  const PLACEHOLDER_SECRETS: Record<string, string> = {
    DATABASE_URL: "postgres://svc@postgres:5432/nanobill",
    REDIS_URL: "redis://redis:6379",
    NANOBILL_API_KEYS: "tnt_demo:admin:placeholder_admin_key_0001,*:internal:placeholder_internal_key_01",
    NANOBILL_INTERNAL_API_KEY: "placeholder_internal_key_01",
  };

  /** The environment a service's container gets in the rendered prod overlay (secrets as placeholders). */
  function envOf(s: string, kind = "Deployment", name = s): Record<string, string> {
    const docs = rendered.get("prod")!;
    const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === CONFIG_MAP)!;
    const c = podSpecOf(docs.find((d) => d.kind === kind && d.metadata.name === name)!)!.containers[0]!;
    const env: Record<string, string> = { ...(cm.data as Record<string, string>) };
    for (const e of c.env ?? []) env[e.name] = e.value ?? PLACEHOLDER_SECRETS[e.valueFrom?.secretKeyRef?.key ?? e.name] ?? "";
    return env;
  }

  /** Variables read in apps/<svc>/src/{main,config}.ts through service-kit's env helpers: name -> has a default. */
  function readsOf(s: string): Map<string, boolean> {
    const out = new Map<string, boolean>();
    for (const f of ["main.ts", "config.ts"]) {
      const p = join(ROOT, "apps", s, "src", f);
      if (!existsSync(p)) continue;
      const src = readFileSync(p, "utf8");
      for (const m of src.matchAll(/\benv(String|Int|Url|Bool|Enum)\(\s*[\w.]+\s*,\s*"([A-Z][A-Z0-9_]*)"\s*([,)])/g)) {
        const hasDefault = m[1] !== "String" || m[3] === ",";
        out.set(m[2]!, (out.get(m[2]!) ?? false) || hasDefault);
      }
    }
    return out;
  }

  test("at least the services that already have a main.ts are checked", () => {
    expect(withMain.length).toBeGreaterThanOrEqual(1);
  });

  test.each(withMain)("%s: every required variable, every *_URL, and its port and schema variables are set", (s) => {
    const env = envOf(s);
    const reads = readsOf(s);
    const dep = rendered.get("prod")!.find((d) => d.kind === "Deployment" && d.metadata.name === s)!;
    const ports = (podSpecOf(dep)!.containers[0]!.ports ?? []).map((p) => p.containerPort);
    expect(reads.size, `no env reads found in apps/${s}/src/main.ts or config.ts`).toBeGreaterThan(0);
    const missing: string[] = [];
    for (const [name, hasDefault] of reads) {
      const needed = !hasDefault || name.endsWith("_URL") || name.endsWith("_KEY") || name.endsWith("API_KEYS");
      if (needed && !(name in env)) missing.push(name);
      const prefix = s.toUpperCase().replace(/-/g, "_");
      if (name === `${prefix}_PORT` && env[name] !== String(CONTAINER_PORT)) missing.push(`${name}=${CONTAINER_PORT}`);
      else if (/_PORT$/.test(name) && !ports.includes(Number(env[name]))) missing.push(`${name}=<one of the container ports ${ports.join(", ")}>`);
      if (name === `${prefix}_DB_SCHEMA` && env[name] !== schemaOf(s)) missing.push(`${name}=${schemaOf(s)}`);
    }
    expect(missing).toEqual([]);
  });

  test("the network policies admit exactly the calls the code makes (its <PEER>_URL reads), API clients, and nothing else", () => {
    const docs = rendered.get("prod")!;
    const prefixOf = (x: string) => x.toUpperCase().replace(/-/g, "_");
    const peersOf = (s: ServiceName) =>
      SERVICE_NAMES.filter((t) => t !== s && readsOf(s).has(`${prefixOf(t)}_URL`));
    // Pod labels as rendered (the Deployment's; the consumer pods': the rating-consumer StatefulSet's, the same shape for others).
    const podOf = (kind: string, name: string) => podLabelsOf(docs.find((d) => d.kind === kind && d.metadata.name === name)!);
    const server = (s: string) => podOf("Deployment", s);
    const consumerLabels = podOf("StatefulSet", "rating-consumer");
    const consumer = (s: string) => ({ ...consumerLabels, "app.kubernetes.io/name": s });
    const migrationsPod = (s: string) => podOf("Job", `${s}-migrate`);
    expect(consumerLabels["app.kubernetes.io/component"]).toBe("consumer");
    const calls = new Map(withMain.map((s) => [s, peersOf(s)]));
    expect(calls.get("invoicing")).toEqual(["rating", "ledger", "credit-wallet"]);
    for (const a of withMain) {
      for (const b of SERVICE_NAMES) {
        if (a === b) continue;
        const want = calls.get(a)!.includes(b);
        expect(ingressAdmits(docs, { pod: server(a) }, server(b), CONTAINER_PORT), `${a} -> ${b}`).toBe(want);
        expect(ingressAdmits(docs, { pod: consumer(a) }, server(b), CONTAINER_PORT), `${a} consumer -> ${b}`).toBe(want);
      }
    }
    for (const b of SERVICE_NAMES) {
      // API clients: a labelled pod here, any pod of a labelled namespace; nothing else, and only on the service's ports.
      expect(ingressAdmits(docs, { pod: { [API_CLIENT_LABEL]: "true" } }, server(b), CONTAINER_PORT), b).toBe(true);
      expect(ingressAdmits(docs, { pod: { app: "gateway" }, namespace: { [API_CLIENT_LABEL]: "true" } }, server(b), CONTAINER_PORT), b).toBe(true);
      expect(ingressAdmits(docs, { pod: { app: "stranger" } }, server(b), CONTAINER_PORT), b).toBe(false);
      expect(ingressAdmits(docs, { pod: { [API_CLIENT_LABEL]: "true" }, namespace: {} }, server(b), CONTAINER_PORT), `${b}: a labelled pod of another namespace`).toBe(false);
      expect(ingressAdmits(docs, { pod: { [API_CLIENT_LABEL]: "true" } }, server(b), 9999), b).toBe(false);
      // The migrations Job's pods and the consumer pods serve nobody.
      expect(ingressAdmits(docs, { pod: { [API_CLIENT_LABEL]: "true" } }, migrationsPod(b), CONTAINER_PORT), b).toBe(false);
      expect(ingressAdmits(docs, { pod: server("invoicing") }, consumer(b), CONTAINER_PORT), b).toBe(false);
    }
    // Pods of a shared namespace that are not Nanobill's are left alone; a namespace selected by name is not an API client.
    expect(ingressAdmits(docs, { pod: { app: "stranger" } }, { app: "someone-elses" }, 80)).toBe(true);
    expect(ingressAdmits(docs, { pod: {}, namespace: { "kubernetes.io/metadata.name": "nanobill" } }, server("ledger"), CONTAINER_PORT)).toBe(false);
    // metering's OTLP/HTTP receiver is admitted like its gRPC port.
    expect(ingressAdmits(docs, { pod: { [API_CLIENT_LABEL]: "true" } }, server("metering"), 4318)).toBe(true);
    // The collector takes OTLP from every Nanobill pod, from no one else.
    const collector = { "app.kubernetes.io/name": "otel-collector", "app.kubernetes.io/component": "telemetry", "app.kubernetes.io/part-of": "nanobill" };
    expect(docs.some((d) => d.kind === "Deployment" && matchesSelector(podLabelsOf(d), collector))).toBe(true);
    expect(ingressAdmits(docs, { pod: consumer("rating") }, collector, 4318)).toBe(true);
    expect(ingressAdmits(docs, { pod: { app: "stranger" } }, collector, 4318)).toBe(false);
  });

  test("the egress policies let each pod reach exactly DNS, PostgreSQL, its Redis, the collector, the services it calls and (webhook senders) public addresses", () => {
    const docs = rendered.get("prod")!;
    expect(rendered.get("dev")!.some((d) => d.kind === "NetworkPolicy" && d.metadata.name === "nanobill-default-deny-egress")).toBe(false);
    const prefixOf = (x: string) => x.toUpperCase().replace(/-/g, "_");
    const peersOf = (s: ServiceName) => SERVICE_NAMES.filter((t) => t !== s && readsOf(s).has(`${prefixOf(t)}_URL`));
    const podOf = (kind: string, name: string) => podLabelsOf(docs.find((d) => d.kind === kind && d.metadata.name === name)!);
    const server = (s: string) => podOf("Deployment", s);
    const consumer = (s: string) => ({ ...podOf("StatefulSet", "rating-consumer"), "app.kubernetes.io/name": s });
    const migrations = (s: string) => podOf("Job", `${s}-migrate`);
    // Which services send webhooks and use Redis, from the code (not only the table).
    const src = (s: string) => readFileSync(join(ROOT, "apps", s, "src", "index.ts"), "utf8");
    const sendsWebhooks = (s: ServiceName) => src(s).includes("createWebhookDispatcher(");
    for (const row of SERVICES) expect(row.webhooks, `${row.name}: webhooks column`).toBe(sendsWebhooks(row.name));
    const usesRedis = (s: ServiceName) => readsOf(s).has("REDIS_URL");
    const kubeDns = { pod: { "k8s-app": "kube-dns" }, namespace: { "kubernetes.io/metadata.name": "kube-system" } };
    const collector = { pod: { "app.kubernetes.io/name": "otel-collector", "app.kubernetes.io/component": "telemetry", "app.kubernetes.io/part-of": "nanobill" } };
    const managedPg = { ip: "10.20.0.5" };
    const inClusterPg = { pod: { app: "postgres" }, namespace: { "kubernetes.io/metadata.name": "databases" } };
    for (const s of SERVICE_NAMES) {
      const pods: Record<string, string>[] = [server(s), consumer(s), migrations(s)];
      for (const pod of pods) {
        const job = pod["app.kubernetes.io/component"] === "migrations";
        const at = `${s} (${pod["app.kubernetes.io/component"]})`;
        expect(egressAdmits(docs, pod, kubeDns, 53, "UDP"), `${at} DNS`).toBe(true);
        expect(egressAdmits(docs, pod, { ip: "169.254.20.10" }, 53, "UDP"), `${at} node-local DNS`).toBe(true);
        expect(egressAdmits(docs, pod, managedPg, DATASTORE_PORTS.postgres), `${at} PostgreSQL`).toBe(true);
        expect(egressAdmits(docs, pod, inClusterPg, DATASTORE_PORTS.postgres), `${at} in-cluster PostgreSQL`).toBe(true);
        expect(egressAdmits(docs, pod, collector, 4317), `${at} OTLP`).toBe(true);
        expect(egressAdmits(docs, pod, managedPg, 22), `${at} ssh`).toBe(false);
        const redis = SERVICES.find((r) => r.name === s)!.redis;
        expect(!usesRedis(s) || redis, `${s} reads REDIS_URL: its redis column must be true`).toBe(true);
        expect(egressAdmits(docs, pod, { ip: "10.20.0.6" }, DATASTORE_PORTS.redis), `${at} Redis`).toBe(redis && !job);
        // Webhook senders reach public addresses on any port, never the metadata endpoint, the pod network or loopback.
        const web = sendsWebhooks(s) && !job;
        expect(egressAdmits(docs, pod, { ip: "93.184.216.34" }, 443), `${at} public :443`).toBe(web);
        expect(egressAdmits(docs, pod, { ip: "93.184.216.34" }, 8443), `${at} public :8443`).toBe(web);
        expect(egressAdmits(docs, pod, { ip: "2606:4700::6810:84e5" }, 443), `${at} public IPv6`).toBe(web);
        for (const ip of ["169.254.169.254", "10.1.2.3", "127.0.0.1", "172.20.0.1", "192.168.1.1", "100.64.0.1", "fd00::1", "fe80::1", "::1"]) {
          expect(egressAdmits(docs, pod, { ip }, 80), `${at} -> ${ip}:80`).toBe(false);
        }
        expect(egressAdmits(docs, pod, { pod: { app: "stranger" } }, 80), `${at} -> a pod of the namespace`).toBe(false);
      }
      for (const t of SERVICE_NAMES) {
        if (t === s) continue;
        const want = peersOf(s).includes(t);
        expect(egressAdmits(docs, server(s), { pod: server(t) }, CONTAINER_PORT), `${s} -> ${t}`).toBe(want);
        expect(egressAdmits(docs, consumer(s), { pod: server(t) }, CONTAINER_PORT), `${s} consumer -> ${t}`).toBe(want);
        expect(egressAdmits(docs, server(s), { pod: consumer(t) }, CONTAINER_PORT), `${s} -> ${t} consumer`).toBe(false);
        expect(egressAdmits(docs, migrations(s), { pod: server(t) }, CONTAINER_PORT), `${s} migrations -> ${t}`).toBe(false);
      }
    }
    // The collector exports wherever its backend is; pods that are not Nanobill's are left alone.
    expect(egressAdmits(docs, collector.pod, { ip: "93.184.216.34" }, 4317)).toBe(true);
    expect(egressAdmits(docs, { app: "someone-elses" }, { ip: "10.1.2.3" }, 80)).toBe(true);
  });

  test("every service with a main.ts has a loadConfig in its config.ts", () => {
    expect([...loaders.keys()].sort()).toEqual([...withMain].sort());
  });

  test.each([...loaders.keys()])("%s: its config loader accepts the rendered env: port 8080, the Job's schema, the database URL", (s) => {
    const cfg = loaders.get(s)!(envOf(s));
    expect(cfg.port, `${s} must listen on ${CONTAINER_PORT}`).toBe(CONTAINER_PORT);
    expect(cfg.schema).toBe(schemaOf(s));
    expect(cfg.databaseUrl).toBe(PLACEHOLDER_SECRETS.DATABASE_URL);
  });

  test("rating-consumer gets rating's environment with the consumer switched on, in partitions", () => {
    const a = envOf("rating");
    const { RATING_CONSUMER_PARTITIONS: partitions, ...b } = envOf("rating", "StatefulSet", "rating-consumer");
    expect({ ...b, RATING_CONSUMER_ENABLED: "false" }).toEqual(a);
    expect(b.RATING_CONSUMER_ENABLED).toBe("true");
    expect(partitions).toBe("4");
  });
});
