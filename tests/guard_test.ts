// tests/support/guard.mjs makes an error that escapes a test (a throw in a timer
// or an event listener, an unhandled rejection) and a test that outlives its
// timeout fail the test. Proven here by running tests/support/guard_fixture.mjs
// under this runtime's test runner and under Node's, in subprocesses.
import { RUNTIME_SKIP_MARKER, test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const fixture = fileURLToPath(new URL("./support/guard_fixture.mjs", import.meta.url));
const root = fileURLToPath(new URL("..", import.meta.url));

type Verdict = "pass" | "fail" | "skip";
type Run = { status: number | null; results: Map<string, Verdict>; output: string };

function run(cmd: string, args: string[], parse: (line: string) => [string, Verdict] | undefined): Run {
  const env: Record<string, string> = { ...process.env as Record<string, string>, NO_COLOR: "1" };
  delete env.FORCE_COLOR;
  const r = spawnSync(cmd, args, { cwd: root, env, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  const output = `${r.stdout}\n${r.stderr}`.replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "");
  const results = new Map<string, Verdict>();
  const skipped = new Set<string>();
  for (const line of output.split("\n")) {
    const hit = parse(line);
    if (hit) results.set(hit[0], hit[1]);
    // Deno reports a test that called t.skip() as "ok"; the guard marks it.
    const marked = line.startsWith(RUNTIME_SKIP_MARKER) ? line.slice(RUNTIME_SKIP_MARKER.length).split(" :: ")[0] : "";
    if (marked) skipped.add(marked.trim());
  }
  for (const name of skipped) if (results.get(name) === "pass") results.set(name, "skip");
  return { status: r.status, results, output };
}

function assertVerdicts(r: Run) {
  const names = [...r.results.keys()];
  assert.equal(names.length, 7, `expected 7 results, got ${names.length}:\n${r.output}`);
  for (const [name, verdict] of r.results) {
    const want = name.startsWith("fails:") ? "fail" : name.startsWith("skips:") ? "skip" : "pass";
    assert.equal(verdict, want, `"${name}" was reported ${verdict}:\n${r.output}`);
  }
  assert.notEqual(r.status, 0, "the runner exits non-zero");
}

const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
const bun = (globalThis as { Bun?: unknown }).Bun;

if (deno) {
  test("guard: under deno test, stray timer/listener throws, rejections and timeouts fail their test; t.skip() is a skip", () => {
    assertVerdicts(run(deno.execPath(), ["test", "-A", fixture], (line) => {
      const m = /^(.+) \.\.\. (ok|FAILED) \(/.exec(line);
      return m ? [m[1], m[2] === "ok" ? "pass" : "fail"] : undefined;
    }));
  });
}

if (bun) {
  test("guard: under bun test, stray timer/listener throws, rejections and timeouts fail their test; t.skip() is a skip", () => {
    assertVerdicts(run(process.execPath, ["test", fixture], (line) => {
      const m = /^\((pass|fail|skip)\) (.+?)(?: \[[\d.]+m?s\])?$/.exec(line);
      return m ? [m[2], m[1] as Verdict] : undefined;
    }));
  });
}

test("guard: under node --test, stray timer/listener throws, rejections and timeouts fail their test; t.skip() is a skip", () => {
  assertVerdicts(run("node", ["--test", "--test-reporter=tap", fixture], (line) => {
    const m = /^(not ok|ok) \d+ - (.+?)( # SKIP.*)?$/.exec(line);
    return m ? [m[2], m[1] !== "ok" ? "fail" : m[3] ? "skip" : "pass"] : undefined;
  }));
});
