// Integration tests against the real kube-apiserver + etcd from tests/apiserver,
// through the in-cluster path (token file + CA) with the Role from deploy/rbac.yaml.
// Runs under Deno and Bun; tests/node/integration.test.mjs covers Node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import {
  inClusterConfig,
  isConflict,
  KubeApiError,
  kubeconfigConfig,
  type LeaderContext,
  LeaderElector,
  type Logger,
  readRecord,
} from "../mod.ts";
import { createFetch, createLeaseApi, KubeClient } from "../mod.ts";
import { adminRequest, apiServer, freshNamespace, podIdentity, writeKubeconfig } from "./env/testenv.mjs";

const FAST = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };

type Info = { url: string; host: string; port: number; caFile: string; adminToken: string };

async function env(t: { skip: (m: string) => void }): Promise<Info | undefined> {
  const info = await apiServer();
  if (!info) t.skip("real API server not available (see the message above)");
  return info;
}

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

function nextEvent(el: EventTarget, type: string, ms = 20000): Promise<Event> {
  return withTimeout(new Promise((r) => el.addEventListener(type, r, { once: true })), ms, `event ${type}`);
}

test("smoke: the restricted service account creates, reads and updates a Lease; stale writes get 409; ungranted verbs get 403", async (t) => {
  const info = await env(t);
  if (!info) return;
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
});

test("MicroTime with three fractional digits is rejected by the real API server; ours is accepted", async (t) => {
  const info = await env(t);
  if (!info) return;
  const ns = await freshNamespace(info, "micro");
  const id = await podIdentity(info, ns, "micro");
  const api = await leaseApiFor(id.dir, id.env, "micro");
  await assert.rejects(
    api.create({ metadata: {}, spec: { holderIdentity: "a", renewTime: new Date().toISOString() } }),
    (e: unknown) => e instanceof KubeApiError && e.code >= 400,
  );
});

test("three candidates elect exactly one leader, which renews; graceful shutdown hands over at once", async (t) => {
  const info = await env(t);
  if (!info) return;
  const ns = await freshNamespace(info, "three");
  const id = await podIdentity(info, ns, "three");
  const stops = [new AbortController(), new AbortController(), new AbortController()];
  const electors: LeaderElector[] = [];
  const working = new Set<string>();
  let overlaps = 0;
  for (const [i, name] of ["a", "b", "c"].entries()) {
    electors.push(
      new LeaderElector({
        lease: await leaseApiFor(id.dir, id.env, "three"),
        identity: name,
        ...FAST,
        onStartedLeading: async ({ signal }: LeaderContext) => {
          if (working.size > 0) overlaps++;
          working.add(name);
          await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
          working.delete(name);
        },
      }),
    );
    void i;
  }
  const firstLeader = Promise.race(electors.map((e) => nextEvent(e, "started")));
  const runs = electors.map((e, i) => e.run(stops[i].signal));
  await firstLeader;
  const leader = electors.find((e) => e.isLeader)!;
  assert.equal(electors.filter((e) => e.isLeader).length, 1);
  const api = await leaseApiFor(id.dir, id.env, "three");
  const r1 = readRecord((await api.get())!);
  await new Promise((r) => setTimeout(r, 1200));
  const r2 = readRecord((await api.get())!);
  assert.ok(r1.ok && r2.ok);
  assert.equal(r2.record.holderIdentity, leader.identity);
  assert.notEqual(r2.record.renewTime, r1.record.renewTime, "the leader renews");
  assert.equal(electors.filter((e) => e.isLeader).length, 1);

  // Graceful hand-over: the next leader starts soon after the release (followers watch).
  const next = Promise.race(electors.filter((e) => e !== leader).map((e) => nextEvent(e, "started")));
  const t0 = performance.now();
  stops[electors.indexOf(leader)].abort();
  await next;
  const handover = performance.now() - t0;
  assert.ok(handover < FAST.retryPeriod * 2.2 + 500, `hand-over took ${Math.round(handover)} ms`);
  const r3 = readRecord((await api.get())!);
  assert.ok(r3.ok);
  assert.equal(r3.record.leaseTransitions, r2.record.leaseTransitions + 1);
  for (const s of stops) s.abort();
  await withTimeout(Promise.all(runs), 20000, "electors stop");
  assert.equal(overlaps, 0);
  assert.equal(readRecord((await api.get())!).ok, true);
});

test("a leader that stops without releasing (a crash) is replaced only after the lease expires", async (t) => {
  const info = await env(t);
  if (!info) return;
  const ns = await freshNamespace(info, "crash");
  const id = await podIdentity(info, ns, "crash");
  const aStop = new AbortController();
  const a = new LeaderElector({
    lease: await leaseApiFor(id.dir, id.env, "crash"),
    identity: "a",
    ...FAST,
    releaseOnCancel: false,
  });
  const aRun = a.run(aStop.signal);
  await nextEvent(a, "started");
  const bStop = new AbortController();
  const b = new LeaderElector({ lease: await leaseApiFor(id.dir, id.env, "crash"), identity: "b", ...FAST });
  const bRun = b.run(bStop.signal);
  await new Promise((r) => setTimeout(r, 800));
  const t0 = performance.now();
  aStop.abort(); // stops renewing; the record stays "a"
  await aRun;
  await nextEvent(b, "started", 15000);
  const waited = performance.now() - t0;
  assert.ok(waited >= FAST.leaseDuration - 1000, `took over after ${Math.round(waited)} ms, before expiry`);
  assert.ok(waited <= FAST.leaseDuration + 2500, `took over after ${Math.round(waited)} ms`);
  bStop.abort();
  await bRun;
});

test("a 403 from a Role without update gives the RBAC fix and no leadership", async (t) => {
  const info = await env(t);
  if (!info) return;
  const ns = await freshNamespace(info, "noupd");
  const id = await podIdentity(info, ns, "noupd", { dropVerbs: ["update"] });
  // Someone else holds it, released: taking it needs update.
  await adminRequest(info, "POST", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`, {
    metadata: { name: "noupd" },
    spec: { holderIdentity: "", leaseDurationSeconds: 1 },
  });
  const errors: string[] = [];
  const logger: Logger = {
    debug() {},
    info() {},
    warn: (m, f) => errors.push(`${m} ${f?.error}`),
    error: (m, f) => errors.push(`${m} ${f?.error}`),
  };
  const stop = new AbortController();
  const a = new LeaderElector({ lease: await leaseApiFor(id.dir, id.env, "noupd"), identity: "a", ...FAST, logger });
  const run = a.run(stop.signal);
  const t0 = performance.now();
  while (!errors.some((e) => e.includes("Forbidden")) && performance.now() - t0 < 10000) {
    await new Promise((r) => setTimeout(r, 50));
  }
  stop.abort();
  await run;
  assert.equal(a.isLeader, false);
  assert.equal(a.stats.startedTotal, 0);
  const msg = errors.find((e) => e.includes("Forbidden"));
  assert.ok(msg, `no Forbidden error logged: ${errors.join(" | ")}`);
  assert.match(msg!, /verbs \["update"\]/);
  assert.match(msg!, /resources \["leases"\]/);
  assert.match(msg!, new RegExp(`namespace "${ns}"`));
});

test("kubeconfig with a token file reaches the API server (out-of-cluster path)", async (t) => {
  const info = await env(t);
  if (!info) return;
  const ns = await freshNamespace(info, "kcfg");
  const id = await podIdentity(info, ns, "kcfg");
  const path = writeKubeconfig(info, id.dir, id.token, ns);
  const config = await kubeconfigConfig(path);
  assert.equal(config.namespace, ns);
  const api = await createLeaseApi(config, { name: "kcfg" });
  assert.equal(api.namespace, ns);
  assert.equal(await api.get(), undefined);
});

test("a rotated token file is picked up after a 401", async (t) => {
  const info = await env(t);
  if (!info) return;
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
