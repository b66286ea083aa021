// Table tests of the pure election rules (lib/election_rules.ts): every input
// combination that matters, with the decision it must give.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  decideOnRead,
  desiredRecord,
  fastPath,
  graceMs,
  mayRelease,
  nextAttemptAt,
  type Observation,
  type ReadDecision,
  releaseRecord,
  watchReopen,
} from "../lib/election_rules.ts";
import type { LeaderElectionRecord } from "../lib/lease.ts";

const rec = (holderIdentity: string, extra: Partial<LeaderElectionRecord> = {}): LeaderElectionRecord => ({
  holderIdentity,
  leaseDurationSeconds: 15,
  acquireTime: "2026-01-01T00:00:00.000000Z",
  renewTime: "2026-01-01T00:00:05.000000Z",
  leaseTransitions: 3,
  ...extra,
});
const obs = (holder: string, at = 0, extra: Partial<Observation> = {}): Observation => ({
  holder,
  record: rec(holder),
  durationMs: 15000,
  at,
  ...extra,
});
const malformed = (holder = "<malformed>", at = 0): Observation => ({ holder, durationMs: 15000, at });

test("decideOnRead: every case of leader/follower × record state", () => {
  const me = "a";
  const own = rec("a", { renewTime: "2026-01-01T00:00:09.000000Z", leaseTransitions: 4 });
  const cases: [string, Parameters<typeof decideOnRead>[0], ReadDecision][] = [
    // The leader.
    ["leader reads its own record", {
      identity: me,
      leading: true,
      read: obs("a"),
      last: obs("a"),
      now: 1,
      ownWrites: [],
    }, { action: "renew" }],
    ["leader reads another holder", {
      identity: me,
      leading: true,
      read: obs("b"),
      last: obs("a"),
      now: 1,
      ownWrites: [],
    }, { action: "stop", reason: "lease-taken" }],
    ["leader reads a free Lease", {
      identity: me,
      leading: true,
      read: obs(""),
      last: obs("a"),
      now: 1,
      ownWrites: [],
    }, { action: "stop", reason: "lease-taken" }],
    ["leader reads a malformed record naming it", {
      identity: me,
      leading: true,
      read: malformed("a"),
      last: obs("a"),
      now: 1,
      ownWrites: [],
    }, { action: "stop", reason: "lease-malformed" }],
    ["leader finds the Lease deleted", {
      identity: me,
      leading: true,
      read: undefined,
      last: obs("a"),
      now: 1,
      ownWrites: [],
    }, { action: "stop", reason: "lease-deleted" }],
    // A follower.
    ["live holder", {
      identity: me,
      leading: false,
      read: obs("b", 0),
      last: obs("b", 0),
      now: 14999,
      ownWrites: [],
    }, { action: "wait" }],
    ["expired holder", {
      identity: me,
      leading: false,
      read: obs("b", 0),
      last: obs("b", 0),
      now: 15000,
      ownWrites: [],
    }, { action: "take-over" }],
    ["free Lease", {
      identity: me,
      leading: false,
      read: obs("", 0),
      last: undefined,
      now: 0,
      ownWrites: [],
    }, { action: "take-over" }],
    ["live malformed record", {
      identity: me,
      leading: false,
      read: malformed(),
      last: undefined,
      now: 14999,
      ownWrites: [],
    }, { action: "wait" }],
    ["expired malformed record", {
      identity: me,
      leading: false,
      read: malformed(),
      last: undefined,
      now: 15000,
      ownWrites: [],
    }, { action: "take-over" }],
    ["live record of this identity, not its own write (startup)", {
      identity: me,
      leading: false,
      read: obs("a", 0),
      last: undefined,
      now: 1,
      ownWrites: [],
    }, { action: "wait" }],
    ["live record that is exactly its own lost write", {
      identity: me,
      leading: false,
      read: { ...obs("a", 0), record: own },
      last: obs(""),
      now: 1,
      ownWrites: [rec("a"), own],
    }, { action: "adopt" }],
    ["own identity, one field off its own write", {
      identity: me,
      leading: false,
      read: { ...obs("a", 0), record: { ...own, leaseTransitions: 5 } },
      last: obs(""),
      now: 1,
      ownWrites: [own],
    }, { action: "wait" }],
    ["missing Lease, nothing seen before", {
      identity: me,
      leading: false,
      read: undefined,
      last: undefined,
      now: 0,
      ownWrites: [],
    }, { action: "create" }],
    ["missing Lease under a live record", {
      identity: me,
      leading: false,
      read: undefined,
      last: obs("b", 0),
      now: 14999,
      ownWrites: [],
    }, { action: "wait" }],
    ["missing Lease, last record expired", {
      identity: me,
      leading: false,
      read: undefined,
      last: obs("b", 0),
      now: 15000,
      ownWrites: [],
    }, { action: "create" }],
    ["missing Lease, last seen free", {
      identity: me,
      leading: false,
      read: undefined,
      last: obs("", 0),
      now: 1,
      ownWrites: [],
    }, { action: "create" }],
  ];
  for (const [name, input, want] of cases) assert.deepEqual(decideOnRead(input), want, name);
});

test("fastPath: only the leader's own record or a free, undeleted Lease is written without a read", () => {
  assert.equal(fastPath("a", true, obs("a")), "renew");
  assert.equal(fastPath("a", true, obs("b")), undefined);
  assert.equal(fastPath("a", true, malformed("a")), undefined);
  assert.equal(fastPath("a", false, obs("")), "take-free");
  assert.equal(fastPath("a", false, obs("", 0, { deleted: true })), undefined);
  assert.equal(fastPath("a", false, obs("b")), undefined);
  assert.equal(fastPath("a", false, obs("a")), undefined);
  assert.equal(fastPath("a", false, undefined), undefined);
});

test("desiredRecord and releaseRecord: terms, durations and times", () => {
  const prev = rec("b");
  assert.deepEqual(desiredRecord("a", 15000, prev, false, "W"), {
    holderIdentity: "a",
    leaseDurationSeconds: 15,
    acquireTime: "W",
    renewTime: "W",
    leaseTransitions: 4,
  });
  assert.deepEqual(desiredRecord("a", 15000, rec("a"), true, "W"), {
    ...rec("a"),
    renewTime: "W",
  });
  assert.equal(desiredRecord("a", 2000, undefined, false, "W").leaseTransitions, 0);
  assert.equal(desiredRecord("a", 2000, undefined, false, "W").leaseDurationSeconds, 2);
  assert.equal(desiredRecord("a", 15000, { ...rec("a"), acquireTime: "" }, true, "W").acquireTime, "W");
  assert.deepEqual(releaseRecord(rec("a"), "W"), {
    holderIdentity: "",
    leaseDurationSeconds: 1,
    acquireTime: "W",
    renewTime: "W",
    leaseTransitions: 3,
  });
});

test("nextAttemptAt: a release is acted on at once, a claim waited out, polling only without a watch", () => {
  const base = { start: 1000, retryAfterMs: 0, pollAt: 4200, changed: false, watching: true };
  const cases: [string, Parameters<typeof nextAttemptAt>[0], number][] = [
    ["nothing seen", { ...base, observed: undefined }, 4200],
    ["free, unchanged", { ...base, observed: obs("") }, 4200],
    ["free, newly seen", { ...base, observed: obs(""), changed: true }, 1000],
    ["free, newly seen, Retry-After", { ...base, observed: obs(""), changed: true, retryAfterMs: 5000 }, 6000],
    ["deleted, newly seen", { ...base, observed: obs("b", 0, { deleted: true }), changed: true }, 1000],
    ["live claim, watching", { ...base, observed: obs("b", 0) }, 15000],
    ["live claim, polling", { ...base, observed: obs("b", 0), watching: false }, 4200],
    ["claim ending before the poll", { ...base, observed: obs("b", -12000), watching: false }, 3000],
    ["claim over before the wait began", { ...base, observed: obs("b", -15000) }, 4200],
    ["live claim, Retry-After beyond it", { ...base, observed: obs("b", 0), retryAfterMs: 20000 }, 21000],
  ];
  for (const [name, input, want] of cases) assert.equal(nextAttemptAt(input), want, name);
});

test("graceMs and mayRelease", () => {
  assert.equal(graceMs(1000, 15000, 11000), 5000);
  assert.equal(graceMs(1000, 15000, 16000), 0);
  assert.equal(graceMs(1000, 15000, 99999), 0);
  for (const reason of ["shutdown", "renew-deadline", "lease-malformed"] as const) {
    assert.equal(mayRelease(reason, true, true), true, reason);
    assert.equal(mayRelease(reason, false, true), false, reason);
    assert.equal(mayRelease(reason, true, false), false, reason);
  }
  for (const reason of ["lease-taken", "lease-deleted"] as const) assert.equal(mayRelease(reason, true, true), false);
});

test("watchReopen: at most one watch per second; doubling to 30 s; reset by a healthy watch", () => {
  // A healthy watch that the server closed reopens at once with the backoff reset.
  assert.deepEqual(watchReopen({ how: "closed", lived: 10000, events: 0, backoff: 16000, random: 0.9 }), {
    delay: 0,
    backoff: 1000,
  });
  // Watches ended at once: 1, 2, 4, 8, 16, 30, 30 s (× 1.5 jitter here).
  let backoff = 1000;
  const delays: number[] = [];
  for (let i = 0; i < 7; i++) {
    const r = watchReopen({ how: "closed", lived: 0, events: 0, backoff, random: 0.5 });
    delays.push(r.delay);
    backoff = r.backoff;
  }
  assert.deepEqual(delays, [1500, 3000, 6000, 12000, 24000, 45000, 45000]);
  // A watch that delivered an event resets the backoff but still waits at least 1 s.
  assert.deepEqual(watchReopen({ how: "closed", lived: 5, events: 1, backoff: 30000, random: 0 }), {
    delay: 1000,
    backoff: 2000,
  });
  // Failures back off too; a 403 waits at least 60 s.
  assert.equal(watchReopen({ how: "failed", lived: 20000, events: 0, backoff: 8000, random: 0 }).delay, 1000);
  assert.equal(watchReopen({ how: "forbidden", lived: 0, events: 0, backoff: 1000, random: 0 }).delay, 60000);
  // Whatever the inputs, never below 1 s.
  for (const random of [0, 0.999]) {
    for (const how of ["closed", "failed", "forbidden"] as const) {
      for (const lived of [0, 9999]) {
        for (const b of [0, 1, 1000, 30000]) {
          const d = watchReopen({ how, lived, events: 0, backoff: b, random }).delay;
          assert.ok(d >= 1000, `${how} ${lived} ${b} ${random}: ${d}`);
        }
      }
    }
  }
});
