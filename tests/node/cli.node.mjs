// Node: the built entrypoint (dist/lib/cli.js) as processes against the real API server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { adminRequest, apiServer, freshNamespace, podIdentity } from "../env/testenv.mjs";
import { freePort, startReplica } from "../env/replica.mjs";

const FAST = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"];
const startedLeading = (l) => l.msg === "started leading";

async function setup(t, lease) {
  const info = await apiServer();
  if (!info) {
    t.skip("real API server not available");
    return undefined;
  }
  const ns = await freshNamespace(info, "ncli");
  const id = await podIdentity(info, ns, lease);
  return { info, ns, env: { ...id.env, SERVICE_ACCOUNT_DIR: id.dir, LEASE_NAME: lease } };
}

test("node entrypoint: two replicas, one leads, /healthz answers, SIGTERM hands over", async (t) => {
  const s = await setup(t, "nprocs");
  if (!s) return;
  const port = await freePort();
  const a = startReplica([...FAST, "--identity", "a", "--http-addr", `127.0.0.1:${port}`], s.env, { name: "a" });
  try {
    await a.waitFor(startedLeading);
    const b = startReplica([...FAST, "--identity", "b"], s.env, { name: "b" });
    await b.waitFor((l) => l.msg === "new leader" && l.leader === "a");
    const h = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(h.status, 200);
    await h.text();
    const t0 = performance.now();
    a.kill("SIGTERM");
    const line = await b.waitFor(startedLeading, 15000);
    assert.ok(line.at - t0 < 1000, `hand-over took ${Math.round(line.at - t0)} ms`);
    assert.equal((await a.exited).code, 0);
    b.kill("SIGTERM");
    assert.equal((await b.exited).code, 0);
  } finally {
    a.kill("SIGKILL");
  }
});

test("node entrypoint: a command that exits on its own releases the lease and passes on its status", async (t) => {
  const s = await setup(t, "nexits");
  if (!s) return;
  const a = startReplica([...FAST, "--identity", "a", "--", "sh", "-c", "exit 3"], s.env, { name: "a" });
  assert.equal((await a.exited).code, 3);
  const lease = await adminRequest(s.info, "GET", `/apis/coordination.k8s.io/v1/namespaces/${s.ns}/leases/nexits`);
  assert.equal(lease.spec.holderIdentity, "");
});

test("node entrypoint: SIGKILL of the leader hands over only after the lease expires", async (t) => {
  const s = await setup(t, "ncrash");
  if (!s) return;
  const a = startReplica([...FAST, "--identity", "a"], s.env, { name: "a" });
  const b = startReplica([...FAST, "--identity", "b"], s.env, { name: "b" });
  try {
    const first = await Promise.race([a, b].map((r) => r.waitFor(startedLeading).then(() => r)));
    const other = first === a ? b : a;
    await other.waitFor((l) => l.msg === "new leader" && l.leader === first.name);
    const t0 = performance.now();
    first.kill("SIGKILL");
    const line = await other.waitFor(startedLeading, 15000);
    const waited = line.at - t0;
    assert.ok(waited >= 2500 && waited <= 6500, `took over ${Math.round(waited)} ms after the crash`);
  } finally {
    a.kill("SIGKILL");
    b.kill("SIGKILL");
  }
});
