// Coordinated leader election and Events, leasehold against client-go in the
// same run, on the real API server (CoordinatedLeaderElection on, the election
// controller inside kube-apiserver):
//
// 1. Preferred-holder hand-over. A leader runs; a candidate with an older
//    emulation version joins; the controller sets spec.preferredHolder to it and
//    writes it in as holder once the Lease is released or expired. Measured from
//    the Lease version carrying preferredHolder to the first version naming the
//    newcomer as holder, both seen by an admin watch of the Lease. Each round
//    the newcomer is older than everyone before it, and the old leader is then
//    stopped. Default timings (15 s / 10 s / 2 s); client-go runs with
//    ReleaseOnCancel (its quickest way out: it stops renewing when it sees
//    preferredHolder, stops leading after RenewDeadline, then releases).
// 2. The cost of Events: one replica on its own Lease, terms of start, lead,
//    SIGTERM, exit, through a counting HTTPS proxy; requests per term with Events
//    and without, for each kind. Events cost the requests on `events` plus any
//    Lease reads beyond those of the run without Events.
//
// Registered in bench.ts as "coordinated".

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Exchange, startFaultProxy } from "../support/fault_proxy.ts";
import {
  type BenchContext,
  DEFAULT_TIMINGS,
  FAST_TIMINGS,
  type PodIdentity,
  Proc,
  round,
  summarize,
  type Summary,
  timingFlags,
  type Timings,
} from "./common.ts";
import { leaseholdCommand } from "./replicas.ts";

type Kind = "leasehold" | "client-go";

export interface CoordinatedOptions {
  /** Hand-over rounds per kind. */
  rounds: number;
  /** Terms per configuration for the Events cost. */
  terms: number;
}

export interface EventCost {
  /** Requests per term, Events on. */
  withEvents: number;
  /** Requests per term, Events off. */
  withoutEvents: number;
  /** Requests on `events` per term. */
  eventWrites: number;
  /** Lease GETs per term with Events on, minus those with Events off (a recorder reading the Lease's uid). */
  extraLeaseReads: number;
  /** What Events cost per term: eventWrites + extraLeaseReads (the rest of the two totals varies with retries). */
  perTerm: number;
  /** Requests per term with Events on, by `METHOD resource`. */
  breakdown: Record<string, number>;
}

export interface CoordinatedResults {
  timings: Timings;
  /** ms from preferredHolder written to the newcomer named holder. */
  handover: { leasehold?: Summary; clientGo?: Summary; samples: { leasehold: number[]; clientGo: number[] } };
  events: { leasehold?: EventCost; clientGo?: EventCost; terms: number };
  /** leasehold / client-go. */
  ratios: { handoverMedian?: number; handoverP99?: number; eventRequestsPerTerm?: number };
  errors: string[];
}

async function admin(ctx: BenchContext, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await ctx.adminFetch(ctx.info.url + path, {
    method,
    headers: {
      authorization: `Bearer ${ctx.info.adminToken}`,
      "content-type": "application/json",
      accept: "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : undefined;
}

/** client-go's candidate is an informer (list, watch) and its event correlator patches repeats. */
async function grantClientGoExtras(ctx: BenchContext, ns: string): Promise<void> {
  await admin(ctx, "POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`, {
    metadata: { name: "clientgo-extras" },
    rules: [
      { apiGroups: ["coordination.k8s.io"], resources: ["leasecandidates"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["events"], verbs: ["patch"] },
    ],
  });
  await admin(ctx, "POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, {
    metadata: { name: "clientgo-extras" },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "clientgo-extras" },
    subjects: [{ kind: "ServiceAccount", name: "leasehold", namespace: ns }],
  });
}

interface Runner {
  proc: Proc;
  leading(ms: number): Promise<unknown>;
}

function start(
  ctx: BenchContext,
  kind: Kind,
  o: {
    identity: string;
    leaseName: string;
    sa: PodIdentity;
    timings: Timings;
    events: boolean;
    version?: string;
    env?: Record<string, string>;
  },
): Runner {
  const env = { ...o.sa.env, ...o.env };
  if (kind === "client-go") {
    const args = [
      "-service-account-dir",
      o.sa.dir,
      "-lease-name",
      o.leaseName,
      "-identity",
      o.identity,
      ...timingFlags(o.timings),
    ];
    if (o.version) {
      args.push("-coordinated", "-binary-version", o.version, "-rerun", "-delete-candidate-on-exit");
    }
    if (o.events) args.push("-events");
    const proc = new Proc([ctx.clientgoBin, ...args], { env, logStream: "stdout", name: `client-go ${o.identity}` });
    return { proc, leading: (ms) => proc.waitFor((l) => l.event === "started", ms, '"started"') };
  }
  const args = [
    "--lease-name",
    o.leaseName,
    "--identity",
    o.identity,
    "--service-account-dir",
    o.sa.dir,
    ...timingFlags(o.timings),
    `--events=${o.events}`,
  ];
  if (o.version) args.push("--coordinated", "--binary-version", o.version);
  const proc = new Proc([...leaseholdCommand(ctx, "deno"), ...args], {
    env,
    logStream: "stderr",
    name: `leasehold ${o.identity}`,
    cwd: ctx.root,
  });
  return { proc, leading: (ms) => proc.waitFor((l) => l.msg === "started leading", ms, '"started leading"') };
}

interface SpecEvent {
  at: number;
  holder: string;
  preferred: string;
}

/** An admin watch of one Lease that keeps every version's holder and preferredHolder with its arrival time. */
class LeaseSpecWatch {
  readonly events: SpecEvent[] = [];
  #stop = new AbortController();
  #done: Promise<void>;
  #waiters: { from: number; pred: (e: SpecEvent) => boolean; resolve: (e: SpecEvent) => void }[] = [];

  constructor(ctx: BenchContext, ns: string, name: string) {
    this.#done = this.#loop(ctx, ns, name);
  }

  async #loop(ctx: BenchContext, ns: string, name: string): Promise<void> {
    let rv = "";
    while (!this.#stop.signal.aborted) {
      try {
        const q = new URLSearchParams({ watch: "1", fieldSelector: `metadata.name=${name}`, timeoutSeconds: "600" });
        if (rv) q.set("resourceVersion", rv);
        const res = await ctx.adminFetch(`${ctx.info.url}/apis/coordination.k8s.io/v1/namespaces/${ns}/leases?${q}`, {
          headers: { authorization: `Bearer ${ctx.info.adminToken}`, accept: "application/json" },
          signal: this.#stop.signal,
        });
        if (!res.body) throw new Error(`watch: ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const at = performance.now();
          buf += value;
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const ev = JSON.parse(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            if (ev.type === "ERROR") {
              rv = "";
              continue;
            }
            rv = ev.object?.metadata?.resourceVersion ?? rv;
            if (ev.type !== "ADDED" && ev.type !== "MODIFIED") continue;
            const spec = ev.object?.spec ?? {};
            const e = { at, holder: spec.holderIdentity ?? "", preferred: spec.preferredHolder ?? "" };
            this.events.push(e);
            const i = this.events.length - 1;
            this.#waiters = this.#waiters.filter((w) => (i >= w.from && w.pred(e) ? (w.resolve(e), false) : true));
          }
        }
      } catch (e) {
        if (this.#stop.signal.aborted) return;
        console.error(`bench: coordinated lease watch restarted: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** The first version at index `from` or later matching `pred`. */
  waitFor(from: number, pred: (e: SpecEvent) => boolean, ms: number, what: string): Promise<SpecEvent> {
    const hit = this.events.slice(from).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no Lease version with ${what} within ${ms} ms`)), ms);
      this.#waiters.push({
        from,
        pred,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#done;
  }
}

async function handoverRounds(ctx: BenchContext, kind: Kind, rounds: number, timings: Timings): Promise<number[]> {
  const leaseName = "cle-bench";
  const ns = await ctx.namespace(`clb-${kind === "client-go" ? "cg" : "lh"}`);
  const sa = await ctx.identity(ns, leaseName);
  if (kind === "client-go") await grantClientGoExtras(ctx, ns);
  const watch = new LeaseSpecWatch(ctx, ns, leaseName);
  const samples: number[] = [];
  const base = { leaseName, sa, timings, events: true };
  try {
    let leader = start(ctx, kind, { ...base, identity: "r0", version: "1.200.0" });
    await leader.leading(90000);
    for (let i = 1; i <= rounds; i++) {
      const id = `r${i}`;
      const from = watch.events.length;
      const next = start(ctx, kind, { ...base, identity: id, version: `1.${200 - i}.0` });
      const preferred = await watch.waitFor(from, (e) => e.preferred === id, 60000, `preferredHolder ${id}`);
      const named = await watch.waitFor(from, (e) => e.holder === id, 90000, `holderIdentity ${id}`);
      samples.push(named.at - preferred.at);
      ctx.log(`  ${kind} round ${i}: ${round(named.at - preferred.at, 1)} ms from preferredHolder to holder`);
      await next.leading(30000);
      await leader.proc.stop("SIGTERM", 30000);
      leader = next;
    }
    await leader.proc.stop("SIGTERM", 30000);
  } finally {
    await watch.stop();
  }
  return samples;
}

/** Requests per term of one replica, through the counting proxy. */
async function termRequests(
  ctx: BenchContext,
  kind: Kind,
  events: boolean,
  terms: number,
  proxyEnv: Record<string, string>,
  exchanges: Exchange[],
): Promise<{ perTerm: number; breakdown: Record<string, number> }> {
  const leaseName = "ev-bench";
  const ns = await ctx.namespace(`evb-${kind === "client-go" ? "cg" : "lh"}-${events ? "on" : "off"}`);
  const sa = await ctx.identity(ns, leaseName);
  if (kind === "client-go") await grantClientGoExtras(ctx, ns);
  const mark = exchanges.length;
  for (let i = 0; i < terms; i++) {
    const r = start(ctx, kind, { identity: `t${i}`, leaseName, sa, timings: FAST_TIMINGS, events, env: proxyEnv });
    await r.leading(60000);
    const status = await r.proc.stop("SIGTERM", 30000);
    if (!status.success) throw new Error(`${kind} term ${i} exited with ${status.code}`);
  }
  // Exchanges are reported when their answer is complete; the last ones land just after the exit.
  await new Promise((r) => setTimeout(r, 500));
  const mine = exchanges.slice(mark).filter((e) => e.target.includes(`/namespaces/${ns}/`));
  const breakdown: Record<string, number> = {};
  for (const e of mine) {
    const resource = /\/namespaces\/[^/]+\/([a-z]+)/.exec(e.target)?.[1] ?? "?";
    const key = `${e.watch ? "WATCH" : e.method} ${resource}`;
    breakdown[key] = round((breakdown[key] ?? 0) + 1 / terms, 2);
  }
  return { perTerm: round(mine.length / terms, 2), breakdown };
}

export async function coordinatedBench(ctx: BenchContext, o: CoordinatedOptions): Promise<CoordinatedResults> {
  const errors: string[] = [];
  // The smoke run keeps the code paths alive quickly; the numbers come from the full run.
  const timings = ctx.smoke ? FAST_TIMINGS : DEFAULT_TIMINGS;
  const samples = { leasehold: [] as number[], clientGo: [] as number[] };
  for (const kind of ["leasehold", "client-go"] as const) {
    try {
      const s = await handoverRounds(ctx, kind, o.rounds, timings);
      if (kind === "leasehold") samples.leasehold = s;
      else samples.clientGo = s;
    } catch (e) {
      errors.push(`preferred-holder hand-over, ${kind}: ${(e as Error).message}`);
    }
  }

  const info = ctx.info as BenchContext["info"] & { dir?: string };
  const events: CoordinatedResults["events"] = { terms: o.terms };
  if (!info.dir) {
    errors.push("events cost: the server's ready line names no directory with its serving certificate");
  } else {
    const exchanges: Exchange[] = [];
    const proxy = await startFaultProxy({
      target: info.url,
      caCert: readFileSync(info.caFile, "utf8"),
      cert: readFileSync(join(info.dir, "serving.crt"), "utf8"),
      key: readFileSync(join(info.dir, "serving.key"), "utf8"),
      onExchange: (e) => exchanges.push(e),
    });
    const proxyEnv = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(proxy.port) };
    try {
      for (const kind of ["leasehold", "client-go"] as const) {
        try {
          const on = await termRequests(ctx, kind, true, o.terms, proxyEnv, exchanges);
          const off = await termRequests(ctx, kind, false, o.terms, proxyEnv, exchanges);
          const eventWrites = Object.entries(on.breakdown).filter(([k]) => k.endsWith(" events"))
            .reduce((a, [, v]) => a + v, 0);
          const extraLeaseReads = round(
            Math.max(0, (on.breakdown["GET leases"] ?? 0) - (off.breakdown["GET leases"] ?? 0)),
            2,
          );
          const cost: EventCost = {
            withEvents: on.perTerm,
            withoutEvents: off.perTerm,
            eventWrites: round(eventWrites, 2),
            extraLeaseReads,
            perTerm: round(eventWrites + extraLeaseReads, 2),
            breakdown: on.breakdown,
          };
          if (kind === "leasehold") events.leasehold = cost;
          else events.clientGo = cost;
          ctx.log(
            `  ${kind}: ${cost.withEvents} requests per term with Events, ${cost.withoutEvents} without; ` +
              `Events cost ${cost.perTerm} (${cost.eventWrites} on events, ${cost.extraLeaseReads} Lease reads)`,
          );
        } catch (e) {
          errors.push(`events cost, ${kind}: ${(e as Error).message}`);
        }
      }
    } finally {
      await proxy.close();
    }
  }

  const lh = summarize(samples.leasehold), cg = summarize(samples.clientGo);
  const ratio = (a?: number, b?: number) => (a !== undefined && b ? round(a / b, 4) : undefined);
  const results: CoordinatedResults = {
    timings,
    handover: { leasehold: lh, clientGo: cg, samples },
    events,
    ratios: {
      handoverMedian: ratio(lh?.median, cg?.median),
      handoverP99: ratio(lh?.p99, cg?.p99),
      eventRequestsPerTerm: ratio(events.leasehold?.perTerm, events.clientGo?.perTerm),
    },
    errors,
  };
  ctx.log(
    `coordinated: preferredHolder -> new holder, median/p99 ms: leasehold ${lh?.median}/${lh?.p99}, ` +
      `client-go ${cg?.median}/${cg?.p99} (ratio ${results.ratios.handoverMedian}/${results.ratios.handoverP99}); ` +
      `Event requests per term: leasehold ${events.leasehold?.perTerm}, client-go ${events.clientGo?.perTerm} ` +
      `(ratio ${results.ratios.eventRequestsPerTerm})`,
  );
  return results;
}
