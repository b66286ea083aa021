// Run by tests/guard_test.ts under each runtime's test runner: every test whose
// name starts with "fails:" must be reported failed, every "passes:" one passed.
import { test } from "./guard.mjs";

const tick = (ms) => new Promise((r) => setTimeout(r, ms));

test("fails: a throw in a timer", async () => {
  setTimeout(() => {
    throw new Error("stray timer throw");
  }, 1);
  await tick(100);
});

test("passes: a clean test after a failing one", () => {});

test("fails: a throw in an event listener", async () => {
  const target = new EventTarget();
  target.addEventListener("ping", () => {
    throw new Error("stray listener throw");
  });
  setTimeout(() => target.dispatchEvent(new Event("ping")), 1);
  await tick(100);
});

test("fails: an unhandled rejection", async () => {
  setTimeout(() => void Promise.reject(new Error("stray rejection")), 1);
  await tick(100);
});

test("fails: a test that outlives its timeout", { timeout: 200 }, async () => {
  await tick(1000);
});

test("passes: a test that ends within its timeout", { timeout: 5000 }, async () => {
  await tick(10);
});

test("skips: a test that calls t.skip()", (t) => {
  t.skip("skipped at run time");
});
