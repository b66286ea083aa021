// The member Lease of a sharded set is owned by the replica's Pod, so that the
// garbage collector deletes it with the Pod (tests/e2e checks that on a real node).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { shutdown, until } from "./support/manual_clock_wait.ts";
import { startShardReplica } from "./support/shard_replica.ts";
import { ConfigError, ManualClock, MemoryLeaseStore } from "../mod.ts";
import { parseArgs, resolveSettings } from "../lib/cli.ts";

const UID = "6f1c2b8a-3d4e-4f50-8a9b-0c1d2e3f4a5b";

test("a set with memberOwner writes its member Lease with that owner; shard Leases have none", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const owner = { apiVersion: "v1", kind: "Pod", name: "pod-a", uid: UID };
  const r = startShardReplica(store, {
    namespace: "default",
    prefix: "work",
    shards: 2,
    identity: "pod-a",
    memberOwner: owner,
    clock,
    leaseDuration: 4000,
    renewDeadline: 3000,
    retryPeriod: 500,
  });
  await until(clock, () => r.set.held().length === 2);
  await clock.advance(2000); // renewals keep the owner
  assert.deepEqual(store.peek("default", "work-member-pod-a")?.metadata.ownerReferences, [owner]);
  assert.equal(store.peek("default", "work-0")?.metadata.ownerReferences, undefined);
  await shutdown(clock, r);
});

test("POD_UID with --shards names the member Lease's owner; it must be a uid; without it a warning says what stays behind", () => {
  const settings = (env: Record<string, string>, ...args: string[]) =>
    resolveSettings(parseArgs(["--lease-name", "work", ...args, "--", "true"], (k) => env[k]), () => "host");
  const s = settings({ POD_NAME: "pod-a", POD_UID: UID }, "--shards", "4");
  assert.equal(s.podUid, UID);
  assert.deepEqual(s.warnings, []);
  assert.throws(
    () => settings({ POD_NAME: "pod-a", POD_UID: "pod-a" }, "--shards", "4"),
    (e) => e instanceof ConfigError && /POD_UID.*metadata\.uid/.test(e.message),
  );
  const none = settings({ POD_NAME: "pod-a" }, "--shards", "4");
  assert.equal(none.podUid, undefined);
  assert.match(none.warnings.join("\n"), /POD_UID.*stays behind/);
  // Without --shards POD_UID is not read at all (the name is common for other uses).
  const single = settings({ POD_NAME: "pod-a", POD_UID: "whatever" });
  assert.equal(single.podUid, undefined);
});
