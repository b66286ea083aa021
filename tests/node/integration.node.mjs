// Node: the built package (dist/, what npm users import) against the real API server.
// Without the server the server tests are reported as skipped (under CI=true they
// fail): see tests/support/needs_server.mjs. No fixed waits and no clock bounds on
// hand-overs: the tests wait for events and check their order.
import { test } from "../support/guard.mjs";
import { serverTest } from "../support/needs_server.mjs";
import assert from "node:assert/strict";
import { freshNamespace, podIdentity } from "../env/testenv.mjs";
import * as leasehold from "@leasehold/leasehold"; // the package itself, through its exports map

const { createLeaseApi, inClusterConfig, isConflict, KubeApiError, LeaderElector, readRecord } = leasehold;
// A lease that cannot expire while a test waits for an event (20 s): a takeover
// seen at all under it came from a release, not from expiry.
const NO_EXPIRY = { leaseDuration: 60000, renewDeadline: 40000, retryPeriod: 500 };

async function leaseApiFor(id, name) {
  const config = await inClusterConfig({ serviceAccountDir: id.dir, env: (k) => id.env[k] });
  return createLeaseApi(config, { name, timeoutMs: 1500 });
}

/** The first `type` event from any of `targets` (listeners and timer removed once it comes), as [target, event]. */
function firstEvent(targets, type, ms = 20000) {
  return new Promise((resolve, reject) => {
    const offs = [];
    const timer = setTimeout(() => {
      for (const off of offs) off();
      reject(new Error(`event ${type} not within ${ms} ms`));
    }, ms);
    for (const target of targets) {
      const on = (e) => {
        clearTimeout(timer);
        for (const off of offs) off();
        resolve([target, e]);
      };
      target.addEventListener(type, on);
      offs.push(() => target.removeEventListener(type, on));
    }
  });
}

/** Resolves once `cond()` holds; checked every 50 ms, for at most `ms`. */
async function until(cond, what, ms = 20000) {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("node: the built package has no runtime dependency and picks the node:https transport", async () => {
  assert.equal(leasehold.runtimeKey(), "node");
  const pkg = JSON.parse(
    await import("node:fs").then((fs) => fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")),
  );
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), []);
});

serverTest("node: create, read, update, 409 on a stale resourceVersion, 403 names the RBAC fix", async (_t, info) => {
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

serverTest("node: three candidates elect one leader; graceful shutdown hands over by release", async (_t, info) => {
  const ns = await freshNamespace(info, "nthree");
  const id = await podIdentity(info, ns, "nthree");
  const stops = ["a", "b", "c"].map(() => new AbortController());
  const electors = [];
  const events = [];
  const seen = new Map();
  const runs = [];
  try {
    for (const name of ["a", "b", "c"]) {
      const e = new LeaderElector({
        lease: await leaseApiFor(id, "nthree"),
        identity: name,
        ...NO_EXPIRY,
        onStartedLeading: ({ signal }) => new Promise((r) => signal.addEventListener("abort", r, { once: true })),
      });
      e.addEventListener("started", () => events.push(`${name} started`));
      e.addEventListener("stopped", () => events.push(`${name} stopped`));
      seen.set(e, []);
      e.addEventListener("newleader", (ev) => seen.get(e).push(ev.detail));
      electors.push(e);
    }
    const first = firstEvent(electors, "started");
    runs.push(...electors.map((e, i) => e.run(stops[i].signal)));
    const [leader] = await first;
    const followers = electors.filter((e) => e !== leader);
    // Every follower has seen the leader's record: still exactly one leader.
    await until(() => followers.every((f) => seen.get(f).includes(leader.identity)), "the followers see the leader");
    assert.deepEqual(electors.filter((e) => e.isLeader), [leader]);
    const api = await leaseApiFor(id, "nthree");
    const before = readRecord(await api.get());
    assert.ok(before.ok);
    // The lease cannot expire within the wait (NO_EXPIRY): a takeover came from the release.
    const next = firstEvent(followers, "started");
    stops[electors.indexOf(leader)].abort();
    const [successor] = await next;
    await runs[electors.indexOf(leader)];
    const rec = readRecord(await api.get());
    assert.ok(rec.ok);
    assert.equal(rec.record.holderIdentity, successor.identity);
    assert.equal(rec.record.leaseTransitions, before.record.leaseTransitions + 1);
    assert.deepEqual(events.slice(0, 3), [
      `${leader.identity} started`,
      `${leader.identity} stopped`,
      `${successor.identity} started`,
    ]);
  } finally {
    for (const s of stops) s.abort();
    await Promise.all(runs);
  }
});
