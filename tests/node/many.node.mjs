// Node: many electors on one caller signal (the built package). Node warns of a
// possible leak when more than 10 listeners wait on one AbortSignal; electors
// that share the caller's signal share one listener on it.
import { test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import process from "node:process";
import { LeaderElector, MemoryLeaseStore } from "@leasehold/leasehold";

test("node: 50 electors on one signal put one listener on it and no leak warning is emitted", async () => {
  const warnings = [];
  const onWarning = (w) => warnings.push(`${w.name}: ${w.message}`);
  process.on("warning", onWarning);
  const store = new MemoryLeaseStore();
  const stop = new AbortController();
  try {
    const electors = Array.from({ length: 50 }, (_, i) =>
      new LeaderElector({
        lease: store.api("default", `many-${i}`),
        identity: "me",
        leaseDuration: 4000,
        renewDeadline: 3000,
        retryPeriod: 500,
      }));
    const runs = electors.map((e) => e.run(stop.signal));
    const started = await Promise.all(electors.map((e) =>
      new Promise((resolve) => {
        if (e.isLeader) return resolve(true);
        e.addEventListener("started", () => resolve(true), { once: true });
      })
    ));
    assert.equal(started.length, 50);
    assert.equal(getEventListeners(stop.signal, "abort").length, 1, "one shared listener on the caller's signal");
    stop.abort();
    await Promise.all(runs);
    assert.equal(getEventListeners(stop.signal, "abort").length, 0);
    // Warnings are emitted on the next tick.
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(warnings.filter((w) => /MaxListeners|leak/i.test(w)), []);
  } finally {
    stop.abort();
    process.off("warning", onWarning);
  }
});
