// Tests of the fault suite's checker on recorded event sequences: what it must
// accept (a re-list after an API server restart) and what it must reject (a real
// early takeover, an empty log, overlapping work, a failed watch).
import { test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { check, intervalsOf, type LeaseSpecView, type Observation, versionsOf } from "./checker.ts";

const T0 = 1_700_000_000_000;
const D = 4; // leaseDurationSeconds

function spec(holder: string, renew: number, transitions = 0): LeaseSpecView {
  return {
    holderIdentity: holder,
    leaseDurationSeconds: D,
    acquireTime: "2026-01-01T00:00:00.000000Z",
    renewTime: new Date(T0 + renew).toISOString().replace("Z", "000Z"),
    leaseTransitions: transitions,
  };
}

/** A renewal by `by`: the proxy saw it sent at t and answered at t+5; the checker's watch saw it at t+8. */
function renewal(by: string, rv: number, t: number, transitions = 0): Observation[] {
  const s = spec(by, t, transitions);
  return [
    { kind: "write", by, verb: "PUT", sentAt: T0 + t, answeredAt: T0 + t + 5, status: 200, rv: String(rv), spec: s },
    { kind: "watch", type: "MODIFIED", rv: String(rv), spec: s, at: T0 + t + 8 },
  ];
}

const work = (name: string, event: "start" | "stop", t: number, pid: number | undefined = 1): Observation => ({
  kind: "work",
  name,
  event,
  at: T0 + t,
  pid,
});

/**
 * client-go-3 leads and renews every 500 ms until its last write at t=2000; the
 * API server is SIGKILLed at t=2300 and back at t=5800, when the checker's watch
 * (410 Gone on its old resourceVersion) re-lists and gets client-go-3's unchanged
 * record again. bun-1 takes over at t=6000 + 165: 4165 ms after the last write, but
 * only 165 ms after the re-list showed it.
 */
function restartSequence(takeoverAt: number): Observation[] {
  const log: Observation[] = [
    {
      kind: "write",
      by: "client-go-3",
      verb: "POST",
      sentAt: T0,
      answeredAt: T0 + 6,
      status: 201,
      rv: "100",
      spec: spec("client-go-3", 0),
    },
    { kind: "watch", type: "ADDED", rv: "100", spec: spec("client-go-3", 0), at: T0 + 9 },
    work("client-go-3", "start", 20, undefined),
  ];
  let rv = 100;
  for (let t = 500; t <= 2000; t += 500) log.push(...renewal("client-go-3", ++rv, t));
  const last = rv;
  log.push({
    kind: "watch",
    type: "ADDED",
    rv: String(last),
    spec: spec("client-go-3", 2000),
    at: T0 + 5800,
    relist: true,
  });
  log.push(work("client-go-3", "stop", 2000 + 2900, undefined)); // renewDeadline 3 s after its last renewal
  log.push(...renewal("bun-1", last + 5, takeoverAt, 1));
  log.push(work("bun-1", "start", takeoverAt + 30, 77));
  log.push({ kind: "final", at: T0 + takeoverAt + 500, rv: String(last + 5) });
  return log;
}

test("a re-list after an API server restart is not a new write: the takeover 4165 ms after the last write passes", () => {
  const r = check(restartSequence(6165));
  assert.deepEqual(r.problems, []);
  assert.equal(r.redelivered, 1);
  assert.equal(r.transitions, 1);
  assert.equal(r.overlaps, 0);
});

test("a takeover 165 ms after the holder's last accepted write fails", () => {
  const log = restartSequence(2165);
  // client-go-3 stops at 4900 in the sequence: bun-1's work overlaps too; keep only the takeover problem in view.
  const r = check(log.filter((o) => !(o.kind === "work" && o.name === "bun-1")));
  assert.equal(r.problems.length, 1, r.problems.join("\n"));
  assert.match(r.problems[0], /lease taken by bun-1 from client-go-3 at most 170 ms after/);
});

test("a real early takeover is found from the watch alone, without proxy records", () => {
  const log = restartSequence(2165).filter((o) => o.kind !== "write" || o.by !== "bun-1");
  const r = check(log);
  assert.ok(
    r.problems.some((p) => /lease taken by bun-1 from client-go-3 at most 173 ms/.test(p)),
    r.problems.join("\n"),
  );
  assert.ok(r.problems.some((p) => /^overlap: client-go-3/.test(p)), r.problems.join("\n"));
});

test("an empty log fails", () => {
  const r = check([]);
  assert.ok(r.problems.includes("the checker saw no version of the Lease"));
  assert.ok(r.problems.includes("no replica ever worked"));
});

test("a log with versions but no work fails unless the scenario expects none", () => {
  const log = renewal("deno-0", 5, 0);
  assert.deepEqual(check(log).problems, ["no replica ever worked"]);
  assert.deepEqual(check(log, { expectWork: false }).problems, []);
});

test("an error of the checker's watch fails the scenario", () => {
  const log = [
    ...restartSequence(6165),
    { kind: "watch-error", at: T0 + 100, error: "500 from the watch" } as Observation,
  ];
  assert.deepEqual(check(log).problems, ["the checker's Lease watch failed: 500 from the watch"]);
});

test("a watch that never delivered the final version fails", () => {
  const log = restartSequence(6165).map((o) => (o.kind === "final" ? { ...o, rv: "999" } : o));
  assert.match(check(log).problems.join("\n"), /never delivered the final version \(rv 999\)/);
});

test("a version first seen in a re-list gets no earlier time than its neighbours allow", () => {
  // rv 103 was written during an outage and only seen by a re-list: its accept time is bounded by rv 104's write.
  const log: Observation[] = [
    ...renewal("a", 101, 0),
    { kind: "watch", type: "ADDED", rv: "103", spec: spec("a", 900), at: T0 + 9000, relist: true },
    ...renewal("a", 104, 1000),
  ];
  const { versions } = versionsOf(log);
  const v103 = versions.find((v) => v.rv === "103")!;
  assert.equal(v103.lo, T0);
  assert.equal(v103.hi, T0 + 1005);
  assert.equal(v103.relisted, true);
});

test("a change away from a hand-edited record waits for the hand edit's leaseDuration", () => {
  const hand = { ...spec("hand-edited", 1000), leaseDurationSeconds: 4 };
  const base: Observation[] = [
    ...renewal("deno-0", 10, 0),
    {
      kind: "write",
      by: "hand",
      verb: "PUT",
      sentAt: T0 + 1000,
      answeredAt: T0 + 1010,
      status: 200,
      rv: "11",
      spec: hand,
    },
    { kind: "watch", type: "MODIFIED", rv: "11", spec: hand, at: T0 + 1012 },
    work("deno-0", "start", 5),
    work("deno-0", "stop", 1500),
  ];
  assert.deepEqual(check([...base, ...renewal("bun-1", 12, 5100, 1), work("bun-1", "start", 5200, 2)]).problems, []);
  const early = check([...base, ...renewal("bun-1", 12, 2000, 1), work("bun-1", "start", 2100, 2)]);
  assert.match(early.problems.join("\n"), /lease taken by bun-1 from hand-edited at most 1005 ms/);
});

test("a Lease re-created after a deletion is checked against the last holder's record", () => {
  const base: Observation[] = [
    ...renewal("deno-0", 10, 0),
    { kind: "watch", type: "DELETED", rv: "11", spec: spec("deno-0", 0), at: T0 + 300 },
    work("deno-0", "start", 5),
    work("deno-0", "stop", 400),
  ];
  const create = (by: string, t: number): Observation[] => [
    {
      kind: "write",
      by,
      verb: "POST",
      sentAt: T0 + t,
      answeredAt: T0 + t + 5,
      status: 201,
      rv: "12",
      spec: spec(by, t, 1),
    },
    { kind: "watch", type: "ADDED", rv: "12", spec: spec(by, t, 1), at: T0 + t + 7 },
    work(by, "start", t + 20, 9),
  ];
  const early = check([...base, ...create("client-go-1", 600)]);
  assert.match(early.problems.join("\n"), /lease taken by client-go-1 from deno-0 \(re-created after a deletion\)/);
  const known = check([...base, ...create("client-go-1", 600)], {
    exempt: ({ writer, afterDelete }) => (afterDelete && writer.startsWith("client-go") ? "client-go" : undefined),
  });
  assert.deepEqual(known.problems, []);
  assert.equal(known.exempted.length, 1);
  assert.deepEqual(check([...base, ...create("bun-1", 4100)]).problems, []);
  // The old holder re-creating its own record is a renewal, not a takeover.
  assert.deepEqual(
    check([...base.slice(0, -1), ...create("deno-0", 600).slice(0, 2), work("deno-0", "stop", 900)]).problems,
    [],
  );
});

test("a change away from a free (released) Lease may come at once", () => {
  const free = { ...spec("", 600), holderIdentity: "" };
  const log: Observation[] = [
    ...renewal("deno-0", 10, 0),
    {
      kind: "write",
      by: "deno-0",
      verb: "PUT",
      sentAt: T0 + 600,
      answeredAt: T0 + 605,
      status: 200,
      rv: "11",
      spec: free,
    },
    ...renewal("bun-1", 12, 650, 1),
    work("deno-0", "start", 5, 1),
    work("deno-0", "stop", 590, 1),
    work("bun-1", "start", 700, 2),
  ];
  assert.deepEqual(check(log).problems, []);
});

test("a replica that writes another replica's name, or clears a live record it does not hold, fails", () => {
  const free = { ...spec("", 600), holderIdentity: "" };
  const log: Observation[] = [
    ...renewal("deno-0", 10, 0),
    work("deno-0", "start", 5, 1),
    {
      kind: "write",
      by: "bun-1",
      verb: "PUT",
      sentAt: T0 + 600,
      answeredAt: T0 + 605,
      status: 200,
      rv: "11",
      spec: free,
    },
    {
      kind: "write",
      by: "bun-1",
      verb: "PUT",
      sentAt: T0 + 5000,
      answeredAt: T0 + 5005,
      status: 200,
      rv: "12",
      spec: spec("node-2", 5000),
    },
  ];
  const p = check(log).problems.join("\n");
  assert.match(p, /lease taken by bun-1 from deno-0 at most 605 ms/);
  assert.match(p, /bun-1 wrote a record naming node-2 as holder/);
});

test("overlapping work fails, two copies in one replica included", () => {
  const log: Observation[] = [
    ...renewal("a", 10, 0),
    ...renewal("b", 11, 4100, 1),
    work("a", "start", 5, 1),
    work("a", "stop", 4200, 1),
    work("b", "start", 4150, 2),
  ];
  const r = check(log);
  assert.equal(r.overlaps, 1);
  assert.match(r.problems.join("\n"), /overlap: a worked .* while b started/);
  const twice = check([...renewal("a", 10, 0), work("a", "start", 5, 1), work("a", "start", 50, 2)]);
  assert.match(twice.problems.join("\n"), /two copies of one replica's work/);
});

test("a SIGKILLed work interval is closed at the kill bound, not left open", () => {
  const log: Observation[] = [
    ...renewal("a", 10, 0),
    work("a", "start", 5, 1),
    { kind: "ended", name: "a", pid: 1, at: T0 + 300, why: "SIGKILL" },
    ...renewal("b", 11, 4400, 1),
    work("b", "start", 4450, 2),
  ];
  const { intervals } = intervalsOf(log);
  assert.equal(intervals[0].end, T0 + 300);
  assert.equal(intervals[0].endedBy, "SIGKILL");
  assert.deepEqual(check(log).problems, []);
  // Without the kill bound the first interval stays open and overlaps.
  assert.equal(check(log.filter((o) => o.kind !== "ended")).overlaps, 1);
});

test("work that outlives its lease fails, judged by accept times and not by any replica's wall clock", () => {
  const log: Observation[] = [...renewal("a", 10, 0), work("a", "start", 5, 1), work("a", "stop", 4100, 1)];
  assert.match(check(log).problems.join("\n"), /a's work ran until .*, 95 ms past its lease/);
  const ok: Observation[] = [...renewal("a", 10, 0), work("a", "start", 5, 1), work("a", "stop", 3900, 1)];
  assert.deepEqual(check(ok).problems, []);
});

test("work by a replica that never held the Lease fails", () => {
  const log: Observation[] = [...renewal("a", 10, 0), work("a", "start", 5, 1), work("b", "start", 20, 2)];
  assert.match(check(log).problems.join("\n"), /b started work at .* without having held the Lease/);
});

test("a scenario can accept a peer's known flaw by name, and the report still lists it", () => {
  const log: Observation[] = [...renewal("a", 10, 0), work("a", "start", 5, 1), work("client-go-1", "start", 20, 2)];
  const r = check(log, { exemptWork: (iv) => (iv.name.startsWith("client-go") ? "known" : undefined) });
  assert.equal(r.exempted.length, 1);
  assert.match(r.exempted[0], /client-go-1 started work .* without having held the Lease: known/);
  // The overlap is never exempted.
  assert.equal(r.overlaps, 1);
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0], /^overlap: a worked/);
});

test("an update that changed nothing bounds its version from above only", () => {
  const log: Observation[] = [
    ...renewal("a", 10, 0),
    // Sent 300 ms after rv 10 was written and answered with rv 10: it did not create it.
    {
      kind: "write",
      by: "a",
      verb: "PUT",
      sentAt: T0 + 300,
      answeredAt: T0 + 305,
      status: 200,
      rv: "10",
      created: false,
    },
  ];
  const { versions } = versionsOf(log);
  assert.equal(versions[0].lo, T0);
  assert.equal(versions[0].hi, T0 + 5);
  // Taken as a creating write, it would contradict the watch.
  const wrong = log.map((o) => (o.kind === "write" && o.sentAt === T0 + 300 ? { ...o, created: undefined } : o));
  assert.match(check(wrong, { expectWork: false }).problems.join("\n"), /inconsistent record: rv 10/);
});
