// Leadership Events and LeaseCandidates against the real API server, with the
// Role from deploy/rbac.yaml: what `kubectl describe lease` lists, and the
// API server's election controller choosing among leasehold candidates.
import assert from "node:assert/strict";
import {
  createLeaseApi,
  inClusterConfig,
  type KubeLeaseApi,
  LeaderElector,
  LeaderEventRecorder,
  LeaseCandidateKeeper,
} from "../mod.ts";
import { adminRequest, freshNamespace, podIdentity } from "./env/testenv.mjs";
import { startReplica } from "./env/replica.mjs";
import { serverTest } from "./support/needs_server.mjs";

type Info = { url: string; host: string; port: number; caFile: string; adminToken: string };
const FAST = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };

async function leaseApiFor(dir: string, envVars: Record<string, string>, name: string): Promise<KubeLeaseApi> {
  const config = await inClusterConfig({ serviceAccountDir: dir, env: (k) => envVars[k] });
  return await createLeaseApi(config, { name, timeoutMs: 1500 });
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

type EventList = { items: { reason: string; type: string; message: string; involvedObject: Record<string, string> }[] };

serverTest(
  "events: became leader / stopped leading on the Lease, with its uid, under the shipped Role",
  async (_t, info: Info) => {
    const ns = await freshNamespace(info, "events");
    const id = await podIdentity(info, ns, "ev-lease");
    const lease = await leaseApiFor(id.dir, id.env, "ev-lease");
    const elector = new LeaderElector({ lease, identity: "ev-a", ...FAST, onStartedLeading: () => {} });
    const recorder = new LeaderEventRecorder({
      client: lease.client,
      namespace: ns,
      leaseName: "ev-lease",
      identity: "ev-a",
    });
    recorder.attach(elector);
    const stop = new AbortController();
    const started = new Promise((r) => elector.addEventListener("started", r, { once: true }));
    const run = elector.run(stop.signal);
    await started;
    stop.abort();
    await run;
    const l = await adminRequest(info, "GET", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/ev-lease`);
    const events = await until("two events", 10000, async () => {
      const list: EventList = await adminRequest(info, "GET", `/api/v1/namespaces/${ns}/events`);
      return list.items.length >= 2 ? list.items : undefined;
    });
    assert.deepEqual(recorder.stats(), { written: 2, failed: 0, dropped: 0 });
    assert.deepEqual(events.map((e) => e.message).sort(), ["ev-a became leader", "ev-a stopped leading"]);
    for (const e of events) {
      assert.equal(e.reason, "LeaderElection");
      assert.equal(e.type, "Normal");
      assert.equal(e.involvedObject.kind, "Lease");
      assert.equal(e.involvedObject.name, "ev-lease");
      assert.equal(e.involvedObject.uid, l.metadata.uid);
    }
    // What `kubectl describe lease` asks for: events by the Lease's uid.
    const q = new URLSearchParams({
      fieldSelector: `involvedObject.name=ev-lease,involvedObject.namespace=${ns},involvedObject.uid=${l.metadata.uid}`,
    });
    const described: EventList = await adminRequest(info, "GET", `/api/v1/namespaces/${ns}/events?${q}`);
    assert.equal(described.items.length, 2);
  },
);

serverTest(
  "events: the entrypoint writes its last 'stopped leading' before it exits on SIGTERM",
  { timeout: 60000 },
  async (_t, info: Info) => {
    const ns = await freshNamespace(info, "evexit");
    const id = await podIdentity(info, ns, "ev-exit");
    const args = ["--service-account-dir", id.dir, "--lease-name", "ev-exit", "--identity", "ev-x"];
    const r = startReplica(
      [...args, "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"],
      id.env,
      {
        name: "ev-x",
      },
    );
    try {
      await r.waitFor((l: { msg?: string }) => l.msg === "started leading");
    } finally {
      r.kill("SIGTERM");
    }
    assert.deepEqual(await r.exited, { code: 0, signal: null });
    // Written before the exit: read once, no waiting.
    const list: EventList = await adminRequest(info, "GET", `/api/v1/namespaces/${ns}/events`);
    assert.deepEqual(list.items.map((e) => e.message).sort(), ["ev-x became leader", "ev-x stopped leading"]);
  },
);

serverTest(
  "candidates: the API server's election controller writes the oldest-version leasehold candidate in",
  async (_t, info: Info) => {
    const ns = await freshNamespace(info, "cle");
    const id = await podIdentity(info, ns, "cle-lease");
    const lease = await leaseApiFor(id.dir, id.env, "cle-lease");
    const stop = new AbortController();
    const keepers = [["new-1", "1.5.0"], ["old", "1.4.0"], ["new-2", "1.5.0"]].map(([identity, v]) =>
      new LeaseCandidateKeeper({
        client: lease.client,
        namespace: ns,
        leaseName: "cle-lease",
        identity,
        binaryVersion: v,
        pollMs: 300,
      })
    );
    const runs = keepers.map((k) => k.run(stop.signal));
    try {
      // The controller may elect as soon as the first candidate appears; once the
      // oldest one exists it names it, as holder or as preferredHolder (nobody here
      // renews the Lease, so it becomes the holder when the first term expires).
      const held = await until("the oldest candidate named by the controller", 20000, async () => {
        const l = await lease.get();
        return l?.spec?.holderIdentity === "old" || l?.spec?.preferredHolder === "old" ? l : undefined;
      });
      assert.equal(held.spec?.strategy, "OldestEmulationVersion");
      const cands = await adminRequest(
        info,
        "GET",
        `/apis/coordination.k8s.io/v1beta1/namespaces/${ns}/leasecandidates`,
      );
      assert.deepEqual(cands.items.map((c: { metadata: { name: string } }) => c.metadata.name).sort(), [
        "new-1",
        "new-2",
        "old",
      ]);
    } finally {
      stop.abort();
      await Promise.all(runs);
    }
    const left = await adminRequest(info, "GET", `/apis/coordination.k8s.io/v1beta1/namespaces/${ns}/leasecandidates`);
    assert.equal(left.items.length, 0, "candidates are deleted when stopped");
  },
);

serverTest(
  "coordinated: the controller names the oldest candidate; a newer leader hands over at once when an older one joins",
  {
    timeout: 120000,
  },
  async (_t, info: Info) => {
    const ns = await freshNamespace(info, "clh");
    const id = await podIdentity(info, ns, "clh-lease");
    const lease = await leaseApiFor(id.dir, id.env, "clh-lease");
    const stop = new AbortController();
    const runs: Promise<void>[] = [];
    const work: { id: string; start: number; end?: number }[] = [];
    const join = (identity: string, version: string) => {
      const keeper = new LeaseCandidateKeeper({
        client: lease.client,
        namespace: ns,
        leaseName: "clh-lease",
        identity,
        binaryVersion: version,
        pollMs: 300,
      });
      const elector = new LeaderElector({
        lease,
        identity,
        ...FAST,
        coordinated: true,
        onStartedLeading: async ({ signal }) => {
          const w: { id: string; start: number; end?: number } = { id: identity, start: Date.now() };
          work.push(w);
          await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
          w.end = Date.now();
        },
      });
      runs.push(keeper.run(stop.signal), elector.run(stop.signal));
      return elector;
    };
    try {
      const newer = join("v15", "1.5.0");
      await until("the only candidate named and leading", 30000, () => Promise.resolve(newer.isLeader || undefined));
      const l1 = await lease.get();
      assert.equal(l1?.spec?.holderIdentity, "v15");
      assert.equal(l1?.spec?.strategy, "OldestEmulationVersion");
      const older = join("v14", "1.4.0");
      await until("the older candidate leading", 30000, () => Promise.resolve(older.isLeader || undefined));
      assert.equal(newer.isLeader, false);
      const [first, second] = work;
      assert.equal(first.id, "v15");
      assert.equal(second.id, "v14");
      assert.ok(first.end !== undefined && second.start >= first.end, "the terms do not overlap");
      const handOver = second.start - first.end!;
      assert.ok(handOver < 5000, `hand-over ${handOver} ms after the newer leader's work stopped`);
      console.error(`coordinated hand-over: ${handOver} ms from the old leader's work stopping to the new one's start`);
    } finally {
      stop.abort();
      await Promise.all(runs);
    }
  },
);
