// The fault schedule of a run: generated up front from the seed, as a numbered
// list, so that a failing run can be replayed with a subset of its faults
// (`--faults 3,7`) and shrunk by removing faults.

import type { Rng } from "./prng.ts";

export type FaultKind =
  | "partition"
  | "drop"
  | "lost-response"
  | "slow"
  | "watch-chaos"
  | "watch-end-at-once"
  | "crash"
  | "shutdown"
  | "edit-takeover"
  | "edit-clear"
  | "edit-touch"
  | "edit-delete"
  | "conflict-storm"
  | "throttle-storm"
  | "server-errors"
  | "token-fail"
  | "token-hang"
  | "hang"
  | "late-work"
  | "wall-jump";

export interface FaultSpec {
  /** Index in the generated list. */
  i: number;
  kind: FaultKind;
  /** True start time (ms). */
  at: number;
  /** Duration (ms); 0 for instant faults. */
  dur: number;
  /** Replica index, or -1 for "whoever leads when it starts" (a random one if none). */
  target: number;
  /** Kind-specific parameters. */
  p: Record<string, number | string | boolean>;
}

const WEIGHTS: [FaultKind, number][] = [
  ["partition", 10],
  ["drop", 5],
  ["lost-response", 6],
  ["slow", 5],
  ["watch-chaos", 8],
  ["watch-end-at-once", 4],
  ["crash", 7],
  ["shutdown", 4],
  ["edit-takeover", 1],
  ["edit-clear", 1],
  ["edit-touch", 2],
  ["edit-delete", 3],
  ["conflict-storm", 3],
  ["throttle-storm", 3],
  ["server-errors", 2],
  ["token-fail", 3],
  ["token-hang", 2],
  ["hang", 2],
  ["late-work", 3],
  ["wall-jump", 1],
];
const TOTAL = WEIGHTS.reduce((a, [, w]) => a + w, 0);

function pickKind(rng: Rng): FaultKind {
  let x = rng.next() * TOTAL;
  for (const [k, w] of WEIGHTS) {
    x -= w;
    if (x < 0) return k;
  }
  return WEIGHTS[0][0];
}

/** Strange Retry-After values a server or proxy may send (JSON allows any of them). */
const RETRY_AFTER: unknown[] = [1, 2, 5, 0, -3, "soon", 1e12, 0.001];

export interface Timing {
  leaseDuration: number;
  renewDeadline: number;
  retryPeriod: number;
}

/**
 * Alternating storms (faults start, and all end, within the storm) and quiet
 * periods long enough to check that a leader appears after healing.
 */
export function generateFaults(rng: Rng, replicas: number, horizonMs: number, t: Timing, quietMs: number): FaultSpec[] {
  const out: FaultSpec[] = [];
  const LD = t.leaseDuration;
  let now = 2 * LD + rng.next() * LD;
  while (now < horizonMs) {
    const storm = LD * (0.5 + rng.next() * 4);
    const n = 1 + Math.floor(rng.next() * 5);
    for (let k = 0; k < n; k++) {
      const kind = pickKind(rng);
      const at = now + rng.next() * storm * 0.7;
      const room = now + storm - at;
      let dur = Math.min(room, LD * (0.2 + rng.next() * 2.5));
      const target = rng.chance(0.5) ? -1 : Math.floor(rng.next() * replicas);
      const p: FaultSpec["p"] = {};
      switch (kind) {
        case "partition":
          p.mode = rng.chance(0.7) ? "blackhole" : "refuse";
          break;
        case "drop":
          p.p = rng.pick([0.2, 0.5, 0.9]);
          break;
        case "lost-response":
          p.p = rng.pick([0.2, 0.5, 1]);
          break;
        case "slow":
          p.factor = rng.pick([5, 30, 200]);
          p.addMs = rng.pick([0, 2000, t.renewDeadline]);
          break;
        case "watch-chaos":
          p.lose = rng.pick([0, 0.2, 0.6]);
          p.dup = rng.pick([0, 0.3]);
          p.reorderMs = rng.pick([0, 200, 3000]);
          break;
        case "watch-end-at-once":
          p.truncate = rng.chance(0.5);
          break;
        case "crash":
        case "shutdown":
          break;
        case "edit-delete":
          dur = 0;
          if (rng.chance(0.4)) {
            // An operator frees the Lease, then deletes it (finding 3's free Lease deleted).
            p.clearFirst = true;
            p.afterMs = rng.pick([0, 1, 5, 30]);
          }
          break;
        case "edit-takeover":
        case "edit-clear":
        case "edit-touch":
          dur = 0;
          break;
        case "wall-jump":
          dur = 0;
          p.ms = Math.round((rng.next() - 0.5) * 7200000);
          break;
        case "conflict-storm":
          p.p = rng.pick([0.5, 0.9, 1]);
          break;
        case "throttle-storm":
          p.p = rng.pick([0.5, 1]);
          p.retryAfter = RETRY_AFTER.indexOf(rng.pick(RETRY_AFTER));
          break;
        case "server-errors":
          p.p = rng.pick([0.3, 0.8]);
          break;
        case "token-fail":
        case "token-hang":
        case "hang":
          break;
        case "late-work":
          p.maxMs = rng.pick([LD * 0.5, LD * 2]);
          break;
      }
      out.push({ i: out.length, kind, at, dur, target, p });
    }
    now += storm + quietMs + rng.next() * 4 * LD;
  }
  return out;
}

export function retryAfterValue(i: number | string | boolean | undefined): unknown {
  return RETRY_AFTER[Number(i)] ?? 1;
}

export function describeFault(f: FaultSpec): string {
  const who = f.target < 0 ? "leader" : `r${f.target}`;
  const p = Object.entries(f.p).map(([k, v]) =>
    k === "retryAfter" ? `retryAfter=${JSON.stringify(retryAfterValue(v))}` : `${k}=${v}`
  ).join(" ");
  return `#${f.i} ${f.kind} at=${(f.at / 1000).toFixed(3)}s dur=${(f.dur / 1000).toFixed(3)}s ${who}${
    p ? " " + p : ""
  }`;
}
