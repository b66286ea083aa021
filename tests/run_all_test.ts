// tests/run_all.sh counts honestly: a non-zero exit with no failure counted is a
// failure, a suite with no summary line is a failure, a suite over its bound is
// killed and fails, a skipped test that needs the API server fails under CI=true
// and gets a banner elsewhere, and the last line is `N passed, N failed`.
// Its functions are loaded with LEASEHOLD_RUN_ALL_LIB=1 and fed stand-in suites.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const runAll = fileURLToPath(new URL("./run_all.sh", import.meta.url));

function runSuites(ci: boolean, calls: string): { out: string; status: number | null; ms: number } {
  const script = `LEASEHOLD_RUN_ALL_LIB=1 source '${runAll}'\n${calls}\nsummary`;
  // Logs of its own: a run of this test inside run_all.sh must not touch that run's files.
  const env: Record<string, string> = {
    ...process.env as Record<string, string>,
    LEASEHOLD_LOG_DIR: mkdtempSync(join(tmpdir(), "leasehold-run-all-")),
  };
  // Set, not deleted: Deno's child_process merges `env` into the parent's, so a
  // deleted CI would still be inherited from a run under CI=true.
  env.CI = ci ? "true" : "false";
  const t0 = performance.now();
  const r = spawnSync("bash", ["-c", script], { env, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw r.error;
  return { out: r.stdout + r.stderr, status: r.status, ms: performance.now() - t0 };
}

/** A row of the summary table, without its duration column, spaces squeezed. */
const row = (out: string, name: string) =>
  out.split("\n").find((l) => l.startsWith(name + " "))?.replace(/\s+\d+s$/, "").replace(/\s+/g, " ");
const lastLine = (out: string) => out.trimEnd().split("\n").at(-1);

test("run_all.sh: a clean suite counts its tests; the last line is the total", () => {
  const r = runSuites(false, `suite "fine" 30 bash -c 'echo "3 passed, 0 failed, 2 skipped"'`);
  assert.equal(row(r.out, "fine"), "fine 3 passed, 0 failed, 2 skipped");
  assert.match(r.out, /^2 skipped \(0 of them need the API server\)$/m);
  assert.equal(lastLine(r.out), "3 passed, 0 failed");
  assert.equal(r.status, 0);
});

test("run_all.sh: a non-zero exit with no failure counted, or no summary line, is a failure", () => {
  const r = runSuites(
    false,
    `suite "exits 2" 30 bash -c 'echo "3 passed, 0 failed"; exit 2'\nsuite "says nothing" 30 bash -c 'echo hello'`,
  );
  assert.equal(row(r.out, "exits 2"), "exits 2 3 passed, 1 failed, 0 skipped");
  assert.equal(row(r.out, "says nothing"), "says nothing 0 passed, 1 failed, 0 skipped");
  assert.equal(lastLine(r.out), "3 passed, 2 failed");
  assert.notEqual(r.status, 0);
});

test("run_all.sh: a suite over its bound is killed, with what it started, and fails", () => {
  const r = runSuites(false, `suite "hangs" 1 bash -c 'sleep 300 & wait; echo "1 passed, 0 failed"'`);
  assert.match(r.out, /over its bound of 1 s: killed/);
  assert.equal(row(r.out, "hangs"), "hangs 0 passed, 1 failed, 0 skipped");
  assert.equal(lastLine(r.out), "0 passed, 1 failed");
  assert.ok(r.ms < 30_000, `the run took ${Math.round(r.ms)} ms`);
});

const serverSkip = `suite "server" 30 bash -c 'echo "::leasehold-skip server :: t1 :: no server"; ` +
  `echo "# ::leasehold-skip runtime :: t2 :: real API server not available"; echo "1 passed, 0 failed, 2 skipped"'`;

test("run_all.sh: skipped tests that need the API server get a banner outside CI", () => {
  const r = runSuites(false, serverSkip);
  assert.equal(row(r.out, "server"), "server 1 passed, 0 failed, 2 skipped");
  assert.match(r.out, /!!! 2 test\(s\) that need the real API server were SKIPPED, not passed\./);
  assert.equal(lastLine(r.out), "1 passed, 0 failed");
});

test("run_all.sh: under CI=true, each skipped test that needs the API server is a failure", () => {
  const r = runSuites(true, serverSkip);
  assert.equal(row(r.out, "server"), "server 1 passed, 2 failed, 0 skipped");
  assert.match(r.out, /CI=true: they count as failures/);
  assert.equal(lastLine(r.out), "1 passed, 2 failed");
  assert.notEqual(r.status, 0);
});
