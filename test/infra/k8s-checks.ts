import { BlockList, isIP } from "node:net";
/**
 * Checks of Kubernetes objects used by test/infra/k8s.test.ts: schema validation with
 * kubernetes-models (plus a strict unknown-field check), and the Nanobill invariants.
 * Each check returns a list of problems (empty = fine), so a test can show all of them at once
 * and negative tests can assert that a broken object is caught.
 */
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { Job } from "kubernetes-models/batch/v1/Job";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import type { Doc } from "./kustomize-lite.js";

interface ModelClass {
  new (data: never): { validate(): void };
}

/** apiVersion/kind -> model class. Anything else is an unknown kind (a failure). */
export const MODELS: Record<string, ModelClass> = {
  "v1/ServiceAccount": ServiceAccount as unknown as ModelClass,
  "v1/Service": Service as unknown as ModelClass,
  "v1/ConfigMap": ConfigMap as unknown as ModelClass,
  "v1/Secret": Secret as unknown as ModelClass,
  "v1/Namespace": Namespace as unknown as ModelClass,
  "apps/v1/Deployment": Deployment as unknown as ModelClass,
  "apps/v1/StatefulSet": StatefulSet as unknown as ModelClass,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler as unknown as ModelClass,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget as unknown as ModelClass,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy as unknown as ModelClass,
  "batch/v1/Job": Job as unknown as ModelClass,
};

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Wraps a document so that every property the schema validator reads is recorded. The compiled
 * validators read each property their schema knows (and iterate map-typed fields), so a key that
 * was never read is unknown to the schema: a misspelt field (`readOnlyRootFileSystem`), which the
 * Kubernetes schemas alone accept (they allow additional properties) and the API server drops.
 */
function track(v: unknown, path: string, read: Map<string, Set<string>>, objects: Map<string, Json>): unknown {
  if (Array.isArray(v)) return v.map((x, i) => track(x, `${path}/${i}`, read, objects));
  if (!isObject(v)) return v;
  const keys = new Set<string>();
  read.set(path, keys);
  objects.set(path, v);
  const copy: Json = {};
  for (const [k, x] of Object.entries(v)) copy[k] = track(x, `${path}/${k}`, read, objects);
  return new Proxy(copy, {
    get(target, p, receiver) {
      if (typeof p === "string") keys.add(p);
      return Reflect.get(target, p, receiver) as unknown;
    },
  });
}

/** Schema problems of one object: validation errors, unknown kind, unknown fields. */
export function schemaProblems(doc: Doc): string[] {
  const id = `${doc.kind}/${doc.metadata?.name ?? "?"}`;
  const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
  if (Model === undefined) return [`${id}: unknown apiVersion/kind ${doc.apiVersion} ${doc.kind} (add it to MODELS in test/infra/k8s-checks.ts)`];
  const problems: string[] = [];
  try {
    new Model(structuredClone(doc) as never).validate();
  } catch (e) {
    problems.push(`${id}: ${(e as Error).message}`);
  }
  // Strict pass: run the same validator on a recording proxy of the document.
  const read = new Map<string, Set<string>>();
  const objects = new Map<string, Json>();
  const proxied = track(doc, "", read, objects) as Json;
  const model = new Model({} as never);
  const top = read.get("")!;
  const receiver = new Proxy(model, {
    get(target, p, r) {
      if (typeof p === "string") top.add(p);
      if (typeof p === "string" && p in proxied) return proxied[p];
      return Reflect.get(target, p, r) as unknown;
    },
  });
  try {
    model.validate.call(receiver);
  } catch {
    // Reported above.
  }
  for (const [path, obj] of objects) {
    for (const k of Object.keys(obj)) {
      if (!read.get(path)!.has(k)) problems.push(`${id}: unknown field ${path}/${k}`);
    }
  }
  return problems;
}

export interface Container {
  name: string;
  image?: string;
  imagePullPolicy?: string;
  args?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } } }>;
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Json;
  readinessProbe?: Json;
  livenessProbe?: Json;
  startupProbe?: Json;
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number } } };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}

export interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: Json;
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  initContainers?: Container[];
  volumes?: Array<{ name: string; emptyDir?: Json; configMap?: { name: string } }>;
}

export function podSpecOf(d: Doc): PodSpec | undefined {
  if (d.kind !== "Deployment" && d.kind !== "StatefulSet" && d.kind !== "Job") return undefined;
  return ((d.spec as Json).template as Json).spec as PodSpec;
}

export function podLabelsOf(d: Doc): Record<string, string> {
  return (((d.spec as Json).template as Json).metadata as { labels?: Record<string, string> }).labels ?? {};
}

function allContainers(p: PodSpec): Container[] {
  return [...(p.initContainers ?? []), ...p.containers];
}

/** Pod and container hardening: non-root, read-only root fs, no capabilities, seccomp, resources, no SA token, /tmp only. */
export function podProblems(d: Doc): string[] {
  const p = podSpecOf(d);
  if (!p) return [];
  const id = `${d.kind}/${d.metadata.name}`;
  const out: string[] = [];
  const psc = p.securityContext ?? {};
  if (psc.runAsNonRoot !== true) out.push(`${id}: pod securityContext.runAsNonRoot must be true`);
  if (typeof psc.runAsUser !== "number" || psc.runAsUser === 0) out.push(`${id}: pod securityContext.runAsUser must be a non-zero uid`);
  if ((psc.seccompProfile as Json | undefined)?.type !== "RuntimeDefault") out.push(`${id}: pod seccompProfile must be RuntimeDefault`);
  if (p.automountServiceAccountToken !== false) out.push(`${id}: automountServiceAccountToken must be false`);
  if (!p.serviceAccountName) out.push(`${id}: serviceAccountName must be set (not the namespace default)`);
  const writable = new Set((p.volumes ?? []).filter((v) => v.emptyDir !== undefined).map((v) => v.name));
  for (const c of allContainers(p)) {
    const cid = `${id} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if (sc.readOnlyRootFilesystem !== true) out.push(`${cid}: readOnlyRootFilesystem must be true`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`${cid}: allowPrivilegeEscalation must be false`);
    if (sc.privileged === true) out.push(`${cid}: must not be privileged`);
    if (sc.runAsNonRoot === false || sc.runAsUser === 0) out.push(`${cid}: must not run as root`);
    const drop = ((sc.capabilities as Json | undefined)?.drop as string[] | undefined) ?? [];
    if (!drop.includes("ALL")) out.push(`${cid}: capabilities.drop must include ALL`);
    if (((sc.capabilities as Json | undefined)?.add as string[] | undefined)?.length) out.push(`${cid}: must not add capabilities`);
    for (const kind of ["requests", "limits"] as const) {
      for (const r of ["cpu", "memory"]) {
        if (!c.resources?.[kind]?.[r]) out.push(`${cid}: resources.${kind}.${r} must be set`);
      }
    }
    if (!c.image || /:latest$/.test(c.image) || !/[:@]/.test(c.image.split("/").pop()!)) out.push(`${cid}: image must have a tag or digest other than latest (${c.image})`);
    for (const m of c.volumeMounts ?? []) {
      if (writable.has(m.name) && m.mountPath !== "/tmp") out.push(`${cid}: writable volume mounted at ${m.mountPath} (only /tmp may be writable)`);
    }
  }
  return out;
}

/** Names that must never carry a plain value (in env `value`, ConfigMap keys, or YAML). */
export const SECRET_NAME = /(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|CREDENTIAL|DATABASE_URL|REDIS_URL|PRIVATE_KEY)/i;
/** A URL with credentials in it (user:password@). */
export const URL_WITH_PASSWORD = /[a-z][a-z0-9+.-]*:\/\/[^/\s:@]*:[^/\s@]+@/i;

export function plaintextSecretProblems(d: Doc): string[] {
  const id = `${d.kind}/${d.metadata.name}`;
  const out: string[] = [];
  if (d.kind === "Secret") {
    const data = { ...((d.data as Record<string, string> | undefined) ?? {}), ...((d.stringData as Record<string, string> | undefined) ?? {}) };
    for (const [k, v] of Object.entries(data)) {
      const plain = d.stringData && k in (d.stringData as Json) ? v : Buffer.from(v, "base64").toString("utf8");
      if (!plain.includes("CHANGE_ME")) out.push(`${id}: ${k} holds a value that is not a CHANGE_ME placeholder`);
    }
  }
  if (d.kind === "ConfigMap") {
    for (const [k, v] of Object.entries((d.data as Record<string, string> | undefined) ?? {})) {
      if (SECRET_NAME.test(k)) out.push(`${id}: key ${k} looks secret; put it in a Secret`);
      if (URL_WITH_PASSWORD.test(v)) out.push(`${id}: ${k} has a URL with a password`);
    }
  }
  const p = podSpecOf(d);
  for (const c of p ? allContainers(p) : []) {
    for (const e of c.env ?? []) {
      if (e.value !== undefined && SECRET_NAME.test(e.name)) out.push(`${id} container ${c.name}: ${e.name} must come from a secretKeyRef, not a value`);
      if (e.value !== undefined && URL_WITH_PASSWORD.test(e.value)) out.push(`${id} container ${c.name}: ${e.name} has a URL with a password`);
    }
  }
  return out;
}

/** Secrets and ConfigMaps the pods read: [kind, name, key | undefined]. */
export function referencesOf(d: Doc): Array<{ kind: "Secret" | "ConfigMap"; name: string; key?: string }> {
  const p = podSpecOf(d);
  if (!p) return [];
  const out: Array<{ kind: "Secret" | "ConfigMap"; name: string; key?: string }> = [];
  for (const c of allContainers(p)) {
    for (const e of c.env ?? []) {
      if (e.valueFrom?.secretKeyRef) out.push({ kind: "Secret", ...e.valueFrom.secretKeyRef });
      if (e.valueFrom?.configMapKeyRef) out.push({ kind: "ConfigMap", ...e.valueFrom.configMapKeyRef });
    }
    for (const f of c.envFrom ?? []) {
      if (f.configMapRef) out.push({ kind: "ConfigMap", name: f.configMapRef.name });
      if (f.secretRef) out.push({ kind: "Secret", name: f.secretRef.name });
    }
  }
  for (const v of p.volumes ?? []) if (v.configMap) out.push({ kind: "ConfigMap", name: v.configMap.name });
  return out;
}

export function matchesSelector(labels: Record<string, string>, selector: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

export interface ServiceExpectations {
  services: readonly string[];
  port: number;
  portName: string;
  /** Minimum pod grace: preStop + the process's shutdown limit. */
  graceSecondsMin: number;
}

/** Per service: Deployment + Service + SA + HPA + PDB + migrations Job, wired to each other. */
export function serviceSetProblems(docs: Doc[], x: ServiceExpectations): string[] {
  const out: string[] = [];
  const find = (kind: string, name: string): Doc | undefined => docs.find((d) => d.kind === kind && d.metadata.name === name);
  for (const s of x.services) {
    const dep = find("Deployment", s);
    const svc = find("Service", s);
    const sa = find("ServiceAccount", s);
    const hpa = find("HorizontalPodAutoscaler", s);
    const pdb = find("PodDisruptionBudget", s);
    const job = docs.find((d) => d.kind === "Job" && podSpecOf(d)?.containers.some((c) => c.args?.[0] === "migrate") && podLabelsOf(d)["app.kubernetes.io/name"] === s);
    for (const [what, v] of Object.entries({ Deployment: dep, Service: svc, ServiceAccount: sa, HorizontalPodAutoscaler: hpa, PodDisruptionBudget: pdb, "migrations Job": job })) {
      if (!v) out.push(`${s}: no ${what}`);
    }
    if (!dep || !svc || !sa || !hpa || !pdb || !job) continue;
    const pod = podSpecOf(dep)!;
    const labels = podLabelsOf(dep);
    const main = pod.containers[0]!;
    if (sa.automountServiceAccountToken !== false) out.push(`${s}: ServiceAccount automountServiceAccountToken must be false`);
    if (pod.serviceAccountName !== s) out.push(`${s}: Deployment must use ServiceAccount ${s}`);
    const sel = (svc.spec as { selector?: Record<string, string> }).selector ?? {};
    if (!matchesSelector(labels, sel)) out.push(`${s}: Service selector does not match the Deployment's pods`);
    if (matchesSelector(podLabelsOf(job), sel)) out.push(`${s}: Service selector also matches the migrations Job's pods`);
    const ports = (svc.spec as { ports?: Array<{ name?: string; port: number; targetPort?: string | number }> }).ports ?? [];
    const grpc = ports.find((p) => p.name === x.portName);
    if (!grpc) out.push(`${s}: Service has no port named ${x.portName}`);
    else {
      const cport = main.ports?.find((p) => p.name === grpc.targetPort || p.containerPort === grpc.targetPort);
      if (!cport || cport.containerPort !== x.port) out.push(`${s}: Service port ${x.portName} does not reach container port ${x.port}`);
    }
    for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"] as const) {
      const pr = main[probe] as { grpc?: { port?: number; service?: string } } | undefined;
      if (!pr) out.push(`${s}: no ${probe}`);
      else if (pr.grpc?.port !== x.port) out.push(`${s}: ${probe} must be grpc on port ${x.port} (grpc.health.v1)`);
    }
    const preStop = main.lifecycle?.preStop;
    const preStopS = preStop?.sleep?.seconds ?? (preStop?.exec?.command[0] === "sleep" ? Number(preStop.exec.command[1]) : NaN);
    if (!Number.isFinite(preStopS)) out.push(`${s}: preStop must sleep (endpoint removal before SIGTERM)`);
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    if (Number.isFinite(preStopS) && grace < preStopS + x.graceSecondsMin) {
      out.push(`${s}: terminationGracePeriodSeconds ${grace} < preStop ${preStopS} + shutdown ${x.graceSecondsMin}`);
    }
    if ((dep.spec as Json).replicas !== undefined) out.push(`${s}: Deployment sets replicas; the HPA owns them`);
    const target = (hpa.spec as { scaleTargetRef: { kind: string; name: string; apiVersion?: string } }).scaleTargetRef;
    if (target.kind !== "Deployment" || target.name !== s || target.apiVersion !== "apps/v1") out.push(`${s}: HPA must target Deployment ${s}`);
    const hs = hpa.spec as { minReplicas?: number; maxReplicas: number };
    if ((hs.minReplicas ?? 1) > hs.maxReplicas) out.push(`${s}: HPA minReplicas > maxReplicas`);
    const pdbSel = ((pdb.spec as { selector?: { matchLabels?: Record<string, string> } }).selector?.matchLabels) ?? {};
    if (Object.keys(pdbSel).length === 0 || !matchesSelector(labels, pdbSel)) out.push(`${s}: PDB selector does not match the Deployment's pods`);
    if (matchesSelector(podLabelsOf(job), pdbSel)) out.push(`${s}: PDB selector also matches the migrations Job's pods`);
    const dbRef = (c: Container): string | undefined => c.env?.find((e) => e.name === "DATABASE_URL")?.valueFrom?.secretKeyRef?.name;
    const jobC = podSpecOf(job)!.containers[0]!;
    if (!dbRef(main) || dbRef(jobC) !== dbRef(main)) out.push(`${s}: the migrations Job must use the Deployment's DATABASE_URL Secret`);
    if (jobC.image !== main.image) out.push(`${s}: the migrations Job must run the Deployment's image`);
    if ((podSpecOf(job) as PodSpec & { restartPolicy?: string }).restartPolicy === "Always") out.push(`${s}: Job restartPolicy cannot be Always`);
  }
  for (const d of docs.filter((d) => d.kind === "Service")) {
    const ports = (d.spec as { ports?: Array<{ name?: string }> }).ports ?? [];
    if (!ports.some((p) => p.name === x.portName)) out.push(`Service/${d.metadata.name}: no port named ${x.portName}`);
  }
  return out;
}

/** Every Secret/ConfigMap a pod reads exists in the set (and has the key). `external`: Secrets created out of band. */
export function referenceProblems(docs: Doc[], external: ReadonlyMap<string, readonly string[]> = new Map()): string[] {
  const out: string[] = [];
  for (const d of docs) {
    for (const r of referencesOf(d)) {
      const obj = docs.find((x) => x.kind === r.kind && x.metadata.name === r.name);
      const keys = obj ? Object.keys({ ...((obj.data as Json | undefined) ?? {}), ...((obj.stringData as Json | undefined) ?? {}) }) : r.kind === "Secret" ? external.get(r.name) : undefined;
      if (keys === undefined) out.push(`${d.kind}/${d.metadata.name}: reads ${r.kind} ${r.name}, which is not defined`);
      else if (r.key !== undefined && !keys.includes(r.key)) out.push(`${d.kind}/${d.metadata.name}: reads ${r.kind} ${r.name} key ${r.key}, which it does not have`);
    }
    if (podSpecOf(d)) {
      const sa = podSpecOf(d)!.serviceAccountName;
      if (sa && !docs.some((x) => x.kind === "ServiceAccount" && x.metadata.name === sa)) out.push(`${d.kind}/${d.metadata.name}: ServiceAccount ${sa} is not defined`);
    }
  }
  return out;
}

/** A label selector (matchLabels and matchExpressions In / NotIn / Exists / DoesNotExist). */
interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}

function selects(sel: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const ok =
      e.operator === "In" ? has && (e.values ?? []).includes(labels[e.key]!) :
      e.operator === "NotIn" ? !has || !(e.values ?? []).includes(labels[e.key]!) :
      e.operator === "Exists" ? has :
      e.operator === "DoesNotExist" ? !has :
      false;
    if (!ok) return false;
  }
  return true;
}

/** One end of a connection: a pod's labels, and its namespace's labels unless it is in the policies' namespace. */
export interface Peer {
  pod: Record<string, string>;
  /** undefined = the same namespace as the policies. */
  namespace?: Record<string, string>;
}

/**
 * Whether the NetworkPolicies in docs (all in one namespace) admit a TCP connection from `from` to
 * a pod of that namespace labelled `to` on `port`, by Kubernetes' rules for Ingress policies: a pod
 * no policy selects admits everything; otherwise some selecting policy's rule must admit both the
 * peer and the port; a missing or empty `from` / `ports` list matches every peer / port; the
 * policies' own namespace carries its `kubernetes.io/metadata.name` label. Shapes it does not
 * evaluate (named ports, endPort, ipBlock) throw, so a render using them cannot pass unchecked.
 */
export function ingressAdmits(docs: Doc[], from: Peer, to: Record<string, string>, port: number): boolean {
  type Rule = {
    from?: Array<{ podSelector?: LabelSelector; namespaceSelector?: LabelSelector; ipBlock?: unknown }>;
    ports?: Array<{ port?: number | string; endPort?: number; protocol?: string }>;
  };
  const docsNp = docs.filter((d) => d.kind === "NetworkPolicy");
  const ownNamespace = { "kubernetes.io/metadata.name": docsNp[0]?.metadata.namespace ?? "default" };
  const policies = docsNp
    .map((d) => d.spec as { podSelector: LabelSelector; policyTypes?: string[]; ingress?: Rule[] })
    .filter((p) => (p.policyTypes ?? ["Ingress"]).includes("Ingress") && selects(p.podSelector, to));
  if (policies.length === 0) return true;
  const peerOk = (r: Rule) =>
    r.from === undefined ||
    r.from.length === 0 ||
    r.from.some((f) => {
      if (f.ipBlock !== undefined) throw new Error("ingressAdmits: ipBlock peers are not evaluated");
      if (f.namespaceSelector !== undefined) {
        if (!selects(f.namespaceSelector, from.namespace ?? ownNamespace)) return false;
        return f.podSelector === undefined || selects(f.podSelector, from.pod);
      }
      return from.namespace === undefined && f.podSelector !== undefined && selects(f.podSelector, from.pod);
    });
  const portOk = (r: Rule) =>
    r.ports === undefined ||
    r.ports.length === 0 ||
    r.ports.some((p) => {
      if (typeof p.port === "string" || p.endPort !== undefined) throw new Error("ingressAdmits: named ports and endPort are not evaluated");
      return (p.protocol ?? "TCP") === "TCP" && (p.port === undefined || p.port === port);
    });
  return policies.some((p) => (p.ingress ?? []).some((r) => peerOk(r) && portOk(r)));
}

/** The far end of an outgoing connection: a pod (of this or another namespace) or an address outside the cluster. */
export type Destination = Peer | { ip: string };

/** Whether `ip` is in the ipBlock (its cidr, none of its excepts). */
function inIpBlock(ip: string, block: { cidr: string; except?: string[] }): boolean {
  const family = isIP(ip) === 6 ? "ipv6" : "ipv4";
  const within = (cidr: string): boolean => {
    const [net, bits] = cidr.split("/") as [string, string];
    if ((isIP(net) === 6 ? "ipv6" : "ipv4") !== family) return false;
    const list = new BlockList();
    list.addSubnet(net, Number(bits), family);
    return list.check(ip, family);
  };
  return within(block.cidr) && !(block.except ?? []).some(within);
}

/**
 * Whether the NetworkPolicies in docs (all in one namespace) let a pod of that namespace labelled
 * `from` open a connection to `to` on `port` (`protocol`, TCP by default), by Kubernetes' rules for
 * Egress policies: a pod no Egress policy selects may go anywhere; otherwise some selecting policy's
 * rule must admit both the destination and the port. A missing or empty `to` / `ports` list matches
 * every destination / port; an ipBlock peer matches addresses (not pods: their addresses are the
 * CNI's), pod/namespace selectors match pods. Named ports and endPort throw.
 */
export function egressAdmits(docs: Doc[], from: Record<string, string>, to: Destination, port: number, protocol: "TCP" | "UDP" = "TCP"): boolean {
  type Rule = {
    to?: Array<{ podSelector?: LabelSelector; namespaceSelector?: LabelSelector; ipBlock?: { cidr: string; except?: string[] } }>;
    ports?: Array<{ port?: number | string; endPort?: number; protocol?: string }>;
  };
  const docsNp = docs.filter((d) => d.kind === "NetworkPolicy");
  const ownNamespace = { "kubernetes.io/metadata.name": docsNp[0]?.metadata.namespace ?? "default" };
  const policies = docsNp
    .map((d) => d.spec as { podSelector: LabelSelector; policyTypes?: string[]; egress?: Rule[] })
    .filter((p) => (p.policyTypes ?? []).includes("Egress") && selects(p.podSelector, from));
  if (policies.length === 0) return true;
  const peerOk = (r: Rule) =>
    r.to === undefined ||
    r.to.length === 0 ||
    r.to.some((t) => {
      if ("ip" in to) return t.ipBlock !== undefined && inIpBlock(to.ip, t.ipBlock);
      if (t.ipBlock !== undefined) return false;
      if (t.namespaceSelector !== undefined) {
        if (!selects(t.namespaceSelector, to.namespace ?? ownNamespace)) return false;
        return t.podSelector === undefined || selects(t.podSelector, to.pod);
      }
      return to.namespace === undefined && t.podSelector !== undefined && selects(t.podSelector, to.pod);
    });
  const portOk = (r: Rule) =>
    r.ports === undefined ||
    r.ports.length === 0 ||
    r.ports.some((p) => {
      if (typeof p.port === "string" || p.endPort !== undefined) throw new Error("egressAdmits: named ports and endPort are not evaluated");
      return (p.protocol ?? "TCP") === protocol && (p.port === undefined || p.port === port);
    });
  return policies.some((p) => (p.egress ?? []).some((r) => peerOk(r) && portOk(r)));
}
