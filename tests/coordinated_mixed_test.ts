// Coordinated leader election with leasehold and client-go candidates on one
// Lease, on the real API server (its election controller decides): the oldest
// emulation version leads whichever kind it is, a rolled upgrade moves
// leadership with zero overlap, and both kinds' Events read the same.
//
// client-go runs as tests/apiserver/cmd/clientgo-elector with -coordinated
// (LeaderElectionConfig.Coordinated plus leaderelection.NewCandidate). Its
// candidate is an informer, so it also needs list and watch on leasecandidates,
// and its event correlator patches repeated events: the test grants those to
// the same ServiceAccount beside the shipped Role.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { createLeaseApi, kubeconfigConfig } from "../mod.ts";
import { startReplica } from "./env/replica.mjs";
import { adminRequest, BIN_DIR, freshNamespace, podIdentity } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

type Info = { url: string; host: string; port: number; caFile: string; adminToken: string; kubeconfig: string };
type Identity = { dir: string; env: Record<string, string>; serviceAccount: string };
/** One term of leader work, in wall-clock ms of this host (both kinds run here). */
type Term = { id: string; start: number; end?: number };

const TIMINGS = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };
const CANDIDATES = "/apis/coordination.k8s.io/v1beta1/namespaces";

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What client-go's candidate and event recorder need beyond the shipped Role. */
async function grantClientGoExtras(info: Info, ns: string, sa: string): Promise<void> {
  await adminRequest(info, "POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`, {
    metadata: { name: "clientgo-extras", namespace: ns },
    rules: [
      { apiGroups: ["coordination.k8s.io"], resources: ["leasecandidates"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["events"], verbs: ["patch"] },
    ],
  });
  await adminRequest(info, "POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, {
    metadata: { name: "clientgo-extras", namespace: ns },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "clientgo-extras" },
    subjects: [{ kind: "ServiceAccount", name: sa, namespace: ns }],
  });
}

/** A pool of replicas of both kinds contending for one Lease. */
class Pool {
  readonly terms: Term[] = [];
  readonly #stops = new Map<string, () => Promise<void>>();
  readonly kinds = new Map<string, "leasehold" | "client-go">();

  /** `holderIdentity` of every version of the Lease, as an admin watch delivered them. */
  readonly holders: string[] = [];
  readonly #watching = new AbortController();
  #watchDone?: Promise<void>;

  constructor(readonly info: Info, readonly ns: string, readonly leaseName: string, readonly id: Identity) {}

  /** Follows every version of the Lease (a watch; reopened from the last version when it ends). */
  async observe(): Promise<void> {
    const api = await createLeaseApi(await kubeconfigConfig(this.info.kubeconfig), {
      name: this.leaseName,
      namespace: this.ns,
    });
    const signal = this.#watching.signal;
    this.#watchDone = (async () => {
      let rv: string | undefined;
      while (!signal.aborted) {
        try {
          for await (const ev of api.watch(rv, signal)) {
            rv = ev.object.metadata.resourceVersion ?? rv;
            if (ev.type === "ADDED" || ev.type === "MODIFIED") this.holders.push(ev.object.spec?.holderIdentity ?? "");
          }
        } catch {
          if (!signal.aborted) await new Promise((r) => setTimeout(r, 100));
        }
      }
    })();
  }

  /** Holders in order, each run of the same value once. */
  holderRuns(): string[] {
    return this.holders.filter((h, i) => i === 0 || this.holders[i - 1] !== h);
  }

  /** Starts a leasehold replica: the entrypoint with --coordinated (Events are on by default). */
  async leasehold(identity: string, binaryVersion: string, emulationVersion = binaryVersion): Promise<void> {
    const args = [
      "--service-account-dir",
      this.id.dir,
      "--lease-name",
      this.leaseName,
      "--identity",
      identity,
      "--lease-duration",
      `${TIMINGS.leaseDuration}ms`,
      "--renew-deadline",
      `${TIMINGS.renewDeadline}ms`,
      "--retry-period",
      `${TIMINGS.retryPeriod}ms`,
      "--coordinated",
      "--binary-version",
      binaryVersion,
      "--emulation-version",
      emulationVersion,
    ];
    const r = startReplica(args, this.id.env, { name: identity });
    let open: Term | undefined;
    const seen = new Set<unknown>();
    const follow = setInterval(() => {
      for (const l of r.lines) {
        if (seen.has(l)) continue;
        seen.add(l);
        if (l.msg === "started leading") {
          open = { id: identity, start: Date.parse(l.ts) };
          this.terms.push(open);
        } else if (l.msg === "stopped leading" && open) {
          open.end = Date.parse(l.ts);
          open = undefined;
        }
      }
    }, 20);
    this.kinds.set(identity, "leasehold");
    this.#stops.set(identity, async () => {
      r.kill("SIGTERM");
      const killer = setTimeout(() => r.kill("SIGKILL"), 15000);
      const status = await r.exited;
      clearTimeout(killer);
      await new Promise((res) => setTimeout(res, 40)); // the last lines are read
      clearInterval(follow);
      assert.deepEqual(status, { code: 0, signal: null }, `${identity} exits 0 on SIGTERM`);
    });
    await until(`${identity}'s LeaseCandidate`, 15000, () => this.candidate(identity));
  }

  /** Starts a client-go replica (clientgo-elector -coordinated) as a child process. */
  async clientGo(identity: string, binaryVersion: string, emulationVersion = binaryVersion): Promise<void> {
    const args = [
      "-service-account-dir",
      this.id.dir,
      "-lease-name",
      this.leaseName,
      "-identity",
      identity,
      "-lease-duration",
      `${TIMINGS.leaseDuration}ms`,
      "-renew-deadline",
      `${TIMINGS.renewDeadline}ms`,
      "-retry-period",
      `${TIMINGS.retryPeriod}ms`,
      "-coordinated",
      "-binary-version",
      binaryVersion,
      "-emulation-version",
      emulationVersion,
      "-rerun",
      "-events",
      "-delete-candidate-on-exit",
    ];
    const child = spawn(join(BIN_DIR, "clientgo-elector"), args, {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/", ...this.id.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<void>((r) => child.on("exit", () => r()));
    let buf = "";
    let stderr = "";
    let open: Term | undefined;
    child.stderr!.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
    child.stdout!.on("data", (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let line: { event?: string; ts?: number };
        try {
          line = JSON.parse(text);
        } catch {
          continue;
        }
        if (line.event === "started") {
          open = { id: identity, start: line.ts! };
          this.terms.push(open);
        } else if (line.event === "work-stopped" && open) {
          open.end = line.ts!;
          open = undefined;
        }
      }
    });
    this.kinds.set(identity, "client-go");
    this.#stops.set(identity, async () => {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 15000);
      await exited;
      clearTimeout(killer);
    });
    await until(
      `${identity}'s LeaseCandidate (client-go; stderr: ${stderr.slice(-300)})`,
      15000,
      () => this.candidate(identity),
    );
  }

  async candidate(identity: string): Promise<object | undefined> {
    const list = await adminRequest(this.info, "GET", `${CANDIDATES}/${this.ns}/leasecandidates`);
    return list.items.find((c: { metadata: { name: string } }) => c.metadata.name === identity);
  }

  async lease(): Promise<{ metadata: { uid: string }; spec: Record<string, unknown> } | undefined> {
    const l = await adminRequest(
      this.info,
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${this.ns}/leases/${this.leaseName}`,
    )
      .catch(() => undefined);
    return l?.metadata?.uid ? l : undefined;
  }

  /** Waits until `identity` runs leader work. */
  leads(identity: string, ms = 40000): Promise<Term> {
    return until(`${identity} leading`, ms, () => this.terms.find((t) => t.id === identity && t.end === undefined));
  }

  async stop(identity: string): Promise<void> {
    const s = this.#stops.get(identity);
    this.#stops.delete(identity);
    await s?.();
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.#stops.keys()].map((id) => this.stop(id)));
    this.#watching.abort();
    await this.#watchDone;
  }

  /** Every term ended before the next one started. */
  assertNoOverlap(): void {
    const sorted = [...this.terms].sort((a, b) => a.start - b.start);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1], cur = sorted[i];
      assert.ok(
        prev.end !== undefined && prev.end <= cur.start,
        `${prev.id} (${this.kinds.get(prev.id)}) still worked (until ${prev.end ?? "never"}) when ${cur.id} (${
          this.kinds.get(cur.id)
        }) started at ${cur.start}`,
      );
    }
  }
}

async function setup(info: Info, prefix: string, leaseName: string): Promise<Pool> {
  const ns = await freshNamespace(info, prefix);
  const id = await podIdentity(info, ns, leaseName);
  await grantClientGoExtras(info, ns, id.serviceAccount);
  const pool = new Pool(info, ns, leaseName, id);
  await pool.observe();
  return pool;
}

type Ev = {
  type: string;
  reason: string;
  message: string;
  involvedObject: Record<string, string>;
  source?: { component?: string };
};

serverTest(
  "coordinated, mixed: the oldest emulation version leads, leasehold or client-go; hand-overs do not overlap; Events read the same",
  { timeout: 180000 },
  async (_t, info: Info) => {
    const pool = await setup(info, "clmix", "mix-lease");
    try {
      await pool.clientGo("cg-14", "1.4.0");
      await pool.leads("cg-14");
      // A newer leasehold candidate does not move leadership.
      await pool.leasehold("lh-15", "1.5.0");
      assert.equal((await pool.lease())?.spec.holderIdentity, "cg-14");
      // An older leasehold candidate joins: client-go's leader ends its term when it
      // sees preferredHolder (after its renewDeadline), and leasehold is elected.
      await pool.leasehold("lh-13", "1.5.0", "1.3.0");
      await pool.leads("lh-13");
      // An older client-go candidate joins: leasehold's leader hands over at once.
      await pool.clientGo("cg-12", "1.3.0", "1.2.0");
      const cg12 = await pool.leads("cg-12");
      const lh13 = pool.terms.find((t) => t.id === "lh-13")!;
      assert.ok(lh13.end !== undefined, "lh-13 stopped its work");
      console.error(`leasehold -> client-go hand-over: ${cg12.start - lh13.end!} ms from work stopped to work started`);
      assert.equal(pool.terms.filter((t) => t.id === "lh-15").length, 0, "the newest version never led");
      const l = (await pool.lease())!;
      assert.equal(l.spec.holderIdentity, "cg-12");
      assert.equal(l.spec.strategy, "OldestEmulationVersion");
      pool.assertNoOverlap();
      assert.deepEqual(
        pool.holderRuns().filter((h) => h !== ""),
        ["cg-14", "lh-13", "cg-12"],
        "each holder named once, in the controller's order",
      );

      // Events: both kinds record "<identity> became leader" / "stopped leading" on the Lease.
      const want = ["cg-12 became leader", "cg-14 became leader", "cg-14 stopped leading", "lh-13 became leader"];
      want.push("lh-13 stopped leading");
      const events = await until("the leadership events of both kinds", 20000, async () => {
        const list: { items: Ev[] } = await adminRequest(info, "GET", `/api/v1/namespaces/${pool.ns}/events`);
        const got = list.items.filter((e) => e.reason === "LeaderElection");
        return want.every((m) => got.some((e) => e.message === m)) ? got : undefined;
      });
      const shape = (e: Ev) => ({
        type: e.type,
        reason: e.reason,
        involvedObject: {
          apiVersion: e.involvedObject.apiVersion,
          kind: e.involvedObject.kind,
          name: e.involvedObject.name,
          namespace: e.involvedObject.namespace,
          uid: e.involvedObject.uid,
        },
      });
      const expected = {
        type: "Normal",
        reason: "LeaderElection",
        involvedObject: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          name: "mix-lease",
          namespace: pool.ns,
          uid: l.metadata.uid,
        },
      };
      for (const m of want) {
        const e = events.find((e) => e.message === m)!;
        assert.deepEqual(shape(e), expected, `event "${m}"`);
      }
      const components = new Set(events.map((e) => e.source?.component));
      assert.deepEqual([...components].sort(), ["clientgo-elector", "leasehold"], "both kinds wrote events");
    } finally {
      await pool.stopAll();
    }
  },
);

serverTest(
  "coordinated, mixed: a rolled upgrade moves leadership as the controller decides, with zero overlap",
  { timeout: 240000 },
  async (_t, info: Info) => {
    const pool = await setup(info, "clroll", "roll-lease");
    try {
      // Three replicas of the old release (emulating 1.4; patch releases break ties).
      await pool.leasehold("a", "1.4.0");
      await pool.clientGo("b", "1.4.1", "1.4.0");
      await pool.leasehold("c", "1.4.2", "1.4.0");
      await pool.leads("a");
      // Roll one replica at a time to the new release: the new one joins, then the old one goes.
      const leaders = ["a"];
      const roll: [string, string, "leasehold" | "client-go", string][] = [
        ["a", "a2", "leasehold", "1.5.0"],
        ["b", "b2", "client-go", "1.5.1"],
        ["c", "c2", "leasehold", "1.5.2"],
      ];
      const next: Record<string, string> = { a: "b", b: "c", c: "a2" };
      for (const [old, fresh, kind, version] of roll) {
        if (kind === "leasehold") await pool.leasehold(fresh, version);
        else await pool.clientGo(fresh, version);
        await pool.stop(old);
        // The controller picks the oldest emulation version left (then the lowest binary version).
        await pool.leads(next[old]);
        leaders.push(next[old]);
      }
      assert.deepEqual([...new Set(pool.terms.map((t) => t.id))], leaders, "who led, in order");
      assert.equal((await pool.lease())?.spec.holderIdentity, "a2");
      // A stopping replica is never named again: its LeaseCandidate is gone before it releases.
      assert.deepEqual(pool.holderRuns(), ["a", "", "b", "", "c", "", "a2"]);
      await pool.stopAll();
      pool.assertNoOverlap();
      const gaps = [...pool.terms].sort((x, y) => x.start - y.start).slice(1).map((t, i, _a) => {
        const prev = [...pool.terms].sort((x, y) => x.start - y.start)[i];
        return `${prev.id}->${t.id} ${t.start - prev.end!} ms`;
      });
      console.error(`rolled upgrade hand-overs (work stopped -> work started): ${gaps.join(", ")}`);
    } finally {
      await pool.stopAll();
    }
  },
);
