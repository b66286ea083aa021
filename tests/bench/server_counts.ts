// Counting Lease requests at the API server.
//
// apiserver_request_total{resource="leases"} is global and counts a WATCH only
// when it ends, so watch starts in a window are (ended watches) + (change in the
// apiserver_longrunning_requests gauge). The server itself renews its identity
// Lease in kube-system every 10 s; a cluster-wide watch on Leases run by the
// bench sees every successful write, so writes outside the measured namespace
// are subtracted as background.

import type { BenchContext } from "./common.ts";

export interface ServerSnapshot {
  at: number;
  /** apiserver_request_total for leases, summed over codes, by verb (WATCH = ended watches). */
  byVerb: Record<string, number>;
  /** Watches on leases open now. */
  watchOpen: number;
}

export async function serverSnapshot(ctx: BenchContext): Promise<ServerSnapshot> {
  const before = performance.now();
  const res = await ctx.adminFetch(`${ctx.info.url}/metrics`, {
    headers: { authorization: `Bearer ${ctx.info.adminToken}` },
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${text.slice(0, 200)}`);
  const at = (before + performance.now()) / 2;
  const byVerb: Record<string, number> = {};
  let watchOpen = 0;
  for (const line of text.split("\n")) {
    if (!line.includes('resource="leases"') || !line.includes('group="coordination.k8s.io"')) continue;
    const verb = /verb="([A-Z]+)"/.exec(line)?.[1];
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (!verb || !Number.isFinite(value)) continue;
    if (line.startsWith("apiserver_request_total{")) byVerb[verb] = (byVerb[verb] ?? 0) + value;
    else if (line.startsWith("apiserver_longrunning_requests{") && verb === "WATCH") watchOpen += value;
  }
  return { at, byVerb, watchOpen };
}

export interface LeaseEvent {
  at: number;
  type: string;
  namespace: string;
  name: string;
}

/** A cluster-wide watch on Leases, recording every event with its arrival time. */
export class LeaseEvents {
  readonly events: LeaseEvent[] = [];
  #stop = new AbortController();
  #done: Promise<void>;
  #reader?: ReadableStreamDefaultReader<Uint8Array>;

  private constructor(ctx: BenchContext, rv: string) {
    this.#done = this.#loop(ctx, rv);
  }

  static async start(ctx: BenchContext): Promise<LeaseEvents> {
    const res = await ctx.adminFetch(`${ctx.info.url}/apis/coordination.k8s.io/v1/leases?limit=1`, {
      headers: { authorization: `Bearer ${ctx.info.adminToken}`, accept: "application/json" },
    });
    const list = await res.json();
    return new LeaseEvents(ctx, list.metadata.resourceVersion);
  }

  async #loop(ctx: BenchContext, rv: string): Promise<void> {
    while (!this.#stop.signal.aborted) {
      try {
        const q = new URLSearchParams({ watch: "1", resourceVersion: rv, timeoutSeconds: "1800" });
        const res = await ctx.adminFetch(`${ctx.info.url}/apis/coordination.k8s.io/v1/leases?${q}`, {
          headers: { authorization: `Bearer ${ctx.info.adminToken}`, accept: "application/json" },
          signal: this.#stop.signal,
        });
        if (!res.body) throw new Error(`watch: ${res.status}`);
        const dec = new TextDecoder();
        let buf = "";
        const reader = res.body.getReader();
        this.#reader = reader;
        for (;;) {
          const { done, value: chunk } = await reader.read();
          if (done) break;
          const at = performance.now();
          buf += dec.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const ev = JSON.parse(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            const md = ev.object?.metadata ?? {};
            if (ev.type === "ERROR") throw new Error(`watch error: ${JSON.stringify(ev.object)}`);
            if (md.resourceVersion) rv = md.resourceVersion;
            this.events.push({ at, type: ev.type, namespace: md.namespace ?? "", name: md.name ?? "" });
          }
        }
      } catch (e) {
        if (this.#stop.signal.aborted) return;
        console.error(`bench: lease event watch restarted: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** Events in [t0, t1] matching `pred`, counted by type. */
  count(t0: number, t1: number, pred: (e: LeaseEvent) => boolean): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.events) {
      if (e.at >= t0 && e.at <= t1 && pred(e)) out[e.type] = (out[e.type] ?? 0) + 1;
    }
    return out;
  }

  /** Drops events older than `t` (keeps memory flat over long runs). */
  forget(t: number): void {
    const i = this.events.findIndex((e) => e.at >= t);
    this.events.splice(0, i < 0 ? this.events.length : i);
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#reader?.cancel().catch(() => {});
    // Do not hang the run on a stream that ignores the abort.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#done, new Promise((r) => (timer = setTimeout(r, 3000)))]);
    clearTimeout(timer);
  }
}

/** Lease requests in a window, with background writes (outside `namespace`) subtracted. */
export interface WindowCounts {
  seconds: number;
  /** By verb: GET, PUT, POST, LIST, WATCH (watch starts). */
  byVerb: Record<string, number>;
  total: number;
  /** Successful writes to Leases in the measured namespace, seen by the bench's watch. */
  writesInNamespace: number;
  /** Writes elsewhere (the API server's own identity Lease, other users), subtracted from byVerb. */
  backgroundWrites: number;
}

export function windowCounts(
  a: ServerSnapshot,
  b: ServerSnapshot,
  events: LeaseEvents,
  namespace: string,
): WindowCounts {
  const byVerb: Record<string, number> = {};
  for (const v of new Set([...Object.keys(a.byVerb), ...Object.keys(b.byVerb)])) {
    byVerb[v] = (b.byVerb[v] ?? 0) - (a.byVerb[v] ?? 0);
  }
  // Watches of a process that just went away can leave the gauge a moment before
  // they are counted as ended; a negative count is that, not a start.
  byVerb.WATCH = Math.max(0, (byVerb.WATCH ?? 0) + (b.watchOpen - a.watchOpen));
  const bg = events.count(a.at, b.at, (e) => e.namespace !== namespace);
  const ours = events.count(a.at, b.at, (e) => e.namespace === namespace);
  const sub = (verb: string, n: number) => {
    if (n) byVerb[verb] = Math.max(0, (byVerb[verb] ?? 0) - n);
  };
  sub("PUT", bg.MODIFIED ?? 0);
  sub("POST", bg.ADDED ?? 0);
  sub("DELETE", bg.DELETED ?? 0);
  for (const [k, v] of Object.entries(byVerb)) if (!v) delete byVerb[k];
  const sum = (r: Record<string, number>) => Object.values(r).reduce((x, y) => x + y, 0);
  return {
    seconds: (b.at - a.at) / 1000,
    byVerb,
    total: sum(byVerb),
    writesInNamespace: (ours.ADDED ?? 0) + (ours.MODIFIED ?? 0) + (ours.DELETED ?? 0),
    backgroundWrites: sum(bg),
  };
}
