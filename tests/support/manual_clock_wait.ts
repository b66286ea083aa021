// Waiting on a ManualClock in tests: advance it in steps until a condition
// holds, and stop replicas by running the clock until their run() ended.
import { type ManualClock, settle } from "../../mod.ts";

/** Advances the clock in steps until `pred` holds; fails after `maxMs` of clock time. Returns the time taken. */
export async function until(clock: ManualClock, pred: () => boolean, maxMs = 60000, step = 50): Promise<number> {
  const start = clock.now();
  await settle();
  while (!pred()) {
    if (clock.now() - start > maxMs) throw new Error(`condition not met within ${maxMs} ms of clock time`);
    await clock.advance(step);
  }
  return clock.now() - start;
}

/** Aborts each replica's stop controller and runs the clock until every run() has ended. */
export async function shutdown(
  clock: ManualClock,
  ...rs: { stop: AbortController; done: Promise<unknown> }[]
): Promise<void> {
  for (const r of rs) r.stop.abort();
  let finished = false;
  Promise.all(rs.map((r) => r.done)).then(() => (finished = true));
  await until(clock, () => finished, 60000, 500);
}
