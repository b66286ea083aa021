// The entrypoint: flag parsing (no server needed), then replicas as processes
// against the real API server, in-cluster style (token file + CA + env).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { helpText, main, parseArgs, parseDuration, resolveSettings } from "../lib/cli.ts";
import { ConfigError } from "../mod.ts";
import { adminRequest, apiServer, freshNamespace, podIdentity } from "./env/testenv.mjs";
import { freePort, startReplica } from "./env/replica.mjs";

const FAST = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"];
const none = () => undefined;

test("durations parse like Go's", () => {
  assert.equal(parseDuration("15s"), 15000);
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("1m30s"), 90000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("-1s"), -1000); // as in Go; the flags refuse negative values
  for (const bad of ["15", "s", "1d", ""]) assert.throws(() => parseDuration(bad), ConfigError);
});

test("flags beat environment, environment beats defaults; the command follows --", () => {
  const env: Record<string, string> = { LEASE_NAME: "from-env", POD_NAME: "pod-1", RETRY_PERIOD: "1s" };
  const o = parseArgs(["--lease-name=from-flag", "--", "worker", "--x"], (k) => env[k]);
  assert.equal(o.values["lease-name"], "from-flag");
  assert.equal(o.values["identity"], "pod-1");
  assert.equal(o.values["retry-period"], "1s");
  assert.equal(o.values["lease-duration"], "15s");
  assert.deepEqual(o.command, ["worker", "--x"]);
  const s = resolveSettings(o);
  assert.equal(s.retryPeriod, 1000);
  assert.equal(s.identity, "pod-1");
});

test("bad configuration is one clear error listing every problem", () => {
  assert.throws(() => parseArgs(["--nope"], none), /unknown flag --nope/);
  assert.throws(
    () => resolveSettings(parseArgs(["--lease-duration", "5s", "--renew-deadline", "8s"], none)),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /--lease-name \(LEASE_NAME\) is required/);
      assert.match(e.message, /leaseDuration \(5000 ms\) must be greater than renewDeadline \(8000 ms\)/);
      return true;
    },
  );
  assert.throws(() => resolveSettings(parseArgs(["--lease-name", "x", "--http-addr", "8080"], none)), /--http-addr/);
  assert.match(helpText(), /LEASE_NAME/);
});

test("main exits 2 with one line for bad flags and for a missing token", async () => {
  const lines: string[] = [];
  assert.equal(await main(["--bogus"], { write: (l) => lines.push(l), handleSignals: false, env: none }), 2);
  assert.equal(lines.length, 1);
  assert.match(JSON.parse(lines[0]).msg, /unknown flag --bogus/);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-empty-"));
  const env: Record<string, string> = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: "1" };
  const out: string[] = [];
  const code = await main(["--lease-name", "x", "--identity", "a", "--service-account-dir", dir], {
    write: (l) => out.push(l),
    handleSignals: false,
    env: (k) => env[k],
  });
  assert.equal(code, 2);
  const err = out.map((l) => JSON.parse(l)).find((l) => l.level === "error");
  assert.match(err.error, /ca\.crt|token/);
  assert.match(err.error, /service-account-dir|SERVICE_ACCOUNT_DIR/);
});

type Info = { url: string; host: string; port: number };

async function setup(t: { skip: (m: string) => void }, lease: string) {
  const info = (await apiServer()) as Info | undefined;
  if (!info) {
    t.skip("real API server not available");
    return undefined;
  }
  const ns = await freshNamespace(info, "cli");
  const id = await podIdentity(info, ns, lease);
  const env = { ...id.env, SERVICE_ACCOUNT_DIR: id.dir, LEASE_NAME: lease };
  return { info, ns, id, env };
}

const startedLeading = (l: { msg: string }) => l.msg === "started leading";

test("three replicas as processes: one leads; /healthz, /metrics and /leader answer; SIGTERM hands over by release, before expiry", async (t) => {
  const s = await setup(t, "procs");
  if (!s) return;
  const ports = await Promise.all([freePort(), freePort(), freePort()]);
  const rs = ["p0", "p1", "p2"].map((name, i) =>
    startReplica([...FAST, "--identity", name, "--http-addr", `127.0.0.1:${ports[i]}`], s.env, { name })
  );
  try {
    const first = await Promise.race(rs.map((r) => r.waitFor(startedLeading).then(() => r)));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(rs.filter((r) => r.lines.some(startedLeading)).length, 1, "exactly one leader");
    const port = ports[rs.indexOf(first)];
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /leader_election_master_status\{name="[^"]+\/procs"\} 1/);
    assert.match(metrics, /leader_election_slowpath_total\{name="[^"]+"\} \d+/);
    const other = rs.find((r) => r !== first)!;
    const otherMetrics = await (await fetch(`http://127.0.0.1:${ports[rs.indexOf(other)]}/metrics`)).text();
    assert.match(otherMetrics, /leader_election_master_status\{name="[^"]+"\} 0/);
    const leader = await (await fetch(`http://127.0.0.1:${ports[rs.indexOf(other)]}/leader`)).json();
    assert.equal(leader.holderIdentity, first.name);
    assert.equal(leader.isLeader, false);
    const root = await (await fetch(`http://127.0.0.1:${ports[rs.indexOf(other)]}/`)).json();
    assert.deepEqual(root, { name: first.name });

    const rest = rs.filter((r) => r !== first);
    const next = Promise.race(rest.map((r) => r.waitFor(startedLeading, 15000)));
    const t0 = performance.now();
    first.kill("SIGTERM");
    const line = await next;
    // Released, not expired: the follower took over before the 4 s leaseDuration could have run out.
    const handover = line.at - t0;
    assert.ok(handover < 4000, `hand-over after ${Math.round(handover)} ms: the release was not seen`);
    const exit = await first.exited;
    assert.equal((exit as { code: number }).code, 0);
    assert.ok(first.lines.some((l) => l.msg === "released the lease"));
  } finally {
    for (const r of rs) r.kill("SIGKILL");
    await Promise.all(rs.map((r) => r.exited));
  }
});

test("SIGKILL of the leader: a follower takes over once the lease expires, not before", async (t) => {
  const s = await setup(t, "crash");
  if (!s) return;
  const a = startReplica([...FAST, "--identity", "a"], s.env, { name: "a" });
  await a.waitFor(startedLeading);
  const b = startReplica([...FAST, "--identity", "b"], s.env, { name: "b" });
  try {
    await b.waitFor((l) => l.msg === "new leader" && l.leader === "a");
    const t0 = performance.now();
    a.kill("SIGKILL");
    const line = await b.waitFor(startedLeading, 15000);
    const waited = line.at - t0;
    assert.ok(waited >= 2500, `took over ${Math.round(waited)} ms after the crash: before expiry`);
    assert.ok(waited <= 6500, `took over ${Math.round(waited)} ms after the crash`);
  } finally {
    a.kill("SIGKILL");
    b.kill("SIGKILL");
    await Promise.all([a.exited, b.exited]);
  }
});

test("sidecar mode: the command runs only while leading, gets the fencing token, and is stopped on SIGTERM", async (t) => {
  const s = await setup(t, "side");
  if (!s) return;
  const dir = await mkdtemp(join(tmpdir(), "leasehold-side-"));
  const marker = join(dir, "running");
  const script =
    `echo "$LEASEHOLD_FENCING_TOKEN" > ${marker}.tmp && mv ${marker}.tmp ${marker}; trap 'rm -f ${marker}; exit 0' TERM; while true; do sleep 0.1; done`;
  const a = startReplica([...FAST, "--identity", "a", "--", "sh", "-c", script], s.env, { name: "a" });
  try {
    await a.waitFor((l) => l.msg === "started command");
    for (let i = 0; i < 50 && !existsSync(marker); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(readFileSync(marker, "utf8").trim(), "0/a");
    a.kill("SIGTERM");
    const exit = await a.exited;
    assert.equal((exit as { code: number }).code, 0);
    assert.equal(existsSync(marker), false, "the command was stopped before leasehold exited");
    const lease = await adminRequest(s.info, "GET", `/apis/coordination.k8s.io/v1/namespaces/${s.ns}/leases/side`);
    assert.equal(lease.spec.holderIdentity, "", "released after the command stopped");
  } finally {
    a.kill("SIGKILL");
  }
});

test("sidecar mode: a command that exits on its own releases the lease and passes on its status", async (t) => {
  const s = await setup(t, "exits");
  if (!s) return;
  const a = startReplica([...FAST, "--identity", "a", "--", "sh", "-c", "sleep 0.3; exit 7"], s.env, { name: "a" });
  const exit = await a.exited;
  assert.equal((exit as { code: number }).code, 7);
  const lease = await adminRequest(s.info, "GET", `/apis/coordination.k8s.io/v1/namespaces/${s.ns}/leases/exits`);
  assert.equal(lease.spec.holderIdentity, "");
});
