/**
 * Renders the kustomize base (infra/k8s/base/*.yaml) from one table of services.
 *
 *   npx tsx infra/k8s/render.ts          writes the files
 *   test/infra/k8s.test.ts               fails when the committed files differ from a fresh render
 *
 * Every object is typed with the kubernetes-models interfaces, so a misspelt field is a type
 * error here, and the test validates the output against the Kubernetes schemas.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IStatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IJob } from "kubernetes-models/batch/v1/Job";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IEnvVar } from "kubernetes-models/v1/EnvVar";
import type { IPodSecurityContext } from "kubernetes-models/v1/PodSecurityContext";
import type { ISecurityContext } from "kubernetes-models/v1/SecurityContext";
import type { IService } from "kubernetes-models/v1/Service";
import type { IServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import type { IVolume } from "kubernetes-models/v1/Volume";
import type { IVolumeMount } from "kubernetes-models/v1/VolumeMount";
import { stringify } from "yaml";
import { SHUTDOWN_TOTAL_MS_MAX } from "@nanobill/service-kit";
import { NON_PUBLIC_IPV4, NON_PUBLIC_IPV6 } from "../../libs/webhooks/src/egress.js";

/** The five services, in the order of the event path. */
export const SERVICE_NAMES = ["metering", "rating", "ledger", "credit-wallet", "invoicing"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Port every service listens on inside its pod (h2c: gRPC, gRPC-Web and Connect). */
export const CONTAINER_PORT = 8080;
/** Name of that port on containers and Services. */
export const PORT_NAME = "grpc";
/** Image every workload runs; overlays replace it with `images:` (registry, tag or digest). */
export const IMAGE = "nanobill:0.1.0";
/** uid/gid of the image's non-root user (infra/docker/Dockerfile). */
export const RUN_AS_ID = 10001;
/** preStop sleep: lets endpoint removal reach every kube-proxy / client before SIGTERM closes the listener. */
export const PRESTOP_SLEEP_S = 5;
/** Slack on top of preStop + the process's own shutdown limit before SIGKILL. */
export const TERMINATION_SLACK_S = 5;
/** Pod grace = preStop + service-kit's SHUTDOWN_TOTAL_MS_MAX (drain RPCs, stop consumers, close pools) + slack. */
export const TERMINATION_GRACE_S = PRESTOP_SLEEP_S + Math.ceil(SHUTDOWN_TOTAL_MS_MAX / 1000) + TERMINATION_SLACK_S;
/** Size cap of the /tmp emptyDir (tsx transform cache, Node scratch): the only writable path. */
export const TMP_SIZE_LIMIT = "128Mi";
/** Migrations Job: attempts, wall-clock cap, and how long a finished Job is kept. */
export const MIGRATE_BACKOFF_LIMIT = 3;
export const MIGRATE_DEADLINE_S = 600;
export const MIGRATE_TTL_AFTER_FINISHED_S = 86_400;
/** Secret holding what every service shares (Redis URL, API keys). */
export const SHARED_SECRET = "nanobill-shared";
/** ConfigMap with service addresses, schemas and limits. */
export const CONFIG_MAP = "nanobill-config";

export interface ServiceRow {
  name: ServiceName;
  /** One line on what the replicas of this service do; becomes an annotation. */
  role: string;
  replicasMin: number;
  replicasMax: number;
  /** HPA target: average CPU utilisation of requests (%). */
  cpuTargetPercent: number;
  cpuRequest: string;
  cpuLimit: string;
  /** Memory request == limit (MiB): no overcommit for processes that hold money in flight. */
  memoryMiB: number;
  /** Whether the service needs Redis (REDIS_URL from the shared Secret). */
  redis: boolean;
  /**
   * The services this one calls (its <PEER>_URL variables; with any, it gets the internal-scope
   * key NANOBILL_INTERNAL_API_KEY). The network policies admit exactly these callers.
   */
  calls: readonly ServiceName[];
  /**
   * A background consumer that must run in at most one process at a time: the Deployment runs with
   * `<flag>=false` and a one-replica StatefulSet `<name>-consumer` runs it with `<flag>=true`.
   */
  singletonConsumerFlag?: string;
  /** Extra env of the singleton consumer only. */
  consumerEnv?: Record<string, string>;
  /**
   * The consumer splits its work between its pods itself (rating: partition leases with fencing
   * tokens in PostgreSQL), so the StatefulSet may be scaled: pods start in parallel and
   * `consumerReplicas` (default 1) is only the initial count.
   */
  consumerLeased?: { replicas: number; role: string };
  /** It POSTs alerts to tenants' webhook endpoints (libs/webhooks): egress to public addresses. */
  webhooks: boolean;
  /** More listeners than the gRPC one: container + Service port, and the variable that sets it. */
  extraPorts?: Array<{ name: string; port: number; env: string; appProtocol: string }>;
}

/** The table everything below is generated from. */
export const SERVICES: readonly ServiceRow[] = [
  {
    name: "metering",
    role: "stateless ingest; dedupe on unique (tenant, event_id); group-commit writer per replica",
    replicasMin: 2,
    // Commits serialize on the events table lock (sequence order = commit order): replicas add
    // decode/validation CPU and batching, not parallel writes.
    replicasMax: 8,
    cpuTargetPercent: 70,
    cpuRequest: "500m",
    cpuLimit: "2",
    memoryMiB: 768,
    redis: true,
    calls: [],
    webhooks: false,
    // OTLP/HTTP receiver: AI services may send their GenAI spans as usage (POST /v1/traces).
    extraPorts: [{ name: "otlp-http", port: 4318, env: "METERING_OTLP_PORT", appProtocol: "http" }],
  },
  {
    name: "rating",
    role: "RPCs on every replica; the metering-cursor consumer runs in the rating-consumer pods, which split the feed's partitions by lease",
    replicasMin: 2,
    replicasMax: 8,
    cpuTargetPercent: 70,
    cpuRequest: "500m",
    cpuLimit: "2",
    memoryMiB: 768,
    redis: true,
    calls: ["metering", "credit-wallet"],
    webhooks: true,
    // The metering-cursor consumer runs only in the rating-consumer pods (the Deployment serves
    // RPCs with RATING_CONSUMER_ENABLED=false). Its pods split the RATING_CONSUMER_PARTITIONS
    // partitions between them through leases in PostgreSQL (apps/rating README, "Several
    // processes"): each batch transaction is fenced by its lease's epoch, so a pod that lost its
    // lease writes nothing, and the StatefulSet can be scaled (`kubectl scale statefulset
    // rating-consumer --replicas=N`, N <= partitions; more pods stand by).
    singletonConsumerFlag: "RATING_CONSUMER_ENABLED",
    consumerEnv: { RATING_CONSUMER_PARTITIONS: "4" },
    consumerLeased: { replicas: 2, role: "RATING_CONSUMER_ENABLED consumers of rating: the pods split metering's feed partitions by lease (fenced); scale up to RATING_CONSUMER_PARTITIONS" },
  },
  {
    name: "ledger",
    role: "group-commit writer per replica; row locks on touched accounts in id order",
    replicasMin: 2,
    // Every write transaction locks ledger_meta (one row): replicas are for availability; write
    // throughput grows with batch size, not with replicas.
    replicasMax: 3,
    cpuTargetPercent: 70,
    cpuRequest: "500m",
    cpuLimit: "2",
    memoryMiB: 768,
    redis: false,
    calls: [],
    webhooks: false,
  },
  {
    name: "credit-wallet",
    role: "holds on the Redis hot path (hash-tagged per wallet); PostgreSQL is the record",
    replicasMin: 2,
    replicasMax: 8,
    cpuTargetPercent: 70,
    cpuRequest: "250m",
    cpuLimit: "1",
    memoryMiB: 512,
    redis: true,
    calls: ["ledger"],
    webhooks: true,
  },
  {
    name: "invoicing",
    role: "one invoice per (subscription, period) by unique key; closes are idempotent",
    replicasMin: 2,
    replicasMax: 4,
    cpuTargetPercent: 70,
    cpuRequest: "250m",
    cpuLimit: "1",
    memoryMiB: 512,
    redis: false,
    calls: ["rating", "credit-wallet", "ledger"],
    webhooks: false,
  },
];

/** "credit-wallet" -> "CREDIT_WALLET" (prefix of the service's own variables). */
export function envPrefix(name: ServiceName): string {
  return name.toUpperCase().replace(/-/g, "_");
}

/** "credit-wallet" -> "credit_wallet": the PostgreSQL schema of the service (infra/migrate.ts uses the same rule). */
export function schemaOf(name: ServiceName): string {
  return name.replace(/-/g, "_");
}

/** Secret with this service's own database URL (own role/credentials per service). */
export function dbSecretOf(name: ServiceName): string {
  return `nanobill-${name}`;
}

/** In-cluster base URL of a service (same namespace). */
export function urlOf(name: ServiceName): string {
  return `http://${name}:${CONTAINER_PORT}`;
}

function labels(name: string, component: "server" | "migrations"): Record<string, string> {
  return {
    "app.kubernetes.io/name": name,
    "app.kubernetes.io/component": component,
    "app.kubernetes.io/part-of": "nanobill",
  };
}

/** Selector of a service's serving pods (the migrations Job's pods never match it). */
export function selectorOf(name: ServiceName): Record<string, string> {
  return { "app.kubernetes.io/name": name, "app.kubernetes.io/component": "server" };
}

const POD_SECURITY: IPodSecurityContext = {
  runAsNonRoot: true,
  runAsUser: RUN_AS_ID,
  runAsGroup: RUN_AS_ID,
  fsGroup: RUN_AS_ID,
  seccompProfile: { type: "RuntimeDefault" },
};

const CONTAINER_SECURITY: ISecurityContext = {
  runAsNonRoot: true,
  runAsUser: RUN_AS_ID,
  runAsGroup: RUN_AS_ID,
  allowPrivilegeEscalation: false,
  privileged: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

const TMP_VOLUME: IVolume = { name: "tmp", emptyDir: { sizeLimit: TMP_SIZE_LIMIT } };
const TMP_MOUNT: IVolumeMount = { name: "tmp", mountPath: "/tmp" };

function secretEnv(name: string, secret: string, key = name): IEnvVar {
  return { name, valueFrom: { secretKeyRef: { name: secret, key } } };
}

/** Environment of a service container (and, minus the listener, of its migration containers). */
function serviceEnv(s: ServiceRow, forServer: boolean): IEnvVar[] {
  const p = envPrefix(s.name);
  const env: IEnvVar[] = [
    { name: "NANOBILL_SERVICE", value: s.name },
    secretEnv("DATABASE_URL", dbSecretOf(s.name)),
  ];
  if (!forServer) return env;
  env.push(
    // Heap cap at 75% of the memory limit, so V8 collects before the kernel kills the pod.
    // env[2]: the dev overlay patches it by index (infra/k8s/overlays/dev/resources-small.yaml).
    { name: "NODE_OPTIONS", value: `--max-old-space-size=${Math.floor((s.memoryMiB * 3) / 4)}` },
    { name: `${p}_PORT`, value: String(CONTAINER_PORT) },
    { name: `${p}_HOST`, value: "0.0.0.0" },
    { name: "OTEL_SERVICE_NAME", value: s.name },
    ...(s.extraPorts ?? []).map((x) => ({ name: x.env, value: String(x.port) })),
    secretEnv("NANOBILL_API_KEYS", SHARED_SECRET),
    // The migrations Job migrates and the init container waits for it: the server only checks that
    // the schema is current, so its DATABASE_URL may name a role without DDL rights.
    { name: "NANOBILL_MIGRATE_ON_START", value: "false" },
  );
  if (s.redis) env.push(secretEnv("REDIS_URL", SHARED_SECRET));
  if (s.calls.length > 0) env.push(secretEnv("NANOBILL_INTERNAL_API_KEY", SHARED_SECRET));
  if (s.singletonConsumerFlag) env.push({ name: s.singletonConsumerFlag, value: "false" });
  return env;
}

function resources(s: ServiceRow): IContainer["resources"] {
  return {
    requests: { cpu: s.cpuRequest, memory: `${s.memoryMiB}Mi` },
    limits: { cpu: s.cpuLimit, memory: `${s.memoryMiB}Mi` },
  };
}

/** Small fixed resources of the migration containers (one node process, one connection). */
const MIGRATE_RESOURCES: IContainer["resources"] = {
  requests: { cpu: "100m", memory: "256Mi" },
  limits: { cpu: "1", memory: "256Mi" },
};

function migrateContainer(s: ServiceRow, name: string, mode: "migrate" | "migrate-wait"): IContainer {
  return {
    name,
    image: IMAGE,
    imagePullPolicy: "IfNotPresent",
    args: [mode],
    envFrom: [{ configMapRef: { name: CONFIG_MAP } }],
    env: [...serviceEnv(s, false), { name: "NODE_OPTIONS", value: "--max-old-space-size=192" }],
    resources: MIGRATE_RESOURCES,
    securityContext: CONTAINER_SECURITY,
    volumeMounts: [TMP_MOUNT],
  };
}

export function serviceAccount(s: ServiceRow): IServiceAccount {
  return {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name: s.name, labels: labels(s.name, "server") },
    automountServiceAccountToken: false,
  };
}

export function service(s: ServiceRow): IService {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: s.name, labels: labels(s.name, "server") },
    spec: {
      type: "ClusterIP",
      selector: selectorOf(s.name),
      ports: [
        { name: PORT_NAME, port: CONTAINER_PORT, targetPort: PORT_NAME, protocol: "TCP", appProtocol: "kubernetes.io/h2c" },
        ...(s.extraPorts ?? []).map((x) => ({ name: x.name, port: x.port, targetPort: x.name, protocol: "TCP" as const, appProtocol: x.appProtocol })),
      ],
    },
  };
}

type PodTemplate = NonNullable<IDeployment["spec"]>["template"];

function podTemplate(s: ServiceRow, component: "server" | "consumer", env: IEnvVar[]): PodTemplate {
  const probe = { grpc: { port: CONTAINER_PORT } };
  const selector = component === "server" ? selectorOf(s.name) : consumerSelectorOf(s.name);
  return {
        metadata: { labels: { ...labels(s.name, "server"), "app.kubernetes.io/component": component } },
        spec: {
          serviceAccountName: s.name,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: POD_SECURITY,
          terminationGracePeriodSeconds: TERMINATION_GRACE_S,
          topologySpreadConstraints: [
            {
              maxSkew: 1,
              topologyKey: "kubernetes.io/hostname",
              whenUnsatisfiable: "ScheduleAnyway",
              labelSelector: { matchLabels: selector },
            },
            {
              maxSkew: 1,
              topologyKey: "topology.kubernetes.io/zone",
              whenUnsatisfiable: "ScheduleAnyway",
              labelSelector: { matchLabels: selector },
            },
          ],
          // New code never starts on an old schema: wait until the migrations Job has applied every file.
          initContainers: [migrateContainer(s, "wait-migrations", "migrate-wait")],
          containers: [
            {
              name: s.name,
              image: IMAGE,
              imagePullPolicy: "IfNotPresent",
              ports: [
                { name: PORT_NAME, containerPort: CONTAINER_PORT, protocol: "TCP" },
                ...(s.extraPorts ?? []).map((x) => ({ name: x.name, containerPort: x.port, protocol: "TCP" as const })),
              ],
              envFrom: [{ configMapRef: { name: CONFIG_MAP } }],
              env,
              resources: resources(s),
              securityContext: CONTAINER_SECURITY,
              volumeMounts: [TMP_MOUNT],
              // grpc.health.v1.Health "" (whole server); NOT_SERVING as soon as close() starts.
              startupProbe: { ...probe, periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 60 },
              readinessProbe: { ...probe, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 2, successThreshold: 1 },
              livenessProbe: { ...probe, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 6 },
              lifecycle: { preStop: { exec: { command: ["sleep", String(PRESTOP_SLEEP_S)] } } },
              terminationMessagePolicy: "FallbackToLogsOnError",
            },
          ],
          volumes: [TMP_VOLUME],
        },
  };
}

export function deployment(s: ServiceRow): IDeployment {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: s.name, labels: labels(s.name, "server"), annotations: { "nanobill.dev/role": s.role } },
    spec: {
      // No `replicas`: the HPA owns it (a fixed value here would fight the HPA on every apply).
      revisionHistoryLimit: 5,
      selector: { matchLabels: selectorOf(s.name) },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: "25%", maxUnavailable: 0 } },
      template: podTemplate(s, "server", serviceEnv(s, true)),
    },
  };
}

/** Selector of a service's singleton consumer pod. */
export function consumerSelectorOf(name: ServiceName): Record<string, string> {
  return { "app.kubernetes.io/name": name, "app.kubernetes.io/component": "consumer" };
}

/**
 * The singleton consumer of a service: a one-replica StatefulSet, because a StatefulSet never
 * starts a pod's replacement before the old pod is confirmed gone (a Deployment may briefly run
 * two, e.g. during a node partition). Same image, env and probes; the consumer flag turned on.
 * A leased consumer (`consumerLeased`, rating) fences its own writes, so its StatefulSet may run
 * several pods (they start in parallel and split the work between them).
 * Not behind the Service (its RPCs are served by the Deployment).
 */
export function consumerStatefulSet(s: ServiceRow): IStatefulSet | undefined {
  const flag = s.singletonConsumerFlag;
  if (!flag) return undefined;
  const env = [
    ...serviceEnv(s, true).map((e) => (e.name === flag ? { name: flag, value: "true" } : e)),
    // The consumer pod runs one loop per customer partition of the feed (RATING_CONSUMER_PARTITIONS).
    ...Object.entries(s.consumerEnv ?? {}).map(([name, value]) => ({ name, value })),
  ];
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: {
      name: `${s.name}-consumer`,
      labels: { ...labels(s.name, "server"), "app.kubernetes.io/component": "consumer" },
      annotations: { "nanobill.dev/role": s.consumerLeased?.role ?? `the single active ${flag} consumer of ${s.name}` },
    },
    spec: {
      replicas: s.consumerLeased?.replicas ?? 1,
      revisionHistoryLimit: 5,
      // Leased consumers coordinate in the database: pods need not start one after the other.
      podManagementPolicy: s.consumerLeased ? "Parallel" : "OrderedReady",
      updateStrategy: { type: "RollingUpdate" },
      selector: { matchLabels: consumerSelectorOf(s.name) },
      template: podTemplate(s, "consumer", env),
    },
  };
}

export function hpa(s: ServiceRow): IHorizontalPodAutoscaler {
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name: s.name, labels: labels(s.name, "server") },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: s.name },
      minReplicas: s.replicasMin,
      maxReplicas: s.replicasMax,
      metrics: [{ type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: s.cpuTargetPercent } } }],
      behavior: {
        scaleUp: { stabilizationWindowSeconds: 0, policies: [{ type: "Percent", value: 100, periodSeconds: 30 }] },
        scaleDown: { stabilizationWindowSeconds: 300, policies: [{ type: "Pods", value: 1, periodSeconds: 60 }] },
      },
    },
  };
}

export function pdb(s: ServiceRow): IPodDisruptionBudget {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name: s.name, labels: labels(s.name, "server") },
    spec: { maxUnavailable: 1, selector: { matchLabels: selectorOf(s.name) }, unhealthyPodEvictionPolicy: "AlwaysAllow" },
  };
}

/** The consumer pods' PDB: a drain evicts one at a time (their partitions move to the other by lease). */
export function consumerPdb(s: ServiceRow): IPodDisruptionBudget | undefined {
  if (!s.singletonConsumerFlag) return undefined;
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name: `${s.name}-consumer`, labels: { ...labels(s.name, "server"), "app.kubernetes.io/component": "consumer" } },
    spec: { maxUnavailable: 1, selector: { matchLabels: consumerSelectorOf(s.name) }, unhealthyPodEvictionPolicy: "AlwaysAllow" },
  };
}

export function migrationsJob(s: ServiceRow): IJob {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: `${s.name}-migrate`,
      labels: labels(s.name, "migrations"),
      annotations: {
        // Argo CD: a Sync hook (not PreSync: on a first install a PreSync Job would run before its
        // ServiceAccount, ConfigMap and Secrets exist, and never start), in a wave after them,
        // replacing the previous run; new pods wait for it in their init container. Plain kubectl:
        // see docs/deployment.md (delete the finished Job, apply, wait).
        "argocd.argoproj.io/hook": "Sync",
        "argocd.argoproj.io/sync-wave": "1",
        "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
      },
    },
    spec: {
      backoffLimit: MIGRATE_BACKOFF_LIMIT,
      activeDeadlineSeconds: MIGRATE_DEADLINE_S,
      ttlSecondsAfterFinished: MIGRATE_TTL_AFTER_FINISHED_S,
      template: {
        metadata: { labels: labels(s.name, "migrations") },
        spec: {
          serviceAccountName: s.name,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          restartPolicy: "Never",
          securityContext: POD_SECURITY,
          containers: [migrateContainer(s, "migrate", "migrate")],
          volumes: [TMP_VOLUME],
        },
      },
    },
  };
}

/** Service addresses, schemas and limits shared by every service (envFrom): the one scheme, <SERVICE>_<WHAT>. */
export function configMap(): IConfigMap {
  const data: Record<string, string> = {};
  for (const s of SERVICES) data[`${envPrefix(s.name)}_URL`] = urlOf(s.name);
  for (const s of SERVICES) data[`${envPrefix(s.name)}_DB_SCHEMA`] = schemaOf(s.name);
  // Embedded PGlite is never used when DATABASE_URL is set; if it were, it could only write under /tmp.
  for (const s of SERVICES) data[`${envPrefix(s.name)}_DATA_DIR`] = `/tmp/nanobill-data/${s.name}`;
  Object.assign(data, {
    NANOBILL_LOG_LEVEL: "info",
    // Limits (each service validates its own range and logs the values once at start-up).
    // Connections to PostgreSQL = replicas x pool: keep (sum over services) below the server's
    // max_connections, or put PgBouncer (transaction mode) in front.
    ...Object.fromEntries(SERVICES.map((s) => [`${envPrefix(s.name)}_DB_POOL_MAX`, "10"])),
    INVOICING_LEDGER_RETRY_MS: "10000",
    METERING_BACKFILL_INTERVAL_MS: "1000",
  });
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name: CONFIG_MAP, labels: { "app.kubernetes.io/part-of": "nanobill" } }, data };
}

/** Label that admits a namespace or a pod as an API client of every service (docs/deployment.md). */
export const API_CLIENT_LABEL = "nanobill.dev/api-client";
/** The OpenTelemetry Collector of components/otel-collector: its pods and OTLP ports. */
const COLLECTOR = { name: "otel-collector", ports: [4317, 4318] };

/**
 * Ingress network policies: every Nanobill pod (part-of=nanobill; other pods of a shared namespace
 * are left alone) is denied ingress unless admitted, then each
 * service's serving pods admit, on their own ports only, the pods of the services that call it
 * (the `calls` column) and API clients: pods and namespaces labelled API_CLIENT_LABEL=true (an
 * ingress controller's namespace, the AI services that report usage or ask for holds). The
 * collector admits every Nanobill pod on OTLP. Egress: egressPolicies (an opt-in component).
 */
export function networkPolicies(): INetworkPolicy[] {
  const meta = (name: string) => ({ name, labels: { "app.kubernetes.io/part-of": "nanobill" } });
  const apiClients = [
    { podSelector: { matchLabels: { [API_CLIENT_LABEL]: "true" } } },
    { namespaceSelector: { matchLabels: { [API_CLIENT_LABEL]: "true" } } },
  ];
  const out: INetworkPolicy[] = [
    { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: meta("nanobill-default-deny-ingress"), spec: { podSelector: { matchLabels: { "app.kubernetes.io/part-of": "nanobill" } }, policyTypes: ["Ingress"] } },
  ];
  for (const s of SERVICES) {
    const callers = SERVICES.filter((c) => c.calls.includes(s.name)).map((c) => c.name);
    const from = [
      ...(callers.length > 0
        ? [
            {
              podSelector: {
                matchExpressions: [
                  { key: "app.kubernetes.io/name", operator: "In", values: callers },
                  { key: "app.kubernetes.io/component", operator: "In", values: ["server", "consumer"] },
                ],
              },
            },
          ]
        : []),
      ...apiClients,
    ];
    out.push({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: meta(`${s.name}-ingress`),
      spec: {
        podSelector: { matchLabels: selectorOf(s.name) },
        policyTypes: ["Ingress"],
        ingress: [{ from, ports: [CONTAINER_PORT, ...(s.extraPorts ?? []).map((x) => x.port)].map((port) => ({ protocol: "TCP", port })) }],
      },
    });
  }
  out.push({
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: meta(`${COLLECTOR.name}-ingress`),
    spec: {
      podSelector: { matchLabels: { "app.kubernetes.io/name": COLLECTOR.name } },
      policyTypes: ["Ingress"],
      ingress: [{ from: [{ podSelector: { matchLabels: { "app.kubernetes.io/part-of": "nanobill" } } }], ports: COLLECTOR.ports.map((port) => ({ protocol: "TCP", port })) }],
    },
  });
  return out;
}

/** Where the egress policies' datastores listen (patch the policy for other ports: docs/deployment.md). */
export const DATASTORE_PORTS = { postgres: 5432, redis: 6379 } as const;

/**
 * Egress network policies (components/egress-policy, opt-in per overlay): every Nanobill pod but
 * the collector (which exports to a backend of the install's choosing) is denied egress unless
 * admitted; then all of them may resolve names (port 53) and reach PostgreSQL (any address, any
 * namespace: managed or in-cluster), the services with the `redis` column Redis, the OTLP
 * collector, each service's pods the serving pods of the services it `calls`, and the services
 * with `webhooks` any port of a public address (the ranges libs/webhooks refuses are excluded
 * here too: defence in depth against SSRF to the metadata endpoint or the pod network).
 */
export function egressPolicies(): INetworkPolicy[] {
  const meta = (name: string) => ({ name, labels: { "app.kubernetes.io/part-of": "nanobill" } });
  const nanobillPods = {
    matchLabels: { "app.kubernetes.io/part-of": "nanobill" },
    matchExpressions: [{ key: "app.kubernetes.io/name", operator: "NotIn", values: [COLLECTOR.name] }],
  };
  // The serving and consumer pods of these services (not their migrations Jobs: DNS and PostgreSQL only).
  const podsOf = (names: readonly string[]) => ({
    matchLabels: { "app.kubernetes.io/part-of": "nanobill" },
    matchExpressions: [
      { key: "app.kubernetes.io/name", operator: "In", values: [...names] },
      { key: "app.kubernetes.io/component", operator: "In", values: ["server", "consumer"] },
    ],
  });
  const anywhere = [{ ipBlock: { cidr: "0.0.0.0/0" } }, { ipBlock: { cidr: "::/0" } }, { namespaceSelector: {} }];
  const tcp = (...ports: number[]) => ports.map((port) => ({ protocol: "TCP", port }));
  const np = (name: string, podSelector: object, egress: object[]): INetworkPolicy =>
    ({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: meta(name), spec: { podSelector, policyTypes: ["Egress"], egress } }) as INetworkPolicy;
  const out: INetworkPolicy[] = [
    np("nanobill-default-deny-egress", nanobillPods, []),
    np("nanobill-egress-dns", nanobillPods, [{ ports: [{ protocol: "UDP", port: 53 }, { protocol: "TCP", port: 53 }] }]),
    np("nanobill-egress-postgres", nanobillPods, [{ to: anywhere, ports: tcp(DATASTORE_PORTS.postgres) }]),
    np("nanobill-egress-redis", podsOf(SERVICES.filter((x) => x.redis).map((x) => x.name)), [{ to: anywhere, ports: tcp(DATASTORE_PORTS.redis) }]),
    np("nanobill-egress-otlp", nanobillPods, [{ to: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": COLLECTOR.name } } }], ports: tcp(...COLLECTOR.ports) }]),
  ];
  for (const x of SERVICES.filter((r) => r.calls.length > 0)) {
    out.push(
      np(`${x.name}-egress-peers`, podsOf([x.name]), [
        { to: [{ podSelector: { matchExpressions: [{ key: "app.kubernetes.io/name", operator: "In", values: [...x.calls] }], matchLabels: { "app.kubernetes.io/component": "server" } } }], ports: tcp(CONTAINER_PORT) },
      ]),
    );
  }
  out.push(
    np("nanobill-egress-webhooks", podsOf(SERVICES.filter((x) => x.webhooks).map((x) => x.name)), [
      {
        to: [
          { ipBlock: { cidr: "0.0.0.0/0", except: NON_PUBLIC_IPV4.map((r) => r.cidr) } },
          { ipBlock: { cidr: "::/0", except: NON_PUBLIC_IPV6.map((r) => r.cidr) } },
        ],
      },
    ]),
  );
  return out;
}

/** Where the opt-in egress component lives (rendered with the base). */
export const EGRESS_COMPONENT_DIR = join(dirname(fileURLToPath(import.meta.url)), "components", "egress-policy");

/** components/egress-policy: file name -> content. */
export function renderEgressComponent(): Map<string, string> {
  const files = new Map<string, string>();
  files.set("policies.yaml", toYaml(egressPolicies()));
  const kustomization = { apiVersion: "kustomize.config.k8s.io/v1alpha1", kind: "Component", resources: ["policies.yaml"] };
  files.set("kustomization.yaml", HEADER + stringify(kustomization, { lineWidth: 0, aliasDuplicateObjects: false }));
  return files;
}

const HEADER = "# Generated by infra/k8s/render.ts from its SERVICES table. Do not edit: change the table and run\n#   npx tsx infra/k8s/render.ts\n";

function toYaml(docs: object[]): string {
  return HEADER + docs.map((d) => "---\n" + stringify(d, { lineWidth: 0, aliasDuplicateObjects: false })).join("");
}

/** File name (under infra/k8s/base) -> content. */
export function renderBase(): Map<string, string> {
  const files = new Map<string, string>();
  files.set("config.yaml", toYaml([configMap()]));
  files.set("network-policies.yaml", toYaml(networkPolicies()));
  for (const s of SERVICES) {
    const consumer = consumerStatefulSet(s);
    const consumerBudget = consumerPdb(s);
    files.set(`${s.name}.yaml`, toYaml([serviceAccount(s), service(s), deployment(s), hpa(s), pdb(s), ...(consumer ? [consumer] : []), ...(consumerBudget ? [consumerBudget] : []), migrationsJob(s)]));
  }
  const kustomization = {
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    resources: [...files.keys()],
  };
  files.set("kustomization.yaml", HEADER + stringify(kustomization, { lineWidth: 0, aliasDuplicateObjects: false }));
  return files;
}

export const BASE_DIR = join(dirname(fileURLToPath(import.meta.url)), "base");

async function main(): Promise<void> {
  for (const [name, text] of renderBase()) await writeFile(join(BASE_DIR, name), text);
  await mkdir(EGRESS_COMPONENT_DIR, { recursive: true });
  for (const [name, text] of renderEgressComponent()) await writeFile(join(EGRESS_COMPONENT_DIR, name), text);
  process.stdout.write(`wrote ${renderBase().size} files to ${BASE_DIR} and ${renderEgressComponent().size} to ${EGRESS_COMPONENT_DIR}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
