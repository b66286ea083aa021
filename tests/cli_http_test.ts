// The entrypoint's HTTP endpoints against a stub elector: the failing health
// check, readiness, methods other than GET/HEAD, and a listen failure (exit 2).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { type ElectorView, main, serveHttp, type WorkView } from "../lib/cli.ts";
import { type ElectorState, silentLogger } from "../mod.ts";
import { startLeaseServer } from "./support/lease_server.ts";
import { kubeconfigFor } from "./support/kubeconfig_file.ts";

function stubElector(over: Partial<{ leader: string; isLeader: boolean; unhealthy: string; settling: boolean }> = {}) {
  const v = {
    leader: undefined as string | undefined,
    isLeader: false,
    unhealthy: undefined as string | undefined,
    settling: false,
    ...over,
  };
  const view: ElectorView & { v: typeof v } = {
    v,
    get isLeader() {
      return v.isLeader;
    },
    get leader() {
      return v.leader;
    },
    stats: {
      slowpathTotal: 0,
      startedTotal: 1,
      leaderChangesTotal: 1,
      errorsByKind: {},
      renewCount: 0,
      renewLatencySumMs: 0,
      requestsByVerb: {},
    },
    state: () =>
      ({
        lease: "ns/x",
        identity: "a",
        isLeader: v.isLeader,
        leader: v.leader,
        leaseTransitions: 0,
        leadingSince: undefined,
        fencingToken: undefined,
        workSettling: v.settling,
      }) as ElectorState,
    check: (grace?: number) => (v.unhealthy ? `${v.unhealthy} (grace ${grace})` : undefined),
  };
  return view;
}

async function serve(e: ElectorView, work?: WorkView): Promise<{ server: Server; url: string }> {
  const server = await serveHttp(
    { host: "127.0.0.1", port: 0 },
    e,
    { lease: () => "ns/x", healthzGrace: 20000, work },
    silentLogger,
  );
  const a = server.address() as { port: number };
  return { server, url: `http://127.0.0.1:${a.port}` };
}

async function get(url: string, method = "GET") {
  const res = await fetch(url, { method });
  return { status: res.status, body: await res.text(), allow: res.headers.get("allow") };
}

test("/healthz is 500 when the leader has not renewed within leaseDuration + grace; 200 otherwise", async () => {
  const e = stubElector({ leader: "a", isLeader: true });
  const { server, url } = await serve(e);
  try {
    assert.deepEqual(await get(`${url}/healthz`), { status: 200, body: "ok\n", allow: null });
    e.v.unhealthy = "failed to renew leadership on lease ns/x for 35001 ms";
    const r = await get(`${url}/healthz`);
    assert.equal(r.status, 500);
    assert.equal(r.body, "unhealthy: failed to renew leadership on lease ns/x for 35001 ms (grace 20000)\n");
    e.v.unhealthy = undefined;
    e.v.settling = true;
    assert.deepEqual(await get(`${url}/healthz`), {
      status: 200,
      body: "ok: the last term's work is still stopping\n",
      allow: null,
    });
  } finally {
    server.close();
  }
});

test("/healthz is 500 when the command outlived its SIGKILL, and says when work is stopping", async () => {
  const work = { stopping: true, error: undefined as string | undefined, check: () => work.error };
  const { server, url } = await serve(stubElector({ leader: "a" }), work);
  try {
    assert.equal((await get(`${url}/healthz`)).body, "ok: the last term's work is still stopping\n");
    assert.equal((await (await fetch(`${url}/leader`)).json()).workSettling, true);
    work.error = "the command's process group 42 is still alive after SIGKILL";
    const r = await get(`${url}/healthz`);
    assert.equal(r.status, 500);
    assert.match(r.body, /still alive after SIGKILL/);
  } finally {
    server.close();
  }
});

test("/readyz is 503 until the Lease was read, then 200", async () => {
  const e = stubElector();
  const { server, url } = await serve(e);
  try {
    assert.equal((await get(`${url}/readyz`)).status, 503);
    e.v.leader = "";
    assert.equal((await get(`${url}/readyz`)).status, 200);
  } finally {
    server.close();
  }
});

test("endpoints answer GET and HEAD only; other methods get 405 with Allow; unknown paths 404", async () => {
  const e = stubElector({ leader: "b" });
  const { server, url } = await serve(e);
  try {
    for (const path of ["/healthz", "/readyz", "/metrics", "/leader", "/"]) {
      for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
        const r = await get(`${url}${path}`, method);
        assert.equal(r.status, 405, `${method} ${path}`);
        assert.equal(r.allow, "GET, HEAD", `${method} ${path}`);
      }
      const head = await get(`${url}${path}`, "HEAD");
      assert.equal(head.status, 200, `HEAD ${path}`);
      assert.equal(head.body, "");
      assert.equal((await get(`${url}${path}`)).status, 200, `GET ${path}`);
    }
    assert.deepEqual(JSON.parse((await get(`${url}/`)).body), { name: "b" });
    assert.equal((await get(`${url}/nope`)).status, 404);
  } finally {
    server.close();
  }
});

test("an --http-addr that cannot be listened on exits 2, as documented", async () => {
  const lease = await startLeaseServer();
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
  const port = (blocker.address() as { port: number }).port;
  const kubeconfig = await kubeconfigFor(lease.url, "leasehold-http-");
  const lines: string[] = [];
  try {
    const code = await main(
      ["--lease-name", "x", "--identity", "a", "--kubeconfig", kubeconfig, "--http-addr", `127.0.0.1:${port}`],
      { write: (l) => lines.push(l), handleSignals: false, env: () => undefined },
    );
    assert.equal(code, 2);
    const err = lines.map((l) => JSON.parse(l)).find((l) => l.level === "error");
    assert.match(err.error, /cannot listen on --http-addr 127\.0\.0\.1:\d+/);
    assert.equal(lease.countBy("PUT") + lease.countBy("POST"), 0, "no election without the endpoints");
  } finally {
    blocker.close();
    await lease.close();
  }
});

test("main's endpoints: POST, PUT and OPTIONS get 405, HEAD gets headers only", async () => {
  const lease = await startLeaseServer();
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  const kubeconfig = await kubeconfigFor(lease.url, "leasehold-http-");
  const stop = new AbortController();
  let serving: () => void;
  const ready = new Promise<void>((r) => (serving = r));
  const code = main(
    ["--lease-name", "x", "--identity", "a", "--kubeconfig", kubeconfig, "--http-addr", `127.0.0.1:${port}`],
    {
      write: (l) => JSON.parse(l).msg === "serving http" && serving(),
      handleSignals: false,
      env: () => undefined,
      signal: stop.signal,
    },
  );
  try {
    await ready;
    const url = `http://127.0.0.1:${port}`;
    for (const method of ["POST", "PUT", "OPTIONS"]) {
      const r = await get(`${url}/healthz`, method);
      assert.equal(r.status, 405, method);
      assert.equal(r.allow, "GET, HEAD");
    }
    assert.deepEqual(await get(`${url}/readyz`, "HEAD"), { status: 200, body: "", allow: null });
  } finally {
    stop.abort();
    assert.equal(await code, 0);
    await lease.close();
  }
});
