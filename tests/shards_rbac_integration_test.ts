// The sharded entrypoint (`--shards N -- CMD`) on the real API server as a pod
// would run it: in-cluster configuration from a ServiceAccount token bound by
// deploy/rbac.shards.yaml, nothing more. Both replicas must balance the shards
// without one refused request (deploy/rbac.yaml, which names a single Lease and
// grants no list, is not enough for this mode), and each shard Lease gets the
// leadership Events of its terms.
import assert from "node:assert/strict";
import { main } from "../lib/cli.ts";
import { adminRequest, freshNamespace, podIdentity } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

type Line = Record<string, unknown> & { msg: string; level: string };
const FAST = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"];
/** The RBAC file under deploy/ this test applies. */
const RBAC_FILE = "rbac.shards.yaml";

/** One in-process replica under the pod identity `id`; tracks the shards it holds from its log. */
function replica(
  id: { dir: string; env: Record<string, string> },
  ns: string,
  identity: string,
  shards: number,
  podUid = crypto.randomUUID(),
) {
  const lines: Line[] = [];
  const held = new Set<number>();
  const stop = new AbortController();
  const exited = main(
    [
      ...["--lease-name", "work", "--lease-namespace", ns, "--identity", identity, "--service-account-dir", id.dir],
      ...[...FAST, "--shards", String(shards), "--pod-uid", podUid, "--", "sleep", "600"],
    ],
    {
      write: (text) => {
        const l = JSON.parse(text) as Line;
        lines.push(l);
        if (l.msg === "holding shard") held.add(l.shard as number);
        if (l.msg === "stopped holding shard") held.delete(l.shard as number);
      },
      handleSignals: false,
      env: (k) => id.env[k],
      signal: stop.signal,
    },
  );
  return { lines, held, podUid, stop: () => stop.abort(), exited };
}

/** Polls `cond` (the replicas' logs are the only signal) until it holds or `ms` pass; then fails with `detail()`. */
async function until(what: string, ms: number, cond: () => boolean, detail: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms; ${detail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

serverTest(
  `cli --shards: two replicas under deploy/${RBAC_FILE} hold every shard, balanced, with no refused request; an Event per shard term`,
  {
    timeout: 90000,
  },
  async (_t, info) => {
    const ns = await freshNamespace(info, "shardsrbac");
    const id = await podIdentity(info, ns, "work", { file: RBAC_FILE });
    const a = replica(id, ns, "replica-a", 4);
    const b = replica(id, ns, "replica-b", 4);
    const complaints = () =>
      [...a.lines, ...b.lines].filter((l) =>
        l.level === "warn" || l.level === "error" || /403|forbidden/i.test(
          JSON.stringify(l),
        )
      );
    const detail = () =>
      `a holds [${[...a.held]}], b holds [${[...b.held]}]; warnings: ${
        complaints().slice(0, 3).map((l) => JSON.stringify(l)).join(" | ") || "none"
      }`;
    try {
      // Generous bound: a clean start balances within a few retry periods.
      await until("4 shards held 2/2", 30000, () => a.held.size === 2 && b.held.size === 2, detail);
      assert.deepEqual([...a.held, ...b.held].sort(), [0, 1, 2, 3]);
      // b leaves: its member and shard Leases are released (update), and a takes every shard.
      b.stop();
      assert.equal(await b.exited, 0);
      await until("a holding all 4 after b left", 30000, () => a.held.size === 4, detail);
    } finally {
      a.stop();
      b.stop();
    }
    assert.equal(await a.exited, 0);
    assert.deepEqual(complaints(), [], "no warning, error or refused request");
    // The member Lease names its Pod as owner (the garbage collector deletes it with the Pod).
    const member = await adminRequest(
      info,
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/work-member-replica-a`,
    );
    assert.deepEqual(member.metadata.ownerReferences, [
      { apiVersion: "v1", kind: "Pod", name: "replica-a", uid: a.podUid },
    ]);

    // Every term either replica logged has its Event on that shard's Lease, with the Lease's uid
    // (both replicas wrote their last Events before exiting).
    type Ev = { reason: string; message: string; involvedObject: { kind: string; name: string; uid?: string } };
    const events: Ev[] = (await adminRequest(info, "GET", `/api/v1/namespaces/${ns}/events`)).items;
    const expected = new Map<string, number>();
    for (const [who, r] of [["replica-a", a], ["replica-b", b]] as const) {
      for (const l of r.lines) {
        const action = l.msg === "holding shard"
          ? "became leader"
          : l.msg === "stopped holding shard"
          ? "stopped leading"
          : "";
        if (!action) continue;
        const key = `work-${l.shard} ${who} ${action}`;
        expected.set(key, (expected.get(key) ?? 0) + 1);
      }
    }
    assert.ok(expected.size >= 8, `terms logged: ${[...expected.keys()].join(" | ")}`);
    const uids = new Map<string, string>();
    for (let i = 0; i < 4; i++) {
      const l = await adminRequest(info, "GET", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/work-${i}`);
      uids.set(`work-${i}`, l.metadata.uid);
    }
    const found = new Map<string, number>();
    for (const e of events) {
      if (e.reason !== "LeaderElection" || e.involvedObject.kind !== "Lease") continue;
      if (!uids.has(e.involvedObject.name)) continue; // member Leases get none
      assert.equal(e.involvedObject.uid, uids.get(e.involvedObject.name), `uid of ${e.involvedObject.name}`);
      const key = `${e.involvedObject.name} ${e.message}`;
      found.set(key, (found.get(key) ?? 0) + 1);
    }
    assert.deepEqual(
      Object.fromEntries([...found].sort()),
      Object.fromEntries([...expected].sort()),
      "one Event per logged start and stop of a shard term",
    );
  },
);

serverTest("cli --shards under deploy/rbac.yaml (one named Lease, no list) holds nothing and names the Role it needs", {
  timeout: 60000,
}, async (_t, info) => {
  const ns = await freshNamespace(info, "shardsrbac1");
  const id = await podIdentity(info, ns, "work");
  const a = replica(id, ns, "replica-a", 2);
  const isListWarning = (l: Line) => l.level === "warn" && l.msg.startsWith("cannot list or watch the shard leases");
  try {
    await until("a warning about the list", 20000, () => a.lines.some(isListWarning), () => "none");
  } finally {
    a.stop();
  }
  assert.equal(await a.exited, 0);
  const warn = a.lines.find(isListWarning)!;
  assert.match(warn.msg, /cannot list or watch the shard leases .*deploy\/rbac\.shards\.yaml/);
  assert.match(String(warn.error), /Forbidden: not allowed to list leases/);
  assert.equal(a.lines.filter((l) => l.msg === "holding shard").length, 0, "no shard held without the list");
});
