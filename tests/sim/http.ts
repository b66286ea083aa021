// HTTP mode: each replica talks to the simulated server through the real
// KubeLeaseApi and KubeClient (lib/lease_api.ts, lib/kube_client.ts) over a
// simulated `fetch` and a token source, on the same simulated network. This
// exercises request timeouts, the token source, Status parsing, Retry-After and
// the watch stream's line parsing as they ship.

import { KubeClient, type TokenSource } from "../../lib/kube_client.ts";
import { KubeApiError, NetworkError } from "../../lib/errors.ts";
import type { Lease } from "../../lib/lease.ts";
import { KubeLeaseApi, type LeaseWatchEvent } from "../../lib/lease_api.ts";
import type { Clock } from "../../lib/clock.ts";
import type { NetFaults, Outcome, SimLeaseApi } from "./net.ts";
import type { Owner, Scheduler } from "./scheduler.ts";
import type { SimStore } from "./store.ts";
import { apiError } from "./store.ts";

const enc = new TextEncoder();

function statusResponse(e: KubeApiError): Response {
  const body: Record<string, unknown> = {
    kind: "Status",
    apiVersion: "v1",
    status: "Failure",
    message: e.serverMessage ?? e.message,
    reason: e.reason,
    code: e.code,
  };
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (e.retryAfterSeconds !== undefined) {
    body.details = { retryAfterSeconds: e.retryAfterSeconds };
    const n = Number(e.retryAfterSeconds);
    if (Number.isInteger(n) && n >= 0) headers["retry-after"] = String(n);
  }
  return new Response(JSON.stringify(body), { status: e.code, headers });
}

function toResponse(o: Outcome<unknown>, okStatus = 200): Response {
  if (o.ok) {
    return new Response(JSON.stringify(o.value), { status: okStatus, headers: { "content-type": "application/json" } });
  }
  if (o.error instanceof KubeApiError) return statusResponse(o.error);
  throw o.error;
}

/** A `fetch` that answers from the simulated store over the replica's simulated network. */
export function simFetch(
  net: SimLeaseApi,
  store: SimStore,
): (input: string | URL | Request, init?: RequestInit) => Promise<Response> {
  return async (input, init) => {
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
    const method = init?.method ?? "GET";
    const signal = init?.signal ?? undefined;
    const body = typeof init?.body === "string" ? JSON.parse(init.body) as Lease : undefined;
    const wrap = <T>(p: Promise<T>): Promise<T> =>
      p.catch((e) => {
        // fetch rejects with the abort reason, or a TypeError for a network failure.
        if (e instanceof NetworkError) throw new TypeError(`fetch failed: ${e.message}`);
        throw e;
      });
    if (url.searchParams.get("watch")) {
      const rv = url.searchParams.get("resourceVersion") ?? undefined;
      let controller!: ReadableStreamDefaultController<Uint8Array>;
      let close: (() => void) | undefined;
      let done = false;
      let responded = false;
      const early: LeaseWatchEvent[] = [];
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          controller = c;
        },
        cancel() {
          done = true;
          close?.();
        },
      });
      try {
        close = await wrap(net.openWatch(rv, signal ?? new AbortController().signal, {
          events(evs) {
            if (done) return;
            if (responded) net.noteReceived(evs[0].object);
            else early.push(evs[0]);
            controller.enqueue(enc.encode(evs.map((e) => JSON.stringify(e) + "\n").join("")));
          },
          end(truncate) {
            if (done) return;
            done = true;
            if (truncate) controller.enqueue(enc.encode('{"type":"MODIFIED","object":{"metadata":'));
            controller.close();
          },
        }));
      } catch (e) {
        if (e instanceof KubeApiError) return statusResponse(e);
        if ((e as Error)?.name === "WatchExpiredError") {
          // The API server answers 200 and sends an ERROR event for a too-old resourceVersion.
          const line = JSON.stringify({
            type: "ERROR",
            object: { kind: "Status", code: 410, reason: "Expired", message: (e as Error).message },
          });
          return new Response(line + "\n", { status: 200, headers: { "content-type": "application/json" } });
        }
        throw e;
      }
      if (done) close();
      responded = true;
      for (const e of early) net.noteReceived(e.object);
      return new Response(stream, { status: 200, headers: { "content-type": "application/json" } });
    }
    let op: string;
    let server: () => Outcome<unknown>;
    const attempt = (fn: () => Lease): Outcome<unknown> => {
      try {
        return { ok: true, value: fn() };
      } catch (error) {
        return { ok: false, error };
      }
    };
    if (method === "GET") {
      op = "get";
      server = () => {
        const l = store.get();
        return l
          ? { ok: true, value: l }
          : { ok: false, error: apiError(404, "NotFound", `leases "${store.name}" not found`) };
      };
    } else if (method === "POST") {
      op = "create";
      server = () => attempt(() => store.create(body!, net.identity));
    } else if (method === "PUT") {
      op = "update";
      server = () => attempt(() => store.update(body!, net.identity));
    } else {
      return new Response("method not allowed", { status: 405 });
    }
    try {
      const v = await wrap(net.exchange<unknown>(op, signal, server));
      return toResponse({ ok: true, value: v }, op === "create" ? 201 : 200);
    } catch (e) {
      if (e instanceof KubeApiError) return statusResponse(e);
      throw e;
    }
  };
}

/** A token source that hangs while a token-hang fault is in force (it never looks at any signal). */
export class SimTokenSource implements TokenSource {
  #sched: Scheduler;
  #faults: NetFaults;
  #owner: Owner;
  constructor(sched: Scheduler, faults: NetFaults, owner: Owner) {
    this.#sched = sched;
    this.#faults = faults;
    this.#owner = owner;
  }
  token(): Promise<string | undefined> {
    const until = this.#faults.tokenHangUntil;
    if (until > this.#sched.now) {
      return new Promise((r) => this.#sched.at(until, () => r("sim-token"), this.#owner));
    }
    return Promise.resolve("sim-token");
  }
  invalidate(): boolean {
    return true;
  }
}

export function httpLeaseApi(
  net: SimLeaseApi,
  store: SimStore,
  o: { sched: Scheduler; faults: NetFaults; owner: Owner; clock: Clock; timeoutMs: number },
): KubeLeaseApi {
  net.realTokens = true;
  const client = new KubeClient({
    server: "https://sim-apiserver:6443",
    fetch: simFetch(net, store),
    tokenSource: new SimTokenSource(o.sched, o.faults, o.owner),
    timeoutMs: o.timeoutMs,
    clock: o.clock,
  });
  return new KubeLeaseApi(client, store.namespace, store.name);
}
