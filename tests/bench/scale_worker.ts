// The process measured by the scale benchmark (run by scale.ts, one per size).
//
//   deno run -A tests/bench/scale_worker.ts '<json params>'
//
// mode "leases":   `count` LeaderElectors, each on its own Lease, one identity.
// mode "replicas": `count` LeaderElectors with distinct identities on ONE Lease.
// Each elector has its own client (createLeaseApi), see below.
//
// It prints JSON lines on stdout: "base" (client ready), "ready" (elections
// settled), "window-start", "window-end" (CPU, RSS and request counters of the
// window), then exits. The parent counts requests at the server between the
// window lines.

import process from "node:process";
import { createLeaseApi, LeaderElector, type LeaseApi, staticToken } from "../../mod.ts";

export interface WorkerParams {
  mode: "leases" | "replicas";
  count: number;
  namespace: string;
  server: string;
  caFile: string;
  token: string;
  settleMs: number;
  windowMs: number;
  timings: { leaseDuration: number; renewDeadline: number; retryPeriod: number };
}

const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssKb = () => Number(/^VmRSS:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1] ?? NaN);

async function main(p: WorkerParams): Promise<void> {
  const caCert = await Deno.readTextFile(p.caFile);
  const config = { server: p.server, caCert, tokenSource: staticToken(p.token), source: "bench" };
  const timeoutMs = Math.max(1000, p.timings.renewDeadline / 2);
  // One request so TLS and the client are loaded before the baseline RSS.
  await (await createLeaseApi(config, { name: "warm-up", namespace: p.namespace, timeoutMs })).get();
  emit({ event: "base", rssKb: rssKb() });

  // Every elector gets its own client (createLeaseApi), as the library's API gives
  // it. Sharing one client is not an option on Deno: its fetch multiplexes all
  // requests over one HTTP/2 connection, kube-apiserver allows 100 concurrent
  // streams per connection by default, and each candidate's watch holds a stream,
  // so from about 100 candidates on, renewals queue behind watches and time out.
  const apis: LeaseApi[] = [];
  for (let i = 0; i < p.count; i++) {
    const name = p.mode === "leases" ? `scale-${i}` : "scale-one";
    apis.push(await createLeaseApi(config, { name, namespace: p.namespace, timeoutMs }));
  }
  const electors = apis.map((lease, i) =>
    new LeaderElector({ lease, identity: p.mode === "leases" ? "bench-scale" : `replica-${i}`, ...p.timings })
  );
  const stop = new AbortController();
  const t0 = performance.now();
  const runs: Promise<void>[] = [];
  // Leases: starts spread evenly over at least one RetryPeriod (5 ms apart for
  // many), so renewals are spread out too, as they would drift apart in a
  // long-running process. Replicas: all at once.
  const spread = p.mode === "leases" ? Math.max(p.timings.retryPeriod, 5 * p.count) : 0;
  for (const [i, e] of electors.entries()) {
    const due = t0 + (i * spread) / p.count;
    if (due > performance.now()) await sleep(due - performance.now());
    runs.push(e.run(stop.signal));
  }
  const settled = () =>
    p.mode === "leases" ? electors.every((e) => e.isLeader) : electors.filter((e) => e.isLeader).length === 1 &&
      electors.every((e) => e.isLeader || (e.leader !== undefined && e.watching));
  const deadline = t0 + 180000;
  while (!settled()) {
    if (performance.now() > deadline) {
      emit({ event: "error", error: "elections did not settle within 180 s" });
      Deno.exit(1);
    }
    await sleep(50);
  }
  const leaders = electors.filter((e) => e.isLeader).length;
  emit({ event: "ready", acquireMs: Math.round(performance.now() - t0), leaders, rssKb: rssKb() });
  await sleep(p.settleMs);

  const totals = () => {
    const requests: Record<string, number> = {};
    const errors: Record<string, number> = {};
    let renewals = 0, latency = 0;
    for (const e of electors) {
      renewals += e.stats.renewCount;
      latency += e.stats.renewLatencySumMs;
      for (const [k, v] of Object.entries(e.stats.requestsByVerb)) requests[k] = (requests[k] ?? 0) + v;
      for (const [k, v] of Object.entries(e.stats.errorsByKind)) errors[k] = (errors[k] ?? 0) + v;
    }
    return { requests, errors, renewals, latency };
  };
  const a = totals();
  const cpu0 = process.cpuUsage();
  const w0 = performance.now();
  emit({ event: "window-start" });
  await sleep(p.windowMs);
  const cpu = process.cpuUsage(cpu0);
  const w1 = performance.now();
  const b = totals();
  const delta = (x: Record<string, number>, y: Record<string, number>) =>
    Object.fromEntries(Object.keys(y).map((k) => [k, y[k] - (x[k] ?? 0)]).filter(([, v]) => v !== 0));
  const renewals = b.renewals - a.renewals;
  emit({
    event: "window-end",
    windowMs: Math.round(w1 - w0),
    cpuMs: (cpu.user + cpu.system) / 1000,
    renewals,
    renewLatencyMeanMs: renewals ? (b.latency - a.latency) / renewals : null,
    requests: delta(a.requests, b.requests),
    errors: delta(a.errors, b.errors),
    leaders: electors.filter((e) => e.isLeader).length,
    watching: electors.filter((e) => e.watching).length,
    rssKb: rssKb(),
  });
  // The Leases are left as they are: nobody renews them afterwards, so they cost nothing.
  Deno.exit(0);
}

if (import.meta.main) {
  await main(JSON.parse(Deno.args[0]) as WorkerParams);
}
