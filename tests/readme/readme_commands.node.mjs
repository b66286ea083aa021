// The README's commands, as a new user types them, in a fresh copy of the
// repository with only Node, npm and Go on PATH (no node_modules/.bin).
//
//   node --test tests/readme/readme_commands.node.mjs
//
// Commands are parsed out of README.md: every line of every `sh` block (`&&`
// chains split) and every inline code span that starts with `npm ` or `npx `. Each
// one must match a probe below: long-running ones (the demo, the API server) are
// started and stopped after they showed they work; the others run in their help,
// dry-run or check form. A README command without a probe fails, so a new command
// cannot go untested.
//
// The kubeconfig variant of the demo and the kubectl commands use the real test
// API server (tests/env/testenv.mjs): without it they are skipped loudly, and
// under CI=true they fail.
import { after, before, test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { get } from "node:https";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { apiServer } from "../env/testenv.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const README = readFileSync(join(ROOT, "README.md"), "utf8");
const CI = process.env.CI === "true";
// A new user's PATH: this Node first, and no project tools.
const PATH = [dirname(process.execPath), ...(process.env.PATH ?? "").split(delimiter)]
  .filter((p) => p && !p.includes("node_modules"))
  .join(delimiter);
const ENV = { ...process.env, PATH, NO_COLOR: "1" };
for (const k of Object.keys(ENV)) if (k.startsWith("npm_")) delete ENV[k];

/** The commands README.md tells a user to type, in order, each once. */
export function readmeCommands(text) {
  /** @type {string[]} */
  const found = [];
  const lines = text.split("\n");
  let block = null;
  for (const line of lines) {
    const fence = line.match(/^```(\w*)/);
    if (fence) {
      block = block === null ? fence[1] : null;
      continue;
    }
    if (block === "sh") {
      const cmd = line.replace(/(^|\s)#.*$/, "").trim();
      if (cmd) found.push(...cmd.split("&&").map((c) => c.trim()).filter(Boolean));
    } else if (block === null) {
      for (const m of line.matchAll(/`((?:npm|npx) [^`]+)`/g)) found.push(m[1].trim());
    }
  }
  return [...new Set(found)];
}

const onPath = (tool) => PATH.split(delimiter).some((d) => existsSync(join(d, tool)));

/** @type {string} */ let work;
/** @type {string} */ let fresh;
/** @type {ReturnType<typeof spawnSync>} */ let install;
/** @type {any} */ let server; // the real API server, for the kubeconfig demo and kubectl

function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { cwd: fresh, env: ENV, encoding: "utf8", timeout: 300_000, ...opts });
}

/**
 * Starts a command line in its own process group, resolves once `ready` matches its
 * output, then stops the whole group (SIGINT, then SIGKILL) and resolves with the
 * output and exit status; `whileRunning(output)` runs before the stop. `stop: false`
 * lets it run to its end instead.
 */
function startUntil(line, ready, { timeout = 120_000, stop = true, signal = "SIGINT", env = ENV, whileRunning } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", line], { cwd: fresh, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let seen = false;
    let timer;
    const kill = (sig) => {
      try {
        process.kill(-child.pid, sig);
      } catch { /* gone */ }
    };
    let during;
    const onData = (d) => {
      out += d;
      if (!seen && ready.test(out)) {
        seen = true;
        clearTimeout(timer);
        if (stop) {
          during = Promise.resolve(whileRunning?.(out)).then(
            (v) => ({ ok: v }),
            (e) => ({ error: e }),
          ).finally(() => {
            kill(signal);
            timer = setTimeout(() => kill("SIGKILL"), 20_000);
          });
        }
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    timer = setTimeout(() => {
      kill("SIGKILL");
      reject(new Error(`\`${line}\` did not print ${ready} within ${timeout} ms; output:\n${out.slice(-3000)}`));
    }, timeout);
    child.on("error", reject);
    child.on("close", async (code, sig) => {
      const check = await during;
      clearTimeout(timer);
      // Grandchildren (the demo's replicas, the API server) may still be shutting down.
      const alive = () => {
        try {
          process.kill(-child.pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      const t0 = Date.now();
      while (alive() && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 100));
      const left = alive();
      if (left) kill("SIGKILL");
      if (check?.error) reject(check.error);
      else resolve({ out, code, signal: sig, seen, left, during: check?.ok });
    });
  });
}

/** GET over TLS with a CA file; resolves with status and body. */
function httpsGet(url, caFile) {
  return new Promise((resolve, reject) => {
    get(url, { ca: readFileSync(caFile) }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    }).on("error", reject);
  });
}

async function needServer(t) {
  server ??= await apiServer();
  if (!server) t.skip("real API server not available");
  return server;
}

const yaml = () => createRequire(join(fresh, "package.json"))("yaml");
const deployDocs = (file) =>
  yaml().parseAllDocuments(readFileSync(join(fresh, "deploy", file), "utf8")).map((d) => d.toJSON());

/** Probes: [pattern, what it does]. The first match runs. */
const PROBES = [
  [/^npm ci$/, () => {
    assert.equal(install.status, 0, `npm ci failed:\n${install.stdout}\n${install.stderr}`);
    for (const tool of ["deno", "bun", "tsc"]) {
      assert.ok(existsSync(join(fresh, "node_modules", ".bin", tool)), `npm ci installs ${tool}`);
    }
  }],
  [/^npm run demo$/, async () => {
    const r = await startUntil("npm run demo", /replica-\w leads\n/);
    assert.ok(r.seen);
    assert.match(r.out, /in-memory Lease server at http/);
    assert.equal(r.left, false, "the demo left no process behind");
  }],
  [/^npm run demo -- --fast$/, async () => {
    const r = await startUntil("npm run demo -- --fast", /crash fail-over \(SIGKILL\): +\d+ ms/, { stop: false });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /graceful hand-over \(SIGTERM\): \d+ ms/);
  }],
  [/^npm run demo -- --kubeconfig ~\/\.kube\/config$/, async (t) => {
    const info = await needServer(t);
    if (!info) return;
    const r = await startUntil(`npm run demo -- --kubeconfig ${info.kubeconfig}`, /replica-\w leads\n/);
    assert.match(r.out, /using the cluster of /);
    assert.equal(r.left, false, "the demo left no process behind");
  }],
  [/^npm test( --silent)?$/, () => {
    // The test runner's own command: checked, not started (it runs this file).
    const pkg = JSON.parse(readFileSync(join(fresh, "package.json"), "utf8"));
    assert.equal(pkg.scripts.test, "bash tests/run_all.sh");
    const syntax = run("bash", ["-n", "tests/run_all.sh"]);
    assert.equal(syntax.status, 0, syntax.stderr);
    assert.match(readFileSync(join(fresh, "tests", "run_all.sh"), "utf8"), /echo "\$PASSED passed, \$FAILED failed"\n/);
    assert.match(readFileSync(join(fresh, ".ci", "run"), "utf8"), /npm test --silent/);
  }],
  [/^npm run e2e$/, () => {
    // Brings up a real node (minutes, as root): the test runner runs it as its own suite, so here it is checked.
    const pkg = JSON.parse(readFileSync(join(fresh, "package.json"), "utf8"));
    assert.equal(pkg.scripts.e2e, "deno run -A tests/e2e/run.ts");
    assert.match(readFileSync(join(fresh, "tests", "run_all.sh"), "utf8"), /deno run -A tests\/e2e\/run\.ts/);
    assert.ok(existsSync(join(fresh, "tests", "e2e", "run.ts")));
  }],
  [/^(npm run apiserver|npx deno task apiserver)$/, async (t, m) => {
    if (!onPath("go")) {
      if (CI) assert.fail(`\`${m[1]}\` needs Go on PATH`);
      console.error(`\n!!! SKIPPING \`${m[1]}\`: no go on PATH\n`);
      t.skip("no go on PATH");
      return;
    }
    let dir;
    const r = await startUntil(m[1], /Ctrl-C stops it; state stays in \S+\n/, {
      timeout: 900_000,
      whileRunning: async (out) => {
        const url = out.match(/kube-apiserver ready at (\S+) after/)?.[1];
        dir = out.match(/state stays in (\S+)/)?.[1];
        assert.ok(url && dir, out);
        const res = await httpsGet(`${url}/readyz`, join(dir, "ca.crt"));
        assert.equal(res.status, 200, `${url}/readyz: ${res.status} ${res.body}`);
        return res.body;
      },
    });
    assert.ok(r.seen, `\`${m[1]}\` stopped before it was ready:\n${r.out.slice(-2000)}`);
    assert.equal(r.during, "ok");
    assert.ok(existsSync(r.out.match(/kubeconfig \(admin\): (\S+)/)?.[1] ?? "-"), "the printed kubeconfig exists");
    // npm passes Ctrl-C on: it exits by SIGINT once the task has stopped.
    assert.ok(r.code === 0 || r.signal === "SIGINT", `Ctrl-C stops it: ${r.code} ${r.signal}\n${r.out.slice(-2000)}`);
    assert.equal(r.left, false, "no API server left behind");
    rmSync(dir, { recursive: true, force: true });
  }],
  [/^npx deno run -A tests\/fault\/suite\.ts \[--only NAME\[,NAME\]\] \[--seed N\]$/, async () => {
    const r = await startUntil("npx deno run -A tests/fault/suite.ts --seed 7", /fault suite: seed 7 \(replay/);
    assert.ok(r.seen);
    assert.equal(r.left, false);
  }],
  [/^npx tsc -p tsconfig\.build\.json$/, () => {
    const r = run("npx", ["tsc", "-p", "tsconfig.build.json"]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(existsSync(join(fresh, "dist", "lib", "cli.js")));
  }],
  [/^npm run build$/, () => {
    const r = run("npm", ["run", "build"]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    for (const f of ["dist/mod.js", "dist/mod.d.ts", "dist/lib/cli.js", "dist/bin/leasehold.mjs"]) {
      assert.ok(existsSync(join(fresh, f)), f);
    }
    const help = run(process.execPath, ["dist/bin/leasehold.mjs", "--help"]);
    assert.match(help.stdout + help.stderr, /usage: leasehold/);
  }],
  [/^npm run bench$/, () => {
    const r = run("npm", ["run", "bench", "--", "--help"]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /usage: deno run -A tests\/bench\/bench\.ts/);
  }],
  [/^kind create cluster --config deploy\/kind\.yaml$/, () => {
    const [cfg] = deployDocs("kind.yaml");
    assert.equal(cfg.kind, "Cluster");
    assert.match(cfg.apiVersion, /^kind\.x-k8s\.io\//);
    if (onPath("kind")) assert.equal(run("kind", ["create", "cluster", "--help"]).status, 0);
    else console.error("# kind is not installed: checked deploy/kind.yaml only");
  }],
  [/^skaffold run -f deploy\/skaffold\.yaml$/, () => {
    const [cfg] = deployDocs("skaffold.yaml");
    assert.equal(cfg.kind, "Config");
    for (const a of cfg.build.artifacts) {
      assert.ok(existsSync(join(fresh, "deploy", a.context, a.docker.dockerfile)), a.docker.dockerfile);
    }
    for (const m of cfg.manifests.rawYaml) assert.ok(existsSync(join(fresh, "deploy", m)), m);
    if (onPath("skaffold")) assert.equal(run("skaffold", ["run", "--help"]).status, 0);
    else console.error("# skaffold is not installed: checked deploy/skaffold.yaml only");
  }],
  [/^skaffold run -f deploy\/skaffold\.yaml -p (\S+)$/, (_t, m) => {
    const [cfg] = deployDocs("skaffold.yaml");
    const profile = (cfg.profiles ?? []).find((p) => p.name === m[1]);
    assert.ok(profile, `deploy/skaffold.yaml has no profile ${m[1]}`);
    for (const f of profile.manifests.rawYaml) assert.ok(existsSync(join(fresh, "deploy", f)), f);
    if (onPath("skaffold")) assert.equal(run("skaffold", ["run", "--help"]).status, 0);
    else console.error("# skaffold is not installed: checked deploy/skaffold.yaml only");
  }],
  [/^kubectl get leases -l (\S+)=(\S+)$/, async (t, m) => {
    // The label the sharded set puts on its Leases, and the prefix the sharded Deployment uses.
    const rules = readFileSync(join(fresh, "lib", "lease_set_rules.ts"), "utf8");
    assert.match(rules, new RegExp(`SHARD_SET_LABEL\\b[^=]*= "${m[1].replaceAll(".", "\\.")}"`), "the shard-set label");
    const deployment = deployDocs("deployment.shards.yaml").find((d) => d.kind === "Deployment");
    const env = deployment.spec.template.spec.containers[0].env;
    assert.equal(m[2], env.find((e) => e.name === "LEASE_NAME").value, "the README's set is the Deployment's");
    const info = await needServer(t);
    if (!info || !onPath("kubectl")) return void (info && t.skip("kubectl is not installed"));
    const r = run("kubectl", ["--kubeconfig", info.kubeconfig, "get", "leases", "-l", `${m[1]}=${m[2]}`]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /No resources found/, r.stdout + r.stderr);
  }],
  [/^kubectl get lease (\S+) -o yaml$/, async (t, m) => {
    const deployment = deployDocs("deployment.yaml").find((d) => d.kind === "Deployment");
    const env = deployment.spec.template.spec.containers[0].env;
    assert.equal(m[1], env.find((e) => e.name === "LEASE_NAME").value, "the README's lease is the Deployment's");
    const info = await needServer(t);
    if (!info || !onPath("kubectl")) return void (info && t.skip("kubectl is not installed"));
    const r = run("kubectl", ["--kubeconfig", info.kubeconfig, "get", "lease", m[1], "-o", "yaml"]);
    assert.match(r.stderr, new RegExp(`leases.coordination.k8s.io "${m[1]}" not found`), r.stdout + r.stderr);
  }],
  [/^kubectl delete pod -l app=(\S+) --wait=false$/, async (t, m) => {
    const apps = ["deployment.yaml", "deployment.shards.yaml"]
      .map((f) => deployDocs(f).find((d) => d.kind === "Deployment").spec.template.metadata.labels.app);
    assert.ok(apps.includes(m[1]), `the README's label is the pods' of a Deployment in deploy/ (${apps.join(", ")})`);
    const info = await needServer(t);
    if (!info || !onPath("kubectl")) return void (info && t.skip("kubectl is not installed"));
    const args = ["--kubeconfig", info.kubeconfig, "delete", "pod", "-l", `app=${m[1]}`, "--wait=false"];
    const r = run("kubectl", [...args, "--dry-run=server"]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
  }],
];

const COMMANDS = readmeCommands(README);

before(() => {
  work = mkdtempSync(join(tmpdir(), "leasehold-readme-"));
  fresh = join(work, "leasehold");
  const files = execFileSync("git", ["ls-files", "-z", "-co", "--exclude-standard"], { cwd: ROOT, encoding: "utf8" })
    .split("\0").filter((f) => f && existsSync(join(ROOT, f)) && statSync(join(ROOT, f)).isFile());
  for (const f of files) {
    mkdirSync(dirname(join(fresh, f)), { recursive: true });
    copyFileSync(join(ROOT, f), join(fresh, f));
  }
  // `npm ci` from the local npm cache when it has the packages, else the registry.
  install = run("npm", ["ci", "--prefer-offline", "--no-audit", "--no-fund"]);
});

after(async () => {
  if (server?.stop && !process.env.LEASEHOLD_TESTENV) await server.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("README.md tells a new user the install, demo, test and API server commands", () => {
  for (const c of ["npm ci", "npm run demo", "npm test --silent", "npm run apiserver"]) {
    assert.ok(COMMANDS.includes(c), `README.md gives \`${c}\`; it gives: ${COMMANDS.join(" | ")}`);
  }
});

for (const command of COMMANDS) {
  test(`README: ${command}`, { timeout: 960_000 }, async (t) => {
    const probe = PROBES.find(([re]) => re.test(command));
    assert.ok(
      probe,
      `README.md's \`${command}\` has no probe in tests/readme/readme_commands.node.mjs: add one that starts it ` +
        "for a few seconds, or runs its --help or dry-run form",
    );
    await probe[1](t, command.match(probe[0]));
  });
}
