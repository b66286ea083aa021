// Many Leases, one watch: a hundred elections in one process share one client
// and one LIST + WATCH, against the real API server.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  createFetch,
  KubeClient,
  KubeLeaseApi,
  kubeLeaseListSource,
  LeaderElector,
  LeaseWatchHub,
  staticToken,
} from "../mod.ts";
import { freshNamespace } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

type Info = { url: string; caFile: string; adminToken: string };
const N = 100;
const LABEL = { key: "leasehold.dev/group", value: "shards" };

async function member(info: Info, ns: string, identity: string, stop: AbortSignal) {
  const client = new KubeClient({
    server: info.url,
    fetch: await createFetch({ caCert: readFileSync(info.caFile, "utf8") }),
    tokenSource: staticToken(info.adminToken),
    timeoutMs: 5000,
  });
  const hub = new LeaseWatchHub({ source: kubeLeaseListSource(client, ns, LABEL), label: LABEL });
  const hubDone = hub.run(stop);
  const electors = Array.from({ length: N }, (_, i) =>
    new LeaderElector({
      lease: hub.api(new KubeLeaseApi(client, ns, `shard-${i}`)),
      identity,
      leaseDuration: 15000,
      renewDeadline: 10000,
      retryPeriod: 2000,
      onStartedLeading: ({ signal }) => new Promise((r) => signal.addEventListener("abort", r, { once: true })),
    }));
  const runs = electors.map((e) => e.run(stop));
  return { hub, electors, done: Promise.all([hubDone, ...runs]) };
}

async function until(what: string, ms: number, pred: () => boolean): Promise<number> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

serverTest(`hub: ${N} Leases, one watch per process; followers take all of them over from the watch`, {
  timeout: 120000,
}, async (_t, info: Info) => {
  const ns = await freshNamespace(info, "hub");
  const stopA = new AbortController();
  const stopB = new AbortController();
  const a = await member(info, ns, "member-a", stopA.signal);
  try {
    await until("member-a leads every shard", 60000, () => a.electors.every((e) => e.isLeader));
    const b = await member(info, ns, "member-b", stopB.signal);
    try {
      await until("member-b's hub listed", 20000, () => b.hub.synced);
      await until("member-b sees every leader", 30000, () => b.electors.every((e) => e.leader === "member-a"));
      assert.equal(b.electors.some((e) => e.isLeader), false);
      // member-a shuts down and releases every shard; member-b takes them from its watch,
      // long before the 15 s lease would expire.
      stopA.abort();
      const took = await until("member-b leads every shard", 14000, () => b.electors.every((e) => e.isLeader));
      console.error(`hub: ${N} shards taken over ${took} ms after the other member's shutdown began`);
      await a.done;
      for (const m of [a, b]) {
        const s = m.hub.stats();
        assert.equal(s.watches, 1, `one shared watch per process (${JSON.stringify(s)})`);
        assert.equal(s.lists, 1);
      }
      assert.ok(b.hub.stats().subscribers <= N, "one subscription per follower at most");
    } finally {
      stopB.abort();
      await b.done;
    }
  } finally {
    stopA.abort();
    await a.done;
  }
});

serverTest("hub: the LIST of many labelled Leases comes in pages, each under the client's body cap", {
  timeout: 120000,
}, async (_t, info: Info) => {
  const ns = await freshNamespace(info, "hubpages");
  const admin = new KubeClient({
    server: info.url,
    fetch: await createFetch({ caCert: readFileSync(info.caFile, "utf8") }),
    tokenSource: staticToken(info.adminToken),
    timeoutMs: 10000,
  });
  const total = 700;
  for (let i = 0; i < total; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, total - i) }, (_, j) =>
        new KubeLeaseApi(admin, ns, `paged-${i + j}`).create({
          metadata: { name: `paged-${i + j}`, labels: { [LABEL.key]: LABEL.value } },
          spec: { holderIdentity: "someone-with-a-long-identity-0123456789", leaseDurationSeconds: 15 },
        })),
    );
  }
  // 700 Leases are well over 256 KiB in one answer; a page of them is not.
  const small = new KubeClient({
    server: info.url,
    fetch: await createFetch({ caCert: readFileSync(info.caFile, "utf8") }),
    tokenSource: staticToken(info.adminToken),
    timeoutMs: 10000,
    maxBodyBytes: 256 * 1024,
  });
  const whole = await admin.request("GET", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`) as {
    items: unknown[];
  };
  assert.equal(whole.items.length, total);
  assert.ok(JSON.stringify(whole).length > 256 * 1024, "the test needs a LIST larger than the small client's cap");
  const got = await kubeLeaseListSource(small, ns, LABEL).list(new AbortController().signal);
  assert.equal(got.items.length, total);
  assert.equal(new Set(got.items.map((l) => l.metadata.name)).size, total);
  assert.match(got.resourceVersion, /^\d+$/);
});
