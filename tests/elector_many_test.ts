// Many electors in one process (one per Lease, sharing one stop signal): the
// cost of a step must not grow with their number, and their renewals must not
// fire in lock-step. A manual clock and the in-memory Lease store keep both
// checks deterministic.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { shutdown, until } from "./support/manual_clock_wait.ts";
import { LeaderElector, type LeaseApi, ManualClock, MemoryLeaseStore } from "../mod.ts";
import { firstRenewWait } from "../lib/renew_rules.ts";

/** A seeded generator of numbers in [0, 1) (mulberry32), so every run draws the same jitter. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A stop signal that counts the abort listeners added to it. */
function countingStop(): { stop: AbortController; added: () => number } {
  const stop = new AbortController();
  let added = 0;
  const add = stop.signal.addEventListener.bind(stop.signal);
  stop.signal.addEventListener = ((type: string, fn: EventListenerOrEventListenerObject, o?: unknown) => {
    if (type === "abort") added++;
    add(type, fn, o as AddEventListenerOptions);
  }) as typeof stop.signal.addEventListener;
  return { stop, added: () => added };
}

test("electors sharing one stop signal add one listener each to it for the whole run, not one per step", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const { stop, added } = countingStop();
  const n = 20;
  const electors = Array.from(
    { length: n },
    (_, i) => new LeaderElector({ lease: store.api("default", `l-${i}`), identity: "me", clock, random: () => 0.5 }),
  );
  const runs = electors.map((e) => e.run(stop.signal));
  await until(clock, () => electors.every((e) => e.isLeader));
  const afterAcquire = added();
  // Ten renewal periods: every wait and every request of every elector.
  for (let i = 0; i < 10; i++) await clock.advance(2000);
  const renewals = electors.reduce((s, e) => s + e.stats.renewCount, 0);
  assert.ok(renewals >= n * 9, `${renewals} renewals`);
  assert.ok(afterAcquire <= n * 2, `${afterAcquire} listeners added while acquiring`);
  assert.equal(added(), afterAcquire, "renewals added listeners to the shared stop signal");
  await shutdown(clock, ...runs.map((done) => ({ stop, done })));
});

test("renewals of electors that acquired at the same moment are spread over the retry period", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const n = 100, retryPeriod = 2000, buckets = 10;
  // Every PUT of a renewal, by the time it was sent.
  const renewAt: number[] = [];
  const watched = (api: LeaseApi): LeaseApi => ({
    namespace: api.namespace,
    name: api.name,
    get: (s) => api.get(s),
    create: (l, s) => api.create(l, s),
    update: (l, s) => {
      renewAt.push(clock.now());
      return api.update(l, s);
    },
  });
  const random = seeded(12);
  const electors = Array.from(
    { length: n },
    (_, i) =>
      new LeaderElector({ lease: watched(store.api("default", `l-${i}`)), identity: "me", clock, random, retryPeriod }),
  );
  const stop = new AbortController();
  const runs = electors.map((e) => e.run(stop.signal));
  await until(clock, () => electors.every((e) => e.isLeader), 60000, 1);
  const acquiredAt = clock.now();
  assert.equal(acquiredAt, 0, "all acquired at once (no Lease existed)");
  // Three periods later, in steps of a tenth of the period.
  renewAt.length = 0;
  for (let t = 0; t < 3 * retryPeriod; t += retryPeriod / buckets) await clock.advance(retryPeriod / buckets);
  const counts = new Array(buckets).fill(0);
  for (const t of renewAt) counts[Math.floor((t % retryPeriod) / (retryPeriod / buckets))]++;
  const total = counts.reduce((a, b) => a + b, 0);
  assert.ok(total >= 2 * n, `${total} renewals`);
  // In lock-step every renewal falls into one bucket; spread, each holds about a tenth.
  const most = Math.max(...counts);
  assert.ok(most <= total / 4, `renewals per tenth of the retry period: ${counts.join(", ")}`);
  await shutdown(clock, ...runs.map((done) => ({ stop, done })));
});

test("firstRenewWait: a phase in (0, retryPeriod], the full period for u = 0", () => {
  const table: [number, number, number][] = [
    [2000, 0, 2000],
    [2000, 0.5, 1000],
    [2000, 0.75, 500],
    [2000, 0.999, 2],
    [500, 0.2, 400],
  ];
  for (const [rp, u, want] of table) assert.ok(Math.abs(firstRenewWait(rp, u) - want) < 1e-9, `${rp}, ${u}`);
  for (let u = 0; u < 1; u += 0.01) {
    const w = firstRenewWait(2000, u);
    assert.ok(w > 0 && w <= 2000, `u=${u}: ${w}`);
  }
});
