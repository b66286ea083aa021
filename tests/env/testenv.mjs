// The real API server for integration tests: builds the Go harness in
// tests/apiserver (embedded etcd + kube-apiserver), starts it once per test run,
// and makes realistic pod identities on it (ServiceAccount, the Role from
// deploy/rbac.yaml, a TokenRequest token, an in-cluster style directory).
//
// Plain JavaScript so that Deno, Bun and Node import the same file.
//
// Environment:
//   LEASEHOLD_TESTENV  path of a ready.json written by a running harness
//                      (tests/run_all.sh starts one for the whole run)
//   CI=true            a harness that cannot be built or started fails the test;
//                      elsewhere the integration tests are skipped, loudly.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(here, "..", "..");
export const GO_DIR = join(ROOT, "tests", "apiserver");
export const BIN_DIR = join(ROOT, ".cache", "bin");
const isNode = !globalThis.Deno && !globalThis.Bun;

/** The library, from source on Deno and Bun, from the built package on Node. */
export async function loadLib() {
  const spec = isNode ? "../../dist/mod.js" : "../../mod.ts";
  return await import(new URL(spec, import.meta.url).href);
}

/** Builds the harness binaries; the Go build cache makes an unchanged rebuild quick. */
export function buildHarness() {
  mkdirSync(BIN_DIR, { recursive: true });
  const ldflags = "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2" +
    " -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37";
  const r = spawnSync("go", ["build", "-trimpath", "-ldflags", ldflags, "-o", BIN_DIR + "/", "./cmd/..."], {
    cwd: GO_DIR,
    env: { ...process.env, GOTOOLCHAIN: "local" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.error) throw new Error(`cannot run go to build the test API server: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`go build of tests/apiserver failed with status ${r.status}`);
  return { testenv: join(BIN_DIR, "testenv"), clientgo: join(BIN_DIR, "clientgo-elector") };
}

/**
 * Starts the harness on `dir` (reused across restarts) and resolves with its
 * ready line plus `stop()` and `kill()`.
 */
export function startHarness(dir, { bin = join(BIN_DIR, "testenv"), logFile = join(dir, "apiserver.log") } = {}) {
  mkdirSync(dir, { recursive: true });
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ["--dir", dir], { stdio: ["ignore", "pipe", "pipe"] });
    const logs = [];
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the test API server was not ready within 150 s; last log lines:\n${logs.slice(-20).join("")}`));
    }, 150_000);
    child.stderr.on("data", (d) => {
      logs.push(String(d));
      if (logs.length > 200) logs.shift();
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${e.message}`));
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      writeFileSync(logFile, logs.join(""));
      reject(new Error(`the test API server exited with ${code} before it was ready:\n${logs.slice(-20).join("")}`));
    });
    child.stdout.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      const info = JSON.parse(out.slice(0, nl));
      const exited = new Promise((r) => child.once("exit", r));
      resolve({
        ...info,
        child,
        exited,
        async stop() {
          child.kill("SIGTERM");
          const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
          await exited;
          clearTimeout(t);
        },
        async kill() {
          child.kill("SIGKILL");
          await exited;
        },
      });
    });
  });
}

/**
 * Asks the API server's /readyz with a plain node:https client, not the
 * library's transport: a transport bug must show as a failing test, never as a
 * server that seems to be missing. Also checks that the harness process (the
 * ready line's pid) is still alive. Never throws.
 * @param {{ url: string, caFile: string, adminToken: string, pid?: number }} info
 * @param {{ timeoutMs?: number }} [options]
 * @returns {Promise<{ ok: true } | { ok: false, reason: string }>}
 */
export function probeServer(info, { timeoutMs = 5000 } = {}) {
  if (info.pid) {
    try {
      process.kill(info.pid, 0);
    } catch (e) {
      const code = /** @type {any} */ (e)?.code;
      if (code === "ESRCH") return Promise.resolve({ ok: false, reason: `the harness process ${info.pid} is gone` });
    }
  }
  return new Promise((resolve) => {
    let ca;
    try {
      ca = readFileSync(info.caFile, "utf8");
    } catch (e) {
      resolve({ ok: false, reason: `cannot read ${info.caFile}: ${/** @type {Error} */ (e).message}` });
      return;
    }
    const done = (/** @type {{ ok: true } | { ok: false, reason: string }} */ r) => {
      clearTimeout(timer);
      resolve(r);
    };
    const req = httpsRequest(new URL("/readyz", info.url), {
      method: "GET",
      ca,
      headers: { authorization: `Bearer ${info.adminToken}` },
      agent: false,
    }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        if (res.statusCode === 200) done({ ok: true });
        else done({ ok: false, reason: `${info.url}/readyz answers ${res.statusCode} ${body.slice(0, 200)}` });
      });
      res.on("error", (e) => done({ ok: false, reason: `${info.url}/readyz: ${e.message}` }));
    });
    const timer = setTimeout(() => {
      req.destroy();
      done({ ok: false, reason: `${info.url}/readyz did not answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.on("error", (e) => done({ ok: false, reason: `${info.url}/readyz: ${e.message}` }));
    req.end();
  });
}

/** @type {Promise<{ info: any, reason?: undefined } | { info?: undefined, reason: string }> | undefined} */
let shared;

/**
 * The API server for this test run, or why there is none; never throws. The
 * one named by LEASEHOLD_TESTENV (checked with {@link probeServer}), else one
 * built and started here (and killed when the process exits).
 */
export function serverAvailability() {
  shared ??= (async () => {
    try {
      const file = process.env.LEASEHOLD_TESTENV;
      if (file) {
        let info;
        try {
          info = JSON.parse(readFileSync(file, "utf8"));
        } catch (e) {
          throw new Error(`no ready line in ${file} (LEASEHOLD_TESTENV): ${/** @type {Error} */ (e).message}`);
        }
        const probe = await probeServer(info);
        if (!probe.ok) throw new Error(`the API server in ${file} does not answer: ${probe.reason}`);
        return { info };
      }
      buildHarness();
      const dir = await mkdtemp(join(tmpdir(), "leasehold-testenv-"));
      const h = await startHarness(dir);
      process.on("exit", () => h.child.kill("SIGKILL"));
      return { info: h };
    } catch (e) {
      return { reason: /** @type {Error} */ (e).message };
    }
  })();
  return shared;
}

let warned = false;

/**
 * The API server for this test run (see {@link serverAvailability}). Under
 * CI=true a missing server throws; elsewhere it resolves to `undefined` after
 * saying why on stderr. Tests should use `serverTest` from
 * tests/support/needs_server.mjs, which reports such tests as skipped.
 */
export async function apiServer() {
  const a = await serverAvailability();
  if (a.info) return a.info;
  if (process.env.CI === "true") throw new Error(`integration tests need the real API server: ${a.reason}`);
  if (!warned) {
    warned = true;
    console.error(
      `\n!!! SKIPPING integration tests: the real API server is not available: ${a.reason}\n!!! run them with: bash tests/run_all.sh\n`,
    );
  }
  // The caller skips its test (t.skip), which Deno reports as "ok". Unless the
  // test runs under tests/support/guard.mjs (which marks every t.skip), mark it
  // here so that tests/run_all.sh counts it as a skipped server test.
  if (!(/** @type {any} */ (globalThis).__leaseholdGuardRunning)) {
    console.error(
      `::leasehold-skip runtime :: (a test that called apiServer()) :: the real API server is not available`,
    );
  }
  return undefined;
}

let adminFetch;

/** A request as the cluster admin (static token); JSON in and out. */
export async function adminRequest(info, method, path, body, { raw = false } = {}) {
  if (!adminFetch) {
    const lib = await loadLib();
    adminFetch = await lib.createFetch({ caCert: readFileSync(info.caFile, "utf8") });
  }
  const res = await adminFetch(info.url + path, {
    method,
    headers: {
      authorization: `Bearer ${info.adminToken}`,
      "content-type": "application/json",
      accept: "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (raw) {
    await res.arrayBuffer();
    return res;
  }
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (res.status >= 300 && res.status !== 409) {
    throw new Error(`${method} ${path} as admin: ${res.status} ${text.slice(0, 300)}`);
  }
  return json;
}

let counter = 0;

/** A fresh namespace per test (namespaces are never deleted: no controller-manager runs). */
export async function freshNamespace(info, prefix = "t") {
  const rt = globalThis.Deno ? "deno" : globalThis.Bun ? "bun" : "node";
  const name = `${prefix}-${rt}-${Date.now().toString(36)}-${(counter++).toString(36)}${
    Math.floor(Math.random() * 1e4).toString(36)
  }`.slice(0, 63);
  await adminRequest(info, "POST", "/api/v1/namespaces", { metadata: { name } });
  return name;
}

/** The RBAC objects of deploy/rbac.yaml, with the lease name and namespace filled in. */
/**
 * @param {string} namespace
 * @param {string} leaseName
 * @param {{ dropVerbs?: string[], file?: string }} [options] `file`: the RBAC file under deploy/ (default rbac.yaml)
 */
export function rbacFromDeploy(namespace, leaseName, { dropVerbs = [], file = "rbac.yaml" } = {}) {
  const docs = parseAllDocuments(readFileSync(join(ROOT, "deploy", file), "utf8")).map((d) => d.toJSON());
  for (const d of docs) {
    d.metadata.namespace = namespace;
    if (d.kind === "Role") {
      for (const rule of d.rules) {
        if (rule.resourceNames) rule.resourceNames = [leaseName];
        rule.verbs = rule.verbs.filter((v) => !dropVerbs.includes(v));
      }
      d.rules = d.rules.filter((r) => r.verbs.length > 0);
    }
    if (d.kind === "RoleBinding") { for (const s of d.subjects) s.namespace = namespace; }
  }
  return docs;
}

const PATHS = {
  ServiceAccount: (ns) => `/api/v1/namespaces/${ns}/serviceaccounts`,
  Role: (ns) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`,
  RoleBinding: (ns) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`,
};

/**
 * Makes a pod identity as a kubelet would: applies deploy/rbac.yaml into
 * `namespace` (for `leaseName`), requests a token for the ServiceAccount, and
 * writes `token`, `ca.crt` and `namespace` into a directory. Returns the
 * directory, the env of a pod (KUBERNETES_SERVICE_HOST/PORT) and the token.
 * With `boundSecret`, the token is bound to a new Secret: deleting the Secret
 * revokes it at once. With `file`, another RBAC file under deploy/ (e.g.
 * rbac.shards.yaml) is applied instead of rbac.yaml.
 * @param {any} info
 * @param {string} namespace
 * @param {string} leaseName
 * @param {{ dropVerbs?: string[], boundSecret?: string, dir?: string, file?: string }} [options]
 */
export async function podIdentity(info, namespace, leaseName, { dropVerbs = [], boundSecret, dir, file } = {}) {
  const docs = rbacFromDeploy(namespace, leaseName, { dropVerbs, file });
  for (const d of docs) await adminRequest(info, "POST", PATHS[d.kind](namespace), d);
  const sa = docs.find((d) => d.kind === "ServiceAccount").metadata.name;
  const token = await requestToken(info, namespace, sa, { boundSecret });
  dir ??= await mkdtemp(join(tmpdir(), "leasehold-sa-"));
  writeFileSync(join(dir, "token"), token);
  writeFileSync(join(dir, "ca.crt"), readFileSync(info.caFile));
  writeFileSync(join(dir, "namespace"), namespace);
  await waitForRbac(info, namespace, sa, leaseName, dropVerbs);
  return {
    dir,
    token,
    serviceAccount: sa,
    env: { KUBERNETES_SERVICE_HOST: info.host, KUBERNETES_SERVICE_PORT: String(info.port) },
  };
}

/** A TokenRequest token for a ServiceAccount, optionally bound to a (new) Secret. */
/**
 * @param {any} info
 * @param {string} namespace
 * @param {string} sa
 * @param {{ boundSecret?: string }} [options]
 */
export async function requestToken(info, namespace, sa, { boundSecret } = {}) {
  const spec = { expirationSeconds: 3600 };
  if (boundSecret) {
    const secret = await adminRequest(info, "POST", `/api/v1/namespaces/${namespace}/secrets`, {
      metadata: { name: boundSecret },
      type: "Opaque",
    });
    spec.boundObjectRef = { kind: "Secret", apiVersion: "v1", name: boundSecret, uid: secret.metadata.uid };
  }
  const tr = await adminRequest(info, "POST", `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`, {
    apiVersion: "authentication.k8s.io/v1",
    kind: "TokenRequest",
    spec,
  });
  return tr.status.token;
}

/** RBAC reaches the authorizer through informers: wait until the grant is visible. */
async function waitForRbac(info, namespace, sa, leaseName, dropVerbs) {
  const verb = dropVerbs.includes("get") ? "create" : "get";
  for (let i = 0; i < 100; i++) {
    const review = await adminRequest(info, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SubjectAccessReview",
      spec: {
        user: `system:serviceaccount:${namespace}:${sa}`,
        groups: ["system:serviceaccounts", `system:serviceaccounts:${namespace}`, "system:authenticated"],
        resourceAttributes: {
          namespace,
          verb,
          group: "coordination.k8s.io",
          resource: "leases",
          name: verb === "get" ? leaseName : undefined,
        },
      },
    });
    if (review?.status?.allowed) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`RBAC for ${sa} in ${namespace} did not become effective within 10 s`);
}

/** Writes a kubeconfig for a token, next to `dir`. */
export function writeKubeconfig(info, dir, token, namespace) {
  const path = join(dir, "kubeconfig");
  writeFileSync(
    path,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: testenv",
      "  cluster:",
      `    server: ${info.url}`,
      `    certificate-authority: ${info.caFile}`,
      "users:",
      "- name: sa",
      "  user:",
      `    token: ${token}`,
      "contexts:",
      "- name: testenv",
      "  context:",
      "    cluster: testenv",
      "    user: sa",
      `    namespace: ${namespace}`,
      "current-context: testenv",
      "",
    ].join("\n"),
  );
  return path;
}

export { existsSync };
