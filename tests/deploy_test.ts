/**
 * Static checks on the manifests and images in deploy/: the YAML parses, RBAC
 * grants only what the elector needs, and the Deployment agrees with both the
 * RBAC and the entrypoint's environment variables.
 *
 * Runs under `deno test -A tests/deploy_test.ts` and `bun test tests/deploy_test.ts`.
 */
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { access, readdir, readFile } from "node:fs/promises";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { FLAGS, main } from "../lib/cli.ts";
import { startLeaseServer } from "./support/lease_server.ts";
import { kubeconfigFor } from "./support/kubeconfig_file.ts";

/** The environment variables the entrypoint reads: those of its flag table. */
export const ENTRYPOINT_ENV_NAMES: readonly string[] = FLAGS.flatMap((f) => (f.env ? [f.env] : []));

const DEPLOY_DIR = new URL("../deploy/", import.meta.url);
const LEASE_GROUP = "coordination.k8s.io";

// Loose shapes of the objects under test: only the fields the checks read.
interface Meta {
  name?: string;
  namespace?: string;
}
interface KubeObject {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: Meta;
}
interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  verbs?: string[];
}
interface Role extends KubeObject {
  rules?: PolicyRule[];
}
interface RoleBinding extends KubeObject {
  roleRef?: { apiGroup?: string; kind?: string; name?: string };
  subjects?: { kind?: string; name?: string; namespace?: string }[];
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath?: string } };
}
interface Probe {
  httpGet?: { path?: string; port?: string | number };
}
interface SecurityContext {
  runAsNonRoot?: boolean;
  readOnlyRootFilesystem?: boolean;
}
interface Container {
  name: string;
  image?: string;
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort?: number }[];
  livenessProbe?: Probe;
  securityContext?: SecurityContext;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface Deployment extends KubeObject {
  spec?: {
    replicas?: number;
    template?: {
      spec?: {
        serviceAccountName?: string;
        securityContext?: SecurityContext;
        containers?: Container[];
      };
    };
  };
}
interface SkaffoldConfig extends KubeObject {
  build?: { artifacts?: { image?: string; context?: string; docker?: { dockerfile?: string } }[] };
  manifests?: { rawYaml?: string[] };
  profiles?: { name?: string; manifests?: { rawYaml?: string[] } }[];
}

function deployPath(name: string): string {
  return fileURLToPath(new URL(name, DEPLOY_DIR));
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Parses every document of deploy/<name>, failing on any YAML error. */
async function loadYaml(name: string): Promise<KubeObject[]> {
  const text = await readFile(deployPath(name), "utf8");
  return parseAllDocuments(text).map((doc, i) => {
    assert.deepEqual(
      doc.errors.map((e) => e.message),
      [],
      `${name}: document ${i} has YAML errors`,
    );
    return doc.toJS() as KubeObject;
  });
}

/** The one object of `kind` in deploy/<name>. */
async function loadOne<T extends KubeObject>(name: string, kind: string): Promise<T> {
  const found = (await loadYaml(name)).filter((o) => o?.kind === kind);
  assert.equal(found.length, 1, `${name}: expected exactly one ${kind}, found ${found.length}`);
  return found[0] as T;
}

async function leaseholdContainer(
  file = "deployment.yaml",
): Promise<{ deployment: Deployment; container: Container }> {
  const deployment = await loadOne<Deployment>(file, "Deployment");
  const containers = deployment.spec?.template?.spec?.containers ?? [];
  const container = containers.find((c) => c.name === "leasehold");
  assert.ok(container, `no container named "leasehold" (found: ${containers.map((c) => c.name).join(", ")})`);
  return { deployment, container };
}

/** The image of the last FROM in a Dockerfile (its final stage). */
function finalBaseImage(dockerfile: string): string | undefined {
  let image: string | undefined;
  for (const line of dockerfile.split("\n")) {
    const m = /^\s*FROM\s+(.+)$/i.exec(line);
    if (!m) continue;
    // Skip flags such as --platform=...; the image is the first other word.
    image = m[1].trim().split(/\s+/).find((w) => !w.startsWith("--"));
  }
  return image;
}

test("every deploy/*.yaml parses and each document has apiVersion and kind", async () => {
  const files = (await readdir(fileURLToPath(DEPLOY_DIR))).filter((f) => f.endsWith(".yaml")).sort();
  for (
    const expected of [
      "deployment.yaml",
      "deployment.deno.yaml",
      "deployment.shards.yaml",
      "kind.yaml",
      "rbac.yaml",
      "rbac.shards.yaml",
      "skaffold.yaml",
    ]
  ) {
    assert.ok(files.includes(expected), `deploy/${expected} is missing`);
  }
  for (const file of files) {
    const docs = await loadYaml(file);
    assert.ok(docs.length > 0, `${file} has no documents`);
    docs.forEach((doc, i) => {
      assert.ok(doc && typeof doc === "object", `${file}: document ${i} is empty or not a mapping`);
      assert.equal(typeof doc.apiVersion, "string", `${file}: document ${i} has no apiVersion`);
      assert.ok((doc.apiVersion as string).length > 0, `${file}: document ${i} has an empty apiVersion`);
      assert.equal(typeof doc.kind, "string", `${file}: document ${i} has no kind`);
      assert.ok((doc.kind as string).length > 0, `${file}: document ${i} has an empty kind`);
    });
  }
});

test("rbac.yaml holds exactly a ServiceAccount, a Role and a RoleBinding", async () => {
  const docs = await loadYaml("rbac.yaml");
  assert.deepEqual(docs.map((d) => d.kind), ["ServiceAccount", "Role", "RoleBinding"]);
  for (const doc of docs) {
    assert.equal(doc.metadata?.namespace, undefined, `${doc.kind} must not pin a namespace`);
  }
});

test("the Role grants only the Lease verbs the elector uses, Events, and LeaseCandidates", async () => {
  const role = await loadOne<Role>("rbac.yaml", "Role");
  const all = role.rules ?? [];
  assert.ok(all.length > 0, "the Role has no rules");
  // Events on the Lease: create only, in the core group.
  const events = all.filter((r) => r.resources?.includes("events"));
  const candidates = all.filter((r) => r.resources?.includes("leasecandidates"));
  const rules = all.filter((r) => !events.includes(r) && !candidates.includes(r));
  assert.deepEqual([...events], [{ apiGroups: [""], resources: ["events"], verbs: ["create"] }]);
  // LeaseCandidates for --coordinated: named after pod identities, so not limited by name.
  assert.deepEqual([...candidates], [{
    apiGroups: [LEASE_GROUP],
    resources: ["leasecandidates"],
    verbs: ["get", "create", "update", "watch", "delete"],
  }]);

  const granted = new Set<string>();
  for (const [i, rule] of rules.entries()) {
    assert.deepEqual(rule.apiGroups, [LEASE_GROUP], `rule ${i}: apiGroups`);
    assert.deepEqual(rule.resources, ["leases"], `rule ${i}: resources`);
    const verbs = rule.verbs ?? [];
    assert.ok(verbs.length > 0, `rule ${i} has no verbs`);
    for (const field of [rule.apiGroups, rule.resources, rule.resourceNames ?? [], verbs]) {
      assert.ok(!field?.includes("*"), `rule ${i} uses a "*" wildcard`);
    }
    for (const forbidden of ["delete", "deletecollection", "patch"]) {
      assert.ok(!verbs.includes(forbidden), `rule ${i} grants "${forbidden}"`);
    }
    if (verbs.includes("create")) {
      // create cannot be narrowed by name, so it must stand alone and unnamed.
      assert.deepEqual(verbs, ["create"], `rule ${i}: create must not share a rule with other verbs`);
      assert.equal(rule.resourceNames, undefined, `rule ${i}: create cannot be limited by resourceNames`);
    } else {
      assert.ok(
        (rule.resourceNames ?? []).length > 0,
        `rule ${i}: ${verbs.join(", ")} must be limited by resourceNames`,
      );
    }
    for (const v of verbs) granted.add(v);
  }
  // No "list": followers watch with a metadata.name field selector, which the
  // API server authorizes against resourceNames as a request for that one name.
  assert.deepEqual([...granted].sort(), ["create", "get", "update", "watch"]);
});

test("the RoleBinding binds the Role to the ServiceAccount", async () => {
  const sa = await loadOne<KubeObject>("rbac.yaml", "ServiceAccount");
  const role = await loadOne<Role>("rbac.yaml", "Role");
  const binding = await loadOne<RoleBinding>("rbac.yaml", "RoleBinding");
  assert.ok(sa.metadata?.name, "the ServiceAccount has no name");
  assert.ok(role.metadata?.name, "the Role has no name");
  assert.deepEqual(binding.roleRef, {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "Role",
    name: role.metadata?.name,
  });
  assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: sa.metadata?.name }]);
});

test("the Deployment runs 3 replicas as the ServiceAccount, with POD_NAME from the downward API", async () => {
  const sa = await loadOne<KubeObject>("rbac.yaml", "ServiceAccount");
  const { deployment, container } = await leaseholdContainer();
  assert.equal(deployment.spec?.replicas, 3);
  assert.equal(deployment.spec?.template?.spec?.serviceAccountName, sa.metadata?.name);
  const podName = container.env?.find((e) => e.name === "POD_NAME");
  assert.ok(podName, "POD_NAME is not set");
  assert.equal(podName.value, undefined, "POD_NAME must not be a literal value");
  assert.equal(podName.valueFrom?.fieldRef?.fieldPath, "metadata.name");
});

test("the container sets only environment variables the entrypoint reads", async () => {
  const { container } = await leaseholdContainer();
  const names = (container.env ?? []).map((e) => e.name);
  assert.ok(names.length > 0, "the container sets no environment variables");
  const unknown = names.filter((n) => !ENTRYPOINT_ENV_NAMES.includes(n));
  assert.deepEqual(unknown, [], "env names the entrypoint does not read");
  assert.equal(new Set(names).size, names.length, "an env var is set twice");
});

test("the liveness probe hits /healthz on a named container port", async () => {
  const { container } = await leaseholdContainer();
  const get = container.livenessProbe?.httpGet;
  assert.ok(get, "no httpGet liveness probe");
  assert.equal(get.path, "/healthz");
  assert.equal(typeof get.port, "string", "the probe should use the port's name, not a number");
  const portNames = (container.ports ?? []).map((p) => p.name);
  assert.ok(portNames.includes(get.port as string), `probe port "${get.port}" is not one of ${portNames.join(", ")}`);
});

test("the container runs as non-root on a read-only root filesystem, with resource requests", async () => {
  const { deployment, container } = await leaseholdContainer();
  const podSc = deployment.spec?.template?.spec?.securityContext;
  const sc = container.securityContext;
  assert.equal(sc?.runAsNonRoot ?? podSc?.runAsNonRoot, true, "runAsNonRoot");
  assert.equal(sc?.readOnlyRootFilesystem, true, "readOnlyRootFilesystem");
  const requests = container.resources?.requests ?? {};
  assert.ok(requests.cpu, "resources.requests.cpu is not set");
  assert.ok(requests.memory, "resources.requests.memory is not set");
});

test("the Deployment's LEASE_NAME is the lease the Role names", async () => {
  const role = await loadOne<Role>("rbac.yaml", "Role");
  const { container } = await leaseholdContainer();
  const leaseName = container.env?.find((e) => e.name === "LEASE_NAME")?.value;
  assert.ok(leaseName, "LEASE_NAME has no literal value");
  const named = new Set((role.rules ?? []).flatMap((r) => r.resourceNames ?? []));
  assert.deepEqual([...named], [leaseName]);
});

test("both Dockerfiles end on a distroless base image", async () => {
  for (const name of ["Dockerfile", "Dockerfile.deno"]) {
    const text = await readFile(deployPath(name), "utf8");
    const image = finalBaseImage(text);
    assert.ok(image, `${name} has no FROM line`);
    assert.ok(image.includes("distroless"), `${name}: final stage is based on ${image}`);
  }
});

test("skaffold.yaml points at files that exist", async () => {
  const config = await loadOne<SkaffoldConfig>("skaffold.yaml", "Config");
  const raw = config.manifests?.rawYaml ?? [];
  assert.ok(raw.length > 0, "manifests.rawYaml is empty");
  // The "shards" profile deploys the sharded mode instead.
  const shards = config.profiles?.find((p) => p.name === "shards")?.manifests?.rawYaml;
  assert.deepEqual(shards, ["rbac.shards.yaml", "deployment.shards.yaml"], "the shards profile's manifests");
  for (const entry of [...raw, ...shards]) {
    assert.ok(await exists(deployPath(entry)), `rawYaml entry ${entry} does not exist next to skaffold.yaml`);
  }
  // Skaffold resolves the build context against the config's own directory and
  // the dockerfile against the context.
  const artifacts = config.build?.artifacts ?? [];
  assert.ok(artifacts.length > 0, "no build artifacts");
  for (const a of artifacts) {
    const context = new URL(`${a.context ?? "."}/`, DEPLOY_DIR);
    const dockerfile = fileURLToPath(new URL(a.docker?.dockerfile ?? "Dockerfile", context));
    assert.ok(await exists(dockerfile), `${a.image}: dockerfile ${dockerfile} does not exist`);
    assert.ok(await exists(fileURLToPath(new URL("mod.ts", context))), `${a.image}: context is not the repo root`);
  }
});

test("the Deno image bakes its module cache and reads only the service-account directory", async () => {
  const text = await readFile(deployPath("Dockerfile.deno"), "utf8");
  const env = new Map([...text.matchAll(/^ENV ([A-Z_]+)=(\S+)$/gm)].map((m) => [m[1], m[2]]));
  const dir = env.get("DENO_DIR");
  assert.ok(dir, "DENO_DIR is not set: on a read-only root file system Deno has no cache to use");
  assert.match(text, /^RUN \["deno", "cache", "[^"]+"\]$/m, "the module cache is not built into the image");
  const argv = dockerfileArgv(text, "ENTRYPOINT");
  assert.ok(argv.includes("--allow-read=/var/run/secrets/kubernetes.io/serviceaccount"), `--allow-read: ${argv}`);
  assert.ok(!argv.includes("--allow-read"), "--allow-read is unscoped");
  assert.ok(!argv.includes("-A") && !argv.includes("--allow-all"), "all permissions granted");
});

/** The JSON (exec) form of a Dockerfile's ENTRYPOINT or CMD. */
function dockerfileArgv(text: string, instruction: "ENTRYPOINT" | "CMD"): string[] {
  const m = new RegExp(`^${instruction} (\\[.*\\])$`, "m").exec(text);
  assert.ok(m, `no ${instruction} in exec form`);
  return JSON.parse(m[1]) as string[];
}

/** The entries of an `--allow-net=` flag, or undefined when `argv` has none (`--allow-net` alone gives []). */
function allowNet(argv: string[]): string[] | undefined {
  const flag = argv.find((a) => a === "--allow-net" || a.startsWith("--allow-net="));
  return flag === undefined ? undefined : flag.split("=", 2)[1]?.split(",") ?? [];
}

test("the Deno image grants no network access itself; its Deployment scopes it to the API server and HTTP_ADDR", async () => {
  const text = await readFile(deployPath("Dockerfile.deno"), "utf8");
  const entry = dockerfileArgv(text, "ENTRYPOINT");
  assert.equal(allowNet(entry), undefined, `the image's ENTRYPOINT grants network access: ${entry.join(" ")}`);
  assert.deepEqual(entry.slice(0, 2), ["deno", "run"]);
  // Without args the image prints the help, which needs no network.
  const script = /^RUN \["deno", "cache", "([^"]+)"\]$/m.exec(text)?.[1];
  assert.ok(script, "the module cache is not built into the image");
  assert.deepEqual(dockerfileArgv(text, "CMD"), [script, "--help"]);

  const { container } = await leaseholdContainer("deployment.deno.yaml");
  const args = container.args ?? [];
  const net = allowNet(args);
  assert.ok(net, `the Deno Deployment's args grant no network access: ${args.join(" ")}`);
  assert.ok(net.length > 0, "--allow-net is unscoped");
  const httpAddr = container.env?.find((e) => e.name === "HTTP_ADDR")?.value;
  assert.match(httpAddr ?? "", /^:\d+$/, "HTTP_ADDR is not :PORT");
  const port = httpAddr!.slice(1);
  // The API server as the kubelet fills it in, and the health/metrics listener: nothing else.
  assert.deepEqual(net.sort(), [
    "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
    `0.0.0.0:${port}`,
    `[::]:${port}`,
  ]);
  assert.equal(args.at(-1), script, "the args do not end with the script the image caches");
});

test("both images run the entrypoint as a one-file bundle", async () => {
  const deno = await readFile(deployPath("Dockerfile.deno"), "utf8");
  const bundled = /^RUN \["deno", "bundle", "--minify", "lib\/cli\.ts", "-o", "\/app\/([^"]+)"\]$/m.exec(deno)?.[1];
  assert.ok(bundled, "Dockerfile.deno does not bundle lib/cli.ts into /app");
  assert.match(deno, new RegExp(`^RUN \\["deno", "cache", "${bundled.replace(".", "\\.")}"\\]$`, "m"));
  const bun = await readFile(deployPath("Dockerfile"), "utf8");
  const out = /^RUN bun build lib\/cli\.ts --target=bun --minify --outfile (\S+)$/m.exec(bun)?.[1];
  assert.ok(out, "Dockerfile does not bundle lib/cli.ts");
  assert.deepEqual(dockerfileArgv(bun, "ENTRYPOINT"), ["/usr/local/bin/bun", out]);
});

test("deployment.deno.yaml is deployment.yaml but for the image and its args", async () => {
  const bun = await loadOne<Deployment>("deployment.yaml", "Deployment");
  const deno = await loadOne<Deployment>("deployment.deno.yaml", "Deployment");
  const strip = (d: Deployment) => {
    const copy = structuredClone(d);
    for (const c of copy.spec?.template?.spec?.containers ?? []) {
      delete c.image;
      delete c.args;
    }
    return copy;
  };
  assert.deepEqual(strip(deno), strip(bun));
  const image = deno.spec?.template?.spec?.containers?.[0]?.image ?? "";
  assert.notEqual(image, bun.spec?.template?.spec?.containers?.[0]?.image, "both Deployments run the same image");
});

// ---------------------------------------------------------------- the sharded mode

/** One request as RBAC sees it: a resource, a verb, and the object's name when the request names one. */
interface LeaseRequest {
  resource: "leases" | "events";
  verb: string;
  name?: string;
}

/**
 * The RBAC verb and name of a request to `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases[/<name>]`,
 * or an Event's creation.
 */
function leaseRequest(method: string, target: string): LeaseRequest {
  const url = new URL(target, "http://x");
  if (method === "POST" && /^\/api\/v1\/namespaces\/[^/]+\/events$/.test(url.pathname)) {
    return { resource: "events", verb: "create" };
  }
  const m = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/[^/]+\/leases(?:\/([^/]+))?$/.exec(url.pathname);
  assert.ok(m, `not a Lease request: ${method} ${target}`);
  const name = m[1] && decodeURIComponent(m[1]);
  // A list or watch names one Lease only through a metadata.name field selector.
  const field = /^metadata\.name=(.+)$/.exec(url.searchParams.get("fieldSelector") ?? "")?.[1];
  switch (method) {
    case "GET":
      if (name) return { resource: "leases", verb: "get", name };
      return { resource: "leases", verb: url.searchParams.get("watch") === "1" ? "watch" : "list", name: field };
    case "POST":
      return { resource: "leases", verb: "create" };
    case "PUT":
      return { resource: "leases", verb: "update", name };
    case "PATCH":
      return { resource: "leases", verb: "patch", name };
    case "DELETE":
      return { resource: "leases", verb: name ? "delete" : "deletecollection", name };
  }
  assert.fail(`unexpected method ${method} ${target}`);
}

/** Whether a Role allows a request, as the RBAC authorizer decides it. */
function allows(role: Role, r: LeaseRequest): boolean {
  return (role.rules ?? []).some((rule) =>
    (rule.apiGroups ?? []).includes(r.resource === "leases" ? LEASE_GROUP : "") &&
    (rule.resources ?? []).includes(r.resource) &&
    (rule.verbs ?? []).includes(r.verb) &&
    (rule.resourceNames === undefined || rule.resourceNames.length === 0 ||
      (r.name !== undefined && rule.resourceNames.includes(r.name)))
  );
}

/**
 * Every Lease request of two sharded replicas against the in-memory Lease
 * server: a starts alone and takes every shard, b joins and takes its half, b
 * leaves (releasing its member and shard Leases) and a takes them back.
 */
async function shardedModeRequests(): Promise<LeaseRequest[]> {
  const server = await startLeaseServer();
  const kubeconfig = await kubeconfigFor(server.url, "leasehold-deploy-");
  const replicas: { stop: AbortController; exited: Promise<number>; held: Set<number> }[] = [];
  const start = (identity: string) => {
    const held = new Set<number>();
    const stop = new AbortController();
    const args = ["--lease-name", "work", "--identity", identity, "--kubeconfig", kubeconfig, "--shards", "4"];
    const exited = main(
      [...args, "--lease-duration", "2s", "--renew-deadline", "1s", "--retry-period", "250ms", "--", "sleep", "600"],
      {
        write: (text) => {
          const l = JSON.parse(text);
          if (l.msg === "holding shard") held.add(l.shard);
          if (l.msg === "stopped holding shard") held.delete(l.shard);
        },
        handleSignals: false,
        env: () => undefined,
        signal: stop.signal,
      },
    );
    const r = { stop, exited, held };
    replicas.push(r);
    return r;
  };
  // The replicas' logs are the only signal of what they hold: polled.
  const until = async (what: string, cond: () => boolean) => {
    const end = Date.now() + 20000;
    while (!cond()) {
      if (Date.now() > end) assert.fail(`${what}: not within 20 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    const a = start("a");
    await until("a holding every shard", () => a.held.size === 4);
    const b = start("b");
    await until("a and b holding 2 each", () => a.held.size === 2 && b.held.size === 2);
    b.stop.abort();
    assert.equal(await b.exited, 0);
    await until("a holding every shard again", () => a.held.size === 4);
  } finally {
    for (const r of replicas) r.stop.abort();
    await Promise.all(replicas.map((r) => r.exited));
    await server.close();
  }
  return server.requests.map((r) => leaseRequest(r.method, r.path));
}

test("rbac.shards.yaml holds a ServiceAccount, a Role and a RoleBinding of that Role to that ServiceAccount", async () => {
  const docs = await loadYaml("rbac.shards.yaml");
  assert.deepEqual(docs.map((d) => d.kind), ["ServiceAccount", "Role", "RoleBinding"]);
  for (const doc of docs) assert.equal(doc.metadata?.namespace, undefined, `${doc.kind} must not pin a namespace`);
  const [sa, role, binding] = docs as [KubeObject, Role, RoleBinding];
  assert.deepEqual(binding.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: role.metadata?.name });
  assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: sa.metadata?.name }]);
  // Its own names: both files can be applied into one namespace.
  const single = await loadYaml("rbac.yaml");
  for (const [i, doc] of docs.entries()) {
    assert.notEqual(doc.metadata?.name, single[i].metadata?.name, `${doc.kind} has the name of rbac.yaml's`);
  }
});

test("the shards Role grants exactly the Lease verbs the sharded mode uses, which rbac.yaml's Role refuses", async () => {
  const role = await loadOne<Role>("rbac.shards.yaml", "Role");
  // Events on the shard Leases: create only, in the core group, as in rbac.yaml.
  const events = (role.rules ?? []).filter((r) => r.resources?.includes("events"));
  assert.deepEqual(events, [{ apiGroups: [""], resources: ["events"], verbs: ["create"] }]);
  const leaseRules = (role.rules ?? []).filter((r) => !r.resources?.includes("events"));
  for (const [i, rule] of leaseRules.entries()) {
    assert.deepEqual(rule.apiGroups, [LEASE_GROUP], `rule ${i}: apiGroups`);
    assert.deepEqual(rule.resources, ["leases"], `rule ${i}: resources`);
    for (const field of [rule.apiGroups, rule.resources, rule.resourceNames ?? [], rule.verbs ?? []]) {
      assert.ok(!field.includes("*"), `rule ${i} uses a "*" wildcard`);
    }
  }
  const all = await shardedModeRequests();
  assert.ok(all.some((r) => r.resource === "events"), "the sharded mode records Events on its shard Leases");
  assert.deepEqual(all.filter((r) => !allows(role, r)), [], "requests the shards Role refuses");
  const requests = all.filter((r) => r.resource === "leases");
  const used = new Set(requests.map((r) => r.verb));
  // Confirmed from the run: the shared LIST + WATCH by label, create, and get +
  // update (release is an update); never delete or patch.
  assert.deepEqual([...used].sort(), ["create", "get", "list", "update", "watch"]);
  const granted = new Set(leaseRules.flatMap((r) => r.verbs ?? []));
  assert.deepEqual([...granted].sort(), [...used].sort(), "the Role grants verbs the sharded mode never uses");
  // The single-Lease Role is not enough: it refuses the list, the label watch,
  // and every get and update but those of the one Lease it names.
  const single = await loadOne<Role>("rbac.yaml", "Role");
  const refusedBySingle = new Set(requests.filter((r) => !allows(single, r)).map((r) => r.verb));
  assert.deepEqual([...refusedBySingle].sort(), ["get", "list", "update", "watch"]);
});

test("deployment.shards.yaml runs 3 replicas of 6 shards as the shards ServiceAccount, POD_NAME and POD_UID from the downward API", async () => {
  const sa = await loadOne<KubeObject>("rbac.shards.yaml", "ServiceAccount");
  const { deployment, container } = await leaseholdContainer("deployment.shards.yaml");
  assert.equal(deployment.spec?.replicas, 3);
  assert.equal(deployment.spec?.template?.spec?.serviceAccountName, sa.metadata?.name);
  const env = new Map((container.env ?? []).map((e) => [e.name, e]));
  const podName = env.get("POD_NAME");
  assert.ok(podName, "POD_NAME is not set");
  assert.equal(podName.valueFrom?.fieldRef?.fieldPath, "metadata.name");
  // The member Lease is owned by the Pod (garbage-collected with it).
  assert.equal(env.get("POD_UID")?.valueFrom?.fieldRef?.fieldPath, "metadata.uid");
  const args = container.args ?? [];
  assert.deepEqual(args.slice(0, 3), ["--shards", "6", "--"]);
  assert.equal(env.get("SHARDS"), undefined, "the shard count is given twice");
  assert.ok(env.get("LEASE_NAME")?.value, "LEASE_NAME (the shard Lease prefix) has no literal value");
  const names = [...env.keys()];
  assert.deepEqual(
    names.filter((n) => !ENTRYPOINT_ENV_NAMES.includes(n)),
    [],
    "env names the entrypoint does not read",
  );
  assert.equal(names.length, (container.env ?? []).length, "an env var is set twice");
  // Not the single-Lease Deployment's name or Lease: both can run in one namespace.
  const single = await leaseholdContainer();
  assert.notEqual(deployment.metadata?.name, single.deployment.metadata?.name);
  assert.notEqual(
    env.get("LEASE_NAME")?.value,
    single.container.env?.find((e) => e.name === "LEASE_NAME")?.value,
  );
});

test("deployment.shards.yaml is deployment.yaml's pod hardening and probes, with the Bun image", async () => {
  const single = await leaseholdContainer();
  const { deployment, container } = await leaseholdContainer("deployment.shards.yaml");
  assert.equal(container.image, single.container.image, "the Bun image (deploy/Dockerfile)");
  assert.deepEqual(container.securityContext, single.container.securityContext);
  assert.deepEqual(
    deployment.spec?.template?.spec?.securityContext,
    single.deployment.spec?.template?.spec?.securityContext,
  );
  assert.deepEqual(container.livenessProbe, single.container.livenessProbe);
  assert.deepEqual(container.ports, single.container.ports);
  assert.ok(container.resources?.requests?.cpu && container.resources?.requests?.memory, "resource requests");
});

test("deployment.shards.yaml's command is in the Bun image, and logs its shard and token on start and on SIGTERM", async () => {
  const { container } = await leaseholdContainer("deployment.shards.yaml");
  const args = container.args ?? [];
  // Bun drops a "--" that directly follows the script: a flag must come first.
  assert.notEqual(args[0], "--", "Bun would drop this --, and take the command for leasehold's arguments");
  const command = args.slice(args.indexOf("--") + 1);
  const bun = await readFile(deployPath("Dockerfile"), "utf8");
  assert.match(bun, new RegExp(`^COPY --from=build \\S+ ${command[0]}$`, "m"), `${command[0]} is not in the image`);
  assert.deepEqual(command.slice(1, 2), ["-e"]);
  // Run it here as the entrypoint would, with bun from PATH (or this runtime, under Bun);
  // SIGTERM once it has logged its start (the handler is installed by then).
  const child = spawn(process.versions.bun ? process.execPath : "bun", command.slice(1), {
    env: {
      PATH: process.env.PATH,
      LEASEHOLD_SHARD: "4",
      LEASEHOLD_SHARDS: "6",
      LEASEHOLD_FENCING_TOKEN: "7/pod-a",
      BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const exited = new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", () => resolve());
  });
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    const first = !out.includes("\n");
    out += chunk;
    if (first && out.includes("\n")) child.kill("SIGTERM");
  });
  // (Its exit status is not checked: Deno's node:child_process reports a child that
  // exited 0 in its SIGTERM handler as killed by SIGTERM.)
  await exited;
  const lines = out.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  assert.deepEqual(lines, [
    { msg: "working on shard", shard: 4, shards: 6, fencingToken: "7/pod-a" },
    { msg: "stopped working on shard", shard: 4, shards: 6, fencingToken: "7/pod-a" },
  ]);
});
