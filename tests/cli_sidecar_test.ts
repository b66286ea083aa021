// Sidecar mode against the in-memory Lease server, with real commands: the
// follower never runs the command, the whole process group is stopped (SIGTERM,
// then SIGKILL after the child grace), exit statuses for every signal, spawn
// failure, the command restarted when leadership returns, and leasehold's own
// exit never orphaning the command. Synchronised on log lines and exit statuses.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import process from "node:process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { CommandSupervisor, killAllGroupsSync, main } from "../lib/cli.ts";
import { jsonLogger, LeadershipLostError } from "../mod.ts";
import { type LeaseServer, startLeaseServer } from "./support/lease_server.ts";
import { entrypointCommand, startReplica } from "./env/replica.mjs";
import { kubeconfigFor } from "./support/kubeconfig_file.ts";

const FAST = ["--lease-duration", "2s", "--renew-deadline", "1s", "--retry-period", "250ms"];
type Line = Record<string, unknown> & { msg: string; level: string };

/** Log lines with waiters: `waitFor` resolves on the first matching line, past or future. */
function lineLog() {
  const lines: Line[] = [];
  let waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  return {
    lines,
    write(text: string) {
      const l = JSON.parse(text) as Line;
      lines.push(l);
      waiters = waiters.filter((w) => (w.pred(l) ? (w.resolve(l), false) : true));
    },
    waitFor(pred: (l: Line) => boolean): Promise<Line> {
      const hit = lines.find(pred);
      return hit ? Promise.resolve(hit) : new Promise((resolve) => waiters.push({ pred, resolve }));
    },
  };
}

function kubeconfigForServer(server: LeaseServer): Promise<string> {
  return kubeconfigFor(server.url, "leasehold-sidecar-");
}

/** One in-process replica: main() with its own stop signal and log. */
function replica(kubeconfig: string, identity: string, args: string[], command?: string[]) {
  const stop = new AbortController();
  const log = lineLog();
  const argv = ["--lease-name", "side", "--identity", identity, "--kubeconfig", kubeconfig, ...FAST, ...args];
  const exited = main(command ? [...argv, "--", ...command] : argv, {
    write: log.write,
    handleSignals: false,
    env: () => undefined,
    signal: stop.signal,
  });
  return { ...log, exited, stop: () => stop.abort() };
}

/** Whether `pid` is a live process (a zombie awaiting its reaper is not). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0]);
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, what: string, ms = 15000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const readLines = (path: string) => (existsSync(path) ? readFileSync(path, "utf8").trim().split("\n") : []);

/** A command that appends "start <identity> <token>" and, on SIGTERM, "stop <identity>" to `log`. */
const recorder = (log: string) => [
  "sh",
  "-c",
  `trap 'echo "stop $LEASEHOLD_HOLDER_IDENTITY" >> ${log}; exit 0' TERM; ` +
  `echo "start $LEASEHOLD_HOLDER_IDENTITY $LEASEHOLD_FENCING_TOKEN" >> ${log}; while :; do sleep 0.05; done`,
];

test("two replicas: the follower never runs the command; it starts only after the leader's stopped", async () => {
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-two-"));
  const log = join(dir, "work.log");
  const a = replica(kc, "a", [], recorder(log));
  const b = { current: undefined as ReturnType<typeof replica> | undefined };
  try {
    await a.waitFor((l) => l.msg === "started command");
    b.current = replica(kc, "b", [], recorder(log));
    await b.current.waitFor((l) => l.msg === "new leader" && l.leader === "a");
    // Let the leader renew a few times while b follows.
    const puts = server.countBy("PUT");
    await until(() => server.countBy("PUT") >= puts + 3, "three renewals");
    assert.equal(b.current.lines.filter((l) => l.msg === "started command").length, 0, "the follower ran the command");
    assert.deepEqual(readLines(log), ["start a 0/a"]);
    a.stop();
    assert.equal(await a.exited, 0);
    await b.current.waitFor((l) => l.msg === "started command");
    await until(() => readLines(log).length >= 3, "b's command to start");
    assert.deepEqual(readLines(log), ["start a 0/a", "stop a", "start b 1/b"]);
    b.current.stop();
    assert.equal(await b.current.exited, 0);
    assert.deepEqual(readLines(log), ["start a 0/a", "stop a", "start b 1/b", "stop b"]);
  } finally {
    a.stop();
    b.current?.stop();
    await Promise.all([a.exited, b.current?.exited]);
    await server.close();
  }
});

test("the command's whole process group is stopped: a sh -c wrapper's child dies too, by SIGKILL after the grace", async () => {
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-group-"));
  const pids = join(dir, "pids");
  // The wrapper exits on SIGTERM; its child ignores SIGTERM, so only a SIGKILL to the group ends it.
  // The child writes its pid only once it ignores SIGTERM.
  const inner = `trap '' TERM; echo \\$\\$ > ${pids}; exec sleep 1000`;
  const script = `trap 'exit 0' TERM; sh -c "${inner}" & while :; do sleep 0.05; done`;
  const a = replica(kc, "a", ["--child-grace", "300ms"], ["sh", "-c", script]);
  try {
    await a.waitFor((l) => l.msg === "started command");
    await until(() => readLines(pids).length === 1, "the wrapper's child to start");
    const grandchild = Number(readLines(pids)[0]);
    assert.ok(isAlive(grandchild));
    a.stop();
    assert.equal(await a.exited, 0);
    assert.equal(isAlive(grandchild), false, "the wrapper's child outlived leasehold");
    const msgs = a.lines.map((l) => l.msg);
    const stopping = a.lines.find((l) => l.msg === "stopping command")!;
    assert.equal(stopping.signal, "SIGTERM");
    assert.equal(stopping.graceMs, 300);
    assert.ok(
      msgs.indexOf("command did not stop in time; killing its process group") > msgs.indexOf("stopping command"),
    );
    assert.ok(
      msgs.indexOf("released the lease") > msgs.indexOf("command did not stop in time; killing its process group"),
    );
  } finally {
    a.stop();
    await a.exited;
    await server.close();
  }
});

test("a command killed by any signal n gives status 128+n; one that cannot start gives 127", async () => {
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const signals = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL"]
    .concat(["SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGXCPU", "SIGSYS"]);
  try {
    for (const sig of signals) {
      const n = (constants.signals as Record<string, number>)[sig];
      const a = replica(kc, "a", [], ["sh", "-c", `ulimit -c 0; kill -${sig.slice(3)} $$; sleep 5`]);
      assert.equal(await a.exited, 128 + n, sig);
      const exit = a.lines.find((l) => l.msg === "command exited")!;
      assert.equal(exit.signal, sig);
    }
    const a = replica(kc, "a", [], ["/nonexistent/leasehold-test-command"]);
    assert.equal(await a.exited, 127);
    assert.ok(a.lines.some((l) => l.msg === "cannot start command" && l.level === "error"));
    assert.equal((server.leases().get("default/side") as { spec: { holderIdentity: string } }).spec.holderIdentity, "");
  } finally {
    await server.close();
  }
});

test("the command is stopped when leadership is lost and started again, with the new token, when it returns", async () => {
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-again-"));
  const log = join(dir, "work.log");
  const a = replica(kc, "a", [], recorder(log));
  try {
    await a.waitFor((l) => l.msg === "started command");
    type Spec = Record<string, unknown> & { leaseTransitions: number };
    const current = server.leases().get("default/side") as { spec: Spec };
    const now = new Date().toISOString().replace("Z", "000Z");
    server.put("default", "side", {
      ...current,
      spec: { ...current.spec, holderIdentity: "intruder", renewTime: now, leaseTransitions: 1 },
    });
    await a.waitFor((l) => l.msg === "command exited");
    assert.equal(a.lines.filter((l) => l.msg === "started command").length, 1);
    // The intruder lets go; a takes the Lease again and restarts the command.
    const taken = server.leases().get("default/side") as { spec: Spec };
    server.put("default", "side", { ...taken, spec: { ...taken.spec, holderIdentity: "", leaseDurationSeconds: 1 } });
    await until(() => a.lines.filter((l) => l.msg === "started command").length === 2, "the second start");
    await until(() => readLines(log).length === 3, "the second command to write");
    assert.deepEqual(readLines(log), ["start a 0/a", "stop a", "start a 2/a"]);
    a.stop();
    assert.equal(await a.exited, 0);
  } finally {
    a.stop();
    await a.exited;
    await server.close();
  }
});

/** A context as the elector hands it to the work. */
function term(value: string) {
  const ctl = new AbortController();
  return {
    ctl,
    ctx: {
      signal: ctl.signal,
      fencingToken: { holderIdentity: "a", leaseTransitions: 0, resourceVersion: "1", acquireTime: "", value },
    },
  };
}

test("the SIGKILL comes within graceMs of the term's abort reason, minus the margin; else after the child grace", async () => {
  const log = lineLog();
  const sup = new CommandSupervisor({
    command: ["sleep", "1000"],
    childGrace: 4000,
    margin: (w) => Math.min(1000, w / 5),
    log: jsonLogger(log.write, "debug"),
  });
  try {
    const t1 = term("0/a");
    const done1 = sup.run(t1.ctx, () => assert.fail("no exit while leading"));
    await log.waitFor((l) => l.msg === "started command");
    const reason = Object.assign(new LeadershipLostError("renew-deadline", "lost"), { graceMs: 600 });
    t1.ctl.abort(reason);
    await done1;
    assert.equal(log.lines.find((l) => l.msg === "stopping command")!.graceMs, 480);
    const t2 = term("1/a");
    const done2 = sup.run(t2.ctx, () => assert.fail("no exit while leading"));
    await log.waitFor((l) => l.msg === "started command" && l !== log.lines.find((x) => x.msg === "started command"));
    t2.ctl.abort(new LeadershipLostError("shutdown", "stopping", 60000)); // more time than the child grace
    await done2;
    assert.equal(log.lines.filter((l) => l.msg === "stopping command")[1].graceMs, 4000);
  } finally {
    killAllGroupsSync(); // a failed assertion leaves nothing running
  }
});

test("no new term starts the command while the last term's process group still runs", async () => {
  const ready = join(await mkdtemp(join(tmpdir(), "leasehold-term-")), "ready");
  const log = lineLog();
  const sup = new CommandSupervisor({
    command: ["sh", "-c", `trap '' TERM; echo > ${ready}; while :; do sleep 0.05; done`],
    childGrace: 300,
    margin: () => 0,
    log: jsonLogger(log.write, "debug"),
  });
  try {
    const t1 = term("0/a");
    const done1 = sup.run(t1.ctx, () => {});
    await until(() => existsSync(ready), "the command to ignore SIGTERM");
    t1.ctl.abort(new LeadershipLostError("renew-deadline", "lost"));
    assert.equal(sup.stopping, true);
    const t2 = term("1/a");
    const done2 = sup.run(t2.ctx, () => assert.fail("no exit while leading"));
    await log.waitFor((l) => l.msg === "started command" && l !== log.lines.find((x) => x.msg === "started command"));
    await done1;
    const msgs = log.lines.map((l) => l.msg);
    assert.deepEqual(msgs, [
      "started command",
      "stopping command",
      "waiting for the last term's command to stop before starting it again",
      "command did not stop in time; killing its process group",
      "command exited",
      "started command",
    ]);
    t2.ctl.abort(new LeadershipLostError("shutdown", "stopping"));
    await done2;
    assert.equal(sup.stopping, false);
  } finally {
    killAllGroupsSync(); // a failed assertion leaves nothing running
  }
});

test("leasehold's own signals: SIGHUP/SIGQUIT exit 128+n after a clean shutdown, SIGTERM/SIGINT 0; a second signal kills the command at once", async () => {
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-sig-"));
  const pidFile = join(dir, "pid");
  const base = ["--lease-name", "sig", "--identity", "a", "--kubeconfig", kc, ...FAST];
  try {
    for (const [sig, code] of [["SIGHUP", 129], ["SIGQUIT", 131], ["SIGTERM", 0], ["SIGINT", 0]] as const) {
      const a = startReplica(base, {}, { name: "a" });
      await a.waitFor((l: Line) => l.msg === "started leading");
      a.kill(sig);
      assert.deepEqual(await a.exited, { code, signal: null }, sig);
      assert.ok(a.lines.some((l: Line) => l.msg === "released the lease"), sig);
    }

    // The command ignores SIGTERM; a second signal must not leave it running after leasehold exits.
    const script = `echo $$ > ${pidFile}; trap '' TERM; while :; do sleep 0.05; done`;
    const slow = base.filter((_, i) => i < 6); // default timings: a child grace of 4 s
    const b = startReplica([...slow, "--", "sh", "-c", script], {}, { name: "b" });
    await b.waitFor((l: Line) => l.msg === "started command");
    await until(() => readLines(pidFile).length === 1, "the command's pid");
    const pid = Number(readLines(pidFile)[0]);
    b.kill("SIGTERM");
    await b.waitFor((l: Line) => l.msg === "stopping command");
    b.kill("SIGINT");
    assert.deepEqual(await b.exited, { code: 130, signal: null });
    await until(() => !isAlive(pid), "the command to die (it outlived leasehold)", 3000);
  } finally {
    await server.close();
  }
});

test("/leader, /metrics and /healthz flip when the command is told to stop, before it exits and the Lease is released", async () => {
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-flip-"));
  const [ready, go] = [join(dir, "ready"), join(dir, "go")];
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  // Default timings (a 4 s child grace): the command ignores SIGTERM until the test lets it go.
  const script = `trap '' TERM; echo > ${ready}; while [ ! -e ${go} ]; do sleep 0.02; done`;
  const stop = new AbortController();
  const log = lineLog();
  const exited = main(
    ["--lease-name", "flip", "--identity", "a", "--kubeconfig", kc, "--http-addr", `127.0.0.1:${port}`, "--", "sh"]
      .concat(["-c", script]),
    { write: log.write, handleSignals: false, env: () => undefined, signal: stop.signal },
  );
  const url = `http://127.0.0.1:${port}`;
  try {
    await until(() => existsSync(ready), "the command to start");
    const leading = await (await fetch(`${url}/leader`)).json();
    assert.equal(leading.isLeader, true);
    assert.match(
      await (await fetch(`${url}/metrics`)).text(),
      /leader_election_master_status\{name="default\/flip"\} 1/,
    );
    stop.abort();
    await log.waitFor((l) => l.msg === "stopping command");
    const leader = await (await fetch(`${url}/leader`)).json();
    assert.equal(leader.isLeader, false);
    assert.equal(leader.fencingToken, null);
    assert.equal(leader.workSettling, true);
    assert.match(
      await (await fetch(`${url}/metrics`)).text(),
      /leader_election_master_status\{name="default\/flip"\} 0/,
    );
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(await health.text(), "ok: the last term's work is still stopping\n");
    assert.equal(log.lines.some((l) => l.msg === "command exited" || l.msg === "released the lease"), false);
    await writeFile(go, "");
    assert.equal(await exited, 0);
    const msgs = log.lines.map((l) => l.msg);
    assert.ok(msgs.indexOf("command exited") < msgs.indexOf("released the lease"));
  } finally {
    stop.abort();
    await writeFile(go, "");
    await exited;
    await server.close();
  }
});

test("as PID 1: warns that orphans are not reaped, and a SIGTERM still shuts down cleanly and stops the command", async (t) => {
  const probe = spawnSync("unshare", ["--pid", "--fork", "--kill-child", "true"]);
  if (probe.status !== 0) {
    console.error("!!! SKIPPING the PID 1 test: `unshare --pid --fork` is not available here (needs root)");
    t.skip("unshare --pid not available");
    return;
  }
  const server = await startLeaseServer();
  const kc = await kubeconfigForServer(server);
  const dir = await mkdtemp(join(tmpdir(), "leasehold-pid1-"));
  const pidFile = join(dir, "pid");
  const script = `trap 'exit 0' TERM; echo $$ > ${pidFile}; while :; do sleep 0.05; done`;
  const args = ["--lease-name", "pid1", "--identity", "a", "--kubeconfig", kc, ...FAST, "--", "sh", "-c", script];
  const r = startReplica(args, {}, {
    name: "pid1",
    cmd: ["unshare", "--pid", "--fork", "--kill-child", ...entrypointCommand()],
  });
  try {
    const warn = await r.waitFor((l: Line) => l.msg.startsWith("running as PID 1"));
    assert.match(warn.msg, /not reaped; run leasehold under an init/);
    await r.waitFor((l: Line) => l.msg === "started command");
    // leasehold is the only child of unshare; signal it by its pid outside the namespace.
    let inner = 0;
    await until(() => {
      try {
        inner = Number(readFileSync(`/proc/${r.child.pid}/task/${r.child.pid}/children`, "utf8").trim().split(" ")[0]);
      } catch {
        inner = 0;
      }
      return inner > 0;
    }, "leasehold's pid");
    process.kill(inner, "SIGTERM");
    assert.deepEqual(await r.exited, { code: 0, signal: null });
    assert.ok(r.lines.some((l: Line) => l.msg === "released the lease"));
    assert.equal((server.leases().get("default/pid1") as { spec: { holderIdentity: string } }).spec.holderIdentity, "");
  } finally {
    r.kill("SIGKILL");
    await r.exited;
    await server.close();
  }
});
