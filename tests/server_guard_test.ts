// tests/support/needs_server.mjs: a test that needs the API server fails when the
// server died mid-run (probed before each test with node:https, and by PID), in CI
// and out of it. Proven with a stand-in HTTPS server that the first test of
// tests/support/server_fixture.mjs kills, under this runtime's runner and Node's.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const fixture = here("./support/server_fixture.mjs");
const root = here("..");

type Verdict = "pass" | "fail" | "skip";

/** Starts the stand-in server (node), writes its ready.json, returns its path and a kill. */
async function standIn(): Promise<{ readyFile: string; pid: number; kill: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), "leasehold-readyz-"));
  const cert = join(dir, "tls.crt"), key = join(dir, "tls.key");
  const gen = spawnSync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-keyout",
    key,
    "-out",
    cert,
  ], { encoding: "utf8" });
  if (gen.status !== 0) throw new Error(`openssl could not make a certificate: ${gen.stderr}`);
  const child = spawn("node", [here("./support/fake_readyz.mjs"), cert, key], { stdio: ["ignore", "pipe", "inherit"] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("the stand-in server did not start within 20 s")), 20_000);
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("\n")) {
        clearTimeout(timer);
        resolve(out.slice(0, out.indexOf("\n")));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the stand-in server exited with ${code}`));
    });
  });
  child.removeAllListeners("exit");
  child.stdout!.destroy();
  const readyFile = join(dir, "ready.json");
  writeFileSync(readyFile, JSON.stringify({ ...JSON.parse(line), caFile: cert, adminToken: "x", pid: child.pid }));
  return { readyFile, pid: child.pid!, kill: () => void child.kill("SIGKILL") };
}

function run(
  ci: boolean,
  readyFile: string,
  cmd: string,
  args: string[],
  parse: (l: string) => [string, Verdict] | undefined,
) {
  const env: Record<string, string> = {
    ...process.env as Record<string, string>,
    NO_COLOR: "1",
    LEASEHOLD_TESTENV: readyFile,
  };
  delete env.FORCE_COLOR;
  if (ci) env.CI = "true";
  else delete env.CI;
  const r = spawnSync(cmd, args, { cwd: root, env, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  const output = `${r.stdout}\n${r.stderr}`.replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "");
  const results = new Map<string, Verdict>();
  for (const line of output.split("\n")) {
    const hit = parse(line);
    if (hit) results.set(hit[0], hit[1]);
  }
  assert.equal(results.size, 3, `expected 3 results:\n${output}`);
  for (const [name, verdict] of results) {
    assert.equal(verdict, name.startsWith("fails:") ? "fail" : "pass", `"${name}" was reported ${verdict}:\n${output}`);
  }
  assert.match(output, /the real API server stopped answering during the run/);
  assert.notEqual(r.status, 0, "the runner exits non-zero");
}

const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
const bun = (globalThis as { Bun?: unknown }).Bun;
const runners: [string, string, string[], (l: string) => [string, Verdict] | undefined][] = [];
if (deno) {
  runners.push(["deno test", deno.execPath(), ["test", "-A", fixture], (line) => {
    const m = /^(.+) \.\.\. (ok|FAILED|ignored) \(/.exec(line);
    return m ? [m[1], m[2] === "ok" ? "pass" : m[2] === "ignored" ? "skip" : "fail"] : undefined;
  }]);
}
if (bun) {
  runners.push(["bun test", process.execPath, ["test", fixture], (line) => {
    const m = /^\((pass|fail|skip)\) (.+?)(?: \[[\d.]+m?s\])?$/.exec(line);
    return m ? [m[2], m[1] as Verdict] : undefined;
  }]);
}
runners.push(["node --test", "node", ["--test", "--test-reporter=tap", fixture], (line) => {
  const m = /^(not ok|ok) \d+ - (.+?)( # SKIP.*)?$/.exec(line);
  return m ? [m[2], m[1] !== "ok" ? "fail" : m[3] ? "skip" : "pass"] : undefined;
}]);

for (const [label, cmd, args, parse] of runners) {
  for (const ci of [true, false]) {
    test(`server guard: under ${label}${ci ? " with CI=true" : ""}, a server killed mid-run fails the remaining server tests`, async () => {
      const server = await standIn();
      try {
        run(ci, server.readyFile, cmd, args, parse);
      } finally {
        server.kill();
      }
    });
  }
}
