// Node: the built package (dist/, what npm users import) against the real API server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { apiServer, freshNamespace, podIdentity } from "../env/testenv.mjs";
import * as leasehold from "@leasehold/leasehold"; // the package itself, through its exports map

const { createLeaseApi, inClusterConfig, isConflict, KubeApiError, LeaderElector, readRecord } = leasehold;
const FAST = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };

async function leaseApiFor(id, name) {
  const config = await inClusterConfig({ serviceAccountDir: id.dir, env: (k) => id.env[k] });
  return createLeaseApi(config, { name, timeoutMs: 1500 });
}

function nextEvent(el, type, ms = 20000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`event ${type} not within ${ms} ms`)), ms);
    el.addEventListener(type, (e) => {
      clearTimeout(t);
      resolve(e);
    }, { once: true });
  });
}

test("node: the built package has no runtime dependency and picks the node:https transport", async () => {
  assert.equal(leasehold.runtimeKey(), "node");
  const pkg = JSON.parse(
    await import("node:fs").then((fs) => fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")),
  );
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), []);
});

test("node: create, read, update, 409 on a stale resourceVersion, 403 names the RBAC fix", async (t) => {
  const info = await apiServer();
  if (!info) return t.skip("real API server not available");
  const ns = await freshNamespace(info, "nsmoke");
  const id = await podIdentity(info, ns, "nsmoke");
  const api = await leaseApiFor(id, "nsmoke");
  assert.equal(await api.get(), undefined);
  await api.create({ metadata: {}, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } });
  const read = await api.get();
  await api.update({ ...read, spec: { ...read.spec, holderIdentity: "b" } });
  await assert.rejects(api.update({ ...read, spec: { ...read.spec, holderIdentity: "c" } }), (e) => isConflict(e));
  const other = await leaseApiFor(id, "other-lease");
  await assert.rejects(other.get(), (e) => {
    assert.ok(e instanceof KubeApiError && e.code === 403);
    assert.match(e.message, /verbs \["get"\]/);
    return true;
  });
});

test("node: three candidates elect one leader; graceful shutdown hands over", async (t) => {
  const info = await apiServer();
  if (!info) return t.skip("real API server not available");
  const ns = await freshNamespace(info, "nthree");
  const id = await podIdentity(info, ns, "nthree");
  const stops = ["a", "b", "c"].map(() => new AbortController());
  const electors = [];
  for (const name of ["a", "b", "c"]) {
    electors.push(
      new LeaderElector({
        lease: await leaseApiFor(id, "nthree"),
        identity: name,
        ...FAST,
        onStartedLeading: ({ signal }) => new Promise((r) => signal.addEventListener("abort", r, { once: true })),
      }),
    );
  }
  const first = Promise.race(electors.map((e) => nextEvent(e, "started")));
  const runs = electors.map((e, i) => e.run(stops[i].signal));
  await first;
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(electors.filter((e) => e.isLeader).length, 1);
  const leader = electors.find((e) => e.isLeader);
  const next = Promise.race(electors.filter((e) => e !== leader).map((e) => nextEvent(e, "started")));
  const t0 = performance.now();
  stops[electors.indexOf(leader)].abort();
  await next;
  assert.ok(performance.now() - t0 < 2000, "hand-over within about one retry period");
  const api = await leaseApiFor(id, "nthree");
  const rec = readRecord(await api.get());
  assert.ok(rec.ok);
  assert.notEqual(rec.record.holderIdentity, leader.identity);
  for (const s of stops) s.abort();
  await Promise.all(runs);
});
