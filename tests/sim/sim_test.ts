// The simulator's own tests: its checker must catch deliberately broken electors,
// pass the real one on a quiet run, and replay a seed exactly.
import { test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import type { LeaderElectorOptions } from "../../lib/elector.ts";
import { type ElectorLike, runOnce } from "./world.ts";

/** Claims leadership at once and never writes the Lease. */
class ClaimsWithoutWriting implements ElectorLike {
  isLeader = false;
  #o: LeaderElectorOptions;
  constructor(o: LeaderElectorOptions) {
    this.#o = o;
  }
  async run(signal?: AbortSignal): Promise<void> {
    this.isLeader = true;
    await this.#o.onStartedLeading?.({
      signal: signal ?? new AbortController().signal,
      fencingToken: {
        holderIdentity: this.#o.identity,
        leaseTransitions: 0,
        resourceVersion: "",
        acquireTime: "",
        value: "",
      },
    });
  }
}

/** Reads the Lease in a tight loop. */
class ReadsInALoop implements ElectorLike {
  isLeader = false;
  #o: LeaderElectorOptions;
  constructor(o: LeaderElectorOptions) {
    this.#o = o;
  }
  async run(signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) await this.#o.lease.get(signal).catch(() => {});
  }
}

/** Sleeps on NaN (a 1 ms timer) forever. */
class SpinsOnTimers implements ElectorLike {
  isLeader = false;
  #o: LeaderElectorOptions;
  constructor(o: LeaderElectorOptions) {
    this.#o = o;
  }
  async run(signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) await this.#o.clock!.sleep(NaN, signal).catch(() => {});
  }
}

test("an elector that claims leadership without writing is caught", async () => {
  const r = await runOnce({
    seed: 7,
    replicas: 3,
    profile: "fast",
    minutes: 1,
    faults: [],
    factory: (o) => new ClaimsWithoutWriting(o),
  });
  assert.ok(r.violations.length > 0, "no violation reported");
  const kinds = new Set(r.violations.map((v) => v.kind));
  assert.ok(kinds.has("leads-past-claim") || kinds.has("overlap"), [...kinds].join(","));
});

test("an elector that reads in a tight loop breaks the request-rate bound", async () => {
  const r = await runOnce({
    seed: 7,
    replicas: 3,
    profile: "fast",
    minutes: 1,
    faults: [],
    factory: (o) => new ReadsInALoop(o),
  });
  assert.equal(r.violations[0]?.kind, "request-rate");
});

test("an elector that spins on 1 ms timers breaks the timer-rate bound", async () => {
  const r = await runOnce({
    seed: 7,
    replicas: 3,
    profile: "fast",
    minutes: 1,
    faults: [],
    factory: (o) => new SpinsOnTimers(o),
  });
  assert.equal(r.violations[0]?.kind, "timer-spin");
});

test("the real elector elects one leader on a run without faults", async () => {
  const r = await runOnce({ seed: 3, replicas: 5, profile: "default", minutes: 5, faults: [] });
  assert.deepEqual(r.violations, []);
  assert.equal(r.terms, 1);
  assert.ok(r.steps > 500, `${r.steps} steps`);
});

test("a seed replays exactly", async () => {
  const a = await runOnce({ seed: 11, replicas: 4, profile: "fast", minutes: 3 });
  const b = await runOnce({ seed: 11, replicas: 4, profile: "fast", minutes: 3 });
  assert.equal(a.steps, b.steps);
  assert.equal(a.simMs, b.simMs);
  assert.deepEqual(a.trace, b.trace);
  assert.deepEqual(a.violations, b.violations);
});
