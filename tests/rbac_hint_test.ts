// A 403 names the Role to grant: for the sharded mode, deploy/rbac.shards.yaml and
// no resourceNames (member Leases are named after pods, so a Role cannot list them).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { KubeApiError, KubeClient, KubeLeaseApi, kubeShardedLeaseSet, type Logger } from "../mod.ts";

const FORBIDDEN = { kind: "Status", apiVersion: "v1", status: "Failure", reason: "Forbidden", code: 403 };
const forbiddenFetch = () => Promise.resolve(Response.json(FORBIDDEN, { status: 403 }));

test("a 403 on a single Lease names deploy/rbac.yaml and the Lease in resourceNames", async () => {
  const api = new KubeLeaseApi(new KubeClient({ server: "http://127.0.0.1:1", fetch: forbiddenFetch }), "ns", "one");
  await assert.rejects(api.get(), (e) => {
    assert.ok(e instanceof KubeApiError && e.code === 403);
    assert.match(e.message, /verbs \["get"\], resourceNames \["one"\]/);
    assert.match(e.message, /see deploy\/rbac\.yaml/);
    return true;
  });
});

test("the sharded set's 403s name deploy/rbac.shards.yaml and no resourceNames", async () => {
  const messages: string[] = [];
  let seen!: () => void;
  const forbiddenLogged = new Promise<void>((r) => (seen = r));
  const note = (msg: string, fields?: Record<string, unknown>) => {
    const text = `${msg} ${JSON.stringify(fields ?? {})}`;
    messages.push(text);
    if (/Forbidden/.test(text) && /verbs \[\\?"(create|get|update)/.test(text)) seen();
  };
  const logger: Logger = { debug: note, info: note, warn: note, error: note };
  const client = new KubeClient({ server: "http://127.0.0.1:1", fetch: forbiddenFetch });
  const set = kubeShardedLeaseSet(client, {
    namespace: "ns",
    prefix: "work",
    shards: 2,
    identity: "pod-a",
    logger,
    leaseDuration: 4000,
    renewDeadline: 3000,
    retryPeriod: 500,
    onStartedLeading: () => Promise.resolve(),
  });
  const stop = new AbortController();
  const done = set.run(stop.signal);
  await forbiddenLogged;
  stop.abort();
  await done;
  const forbidden = messages.filter((m) => /Forbidden/.test(m));
  assert.ok(forbidden.length > 0);
  for (const m of forbidden) {
    assert.doesNotMatch(m, /resourceNames/, m);
    assert.doesNotMatch(m, /deploy\/rbac\.yaml/, m);
  }
  assert.ok(forbidden.some((m) => /deploy\/rbac\.shards\.yaml/.test(m)), forbidden.join("\n"));
});
