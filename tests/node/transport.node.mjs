// Node: the built package's transport (node:https): a connection frozen without
// closing, redirects, trust, insecure-skip-tls-verify, and listeners per watch.
import { after, before, test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { getEventListeners } from "node:events";
import { fileURLToPath } from "node:url";
import * as leasehold from "@leasehold/leasehold";
import { makeTestCerts } from "../support/tls_certs.mjs";
import { startFrozenProxy } from "../support/frozen_proxy_client.mjs";

const { ConfigError, createFetch, createLeaseApi, KubeApiError, TimeoutError } = leasehold;
const PATH = "/apis/coordination.k8s.io/v1/namespaces/default/leases/l";

let certs, good, other;
before(async () => {
  certs = makeTestCerts();
  good = await startFrozenProxy(certs.server.certFile, certs.server.keyFile, certs.clusterCaFile);
  other = await startFrozenProxy(certs.otherServer.certFile, certs.otherServer.keyFile);
});
after(async () => {
  await good?.close();
  await other?.close();
  certs?.cleanup();
});

test("node: a connection frozen without FIN or RST is abandoned after one request timeout", async () => {
  const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, {
    name: "frozen",
    timeoutMs: 1000,
  });
  assert.ok(await api.get());
  await good.freeze();
  const outcomes = [];
  for (let i = 0; i < 2; i++) {
    try {
      await api.get();
      outcomes.push("ok");
    } catch (e) {
      assert.ok(e instanceof TimeoutError, String(e));
      outcomes.push("timeout");
    }
  }
  assert.equal(outcomes[1], "ok", `outcomes after the freeze: ${outcomes.join(", ")}`);
  await good.heal();
});

test("node: requests share at most 8 keep-alive connections; watches have their own and never queue them", async () => {
  const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, {
    name: "pool",
    timeoutMs: 5000,
  });
  const before = await good.stats();
  const stop = new AbortController();
  try {
    // Nine open watches: under one shared limit of 8 they would hold every connection and the GETs would wait forever.
    const watches = Array.from({ length: 9 }, () => api.watch(undefined, stop.signal)[Symbol.asyncIterator]());
    for (const w of watches) assert.equal((await w.next()).value?.type, "ADDED");
    for (let round = 0; round < 3; round++) await Promise.all(Array.from({ length: 40 }, () => api.get()));
    const after = await good.stats();
    const opened = after.connections - before.connections;
    assert.ok(opened <= 9 + 8, `connections opened: ${JSON.stringify({ before, after })}`);
    assert.ok(after.requests - before.requests >= 129, JSON.stringify({ before, after }));
    for (const w of watches) await w.return?.(undefined);
  } finally {
    stop.abort();
  }
});

test("node: a watch on a frozen connection ends after the idle timeout and the next watch gets through", async () => {
  const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, {
    name: "hold",
    timeoutMs: 1000,
    watchIdleTimeoutMs: 1500,
  });
  const stop = new AbortController();
  const bound = (p, what) =>
    Promise.race([
      p,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: still pending`)), 20000).unref()),
    ]);
  try {
    const first = api.watch(undefined, stop.signal)[Symbol.asyncIterator]();
    assert.equal((await first.next()).value?.type, "ADDED");
    await good.freeze();
    const ended = await bound(first.next().then(() => "resolved", (e) => e), "watch on a frozen connection");
    assert.ok(ended instanceof TimeoutError, String(ended));
    const second = api.watch(undefined, stop.signal)[Symbol.asyncIterator]();
    assert.equal((await bound(second.next(), "watch after the idle timeout")).value?.type, "ADDED");
    await second.return?.(undefined);
  } finally {
    stop.abort();
    await good.heal();
  }
});

test("node: a PUT answered 303 is an error naming the fix; the redirect is not followed", async () => {
  const seen = [];
  const srv = createServer((req, res) => {
    seen.push(req.method);
    if (req.method === "PUT") {
      res.writeHead(303, { location: PATH });
      return res.end();
    }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ kind: "Lease", metadata: { resourceVersion: "8" }, spec: { holderIdentity: "x" } }));
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  try {
    const api = await createLeaseApi({ server: `http://127.0.0.1:${srv.address().port}`, source: "test" }, {
      name: "l",
    });
    await assert.rejects(api.update({ metadata: { resourceVersion: "7" }, spec: {} }), (e) => {
      assert.ok(e instanceof KubeApiError, String(e));
      assert.equal(e.code, 303);
      assert.match(e.message, /never follows/);
      return true;
    });
    assert.deepEqual(seen, ["PUT"]);
  } finally {
    srv.closeAllConnections();
    await new Promise((r) => srv.close(r));
  }
});

function probe(url, tls) {
  const script = fileURLToPath(new URL("../support/trust_probe.mjs", import.meta.url));
  const mod = new URL("../../dist/mod.js", import.meta.url).href;
  const out = execFileSync(process.execPath, [script, mod, url, JSON.stringify(tls)], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.otherCaFile },
    encoding: "utf8",
    timeout: 60000,
  });
  return JSON.parse(out.trim().split("\n").pop());
}

test("node: the cluster CA is the only trust anchor, even with another CA in NODE_EXTRA_CA_CERTS", () => {
  const trusted = probe(good.url + "/x", { caCert: certs.clusterCaFile });
  assert.equal(trusted.ok, true, JSON.stringify(trusted));
  const impostor = probe(other.url + "/x", { caCert: certs.clusterCaFile });
  assert.equal(impostor.ok, false, JSON.stringify(impostor));
});

test("node: insecure-skip-tls-verify refused with a CA; alone it keeps the client certificate and warns once", async () => {
  await assert.rejects(
    createFetch({ caCert: certs.clusterCa, insecureSkipTlsVerify: true }),
    (e) => e instanceof ConfigError,
  );
  const warnings = [];
  const logger = { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} };
  const api = await createLeaseApi({
    server: good.url,
    insecureSkipTlsVerify: true,
    clientCert: certs.client.cert,
    clientKey: certs.client.key,
    source: "test",
  }, { name: "l", logger });
  assert.equal((await api.get()).metadata.annotations.clientCn, "leasehold-test");
  assert.equal(warnings.length, 1);
});

test("node: 50 watch reconnects leave abort listeners flat and raise no MaxListenersExceeded warning", async () => {
  const warnings = [];
  const onWarning = (w) => warnings.push(w.name);
  process.on("warning", onWarning);
  try {
    const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, { name: "l" });
    const ctl = new AbortController();
    const counts = [];
    for (let i = 0; i < 50; i++) {
      for await (const _ of api.watch(undefined, ctl.signal)) { /* one event, then the end */ }
      counts.push(getEventListeners(ctl.signal, "abort").length);
    }
    assert.equal(counts[49], 0, `listeners after each watch: ${counts.join(",")}`);
    await new Promise((r) => setImmediate(r));
    assert.ok(!warnings.includes("MaxListenersExceededWarning"), warnings.join(","));
  } finally {
    process.off("warning", onWarning);
  }
});
