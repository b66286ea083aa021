// The process measured by the scale benchmark (run by scale.ts, one per size).
//
//   deno run -A tests/bench/scale_worker.ts '<json params>'
//
// mode "leases":   `count` LeaderElectors, each on its own Lease, one identity.
// mode "shared":   as "leases", but all electors share ONE KubeClient (one
//                  connection) and ONE LeaseWatchHub (one LIST + WATCH of the
//                  labelled Leases) instead of a client and a watch each.
// mode "replicas": `count` LeaderElectors with distinct identities on ONE Lease.
// In "leases" and "replicas" each elector has its own client (createLeaseApi), see below.
//
// It prints JSON lines on stdout: "base" (client ready), "ready" (elections
// settled), "window-start", "window-end" (CPU, RSS and request counters of the
// window), then exits. The parent counts requests at the server between the
// window lines.

import process from "node:process";
import {
  createFetch,
  createLeaseApi,
  KubeClient,
  KubeLeaseApi,
  kubeLeaseListSource,
  LeaderElector,
  type LeaseApi,
  LeaseWatchHub,
  staticToken,
} from "../../mod.ts";

export interface WorkerParams {
  mode: "leases" | "shared" | "replicas";
  count: number;
  namespace: string;
  server: string;
  caFile: string;
  token: string;
  settleMs: number;
  windowMs: number;
  timings: { leaseDuration: number; renewDeadline: number; retryPeriod: number };
  /**
   * Shared mode only: send through one pooled HTTP/2 `Deno.HttpClient` trusting
   * the CA (in addition to the default roots, so for comparison only) instead of
   * the library's Deno transport for a custom CA (`node:https` with the CA as the
   * only trust anchor, a connection per request).
   */
  pooled?: boolean;
}

/** A pooled HTTP/2 fetch trusting `caCert` (added to the default roots), replaced on reset. */
function pooledFetch(caCert: string) {
  let client = Deno.createHttpClient({ caCerts: [caCert] });
  const f = (input: string | URL | Request, init?: RequestInit) =>
    fetch(input, { ...init, redirect: "manual", client } as RequestInit);
  return Object.assign(f, {
    reset() {
      const old = client;
      client = Deno.createHttpClient({ caCerts: [caCert] });
      old.close();
    },
  });
}

const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** JavaScript heap in use after a full collection when the process runs with --expose-gc, else as it is. */
const heapKb = () => {
  (globalThis as { gc?: () => void }).gc?.();
  return Math.round(Deno.memoryUsage().heapUsed / 1024);
};
const rssKb = () => Number(/^VmRSS:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1] ?? NaN);

/**
 * The socket inodes of process `pid` ("self" for this one) with an established
 * TCP connection to `port`: /proc/<pid>/net/tcp{,6} joined with its open fds.
 */
export function serverSockets(pid: number | "self", port: number): Set<string> {
  const inodes = new Set<string>();
  for (const f of [`/proc/${pid}/net/tcp`, `/proc/${pid}/net/tcp6`]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(f);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const remPort = parseInt(c[2].split(":")[1], 16);
      if (remPort === port && c[3] === "01") inodes.add(c[9]); // 01: ESTABLISHED
    }
  }
  const mine = new Set<string>();
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`));
        if (m && inodes.has(m[1])) mine.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // the process is gone
  }
  return mine;
}

async function main(p: WorkerParams): Promise<void> {
  const caCert = await Deno.readTextFile(p.caFile);
  const config = { server: p.server, caCert, tokenSource: staticToken(p.token), source: "bench" };
  const timeoutMs = Math.max(1000, p.timings.renewDeadline / 2);
  // Shared: one client for every Lease, and one LIST + WATCH (LeaseWatchHub) of
  // the labelled Leases for all the per-Lease watches.
  const client = p.mode === "shared"
    ? new KubeClient({
      server: p.server,
      fetch: p.pooled ? pooledFetch(caCert) : await createFetch({ caCert }),
      tokenSource: config.tokenSource,
      timeoutMs,
    })
    : undefined;
  // One request so TLS and the client are loaded before the baseline RSS.
  await (client
    ? new KubeLeaseApi(client, p.namespace, "warm-up")
    : await createLeaseApi(config, { name: "warm-up", namespace: p.namespace, timeoutMs })).get();
  emit({ event: "base", rssKb: rssKb(), heapKb: heapKb() });

  // "leases" and "replicas": every elector gets its own client (createLeaseApi),
  // and each follower its own watch. Over one HTTP/2 connection those watches
  // would each hold a stream (kube-apiserver allows 100 per connection), so the
  // shared way also shares the watch: one LeaseWatchHub serves every elector.
  const stop = new AbortController();
  const apis: LeaseApi[] = [];
  const port = Number(new URL(p.server).port || 443);
  let hub: LeaseWatchHub | undefined;
  if (client) {
    const label = { key: "leasehold.dev/bench", value: "scale" };
    hub = new LeaseWatchHub({ source: kubeLeaseListSource(client, p.namespace, label), label });
    hub.run(stop.signal).catch(() => {});
    for (let i = 0; i < p.count; i++) apis.push(hub.api(new KubeLeaseApi(client, p.namespace, `scale-${i}`)));
  } else {
    for (let i = 0; i < p.count; i++) {
      const name = p.mode === "leases" ? `scale-${i}` : "scale-one";
      apis.push(await createLeaseApi(config, { name, namespace: p.namespace, timeoutMs }));
    }
  }
  const many = p.mode !== "replicas";
  const electors = apis.map((lease, i) =>
    new LeaderElector({ lease, identity: many ? "bench-scale" : `replica-${i}`, ...p.timings })
  );
  const t0 = performance.now();
  const runs: Promise<void>[] = [];
  // Leases: starts spread evenly over at least one RetryPeriod (5 ms apart for
  // many), so renewals are spread out too, as they would drift apart in a
  // long-running process. Replicas: all at once.
  const spread = many ? Math.max(p.timings.retryPeriod, 5 * p.count) : 0;
  for (const [i, e] of electors.entries()) {
    const due = t0 + (i * spread) / p.count;
    if (due > performance.now()) await sleep(due - performance.now());
    runs.push(e.run(stop.signal));
  }
  const settled = () =>
    many ? electors.every((e) => e.isLeader) : electors.filter((e) => e.isLeader).length === 1 &&
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
  emit({ event: "ready", acquireMs: Math.round(performance.now() - t0), leaders, rssKb: rssKb(), heapKb: heapKb() });
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
    connections: serverSockets("self", port).size,
    hub: hub?.stats(),
  });
  // The Leases are left as they are: nobody renews them afterwards, so they cost nothing.
  Deno.exit(0);
}

if (import.meta.main) {
  await main(JSON.parse(Deno.args[0]) as WorkerParams);
}
