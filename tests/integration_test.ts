// Integration tests against the real kube-apiserver + etcd from tests/apiserver,
// through the in-cluster path (token file + CA) with the Role from deploy/rbac.yaml.
// Runs under Deno and Bun; tests/node/integration.node.mjs covers Node.
// Without the server these tests are reported as skipped (under CI=true they fail):
// see tests/support/needs_server.mjs. Nothing here waits a fixed time or bounds a
// hand-over by the clock; the tests wait for events and check their order, and
// timing is left to the benchmarks.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import {
  formatMicroTime,
  inClusterConfig,
  isConflict,
  KubeApiError,
  kubeconfigConfig,
  type LeaderContext,
  LeaderElector,
  type Logger,
  readRecord,
  type RecordResult,
} from "../mod.ts";
import { createFetch, createLeaseApi, KubeClient } from "../mod.ts";
import { adminRequest, freshNamespace, podIdentity, writeKubeconfig } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

const FAST = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };
// A lease that cannot expire while a test waits for an event (20 s): a takeover
// seen at all under it came from a release, not from expiry.
const NO_EXPIRY = { leaseDuration: 60000, renewDeadline: 40000, retryPeriod: 500 };

async function leaseApiFor(dir: string, envVars: Record<string, string>, name: string) {
  const config = await inClusterConfig({ serviceAccountDir: dir, env: (k) => envVars[k] });
  return createLeaseApi(config, { name, timeoutMs: 1500 });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms))),
  ]);
}

/** The first `type` event from any of `targets` (listeners and timer removed once it comes), as [target, event]. */
function firstEvent<T extends EventTarget>(targets: T[], type: string, ms = 20000): Promise<[T, Event]> {
  return new Promise((resolve, reject) => {
    const offs: (() => void)[] = [];
    const timer = setTimeout(() => {
      for (const off of offs) off();
      reject(new Error(`event ${type}: not within ${ms} ms`));
    }, ms);
    for (const target of targets) {
      const on = (e: Event) => {
        clearTimeout(timer);
        for (const off of offs) off();
        resolve([target, e]);
      };
      target.addEventListener(type, on);
      offs.push(() => target.removeEventListener(type, on));
    }
  });
}

function nextEvent(el: EventTarget, type: string, ms = 20000): Promise<Event> {
  return firstEvent([el], type, ms).then(([, e]) => e);
}

/** Resolves once `cond()` holds; checked every 50 ms, for at most `ms`. */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

serverTest(
  "smoke: the restricted service account creates, reads and updates a Lease; stale writes get 409; ungranted verbs get 403",
  async (_t, info) => {
    const ns = await freshNamespace(info, "smoke");
    const id = await podIdentity(info, ns, "smoke");
    const api = await leaseApiFor(id.dir, id.env, "smoke");
    assert.equal(await api.get(), undefined);
    const created = await api.create({
      metadata: {},
      spec: { holderIdentity: "a", leaseDurationSeconds: 15, renewTime: "2026-01-01T00:00:00.123456Z" },
    });
    assert.ok(created.metadata.resourceVersion);
    const read = await api.get();
    assert.equal(read?.spec?.holderIdentity, "a");
    assert.equal(read?.spec?.renewTime, "2026-01-01T00:00:00.123456Z");
    const updated = await api.update({ ...read!, spec: { ...read!.spec, holderIdentity: "b" } });
    assert.notEqual(updated.metadata.resourceVersion, read!.metadata.resourceVersion);
    // The PUT leaves managedFields out (a smaller renewal); the server keeps the stored ones.
    const managed = (m: unknown) => (m as { managedFields?: { manager?: string }[] }).managedFields ?? [];
    assert.ok(managed(read!.metadata).length > 0, "the server records managedFields");
    assert.deepEqual(managed(updated.metadata).map((f) => f.manager), managed(read!.metadata).map((f) => f.manager));
    await assert.rejects(api.update({ ...read!, spec: { ...read!.spec, holderIdentity: "c" } }), (e: unknown) => {
      assert.ok(isConflict(e), `expected 409 Conflict, got ${e}`);
      return true;
    });
    // The Role grants no delete: a 403 whose message names the verb to grant.
    const config = await inClusterConfig({ serviceAccountDir: id.dir, env: (k) => id.env[k as keyof typeof id.env] });
    const client = new KubeClient({
      server: config.server,
      fetch: await createFetch(config),
      tokenSource: config.tokenSource,
    });
    await assert.rejects(
      client.request("DELETE", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/smoke`, {
        intent: { verb: "delete", resource: "leases.coordination.k8s.io", namespace: ns, name: "smoke" },
      }),
      (e: unknown) => {
        assert.ok(e instanceof KubeApiError && e.code === 403 && e.reason === "Forbidden", `expected 403, got ${e}`);
        assert.match((e as Error).message, /verbs \["delete"\]/);
        return true;
      },
    );
    const other = await leaseApiFor(id.dir, id.env, "not-granted");
    await assert.rejects(other.get(), (e: unknown) => {
      assert.ok(e instanceof KubeApiError && e.code === 403, `expected 403, got ${e}`);
      assert.match((e as Error).message, /verbs \["get"\]/);
      assert.match((e as Error).message, /resourceNames \["not-granted"\]/);
      assert.match((e as Error).message, new RegExp(`namespace "${ns}"`));
      return true;
    });
  },
);

serverTest(
  "MicroTime with three fractional digits is rejected by the real API server; ours is accepted",
  async (_t, info) => {
    const ns = await freshNamespace(info, "micro");
    const id = await podIdentity(info, ns, "micro");
    const api = await leaseApiFor(id.dir, id.env, "micro");
    const millis = new Date().toISOString(); // three fractional digits, as Date gives them
    await assert.rejects(
      api.create({ metadata: {}, spec: { holderIdentity: "a", renewTime: millis } }),
      (e: unknown) => {
        assert.ok(e instanceof KubeApiError, `expected a KubeApiError, got ${e}`);
        assert.equal(e.code, 400);
        assert.equal(e.reason, "BadRequest");
        assert.equal(e.method, "POST");
        const frac = millis.slice(millis.lastIndexOf("."));
        assert.equal(
          e.serverMessage,
          `Lease in version "v1" cannot be handled as a Lease: parsing time "${millis}" as ` +
            `"2006-01-02T15:04:05.000000Z07:00": cannot parse "${frac}" as ".000000"`,
        );
        assert.equal(
          e.message,
          `400 BadRequest: create leases.coordination.k8s.io "micro" in namespace "${ns}" (server said: ${e.serverMessage})`,
        );
        return true;
      },
    );
    const ours = formatMicroTime(new Date());
    assert.match(ours, /\.\d{6}Z$/);
    await api.create({ metadata: {}, spec: { holderIdentity: "a", renewTime: ours } });
    assert.equal((await api.get())?.spec?.renewTime, ours);
  },
);

serverTest(
  "three candidates elect exactly one leader, which renews; graceful shutdown hands over by release, not expiry",
  async (_t, info) => {
    const ns = await freshNamespace(info, "three");
    const id = await podIdentity(info, ns, "three");
    const stops = [new AbortController(), new AbortController(), new AbortController()];
    const electors: LeaderElector[] = [];
    const working = new Set<string>();
    const events: string[] = [];
    let overlaps = 0;
    for (const name of ["a", "b", "c"]) {
      const e = new LeaderElector({
        lease: await leaseApiFor(id.dir, id.env, "three"),
        identity: name,
        ...NO_EXPIRY,
        onStartedLeading: async ({ signal }: LeaderContext) => {
          if (working.size > 0) overlaps++;
          working.add(name);
          await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
          working.delete(name);
        },
      });
      e.addEventListener("started", () => events.push(`${name} started`));
      e.addEventListener("stopped", () => events.push(`${name} stopped`));
      electors.push(e);
    }
    const firstLeader = firstEvent(electors, "started");
    const runs: Promise<void>[] = [];
    try {
      runs.push(...electors.map((e, i) => e.run(stops[i].signal)));
      await firstLeader;
      const leader = electors.find((e) => e.isLeader)!;
      const followers = electors.filter((e) => e !== leader);
      assert.equal(electors.filter((e) => e.isLeader).length, 1);
      const api = await leaseApiFor(id.dir, id.env, "three");
      const r1 = readRecord((await api.get())!);
      assert.ok(r1.ok);
      assert.equal(r1.record.holderIdentity, leader.identity);
      // The leader renews: the record's renewTime moves on while it stays the holder.
      let r2: RecordResult = r1;
      await until(async () => {
        r2 = readRecord((await api.get())!);
        return r2.ok && r2.record.renewTime !== r1.record.renewTime;
      }, "the leader renews");
      assert.ok(r2.ok);
      assert.equal(r2.record.holderIdentity, leader.identity);
      assert.equal(r2.record.leaseTransitions, r1.record.leaseTransitions, "a renewal keeps the term");
      assert.equal(electors.filter((e) => e.isLeader).length, 1);

      // Graceful hand-over: the lease cannot expire within the wait (NO_EXPIRY), so
      // a follower that starts leading at all took it because the leader released it.
      const next = firstEvent(followers, "started");
      stops[electors.indexOf(leader)].abort();
      const [successor] = await next;
      await runs[electors.indexOf(leader)];
      const r3 = readRecord((await api.get())!);
      assert.ok(r3.ok);
      assert.equal(r3.record.holderIdentity, successor.identity);
      assert.equal(r3.record.leaseTransitions, r2.record.leaseTransitions + 1);
      assert.deepEqual(
        events.slice(0, 3),
        [`${leader.identity} started`, `${leader.identity} stopped`, `${successor.identity} started`],
        "the old leader stopped (and released) before the next one started",
      );
      for (const s of stops) s.abort();
      await withTimeout(Promise.all(runs), 20000, "electors stop");
      assert.equal(overlaps, 0);
      assert.equal(readRecord((await api.get())!).ok, true);
    } finally {
      for (const s of stops) s.abort(); // also when an assertion failed: no elector outlives its test
      await Promise.all(runs);
    }
  },
);

serverTest(
  "a leader that stops without releasing (a crash) is replaced only after the lease expires",
  async (_t, info) => {
    const ns = await freshNamespace(info, "crash");
    const id = await podIdentity(info, ns, "crash");
    const aStop = new AbortController();
    const a = new LeaderElector({
      lease: await leaseApiFor(id.dir, id.env, "crash"),
      identity: "a",
      ...FAST,
      releaseOnCancel: false,
    });
    const bStop = new AbortController();
    const runs: Promise<void>[] = [];
    try {
      const aRun = a.run(aStop.signal);
      runs.push(aRun);
      await nextEvent(a, "started");
      const b = new LeaderElector({ lease: await leaseApiFor(id.dir, id.env, "crash"), identity: "b", ...FAST });
      const bSawA = new Promise<void>((resolve) =>
        b.addEventListener("newleader", (e) => (e as CustomEvent).detail === "a" && resolve())
      );
      let bStartedAt = 0;
      b.addEventListener("started", () => (bStartedAt = Date.now()));
      const bStarted = nextEvent(b, "started", 30000);
      bStarted.catch(() => {}); // awaited below; not an unhandled rejection if the test fails before that
      const bRun = b.run(bStop.signal);
      runs.push(bRun);
      await withTimeout(bSawA, 20000, "b sees a as the leader");
      assert.equal(b.isLeader, false);
      aStop.abort(); // stops renewing; the record stays "a"
      await aRun;
      const api = await leaseApiFor(id.dir, id.env, "crash");
      const last = readRecord((await api.get())!);
      assert.ok(last.ok);
      assert.equal(last.record.holderIdentity, "a", "a crash leaves the record in place");
      await bStarted;
      // b judges expiry from when it saw a's last renewal, which a wrote at renewTime
      // (the same machine's wall clock): b may not claim the lease before that plus leaseDuration.
      const expiresAt = Date.parse(last.record.renewTime!) + FAST.leaseDuration;
      assert.ok(
        bStartedAt >= expiresAt - 50,
        `b took over ${expiresAt - bStartedAt} ms before the lease of a expired`,
      );
      const now = readRecord((await api.get())!);
      assert.ok(now.ok);
      assert.equal(now.record.holderIdentity, "b");
      assert.equal(now.record.leaseTransitions, last.record.leaseTransitions + 1);
      bStop.abort();
      await bRun;
    } finally {
      aStop.abort(); // also when an assertion failed: no elector outlives its test
      bStop.abort();
      await Promise.all(runs);
    }
  },
);

serverTest("a 403 from a Role without update gives the RBAC fix and no leadership", async (_t, info) => {
  const ns = await freshNamespace(info, "noupd");
  const id = await podIdentity(info, ns, "noupd", { dropVerbs: ["update"] });
  // Someone else holds it, released: taking it needs update.
  await adminRequest(info, "POST", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`, {
    metadata: { name: "noupd" },
    spec: { holderIdentity: "", leaseDurationSeconds: 1 },
  });
  const errors: string[] = [];
  let forbidden!: () => void;
  const sawForbidden = new Promise<void>((r) => (forbidden = r));
  const note = (m: string, f?: Record<string, unknown>) => {
    errors.push(`${m} ${f?.error}`);
    if (String(f?.error).includes("Forbidden")) forbidden();
  };
  const logger: Logger = { debug() {}, info() {}, warn: note, error: note };
  const stop = new AbortController();
  const a = new LeaderElector({ lease: await leaseApiFor(id.dir, id.env, "noupd"), identity: "a", ...FAST, logger });
  const run = a.run(stop.signal);
  try {
    await withTimeout(sawForbidden, 20000, `a Forbidden error logged (saw: ${errors.join(" | ")})`);
  } finally {
    stop.abort();
    await run;
  }
  assert.equal(a.isLeader, false);
  assert.equal(a.stats.startedTotal, 0);
  const msg = errors.find((e) => e.includes("Forbidden"));
  assert.ok(msg, `no Forbidden error logged: ${errors.join(" | ")}`);
  assert.match(msg!, /verbs \["update"\]/);
  assert.match(msg!, /resources \["leases"\]/);
  assert.match(msg!, new RegExp(`namespace "${ns}"`));
});

serverTest("kubeconfig with a token file reaches the API server (out-of-cluster path)", async (_t, info) => {
  const ns = await freshNamespace(info, "kcfg");
  const id = await podIdentity(info, ns, "kcfg");
  const path = writeKubeconfig(info, id.dir, id.token, ns);
  const config = await kubeconfigConfig(path);
  assert.equal(config.namespace, ns);
  const api = await createLeaseApi(config, { name: "kcfg" });
  assert.equal(api.namespace, ns);
  assert.equal(await api.get(), undefined);
});

serverTest("a rotated token file is picked up after a 401", async (_t, info) => {
  const ns = await freshNamespace(info, "rot");
  const id = await podIdentity(info, ns, "rot");
  const original = await readFile(`${id.dir}/token`, "utf8");
  await writeFile(`${id.dir}/token`, "not-a-valid-token");
  const api = await leaseApiFor(id.dir, id.env, "rot"); // reads the bad token now
  await writeFile(`${id.dir}/token`, original); // the kubelet rotated it
  assert.equal(await api.get(), undefined, "the 401 made it re-read the token and retry");
  await writeFile(`${id.dir}/token`, "still-bad");
  const api2 = await leaseApiFor(id.dir, id.env, "rot");
  await assert.rejects(api2.get(), (e: unknown) => {
    assert.ok(e instanceof KubeApiError && e.code === 401);
    assert.match((e as Error).message, /token/);
    return true;
  });
});
