/**
 * The end-to-end run on a real one-node cluster (`npm run e2e`):
 *
 * 1. installs the Debian packages when missing (tests/e2e/install.sh), builds
 *    the kubenode and blog-leader binaries (tests/cluster) and the images
 *    (tests/e2e/build_images.sh), and starts the node (tests/e2e/node.ts);
 * 2. applies deploy/rbac.yaml and deploy/deployment.yaml as shipped (only the
 *    image and imagePullPolicy: Never patched) with the Bun image, and
 *    deploy/deployment.deno.yaml (the same, with the Deno image's --allow-net
 *    args) with the Deno image, the blog post's program with its own
 *    manifests, and the sharded mode (deploy/rbac.shards.yaml and
 *    deploy/deployment.shards.yaml, Bun image), each in its own namespace;
 * 3. runs the scenarios on all three at once, timing them from the containers'
 *    logs (containerd stamps every line) and checking from the leading
 *    intervals each replica reports that no two overlap; alongside the first
 *    one, the sharded mode's scenario (6 shards held 2/2/2, a pod deleted, its
 *    shards taken by the others, 2/2/2 again with its replacement, no shard
 *    worked on twice at once, from the shard commands' own log lines);
 * 4. prints a table and `N passed, N failed`, and stops everything.
 *
 * Without root, Linux, apt-get or go (outside CI) it says loudly why it skips
 * and exits 0; under CI=true a node that cannot start fails the run.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { type Kube, LocalNode, NODE_NAME, waitFor } from "./node.ts";
import {
  analyse,
  type AuditEvent,
  buildIntervals,
  type Instance,
  type Interval,
  jtiOf,
  podOf,
  shardProblems,
  shardsHeld,
  shardTerms,
} from "./analysis.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, ".cache", "bin");
const CI = Deno.env.get("CI") === "true";
const started = Date.now();
const say = (line: string) => console.log(`[e2e ${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}`);

// ---------------------------------------------------------------- programs

interface Program {
  /** Short name in the table. */
  key: string;
  ns: string;
  image: string;
  deployment: string;
  /** The Deployment manifest under deploy/ (the Deno image takes its network permission from it). */
  manifest?: string;
  lease: string;
  kind: "leasehold" | "blog";
  /** Does the pod have a liveness probe? */
  liveness: boolean;
}

const PROGRAMS: Program[] = [
  {
    key: "leasehold (Deno)",
    ns: "e2e-deno",
    image: "leasehold.test/leasehold-deno:e2e",
    deployment: "leasehold-demo",
    manifest: "deployment.deno.yaml",
    lease: "leasehold-demo",
    kind: "leasehold",
    liveness: true,
  },
  {
    key: "leasehold (Bun)",
    ns: "e2e-bun",
    image: "leasehold.test/leasehold-bun:e2e",
    deployment: "leasehold-demo",
    lease: "leasehold-demo",
    kind: "leasehold",
    liveness: true,
  },
  {
    key: "blog program (client-go)",
    ns: "e2e-blog",
    image: "leasehold.test/blog-leader:e2e",
    deployment: "test-leader",
    lease: "test-lease",
    kind: "blog",
    liveness: false,
  },
];

type Obj = Record<string, unknown> & { kind: string; metadata: { name: string } };

function deployObjects(p: Program): Obj[] {
  const docs: Obj[] = [];
  for (const f of ["rbac.yaml", p.manifest ?? "deployment.yaml"]) {
    for (const d of parseAllDocuments(readFileSync(join(ROOT, "deploy", f), "utf8"))) docs.push(d.toJS() as Obj);
  }
  for (const d of docs) {
    if (d.kind !== "Deployment") continue;
    // The only changes to deploy/ as shipped: the locally built image, never pulled.
    // deno-lint-ignore no-explicit-any
    for (const c of (d as any).spec.template.spec.containers) {
      c.image = p.image;
      c.imagePullPolicy = "Never";
    }
  }
  return docs;
}

/** The blog post's manifests: a ServiceAccount, a Role with "*", its binding, 3 replicas. */
function blogObjects(p: Program): Obj[] {
  const name = p.deployment;
  const labels = { "app.kubernetes.io/name": name };
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name },
      rules: [{ apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["*"] }],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name },
      subjects: [{ kind: "ServiceAccount", name }],
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name },
      spec: {
        replicas: 3,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: name,
            containers: [{ name: "leader", image: p.image, imagePullPolicy: "Never" }],
          },
        },
      },
    },
  ];
}

function collection(o: Obj, ns: string): string {
  switch (o.kind) {
    case "ServiceAccount":
      return `/api/v1/namespaces/${ns}/serviceaccounts`;
    case "Role":
      return `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`;
    case "RoleBinding":
      return `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`;
    case "Deployment":
      return `/apis/apps/v1/namespaces/${ns}/deployments`;
  }
  throw new Error(`no endpoint known for kind ${o.kind}`);
}

// ---------------------------------------------------------------- logs

/**
 * Every container log line, kept as it is read: the kubelet deletes a pod's
 * log directory with the pod, so the files are followed while they exist.
 */
class LogCollector {
  #files = new Map<string, { offset: number; rest: string; lines: { t: number; text: string }[] }>();
  #timer?: ReturnType<typeof setInterval>;
  constructor(readonly root: string) {}
  start() {
    this.#timer = setInterval(() => this.poll(), 250);
  }
  stop() {
    clearInterval(this.#timer);
    this.poll();
  }
  poll() {
    if (!existsSync(this.root)) return;
    for (const podDir of readdirSync(this.root)) {
      let containers: string[] = [];
      try {
        containers = readdirSync(join(this.root, podDir));
      } catch { /* removed meanwhile */ }
      for (const c of containers) {
        let files: string[] = [];
        try {
          files = readdirSync(join(this.root, podDir, c)).filter((f) => /^\d+\.log$/.test(f));
        } catch { /* removed meanwhile */ }
        for (const f of files) {
          const key = `${podDir}/${c}/${f}`;
          const st = this.#files.get(key) ?? { offset: 0, rest: "", lines: [] };
          this.#files.set(key, st);
          try {
            const buf = readFileSync(join(this.root, key));
            if (buf.length <= st.offset) continue;
            const text = st.rest + new TextDecoder().decode(buf.subarray(st.offset));
            st.offset = buf.length;
            const parts = text.split("\n");
            st.rest = parts.pop() ?? "";
            for (const l of parts.filter(Boolean)) {
              const [ts, , , ...msg] = l.split(" ");
              st.lines.push({ t: Date.parse(ts), text: msg.join(" ") });
            }
          } catch { /* removed meanwhile */ }
        }
      }
    }
  }
  instances(ns: string): Instance[] {
    this.poll();
    const out: Instance[] = [];
    for (const [key, st] of this.#files) {
      const [podDir, , f] = key.split("/");
      if (!podDir.startsWith(`${ns}_`)) continue;
      out.push({ pod: podDir.split("_")[1], run: Number(f.split(".")[0]), lines: st.lines });
    }
    return out;
  }
}

let logs: LogCollector;

/** The leading intervals of a program's replicas so far. */
function intervals(node: LocalNode, p: Program, deaths: Map<string, number>, alive: Set<string>): Interval[] {
  const updates = audit(node).filter((e) => e.verb === "update" && e.objectRef?.namespace === p.ns);
  return buildIntervals(p.kind, logs.instances(p.ns), updates, deaths, alive);
}

// ---------------------------------------------------------------- cluster helpers

interface Pod {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  status?: {
    phase?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { containerID?: string; restartCount: number; ready: boolean }[];
  };
}

async function pods(kube: Kube, ns: string): Promise<Pod[]> {
  return (await kube.json<{ items: Pod[] }>("GET", `/api/v1/namespaces/${ns}/pods`)).items;
}

async function holder(kube: Kube, p: Program): Promise<string | undefined> {
  const res = await kube.request("GET", `/apis/coordination.k8s.io/v1/namespaces/${p.ns}/leases/${p.lease}`);
  if (res.status === 404) {
    await res.body?.cancel();
    return undefined;
  }
  const l = await res.json();
  return l.spec?.holderIdentity || undefined;
}

/** Waits for 3 ready pods, none terminating, and a holder that is one of them and says it leads. */
async function settled(node: LocalNode, p: Program, ms = 90_000): Promise<string> {
  return await waitFor(`${p.key}: 3 ready replicas and a leader`, ms, async () => {
    const ps = (await pods(node.kube, p.ns)).filter((x) => !x.metadata.deletionTimestamp);
    if (ps.length !== 3 || !ps.every((x) => x.status?.containerStatuses?.[0]?.ready)) return undefined;
    const h = await holder(node.kube, p);
    if (!h || !ps.some((x) => x.metadata.name === h)) return undefined;
    const iv = intervals(node, p, new Map(), new Set(ps.map((x) => x.metadata.name)));
    return iv.some((x) => x.who.startsWith(`${h}#`) && x.end === Infinity) ? h : undefined;
  });
}

async function containerOf(
  kube: Kube,
  ns: string,
  pod: string,
): Promise<{ id: string; restarts: number; run: number }> {
  const p = await kube.json<Pod>("GET", `/api/v1/namespaces/${ns}/pods/${pod}`);
  const cs = p.status?.containerStatuses?.[0];
  if (!cs?.containerID) throw new Error(`pod ${pod} has no running container`);
  return { id: cs.containerID, restarts: cs.restartCount, run: cs.restartCount };
}

// ---------------------------------------------------------------- results

interface Row {
  scenario: string;
  program: string;
  ok: boolean;
  figures: string;
  problems: string[];
}
const rows: Row[] = [];
const deaths = new Map<string, Map<string, number>>(PROGRAMS.map((p) => [p.ns, new Map()]));

function record(scenario: string, p: { key: string }, ok: boolean, figures: string, problems: string[] = []) {
  rows.push({ scenario, program: p.key, ok, figures, problems });
  say(
    `${ok ? "PASS" : "FAIL"} ${scenario} / ${p.key}: ${figures}${problems.length ? ` -- ${problems.join("; ")}` : ""}`,
  );
}

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function alivePods(kube: Kube, p: Program): Promise<Set<string>> {
  return new Set((await pods(kube, p.ns)).map((x) => x.metadata.name));
}

// ---------------------------------------------------------------- scenarios

/** When the container run after `run` of `pod` wrote its first log line (it had started). */
async function firstLine(p: Program, pod: string, run: number, ms: number): Promise<number> {
  return await waitFor(`${p.key}: ${pod} restarted`, ms, () => {
    const next = logs.instances(p.ns).find((i) => i.pod === pod && i.run > run && i.lines.length > 0);
    return next?.lines[0].t;
  });
}

/**
 * Waits until some replica other than `except` (pod#run) reports that it
 * started leading after `from`; the restarted container of the same pod counts.
 */
async function nextLeader(node: LocalNode, p: Program, from: number, except: string, ms = 60_000) {
  return await waitFor(`${p.key}: a replica starting to lead`, ms, async () => {
    const iv = intervals(node, p, deaths.get(p.ns)!, await alivePods(node.kube, p));
    const x = iv.find((x) => x.start > from && x.who !== except);
    return x ? { who: x.who, t: x.start } : undefined;
  });
}

async function rollingUpdate(node: LocalNode, p: Program) {
  const name = "1. rolling update";
  try {
    await settled(node, p);
    const from = Date.now();
    await node.kube.json(
      "PATCH",
      `/apis/apps/v1/namespaces/${p.ns}/deployments/${p.deployment}`,
      { spec: { template: { metadata: { annotations: { "leasehold.test/revision": String(from) } } } } },
      "application/strategic-merge-patch+json",
    );
    await waitFor(`${p.key}: rollout`, 180_000, async () => {
      const d = await node.kube.json<
        {
          metadata: { generation: number };
          status: {
            observedGeneration?: number;
            updatedReplicas?: number;
            replicas?: number;
            availableReplicas?: number;
          };
        }
      >("GET", `/apis/apps/v1/namespaces/${p.ns}/deployments/${p.deployment}`);
      const st = d.status;
      return (st.observedGeneration ?? 0) >= d.metadata.generation && st.updatedReplicas === 3 && st.replicas === 3 &&
          st.availableReplicas === 3
        ? true
        : undefined;
    });
    await settled(node, p);
    const to = Date.now();
    const a = analyse(intervals(node, p, deaths.get(p.ns)!, await alivePods(node.kube, p)), from, to);
    const ok = a.overlaps.length === 0 && a.handovers.length > 0;
    record(
      name,
      p,
      ok,
      `rollout ${s(to - from)}, hand-overs ${a.handovers.map(s).join(" / ") || "none"}, leaderless ${
        s(a.leaderlessMs)
      }`,
      a.overlaps,
    );
  } catch (e) {
    record(name, p, false, "", [(e as Error).message]);
  }
}

async function leaderPodDeleted(node: LocalNode, p: Program) {
  const name = "2. leader pod deleted";
  try {
    const leader = await settled(node, p);
    const from = Date.now();
    await node.kube.json("DELETE", `/api/v1/namespaces/${p.ns}/pods/${leader}`);
    const next = (await nextLeader(node, p, from, "")).who.split("#")[0];
    await settled(node, p);
    const to = Date.now();
    const a = analyse(intervals(node, p, deaths.get(p.ns)!, await alivePods(node.kube, p)), from, to);
    const ok = a.overlaps.length === 0 && a.handovers.length >= 1;
    record(
      name,
      p,
      ok,
      `hand-over ${a.handovers.map(s).join(" / ") || "none"} (to ${next.slice(-5)}), leaderless ${s(a.leaderlessMs)}`,
      a.overlaps,
    );
  } catch (e) {
    record(name, p, false, "", [(e as Error).message]);
  }
}

async function leaderProcessKilled(node: LocalNode, p: Program) {
  const name = "3. leader process killed (SIGKILL)";
  try {
    const leader = await settled(node, p);
    const c = await containerOf(node.kube, p.ns, leader);
    const pid = node.containerPid(c.id);
    const from = Date.now();
    Deno.kill(pid, "SIGKILL");
    deaths.get(p.ns)!.set(`${leader}#${c.run}`, from);
    const [next, restarted] = await Promise.all([
      nextLeader(node, p, from, `${leader}#${c.run}`).then((x) => x.who),
      firstLine(p, leader, c.run, 60_000),
    ]);
    await settled(node, p);
    const to = Date.now();
    const a = analyse(intervals(node, p, deaths.get(p.ns)!, await alivePods(node.kube, p)), from, to);
    const ok = a.overlaps.length === 0 && a.handovers.length >= 1;
    record(
      name,
      p,
      ok,
      `hand-over ${a.handovers.map(s).join(" / ")} (to ${
        next.startsWith(leader) ? "its own restarted container" : "another pod"
      }), restarted after ${s(restarted - from)}`,
      a.overlaps,
    );
  } catch (e) {
    record(name, p, false, "", [(e as Error).message]);
  }
}

let auditCache = { size: -1, events: [] as AuditEvent[] };
function audit(node: LocalNode): AuditEvent[] {
  const text = readFileSync(node.info.auditLog, "utf8");
  if (text.length === auditCache.size) return auditCache.events;
  const events = text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as AuditEvent)
    .filter((e) => e.stage === "ResponseComplete" || e.stage === "ResponseStarted");
  auditCache = { size: text.length, events };
  return events;
}

function tokenFile(node: LocalNode, podUid: string): string | undefined {
  const dir = join(node.kubeletRoot, "pods", podUid, "volumes", "kubernetes.io~projected");
  if (!existsSync(dir)) return undefined;
  const v = readdirSync(dir).find((d) => d.startsWith("kube-api-access-"));
  return v ? join(dir, v, "token") : undefined;
}

/** 4: the kubelet writes new tokens (restarted, it requests new ones for every pod). */
async function tokenRotated(node: LocalNode) {
  const name = "4. projected token rotated";
  const before = new Map<Program, { leader: string; uid: string; token: string; jti?: string }>();
  for (const p of PROGRAMS) {
    try {
      const leader = await settled(node, p);
      const pod = await node.kube.json<Pod>("GET", `/api/v1/namespaces/${p.ns}/pods/${leader}`);
      const f = tokenFile(node, pod.metadata.uid);
      if (!f) throw new Error(`no projected token volume for ${leader}`);
      const jti = audit(node).filter((e) => e.objectRef?.namespace === p.ns && podOf(e) === leader).at(-1);
      before.set(p, { leader, uid: pod.metadata.uid, token: readFileSync(f, "utf8"), jti: jti && jtiOf(jti) });
    } catch (e) {
      record(name, p, false, "", [(e as Error).message]);
    }
  }
  const from = Date.now();
  await node.restartKubelet();
  await Promise.all([...before].map(async ([p, b]) => {
    try {
      const rotated = await waitFor(`${p.key}: a new token in ${b.leader}`, 60_000, () => {
        const f = tokenFile(node, b.uid);
        return f && readFileSync(f, "utf8") !== b.token ? Date.now() : undefined;
      });
      // Tokens are re-read at least once a minute (client-go and leasehold alike).
      const used = await waitFor(`${p.key}: a Lease request with the new token`, 90_000, () => {
        const e = audit(node).find((e) =>
          e.objectRef?.namespace === p.ns && podOf(e) === b.leader && jtiOf(e) !== b.jti &&
          Date.parse(e.stageTimestamp) > rotated
        );
        return e ? { t: Date.parse(e.stageTimestamp), code: e.responseStatus?.code, verb: e.verb } : undefined;
      });
      const to = Date.now();
      const iv = intervals(node, p, deaths.get(p.ns)!, await alivePods(node.kube, p));
      const a = analyse(iv, from, to);
      const stillLeader = (await holder(node.kube, p)) === b.leader;
      const problems = [...a.overlaps];
      if (!stillLeader) problems.push(`the leader changed during the rotation`);
      if (a.leaderlessMs > 0) problems.push(`leaderless for ${a.leaderlessMs} ms`);
      record(
        name,
        p,
        problems.length === 0,
        `token rewritten ${s(rotated - from)} after the kubelet restart; new token used ${
          s(used.t - rotated)
        } later (${used.verb} ${used.code}); same leader throughout`,
        problems,
      );
    } catch (e) {
      record(name, p, false, "", [(e as Error).message]);
    }
  }));
}

async function leaderWedged(node: LocalNode, p: Program) {
  const name = "5. wedged leader (SIGSTOP)";
  try {
    const leader = await settled(node, p);
    const c = await containerOf(node.kube, p.ns, leader);
    const pid = node.containerPid(c.id);
    const from = Date.now();
    Deno.kill(pid, "SIGSTOP");
    deaths.get(p.ns)!.set(`${leader}#${c.run}`, from);
    const next = (await nextLeader(node, p, from, `${leader}#${c.run}`, 90_000)).t;
    let restart = "";
    const problems: string[] = [];
    if (p.liveness) {
      const restarted = await firstLine(p, leader, c.run, 120_000);
      restart = `, restarted by the liveness probe after ${s(restarted - from)}`;
      await settled(node, p);
    } else {
      restart = ", never restarted (no liveness probe)";
      Deno.kill(pid, "SIGKILL");
    }
    const to = Date.now();
    const a = analyse(intervals(node, p, deaths.get(p.ns)!, await alivePods(node.kube, p)), from, to);
    problems.push(...a.overlaps);
    record(name, p, problems.length === 0, `Lease moved on after ${s(next - from)}${restart}`, problems);
  } catch (e) {
    record(name, p, false, "", [(e as Error).message]);
  }
}

/** The shipped Role (rbac.yaml: no list verb; rbac.shards.yaml: no delete) allowed every request leasehold made. */
function rbacCheck(node: LocalNode, p: { ns: string; key: string }) {
  const name = "0. shipped Role suffices";
  const evs = audit(node).filter((e) => e.objectRef?.namespace === p.ns && podOf(e));
  const byVerb = new Map<string, number>();
  for (const e of evs) byVerb.set(e.verb, (byVerb.get(e.verb) ?? 0) + 1);
  const refused = evs.filter((e) => e.responseStatus?.code === 403);
  const watches = evs.filter((e) => e.verb === "watch" && (e.responseStatus?.code ?? 0) < 300).length;
  const ok = refused.length === 0 && watches > 0;
  record(
    name,
    p,
    ok,
    `${[...byVerb].map(([v, n]) => `${v} ${n}`).join(", ")}; ${refused.length} refused`,
    refused.slice(0, 3).map((e) => `403 on ${e.verb} ${e.objectRef?.name ?? ""}`),
  );
}

/**
 * Start-up of the Deno image's entrypoint (to `--help`, which loads every
 * module) as user 65532 on its own root file system, with the module cache
 * baked into /deno-dir (read-only to that user, as on a read-only root) and
 * with no usable cache (what the image did before): median of 5 each.
 */
function measureDenoStart(rootfs: string): string {
  mkdirSync(join(rootfs, "proc"), { recursive: true });
  const once = (denoDir: string) => {
    const t = performance.now();
    const r = spawnSync("/usr/bin/unshare", [
      "--mount",
      "--pid",
      "--fork",
      `--mount-proc=${rootfs}/proc`,
      "/usr/sbin/chroot",
      "--userspec=65532:65532",
      rootfs,
      ...denoEntrypoint(),
    ], { env: { DENO_DIR: denoDir, DENO_NO_UPDATE_CHECK: "1", PATH: "/bin" }, cwd: rootfs });
    if (r.status !== 0) throw new Error(`the Deno entrypoint failed: ${String(r.stderr).slice(0, 300)}`);
    return performance.now() - t;
  };
  const median = (d: string) => {
    const xs = [0, 1, 2, 3, 4].map(() => once(d)).sort((a, b) => a - b);
    return xs[2];
  };
  try {
    const baked = median("/deno-dir");
    const none = median("/nonexistent");
    return `${Math.round(baked)} ms with the baked cache, ${Math.round(none)} ms without`;
  } catch (e) {
    return `not measured: ${(e as Error).message}`;
  }
}

/** deploy/Dockerfile.deno's ENTRYPOINT and CMD (the help), with the app path made absolute. */
function denoEntrypoint(): string[] {
  const text = readFileSync(join(ROOT, "deploy/Dockerfile.deno"), "utf8");
  const argv = (instruction: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${instruction} [`));
    if (!line) throw new Error(`deploy/Dockerfile.deno has no ${instruction}`);
    return JSON.parse(line.slice(instruction.length + 1)) as string[];
  };
  return [...argv("ENTRYPOINT"), ...argv("CMD")].map((a, i) =>
    i === 0 ? "/bin/deno" : a === "leasehold.js" ? "/app/leasehold.js" : a
  );
}

// ---------------------------------------------------------------- the sharded mode

/** deploy/rbac.shards.yaml and deploy/deployment.shards.yaml as shipped, on the Bun image. */
const SHARDED = {
  key: "leasehold --shards 6 (Bun)",
  ns: "e2e-shards",
  image: "leasehold.test/leasehold-bun:e2e",
  /** The Deployment's LEASE_NAME and SHARDS, and the entrypoint's default timings. */
  prefix: "leasehold-shards",
  shards: 6,
  leaseDurationMs: 15000,
  retryPeriodMs: 2000,
};

function shardedObjects(): Obj[] {
  const docs: Obj[] = [];
  for (const f of ["rbac.shards.yaml", "deployment.shards.yaml"]) {
    for (const d of parseAllDocuments(readFileSync(join(ROOT, "deploy", f), "utf8"))) docs.push(d.toJS() as Obj);
  }
  for (const d of docs) {
    if (d.kind !== "Deployment") continue;
    // deno-lint-ignore no-explicit-any
    const spec = (d as any).spec;
    const args = spec.template.spec.containers[0].args as string[];
    if (spec.replicas !== 3 || args[args.indexOf("--shards") + 1] !== String(SHARDED.shards)) {
      throw new Error("deploy/deployment.shards.yaml no longer runs 3 replicas of 6 shards: update SHARDED");
    }
    // As for the other programs: only the locally built image, never pulled.
    for (const c of spec.template.spec.containers) {
      c.image = SHARDED.image;
      c.imagePullPolicy = "Never";
    }
  }
  return docs;
}

/** The pods of the sharded Deployment that are not being deleted, and whether each is ready. */
async function shardPods(kube: Kube): Promise<Pod[]> {
  return (await pods(kube, SHARDED.ns)).filter((x) => !x.metadata.deletionTimestamp);
}

/**
 * Waits until 3 ready pods each run the commands of exactly 2 shards, all 6
 * shards covered, and every shard Lease names the pod that works on it.
 * Returns the shards of each pod.
 */
async function shardsBalanced(node: LocalNode, ms: number): Promise<Map<string, number[]>> {
  return await waitFor(`${SHARDED.key}: 3 ready pods holding 2 shards each`, ms, async () => {
    const ps = await shardPods(node.kube);
    if (ps.length !== 3 || !ps.every((x) => x.status?.containerStatuses?.[0]?.ready)) return undefined;
    const held = shardsHeld(shardTerms(logs.instances(SHARDED.ns)));
    const names = new Set(ps.map((x) => x.metadata.name));
    if ([...held.keys()].some((pod) => !names.has(pod))) return undefined; // a leaving pod still works
    if (![...names].every((n) => held.get(n)?.length === 2)) return undefined;
    if (new Set([...held.values()].flat()).size !== SHARDED.shards) return undefined;
    const leases = await node.kube.json<
      { items: { metadata: { name: string }; spec?: { holderIdentity?: string } }[] }
    >(
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${SHARDED.ns}/leases?labelSelector=${
        encodeURIComponent(`leasehold.dev/shard-set=${SHARDED.prefix}`)
      }`,
    );
    const holder = new Map(leases.items.map((l) => [l.metadata.name, l.spec?.holderIdentity]));
    for (const [pod, shards] of held) {
      if (!shards.every((i) => holder.get(`${SHARDED.prefix}-${i}`) === pod)) return undefined;
    }
    return held;
  });
}

const spread = (held: Map<string, number[]>) =>
  [...held].sort(([a], [b]) => a.localeCompare(b)).map(([pod, xs]) => `${pod.slice(-5)} [${xs.join(",")}]`).join(
    " ",
  );

/**
 * 6: the sharded mode: 6 shards over 3 pods, 2/2/2; one pod deleted (its
 * shards released on SIGTERM) and taken by the other two within
 * leaseDuration + 3 retry periods (the bound had they expired instead); its
 * replacement joins and the shards are 2/2/2 again; over the whole run no
 * shard's command ran in two pods at once and its fencing token grew with
 * every term.
 */
async function shardedScenario(node: LocalNode) {
  const name = "6. --shards 6 over 3 pods, one deleted";
  try {
    const before = await shardsBalanced(node, 60_000);
    const [victim, itsShards] = [...before].sort(([a], [b]) => a.localeCompare(b))[0];
    const from = Date.now();
    await node.kube.json("DELETE", `/api/v1/namespaces/${SHARDED.ns}/pods/${victim}`);
    const taken = await waitFor(`${SHARDED.key}: the shards of ${victim} taken by the others`, 60_000, () => {
      const terms = shardTerms(logs.instances(SHARDED.ns));
      const starts = itsShards.map((i) => terms.find((t) => t.shard === i && t.pod !== victim && t.start >= from));
      return starts.every((t) => t) ? Math.max(...starts.map((t) => t!.start)) : undefined;
    });
    const after = await shardsBalanced(node, 90_000);
    const to = Date.now();
    // Its member Lease is owned by the Pod (POD_UID): the garbage collector deletes it with the Pod.
    const memberPath =
      `/apis/coordination.k8s.io/v1/namespaces/${SHARDED.ns}/leases/${SHARDED.prefix}-member-${victim}`;
    const memberGone = await waitFor(
      `${SHARDED.key}: the member Lease of ${victim} deleted with its pod`,
      60_000,
      async () => {
        const res = await node.kube.request("GET", memberPath);
        await res.body?.cancel();
        return res.status === 404 ? Date.now() : undefined;
      },
    ).catch(() => undefined);
    const insts = logs.instances(SHARDED.ns);
    const alive = new Set((await shardPods(node.kube)).map((x) => x.metadata.name));
    const gone = (who: string) => {
      const [pod, run] = who.split("#");
      return !alive.has(pod) || insts.some((i) => i.pod === pod && i.run > Number(run));
    };
    const terms = shardTerms(insts);
    const problems = shardProblems(terms, gone);
    const bound = SHARDED.leaseDurationMs + 3 * SHARDED.retryPeriodMs;
    if (taken - from > bound) problems.push(`its shards were taken ${s(taken - from)} after, over ${s(bound)}`);
    if (memberGone === undefined) problems.push(`its member Lease was still there 60 s after the shards were balanced`);
    record(
      name,
      SHARDED,
      problems.length === 0,
      `2/2/2: ${spread(before)}; ${victim.slice(-5)} deleted, its shards taken by the others after ${
        s(taken - from)
      }; 2/2/2 again with its replacement after ${s(to - from)}: ${spread(after)}; its member Lease deleted by the ` +
        `garbage collector ${memberGone === undefined ? "(not seen)" : `after ${s(memberGone - from)}`}; ` +
        `${terms.length} shard terms, ` +
        `${problems.length ? "" : "none overlapping"}`,
      problems,
    );
  } catch (e) {
    record(name, SHARDED, false, "", [(e as Error).message]);
  }
}

// ---------------------------------------------------------------- main

function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: { ...Deno.env.toObject(), ...opts.env },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed with status ${r.status}`);
  return r.stdout;
}

function skipOrFail(reason: string): never {
  if (CI) {
    console.log(`!!! the end-to-end node cannot start: ${reason}`);
    console.log("0 passed, 1 failed");
    Deno.exit(1);
  }
  console.log(`\n!!! SKIPPING the end-to-end run on a real node: ${reason}`);
  console.log("!!! it needs Linux, root, apt-get (or the packages installed) and go; under CI=true this fails\n");
  console.log("0 passed, 0 failed");
  Deno.exit(0);
}

async function main() {
  if (Deno.build.os !== "linux") skipOrFail(`this is ${Deno.build.os}, not Linux`);
  if (Deno.uid() !== 0) skipOrFail("not running as root (the kubelet, containerd and the pod network need it)");
  const ver = spawnSync("go", ["version"], { encoding: "utf8" });
  if (ver.error || ver.status !== 0) skipOrFail("go is not installed (it builds the cluster components)");
  try {
    run("bash", [join(ROOT, "tests/e2e/install.sh")]);
  } catch (e) {
    skipOrFail(`the Debian packages could not be installed: ${(e as Error).message}`);
  }

  // Build the cluster binary and the blog program.
  let t = Date.now();
  mkdirSync(BIN, { recursive: true });
  const ldflags = "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2" +
    " -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37";
  try {
    run("go", ["build", "-p=2", "-trimpath", "-ldflags", ldflags, "-o", BIN + "/", "./cmd/kubenode"], {
      cwd: join(ROOT, "tests/cluster"),
      env: { GOTOOLCHAIN: "local" },
    });
    run("go", ["build", "-p=2", "-trimpath", "-ldflags", "-s -w", "-o", BIN + "/", "./cmd/blog-leader"], {
      cwd: join(ROOT, "tests/cluster"),
      env: { GOTOOLCHAIN: "local", CGO_ENABLED: "0" },
    });
  } catch (e) {
    skipOrFail(`the cluster components did not build: ${(e as Error).message}`);
  }
  say(`built kubenode and blog-leader in ${s(Date.now() - t)}`);

  t = Date.now();
  const imgDir = join(ROOT, ".cache", "e2e-images");
  const sizes = run("bash", [join(ROOT, "tests/e2e/build_images.sh"), imgDir, join(BIN, "blog-leader")]).trim()
    .split("\n").map((l) => l.split(" "));
  say(
    `built images in ${s(Date.now() - t)}: ${
      sizes.map(([n, b]) => `${n} ${(Number(b) / 1e6).toFixed(1)} MB`).join(", ")
    }`,
  );

  const denoStart = measureDenoStart(join(imgDir, "work", "deno-root"));
  say(`Deno image start to --help: ${denoStart}`);

  const dir = mkdtempSync("/tmp/leasehold-e2e-");
  const node = new LocalNode({
    bin: join(BIN, "kubenode"),
    dir,
    images: ["pause", "leasehold-deno", "leasehold-bun", "blog-leader"].map((n) => join(imgDir, `${n}.tar`)),
    say,
  });
  let leftovers: string[] = [];
  const onSignal = () => {
    say("interrupted; stopping the node");
    node.stop().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    try {
      await node.start();
    } catch (e) {
      console.log(`!!! node start failed; last lines of each component:`);
      for (const c of ["containerd", "apiserver", "controller-manager", "scheduler", "kubelet"]) {
        console.log(`--- ${c}\n${node.tail(c)}`);
      }
      if (!CI) {
        const left = await node.stop();
        if (left.length) console.log(`!!! LEFT BEHIND: ${left.join("; ")}`);
        skipOrFail(`the node did not start: ${(e as Error).message}`);
      }
      throw e;
    }
    logs = new LogCollector(node.podLogs);
    logs.start();
    t = Date.now();
    for (const p of PROGRAMS) {
      await node.kube.json("POST", "/api/v1/namespaces", {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name: p.ns },
      });
      for (const o of p.kind === "leasehold" ? deployObjects(p) : blogObjects(p)) {
        await node.kube.json("POST", collection(o, p.ns), o);
      }
    }
    await node.kube.json("POST", "/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: SHARDED.ns },
    });
    for (const o of shardedObjects()) await node.kube.json("POST", collection(o, SHARDED.ns), o);
    const [, , , shards] = await Promise.all([
      ...PROGRAMS.map((p) => settled(node, p, 120_000)),
      shardsBalanced(node, 120_000),
    ]);
    say(
      `deployed 4 x 3 replicas, each with a leader (6 shards: ${spread(shards as Map<string, number[]>)}), in ${
        s(Date.now() - t)
      }`,
    );

    await Promise.all([...PROGRAMS.map((p) => rollingUpdate(node, p)), shardedScenario(node)]);
    await Promise.all(PROGRAMS.map((p) => leaderPodDeleted(node, p)));
    await Promise.all(PROGRAMS.map((p) => leaderProcessKilled(node, p)));
    await tokenRotated(node);
    await Promise.all(PROGRAMS.map((p) => leaderWedged(node, p)));
    for (const p of PROGRAMS.filter((p) => p.kind === "leasehold")) rbacCheck(node, p);
    rbacCheck(node, SHARDED);
    node.recordNetns();
  } catch (e) {
    rows.push({ scenario: "node", program: "-", ok: false, figures: "", problems: [(e as Error).message] });
    say(`FAIL: ${(e as Error).message}`);
  } finally {
    logs?.stop();
    node.recordNetns?.();
    leftovers = await node.stop();
    if (leftovers.length) {
      rows.push({ scenario: "teardown", program: "-", ok: false, figures: "", problems: leftovers });
    } else if (!Deno.env.get("E2E_KEEP")) rmSync(dir, { recursive: true, force: true });
    say(`node stopped${leftovers.length ? `; LEFT BEHIND: ${leftovers.join("; ")}` : ", nothing left behind"}`);
  }

  rows.sort((a, b) => a.scenario.localeCompare(b.scenario));
  console.log("\n| scenario | program | result | figures |\n|---|---|---|---|");
  for (const r of rows) {
    console.log(
      `| ${r.scenario} | ${r.program} | ${r.ok ? "pass" : "FAIL"} | ${r.figures}${
        r.problems.length ? ` **${r.problems.join("; ")}**` : ""
      } |`,
    );
  }
  console.log(`\nimages (compressed): ${sizes.map(([n, b]) => `${n} ${(Number(b) / 1e6).toFixed(1)} MB`).join(", ")}`);
  console.log(`total ${s(Date.now() - started)}; node ${NODE_NAME}`);
  const passed = rows.filter((r) => r.ok).length;
  const failed = rows.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  Deno.exit(failed === 0 && passed > 0 ? 0 : 1);
}

await main();
