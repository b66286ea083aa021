// Table tests of the leader's renewal rules (lib/renew_rules.ts: the wait
// before the next attempt, the time left before the renew deadline) and of the
// record a malformed Lease is taken over from (lib/election_rules.ts).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { salvageRecord } from "../lib/election_rules.ts";
import { type RenewOutcome, renewTimeLeft, renewWait } from "../lib/renew_rules.ts";

test("renewWait: retryPeriod after a renewal, half of it otherwise, the server's hint after a failure when longer", () => {
  const table: [RenewOutcome, number, number | undefined, number][] = [
    ["renewed", 2000, undefined, 2000],
    ["renewed", 2000, 9000, 2000], // a hint only follows a failure
    ["not-written", 2000, undefined, 1000],
    ["not-written", 2000, 9000, 1000],
    ["failed", 2000, undefined, 1000],
    ["failed", 2000, 0, 1000],
    ["failed", 2000, 500, 1000],
    ["failed", 2000, 5000, 5000],
  ];
  for (const [outcome, rp, hint, want] of table) {
    assert.equal(renewWait(outcome, rp, hint), want, `${outcome}, ${rp}, ${hint}`);
  }
});

test("renewTimeLeft: renewDeadline after the start of the last renewal, on the monotonic clock", () => {
  const table: [number, number, number, number][] = [
    [0, 10000, 0, 10000],
    [1000, 10000, 4000, 7000],
    [1000, 10000, 11000, 0],
    [1000, 10000, 12000, -1000],
  ];
  for (const [last, rd, now, want] of table) assert.equal(renewTimeLeft(last, rd, now), want, `${last}, ${rd}, ${now}`);
});

test("salvageRecord: nobody holds it; leaseTransitions kept only when a whole number >= 0", () => {
  const table: [unknown, number][] = [
    [4, 4],
    [0, 0],
    [-1, 0],
    [1.5, 0],
    ["3", 0],
    [null, 0],
    [undefined, 0],
    [Number.NaN, 0],
  ];
  for (const [t, want] of table) {
    const r = salvageRecord({ leaseTransitions: t });
    assert.equal(r.leaseTransitions, want, String(t));
    assert.equal(r.holderIdentity, "");
    assert.equal(r.leaseDurationSeconds, 1);
  }
  assert.equal(salvageRecord(null).leaseTransitions, 0);
  assert.equal(salvageRecord(undefined).leaseTransitions, 0);
});
