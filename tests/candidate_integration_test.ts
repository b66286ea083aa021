// The LeaseCandidate keeper on the real API server under the shipped Role: it
// watches its candidate and answers a ping as the watch delivers it (its poll
// is set to a minute here, so polling could not answer in time), and it falls
// back to polling when the Role lacks "watch".
import assert from "node:assert/strict";
import { createLeaseApi, inClusterConfig, LeaseCandidateKeeper } from "../mod.ts";
import { adminRequest, freshNamespace, podIdentity } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

type Info = { url: string; host: string; port: number; caFile: string; adminToken: string };
type Candidate = { metadata: { resourceVersion: string }; spec: { pingTime?: string; renewTime?: string } };

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sets pingTime on the candidate as the election controller does; returns the ping's MicroTime. */
async function ping(info: Info, path: string): Promise<string> {
  for (;;) {
    const c: Candidate = await adminRequest(info, "GET", path);
    const at = new Date().toISOString().replace("Z", "000Z");
    const res = await adminRequest(info, "PUT", path, { ...c, spec: { ...c.spec, pingTime: at } }).catch(() =>
      undefined
    );
    if (res?.kind === "LeaseCandidate") return at;
  }
}

async function keeperFor(info: Info, prefix: string, dropVerbs: string[], pollMs: number) {
  const ns = await freshNamespace(info, prefix);
  const id = await podIdentity(info, ns, "kc-lease", { dropVerbs });
  const config = await inClusterConfig({ serviceAccountDir: id.dir, env: (k) => id.env[k as keyof typeof id.env] });
  const lease = await createLeaseApi(config, { name: "kc-lease", timeoutMs: 2000 });
  const keeper = new LeaseCandidateKeeper({
    client: lease.client,
    namespace: ns,
    leaseName: "kc-lease",
    identity: "kc-a",
    binaryVersion: "1.4.0",
    pollMs,
  });
  return { ns, keeper, path: `/apis/coordination.k8s.io/v1beta1/namespaces/${ns}/leasecandidates/kc-a` };
}

serverTest("candidate keeper: watches its LeaseCandidate under the shipped Role and answers a ping at once", {
  timeout: 60000,
}, async (_t, info: Info) => {
  const { keeper, path } = await keeperFor(info, "kcw", [], 60000);
  const stop = new AbortController();
  const run = keeper.run(stop.signal);
  try {
    await until("the candidate", 10000, () => adminRequest(info, "GET", path).catch(() => undefined));
    for (let i = 1; i <= 3; i++) {
      const at = await ping(info, path);
      const c = await until(`ping ${i} answered`, 10000, async () => {
        const c: Candidate = await adminRequest(info, "GET", path);
        return c.spec.renewTime && c.spec.renewTime > at ? c : undefined;
      });
      assert.equal(c.spec.pingTime, at, "the ping time is kept");
      await until(`ping ${i} counted`, 5000, () => keeper.pingsAnswered === i || undefined);
    }
    assert.equal(keeper.watching, true);
  } finally {
    stop.abort();
    await run;
  }
  await assert.rejects(adminRequest(info, "GET", path), "deleted on stop");
});

serverTest("candidate keeper: without the watch verb it polls and still answers pings", {
  timeout: 60000,
}, async (_t, info: Info) => {
  const { keeper, path } = await keeperFor(info, "kcp", ["watch"], 300);
  const stop = new AbortController();
  const run = keeper.run(stop.signal);
  try {
    await until("the candidate", 10000, () => adminRequest(info, "GET", path).catch(() => undefined));
    const at = await ping(info, path);
    await until("the ping answered by polling", 10000, async () => {
      const c: Candidate = await adminRequest(info, "GET", path);
      return c.spec.renewTime && c.spec.renewTime > at ? c : undefined;
    });
    assert.equal(keeper.watching, false);
  } finally {
    stop.abort();
    await run;
  }
});
