// Coordinated leader election (KEP-4355) in the elector: the rules, then real
// electors on the in-memory store with the test playing the API server's
// election controller (it writes the holder in and sets preferredHolder).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { until } from "./support/manual_clock_wait.ts";
import {
  type LeaderContext,
  LeaderElector,
  type LeaderElectorOptions,
  ManualClock,
  MemoryLeaseStore,
  settle,
  type StopReason,
} from "../mod.ts";
import { decideOnRead, fastPath, type Observation } from "../lib/election_rules.ts";
import type { LeaderElectionRecord } from "../lib/lease.ts";

const NS = "default";
const NAME = "cle-lease";

const rec = (holderIdentity: string, extra: Partial<LeaderElectionRecord> = {}): LeaderElectionRecord => ({
  holderIdentity,
  leaseDurationSeconds: 15,
  acquireTime: "2026-01-01T00:00:00.000000Z",
  renewTime: "2026-01-01T00:00:05.000000Z",
  leaseTransitions: 3,
  ...extra,
});
const obs = (holder: string, extra: Partial<Observation> = {}): Observation => ({
  holder,
  record: rec(holder),
  durationMs: 15000,
  at: 0,
  ...extra,
});

test("coordinated rules: a follower never creates, never takes a free or expired Lease, takes over when named", () => {
  const base = { identity: "a", leading: false, ownWrites: [], coordinated: true };
  assert.deepEqual(decideOnRead({ ...base, read: undefined, last: undefined, now: 0 }), { action: "wait" });
  assert.deepEqual(decideOnRead({ ...base, read: obs(""), last: obs(""), now: 0 }), { action: "wait" });
  assert.deepEqual(decideOnRead({ ...base, read: obs("b"), last: obs("b"), now: 99999 }), { action: "wait" });
  // Named by the controller (a change to this identity that it did not write): a new term.
  assert.deepEqual(decideOnRead({ ...base, read: obs("a", { named: true }), last: obs("b"), now: 1 }), {
    action: "take-over",
  });
  // A live record naming this identity seen at start-up is waited out, as without coordination.
  assert.deepEqual(decideOnRead({ ...base, read: obs("a"), last: undefined, now: 1 }), { action: "wait" });
  // Its own acquiring write whose answer was lost is still adopted.
  const mine = rec("a", { leaseTransitions: 9 });
  assert.deepEqual(
    decideOnRead({ ...base, read: { ...obs("a"), record: mine }, last: obs("b"), now: 1, ownWrites: [mine] }),
    { action: "adopt" },
  );
  // Without coordination the same free Lease is taken.
  assert.deepEqual(decideOnRead({ ...base, coordinated: false, read: obs(""), last: obs(""), now: 0 }), {
    action: "take-over",
  });
  assert.equal(fastPath("a", false, obs(""), true), undefined);
  assert.equal(fastPath("a", false, obs(""), false), "take-free");
});

test("coordinated rules: the leader stops when preferredHolder names someone else, not itself", () => {
  const base = { identity: "a", leading: true, ownWrites: [], coordinated: true, now: 0 };
  assert.deepEqual(decideOnRead({ ...base, read: obs("a", { preferredHolder: "b" }), last: obs("a") }), {
    action: "stop",
    reason: "preferred-holder",
  });
  assert.deepEqual(decideOnRead({ ...base, read: obs("a", { preferredHolder: "a" }), last: obs("a") }), {
    action: "renew",
  });
  assert.deepEqual(
    decideOnRead({ ...base, coordinated: false, read: obs("a", { preferredHolder: "b" }), last: obs("a") }),
    { action: "renew" },
    "without coordination preferredHolder is only kept",
  );
});

interface Replica {
  elector: LeaderElector;
  stop: AbortController;
  done: Promise<void>;
  events: string[];
  terms: { start: number; end?: number; token: string }[];
}

function replica(
  store: MemoryLeaseStore,
  clock: ManualClock,
  identity: string,
  extra: Partial<LeaderElectorOptions> = {},
) {
  const events: string[] = [];
  const terms: Replica["terms"] = [];
  const stop = new AbortController();
  const elector = new LeaderElector({
    lease: store.api(NS, NAME),
    identity,
    clock,
    random: () => 0.5,
    coordinated: true,
    onStartedLeading: async ({ signal, fencingToken }: LeaderContext) => {
      const term: Replica["terms"][number] = { start: clock.now(), token: fencingToken.value };
      terms.push(term);
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      term.end = clock.now();
    },
    onStoppedLeading: (reason: StopReason) => events.push(`stopped:${reason}`),
    ...extra,
  });
  return { elector, stop, done: elector.run(stop.signal), events, terms };
}

/** What the election controller writes: the holder, a short duration, now, and the strategy. */
function controllerElects(store: MemoryLeaseStore, clock: ManualClock, holder: string) {
  const cur = store.peek(NS, NAME);
  store.put(NS, NAME, {
    metadata: cur?.metadata,
    spec: {
      ...(cur?.spec ?? {}),
      holderIdentity: holder,
      leaseDurationSeconds: 5,
      renewTime: clock.wallTime().toISOString().replace("Z", "000Z"),
      strategy: "OldestEmulationVersion",
      preferredHolder: null,
    },
  });
}

test("coordinated: nobody creates or takes the Lease until the controller names a holder; the named one leads", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  const b = replica(store, clock, "b");
  await until(clock, () => false, 30000, 500).catch(() => {});
  assert.equal(store.peek(NS, NAME), undefined, "no replica created the Lease");
  controllerElects(store, clock, "b");
  const waited = await until(clock, () => b.elector.isLeader);
  assert.ok(waited <= 100, `b started within one step of being named (${waited} ms)`);
  assert.equal(a.elector.isLeader, false);
  const l = store.peek(NS, NAME)!;
  assert.equal(l.spec?.holderIdentity, "b");
  assert.equal(l.spec?.strategy, "OldestEmulationVersion", "every write keeps spec.strategy");
  assert.equal(l.spec?.leaseTransitions, 1, "a new term over the controller's record");
  assert.equal(b.terms[0].token, "1/b");
  // A free Lease is not taken either: b shuts down and releases, a keeps waiting.
  b.stop.abort();
  await until(clock, () => store.peek(NS, NAME)?.spec?.holderIdentity === "");
  await until(clock, () => false, 30000, 500).catch(() => {});
  assert.equal(a.elector.isLeader, false);
  assert.equal(store.peek(NS, NAME)?.spec?.strategy, "OldestEmulationVersion", "the release keeps the strategy");
  a.stop.abort();
  await until(clock, () => false, 1000).catch(() => {});
  await Promise.all([a.done, b.done]);
});

test("coordinated: preferredHolder ends the term at once (watch), the work stops, the Lease is released", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  const b = replica(store, clock, "b");
  await settle();
  controllerElects(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  await clock.advance(700); // between two renewals (retryPeriod 2 s)
  const cur = store.peek(NS, NAME)!;
  store.put(NS, NAME, { metadata: cur.metadata, spec: { ...cur.spec, preferredHolder: "b" } });
  const t0 = clock.now();
  const took = await until(clock, () => store.peek(NS, NAME)?.spec?.holderIdentity === "", 20000, 10);
  assert.ok(took <= 20, `released ${took} ms after preferredHolder was set, not at the next renewal`);
  assert.deepEqual(a.events, ["stopped:preferred-holder"]);
  assert.ok(a.terms[0].end !== undefined && a.terms[0].end <= t0 + 20, "the work was stopped before the release");
  const released = store.peek(NS, NAME)!;
  assert.equal(released.spec?.strategy, "OldestEmulationVersion");
  assert.equal(released.spec?.preferredHolder, "b", "kept for the controller");
  assert.equal(b.elector.isLeader, false, "b waits for the controller even though the Lease is free");
  controllerElects(store, clock, "b");
  await until(clock, () => b.elector.isLeader);
  assert.ok(b.terms[0].start >= a.terms[0].end!, "no overlap");
  a.stop.abort();
  b.stop.abort();
  await until(clock, () => false, 2000).catch(() => {});
  await Promise.all([a.done, b.done]);
});

test("coordinated: without a watch the leader notices preferredHolder at its next renewal", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await settle();
  await clock.advance(100);
  controllerElects(store, clock, "a");
  await until(clock, () => a.elector.isLeader, 10000);
  const cur = store.peek(NS, NAME)!;
  store.put(NS, NAME, { metadata: cur.metadata, spec: { ...cur.spec, preferredHolder: "z" } });
  const took = await until(clock, () => !a.elector.isLeader, 20000, 10);
  assert.ok(took <= 2000 * 2.2 + 50, `stopped within one jittered retryPeriod (${took} ms)`);
  assert.deepEqual(a.events, ["stopped:preferred-holder"]);
  a.stop.abort();
  await until(clock, () => false, 2000).catch(() => {});
  await a.done;
});

test("outside coordinated mode, strategy and preferredHolder are kept on every write and otherwise ignored", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, {
    spec: { holderIdentity: "", leaseDurationSeconds: 1, strategy: "OldestEmulationVersion", preferredHolder: "z" },
  });
  const a = replica(store, clock, "a", { coordinated: false });
  await until(clock, () => a.elector.isLeader);
  await clock.advance(5000); // renewals
  assert.equal(a.elector.isLeader, true, "preferredHolder does not end a term outside coordinated mode");
  let l = store.peek(NS, NAME)!;
  assert.equal(l.spec?.strategy, "OldestEmulationVersion");
  assert.equal(l.spec?.preferredHolder, "z");
  a.stop.abort();
  await until(clock, () => store.peek(NS, NAME)?.spec?.holderIdentity === "");
  l = store.peek(NS, NAME)!;
  assert.equal(l.spec?.strategy, "OldestEmulationVersion", "kept by the release");
  assert.equal(l.spec?.preferredHolder, "z");
  await a.done;
});
