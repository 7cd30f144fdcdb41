/**
 * The subset of kustomize that infra/k8s uses, so CI can validate rendered overlays with no
 * kustomize binary and no network. Anything outside the subset throws (a new kustomize feature in
 * an overlay fails the test instead of being silently ignored):
 *
 *   Kustomization / Component keys: resources, components, namespace, images, patches,
 *     secretGenerator / configMapGenerator (envs files; generatorOptions.disableNameSuffixHash
 *     must be true, since name hashing and reference rewriting are not emulated)
 *   patches: strategic merge (maps merged; lists of containers/initContainers/env/volumes merged
 *     by name, volumeMounts by mountPath, other lists replaced; null deletes) and JSON 6902
 *     (add, replace, remove, test), by the patch's own kind/name or by a target
 *     (group, version, kind, name, labelSelector of k=v[,k=v])
 *
 * Checked against `kubectl kustomize` (kustomize v5.5.0) when written: the same objects and fields,
 * apart from base64 line wrapping in Secrets and kustomize moving a strategic-merged list entry
 * (an env variable) to the front of its list.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";

export type Doc = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
};

export const KUSTOMIZATION_KEYS = new Set([
  "apiVersion",
  "kind",
  "namespace",
  "resources",
  "components",
  "images",
  "patches",
  "secretGenerator",
  "configMapGenerator",
  "generatorOptions",
]);

/** Kinds that are not namespaced (the namespace transformer leaves them alone). */
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass", "StorageClass"]);

export class KustomizeError extends Error {}

function fail(where: string, msg: string): never {
  throw new KustomizeError(`${where}: ${msg}`);
}

/** Every YAML document of a file (empty documents skipped); YAML errors throw. */
export function readYamlDocs(path: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(path, "utf8"));
  const out: unknown[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) fail(path, d.errors.map((e) => e.message).join("; "));
    const v: unknown = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

export function kustomizationFile(dir: string): string | undefined {
  for (const n of ["kustomization.yaml", "kustomization.yml", "Kustomization"]) {
    if (existsSync(join(dir, n))) return join(dir, n);
  }
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function asDoc(v: unknown, where: string): Doc {
  if (!isObject(v) || typeof v.apiVersion !== "string" || typeof v.kind !== "string" || !isObject(v.metadata) || typeof v.metadata.name !== "string") {
    fail(where, "not a Kubernetes object (apiVersion, kind, metadata.name)");
  }
  return v as Doc;
}

function groupOf(apiVersion: string): { group: string; version: string } {
  const i = apiVersion.indexOf("/");
  return i < 0 ? { group: "", version: apiVersion } : { group: apiVersion.slice(0, i), version: apiVersion.slice(i + 1) };
}

/** Strategic merge keys of the lists infra/k8s patches. */
const MERGE_KEYS: Record<string, string> = {
  containers: "name",
  initContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
};

export function strategicMerge(base: unknown, patch: unknown, field = ""): unknown {
  if (isObject(base) && isObject(patch)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(patch)) {
      if (k === "$patch" || k.startsWith("$setElementOrder") || k.startsWith("$deleteFromPrimitiveList")) fail(k, "strategic merge directives are not emulated");
      if (v === null) delete out[k];
      else out[k] = k in base ? strategicMerge(base[k], v, k) : clone(v);
    }
    return out;
  }
  if (Array.isArray(base) && Array.isArray(patch) && MERGE_KEYS[field] !== undefined) {
    const key = MERGE_KEYS[field]!;
    const out = base.map((x) => clone(x) as unknown);
    for (const p of patch) {
      if (!isObject(p) || p[key] === undefined) fail(field, `list items need "${key}"`);
      const i = out.findIndex((x) => isObject(x) && x[key] === p[key]);
      if (i >= 0) out[i] = strategicMerge(out[i], p, "");
      else out.push(clone(p));
    }
    return out;
  }
  return clone(patch);
}

function pointer(path: string): string[] {
  if (!path.startsWith("/")) fail(path, "JSON pointer must start with /");
  return path
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

export function jsonPatch(doc: unknown, ops: unknown[], where: string): unknown {
  const root = clone(doc);
  for (const [n, raw] of ops.entries()) {
    if (!isObject(raw) || typeof raw.op !== "string" || typeof raw.path !== "string") fail(where, `op ${n}: needs op and path`);
    const parts = pointer(raw.path);
    const last = parts.pop()!;
    let parent: unknown = root;
    for (const p of parts) {
      parent = Array.isArray(parent) ? parent[Number(p)] : isObject(parent) ? parent[p] : undefined;
      if (parent === undefined) fail(where, `op ${n} (${raw.op} ${raw.path}): path does not exist`);
    }
    const has = Array.isArray(parent) ? last === "-" || Number(last) < parent.length : isObject(parent) && last in parent;
    const current = Array.isArray(parent) ? parent[Number(last)] : isObject(parent) ? parent[last] : undefined;
    switch (raw.op) {
      case "test":
        if (JSON.stringify(current) !== JSON.stringify(raw.value)) fail(where, `op ${n} (test ${raw.path}): is ${JSON.stringify(current)}, expected ${JSON.stringify(raw.value)}`);
        break;
      case "replace":
      case "remove":
        if (!has) fail(where, `op ${n} (${raw.op} ${raw.path}): path does not exist`);
        if (Array.isArray(parent)) {
          if (raw.op === "remove") parent.splice(Number(last), 1);
          else parent[Number(last)] = clone(raw.value);
        } else if (isObject(parent)) {
          if (raw.op === "remove") delete parent[last];
          else parent[last] = clone(raw.value);
        }
        break;
      case "add":
        if (Array.isArray(parent)) {
          if (last === "-") parent.push(clone(raw.value));
          else parent.splice(Number(last), 0, clone(raw.value));
        } else if (isObject(parent)) parent[last] = clone(raw.value);
        else fail(where, `op ${n}: parent is not a container`);
        break;
      default:
        fail(where, `op ${n}: "${raw.op}" is not emulated (add, replace, remove, test)`);
    }
  }
  return root;
}

interface Target {
  group?: string;
  version?: string;
  kind?: string;
  name?: string;
  labelSelector?: string;
}

function matches(d: Doc, t: Target): boolean {
  const { group, version } = groupOf(d.apiVersion);
  if (t.group !== undefined && t.group !== group) return false;
  if (t.version !== undefined && t.version !== version) return false;
  if (t.kind !== undefined && t.kind !== d.kind) return false;
  if (t.name !== undefined && !new RegExp(`^(?:${t.name})$`).test(d.metadata.name)) return false;
  if (t.labelSelector !== undefined) {
    for (const term of t.labelSelector.split(",")) {
      const [k, v] = term.split("=").map((s) => s.trim());
      if (k === undefined || v === undefined || term.includes("!")) fail(t.labelSelector, "only k=v[,k=v] selectors are emulated");
      if (d.metadata.labels?.[k] !== v) return false;
    }
  }
  return true;
}

function applyPatch(docs: Doc[], entry: unknown, dir: string): Doc[] {
  const where = `${dir} patches`;
  if (!isObject(entry)) fail(where, "entry must be a map");
  for (const k of Object.keys(entry)) if (!["path", "patch", "target"].includes(k)) fail(where, `key "${k}" is not emulated`);
  const source = typeof entry.path === "string" ? join(dir, entry.path) : undefined;
  if (source !== undefined && !existsSync(source)) fail(where, `${entry.path} does not exist`);
  const body: unknown[] = source !== undefined ? readYamlDocs(source) : typeof entry.patch === "string" ? parseAllDocuments(entry.patch).map((d) => d.toJS() as unknown) : fail(where, "path or patch required");
  if (body.length !== 1) fail(where, "one patch per entry");
  const patch = body[0];
  const target = entry.target as Target | undefined;
  let hits = 0;
  const out = docs.map((d) => {
    if (Array.isArray(patch)) {
      if (target === undefined) fail(where, "a JSON 6902 patch needs a target");
      if (!matches(d, target)) return d;
      hits++;
      return asDoc(jsonPatch(d, patch, `${where} ${String(entry.path)} on ${d.kind}/${d.metadata.name}`), where);
    }
    const p = asDoc(patch, `${where} ${String(entry.path)}`);
    const t: Target = target ?? { ...groupOf(p.apiVersion), kind: p.kind, name: p.metadata.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") };
    if (!matches(d, t)) return d;
    hits++;
    // With a target, the patch's own name is a placeholder (kustomize ignores it).
    const body2 = target ? { ...p, metadata: { ...p.metadata, name: d.metadata.name } } : p;
    return asDoc(strategicMerge(d, body2), where);
  });
  if (hits === 0) fail(where, `${String(entry.path ?? "inline patch")} matches no object`);
  return out;
}

function readEnvFile(path: string): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [i, line] of readFileSync(path, "utf8").split("\n").entries()) {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    const eq = t.indexOf("=");
    if (eq <= 0) fail(path, `line ${i + 1}: expected KEY=VALUE`);
    data[t.slice(0, eq)] = t.slice(eq + 1);
  }
  return data;
}

function generate(k: Record<string, unknown>, dir: string): Doc[] {
  const out: Doc[] = [];
  const opts = isObject(k.generatorOptions) ? k.generatorOptions : {};
  for (const [key, kind] of [
    ["secretGenerator", "Secret"],
    ["configMapGenerator", "ConfigMap"],
  ] as const) {
    const gens = k[key];
    if (gens === undefined) continue;
    if (!Array.isArray(gens)) fail(dir, `${key} must be a list`);
    if (opts.disableNameSuffixHash !== true) fail(dir, `${key}: set generatorOptions.disableNameSuffixHash: true (name hashing is not emulated)`);
    for (const g of gens) {
      if (!isObject(g) || typeof g.name !== "string") fail(dir, `${key}: entries need a name`);
      for (const f of Object.keys(g)) if (!["name", "envs"].includes(f)) fail(dir, `${key} ${g.name}: "${f}" is not emulated (only envs files; literals would put values in YAML)`);
      const data: Record<string, string> = {};
      for (const e of (g.envs as string[] | undefined) ?? []) {
        const p = join(dir, e);
        if (!existsSync(p)) fail(dir, `${key} ${g.name}: ${e} does not exist`);
        Object.assign(data, readEnvFile(p));
      }
      const labels = isObject(opts.labels) ? (opts.labels as Record<string, string>) : undefined;
      const doc: Doc = { apiVersion: "v1", kind, metadata: { name: g.name, ...(labels ? { labels: { ...labels } } : {}) } };
      if (kind === "Secret") {
        doc.type = "Opaque";
        doc.data = Object.fromEntries(Object.entries(data).map(([a, b]) => [a, Buffer.from(b, "utf8").toString("base64")]));
      } else doc.data = data;
      out.push(doc);
    }
  }
  return out;
}

function setImages(docs: Doc[], images: unknown, dir: string): Doc[] {
  if (images === undefined) return docs;
  if (!Array.isArray(images)) fail(dir, "images must be a list");
  const rules = images.map((i) => {
    if (!isObject(i) || typeof i.name !== "string") fail(dir, "images: entries need a name");
    for (const f of Object.keys(i)) if (!["name", "newName", "newTag", "digest"].includes(f)) fail(dir, `images: "${f}" is not emulated`);
    return i as { name: string; newName?: string; newTag?: string | number; digest?: string };
  });
  const rewrite = (image: string): string => {
    const at = image.indexOf("@");
    const noDigest = at >= 0 ? image.slice(0, at) : image;
    const colon = noDigest.lastIndexOf(":");
    const hasTag = colon > noDigest.lastIndexOf("/");
    const name = hasTag ? noDigest.slice(0, colon) : noDigest;
    const rule = rules.find((r) => r.name === name);
    if (!rule) return image;
    const newName = rule.newName ?? name;
    if (rule.digest !== undefined) return `${newName}@${rule.digest}`;
    if (rule.newTag !== undefined) return `${newName}:${String(rule.newTag)}`;
    return newName + image.slice(name.length);
  };
  const walk = (v: unknown, key: string): unknown => {
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (!isObject(v)) return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === "image" && typeof x === "string" && (key === "containers" || key === "initContainers") ? rewrite(x) : walk(x, k);
    return out;
  };
  return docs.map((d) => walk(d, "") as Doc);
}

/** Files a kustomization refers to (resources that are files, patch paths, generator envs), relative to its folder. */
export function referencedPaths(dir: string): string[] {
  const file = kustomizationFile(dir) ?? fail(dir, "no kustomization.yaml");
  const k = readYamlDocs(file)[0] as Record<string, unknown>;
  const out: string[] = [];
  for (const r of [...((k.resources as string[] | undefined) ?? []), ...((k.components as string[] | undefined) ?? [])]) out.push(r);
  for (const p of (k.patches as Array<{ path?: string }> | undefined) ?? []) if (p.path !== undefined) out.push(p.path);
  for (const key of ["secretGenerator", "configMapGenerator"]) {
    for (const g of (k[key] as Array<{ envs?: string[] }> | undefined) ?? []) out.push(...(g.envs ?? []));
  }
  return out;
}

/** Renders a kustomization (or component) folder. `accumulated`: what a component is applied to. */
export function build(dir: string, accumulated: Doc[] = [], expect: "Kustomization" | "Component" = "Kustomization"): Doc[] {
  dir = resolve(dir);
  const file = kustomizationFile(dir) ?? fail(dir, "no kustomization.yaml");
  const [k] = readYamlDocs(file);
  if (!isObject(k)) fail(file, "not a map");
  for (const key of Object.keys(k)) if (!KUSTOMIZATION_KEYS.has(key)) fail(file, `"${key}" is not emulated by test/infra/kustomize-lite.ts`);
  const wantApi = expect === "Component" ? "kustomize.config.k8s.io/v1alpha1" : "kustomize.config.k8s.io/v1beta1";
  if (k.kind !== expect || k.apiVersion !== wantApi) fail(file, `expected ${wantApi} ${expect}`);

  let docs: Doc[] = [...accumulated];
  for (const r of (k.resources as string[] | undefined) ?? []) {
    const p = join(dir, r);
    if (!existsSync(p)) fail(file, `resource ${r} does not exist`);
    if (statSync(p).isDirectory()) docs.push(...build(p));
    else docs.push(...readYamlDocs(p).map((d) => asDoc(d, p)));
  }
  docs.push(...generate(k, dir));
  for (const c of (k.components as string[] | undefined) ?? []) {
    const p = join(dir, c);
    if (!existsSync(p) || !statSync(p).isDirectory()) fail(file, `component ${c} is not a folder`);
    docs = build(p, docs, "Component");
  }
  for (const entry of (k.patches as unknown[] | undefined) ?? []) docs = applyPatch(docs, entry, dir);
  docs = setImages(docs, k.images, dir);
  if (typeof k.namespace === "string") {
    const ns = k.namespace;
    docs = docs.map((d) => (CLUSTER_SCOPED.has(d.kind) ? d : { ...d, metadata: { ...d.metadata, namespace: ns } }));
  }
  const seen = new Set<string>();
  for (const d of docs) {
    const id = `${d.apiVersion} ${d.kind} ${d.metadata.namespace ?? ""}/${d.metadata.name}`;
    if (seen.has(id)) fail(file, `duplicate object ${id}`);
    seen.add(id);
  }
  return docs;
}
