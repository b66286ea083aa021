/**
 * The end-to-end run's analysis on made-up logs: where a term ends, what
 * counts as an overlap, a hand-over and time without a leader.
 *
 * Runs under `deno test -A tests/e2e/analysis_test.ts` and `bun test tests/e2e/analysis_test.ts`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  analyse,
  type AuditEvent,
  buildIntervals,
  classify,
  type Instance,
  shardProblems,
  shardsHeld,
  shardTerms,
} from "./analysis.ts";

const json = (msg: string) => JSON.stringify({ ts: "x", level: "info", msg });
const klog = (msg: string) => `I1126 19:30:00.000000       1 main.go:60] "${msg}"`;
const update = (pod: string, t: number): AuditEvent => ({
  verb: "update",
  objectRef: { namespace: "ns", name: "l", resource: "leases" },
  user: { username: "system:serviceaccount:ns:sa", extra: { "authentication.kubernetes.io/pod-name": [pod] } },
  responseStatus: { code: 200 },
  requestReceivedTimestamp: new Date(t).toISOString(),
  stageTimestamp: new Date(t + 5).toISOString(),
  stage: "ResponseComplete",
});
const T = Date.parse("2026-11-26T19:30:00Z");

test("log lines are classified for both programs", () => {
  assert.equal(classify("leasehold", json("started leading")), "start");
  assert.equal(classify("leasehold", json("released the lease")), "release");
  assert.equal(classify("leasehold", json("stopped leading")), "end");
  assert.equal(classify("leasehold", json("new leader")), undefined);
  assert.equal(classify("leasehold", "not json"), undefined);
  assert.equal(classify("blog", klog("leading")), "start");
  assert.equal(classify("blog", klog("still leading")), "work");
  assert.equal(classify("blog", klog("stopped leading")), "end");
  assert.equal(classify("blog", klog("leading cancelled")), "end");
  assert.equal(classify("blog", klog("new leader")), undefined);
});

test("a leasehold term ends when its release request reached the API server, not when it logged", () => {
  const insts: Instance[] = [
    {
      pod: "a",
      run: 0,
      lines: [
        { t: T, text: json("started leading") },
        { t: T + 10_050, text: json("released the lease") },
        { t: T + 10_060, text: json("stopped leading") },
      ],
    },
    { pod: "b", run: 0, lines: [{ t: T + 10_030, text: json("started leading") }] },
  ];
  const updates = [update("a", T + 8_000), update("a", T + 10_000), update("b", T + 10_020)];
  const iv = buildIntervals("leasehold", insts, updates, new Map(), new Set(["b"]));
  assert.deepEqual(iv.map((x) => [x.who, x.start - T, x.end - T]), [["a#0", 0, 10_000], ["b#0", 10_030, Infinity]]);
  const a = analyse(iv, T + 9_900, T + 12_000);
  assert.deepEqual(a.overlaps, []);
  assert.deepEqual(a.handovers, [30]);
  assert.equal(a.leaderlessMs, 30);
});

test("a replica that starts leading before the old leader's release was received is an overlap", () => {
  const insts: Instance[] = [
    {
      pod: "a",
      run: 0,
      lines: [
        { t: T, text: json("started leading") },
        { t: T + 10_050, text: json("released the lease") },
        { t: T + 10_060, text: json("stopped leading") },
      ],
    },
    { pod: "b", run: 0, lines: [{ t: T + 9_990, text: json("started leading") }] },
  ];
  const iv = buildIntervals("leasehold", insts, [update("a", T + 10_000)], new Map(), new Set(["b"]));
  const a = analyse(iv, T + 9_900, T + 12_000);
  assert.deepEqual(a.overlaps, ["a#0 and b#0 both led for 10 ms"]);
});

test("a blog leader killed by SIGTERM ends at its last report; the hand-over counts from there", () => {
  const insts: Instance[] = [
    {
      pod: "a",
      run: 0,
      lines: [
        { t: T, text: klog("leading") },
        { t: T + 1_000, text: klog("still leading") },
        { t: T + 2_000, text: klog("still leading") },
      ],
    },
    { pod: "b", run: 0, lines: [{ t: T + 17_000, text: klog("leading") }] },
  ];
  // Pod a is gone: its term ends at its last report, 0.5 s before the deletion.
  const iv = buildIntervals("blog", insts, [], new Map(), new Set(["b"]));
  assert.equal(iv[0].end, T + 2_000);
  const a = analyse(iv, T + 2_500, T + 20_000);
  assert.deepEqual(a.handovers, [15_000]);
  assert.equal(a.leaderlessMs, 15_000);
  assert.deepEqual(a.overlaps, []);
});

test("a killed leader's term ends at the kill; a restarted container is a new replica", () => {
  const insts: Instance[] = [
    { pod: "a", run: 0, lines: [{ t: T, text: json("started leading") }] },
    { pod: "a", run: 1, lines: [{ t: T + 14_000, text: json("started leading") }] },
  ];
  const iv = buildIntervals("leasehold", insts, [], new Map([["a#0", T + 1_000]]), new Set(["a"]));
  assert.deepEqual(iv.map((x) => [x.who, x.end]), [["a#0", T + 1_000], ["a#1", Infinity]]);
  const a = analyse(iv, T + 1_000, T + 20_000);
  assert.deepEqual(a.handovers, [13_000]);
  assert.deepEqual(a.overlaps, []);
});

test("a term still open overlaps any later one", () => {
  const insts: Instance[] = [
    { pod: "a", run: 0, lines: [{ t: T, text: json("started leading") }] },
    { pod: "b", run: 0, lines: [{ t: T + 5_000, text: json("started leading") }] },
  ];
  const iv = buildIntervals("leasehold", insts, [], new Map(), new Set(["a", "b"]));
  const a = analyse(iv, T, T + 10_000);
  assert.equal(a.overlaps.length, 1);
  assert.equal(a.leaderlessMs, 0);
});

const shardJson = (msg: string, shard: number, token: string) =>
  JSON.stringify({ msg, shard, shards: 6, fencingToken: token });

test("shard terms run from a command's start line to its stop line; leasehold's own lines are not terms", () => {
  const insts: Instance[] = [
    {
      pod: "a",
      run: 0,
      lines: [
        { t: T, text: json("holding shard") },
        { t: T + 10, text: shardJson("working on shard", 0, "0/a") },
        { t: T + 20, text: shardJson("working on shard", 1, "0/a") },
        { t: T + 500, text: shardJson("stopped working on shard", 0, "0/a") },
      ],
    },
    { pod: "b", run: 0, lines: [{ t: T + 600, text: shardJson("working on shard", 0, "1/b") }] },
  ];
  const terms = shardTerms(insts);
  assert.deepEqual(
    terms.map((x) => [x.shard, x.who, x.start - T, x.end === Infinity ? "open" : x.end - T, x.reported]),
    [[0, "a#0", 10, 500, true], [1, "a#0", 20, "open", false], [0, "b#0", 600, "open", false]],
  );
  assert.deepEqual(Object.fromEntries(shardsHeld(terms)), { a: [1], b: [0] });
  assert.deepEqual(shardProblems(terms, () => false), []);
});

test("two overlapping terms of a shard, a fencing token that does not grow and an unreported stop are problems", () => {
  const insts: Instance[] = [
    {
      pod: "a",
      run: 0,
      lines: [
        { t: T, text: shardJson("working on shard", 2, "3/a") },
        { t: T + 1000, text: shardJson("stopped working on shard", 2, "3/a") },
      ],
    },
    {
      pod: "b",
      run: 0,
      lines: [
        { t: T + 900, text: shardJson("working on shard", 2, "3/b") },
        { t: T + 950, text: shardJson("working on shard", 4, "1/b") },
      ],
    },
  ];
  const problems = shardProblems(shardTerms(insts), (who) => who === "b#0");
  assert.deepEqual(problems, [
    "shard 2: a#0 and b#0 both worked for 100 ms",
    "shard 2: fencing token 3/b after 3/a",
    "shard 2: the command of b#0 never reported its stop",
    "shard 4: the command of b#0 never reported its stop",
  ]);
});
