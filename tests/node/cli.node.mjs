// Node: the built entrypoint (dist/lib/cli.js) as processes against the real API server.
import { test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
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
    // Released, not expired: b took over before the 4 s leaseDuration could have run out.
    assert.ok(line.at - t0 < 4000, `hand-over after ${Math.round(line.at - t0)} ms: the release was not seen`);
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

const isAlive = (pid) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0]);
  } catch {
    return false;
  }
};
const readLines = (path) => (existsSync(path) ? readFileSync(path, "utf8").trim().split("\n") : []);
async function until(cond, what, ms = 15000) {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("node entrypoint: sidecar with two replicas; only the leader runs the command; its whole group stops", async (t) => {
  const s = await setup(t, "nside");
  if (!s) return;
  const dir = await mkdtemp(join(tmpdir(), "leasehold-nside-"));
  const log = join(dir, "work.log");
  const pids = join(dir, "pids");
  // The command records start/stop; the process it starts ignores SIGTERM, so only a SIGKILL to the group ends it.
  const script = `trap 'echo "stop $LEASEHOLD_HOLDER_IDENTITY" >> ${log}; exit 0' TERM; ` +
    `echo "start $LEASEHOLD_HOLDER_IDENTITY $LEASEHOLD_FENCING_TOKEN" >> ${log}; ` +
    `sh -c "trap '' TERM; echo \\$\\$ >> ${pids}; exec sleep 1000" & while :; do sleep 0.05; done`;
  const a = startReplica([...FAST, "--identity", "a", "--", "sh", "-c", script], s.env, { name: "a" });
  let b;
  try {
    await a.waitFor((l) => l.msg === "started command");
    b = startReplica([...FAST, "--identity", "b", "--", "sh", "-c", script], s.env, { name: "b" });
    await b.waitFor((l) => l.msg === "new leader" && l.leader === "a");
    await until(() => readLines(pids).length === 1, "a's command to start its child");
    a.kill("SIGTERM");
    assert.equal((await a.exited).code, 0);
    assert.equal(isAlive(Number(readLines(pids)[0])), false, "a's command's child outlived a");
    await b.waitFor((l) => l.msg === "started command");
    await until(() => readLines(pids).length === 2, "b's command to start its child");
    b.kill("SIGHUP");
    assert.deepEqual(await b.exited, { code: 129, signal: null });
    assert.equal(isAlive(Number(readLines(pids)[1])), false, "b's command's child outlived b");
    assert.deepEqual(readLines(log), ["start a 0/a", "stop a", "start b 1/b", "stop b"]);
  } finally {
    a.kill("SIGKILL");
    b?.kill("SIGKILL");
    for (const pid of readLines(pids).map(Number)) if (isAlive(pid)) process.kill(pid, "SIGKILL");
  }
});
