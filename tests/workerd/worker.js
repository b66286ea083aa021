// A Worker that holds a leasehold election from the edge: the published
// package (dist/), the platform's own fetch, explicit server and token.
import { KubeClient, KubeLeaseApi, LeaderElector, readRecord, staticToken } from "./dist/mod.js";

function api(env) {
  const client = new KubeClient({
    server: env.SERVER,
    fetch: (input, init) => fetch(input, init),
    tokenSource: staticToken(env.TOKEN),
    timeoutMs: 3000,
  });
  return new KubeLeaseApi(client, env.NAMESPACE, env.LEASE);
}

async function elect(env, identity, holdMs) {
  const events = [];
  let fencingToken;
  let resolveLeading;
  const leading = new Promise((r) => (resolveLeading = r));
  const stop = new AbortController();
  const elector = new LeaderElector({
    lease: api(env),
    identity,
    leaseDuration: 4000,
    renewDeadline: 3000,
    retryPeriod: 500,
    onStartedLeading: async ({ signal, fencingToken: t }) => {
      events.push("started");
      fencingToken = t.value;
      resolveLeading();
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      events.push("work stopped");
    },
    onStoppedLeading: (reason) => events.push(`stopped: ${reason}`),
  });
  const done = elector.run(stop.signal);
  const acquired = await Promise.race([leading.then(() => true), done.then(() => false)]);
  if (acquired) await new Promise((r) => setTimeout(r, holdMs));
  const renewals = elector.stats.renewCount;
  stop.abort();
  await done;
  return { acquired, fencingToken, renewals, events };
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      if (url.pathname === "/elect") {
        const out = await elect(env, url.searchParams.get("identity"), Number(url.searchParams.get("holdMs") ?? 2000));
        return Response.json(out);
      }
      if (url.pathname === "/leader") {
        // Stateless: one read of the Lease answers "who leads?".
        const lease = await api(env).get();
        if (!lease) return Response.json({ holderIdentity: null });
        const r = readRecord(lease);
        return Response.json(
          r.ok
            ? { holderIdentity: r.record.holderIdentity, leaseTransitions: r.record.leaseTransitions }
            : { problems: r.problems },
        );
      }
      return new Response("not found", { status: 404 });
    } catch (e) {
      return Response.json({ error: String(e?.message ?? e) }, { status: 500 });
    }
  },
};
