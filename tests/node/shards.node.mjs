// Node: the sharded set from the built package (dist/, through its exports map)
// against the real API server: two replicas, each with one client, balance
// 8 shards 4/4 and hand every shard over when one leaves. Waits on the sets'
// change events, never on fixed delays.
import { test as _guard } from "../support/guard.mjs";
import { serverTest } from "../support/needs_server.mjs";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { freshNamespace } from "../env/testenv.mjs";
import * as leasehold from "@leasehold/leasehold";

void _guard;
const { createFetch, KubeClient, kubeShardedLeaseSet, staticToken } = leasehold;
const TIMING = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };

/** Resolves when `pred` holds, looking at every change of the sets; fails after `ms`. */
function until(what, sets, ms, pred) {
  return new Promise((resolve, reject) => {
    const look = () => {
      if (!pred()) return;
      done();
      resolve();
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: not within ${ms} ms`));
    }, ms);
    const done = () => {
      clearTimeout(timer);
      for (const s of sets) s.removeEventListener("change", look);
    };
    for (const s of sets) s.addEventListener("change", look);
    look();
  });
}

serverTest("node: the built package's sharded set balances two replicas and hands over on a graceful leave", {
  timeout: 60000,
}, async (_t, info) => {
  const ns = await freshNamespace(info, "nodeshards");
  const active = new Map();
  let overlaps = 0;
  const replica = async (identity) => {
    const client = new KubeClient({
      server: info.url,
      fetch: await createFetch({ caCert: readFileSync(info.caFile, "utf8") }),
      tokenSource: staticToken(info.adminToken),
      timeoutMs: 1500,
    });
    const set = kubeShardedLeaseSet(client, {
      namespace: ns,
      prefix: "work",
      shards: 8,
      identity,
      ...TIMING,
      onStartedLeading: async (shard, { signal }) => {
        if (active.has(shard)) overlaps++;
        active.set(shard, identity);
        await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
        active.delete(shard);
      },
    });
    const stop = new AbortController();
    return { set, stop, done: set.run(stop.signal) };
  };
  const a = await replica("node-a");
  const b = await replica("node-b");
  try {
    await until("4 shards each", [a.set, b.set], 30000, () => a.set.held().length === 4 && b.set.held().length === 4);
    b.stop.abort();
    await until("a holds all 8", [a.set], 30000, () => a.set.held().length === 8);
    await b.done;
    assert.deepEqual(b.set.held(), []);
  } finally {
    a.stop.abort();
    b.stop.abort();
    await Promise.all([a.done, b.done]);
  }
  assert.equal(overlaps, 0);
  assert.equal(active.size, 0, "every shard's work stopped");
});
