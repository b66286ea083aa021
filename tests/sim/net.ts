// A replica's network path to the simulated API server, as a LeaseApi: latency
// per replica, dropped requests, writes applied whose response is lost, partitions,
// 409/429/5xx storms, token failures and hangs, and watch streams whose events are
// delayed, duplicated, reordered or lost, or that end at once.

import { NetworkError } from "../../lib/errors.ts";
import type { Lease } from "../../lib/lease.ts";
import { type LeaseApi, type LeaseWatchEvent, WatchExpiredError } from "../../lib/lease_api.ts";
import type { Rng } from "./prng.ts";
import type { Owner, Scheduler } from "./scheduler.ts";
import { apiError, copyLease, type SimStore, type StoreEvent } from "./store.ts";

/** Faults in force for one replica (recomputed by the world when faults start or end). */
export interface NetFaults {
  partition: "none" | "blackhole" | "refuse";
  partitionEnd: number;
  dropP: number;
  lostP: number;
  slowFactor: number;
  slowAddMs: number;
  tokenFail: boolean;
  tokenHangUntil: number;
  hangUntil: number;
  conflictP: number;
  throttleP: number;
  retryAfter: unknown;
  serverErrorP: number;
  watchLoseP: number;
  watchDupP: number;
  watchReorderMs: number;
  watchEndAtOnce: boolean;
  watchTruncate: boolean;
}

export function noFaults(): NetFaults {
  return {
    partition: "none",
    partitionEnd: 0,
    dropP: 0,
    lostP: 0,
    slowFactor: 1,
    slowAddMs: 0,
    tokenFail: false,
    tokenHangUntil: 0,
    hangUntil: 0,
    conflictP: 0,
    throttleP: 0,
    retryAfter: undefined,
    serverErrorP: 0,
    watchLoseP: 0,
    watchDupP: 0,
    watchReorderMs: 0,
    watchEndAtOnce: false,
    watchTruncate: false,
  };
}

export interface LatencyProfile {
  baseMs: number;
  tailP: number;
  tailMeanMs: number;
}

export interface NetHooks {
  /** A request left the replica (for the rate bound). */
  request(op: string): void;
  /** A create/update by this replica was applied at the store; `sentAt` is when it left. */
  applied(sentAt: number, lease: Lease, seenAtSend: unknown): void;
  /** What the replica knew when a write left (opaque to the network). */
  snapshot(): unknown;
  /** Note for the trace. */
  trace(msg: string): void;
  /** A Retry-After was delivered. */
  retryAfter(v: unknown): void;
  /** A watch stream opened or closed (server side). */
  watchOpen(delta: number): void;
  /** The answer to this replica's successful create/update reached it. */
  acknowledged(l: Lease): void;
  /** A Lease reached the replica (a response or a watch event). */
  received(l: Lease): void;
  /** A signal handed to watch(), to be inspected for listener growth. */
  watchSignal(s: AbortSignal, live: boolean): void;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Where a watch's events go: the LeaseApi's own generator, or an HTTP response body. */
export interface WatchSink {
  /** Events that arrived together (one chunk). */
  events(evs: LeaseWatchEvent[]): void;
  /** The server ended the stream; `truncate`: its last line was cut short. */
  end(truncate: boolean): void;
}

export class SimLeaseApi implements LeaseApi {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  #sched: Scheduler;
  #store: SimStore;
  #rng: Rng;
  #owner: Owner;
  #faults: NetFaults;
  #lat: LatencyProfile;
  #hooks: NetHooks;
  /** Set when the process dies: its server-side watches close. */
  readonly closers = new Set<() => void>();

  constructor(o: {
    sched: Scheduler;
    store: SimStore;
    rng: Rng;
    owner: Owner;
    faults: NetFaults;
    latency: LatencyProfile;
    hooks: NetHooks;
    identity: string;
  }) {
    this.namespace = o.store.namespace;
    this.name = o.store.name;
    this.identity = o.identity;
    this.#sched = o.sched;
    this.#store = o.store;
    this.#rng = o.rng;
    this.#owner = o.owner;
    this.#faults = o.faults;
    this.#lat = o.latency;
    this.#hooks = o.hooks;
  }

  #latency(): number {
    const f = this.#faults;
    const l = this.#lat;
    let ms = (l.baseMs + this.#rng.exp(l.baseMs * 0.5)) * f.slowFactor;
    if (this.#rng.chance(l.tailP)) ms += this.#rng.exp(l.tailMeanMs);
    if (f.slowAddMs) ms += this.#rng.next() * f.slowAddMs;
    return ms;
  }

  /**
   * One request: `server` runs at the store when the request arrives and returns
   * the outcome to send back.
   */
  /** The replica read this Lease (for what it could know). */
  noteReceived(l: Lease): void {
    this.#hooks.received(l);
  }

  /** Deliveries to this replica that land in the same millisecond, run in one event-loop turn. */
  batch = false;
  #inbox = new Map<number, (() => void)[]>();

  /** Schedules something arriving at the replica at `at`. */
  #arrive(at: number, fn: () => void) {
    if (!this.batch) {
      this.#sched.at(at, fn, this.#owner);
      return;
    }
    const t = Math.ceil(at);
    const q = this.#inbox.get(t);
    if (q) return void q.push(fn);
    this.#inbox.set(t, [fn]);
    this.#sched.at(t, () => {
      const all = this.#inbox.get(t)!;
      this.#inbox.delete(t);
      for (const f of all) f();
    }, this.#owner);
  }

  exchange<T>(op: string, signal: AbortSignal | undefined, server: () => Outcome<T>): Promise<T> {
    return this.#request(op, signal, server);
  }

  /** True when the token source is real (HTTP mode): the network then does not emulate its faults. */
  realTokens = false;

  #request<T>(op: string, signal: AbortSignal | undefined, server: () => Outcome<T>): Promise<T> {
    signal?.throwIfAborted();
    this.#hooks.request(op);
    const sched = this.#sched;
    const owner = this.#owner;
    const f = this.#faults;
    const rng = this.#rng;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      let ignoreAbort = false;
      const onAbort = () => {
        if (ignoreAbort) return;
        finish({ ok: false, error: signal!.reason });
      };
      const finish = (o: Outcome<T>) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener("abort", onAbort);
        if (o.ok) resolve(o.value);
        else reject(o.error);
      };
      signal?.addEventListener("abort", onAbort);
      /** Stop honouring the signal until `until` (a hung token source or call). */
      const hangUntil = (until: number, then: () => void) => {
        ignoreAbort = true;
        sched.at(until, () => {
          ignoreAbort = false;
          if (signal?.aborted) return finish({ ok: false, error: signal.reason });
          then();
        }, owner);
      };
      const send = () => {
        const sentAt = sched.now;
        const seenAtSend = op === "update" || op === "create" ? this.#hooks.snapshot() : undefined;
        if (f.tokenFail) {
          sched.after(this.#latency(), () =>
            finish({
              ok: false,
              error: apiError(401, "Unauthorized", "Unauthorized: the token is invalid or expired"),
            }), owner);
          return;
        }
        if (f.partition === "refuse") {
          sched.after(1 + rng.next() * 5, () =>
            finish({
              ok: false,
              error: new NetworkError(`${op}: connection refused (simulated partition)`),
            }), owner);
          return;
        }
        if (f.partition === "blackhole" || rng.chance(f.dropP)) {
          this.#hooks.trace(`${op} dropped`);
          return; // never arrives; the caller's timeout ends it
        }
        // On the wire: it arrives even if the sender dies or gives up meanwhile.
        sched.after(this.#latency(), () => {
          let out: Outcome<T>;
          if (rng.chance(f.throttleP)) {
            this.#hooks.retryAfter(f.retryAfter);
            out = {
              ok: false,
              error: apiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                f.retryAfter as number,
              ),
            };
          } else if ((op === "update" || op === "create") && rng.chance(f.conflictP)) {
            out = {
              ok: false,
              error: apiError(409, "Conflict", "Operation cannot be fulfilled: the object has been modified"),
            };
          } else if (rng.chance(f.serverErrorP)) {
            out = { ok: false, error: apiError(500, "InternalError", "etcdserver: request timed out") };
          } else {
            out = server();
            if (out.ok && (op === "update" || op === "create")) {
              this.#hooks.applied(sentAt, out.value as Lease, seenAtSend);
            }
          }
          if (!owner.alive) return;
          if (f.hangUntil > sched.now) {
            this.#hooks.trace(`${op} hangs until ${f.hangUntil.toFixed(0)}`);
            hangUntil(f.hangUntil, () => finish({ ok: false, error: new NetworkError(`${op}: connection reset`) }));
            return;
          }
          if (f.partition !== "none" || rng.chance(f.lostP)) {
            this.#hooks.trace(`${op} response lost (${out.ok ? "applied" : "failed"})`);
            return;
          }
          this.#arrive(sched.now + this.#latency(), () => {
            if (f.partition !== "none") return this.#hooks.trace(`${op} response lost in partition`);
            if (out.ok && out.value && typeof out.value === "object") {
              this.#hooks.received(out.value as unknown as Lease);
              if (op === "update" || op === "create") this.#hooks.acknowledged(out.value as unknown as Lease);
            }
            finish(out);
          });
        });
      };
      if (f.tokenHangUntil > sched.now && !this.realTokens) {
        this.#hooks.trace(`${op}: token source hangs until ${f.tokenHangUntil.toFixed(0)}`);
        hangUntil(f.tokenHangUntil, send);
      } else {
        send();
      }
    });
  }

  get(signal?: AbortSignal): Promise<Lease | undefined> {
    return this.#request("get", signal, () => ({ ok: true, value: this.#store.get() }));
  }

  create(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    const body = copyLease(lease);
    return this.#request("create", signal, () => {
      try {
        return { ok: true, value: this.#store.create(body, this.identity) };
      } catch (error) {
        return { ok: false, error };
      }
    });
  }

  update(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    const body = copyLease(lease);
    return this.#request("update", signal, () => {
      try {
        return { ok: true, value: this.#store.update(body, this.identity) };
      } catch (error) {
        return { ok: false, error };
      }
    });
  }

  /**
   * Opens a watch over the simulated network: resolves once the server accepted
   * it; `sink` then receives the events (with the watch faults in force) and the end.
   * The returned function closes it (the client went away).
   */
  async openWatch(resourceVersion: string | undefined, signal: AbortSignal, sink: WatchSink): Promise<() => void> {
    const sched = this.#sched;
    const owner = this.#owner;
    const f = this.#faults;
    const rng = this.#rng;
    let lastDelivery = 0;
    let closed = false;
    let serverClose: (() => void) | undefined;
    const closeServer = () => {
      if (serverClose) {
        serverClose();
        serverClose = undefined;
        this.closers.delete(closeServer);
        this.#hooks.watchOpen(-1);
      }
    };
    const close = () => {
      closed = true;
      closeServer();
    };
    /** Delivers one event over the stream; duplicates travel in the same chunk. */
    const deliver = (e: StoreEvent) => {
      if (rng.chance(f.watchLoseP)) return this.#hooks.trace(`watch event rv=${e.rv} lost`);
      const copies = rng.chance(f.watchDupP) ? 2 : 1;
      let at = sched.now + this.#latency();
      if (f.watchReorderMs) at += rng.next() * f.watchReorderMs;
      else at = Math.max(at, lastDelivery);
      lastDelivery = Math.max(lastDelivery, at);
      const evs: LeaseWatchEvent[] = [];
      for (let i = 0; i < copies; i++) evs.push({ type: e.type, object: copyLease(e.object) });
      const fire = () => {
        if (closed) return;
        if (f.partition !== "none") {
          sched.at(Math.max(sched.now + 1, f.partitionEnd + this.#latency()), fire, owner);
          return;
        }
        sink.events(evs);
      };
      this.#arrive(at, fire);
    };
    const endStream = (truncate: boolean) => {
      sched.at(Math.max(lastDelivery, sched.now) + 0.001, () => {
        if (closed) return;
        closeServer();
        sink.end(truncate);
      }, owner);
    };
    this.#hooks.watchSignal(signal, true);
    try {
      await this.#request<true>("watch", signal, () => {
        try {
          const w = this.#store.watch(resourceVersion, (e) => deliver(e));
          if (!owner.alive || closed) {
            w.close();
            return { ok: true, value: true };
          }
          serverClose = w.close;
          this.closers.add(closeServer);
          this.#hooks.watchOpen(1);
          for (const e of w.initial) deliver(e);
          if (f.watchEndAtOnce) endStream(f.watchTruncate);
          else sched.after(30000 + rng.next() * 270000, () => endStream(false), owner);
          return { ok: true, value: true };
        } catch (e) {
          const err = e as { code?: number; message?: string };
          if (err.code === 410) {
            return {
              ok: false,
              error: new WatchExpiredError(`watch ended by the server: 410 Gone ${err.message}`, 410),
            };
          }
          return { ok: false, error: e };
        }
      });
    } catch (e) {
      close();
      this.#hooks.watchSignal(signal, false);
      throw e;
    }
    return () => {
      close();
      this.#hooks.watchSignal(signal, false);
    };
  }

  async *watch(resourceVersion: string | undefined, signal: AbortSignal): AsyncIterable<LeaseWatchEvent> {
    type Item = { ev: LeaseWatchEvent } | { end: true };
    const queue: Item[] = [];
    let wake: (() => void) | undefined;
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    let close: (() => void) | undefined;
    try {
      close = await this.openWatch(resourceVersion, signal, {
        events: (evs) => {
          for (const ev of evs) queue.push({ ev });
          wake?.();
        },
        end: (truncate) => {
          if (truncate) {
            // The last line arrived cut short: that event is lost.
            for (let i = queue.length - 1; i >= 0; i--) {
              if ("ev" in queue[i]) {
                queue.splice(i, 1);
                break;
              }
            }
          }
          queue.push({ end: true });
          wake?.();
        },
      });
      for (;;) {
        if (signal.aborted) return;
        const it = queue.shift();
        if (it) {
          if ("end" in it) return;
          this.#hooks.received(it.ev.object);
          yield it.ev;
          continue;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      close?.();
      signal.removeEventListener("abort", onAbort);
    }
  }
}
