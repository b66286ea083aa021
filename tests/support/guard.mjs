// `test` for every test file: node:test's `test` with a time bound on every test
// and with errors that escape the test (a throw in a timer or an event listener,
// an unhandled rejection) failing the test on every runtime.
//
// Node and Bun already fail a test on such errors. Deno's node:test layer fails
// the running test on an unhandled rejection but not on a throw in a timer or an
// event listener (checked on Deno 2.9.6: the test reports "ok"), and an error
// thrown by an `afterEach` hook does not fail the test there either. So on Deno
// the uncaught errors are recorded here and the test throws them when its body
// has finished. tests/guard_test.ts checks all of this on each runtime.
//
// Use it in place of node:test:
//   import { test } from "./support/guard.mjs";
//
// Plain JavaScript so that Deno, Bun and Node (tests/node/*.mjs) share it.

import * as nodeTest from "node:test";
import process from "node:process";

/** The bound of a test that sets no `timeout` of its own (ms); LEASEHOLD_TEST_TIMEOUT_MS overrides it. */
export const DEFAULT_TEST_TIMEOUT_MS = Number(process.env.LEASEHOLD_TEST_TIMEOUT_MS) || 120_000;

/** Prefix of the line printed when a test calls t.skip() (Deno reports it "ok"; tests/run_all.sh counts these). */
export const RUNTIME_SKIP_MARKER = "::leasehold-skip runtime ::";

/** @type {unknown[]} errors that escaped a test and are not yet reported (Deno only) */
const stray = [];

const deno = /** @type {any} */ (globalThis).Deno;
if (deno && !(/** @type {any} */ (globalThis).__leaseholdGuard)) {
  /** @type {any} */ (globalThis).__leaseholdGuard = true;
  // An error that escapes between two tests fails the next one ("before").
  globalThis.addEventListener("error", (/** @type {any} */ e) => {
    e.preventDefault();
    stray.push(e.error ?? e.message);
  });
  globalThis.addEventListener("unload", () => {
    if (stray.length === 0) return;
    console.error(
      `\n!!! ${stray.length} error(s) escaped after the last test:\n${stray.map(describeError).join("\n")}`,
    );
  });
}

/** @param {unknown} e */
function describeError(e) {
  if (e instanceof Error) return e.stack ?? `${e.name}: ${e.message}`;
  return String(e);
}

/**
 * Throws when errors escaped while the test ran.
 * @param {string} name
 * @param {string} when
 */
function checkStray(name, when) {
  if (stray.length === 0) return;
  const errors = stray.splice(0);
  const err = new Error(
    `${errors.length} error(s) escaped ${when} "${name}" (a throw in a timer or event listener, ` +
      `or an unhandled rejection):\n${errors.map(describeError).join("\n---\n")}`,
  );
  /** @type {any} */ (err).errors = errors;
  throw err;
}

/**
 * @typedef {{ timeout?: number, skip?: boolean | string, todo?: boolean | string, only?: boolean, concurrency?: number | boolean, signal?: AbortSignal }} TestOptions
 * @typedef {import("node:test").TestContext} TestContext
 * @typedef {(t: TestContext) => unknown} TestFn
 */

/**
 * Registers a test, as node:test's `test(name, [options], fn)`, with a time
 * bound (`options.timeout`, default {@link DEFAULT_TEST_TIMEOUT_MS}) and with
 * escaped errors failing it.
 * @param {string} name
 * @param {TestOptions | TestFn} optionsOrFn
 * @param {TestFn} [maybeFn]
 * @returns {void}
 */
export function test(name, optionsOrFn, maybeFn) {
  register(nodeTest.test, name, optionsOrFn, maybeFn);
}

/**
 * node:test's `it` (a test inside `describe`), guarded as {@link test}.
 * @param {string} name
 * @param {TestOptions | TestFn} optionsOrFn
 * @param {TestFn} [maybeFn]
 * @returns {void}
 */
export function it(name, optionsOrFn, maybeFn) {
  register(nodeTest.it, name, optionsOrFn, maybeFn);
}

// The rest of node:test, unchanged, so that a test file imports from here alone.
export { after, afterEach, before, beforeEach, describe } from "node:test";

/**
 * @param {any} registerFn
 * @param {string} name
 * @param {TestOptions | TestFn} optionsOrFn
 * @param {TestFn} [maybeFn]
 */
function register(registerFn, name, optionsOrFn, maybeFn) {
  const fn = typeof optionsOrFn === "function" ? optionsOrFn : maybeFn;
  const options = typeof optionsOrFn === "function" || optionsOrFn === undefined ? {} : { ...optionsOrFn };
  if (typeof fn !== "function") throw new TypeError(`test "${name}" has no function`);
  options.timeout ??= DEFAULT_TEST_TIMEOUT_MS;
  /** @param {TestContext} t */
  const guarded = async (t) => {
    checkStray(name, "before"); // escaped after the previous test ended
    if (typeof t?.skip === "function") {
      // Deno reports a test that called t.skip() as "ok": say so, for tests/run_all.sh to count it as
      // skipped (on every runtime, so that it can tell skips of tests that need the API server).
      const skip = t.skip.bind(t);
      t.skip = (/** @type {string | undefined} */ message) => {
        console.error(`${RUNTIME_SKIP_MARKER} ${name} :: ${message ?? ""}`);
        skip(message);
      };
    }
    const g = /** @type {any} */ (globalThis);
    g.__leaseholdGuardRunning = (g.__leaseholdGuardRunning ?? 0) + 1; // tests/env/testenv.mjs apiServer() reads it
    try {
      await fn(t);
    } catch (e) {
      if (stray.length === 0) throw e;
      stray.unshift(e); // the test's own failure first, then what escaped
    } finally {
      g.__leaseholdGuardRunning--;
    }
    checkStray(name, "during");
  };
  void registerFn(name, options, guarded);
}
