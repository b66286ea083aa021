// Shrinking a failing run: delta debugging (ddmin) over the fault list, keeping a
// subset while the same kind of violation still happens, then cutting the run
// short just after it. The noise of a run (latencies, jitter, coin flips) comes
// from streams forked by label, so most of it stays the same when faults go.

import { runOnce, type RunOptions, type RunResult, type ViolationKind } from "./world.ts";

export interface Repro {
  seed: number;
  replicas: number;
  profile: string;
  minutes: number;
  faults: number[];
  untilMs: number;
  targets: Record<number, number>;
  kind: ViolationKind;
  runs: number;
}

export async function shrink(
  base: RunOptions,
  failed: RunResult,
  log: (s: string) => void = () => {},
  maxRuns = 150,
): Promise<Repro> {
  const kind = failed.violations[0].kind;
  const fixed: RunOptions = {
    ...base,
    replicas: failed.replicas,
    profile: failed.profile,
    targets: failed.targets,
    stopAtFirst: true,
    trace: false,
  };
  let untilMs = Math.ceil(failed.violations[0].at + 1);
  let runs = 0;
  const fails = async (faults: number[], until: number): Promise<RunResult | undefined> => {
    runs++;
    const r = await runOnce({ ...fixed, faults, untilMs: until });
    return r.violations.some((v) => v.kind === kind) ? r : undefined;
  };
  let cur = [...failed.kept];
  // Only faults that started before the violation can matter.
  const before = failed.schedule.filter((f) => f.at <= untilMs).map((f) => f.i);
  const pre = cur.filter((i) => before.includes(i));
  if (pre.length < cur.length) {
    const r = await fails(pre, untilMs);
    if (r) {
      cur = pre;
      untilMs = Math.ceil(r.violations.find((v) => v.kind === kind)!.at + 1);
    }
  }
  let n = 2;
  while (cur.length >= 1 && runs < maxRuns) {
    const size = Math.ceil(cur.length / n);
    let reduced = false;
    for (let s = 0; s < cur.length && runs < maxRuns; s += size) {
      const complement = [...cur.slice(0, s), ...cur.slice(s + size)];
      const r = await fails(complement, untilMs);
      if (r) {
        cur = complement;
        untilMs = Math.ceil(r.violations.find((v) => v.kind === kind)!.at + 1);
        n = Math.max(n - 1, 2);
        reduced = true;
        log(`  shrink: ${cur.length} faults, until ${(untilMs / 1000).toFixed(1)}s`);
        break;
      }
    }
    if (!reduced) {
      if (size <= 1) break;
      n = Math.min(n * 2, cur.length);
    }
  }
  return {
    seed: base.seed,
    replicas: failed.replicas,
    profile: failed.profile,
    minutes: base.minutes,
    faults: cur,
    untilMs,
    targets: Object.fromEntries(cur.filter((i) => failed.targets[i] !== undefined).map((i) => [i, failed.targets[i]])),
    kind,
    runs,
  };
}
