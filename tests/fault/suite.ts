// Never two leaders: fault-injection scenarios against the real kube-apiserver,
// with leasehold replicas on Deno, Bun and Node and client-go replicas sharing
// one Lease, each behind its own fault-injecting proxy.
//
//   deno run -A tests/fault/suite.ts                 every scenario once (CI mode)
//   deno run -A tests/fault/suite.ts --seed 1234     replay a run's random timing
//   deno run -A tests/fault/suite.ts --only partition,latency
//   deno run -A tests/fault/suite.ts --soak 20m      repeat random scenarios for 20 minutes
//
// Each replica's leader work is a child process that appends "start"/"stop" lines
// with the machine's wall clock to one shared file (client-go replicas report
// their own start/stop events). The checker fails a scenario if two work
// intervals overlap, if the Lease changed hands while its holder's record was
// still live (written by a non-holder), if a replica's work outlived its
// leadership, or if no leader exists once the faults are healed.
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createFetch, KubeClient, staticToken } from "../../mod.ts";
import {
  adminRequest,
  buildHarness,
  freshNamespace,
  podIdentity,
  requestToken,
  ROOT,
  startHarness,
} from "../env/testenv.mjs";
import { startReplica } from "../env/replica.mjs";
import { type Fault, type FaultProxy, startFaultProxy } from "../support/fault_proxy.ts";

// ---- options ------------------------------------------------------------------

const argv = process.argv.slice(2);
const opt = (name: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const seed = Number(opt("seed") ?? Math.floor(Math.random() * 2 ** 31));
const only = opt("only")?.split(",");
const soakMs = opt("soak") ? parseDurationArg(opt("soak")!) : 0;
const CI = process.env.CI === "true";

function parseDurationArg(s: string): number {
  const m = /^(\d+)(s|m|h)$/.exec(s);
  if (!m) throw new Error(`--soak takes 90s, 20m or 1h, not ${s}`);
  return Number(m[1]) * { s: 1000, m: 60000, h: 3600000 }[m[2] as "s" | "m" | "h"];
}

function mulberry32(a: number) {
  return () => {
    a |= 0;
    a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(seed);
const between = (lo: number, hi: number) => Math.round(lo + rand() * (hi - lo));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const TIMING = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };
const FLAGS = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms", "--child-grace", "2s"];
const FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

// ---- environment ----------------------------------------------------------------

type Harness = Awaited<ReturnType<typeof startHarness>>;
let harness: Harness;
let harnessDir: string;
let caCert: string, servingCert: string, servingKey: string;

async function bootHarness() {
  buildHarness();
  harnessDir = await mkdtemp(join(tmpdir(), "leasehold-fault-apiserver-"));
  harness = await startHarness(harnessDir);
  caCert = readFileSync(join(harnessDir, "ca.crt"), "utf8");
  servingCert = readFileSync(join(harnessDir, "serving.crt"), "utf8");
  servingKey = readFileSync(join(harnessDir, "serving.key"), "utf8");
  process.on("exit", () => harness.child.kill("SIGKILL"));
}

function runtimeCmd(kind: Kind): string[] {
  const bin = join(ROOT, "node_modules", ".bin");
  if (kind === "deno") return [join(bin, "deno"), "run", "-A", join(ROOT, "lib", "cli.ts")];
  if (kind === "bun") return [join(bin, "bun"), join(ROOT, "lib", "cli.ts")];
  if (kind === "node") return [process.env.NODE_BIN ?? "node", join(ROOT, "dist", "lib", "cli.js")];
  return [join(ROOT, ".cache", "bin", "clientgo-elector")];
}

// ---- replicas ---------------------------------------------------------------------

type Kind = "deno" | "bun" | "node" | "client-go";

interface Rep {
  name: string;
  kind: Kind;
  proxy: FaultProxy;
  proc: ReturnType<typeof startReplica>;
  killedAt?: number;
  childPid?: number;
}

class Run {
  ns = "";
  lease = "";
  dir = "";
  workLog = "";
  reps: Rep[] = [];
  faults: string[] = [];
  problems: string[] = [];
  id!: Awaited<ReturnType<typeof podIdentity>>;
  leaseLog: { at: number; holder: string; renewTime: string; rv: string; duration: number }[] = [];
  #watchStop = new AbortController();

  async setup(name: string, opts: { boundSecret?: string } = {}) {
    this.lease = name;
    this.ns = await freshNamespace(harness, "fault");
    this.dir = await mkdtemp(join(tmpdir(), `leasehold-fault-${name}-`));
    this.workLog = join(this.dir, "work.log");
    writeFileSync(this.workLog, "");
    this.id = await podIdentity(harness, this.ns, name, { boundSecret: opts.boundSecret });
    this.#watchLease();
  }

  /** An admin watch records every version of the Lease, with the local time it was seen. */
  #watchLease() {
    const signal = this.#watchStop.signal;
    (async () => {
      const client = new KubeClient({
        server: harness.url,
        fetch: await createFetch({ caCert }),
        tokenSource: staticToken(harness.adminToken),
      });
      let rv = "";
      while (!signal.aborted) {
        try {
          const q = `watch=1&fieldSelector=metadata.name%3D${this.lease}${rv ? `&resourceVersion=${rv}` : ""}`;
          const res = await client.stream(`/apis/coordination.k8s.io/v1/namespaces/${this.ns}/leases?${q}`, { signal });
          const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            buf += value;
            let nl;
            while ((nl = buf.indexOf("\n")) >= 0) {
              const ev = JSON.parse(buf.slice(0, nl));
              buf = buf.slice(nl + 1);
              if (ev.type === "ERROR") {
                rv = "";
                continue;
              }
              const o = ev.object;
              rv = o?.metadata?.resourceVersion ?? rv;
              if (ev.type === "BOOKMARK") continue;
              this.leaseLog.push({
                at: Date.now(),
                holder: ev.type === "DELETED" ? "<deleted>" : String(o?.spec?.holderIdentity ?? ""),
                renewTime: String(o?.spec?.renewTime ?? ""),
                rv,
                duration: Number(o?.spec?.leaseDurationSeconds ?? 0) * 1000,
              });
            }
          }
        } catch {
          if (signal.aborted) return;
          await sleep(200); // the API server may be down in a scenario
        }
      }
    })();
  }

  workScript(name: string): string {
    // Appends wall-clock milliseconds; LD_PRELOAD is dropped so a faked clock
    // in the replica does not fake the recorder's.
    const log = this.workLog;
    return `unset LD_PRELOAD; now() { date +%s%3N; }; echo "start $(now) ${name}" >> ${log}; ` +
      `trap 'echo "stop $(now) ${name}" >> ${log}; exit 0' TERM; while :; do sleep 0.05; done`;
  }

  async add(kind: Kind, name: string, extra: { env?: Record<string, string>; dir?: string } = {}): Promise<Rep> {
    const proxy = await startFaultProxy({ target: harness.url, caCert, cert: servingCert, key: servingKey });
    const env: Record<string, string> = {
      KUBERNETES_SERVICE_HOST: "127.0.0.1",
      KUBERNETES_SERVICE_PORT: String(proxy.port),
      SERVICE_ACCOUNT_DIR: extra.dir ?? this.id.dir,
      LEASE_NAME: this.lease,
      ...extra.env,
    };
    let proc;
    if (kind === "client-go") {
      proc = startReplica(
        [
          "--service-account-dir",
          env.SERVICE_ACCOUNT_DIR,
          "--lease-name",
          this.lease,
          "--identity",
          name,
          "--lease-duration",
          "4s",
          "--renew-deadline",
          "3s",
          "--retry-period",
          "500ms",
          // With ReleaseOnCancel, client-go cancels its work only after release()
          // returns, which blocks for up to RenewDeadline when partitioned: its work
          // then outlives its lease. Without it, client-go stops in time.
          "--release-on-cancel=false",
        ],
        env,
        { name, cmd: runtimeCmd(kind) },
      );
    } else {
      proc = startReplica([...FLAGS, "--identity", name, "--", "sh", "-c", this.workScript(name)], env, {
        name,
        cmd: runtimeCmd(kind),
      });
    }
    const rep: Rep = { name, kind, proxy, proc };
    this.reps.push(rep);
    return rep;
  }

  /** The replica whose work runs now (from the work log and client-go events). */
  leader(): Rep | undefined {
    const iv = this.intervals();
    const open = iv.filter((i) => i.end === undefined);
    return open.length === 1 ? this.reps.find((r) => r.name === open[0].name) : undefined;
  }

  async waitLeader(ms = 20000): Promise<Rep> {
    const t0 = Date.now();
    for (;;) {
      const l = this.leader();
      if (l) return l;
      if (Date.now() - t0 > ms) throw new Error(`no leader within ${ms} ms`);
      await sleep(50);
    }
  }

  /** Work intervals per replica, in wall-clock ms. */
  intervals(): { name: string; start: number; end?: number }[] {
    const out: { name: string; start: number; end?: number }[] = [];
    const open = new Map<string, { name: string; start: number; end?: number }>();
    const events: { t: number; kind: "start" | "stop"; name: string }[] = [];
    for (const line of readFileSync(this.workLog, "utf8").split("\n")) {
      const m = /^(start|stop) (\d+) (\S+)$/.exec(line.trim());
      if (m) events.push({ t: Number(m[2]), kind: m[1] as "start" | "stop", name: m[3] });
    }
    for (const r of this.reps.filter((r) => r.kind === "client-go")) {
      for (const l of r.proc.stdout.split("\n")) {
        if (!l.trim()) continue;
        try {
          const e = JSON.parse(l);
          if (e.event === "started") events.push({ t: Math.round(e.ts), kind: "start", name: r.name });
          if (e.event === "stopped") events.push({ t: Math.round(e.ts), kind: "stop", name: r.name });
        } catch { /* partial line */ }
      }
    }
    events.sort((a, b) => a.t - b.t);
    for (const e of events) {
      if (e.kind === "start") {
        const iv = { name: e.name, start: e.t };
        open.set(e.name, iv);
        out.push(iv);
      } else {
        const iv = open.get(e.name);
        if (iv) {
          iv.end = e.t;
          open.delete(e.name);
        }
      }
    }
    // A replica killed with SIGKILL: its work was killed with it.
    for (const iv of out) {
      const r = this.reps.find((x) => x.name === iv.name);
      if (iv.end === undefined && r?.killedAt !== undefined && r.killedAt >= iv.start) iv.end = r.killedAt;
    }
    return out;
  }

  /** SIGKILL a replica and its work (as a node would when a pod dies). */
  async crash(r: Rep) {
    r.killedAt = Date.now();
    const started = r.proc.lines.filter((l: { msg: string }) => l.msg === "started command");
    r.proc.kill("SIGKILL");
    for (const l of started) {
      try {
        process.kill(l.pid, "SIGKILL");
      } catch { /* gone */ }
    }
    appendFileSync(this.workLog, "");
    await r.proc.exited;
  }

  async stopGracefully(r: Rep, ms = 15000) {
    r.proc.kill("SIGTERM");
    const t = setTimeout(() => r.proc.kill("SIGKILL"), ms);
    const res = await r.proc.exited;
    clearTimeout(t);
    return res as { code: number | null };
  }

  setFault(r: Rep, f: Fault) {
    r.proxy.set(f);
    if (f.kind !== "none") this.faults.push(f.kind === "status" ? `http ${f.status}` : f.kind);
  }

  /** The safety checks; returns the number of overlaps found. */
  check(): number {
    const iv = this.intervals();
    let overlaps = 0;
    const sorted = [...iv].sort((a, b) => a.start - b.start);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length; j++) {
        const a = sorted[i], b = sorted[j];
        const aEnd = a.end ?? Infinity;
        if (b.start < aEnd) {
          overlaps++;
          this.problems.push(
            `overlap: ${a.name} worked ${a.start}..${a.end ?? "now"} while ${b.name} started at ${b.start}`,
          );
        }
      }
    }
    // The Lease changed hands only when free or when its holder's record had been unchanged for a leaseDuration.
    const log = this.leaseLog;
    for (let i = 1; i < log.length; i++) {
      const prev = log[i - 1], cur = log[i];
      if (!prev.holder || prev.holder === "<deleted>" || cur.holder === prev.holder || cur.holder === "<deleted>") {
        continue;
      }
      if (cur.holder === "" || prev.holder.startsWith("hand-") || cur.holder.startsWith("hand-")) continue; // release, or a hand edit
      const quiet = cur.at - prev.at;
      if (quiet < prev.duration - 400) {
        this.problems.push(
          `lease taken by ${cur.holder} from ${prev.holder} only ${quiet} ms after ${prev.holder}'s last write (leaseDuration ${prev.duration} ms)`,
        );
      }
    }
    // Work never outlives leadership: a leasehold replica's work stops before it logs "stopped leading".
    for (const r of this.reps.filter((r) => r.kind !== "client-go")) {
      const stops = r.proc.lines.filter((l: { msg: string }) => l.msg === "stopped leading");
      const mine = iv.filter((i) => i.name === r.name);
      for (const s of stops) {
        const stoppedAt = Date.parse(s.ts);
        const running = mine.find((i) => i.start < stoppedAt && (i.end ?? Infinity) > stoppedAt + 5);
        if (running) this.problems.push(`${r.name} logged "stopped leading" while its work still ran`);
      }
    }
    return overlaps;
  }

  async teardown() {
    for (const r of this.reps) if (r.killedAt === undefined) r.proc.kill("SIGTERM");
    await Promise.race([Promise.all(this.reps.map((r) => r.proc.exited)), sleep(15000)]);
    for (const r of this.reps) r.proc.kill("SIGKILL");
    this.#watchStop.abort();
    await Promise.all(this.reps.map((r) => r.proxy.close()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- scenarios --------------------------------------------------------------------

interface Outcome {
  name: string;
  transitions: number;
  faults: string;
  ms: number;
  overlaps: number;
  ok: boolean;
  problems: string[];
}

type Scenario = { name: string; what: string; run: (r: Run) => Promise<void> };

const MIXED: Kind[] = ["deno", "bun", "node", "client-go"];

async function mixed(r: Run, lease: string, kinds: Kind[] = MIXED) {
  await r.setup(lease);
  for (const [i, k] of kinds.entries()) await r.add(k, `${k}-${i}`);
  return await r.waitLeader(30000);
}

function expect(r: Run, cond: boolean, msg: string) {
  if (!cond) r.problems.push(msg);
}

const scenarios: Scenario[] = [
  {
    name: "partition",
    what: "leader's proxy black-holes every packet; followers are fine",
    run: async (r) => {
      const leader = await mixed(r, "partition");
      await sleep(between(300, 1500));
      r.setFault(leader, { kind: "blackhole" });
      const t0 = Date.now();
      const next = await waitFor(() => {
        const l = r.leader();
        return l && l !== leader ? l : undefined;
      }, 20000);
      expect(r, !!next, "no new leader after the partition");
      expect(r, Date.now() - t0 >= TIMING.leaseDuration - 600, `new leader ${Date.now() - t0} ms after the partition`);
      await sleep(between(500, 2000));
      r.setFault(leader, { kind: "none" });
      await sleep(3000);
    },
  },
  {
    name: "apiserver-restart",
    what: "kube-apiserver + etcd killed with SIGKILL, restarted on the same data",
    run: async (r) => {
      await mixed(r, "restart");
      await sleep(between(300, 1500));
      r.faults.push("apiserver SIGKILL + restart");
      await harness.kill();
      await sleep(between(500, 5000));
      harness = await startHarness(harnessDir);
      await r.waitLeader(30000);
      await sleep(3000);
      expect(r, !!r.leader(), "no leader after the restart");
    },
  },
  {
    name: "latency",
    what: "all proxies add latency just under, then just over, the request timeout",
    run: async (r) => {
      const leader = await mixed(r, "latency");
      // A request crosses the proxy twice; the request timeout is max(1s, renewDeadline/2) = 1.5 s.
      const under = between(400, 550); // 0.8–1.1 s in all: room for a loaded machine
      for (const x of r.reps) r.setFault(x, { kind: "latency", ms: under });
      await sleep(6000);
      expect(r, r.leader() === leader, `leader changed under ${2 * under} ms latency (below the timeout)`);
      const over = between(800, 1100);
      for (const x of r.reps) r.setFault(x, { kind: "latency", ms: over });
      await sleep(8000);
      for (const x of r.reps) r.setFault(x, { kind: "none" });
      await r.waitLeader(20000);
      await sleep(2000);
    },
  },
  {
    name: "wall-clock",
    what: "two replicas with the wall clock hours off (both directions), via libfaketime",
    run: async (r) => {
      if (!existsSync(FAKETIME_LIB)) {
        r.problems.push(`libfaketime is not installed (${FAKETIME_LIB}); apt-get install faketime`);
        return;
      }
      await r.setup("clock");
      const fake = (offset: string) => ({
        LD_PRELOAD: FAKETIME_LIB,
        FAKETIME: offset,
        FAKETIME_DONT_FAKE_MONOTONIC: "1",
      });
      const leader = await r.add("deno", "deno-minus", { env: fake(`-${between(2, 9)}h`) });
      await r.waitLeader();
      await r.add("bun", "bun-plus", { env: fake(`+${between(2, 9)}h`) });
      await r.add("client-go", "client-go-0");
      await r.add("node", "node-0");
      r.faults.push("wall clock -hours", "wall clock +hours");
      await sleep(8000);
      expect(r, r.leader() === leader, "the leader changed although nothing failed");
      await r.stopGracefully(leader);
      await r.waitLeader(10000);
      await sleep(6000);
    },
  },
  {
    name: "token-rotation",
    what: "the leader's token is bound to a Secret; the Secret is deleted, a new token written later",
    run: async (r) => {
      await r.setup("rotate");
      const dir = await mkdtemp(join(tmpdir(), "leasehold-rot-"));
      writeFileSync(join(dir, "ca.crt"), caCert);
      writeFileSync(join(dir, "namespace"), r.ns);
      const secret = "bound-1";
      writeFileSync(
        join(dir, "token"),
        await requestToken(harness, r.ns, r.id.serviceAccount, { boundSecret: secret }),
      );
      const leader = await r.add("deno", "deno-rot", { dir });
      await r.waitLeader();
      await r.add("client-go", "client-go-0");
      await r.add("bun", "bun-0");
      await sleep(1000);
      await adminRequest(harness, "DELETE", `/api/v1/namespaces/${r.ns}/secrets/${secret}`);
      r.faults.push("token revoked, new token written");
      const gap = between(300, 1500);
      await sleep(gap);
      writeFileSync(
        join(dir, "token"),
        await requestToken(harness, r.ns, r.id.serviceAccount, { boundSecret: "bound-2" }),
      );
      await sleep(5000);
      expect(r, r.leader() === leader, `the leader lost leadership although a new token came after ${gap} ms`);
      // Revoke again and never write a new one: it must step down, and never work without a lease.
      await adminRequest(harness, "DELETE", `/api/v1/namespaces/${r.ns}/secrets/bound-2`);
      r.faults.push("token revoked for good");
      const next = await waitFor(() => {
        const l = r.leader();
        return l && l !== leader ? l : undefined;
      }, 20000);
      expect(r, !!next, "nobody took over from a replica with a revoked token");
      expect(
        r,
        leader.proc.lines.some((l: { msg: string; error?: string }) => /Unauthorized/.test(l.error ?? "")),
        "the revoked token was not reported as Unauthorized",
      );
    },
  },
  {
    name: "rolling-update",
    what: "each replica replaced in turn: a new one starts, the old one gets SIGTERM",
    run: async (r) => {
      await mixed(r, "rolling", ["deno", "bun", "node"]);
      let n = 0;
      for (const old of [...r.reps]) {
        const kind = (["deno", "bun", "node"] as Kind[])[n % 3];
        await r.add(kind, `${kind}-new-${n++}`);
        await sleep(between(500, 1500));
        const res = await r.stopGracefully(old);
        expect(r, res.code === 0, `${old.name} exited with ${res.code} on SIGTERM`);
        await r.waitLeader(5000);
      }
      await sleep(2000);
    },
  },
  {
    name: "hand-edits",
    what: "the Lease deleted, then overwritten with another holder, while a replica leads",
    run: async (r) => {
      let leader = await mixed(r, "edits");
      await sleep(between(1000, 2500)); // every replica has seen the record
      const path = `/apis/coordination.k8s.io/v1/namespaces/${r.ns}/leases/edits`;
      // leasehold notices at its next renewal and stops. (client-go instead re-creates
      // a deleted Lease on its next renewal and goes on leading; the checker still
      // verifies that nobody else worked meanwhile.)
      const noticeWithin = (
        x: Rep,
      ) => (x.kind === "client-go" ? TIMING.retryPeriod + TIMING.renewDeadline + 1500 : 2000);
      await adminRequest(harness, "DELETE", path);
      r.faults.push("lease deleted");
      let t0 = Date.now();
      if (leader.kind !== "client-go") {
        const stopped1 = await waitFor(() => (r.leader() !== leader ? true : undefined), noticeWithin(leader));
        expect(r, !!stopped1, `${leader.name} kept working ${Date.now() - t0} ms after its Lease was deleted`);
      }
      leader = await r.waitLeader(15000);
      await sleep(between(1000, 2500));
      const cur = await adminRequest(harness, "GET", path);
      cur.spec.holderIdentity = "hand-edited";
      cur.spec.leaseDurationSeconds = 4;
      await adminRequest(harness, "PUT", path, cur);
      r.faults.push("lease overwritten");
      t0 = Date.now();
      const stopped2 = await waitFor(() => (r.leader() !== leader ? true : undefined), noticeWithin(leader));
      expect(r, !!stopped2, `${leader.name} kept working ${Date.now() - t0} ms after its Lease was overwritten`);
      await r.waitLeader(15000);
      await sleep(1000);
    },
  },
  {
    name: "malformed",
    what: "hand-written Leases with missing or broken fields, and broken ones served by the proxy",
    run: async (r) => {
      await r.setup("malformed");
      const path = `/apis/coordination.k8s.io/v1/namespaces/${r.ns}/leases`;
      // What the API server accepts: no spec fields, a null holder, annotations to keep.
      await adminRequest(harness, "POST", path, {
        metadata: { name: "malformed", annotations: { "example.com/keep": "me" } },
        spec: { leaseTransitions: 3 },
      });
      r.faults.push("lease with empty spec");
      for (const k of MIXED) await r.add(k, `${k}-m`);
      const first = await r.waitLeader(20000);
      const lease = await adminRequest(harness, "GET", `${path}/malformed`);
      expect(r, lease.metadata.annotations?.["example.com/keep"] === "me", "annotations were lost on takeover");
      // What only a broken server or proxy would send: served to one follower's GETs.
      const follower = r.reps.find((x) => x !== first && x.kind !== "client-go")!;
      const bad = [
        { holderIdentity: null, leaseDurationSeconds: "15", renewTime: "garbage" },
        { holderIdentity: 42, leaseDurationSeconds: 0 },
        { holderIdentity: "x", leaseDurationSeconds: -3, extra: { nested: true } },
      ];
      for (const spec of bad) {
        const body = JSON.stringify({
          kind: "Lease",
          apiVersion: "coordination.k8s.io/v1",
          metadata: { name: "malformed", namespace: r.ns, resourceVersion: "1" },
          spec,
        });
        follower.proxy.set({
          fault: { kind: "status", status: 200, body, contentType: "application/json" },
          match: { method: "GET", watch: false },
        });
        r.faults.push("malformed lease body");
        await sleep(1500);
      }
      r.setFault(follower, { kind: "none" });
      await sleep(2000);
      expect(r, r.leader() === first, "a malformed record changed the leader");
      for (const x of r.reps) {
        expect(
          r,
          x.proc.lines.every((l: { msg: string }) => l.msg !== "fatal"),
          `${x.name} crashed`,
        );
      }
    },
  },
  {
    name: "hostile-responses",
    what: "HTML 502, truncated JSON, a 10 MB body, a body that never ends, 429 Retry-After, 500s",
    run: async (r) => {
      const leader = await mixed(r, "hostile", ["deno", "bun", "node", "client-go"]);
      const rss0 = rss(leader.proc.child.pid);
      const faults: Fault[] = [
        {
          kind: "status",
          status: 502,
          body: "<html><body><h1>502 Bad Gateway</h1></body></html>",
          contentType: "text/html",
        },
        { kind: "truncated" },
        { kind: "huge", bytes: 10 * 1024 * 1024 },
        { kind: "never-ending" },
        {
          kind: "status",
          status: 429,
          body: '{"kind":"Status","code":429,"reason":"TooManyRequests"}',
          headers: { "Retry-After": "1" },
        },
        { kind: "status", status: 500, body: '{"kind":"Status","code":500,"reason":"InternalError","message":"etcd"}' },
      ];
      for (const f of faults) {
        for (const x of r.reps) r.setFault(x, f);
        await sleep(between(1200, 2500));
        for (const x of r.reps) r.setFault(x, { kind: "none" });
        await r.waitLeader(15000);
      }
      const rss1 = rss(leader.proc.child.pid);
      if (rss0 && rss1) expect(r, rss1 - rss0 < 64 * 1024, `RSS grew by ${rss1 - rss0} kB through the hostile bodies`);
      const errors = r.reps.flatMap((x) => x.proc.lines).map((l: { error?: string }) => l.error ?? "").join("\n");
      expect(r, /proxy/.test(errors), "the HTML 502 was not reported as coming from a proxy");
      expect(r, /larger than/.test(errors), "the 10 MB body was not reported as too large");
      for (const x of r.reps) {
        expect(r, x.proc.lines.every((l: { msg: string }) => l.msg !== "fatal"), `${x.name} crashed`);
      }
      await sleep(2000);
    },
  },
  {
    name: "bad-config",
    what: "missing token, unreadable CA, wrong CA, wrong namespace, a Role without update",
    run: async (r) => {
      await r.setup("badcfg");
      const mk = async (files: Record<string, string>) => {
        const d = await mkdtemp(join(tmpdir(), "leasehold-bad-"));
        for (const [f, c] of Object.entries(files)) writeFileSync(join(d, f), c);
        return d;
      };
      const token = readFileSync(join(r.id.dir, "token"), "utf8");
      const wrongCa = readFileSync(join(harnessDir, "admin.crt"), "utf8"); // a certificate, but not the CA
      const cases: { label: string; dir: string; env?: Record<string, string>; exit?: number; expect: RegExp }[] = [
        {
          label: "missing token",
          dir: await mk({ "ca.crt": caCert, namespace: r.ns }),
          exit: 2,
          expect: /token.*(automountServiceAccountToken|SERVICE_ACCOUNT_DIR)/,
        },
        { label: "unreadable CA", dir: await mk({ token, namespace: r.ns }), exit: 2, expect: /ca\.crt/ },
        { label: "wrong CA", dir: await mk({ token, "ca.crt": wrongCa, namespace: r.ns }), expect: /certificate|CA/ },
        {
          label: "wrong namespace",
          dir: r.id.dir,
          env: { LEASE_NAMESPACE: "default" },
          expect: /Forbidden.*namespace "default"/,
        },
      ];
      const noUpdate = await podIdentity(harness, await freshNamespace(harness, "fault"), "badcfg", {
        dropVerbs: ["update"],
      });
      await adminRequest(
        harness,
        "POST",
        `/apis/coordination.k8s.io/v1/namespaces/${readFileSync(join(noUpdate.dir, "namespace"), "utf8")}/leases`,
        {
          metadata: { name: "badcfg" },
          spec: { holderIdentity: "", leaseDurationSeconds: 1 },
        },
      );
      cases.push({ label: "Role without update", dir: noUpdate.dir, expect: /verbs \["update"\]/ });
      for (const c of cases) {
        r.faults.push(c.label);
        const rep = await r.add("deno", `bad-${r.reps.length}`, { dir: c.dir, env: c.env });
        const deadline = Date.now() + 8000;
        let line: { error?: string; msg: string } | undefined;
        while (Date.now() < deadline && !line) {
          line = rep.proc.lines.find((l: { level?: string; error?: string; msg: string }) =>
            (l.level === "error" || l.level === "warn") && c.expect.test(`${l.msg} ${l.error ?? ""}`)
          );
          await sleep(100);
        }
        expect(
          r,
          !!line,
          `${c.label}: no error naming the fix (saw: ${
            rep.proc.lines.map((l: { msg: string; error?: string }) => l.error ?? l.msg).join(" | ").slice(0, 400)
          })`,
        );
        expect(
          r,
          !rep.proc.lines.some((l: { msg: string }) => l.msg === "started leading"),
          `${c.label}: claimed leadership`,
        );
        if (c.exit !== undefined) {
          const res = (await Promise.race([rep.proc.exited, sleep(5000).then(() => ({ code: "still running" }))])) as {
            code: unknown;
          };
          expect(r, res.code === c.exit, `${c.label}: exit ${res.code}, want ${c.exit}`);
        }
        rep.proc.kill("SIGKILL");
      }
    },
  },
];

function rss(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function waitFor<T>(fn: () => T | undefined, ms: number): Promise<T | undefined> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const v = fn();
    if (v) return v;
    await sleep(50);
  }
  return undefined;
}

async function runScenario(s: Scenario): Promise<Outcome> {
  const r = new Run();
  const t0 = Date.now();
  try {
    await s.run(r);
  } catch (e) {
    r.problems.push(`error: ${(e as Error).message}`);
  }
  let overlaps = 0;
  try {
    await sleep(300);
    overlaps = r.check();
  } catch (e) {
    r.problems.push(`checker: ${(e as Error).message}`);
  }
  if (r.problems.length && process.env.FAULT_DEBUG) {
    const t0 = r.leaseLog[0]?.at ?? 0;
    for (const l of r.leaseLog) console.log(`   lease +${l.at - t0} holder=${l.holder} rv=${l.rv}`);
    for (const i of r.intervals()) {
      console.log(`   work ${i.name} +${i.start - t0}..${i.end ? `+${i.end - t0}` : "open"}`);
    }
    for (const x of r.reps) {
      for (const l of x.proc.lines) {
        if (
          ["new leader", "started leading", "stopped leading", "released the lease"].includes(l.msg) ||
          l.level !== "info"
        ) {
          console.log(`   log ${x.name} +${Date.parse(l.ts) - t0} ${l.msg} ${l.reason ?? l.leader ?? l.error ?? ""}`);
        }
      }
      if (x.kind === "client-go") {
        for (const l of x.proc.stdout.split("\n").filter(Boolean)) {
          try {
            const e = JSON.parse(l);
            console.log(`   cg  ${x.name} +${Math.round(e.ts - t0)} ${e.event} ${e.leader ?? ""}`);
          } catch { /* partial */ }
        }
      }
    }
  }
  await r.teardown().catch(() => {});
  let transitions = 0;
  for (let i = 1; i < r.leaseLog.length; i++) {
    const h = r.leaseLog[i].holder;
    if (h && h !== "<deleted>" && h !== r.leaseLog[i - 1].holder) transitions++;
  }
  return {
    name: s.name,
    transitions,
    faults: [...new Set(r.faults)].join(", "),
    ms: Date.now() - t0,
    overlaps,
    ok: r.problems.length === 0,
    problems: r.problems,
  };
}

// ---- main ---------------------------------------------------------------------------

console.log(`fault suite: seed ${seed} (replay with --seed ${seed})`);
try {
  await bootHarness();
} catch (e) {
  console.log(`!!! cannot start the API server for the fault suite: ${(e as Error).message}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
if (!existsSync(join(ROOT, "dist", "lib", "cli.js"))) {
  console.log("!!! dist/ is missing: run `npx tsc -p tsconfig.build.json` first (npm test does)");
}
const chosen = scenarios.filter((s) => !only || only.includes(s.name));
const results: Outcome[] = [];
const started = Date.now();
let round = 0;
do {
  const order = soakMs ? [chosen[Math.floor(rand() * chosen.length)]] : chosen;
  for (const s of order) {
    const o = await runScenario(s);
    results.push(o);
    console.log(
      `${o.ok ? "ok  " : "FAIL"} ${o.name.padEnd(18)} ${
        (o.ms / 1000).toFixed(1).padStart(5)
      }s  transitions ${o.transitions}  overlaps ${o.overlaps}  faults: ${o.faults}`,
    );
    for (const p of o.problems) console.log(`       ${p}`);
  }
  round++;
} while (soakMs && Date.now() - started < soakMs);

await harness.stop().catch(() => {});
mkdirSync(join(ROOT, ".cache"), { recursive: true });
writeFileSync(join(ROOT, ".cache", "fault-results.json"), JSON.stringify({ seed, round, results }, null, 2));
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
const totalOverlaps = results.reduce((a, r) => a + r.overlaps, 0);
console.log(
  `\nscenarios: ${results.length}, leadership transitions: ${
    results.reduce((a, r) => a + r.transitions, 0)
  }, overlaps: ${totalOverlaps}, faults injected: ${
    results.reduce((a, r) => a + r.faults.split(", ").filter(Boolean).length, 0)
  }, seed ${seed}`,
);
if (CI && failed) console.log("(CI) a failed scenario fails the run");
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
