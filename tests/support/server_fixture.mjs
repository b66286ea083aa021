// Run by tests/server_guard_test.ts with LEASEHOLD_TESTENV naming a stand-in
// server: the first test kills that server by its PID; the tests after it must
// fail, because the server is probed again before each test.
import { serverTest } from "./needs_server.mjs";
import process from "node:process";

serverTest("passes: runs while the server is up, then kills it", (_t, info) => {
  if (!info.pid) throw new Error("the ready line has no pid");
  process.kill(info.pid, "SIGKILL");
});

serverTest("fails: the server died before this test", () => {});

serverTest("fails: and before this one", () => {});
