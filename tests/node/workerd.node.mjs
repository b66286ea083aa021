// The library on an edge runtime: workerd runs tests/workerd/worker.js, which
// imports the built package (dist/) unchanged and holds an election against the
// real test API server over HTTPS with workerd's own fetch. The cluster CA is
// trusted through workerd's network service TLS options, nothing else.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { adminRequest, freshNamespace, podIdentity, ROOT } from "../env/testenv.mjs";
import { serverTest } from "../support/needs_server.mjs";

const WORKERD = join(ROOT, "node_modules", ".bin", "workerd");
const LEASE = "edge-lease";

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function listening(port, child, ms = 30000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null) return reject(new Error(`workerd exited with ${child.exitCode}`));
      const c = connect(port, "127.0.0.1");
      c.once("connect", () => {
        c.destroy();
        resolve();
      });
      c.once("error", () => {
        c.destroy();
        if (Date.now() > deadline) reject(new Error(`workerd did not listen on ${port} within ${ms} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** The JS files of the built library: what an npm user of the package gets. */
function libraryModules(dir) {
  const out = [];
  const walk = (d) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (f.endsWith(".js")) out.push(relative(dir, p));
    }
  };
  walk(join(dir, "dist"));
  return out.filter((f) => !/transport_(node|bun|deno)\.js$|cli\.js$/.test(f));
}

function config({ port, server, token, namespace }) {
  const q = (s) => JSON.stringify(s);
  return `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .edgeWorker),
    (name = "cluster", network = (allow = ["local"], tlsOptions = (trustedCertificates = [embed "ca.crt"]))),
  ],
  sockets = [(name = "http", address = ${q(`127.0.0.1:${port}`)}, http = (), service = "main")],
);
const edgeWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
${modules.map((m) => `    (name = ${q(m)}, esModule = embed ${q(m)}),`).join("\n")}
  ],
  compatibilityDate = "2025-09-01",
  globalOutbound = "cluster",
  bindings = [
    (name = "SERVER", text = ${q(server)}),
    (name = "TOKEN", text = ${q(token)}),
    (name = "NAMESPACE", text = ${q(namespace)}),
    (name = "LEASE", text = ${q(LEASE)}),
  ],
);
`;
}
let modules = [];

serverTest("workerd: a Worker elects, renews, releases and answers who leads, against the real API server", {
  timeout: 120000,
}, async (_t, info) => {
  const namespace = await freshNamespace(info, "edge");
  const id = await podIdentity(info, namespace, LEASE);
  const dir = mkdtempSync(join(tmpdir(), "leasehold-workerd-"));
  cpSync(join(ROOT, "dist"), join(dir, "dist"), { recursive: true });
  cpSync(join(ROOT, "tests", "workerd", "worker.js"), join(dir, "worker.js"));
  writeFileSync(join(dir, "ca.crt"), readFileSync(info.caFile));
  modules = libraryModules(dir);
  const port = await freePort();
  writeFileSync(join(dir, "config.capnp"), config({ port, server: info.url, token: id.token, namespace }));
  const child = spawn(WORKERD, ["serve", join(dir, "config.capnp"), "--verbose"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  try {
    await listening(port, child).catch((e) => {
      throw new Error(`${e.message}\n${log}`);
    });
    const base = `http://127.0.0.1:${port}`;
    const before = await (await fetch(`${base}/leader`)).json();
    assert.deepEqual(before, { holderIdentity: null }, JSON.stringify(before) + log);

    const election = fetch(`${base}/elect?identity=edge-1&holdMs=2500`).then((r) => r.json());
    // While it leads, the stateless endpoint and the API server agree on the holder.
    let seen;
    for (let i = 0; i < 200 && seen?.holderIdentity !== "edge-1"; i++) {
      seen = await (await fetch(`${base}/leader`)).json();
      if (seen.holderIdentity !== "edge-1") await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(seen?.holderIdentity, "edge-1", `the Worker's /leader answer: ${JSON.stringify(seen)}\n${log}`);
    const held = await adminRequest(
      info,
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${LEASE}`,
    );
    assert.equal(held.spec.holderIdentity, "edge-1");
    assert.equal(held.spec.leaseDurationSeconds, 4);

    const out = await election;
    assert.equal(out.acquired, true, JSON.stringify(out) + log);
    assert.equal(out.fencingToken, "0/edge-1");
    assert.ok(out.renewals >= 2, `renewed ${out.renewals} times in 2.5 s at a 0.5 s retry period`);
    // "stopped leading" is reported when the work is told to stop; the work then ends.
    assert.deepEqual(out.events, ["started", "stopped: shutdown", "work stopped"]);

    const after = await adminRequest(
      info,
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${LEASE}`,
    );
    assert.equal(after.spec.holderIdentity ?? "", "", "released on shutdown");
    const free = await (await fetch(`${base}/leader`)).json();
    assert.equal(free.holderIdentity, "");
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.exitCode !== null ? r() : child.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
});
