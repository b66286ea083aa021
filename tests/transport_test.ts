// The path to the API server on the runtime running this file (Deno or Bun; Node
// runs tests/node/transport.node.mjs against the built package): connections that
// die silently, redirects, trust, tokens, Retry-After, 401s, watch streams.
import { after, before, test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import {
  ConfigError,
  createFetch,
  createLeaseApi,
  FileTokenSource,
  InvalidResponseError,
  KubeApiError,
  KubeClient,
  KubeLeaseApi,
  type Logger,
  ManualClock,
  runtimeKey,
  TimeoutError,
  type TokenSource,
} from "../mod.ts";
import { makeTestCerts } from "./support/tls_certs.mjs";
import { startFrozenProxy } from "./support/frozen_proxy_client.mjs";

type TestCerts = ReturnType<typeof makeTestCerts>;
type FrozenProxy = Awaited<ReturnType<typeof startFrozenProxy>>;

const LEASE = { kind: "Lease", metadata: { name: "l", namespace: "default", resourceVersion: "7" }, spec: {} };
const PATH = "/apis/coordination.k8s.io/v1/namespaces/default/leases/l";

let certs: TestCerts;
let good: FrozenProxy; // serving certificate from the cluster CA, asks for client certificates
let other: FrozenProxy; // serving certificate from another CA

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

function spyLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { warnings, debug() {}, info() {}, warn: (m: string) => void warnings.push(m), error() {} };
}

/** A local plain-HTTP server; `handler` answers, every request is recorded. */
async function httpServer(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const srv = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return {
    url,
    seen,
    close: () =>
      new Promise<void>((r) => {
        (srv as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        srv.close(() => r());
      }),
  };
}

/** Rejects when `p` has not settled within `ms` real milliseconds (a bound against hangs, not a timing check). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((
      _,
      reject,
    ) => (t = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms))),
  ]);
}

// ---- issue 15 #1: a connection that goes silent without closing ---------------

test("a connection frozen without FIN or RST is abandoned after one request timeout", async () => {
  const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, {
    name: "frozen",
    timeoutMs: 1000,
  });
  assert.ok(await api.get());
  await good.freeze(); // every open connection stops forwarding; new ones work
  const outcomes: string[] = [];
  for (let i = 0; i < 2; i++) {
    try {
      await api.get();
      outcomes.push("ok");
    } catch (e) {
      assert.ok(e instanceof TimeoutError, String(e));
      outcomes.push("timeout");
    }
  }
  // At most the first request may be lost to the frozen connection; the next one uses a new one.
  assert.equal(outcomes[1], "ok", `outcomes after the freeze: ${outcomes.join(", ")}`);
  await good.heal();
  assert.ok(await api.get());
});

test("a watch on a frozen connection ends after the idle timeout and the next watch gets through", async () => {
  const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, {
    name: "hold",
    timeoutMs: 1000,
    watchIdleTimeoutMs: 1500,
  });
  const stop = new AbortController();
  try {
    const first = api.watch(undefined, stop.signal)[Symbol.asyncIterator]();
    assert.equal((await first.next()).value?.type, "ADDED");
    await good.freeze();
    const ended = await within(first.next().then(() => "resolved", (e) => e), 20000, "watch on a frozen connection");
    assert.ok(ended instanceof TimeoutError, String(ended));
    const second = api.watch(undefined, stop.signal)[Symbol.asyncIterator]();
    assert.equal((await within(second.next(), 20000, "watch after the idle timeout")).value?.type, "ADDED");
    await second.return?.(undefined);
  } finally {
    stop.abort();
    await good.heal();
  }
});

// ---- issue 12: one connection per process -----------------------------------

test("a TLS server that offers only HTTP/1.1 is reached with the cluster CA alone", async () => {
  const { createServer: createHttpsServer } = await import("node:https");
  const { readFileSync } = await import("node:fs");
  const srv = createHttpsServer(
    { cert: readFileSync(certs.server.certFile), key: readFileSync(certs.server.keyFile) },
    (req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ ...LEASE, metadata: { ...LEASE.metadata, annotations: { proto: req.httpVersion } } }));
    },
  );
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  try {
    const server = `https://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const api = await createLeaseApi({ server, caCert: certs.clusterCa, source: "test" }, {
      name: "l",
      timeoutMs: 5000,
    });
    for (let i = 0; i < 3; i++) {
      const lease = await api.get();
      assert.equal((lease?.metadata.annotations as Record<string, string>).proto, "1.1");
    }
  } finally {
    (srv as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    await new Promise<void>((r) => srv.close(() => r()));
  }
});

// ---- issue 15 #3: redirects --------------------------------------------------

test("a PUT answered 303 is an error naming the fix, never a success; nothing follows it", async () => {
  const target = await httpServer((_req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ...LEASE, spec: { holderIdentity: "someone-else" } }));
  });
  const srv = await httpServer((req, res) => {
    if (req.method === "PUT") {
      res.writeHead(303, { location: target.url + PATH });
      return res.end();
    }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ...LEASE, spec: { holderIdentity: "someone-else" } }));
  });
  try {
    const api = await createLeaseApi({ server: srv.url, source: "test" }, { name: "l", timeoutMs: 5000 });
    const lease = { metadata: { resourceVersion: "7" }, spec: { holderIdentity: "me" } };
    await assert.rejects(api.update(lease), (e) => {
      assert.ok(e instanceof KubeApiError, String(e));
      assert.equal(e.code, 303);
      assert.match(e.message, /never follows/);
      assert.match(e.message, /server URL/);
      return true;
    });
    assert.deepEqual(srv.seen, [`PUT ${PATH}`]);
    assert.deepEqual(target.seen, []);
  } finally {
    await srv.close();
    await target.close();
  }
});

test("over TLS with the cluster CA a redirect (to plain http) is not followed either", async () => {
  const f = await createFetch({ caCert: certs.clusterCa });
  const client = new KubeClient({ server: good.url, fetch: f, timeoutMs: 5000 });
  await assert.rejects(client.request("GET", "/redirect"), (e) => {
    assert.ok(e instanceof KubeApiError, String(e));
    assert.equal(e.code, 303);
    return true;
  });
});

// ---- issue 15 #4: trust --------------------------------------------------------

function probe(
  url: string,
  tls: Record<string, unknown>,
): { ok: boolean; status?: number; clientCn?: string; error?: string } {
  const script = fileURLToPath(new URL("./support/trust_probe.mjs", import.meta.url));
  const mod = new URL("../mod.ts", import.meta.url).href;
  const rt = runtimeKey();
  const [cmd, pre] = rt === "deno"
    ? [(globalThis as unknown as { Deno: { execPath(): string } }).Deno.execPath(), ["run", "-A"]]
    : [process.execPath, []];
  const out = execFileSync(cmd, [...pre, script, mod, url, JSON.stringify(tls)], {
    env: {
      ...process.env,
      // The other CA is trusted by the runtime itself: it must still not be trusted for the API server.
      DENO_CERT: certs.otherCaFile,
      DENO_TLS_CA_STORE: "mozilla,system",
      NODE_EXTRA_CA_CERTS: certs.otherCaFile,
    },
    encoding: "utf8",
    timeout: 60000,
  });
  return JSON.parse(out.trim().split("\n").pop()!);
}

test("the cluster CA is the only trust anchor, even with another CA in DENO_CERT / NODE_EXTRA_CA_CERTS", () => {
  const trusted = probe(good.url + "/x", { caCert: certs.clusterCaFile });
  assert.equal(trusted.ok, true, JSON.stringify(trusted));
  const impostor = probe(other.url + "/x", { caCert: certs.clusterCaFile });
  assert.equal(impostor.ok, false, `a server signed by another CA was accepted: ${JSON.stringify(impostor)}`);
});

test("insecure-skip-tls-verify: refused with a CA; alone it keeps the client certificate and warns once", async () => {
  await assert.rejects(
    createFetch({ caCert: certs.clusterCa, insecureSkipTlsVerify: true }),
    (e) => e instanceof ConfigError && /insecure-skip-tls-verify/.test(e.message),
  );
  const log = spyLogger();
  const api = await createLeaseApi({
    server: good.url,
    insecureSkipTlsVerify: true,
    clientCert: certs.client.cert,
    clientKey: certs.client.key,
    source: "test",
  }, { name: "l", logger: log, timeoutMs: 5000 });
  const lease = await api.get();
  assert.equal((lease?.metadata.annotations as Record<string, string> | undefined)?.clientCn, "leasehold-test");
  await api.get();
  assert.equal(log.warnings.length, 1);
  assert.match(log.warnings[0], /verification .* off/);
  // Verification is really off: a server signed by an unknown CA is accepted.
  const f = await createFetch({ insecureSkipTlsVerify: true });
  const res = await f(other.url + "/x");
  assert.equal(res.status, 200);
  await res.body?.cancel();
});

// ---- issue 15 #5: tokens -------------------------------------------------------

test("tokens are checked when read: a trailing newline is trimmed, an embedded one refused, never quoted", async () => {
  const dir = mkdtempSync(join(tmpdir(), "leasehold-token-"));
  try {
    writeFileSync(join(dir, "ok"), "abc.def-ghi\n");
    assert.equal(await new FileTokenSource(join(dir, "ok")).token(), "abc.def-ghi");
    writeFileSync(join(dir, "crlf"), "abc.def\r\n");
    assert.equal(await new FileTokenSource(join(dir, "crlf")).token(), "abc.def");
    writeFileSync(join(dir, "bad"), "secret-part-one\nsecret-part-two\n");
    await assert.rejects(new FileTokenSource(join(dir, "bad")).token(), (e) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, /line break/);
      assert.doesNotMatch(e.message, /secret-part/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a token source handing out a token with a header-breaking byte fails before sending, without the token", async () => {
  let calls = 0;
  const client = new KubeClient({
    server: "https://k8s",
    fetch: () => (calls++, Promise.resolve(Response.json(LEASE))),
    tokenSource: { token: () => Promise.resolve("secret-part\r\nX-Injected: 1") },
  });
  await assert.rejects(client.request("GET", PATH), (e) => {
    assert.ok(e instanceof ConfigError, String(e));
    assert.doesNotMatch(e.message, /secret-part|Injected/);
    return true;
  });
  assert.equal(calls, 0);
});

// ---- issue 9 #9: Retry-After ---------------------------------------------------

async function retryAfterOf(headers: Record<string, string>, details?: unknown): Promise<number | undefined> {
  const clock = new ManualClock(new Date("2026-03-01T10:00:00Z"));
  const client = new KubeClient({
    server: "https://k8s",
    clock,
    fetch: () =>
      Promise.resolve(
        new Response(
          JSON.stringify({ kind: "Status", code: 429, reason: "TooManyRequests", message: "slow down", details }),
          { status: 429, headers: { "content-type": "application/json", ...headers } },
        ),
      ),
  });
  try {
    await client.request("GET", PATH);
  } catch (e) {
    assert.ok(e instanceof KubeApiError);
    return e.retryAfterSeconds;
  }
  assert.fail("no error");
}

test("Retry-After and retryAfterSeconds are validated: seconds, HTTP-date, garbage ignored, huge clamped", async () => {
  assert.equal(await retryAfterOf({ "retry-after": "3" }), 3);
  assert.equal(await retryAfterOf({ "retry-after": "NaN" }), undefined);
  assert.equal(await retryAfterOf({ "retry-after": "-5" }), undefined);
  assert.equal(await retryAfterOf({ "retry-after": "1.5" }), undefined);
  assert.equal(await retryAfterOf({ "retry-after": "99999999999999999999" }), 60);
  // HTTP-date, measured against the server's own Date header.
  assert.equal(
    await retryAfterOf({ "retry-after": "Sun, 01 Mar 2026 09:00:07 GMT", date: "Sun, 01 Mar 2026 09:00:00 GMT" }),
    7,
  );
  // Without a Date header, against the (injected) wall clock.
  assert.equal(await retryAfterOf({ "retry-after": "Sun, 01 Mar 2026 10:00:05 GMT" }), 5);
  assert.equal(await retryAfterOf({ "retry-after": "Sun, 01 Mar 2026 09:00:00 GMT" }), 0);
  assert.equal(await retryAfterOf({}, { retryAfterSeconds: -1 }), undefined);
  assert.equal(await retryAfterOf({}, { retryAfterSeconds: "5" }), undefined);
  assert.equal(await retryAfterOf({}, { retryAfterSeconds: 1e12 }), 60);
  assert.equal(await retryAfterOf({}, { retryAfterSeconds: 2 }), 2);
});

// ---- issue 16: 401 -------------------------------------------------------------

/** A token source whose token changes on re-read; counts re-reads. */
function rotatingTokens(): TokenSource & { rereads: number; current: string; next: string } {
  const src = {
    rereads: 0,
    current: "old",
    next: "new",
    token: () => Promise.resolve(src.current),
    invalidate: async () => {
      src.rereads++;
      await new Promise((r) => setTimeout(r, 5)); // a file read takes a moment
      const changed = src.current !== src.next;
      src.current = src.next;
      return changed;
    },
  };
  return src;
}

function authServerFetch(
  accepted = { token: "new" },
): (input: string | URL | Request, init?: RequestInit) => Promise<Response> {
  return (input, init) => {
    const auth = new Headers(init?.headers).get("authorization");
    if (auth !== `Bearer ${accepted.token}`) {
      return Promise.resolve(Response.json({ kind: "Status", code: 401, reason: "Unauthorized" }, { status: 401 }));
    }
    const url = String(input);
    if (url.includes("watch=1")) {
      return Promise.resolve(new Response(JSON.stringify({ type: "ADDED", object: LEASE }) + "\n"));
    }
    return Promise.resolve(Response.json(LEASE));
  };
}

test("a PUT leaves metadata.managedFields out of its body; the rest of the Lease goes as read", async () => {
  const bodies: string[] = [];
  const f = (_input: string | URL | Request, init?: RequestInit) => {
    bodies.push(String(init?.body));
    return Promise.resolve(Response.json(LEASE));
  };
  const api = new KubeLeaseApi(new KubeClient({ server: "http://127.0.0.1:1", fetch: f }), "default", "l");
  const managedFields = [{ manager: "someone", operation: "Update", fieldsV1: { "f:spec": {} } }];
  await api.update({
    metadata: { ...LEASE.metadata, labels: { a: "b" }, managedFields },
    spec: { holderIdentity: "me" },
  });
  const sent = JSON.parse(bodies[0]);
  assert.equal("managedFields" in sent.metadata, false);
  assert.deepEqual(sent.metadata, { ...LEASE.metadata, labels: { a: "b" } });
  assert.deepEqual(sent.spec, { holderIdentity: "me" });
});

test("a 401 on a watch re-reads the token and watches with the new one", async () => {
  const tokens = rotatingTokens();
  const api = new KubeLeaseApi(
    new KubeClient({ server: "https://k8s", fetch: authServerFetch(), tokenSource: tokens }),
    "default",
    "l",
  );
  const events = [];
  for await (const ev of api.watch(undefined, new AbortController().signal)) events.push(ev.type);
  assert.deepEqual(events, ["ADDED"]);
  assert.equal(tokens.rereads, 1);
});

test("concurrent 401s for the same token cause one token re-read, not one each", async () => {
  const tokens = rotatingTokens();
  const accepted = { token: "new" };
  const client = new KubeClient({ server: "https://k8s", fetch: authServerFetch(accepted), tokenSource: tokens });
  const results = await Promise.all([1, 2, 3, 4].map(() => client.request("GET", PATH)));
  assert.equal(results.length, 4);
  assert.equal(tokens.rereads, 1);
  // The token is rotated again later: the next 401s re-read once more, together.
  accepted.token = "newer";
  tokens.next = "newer";
  await Promise.all([1, 2].map(() => client.request("GET", PATH)));
  assert.equal(tokens.rereads, 2);
  // A token the server keeps rejecting: one re-read per failed request, and the 401 surfaces.
  accepted.token = "never";
  await assert.rejects(client.request("GET", PATH), (e) => e instanceof KubeApiError && e.code === 401);
  assert.equal(tokens.rereads, 3);
});

// ---- issue 15 #2, issue 9 #6: watch streams ----------------------------------------

function streamOf(chunks: string[], { end = true } = {}): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(ctl) {
      for (const c of chunks) ctl.enqueue(enc.encode(c));
      if (end) ctl.close();
    },
  });
}

test("a watch stream whose last line is cut off ends with an error, not silently", async () => {
  const body = JSON.stringify({ type: "ADDED", object: LEASE }) + "\n" + '{"type":"MODIFIED","object":{"metad';
  const api = new KubeLeaseApi(
    new KubeClient({ server: "https://k8s", fetch: () => Promise.resolve(new Response(streamOf([body]))) }),
    "default",
    "l",
  );
  const seen: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const ev of api.watch(undefined, new AbortController().signal)) seen.push(ev.type);
    })(),
    (e) => e instanceof InvalidResponseError && /ended inside an event/.test(e.message),
  );
  assert.deepEqual(seen, ["ADDED"]);
});

test("a watch silent for longer than the idle timeout ends with a TimeoutError and drops pooled connections", async () => {
  const clock = new ManualClock();
  let resets = 0;
  const f = Object.assign(
    () =>
      Promise.resolve(
        new Response(streamOf([JSON.stringify({ type: "ADDED", object: LEASE }) + "\n"], { end: false })),
      ),
    { reset: () => void resets++ },
  );
  const api = new KubeLeaseApi(new KubeClient({ server: "https://k8s", fetch: f, clock }), "default", "l", {
    watchIdleTimeoutMs: 90_000,
  });
  const it = api.watch(undefined, new AbortController().signal)[Symbol.asyncIterator]();
  assert.equal((await it.next()).value?.type, "ADDED");
  const next = it.next();
  await clock.advance(89_000);
  let settled = false;
  next.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(settled, false, "ended before the idle timeout");
  await clock.advance(1_000);
  await assert.rejects(within(next, 5000, "silent watch"), (e) => e instanceof TimeoutError);
  assert.equal(resets, 1);
});

test("the error body of a failed watch is read under the request timeout", async () => {
  const clock = new ManualClock();
  const f = () => Promise.resolve(new Response(streamOf(['{"kind":"Status","co'], { end: false }), { status: 500 }));
  const api = new KubeLeaseApi(
    new KubeClient({ server: "https://k8s", fetch: f, clock, timeoutMs: 2000 }),
    "default",
    "l",
  );
  const it = api.watch(undefined, new AbortController().signal)[Symbol.asyncIterator]();
  const outcome = it.next().then(() => "resolved", (e) => e);
  await clock.advance(2000);
  const e = await within(outcome, 5000, "failed watch's body");
  assert.ok(e instanceof TimeoutError, String(e));
});

// ---- issue 9 #5: listeners per watch connection ----------------------------------

/** An AbortSignal whose abort listeners are counted. */
function countedSignal(): { signal: AbortSignal; count(): number } {
  const ctl = new AbortController();
  const live = new Set<unknown>();
  const s = ctl.signal;
  const add = s.addEventListener.bind(s);
  const remove = s.removeEventListener.bind(s);
  s.addEventListener = ((type: string, fn: EventListenerOrEventListenerObject, opts?: AddEventListenerOptions) => {
    if (type === "abort") live.add(fn);
    add(type, fn, opts);
  }) as typeof s.addEventListener;
  s.removeEventListener = ((type: string, fn: EventListenerOrEventListenerObject, opts?: EventListenerOptions) => {
    if (type === "abort") live.delete(fn);
    remove(type, fn, opts);
  }) as typeof s.removeEventListener;
  return { signal: s, count: () => live.size };
}

async function reconnect50(api: KubeLeaseApi, signal: AbortSignal, count: () => number): Promise<number[]> {
  const counts: number[] = [];
  for (let i = 0; i < 50; i++) {
    for await (const _ of api.watch(undefined, signal)) { /* one event, then the server ends the watch */ }
    counts.push(count());
  }
  return counts;
}

test("50 watch reconnects leave the caller's abort listeners flat (fake transport)", async () => {
  const api = new KubeLeaseApi(
    new KubeClient({
      server: "https://k8s",
      fetch: () => Promise.resolve(new Response(streamOf([JSON.stringify({ type: "ADDED", object: LEASE }) + "\n"]))),
    }),
    "default",
    "l",
  );
  const { signal, count } = countedSignal();
  const counts = await reconnect50(api, signal, count);
  assert.equal(counts[49], counts[0], `listeners after each watch: ${counts.join(",")}`);
  assert.equal(counts[49], 0);
});

test("50 watch reconnects leave the caller's abort listeners flat (this runtime's TLS transport)", async () => {
  const api = await createLeaseApi({ server: good.url, caCert: certs.clusterCa, source: "test" }, {
    name: "l",
    timeoutMs: 5000,
  });
  const { signal, count } = countedSignal();
  const counts = await reconnect50(api, signal, count);
  assert.equal(counts[49], 0, `listeners after each watch: ${counts.join(",")}`);
});

// ---- issue 15: hostile bodies are read no further than the size cap --------------

/** A body of 64 KiB chunks made on demand, counting the bytes its reader pulled. */
function countingBody(): { stream: ReadableStream<Uint8Array>; pulled(): number; cancelled(): boolean } {
  const chunk = new Uint8Array(64 * 1024).fill(0x78);
  let pulled = 0;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(ctl) {
      pulled += chunk.byteLength;
      ctl.enqueue(chunk.slice());
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  return { stream, pulled: () => pulled, cancelled: () => cancelled };
}

test("a body whose Content-Length is over the cap is refused before any of it is read", async () => {
  const body = countingBody();
  const client = new KubeClient({
    server: "https://k8s",
    fetch: () =>
      Promise.resolve(
        new Response(body.stream, {
          headers: { "content-type": "application/json", "content-length": String(64 * 1024 * 1024) },
        }),
      ),
  });
  await assert.rejects(
    client.request("GET", PATH),
    (e) => e instanceof InvalidResponseError && /larger than 1048576 bytes/.test(e.message),
  );
  assert.equal(body.pulled(), 0, "bytes were read from a body already known to be too large");
  assert.ok(body.cancelled(), "the body was not cancelled (its connection stays open)");
});

test("a body without a length that never ends is read up to the cap and one chunk, then cancelled", async () => {
  const body = countingBody();
  const client = new KubeClient({
    server: "https://k8s",
    maxBodyBytes: 256 * 1024,
    fetch: () => Promise.resolve(new Response(body.stream, { headers: { "content-type": "application/json" } })),
  });
  await assert.rejects(
    client.request("GET", PATH),
    (e) => e instanceof InvalidResponseError && /larger than 262144 bytes/.test(e.message),
  );
  assert.ok(body.pulled() <= 256 * 1024 + 64 * 1024, `pulled ${body.pulled()} bytes past a cap of 256 KiB`);
  assert.ok(body.cancelled(), "the body was not cancelled (its connection stays open)");
});

test("a watch answered with a Content-Length over the cap is refused before any of it is read", async () => {
  const body = countingBody();
  const api = new KubeLeaseApi(
    new KubeClient({
      server: "https://k8s",
      fetch: () => Promise.resolve(new Response(body.stream, { headers: { "content-length": String(10 << 20) } })),
    }),
    "default",
    "l",
  );
  await assert.rejects(
    (async () => {
      for await (const _ of api.watch(undefined, new AbortController().signal)) { /* none */ }
    })(),
    (e) => e instanceof InvalidResponseError && /larger than 1048576 bytes/.test(e.message),
  );
  assert.equal(body.pulled(), 0, "bytes were read from a watch body already known to be too large");
  assert.ok(body.cancelled(), "the body was not cancelled (its connection stays open)");
});
