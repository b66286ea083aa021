// One simulated run: K replicas, each a real LeaderElector (lib/elector.ts) with its
// own drifting clock and network path to one simulated Lease, under a seeded fault
// schedule, with the invariants checked after every step.

import { ConfigError } from "../../lib/errors.ts";
import { LeaderElector, type LeaderElectorOptions } from "../../lib/elector.ts";
import type { Lease } from "../../lib/lease.ts";
import type { Logger } from "../../lib/log.ts";
import { MAX_DRIFT, SimClock } from "./clock.ts";
import { describeFault, type FaultSpec, generateFaults, retryAfterValue, type Timing } from "./faults.ts";
import { httpLeaseApi } from "./http.ts";
import { type LatencyProfile, type NetFaults, noFaults, SimLeaseApi } from "./net.ts";
import { Rng } from "./prng.ts";
import { type Owner, Scheduler } from "./scheduler.ts";
import { SimStore } from "./store.ts";

/** What the world needs of an elector (the real one, or a broken stub in the checker's own test). */
export interface ElectorLike {
  readonly isLeader: boolean;
  run(signal?: AbortSignal): Promise<void>;
}
export type ElectorFactory = (o: LeaderElectorOptions) => ElectorLike;

export const PROFILES: Record<string, Timing> = {
  default: { leaseDuration: 15000, renewDeadline: 10000, retryPeriod: 2000 },
  fast: { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 1000 },
  tight: { leaseDuration: 3000, renewDeadline: 2000, retryPeriod: 1500 },
  /** Finding 1's example: leaseDurationSeconds is written as 1. */
  fractional: { leaseDuration: 1500, renewDeadline: 1400, retryPeriod: 500 },
  /** `--lease-duration 15500ms`, accepted by the CLI. */
  fractional2: { leaseDuration: 15500, renewDeadline: 10000, retryPeriod: 2000 },
};
const PROFILE_WEIGHTS: [string, number][] = [
  ["default", 30],
  ["fast", 35],
  ["tight", 15],
  ["fractional", 10],
  ["fractional2", 10],
];

/** The longest Retry-After the elector honours (lib/elector.ts MAX_RETRY_AFTER_MS after the fix of finding 9). */
export const RETRY_AFTER_CLAMP_MS = 60000;
/** client-go's retry jitter: a follower waits up to (1 + 1.2) x retryPeriod between polls. */
const JITTER = 2.2;
/** Requests one replica may send in any one-second bucket of true time, under any fault. */
export const RATE_BOUND = 30;
/** Timer firings per replica per one-second bucket (a spin on 1 ms timers breaks it). */
export const TIMER_RATE_BOUND = 200;
/** Pending timers per replica. */
export const TIMER_BOUND = 64;
/** Abort listeners on any long-lived signal (run's, the watch's, the work's). */
export const LISTENER_BOUND = 16;
/** Open server-side watches per replica. */
export const WATCH_BOUND = 3;
/** Scheduled events in the whole world. */
export const QUEUE_BOUND = 50000;

export type ViolationKind =
  | "overlap"
  | "fencing"
  | "leads-past-claim"
  | "no-leader-after-heal"
  | "no-takeover"
  | "request-rate"
  | "timer-spin"
  | "timer-growth"
  | "listener-growth"
  | "watch-growth"
  | "queue-growth"
  | "own-write-not-adopted"
  | "run-ended"
  | "unhandled-rejection";

export interface Violation {
  kind: ViolationKind;
  at: number;
  step: number;
  msg: string;
}

export interface RunOptions {
  seed: number;
  /** Replicas (3 to 7); from the seed when absent. */
  replicas?: number;
  /** Timing profile name; from the seed when absent. */
  profile?: string;
  /** Horizon the fault schedule is generated for, in simulated minutes. */
  minutes: number;
  /** Stop earlier than the horizon (ms of simulated time). */
  untilMs?: number;
  /** Keep only these faults (indices in the generated list). */
  faults?: number[];
  /** Stop at the first violation. @default true */
  stopAtFirst?: boolean;
  /** Print every trace line. */
  trace?: boolean;
  /** Replica each "leader"-targeted fault hit in an earlier run (fault index -> replica), for replay. */
  targets?: Record<number, number>;
  /** Deliveries to a replica within the same millisecond run in one event-loop turn (their promise jobs interleave). */
  batch?: boolean;
  /** Talk through the real KubeLeaseApi + KubeClient over a simulated fetch (else a simulated LeaseApi). */
  http?: boolean;
  /** Elector under test. @default the real LeaderElector */
  factory?: ElectorFactory;
}

export interface RunResult {
  seed: number;
  http: boolean;
  replicas: number;
  profile: string;
  timing: Timing;
  steps: number;
  simMs: number;
  violations: Violation[];
  schedule: FaultSpec[];
  kept: number[];
  terms: number;
  excusedOverlaps: number;
  excusedFencing: number;
  maxRequestsPerSecond: number;
  maxHealToLeaderMs: number;
  healWindows: number;
  configRejected?: string;
  /** Replica each fault hit (fault index -> replica). */
  targets: Record<number, number>;
  trace: string[];
}

interface Work {
  replica: number;
  inc: number;
  token: number;
  start: number;
  abortAt?: number;
  end?: number;
  lateMs: number;
  claimEndAtAbort?: number;
  clearedWhileRunning: boolean;
  /** resourceVersion of the write that started this term (as far as the store saw). */
  acquireRv: number;
  /** The Lease was deleted by hand while this work ran. */
  deletedWhileRunning: boolean;
  signal: AbortSignal;
}

interface Incarnation extends Owner {
  no: number;
  replica: number;
  clock: SimClock;
  api: SimLeaseApi;
  elector: ElectorLike;
  stop: AbortController;
  done: boolean;
  watches: number;
  watchSignals: Set<AbortSignal>;
  /** True time this incarnation started. */
  startedAt: number;
  /** Highest resourceVersion this process received per holder (responses and watch events). */
  seen: Map<string, number>;
}

interface Replica {
  index: number;
  identity: string;
  faults: NetFaults;
  latency: LatencyProfile;
  rng: Rng;
  inc?: Incarnation;
  incs: number;
  down: number;
  lateMaxMs: number;
  reqBucket: number;
  reqCount: number;
  timerBucket: number;
  timerBase: number;
  rate: number;
  /** When the last fault touching this replica ended (Infinity while one is in force). */
  quietSince: number;
}

// ---- abort-listener accounting (patched once) --------------------------------

const listeners = new WeakMap<EventTarget, Set<unknown>>();
let patched = false;
/** Most abort listeners seen on one signal (all runs of this process). */
export let maxListeners = 0;
function patchSignals() {
  if (patched) return;
  patched = true;
  const proto = AbortSignal.prototype as unknown as EventTarget;
  const add = proto.addEventListener;
  const remove = proto.removeEventListener;
  proto.addEventListener = function (this: EventTarget, type: string, fn: unknown, opts?: unknown) {
    if (type === "abort" && fn) {
      let s = listeners.get(this);
      if (!s) listeners.set(this, s = new Set());
      s.add(fn);
      if (s.size > maxListeners) maxListeners = s.size;
      if (s.size > LISTENER_BOUND && currentWorld && !(this as AbortSignal).aborted) {
        const where = (new Error().stack ?? "").split("\n").slice(2, 6).map((l) => l.trim().replace(/^at /, ""))
          .map((l) => l.replace(/^.*\/(lib|tests)\//, "$1/").replace(/\)$/, "")).join(" < ");
        currentWorld.violate(
          "listener-growth",
          `an AbortSignal has ${s.size} abort listeners (bound ${LISTENER_BOUND}); the last added at ${where}`,
        );
      }
    }
    return add.call(this, type, fn as EventListener, opts as AddEventListenerOptions);
  };
  proto.removeEventListener = function (this: EventTarget, type: string, fn: unknown, opts?: unknown) {
    if (type === "abort") listeners.get(this)?.delete(fn);
    return remove.call(this, type, fn as EventListener, opts as EventListenerOptions);
  };
}
function listenerCount(s: AbortSignal): number {
  return s.aborted ? 0 : (listeners.get(s)?.size ?? 0);
}

let currentWorld: World | undefined;
let rejectionHooked = false;
function hookRejections() {
  if (rejectionHooked) return;
  rejectionHooked = true;
  globalThis.addEventListener("unhandledrejection", (e: PromiseRejectionEvent) => {
    if (currentWorld) {
      e.preventDefault();
      currentWorld.violate("unhandled-rejection", String((e.reason as Error)?.stack ?? e.reason));
    }
  });
}

export class World {
  readonly opts: RunOptions;
  readonly sched = new Scheduler();
  readonly store = new SimStore("default", "sim-lease");
  readonly rng: Rng;
  readonly replicas: Replica[] = [];
  readonly timing: Timing;
  readonly profile: string;
  readonly schedule: FaultSpec[];
  readonly kept: FaultSpec[];
  readonly violations: Violation[] = [];
  configRejected?: string;
  #factory: ElectorFactory;
  #active = new Set<FaultSpec>();
  #works: Work[] = [];
  #running = new Set<Work>();
  #lastToken = -1;
  /** resourceVersion of the last hand delete, and of the write that started the last term. */
  #lastDeleteRv = -1;
  /** resourceVersion of the last holder cleared by hand. */
  #lastClearRv = -1;
  #lastTermRv = -1;
  #claims = new Map<
    string,
    {
      appliedAt: number;
      durMs: number;
      rv: number;
      transitions: unknown;
      seen: Map<string, number>;
      /** The incarnation that wrote it, and whether it took the Lease (the holder before was someone else). */
      inc: number;
      acquiring: boolean;
      /** Its answer reached the writer. */
      acked: boolean;
    } | undefined
  >();
  #trace: string[] = [];
  #targets: Record<number, number> = {};
  #healStart?: number;
  #healSatisfied = false;
  #storeKey = "";
  #storeHolder: unknown = undefined;
  #prevHolder: unknown = undefined;
  #storeRv = 0;
  #storeChangedAt = 0;
  /** Liveness is not expected before this time (a Retry-After in force). */
  #holdUntil = 0;
  terms = 0;
  excusedOverlaps = 0;
  excusedFencing = 0;
  maxReq = 0;
  maxHeal = 0;
  healWindows = 0;
  readonly healBound: number;

  constructor(opts: RunOptions) {
    patchSignals();
    hookRejections();
    this.opts = opts;
    this.rng = new Rng(opts.seed, "world");
    const setup = this.rng.fork("setup");
    const n = opts.replicas ?? setup.int(3, 7);
    let profile = opts.profile;
    if (!profile) {
      let x = setup.next() * PROFILE_WEIGHTS.reduce((a, [, w]) => a + w, 0);
      for (const [name, w] of PROFILE_WEIGHTS) {
        x -= w;
        if (x < 0) {
          profile = name;
          break;
        }
      }
    }
    this.profile = profile ?? "default";
    this.timing = PROFILES[this.profile];
    if (!this.timing) throw new Error(`unknown profile ${profile}; one of ${Object.keys(PROFILES).join(", ")}`);
    this.#factory = opts.factory ?? ((o) => new LeaderElector(o));
    // A fractional duration that the elector now refuses: run the closest whole-second one.
    try {
      this.#factory({ ...this.timing, identity: "probe", lease: this.#dummyApi() });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.configRejected = `${this.profile}: ${e.message}`;
      this.timing = {
        ...this.timing,
        leaseDuration: Math.ceil(this.timing.leaseDuration / 1000) * 1000,
      };
    }
    const LD = this.timing.leaseDuration, RP = this.timing.retryPeriod;
    this.healBound = LD / (1 - MAX_DRIFT) + 2.2 * RP + 2000;
    for (let i = 0; i < n; i++) {
      const r = this.rng.fork(`replica${i}`);
      this.replicas.push({
        index: i,
        identity: `replica-${i}`,
        faults: noFaults(),
        latency: { baseMs: r.range(0.3, 5), tailP: r.range(0, 0.02), tailMeanMs: r.range(10, 300) },
        rng: r,
        incs: 0,
        down: 0,
        lateMaxMs: 0,
        reqBucket: -1,
        reqCount: 0,
        timerBucket: -1,
        timerBase: 0,
        rate: 1 + (r.next() * 2 - 1) * MAX_DRIFT,
        quietSince: 0,
      });
    }
    const horizon = opts.minutes * 60000;
    this.schedule = generateFaults(this.rng.fork("faults"), n, horizon, this.timing, this.healBound + 2 * LD);
    this.kept = opts.faults ? this.schedule.filter((f) => opts.faults!.includes(f.i)) : this.schedule;
    this.store.onChange = (e, by) => {
      this.note(`store rv=${e.rv} ${e.type} by ${by}: ${recordText(e.object)}`);
      // Followers time a claim from when they see the record change; a write of
      // the same record (a retried PUT of one attempt) changes only the resourceVersion.
      const key = e.type === "DELETED" ? "deleted" : JSON.stringify(e.object.spec ?? null);
      if (key !== this.#storeKey) {
        this.#storeKey = key;
        this.#storeChangedAt = this.sched.now;
      }
      this.#prevHolder = this.#storeHolder;
      this.#storeHolder = e.type === "DELETED" ? undefined : e.object.spec?.holderIdentity;
      this.#storeRv = e.rv;
      if (by === "operator") {
        // An operator's edit is a new claim (or, deleted, an absence that counts as held):
        // the liveness window starts again from it.
        if (key === this.#storeKey && this.#storeChangedAt === this.sched.now) this.#healStart = undefined;
        if (e.type === "DELETED") {
          this.#lastDeleteRv = e.rv;
          for (const w of this.#running) w.deletedWhileRunning = true;
        }
      }
    };
  }

  #dummyApi() {
    return { namespace: "default", name: "sim-lease", get: () => Promise.resolve(undefined) } as never;
  }

  note(msg: string) {
    const line = `${(this.sched.now / 1000).toFixed(3).padStart(10)}s ${msg}`;
    if (this.opts.trace) console.log(line);
    this.#trace.push(line);
    if (this.#trace.length > 400) this.#trace.splice(0, 100);
  }

  violate(kind: ViolationKind, msg: string) {
    if (this.violations.some((v) => v.kind === kind && v.msg === msg)) return;
    this.violations.push({ kind, at: this.sched.now, step: this.sched.steps, msg });
    this.note(`VIOLATION ${kind}: ${msg}`);
  }

  // ---- replicas ----------------------------------------------------------------

  #start(r: Replica) {
    const no = r.incs++;
    const irng = r.rng.fork(`inc${no}`);
    const owner = { alive: true } as Incarnation;
    const clock = new SimClock(this.sched, owner, {
      origin: irng.range(0, 1e7),
      rate: r.rate,
      wallBase: Date.UTC(2026, 0, 1) + irng.range(-3600000, 3600000),
    });
    const api = new SimLeaseApi({
      sched: this.sched,
      store: this.store,
      rng: irng.fork("net"),
      owner,
      faults: r.faults,
      latency: r.latency,
      identity: r.identity,
      hooks: {
        request: (op) => {
          if (this.opts.trace) this.note(`r${r.index} -> ${op}`);
          this.#countRequest(r, op);
        },
        applied: (sentAt, lease, seen) => this.#applied(r, sentAt, lease, seen as Map<string, number>),
        snapshot: () => new Map(owner.seen),
        acknowledged: (l) => {
          const c = this.#claims.get(r.identity);
          if (c && String(c.rv) === l.metadata.resourceVersion) c.acked = true;
        },
        trace: (m) => this.note(`r${r.index} ${m}`),
        retryAfter: (v) => {
          // A server asking to wait delays the leader by that long, up to the
          // elector's documented clamp of 60 s; invalid hints are ignored.
          const n = Number(v);
          if (n > 0 && Number.isFinite(n)) {
            const until = this.sched.now + Math.min(n * 1000, RETRY_AFTER_CLAMP_MS);
            if (until > this.#holdUntil) {
              this.#holdUntil = until;
              this.sched.at(until, () => {});
            }
          }
        },
        watchOpen: (d) => (owner.watches += d),
        received: (l) => {
          if (this.opts.trace) this.note(`r${r.index} <- rv=${l.metadata.resourceVersion} ${recordText(l)}`);
          const h = l.spec?.holderIdentity;
          if (typeof h === "string" && h) {
            const rv = Number(l.metadata.resourceVersion);
            if (rv > (owner.seen.get(h) ?? -1)) owner.seen.set(h, rv);
          }
        },
        watchSignal: (s, live) => live ? owner.watchSignals.add(s) : owner.watchSignals.delete(s),
      },
    });
    const logger: Logger = {
      debug: (m, f) => {
        if (this.opts.trace) this.note(`r${r.index} debug ${m} ${f ? JSON.stringify(f) : ""}`);
      },
      info: (m, f) => this.note(`r${r.index} info ${m} ${f ? JSON.stringify(f) : ""}`),
      warn: (m, f) => {
        if (this.opts.trace) this.note(`r${r.index} warn ${m} ${f ? JSON.stringify(f) : ""}`);
      },
      error: (m, f) => this.note(`r${r.index} ERROR ${m} ${f ? JSON.stringify(f) : ""}`),
    };
    const stop = new AbortController();
    Object.assign(owner, {
      no,
      replica: r.index,
      clock,
      api,
      stop,
      done: false,
      watches: 0,
      watchSignals: new Set(),
      startedAt: this.sched.now,
      seen: new Map(),
    });
    r.inc = owner;
    api.batch = !!this.opts.batch;
    const lease = this.opts.http
      ? httpLeaseApi(api, this.store, {
        sched: this.sched,
        faults: r.faults,
        owner,
        clock,
        timeoutMs: Math.max(1000, this.timing.renewDeadline / 2),
      })
      : api;
    owner.elector = this.#factory({
      lease,
      identity: r.identity,
      ...this.timing,
      clock,
      logger,
      random: () => irng.next(),
      onStartedLeading: (ctx) => this.#work(r, owner, ctx.signal, ctx.fencingToken.leaseTransitions),
    });
    this.note(`r${r.index} start (incarnation ${no}, clock rate ${clock.rate.toFixed(4)})`);
    owner.elector.run(stop.signal).then(
      () => {
        owner.done = true;
        if (!stop.signal.aborted && owner.alive) this.violate("run-ended", `r${r.index}: run() returned by itself`);
      },
      (e) => {
        owner.done = true;
        if (owner.alive) this.violate("run-ended", `r${r.index}: run() threw ${(e as Error)?.stack ?? e}`);
      },
    );
  }

  #kill(r: Replica, why: string) {
    const inc = r.inc;
    if (!inc) return;
    inc.alive = false;
    for (const c of [...inc.api.closers]) c();
    for (const w of this.#running) {
      if (w.replica === r.index && w.inc === inc.no) this.#endWork(w);
    }
    r.inc = undefined;
    this.note(`r${r.index} ${why}`);
  }

  // ---- leader work -------------------------------------------------------------

  #work(r: Replica, inc: Incarnation, signal: AbortSignal, token: number): Promise<void> {
    const now = this.sched.now;
    const w: Work = {
      replica: r.index,
      inc: inc.no,
      token,
      start: now,
      lateMs: 0,
      clearedWhileRunning: false,
      acquireRv: this.#claims.get(r.identity)?.rv ?? 0,
      deletedWhileRunning: false,
      signal,
    };
    this.terms++;
    this.note(`r${r.index} WORK START token=${token}`);
    // Fencing: strictly increasing from term to term.
    // A Lease deleted by hand and created again restarts leaseTransitions (documented):
    // the count starts over with the first term after the delete.
    const restarted = this.#lastDeleteRv > this.#lastTermRv;
    if (typeof token !== "number" || !(token > (restarted ? -1 : this.#lastToken))) {
      this.violate(
        "fencing",
        `r${r.index} started a term with token ${token}, not above the previous ${this.#lastToken}`,
      );
    } else if (restarted && !(token > this.#lastToken)) {
      this.excusedFencing++;
      this.note(`fencing token restarted after the Lease was deleted by hand (documented)`);
    }
    if (restarted) this.#lastToken = -1;
    // The token is the one of the write that started this term.
    const acquired = this.#claims.get(r.identity)?.transitions ?? 0;
    if (token !== acquired) {
      this.violate(
        "fencing",
        `r${r.index} started a term with token ${token}, but the write that acquired it has leaseTransitions ${acquired}`,
      );
    }
    this.#lastToken = typeof token === "number" ? Math.max(token, this.#lastToken) : this.#lastToken;
    this.#lastTermRv = w.acquireRv;
    // No two works at once (true time).
    for (const x of this.#running) {
      // A Lease deleted by hand under a live holder: a replica that never saw that
      // holder's term cannot know it exists (documented); one that saw it must wait.
      const knew = this.#claims.get(r.identity)?.seen.get(this.replicas[x.replica].identity) ?? -1;
      // (The deletion may also come between the claim's write and the work's start.)
      const unseen = (x.deletedWhileRunning || this.#lastDeleteRv > x.acquireRv) && knew < x.acquireRv;
      // A holder cleared by hand, also between its claim's write and its work's start.
      const cleared = x.clearedWhileRunning || this.#lastClearRv > x.acquireRv;
      const excused = cleared || unseen ||
        (x.abortAt !== undefined && x.claimEndAtAbort !== undefined &&
          x.abortAt + x.lateMs > x.claimEndAtAbort && now >= x.claimEndAtAbort && x.replica !== r.index);
      if (excused) {
        this.excusedOverlaps++;
        this.note(`overlap excused: r${x.replica}'s work ignored its abort signal (or the Lease was cleared by hand)`);
      } else {
        this.violate(
          "overlap",
          `r${r.index} started work (token ${token}) while r${x.replica}'s work (token ${x.token}, incarnation ${x.inc}) ` +
            (x.abortAt === undefined
              ? "had not been told to stop"
              : `was told to stop ${((now - x.abortAt) / 1000).toFixed(3)}s ago and still runs`),
        );
      }
    }
    this.#works.push(w);
    if (this.#works.length > 64) this.#works.splice(0, 32);
    this.#running.add(w);
    return new Promise<void>((resolve) => {
      const onAbort = () => {
        const t = this.sched.now;
        w.abortAt = t;
        w.claimEndAtAbort = this.#claimEnd(r.identity);
        const late = r.lateMaxMs > 0;
        w.lateMs = late ? r.rng.next() * r.lateMaxMs : r.rng.next() * 20;
        this.note(`r${r.index} work told to stop; stops in ${w.lateMs.toFixed(0)} ms`);
        this.sched.after(w.lateMs, () => {
          this.#endWork(w);
          resolve();
        }, inc);
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  #endWork(w: Work) {
    if (w.end !== undefined) return;
    w.end = this.sched.now;
    this.#running.delete(w);
    this.note(`r${w.replica} WORK END token=${w.token}`);
  }

  // ---- claims: the last write of each identity that the store applied -----------

  #applied(r: Replica, _sentAt: number, lease: Lease, seen: Map<string, number>) {
    const h = lease.spec?.holderIdentity;
    const d = lease.spec?.leaseDurationSeconds;
    if (h === r.identity && typeof d === "number") {
      this.#claims.set(r.identity, {
        appliedAt: this.#storeChangedAt,
        durMs: d * 1000,
        rv: Number(lease.metadata.resourceVersion),
        transitions: lease.spec?.leaseTransitions,
        seen,
        inc: r.inc?.no ?? -1,
        acquiring: this.#prevHolder !== r.identity,
        acked: false,
      });
    } else {
      this.#claims.set(r.identity, undefined);
    }
  }

  /**
   * The latest true time another replica could take over from `identity`: it
   * observes the record no earlier than the store applied it and waits the
   * written leaseDurationSeconds on a clock up to MAX_DRIFT fast.
   */
  #claimEnd(identity: string): number {
    const c = this.#claims.get(identity);
    return c ? c.appliedAt + c.durMs / (1 + MAX_DRIFT) : -Infinity;
  }

  // ---- rates -------------------------------------------------------------------

  #countRequest(r: Replica, op: string) {
    const b = Math.floor(this.sched.now / 1000);
    if (b !== r.reqBucket) {
      r.reqBucket = b;
      r.reqCount = 0;
    }
    r.reqCount++;
    if (r.reqCount > this.maxReq) this.maxReq = r.reqCount;
    if (r.reqCount > RATE_BOUND) {
      this.violate("request-rate", `r${r.index} sent more than ${RATE_BOUND} requests within one second (last: ${op})`);
    }
  }

  // ---- faults ------------------------------------------------------------------

  #leaderIndex(): number {
    for (const r of this.replicas) if (r.inc?.alive && r.inc.elector.isLeader) return r.index;
    return -1;
  }

  #startFault(f: FaultSpec) {
    const pinned = this.opts.targets?.[f.i];
    const target = pinned !== undefined ? pinned : f.target >= 0 ? f.target : (() => {
      const l = this.#leaderIndex();
      return l >= 0 ? l : this.rng.fork(`target${f.i}`).int(0, this.replicas.length - 1);
    })();
    const r = this.replicas[target];
    this.#targets[f.i] = target;
    this.note(`FAULT ${describeFault(f)} -> r${target}`);
    const LD = this.timing.leaseDuration;
    switch (f.kind) {
      case "edit-takeover": {
        const cur = this.store.peek();
        if (cur) {
          this.store.edit({
            ...cur.spec,
            holderIdentity: "operator",
            leaseDurationSeconds: Math.ceil(LD / 1000),
            leaseTransitions: (Number(cur.spec?.leaseTransitions) || 0) + 1,
          });
        }
        return;
      }
      case "edit-clear": {
        const cur = this.store.peek();
        if (cur) {
          for (const w of this.#running) w.clearedWhileRunning = true;
          this.store.edit({ ...cur.spec, holderIdentity: "" });
          this.#lastClearRv = this.#storeRv;
        }
        return;
      }
      case "edit-touch": {
        const cur = this.store.peek();
        if (cur) this.store.edit({ ...cur.spec, renewTime: "2026-01-01T00:00:00.000000Z" });
        return;
      }
      case "edit-delete":
        if (f.p.clearFirst) {
          const cur = this.store.peek();
          if (cur) {
            for (const w of this.#running) w.clearedWhileRunning = true;
            this.store.edit({ ...cur.spec, holderIdentity: "" });
            this.#lastClearRv = this.#storeRv;
            this.sched.after(Number(f.p.afterMs), () => this.store.delete());
          }
          return;
        }
        this.store.delete();
        return;
      case "wall-jump":
        r.inc?.clock.jumpWall(Number(f.p.ms));
        return;
      case "crash":
        if (r.inc) {
          this.#kill(r, "CRASHED");
          r.down++;
          this.sched.at(f.at + f.dur, () => {
            if (--r.down === 0 && !r.inc) this.#start(r);
          });
        }
        return;
      case "shutdown":
        if (r.inc) {
          const inc = r.inc;
          this.note(`r${r.index} shutdown requested`);
          inc.stop.abort();
          r.down++;
          this.sched.at(f.at + f.dur, () => {
            if (r.inc === inc) this.#kill(r, "stopped (process exit)");
            if (--r.down === 0 && !r.inc) this.#start(r);
          });
        }
        return;
    }
    const active = { ...f, target };
    this.#active.add(active);
    this.#recompute();
    this.sched.at(f.at + f.dur, () => {
      this.#active.delete(active);
      this.note(`FAULT END #${f.i} ${f.kind}`);
      this.#recompute();
    });
  }

  #recompute() {
    for (const r of this.replicas) {
      Object.assign(r.faults, noFaults());
      r.lateMaxMs = 0;
    }
    this.#recomputeInner();
    const none = JSON.stringify(noFaults());
    for (const r of this.replicas) {
      const faulted = r.lateMaxMs > 0 || JSON.stringify(r.faults) !== none;
      if (faulted) r.quietSince = Infinity;
      else if (r.quietSince === Infinity) r.quietSince = this.sched.now;
    }
  }

  #recomputeInner() {
    for (const f of this.#active) {
      const end = f.at + f.dur;
      for (const r of this.replicas) {
        const me = r.index === f.target;
        const x = r.faults;
        switch (f.kind) {
          case "conflict-storm":
            x.conflictP = Math.max(x.conflictP, Number(f.p.p));
            break;
          case "throttle-storm":
            x.throttleP = Math.max(x.throttleP, Number(f.p.p));
            x.retryAfter = retryAfterValue(f.p.retryAfter);
            break;
          case "server-errors":
            x.serverErrorP = Math.max(x.serverErrorP, Number(f.p.p));
            break;
        }
        if (!me) continue;
        switch (f.kind) {
          case "partition":
            x.partition = f.p.mode === "refuse" ? "refuse" : "blackhole";
            x.partitionEnd = Math.max(x.partitionEnd, end);
            break;
          case "drop":
            x.dropP = Math.max(x.dropP, Number(f.p.p));
            break;
          case "lost-response":
            x.lostP = Math.max(x.lostP, Number(f.p.p));
            break;
          case "slow":
            x.slowFactor = Math.max(x.slowFactor, Number(f.p.factor));
            x.slowAddMs = Math.max(x.slowAddMs, Number(f.p.addMs));
            break;
          case "watch-chaos":
            x.watchLoseP = Math.max(x.watchLoseP, Number(f.p.lose));
            x.watchDupP = Math.max(x.watchDupP, Number(f.p.dup));
            x.watchReorderMs = Math.max(x.watchReorderMs, Number(f.p.reorderMs));
            break;
          case "watch-end-at-once":
            x.watchEndAtOnce = true;
            x.watchTruncate ||= !!f.p.truncate;
            break;
          case "token-fail":
            x.tokenFail = true;
            break;
          case "token-hang":
            x.tokenHangUntil = Math.max(x.tokenHangUntil, end);
            break;
          case "hang":
            x.hangUntil = Math.max(x.hangUntil, end);
            break;
          case "late-work":
            r.lateMaxMs = Math.max(r.lateMaxMs, Number(f.p.maxMs));
            break;
        }
      }
    }
  }

  #driftClocks(rng: Rng) {
    const period = 5000 + rng.next() * 15000;
    this.sched.after(period, () => {
      for (const r of this.replicas) {
        r.rate = Math.min(1 + MAX_DRIFT, Math.max(1 - MAX_DRIFT, r.rate + (rng.next() * 2 - 1) * MAX_DRIFT * 0.5));
        r.inc?.clock.setRate(r.rate);
      }
      this.#driftClocks(rng);
    });
  }

  // ---- invariants checked after every step -------------------------------------------

  #check() {
    const now = this.sched.now;
    let leader = false;
    for (const r of this.replicas) {
      const inc = r.inc;
      if (!inc?.alive) continue;
      if (inc.elector.isLeader) {
        leader = true;
        const end = this.#claimEnd(r.identity);
        if (now > end) {
          this.violate(
            "leads-past-claim",
            end === -Infinity
              ? `r${r.index} believes it leads but its last write to the Lease (if any) did not claim it`
              : `r${r.index} still believes it leads ${
                ((now - end) / 1000).toFixed(3)
              }s after another replica could have taken the Lease (its last applied write + written leaseDurationSeconds on a clock ${
                MAX_DRIFT * 100
              }% fast)`,
          );
        }
      }
      // An acquiring write that landed (its answer lost) is this replica's: it must
      // lead within a request timeout and a poll (2.2 x retryPeriod) of the later of
      // the write landing and the faults on its path healing.
      const c = this.#claims.get(r.identity);
      if (
        c && c.acquiring && !c.acked && c.inc === inc.no && this.#storeRv === c.rv && !inc.elector.isLeader &&
        !inc.stop.signal.aborted && ![...this.#running].some((w) => w.replica === r.index)
      ) {
        const since = Math.max(c.appliedAt, r.quietSince, this.#holdUntil);
        // The writer learns of the lost answer when its request times out, then polls.
        const bound = Math.max(1000, this.timing.renewDeadline / 2) + JITTER * this.timing.retryPeriod + 2000;
        if (now > since + bound) {
          this.violate(
            "own-write-not-adopted",
            `r${r.index}'s acquiring write (rv ${c.rv}) is the Lease, but r${r.index} does not lead ${
              ((now - since) / 1000).toFixed(3)
            }s after it landed and its network healed`,
          );
        }
      }
      if (inc.clock.pending > TIMER_BOUND) {
        this.violate("timer-growth", `r${r.index} has ${inc.clock.pending} pending timers`);
      }
      const b = Math.floor(now / 1000);
      if (b !== r.timerBucket) {
        r.timerBucket = b;
        r.timerBase = inc.clock.fired;
      } else if (inc.clock.fired - r.timerBase > TIMER_RATE_BOUND) {
        this.violate("timer-spin", `r${r.index} fired more than ${TIMER_RATE_BOUND} timers within one second`);
      }
      let n = listenerCount(inc.stop.signal);
      for (const s of inc.watchSignals) n = Math.max(n, listenerCount(s));
      if (n > LISTENER_BOUND) this.violate("listener-growth", `r${r.index} has ${n} abort listeners on one signal`);
      if (inc.watches > WATCH_BOUND) this.violate("watch-growth", `r${r.index} has ${inc.watches} open watches`);
    }
    for (const w of this.#running) {
      const n = listenerCount(w.signal);
      if (n > LISTENER_BOUND) this.violate("listener-growth", `r${w.replica}'s work signal has ${n} abort listeners`);
    }
    if (this.sched.size > QUEUE_BOUND) this.violate("queue-growth", `${this.sched.size} scheduled events`);
    // Takeover: the Lease unchanged for longer than any claim lasts while some replica
    // ran healthy all along (no fault of its own, no global fault, no Retry-After in
    // force): that replica should have taken it (a partitioned or dead holder's claim
    // expires for everyone else, whatever the other replicas suffer).
    if (now - this.#storeChangedAt > this.healBound && now - this.#holdUntil > this.healBound) {
      for (const r of this.replicas) {
        const inc = r.inc;
        if (!inc?.alive || r.down !== 0 || inc.elector.isLeader) continue;
        const since = Math.max(this.#storeChangedAt, this.#holdUntil, r.quietSince, inc.startedAt);
        if (now - since > this.healBound) {
          this.violate(
            "no-takeover",
            `the Lease has not changed since ${(this.#storeChangedAt / 1000).toFixed(3)}s although r${r.index} ran ` +
              `without faults since ${(since / 1000).toFixed(3)}s (${(this.healBound / 1000).toFixed(1)}s allowed)`,
          );
          break;
        }
      }
    }
    // Liveness: after faults heal, a leader within the bound.
    const healthy = this.#active.size === 0 && now >= this.#holdUntil &&
      this.replicas.every((r) => r.inc?.alive && r.down === 0) &&
      ![...this.#running].some((w) => w.abortAt !== undefined);
    if (!healthy) {
      this.#healStart = undefined;
      return;
    }
    if (this.#healStart === undefined) {
      this.#healStart = now;
      this.#healSatisfied = false;
      const start = now;
      this.sched.at(now + this.healBound + 1, () => {
        if (this.#healStart === start && !this.#healSatisfied) {
          this.violate(
            "no-leader-after-heal",
            `no leader ${(this.healBound / 1000).toFixed(1)}s after the faults healed at ${(start / 1000).toFixed(3)}s`,
          );
        }
      });
    }
    if (leader && !this.#healSatisfied) {
      this.#healSatisfied = true;
      this.healWindows++;
      this.maxHeal = Math.max(this.maxHeal, now - this.#healStart);
    }
  }

  // ---- run ------------------------------------------------------------------------

  async run(): Promise<RunResult> {
    currentWorld = this;
    try {
      for (const f of this.kept) this.sched.at(f.at, () => this.#startFault(f));
      this.#driftClocks(this.rng.fork("drift"));
      const boot = this.rng.fork("boot");
      for (const r of this.replicas) this.sched.at(boot.next() * this.timing.retryPeriod, () => this.#start(r));
      const until = this.opts.untilMs ?? this.opts.minutes * 60000;
      const stopAtFirst = this.opts.stopAtFirst ?? true;
      while (await this.sched.step(until)) {
        this.#check();
        if (stopAtFirst && this.violations.length) break;
      }
      if (!this.violations.length || !stopAtFirst) this.sched.now = Math.max(this.sched.now, until);
      return this.result();
    } finally {
      for (const r of this.replicas) if (r.inc) r.inc.alive = false;
      for (const r of this.replicas) for (const c of [...(r.inc?.api.closers ?? [])]) c();
      currentWorld = undefined;
    }
  }

  result(): RunResult {
    return {
      seed: this.opts.seed,
      http: !!this.opts.http,
      replicas: this.replicas.length,
      profile: this.profile,
      timing: this.timing,
      steps: this.sched.steps,
      simMs: this.sched.now,
      violations: this.violations,
      schedule: this.schedule,
      kept: this.kept.map((f) => f.i),
      terms: this.terms,
      excusedOverlaps: this.excusedOverlaps,
      excusedFencing: this.excusedFencing,
      maxRequestsPerSecond: this.maxReq,
      maxHealToLeaderMs: this.maxHeal,
      healWindows: this.healWindows,
      configRejected: this.configRejected,
      targets: this.#targets,
      trace: this.#trace,
    };
  }
}

function recordText(l: Lease): string {
  const s = l.spec ?? {};
  return `holder=${
    JSON.stringify(s.holderIdentity)
  } dur=${s.leaseDurationSeconds} transitions=${s.leaseTransitions} renew=${String(s.renewTime).slice(11, 23)}`;
}

export async function runOnce(opts: RunOptions): Promise<RunResult> {
  return await new World(opts).run();
}
