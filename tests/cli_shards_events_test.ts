// The sharded entrypoint's leadership Events against the in-memory Lease
// server (which has no events endpoint, like a Role without "create" on
// events): the failure is logged once for the whole set, not once per shard,
// and the shards are held all the same; --events=false sends none. Their
// content on the real API server: tests/shards_rbac_integration_test.ts.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { main } from "../lib/cli.ts";
import { type LeaseServer, startLeaseServer } from "./support/lease_server.ts";
import { kubeconfigFor } from "./support/kubeconfig_file.ts";

type Line = Record<string, unknown> & { msg: string; level: string };

function kubeconfigForServer(server: LeaseServer): Promise<string> {
  return kubeconfigFor(server.url, "leasehold-shard-events-");
}

/** One replica of 4 shards until it holds all of them (then stopped); its log lines and exit code. */
async function holdAll(kubeconfig: string, extra: string[]): Promise<{ lines: Line[]; code: number }> {
  const lines: Line[] = [];
  const stop = new AbortController();
  let held = 0;
  const exited = main(
    [
      ...["--lease-name", "work", "--identity", "a", "--kubeconfig", kubeconfig, "--shards", "4", ...extra],
      ...["--lease-duration", "2s", "--renew-deadline", "1s", "--retry-period", "250ms", "--", "sleep", "600"],
    ],
    {
      write: (text) => {
        const l = JSON.parse(text) as Line;
        lines.push(l);
        if (l.msg === "holding shard" && ++held === 4) stop.abort();
      },
      handleSignals: false,
      env: () => undefined,
      signal: stop.signal,
    },
  );
  return { lines, code: await exited };
}

const eventPosts = (server: LeaseServer) =>
  server.requests.filter((r) => r.method === "POST" && r.path.endsWith("/events")).length;

test("cli --shards: an Event per shard term; a failing events endpoint is one warning for the set", async () => {
  const server = await startLeaseServer();
  try {
    const { lines, code } = await holdAll(await kubeconfigForServer(server), []);
    assert.equal(code, 0);
    // 4 "became leader" and 4 "stopped leading" (the stop flushes them before exiting).
    assert.equal(eventPosts(server), 8);
    const warnings = lines.filter((l) => l.level === "warn" && /leadership event/.test(l.msg));
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
  } finally {
    await server.close();
  }
});

test("cli --shards --events=false: no Events", async () => {
  const server = await startLeaseServer();
  try {
    const { code } = await holdAll(await kubeconfigForServer(server), ["--events=false"]);
    assert.equal(code, 0);
    assert.equal(eventPosts(server), 0);
    assert.ok(server.requests.length > 0);
  } finally {
    await server.close();
  }
});
