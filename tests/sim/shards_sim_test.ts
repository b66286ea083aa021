// The sharded lease set under seeded faults (tests/sim/shards.ts): a few seeds
// per run; `deno run -A tests/sim/shards.ts --runs N` runs more.
import { test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { runShardsSeed } from "./shards.ts";

for (const seed of [3, 11]) {
  test(`sharded set under seeded faults: seed ${seed}, no overlap, growing fencing tokens, balanced after`, {
    timeout: 300000,
  }, async () => {
    const r = await runShardsSeed(seed, { seconds: 24 });
    assert.deepEqual(r.problems, [], `faults: ${r.faults.join("; ")}`);
    assert.ok(r.terms >= r.shards, "every shard was worked on");
  });
}
