/**
 * A one-node Kubernetes cluster on this machine, for the end-to-end run:
 * containerd + runc (Debian), and from the kubenode binary (tests/cluster) an
 * embedded etcd + kube-apiserver, kube-controller-manager, kube-scheduler and
 * a kubelet.
 *
 * Networking: pods sit on a bridge we create (POD_BRIDGE, POD_CIDR, bridge CNI
 * plugin). The API server listens on the bridge's own address, and one DNAT
 * rule sends what pods address to the `kubernetes` Service (the first address
 * of SERVICE_CIDR, port 443) to it, which is what kube-proxy would do. So pods
 * find the API server exactly as in any cluster: KUBERNETES_SERVICE_HOST/PORT
 * from the kubelet and the projected service-account token. hostNetwork pods
 * were not used: three replicas on one node would then share one network
 * namespace (and port 8080), and the in-cluster environment would point at a
 * Service nothing routes.
 *
 * Everything lives in one temporary directory; `stop()` ends every process it
 * started by PID, unmounts what the kubelet and containerd mounted under that
 * directory, deletes the network namespaces of our pods, the bridge and the
 * DNAT rule, and removes the cgroups the kubelet made.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

export const POD_BRIDGE = "lhe2e0";
export const POD_CIDR = "10.213.0.0/24";
export const BRIDGE_IP = "10.213.0.1";
export const SERVICE_CIDR = "10.214.0.0/24";
export const SERVICE_IP = "10.214.0.1";
export const NODE_NAME = "leasehold-e2e-node";
export const CGROUP_ROOT = "/leasehold-e2e";
const CGROUP_V1 = "/sys/fs/cgroup";
const CGROUP_V2 = "/sys/fs/cgroup/unified";
/** Chains the kubelet creates in iptables and ip6tables (its "util chains"). */
const KUBELET_CHAINS = ["KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"];
const IPT_TABLES = ["filter", "nat", "mangle"];

/** The chains (per tool and table) that exist now. */
function chainsNow(): Set<string> {
  const out = new Set<string>();
  for (const tool of ["iptables", "ip6tables"]) {
    for (const table of IPT_TABLES) {
      const r = spawnSync(tool, ["-t", table, "-S"], { encoding: "utf8" });
      for (const l of (r.stdout ?? "").split("\n")) {
        const m = /^-N (\S+)/.exec(l);
        if (m) out.add(`${tool} ${table} ${m[1]}`);
      }
    }
  }
  return out;
}

/** Removes the kubelet's chains that did not exist before, with the rules that jump to them. */
function removeKubeletChains(before: Set<string>) {
  for (const key of chainsNow()) {
    const [tool, table, chain] = key.split(" ");
    if (before.has(key) || !KUBELET_CHAINS.includes(chain)) continue;
    const rules = spawnSync(tool, ["-t", table, "-S"], { encoding: "utf8" }).stdout ?? "";
    for (const l of rules.split("\n")) {
      if (l.startsWith("-A ") && l.includes(`-j ${chain}`)) {
        spawnSync(tool, ["-t", table, "-D", ...l.slice(3).match(/"[^"]*"|\S+/g)!.map((w) => w.replace(/^"|"$/g, ""))]);
      }
    }
    spawnSync(tool, ["-t", table, "-F", chain]);
    spawnSync(tool, ["-t", table, "-X", chain]);
  }
}

/** What the API server part prints when it is ready. */
export interface ApiInfo {
  url: string;
  host: string;
  port: number;
  serviceIP: string;
  caFile: string;
  saKeyFile: string;
  adminToken: string;
  kubeconfig: string;
  auditLog: string;
  dir: string;
  pid: number;
  readyMs: number;
}

/** A process we started, with its log file. */
interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
  exited: Promise<number | null>;
}

function sh(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for `check` to return a value other than undefined, or throws after `ms`. */
export async function waitFor<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

/** A JSON client for the API server, as the cluster admin. */
export class Kube {
  #client: Deno.HttpClient;
  constructor(readonly info: ApiInfo) {
    this.#client = Deno.createHttpClient({ caCerts: [readFileSync(info.caFile, "utf8")] });
  }
  async request(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<Response> {
    const init: RequestInit & { client: Deno.HttpClient } = {
      method,
      client: this.#client,
      headers: {
        authorization: `Bearer ${this.info.adminToken}`,
        "content-type": contentType,
        accept: "application/json",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    };
    return await fetch(this.info.url + path, init);
  }
  /** Sends a request and returns its JSON body; a non-2xx status throws. */
  async json<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    contentType?: string,
  ): Promise<T> {
    const res = await this.request(method, path, body, contentType);
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }
  close() {
    this.#client.close();
  }
}

function containerdConfig(dir: string): string {
  return `version = 2
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
[grpc]
  address = "${dir}/containerd/containerd.sock"
[ttrpc]
  address = "${dir}/containerd/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "leasehold.test/pause:e2e"
  # This VM drops CAP_SYS_RESOURCE: a negative oom_score_adj cannot be written.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${dir}/cni"
`;
}

function cniConfig(dir: string): string {
  return JSON.stringify(
    {
      cniVersion: "0.4.0",
      name: "leasehold-e2e",
      plugins: [
        {
          type: "bridge",
          bridge: POD_BRIDGE,
          isGateway: true,
          ipMasq: false,
          ipam: {
            type: "host-local",
            dataDir: `${dir}/cni-ipam`,
            ranges: [[{ subnet: POD_CIDR, gateway: BRIDGE_IP }]],
            routes: [{ dst: "0.0.0.0/0" }],
          },
        },
        { type: "loopback" },
      ],
    },
    null,
    2,
  );
}

function kubeletConfig(dir: string, port: number): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: ${CGROUP_ROOT}
containerRuntimeEndpoint: unix://${dir}/containerd/containerd.sock
address: 127.0.0.1
port: ${port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
failSwapOn: false
podLogsDir: ${dir}/pod-logs
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
serializeImagePulls: false
syncFrequency: 10s
`;
}

function freePort(): number {
  // Ask the kernel for a port the way the API server part does: bind and close.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The cgroup v1 hierarchies (one per mounted controller set). */
function cgroupHierarchies(): string[] {
  if (!existsSync(CGROUP_V1)) return [];
  return readdirSync(CGROUP_V1).map((d) => join(CGROUP_V1, d)).filter((p) =>
    existsSync(join(p, "cgroup.procs")) && !p.endsWith("/unified")
  );
}

function rmCgroupTree(path: string) {
  if (!existsSync(path)) return;
  for (const e of readdirSync(path, { withFileTypes: true })) {
    if (e.isDirectory()) rmCgroupTree(join(path, e.name));
  }
  try {
    rmdirSync(path);
  } catch { /* still has tasks; reported by the leak check */ }
}

/** Options for {@linkcode startNode}. */
export interface NodeOptions {
  /** The kubenode binary. */
  bin: string;
  /** A fresh directory for all state. */
  dir: string;
  /** Image archives to import into containerd. */
  images: string[];
  /** Progress lines. */
  say: (line: string) => void;
}

/** A running node; see the module comment. */
export class LocalNode {
  info!: ApiInfo;
  kube!: Kube;
  readonly podLogs: string;
  readonly kubeletRoot: string;
  readonly sock: string;
  #procs = new Map<string, Proc>();
  #dnat: string[] = [];
  #bridgeCreated = false;
  #cgroupsCreated = false;
  #chainsBefore?: Set<string>;
  #v2CgroupExisted = true;
  #kubeletArgs: string[] = [];

  constructor(readonly opts: NodeOptions) {
    this.podLogs = join(opts.dir, "pod-logs");
    this.kubeletRoot = join(opts.dir, "kubelet");
    this.sock = join(opts.dir, "containerd", "containerd.sock");
  }

  #start(name: string, cmd: string, args: string[]): Proc {
    const log = join(this.opts.dir, "logs", `${name}.log`);
    const fd = openSync(log, "a");
    const child = spawn(cmd, args, { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const p = { name, child, log, exited };
    this.#procs.set(name, p);
    return p;
  }

  async #stopProc(name: string, graceMs = 10_000) {
    const p = this.#procs.get(name);
    if (!p) return;
    this.#procs.delete(name);
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill("SIGTERM");
    const t = setTimeout(() => p.child.kill("SIGKILL"), graceMs);
    await p.exited;
    clearTimeout(t);
  }

  /** The last lines of a component's log, for error messages. */
  tail(name: string, n = 15): string {
    try {
      return readFileSync(join(this.opts.dir, "logs", `${name}.log`), "utf8").trimEnd().split("\n").slice(-n).join(
        "\n",
      );
    } catch {
      return "(no log)";
    }
  }

  async start(): Promise<void> {
    const { dir, bin, say } = this.opts;
    for (const d of ["logs", "containerd", "cni", "cni-ipam", "pod-logs", "kubelet", "apiserver"]) {
      mkdirSync(join(dir, d), { recursive: true });
    }
    // Network: our own bridge, so the API server can bind its address now.
    if (sh("ip", ["-o", "link", "show", POD_BRIDGE], { allowFail: true }).trim()) {
      throw new Error(
        `a device named ${POD_BRIDGE} already exists: another end-to-end run is active or did not clean up`,
      );
    }
    sh("ip", ["link", "add", POD_BRIDGE, "type", "bridge"]);
    this.#bridgeCreated = true;
    sh("ip", ["addr", "add", `${BRIDGE_IP}/24`, "dev", POD_BRIDGE]);
    sh("ip", ["link", "set", POD_BRIDGE, "up"]);
    writeFileSync(join(dir, "cni", "10-leasehold-e2e.conflist"), cniConfig(dir));

    // cgroups for the kubelet's pods, under a root of our own.
    for (const h of cgroupHierarchies()) {
      const p = h + CGROUP_ROOT;
      mkdirSync(p, { recursive: true });
      if (h.endsWith("/cpuset")) {
        writeFileSync(join(p, "cpuset.cpus"), readFileSync(join(h, "cpuset.cpus")));
        writeFileSync(join(p, "cpuset.mems"), readFileSync(join(h, "cpuset.mems")));
      }
    }
    this.#cgroupsCreated = true;
    this.#v2CgroupExisted = existsSync(CGROUP_V2 + CGROUP_ROOT);
    this.#chainsBefore = chainsNow();

    const t0 = Date.now();
    writeFileSync(join(dir, "containerd.toml"), containerdConfig(dir));
    this.#start("containerd", "containerd", ["--config", join(dir, "containerd.toml")]);
    const api = this.#start("apiserver", bin, [
      "apiserver",
      "--dir",
      join(dir, "apiserver"),
      "--bind",
      BRIDGE_IP,
      "--service-cidr",
      SERVICE_CIDR,
    ]);
    await waitFor("containerd's socket", 30_000, () => existsSync(this.sock) ? true : undefined);
    for (const image of this.opts.images) {
      sh("ctr", ["-a", this.sock, "-n", "k8s.io", "images", "import", image]);
    }
    say(`containerd up, ${this.opts.images.length} images imported (${Date.now() - t0} ms)`);
    this.info = await waitFor("the API server's ready line", 180_000, () => {
      if (api.child.exitCode !== null) throw new Error(`the API server exited:\n${this.tail("apiserver")}`);
      const line = readFileSync(api.log, "utf8").split("\n").find((l) => l.startsWith('{"url"'));
      return line ? JSON.parse(line) as ApiInfo : undefined;
    });
    this.kube = new Kube(this.info);
    say(`API server ready on ${this.info.url} (${this.info.readyMs} ms)`);

    // What kube-proxy would do for the kubernetes Service, for traffic from pods.
    this.#dnat = [
      "PREROUTING",
      "-i",
      POD_BRIDGE,
      "-d",
      `${SERVICE_IP}/32`,
      "-p",
      "tcp",
      "--dport",
      "443",
      "-j",
      "DNAT",
      "--to-destination",
      `${BRIDGE_IP}:${this.info.port}`,
    ];
    sh("iptables", ["-t", "nat", "-A", ...this.#dnat]);

    const kc = this.info.kubeconfig;
    this.#start("controller-manager", bin, [
      "controller-manager",
      "--kubeconfig",
      kc,
      "--controllers=serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,node-lifecycle-controller,garbage-collector-controller",
      "--service-account-private-key-file",
      this.info.saKeyFile,
      "--root-ca-file",
      this.info.caFile,
      "--leader-elect=false",
      "--secure-port=0",
      "--node-monitor-grace-period=40s",
      "--concurrent-deployment-syncs=2",
      "--v=1",
    ]);
    this.#start("scheduler", bin, [
      "scheduler",
      "--kubeconfig",
      kc,
      "--leader-elect=false",
      "--secure-port=0",
      "--v=1",
    ]);
    writeFileSync(join(dir, "kubelet.yaml"), kubeletConfig(dir, freePort()));
    this.#kubeletArgs = [
      "kubelet",
      "--config",
      join(dir, "kubelet.yaml"),
      "--kubeconfig",
      kc,
      "--root-dir",
      this.kubeletRoot,
      "--hostname-override",
      NODE_NAME,
      "--node-ip",
      BRIDGE_IP,
      "--v=1",
    ];
    this.#start("kubelet", bin, this.#kubeletArgs);
    await waitFor("the node to be Ready without taints", 120_000, async () => {
      const n = await this.kube.json<
        { spec?: { taints?: unknown[] }; status?: { conditions?: { type: string; status: string }[] } }
      >("GET", `/api/v1/nodes/${NODE_NAME}`);
      const ready = n.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
      return ready && !(n.spec?.taints?.length) ? true : undefined;
    });
    await waitFor("the default ServiceAccount and kube-root-ca.crt", 60_000, async () => {
      await this.kube.json("GET", "/api/v1/namespaces/default/serviceaccounts/default");
      await this.kube.json("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt");
      return true;
    });
    say(`node ${NODE_NAME} Ready (${Date.now() - t0} ms after containerd started)`);
  }

  /** Restarts the kubelet (its containers keep running). */
  async restartKubelet(): Promise<void> {
    await this.#stopProc("kubelet");
    this.#start("kubelet", this.opts.bin, this.#kubeletArgs);
  }

  /** The host PID of a container's first process. */
  containerPid(containerId: string): number {
    const id = containerId.replace(/^containerd:\/\//, "");
    const out = sh("ctr", ["-a", this.sock, "-n", "k8s.io", "tasks", "ls"]);
    for (const line of out.split("\n")) {
      const [task, pid] = line.trim().split(/\s+/);
      if (task === id) return Number(pid);
    }
    throw new Error(`container ${id} has no running task`);
  }

  /** Stops everything; returns what could not be cleaned up (empty when all went). */
  async stop(): Promise<string[]> {
    const { dir } = this.opts;
    const problems: string[] = [];
    await this.#stopProc("kubelet");
    await this.#stopProc("scheduler");
    await this.#stopProc("controller-manager");
    // Containers: kill every task in our containerd, then remove it.
    if (this.#procs.has("containerd") && existsSync(this.sock)) {
      const ctr = (...a: string[]) => sh("ctr", ["-a", this.sock, "-n", "k8s.io", ...a], { allowFail: true });
      const tasks = ctr("tasks", "ls", "-q").split("\n").filter(Boolean);
      for (const t of tasks) ctr("tasks", "kill", "-s", "SIGKILL", t);
      for (const t of tasks) {
        for (let i = 0; i < 20; i++) {
          if (!ctr("tasks", "ls", "-q").includes(t)) break;
          ctr("tasks", "delete", "-f", t);
          await sleep(100);
        }
      }
      for (const c of ctr("containers", "ls", "-q").split("\n").filter(Boolean)) ctr("containers", "delete", c);
    }
    // Shims of our containerd outlive it; they name our socket on their command line.
    const shims: number[] = [];
    for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
        if (cmd.includes("containerd-shim") && cmd.includes(this.sock)) shims.push(Number(pid));
      } catch { /* gone */ }
    }
    await this.#stopProc("containerd");
    for (const pid of shims) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    await this.#stopProc("apiserver");
    this.kube?.close();
    // Mounts under our directory (deepest first), and the network namespaces of our pods.
    const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4])
      .filter((m) => m && (m.startsWith(dir + "/") || m === dir));
    for (const m of mounts.sort((a, b) => b.length - a.length)) {
      const r = spawnSync("umount", [m]);
      if (r.status !== 0) spawnSync("umount", ["-l", m]);
    }
    for (const ns of this.#podNetns()) {
      sh("umount", [ns], { allowFail: true });
      sh("rm", ["-f", ns], { allowFail: true });
    }
    if (this.#dnat.length) sh("iptables", ["-t", "nat", "-D", ...this.#dnat], { allowFail: true });
    if (this.#bridgeCreated) sh("ip", ["link", "del", POD_BRIDGE], { allowFail: true });
    if (this.#cgroupsCreated) { for (const h of cgroupHierarchies()) rmCgroupTree(h + CGROUP_ROOT); }
    if (!this.#v2CgroupExisted) rmCgroupTree(CGROUP_V2 + CGROUP_ROOT);
    if (this.#chainsBefore) removeKubeletChains(this.#chainsBefore);
    // The kubelet links every container log into /var/log/containers.
    const links = "/var/log/containers";
    if (existsSync(links)) {
      for (const f of readdirSync(links)) {
        try {
          if (Deno.readLinkSync(join(links, f)).startsWith(dir + "/")) Deno.removeSync(join(links, f));
        } catch { /* not a link */ }
      }
    }
    // Leak check.
    const left = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4])
      .filter((m) => m && m.startsWith(dir));
    if (left.length) problems.push(`mounts left: ${left.join(", ")}`);
    if (sh("ip", ["-o", "link", "show", POD_BRIDGE], { allowFail: true }).trim()) problems.push(`${POD_BRIDGE} left`);
    const veths = sh("ip", ["-o", "link", "show", "master", POD_BRIDGE], { allowFail: true }).trim();
    if (veths) problems.push(`veths left: ${veths}`);
    for (const h of cgroupHierarchies()) {
      if (existsSync(h + CGROUP_ROOT)) problems.push(`cgroup ${h + CGROUP_ROOT} left`);
    }
    return problems;
  }

  /** Network namespaces (under /var/run/netns) that our pods' sandboxes use. */
  #podNetns(): string[] {
    const file = join(this.opts.dir, "netns.txt");
    return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
  }

  /** Remembers the network namespaces now in use by our containerd's sandboxes. */
  recordNetns(): void {
    const out = sh("ctr", ["-a", this.sock, "-n", "k8s.io", "containers", "ls", "-q"], { allowFail: true });
    const seen = new Set(this.#podNetns());
    for (const id of out.split("\n").filter(Boolean)) {
      const info = sh("ctr", ["-a", this.sock, "-n", "k8s.io", "containers", "info", id], { allowFail: true });
      for (const m of info.matchAll(/"path":\s*"(\/var\/run\/netns\/[^"]+)"/g)) seen.add(m[1]);
    }
    writeFileSync(join(this.opts.dir, "netns.txt"), [...seen].join("\n") + "\n");
  }
}
