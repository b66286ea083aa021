// `serverTest` for tests that need the real API server (tests/env/testenv.mjs).
//
//   import { serverTest } from "./support/needs_server.mjs";
//   serverTest("name", async (t, info) => { ... });
//
// Whether the server is there is decided when the test file loads, so that a
// test without it is reported as skipped by every runner (Deno: "ignored"),
// never as passed:
//   - CI=true: the test runs and fails, naming why the server is missing.
//   - elsewhere: the test is skipped, loudly (a banner on stderr, and one line
//     `::leasehold-skip server :: <name> :: <reason>` per test that
//     tests/run_all.sh counts).
// Before each test the server is probed again with a plain node:https client
// (not the library's transport) and the harness PID is checked: a server that
// died mid-run fails every remaining test, in CI and out of it.
//
// Plain JavaScript so that Deno, Bun and Node (tests/node/*.mjs) share it.

import process from "node:process";
import { test } from "./guard.mjs";
import { probeServer, serverAvailability } from "../env/testenv.mjs";

/**
 * @typedef {{ url: string, host: string, port: number, caFile: string, adminToken: string, kubeconfig: string, pid?: number, [k: string]: any }} ServerInfo
 * @typedef {import("node:test").TestContext} TestContext
 * @typedef {import("./guard.mjs").TestOptions} TestOptions
 * @typedef {(t: TestContext, info: ServerInfo) => unknown} ServerTestFn
 */

const availability = await serverAvailability();
const inCI = process.env.CI === "true";
let bannerShown = false;

/** Prefix of the line printed for each skipped server test (tests/run_all.sh counts these). */
export const SERVER_SKIP_MARKER = "::leasehold-skip server ::";

/**
 * Registers a test that needs the real API server; `fn` gets the server's
 * ready line (`url`, `caFile`, `adminToken`, ...) as its second argument.
 * @param {string} name
 * @param {TestOptions | ServerTestFn} optionsOrFn
 * @param {ServerTestFn} [maybeFn]
 * @returns {void}
 */
export function serverTest(name, optionsOrFn, maybeFn) {
  const fn = typeof optionsOrFn === "function" ? optionsOrFn : maybeFn;
  const options = typeof optionsOrFn === "function" || optionsOrFn === undefined ? {} : { ...optionsOrFn };
  if (typeof fn !== "function") throw new TypeError(`test "${name}" has no function`);
  const info = availability.info;
  if (!info) {
    const reason = `needs the real API server, which is not available: ${availability.reason}`;
    if (inCI) {
      test(name, options, () => {
        throw new Error(`${reason} (CI=true: a missing server fails the test)`);
      });
      return;
    }
    if (!bannerShown) {
      bannerShown = true;
      console.error(
        `\n!!! SKIPPING the tests that need the real API server: ${availability.reason}\n` +
          `!!! they are reported as skipped, not passed; run them with: bash tests/run_all.sh\n`,
      );
    }
    console.error(`${SERVER_SKIP_MARKER} ${name} :: ${availability.reason}`);
    test(name, { ...options, skip: reason }, () => {});
    return;
  }
  test(name, options, async (t) => {
    const probe = await probeServer(info);
    if (!probe.ok) throw new Error(`the real API server stopped answering during the run: ${probe.reason}`);
    await fn(t, info);
  });
}
