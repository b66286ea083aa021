// The entrypoint's flags: Go durations, whole-second lease durations, timer
// limits, child grace bounds, identity validation, and exit status 2 for
// configuration found bad at start. No API server needed.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { FLAGS, main, maxChildGrace, parseArgs, parseDuration, resolveSettings } from "../lib/cli.ts";
import { ConfigError } from "../mod.ts";

const none = () => undefined;
const settings = (args: string[], env: Record<string, string> = {}, host = "") =>
  resolveSettings(parseArgs(["--lease-name", "x", ...args], (k) => env[k]), () => host);

/** Runs main in-process and returns its exit code and parsed log lines. */
async function run(args: string[], env: Record<string, string> = {}, host = "") {
  const lines: string[] = [];
  const code = await main(args, {
    write: (l) => lines.push(l),
    handleSignals: false,
    env: (k) => env[k],
    hostname: () => host,
  });
  return { code, lines: lines.map((l) => JSON.parse(l)) };
}

test("durations: every form Go's time.ParseDuration accepts", () => {
  const cases: [string, number][] = [
    ["0", 0],
    ["+0", 0],
    ["-0", 0],
    ["15s", 15000],
    [".5s", 500],
    ["1.s", 1000],
    ["1.5s", 1500],
    ["1h2m3.5s", 3723500],
    ["1m30s", 90000],
    ["500ms", 500],
    ["-1s", -1000],
    ["+2m", 120000],
    ["1ns", 1e-6],
    ["1500us", 1.5],
    ["3\u00b5s", 0.003],
    ["3\u03bcs", 0.003],
    ["1.0000000001s", 1000],
    ["2562047h", 2562047 * 3600000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

test("durations: what Go refuses is refused, with the accepted forms named", () => {
  for (
    const bad of [
      "",
      "-",
      "+",
      "s",
      ".s",
      "1",
      "15",
      "1d",
      " 1s",
      "1s ",
      "1e3s",
      "Infinity",
      "NaN",
      "1.5.s",
      "9999999999999999999h",
      "2562048h",
    ]
  ) {
    assert.throws(
      () => parseDuration(bad),
      (e: unknown) => e instanceof ConfigError && /use forms like 15s, 500ms/.test(e.message),
      JSON.stringify(bad),
    );
  }
});

test("durations at or above 2^31-1 ms and negative ones are refused by name", () => {
  assert.equal(settings(["--identity", "a", "--healthz-grace", "596h"]).healthzGrace, 596 * 3600000);
  for (const [flag, value] of [["healthz-grace", "597h"], ["retry-period", "2147483647ms"], ["healthz-grace", "-1s"]]) {
    assert.throws(
      () => settings(["--identity", "a", `--${flag}`, value]),
      new RegExp(`--${flag} ${value} (is too long: durations must stay below 2\\^31-1 ms|must be zero or more)`),
    );
  }
  assert.throws(() => settings(["--identity", "a", "--lease-duration", "9999999999999999999s"]), /out of range/);
});

test("--lease-duration must be whole seconds: main exits 2 with one line naming the fix", async () => {
  for (const value of ["1.5s", "15500ms"]) {
    const { code, lines } = await run(["--lease-name", "x", "--identity", "a", "--lease-duration", value]);
    assert.equal(code, 2);
    assert.equal(lines.length, 1);
    assert.match(lines[0].msg, /--lease-duration .* is not a whole number of seconds/);
    assert.match(lines[0].msg, /use \d+s or \d+s/);
  }
  assert.equal(settings(["--identity", "a", "--lease-duration", "16000ms"]).leaseDuration, 16000);
});

test("child grace: defaults to leaseDuration - renewDeadline minus a margin; longer is clamped with a warning", () => {
  assert.equal(maxChildGrace(15000, 10000), 4000);
  assert.equal(settings(["--identity", "a"]).childGrace, 4000);
  assert.equal(settings(["--identity", "a", "--lease-duration", "4s", "--renew-deadline", "3s"]).childGrace, 800);
  assert.equal(settings(["--identity", "a", "--child-grace", "2s"]).childGrace, 2000);
  const clamped = settings(["--identity", "a"], { CHILD_GRACE: "10s" });
  assert.equal(clamped.childGrace, 4000);
  assert.equal(clamped.warnings.length, 1);
  assert.match(
    clamped.warnings[0],
    /--child-grace 10s is longer than the command may run after leadership ends.*using 4s/,
  );
});

test("identity: newlines, control characters and more than 253 characters are refused", () => {
  assert.equal(settings(["--identity", "x".repeat(253)]).identity.length, 253);
  for (const bad of ["a\nb", "a\rb", "tab\there", "nul\u0000", "x".repeat(254), " padded"]) {
    assert.throws(() => settings(["--identity", bad]), /identity .* (contains a control|has 254|starts or ends)/, bad);
  }
  assert.throws(() => settings([], { POD_NAME: "bad\nname" }), /contains a control character/);
});

test("identity: an empty POD_NAME falls back to the hostname and says so; no hostname is refused", async () => {
  const s = settings([], { POD_NAME: "" }, "node-1");
  assert.equal(s.identity, "node-1");
  assert.equal(s.identitySource, "hostname");
  assert.equal(settings([], { POD_NAME: "pod-1" }, "node-1").identitySource, "flag");
  assert.throws(() => settings([], { POD_NAME: "" }, ""), /POD_NAME\) is empty and the hostname is unknown/);
  // main says so in a warning before anything else happens (here: the missing cluster config).
  const { code, lines } = await run(["--lease-name", "x"], { POD_NAME: "" }, "node-1");
  assert.equal(code, 2);
  const warn = lines.find((l) => l.level === "warn");
  assert.ok(warn, "a warning line about the hostname fallback");
  assert.match(warn.msg, /using the hostname, which is not unique.*set POD_NAME from the downward API/);
  assert.equal(warn.identity, "node-1");
});

test("FLAGS is a complete machine-readable table: every flag has its environment variable", () => {
  const envs = FLAGS.map((f) => f.env);
  assert.equal(new Set(envs).size, FLAGS.length);
  for (const f of FLAGS) assert.match(f.env, /^[A-Z][A-Z_]*$/, f.flag);
  for (const v of ["LEASE_NAME", "POD_NAME", "HEALTHZ_GRACE", "CHILD_GRACE", "HTTP_ADDR", "LEASE_DURATION"]) {
    assert.ok(envs.includes(v), v);
  }
  for (const f of FLAGS.filter((f) => f.duration && f.def)) assert.equal(typeof parseDuration(f.def!), "number");
  const o = parseArgs([], none);
  assert.equal(o.values["lease-duration"], "15s");
});

async function serviceAccountDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "leasehold-sa-"));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const PEM_GOOD = `-----BEGIN CERTIFICATE-----
MIIBjjCCATWgAwIBAgIUE+JBPFbhRopIAOF3/otNoUCNbnswCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRbGVhc2Vob2xkLXRlc3QtY2EwIBcNMjYxMTI2MTkyODI4WhgP
MjEyNjExMDIxOTI4MjhaMBwxGjAYBgNVBAMMEWxlYXNlaG9sZC10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVvBPyI06/TyX3TmRuA7OCIrNwqf29CNB
j2p7TndiCQl6Kycmbsp7V4xZGZ9FG9PI3/EuqI3HZGUPoHHvwIVylKNTMFEwHQYD
VR0OBBYEFAVhoB7s6Rg43Q2iABlCssBmm2NUMB8GA1UdIwQYMBaAFAVhoB7s6Rg4
3Q2iABlCssBmm2NUMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIg
e1LNPwCdo840KbyzDk+o59J4MsT1mnKMfmUqzEqCMPkCIFZU1kUsy6PL5rEAjdCi
/grFNz0n79BtxzA8BTHIcORW
-----END CERTIFICATE-----
`;

test("configuration found bad at start exits 2, not 1: namespace file, CA PEM, token", async () => {
  const env = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: "1" };
  const base = ["--lease-name", "x", "--identity", "a"];
  const cases: [Record<string, string>, RegExp][] = [
    [{ "ca.crt": PEM_GOOD, token: "t0k3n", namespace: "Not_A_Namespace!" }, /namespace "Not_A_Namespace!"/],
    [
      { "ca.crt": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", token: "t" },
      /CA|certificate/i,
    ],
    [{ "ca.crt": PEM_GOOD }, /token/],
  ];
  for (const [files, why] of cases) {
    const dir = await serviceAccountDir(files);
    const { code, lines } = await run([...base, "--service-account-dir", dir], env);
    const err = lines.find((l) => l.level === "error");
    assert.equal(code, 2, JSON.stringify(err));
    assert.match(String(err?.error), why);
  }
});

test("--coordinated needs --binary-version; --emulation-version defaults to it; --events is on by default", () => {
  assert.throws(() => settings(["--identity", "a", "--coordinated"]), /--coordinated needs --binary-version/);
  assert.throws(
    () => settings(["--identity", "a", "--coordinated", "--binary-version", "v1.2.3"]),
    /without "v"/,
  );
  assert.deepEqual(settings(["--identity", "a", "--coordinated", "--binary-version", "1.4.0"]).coordinated, {
    binaryVersion: "1.4.0",
    emulationVersion: "1.4.0",
  });
  assert.deepEqual(
    settings(["--identity", "a"], { COORDINATED: "true", BINARY_VERSION: "1.5.0", EMULATION_VERSION: "1.4.0" })
      .coordinated,
    { binaryVersion: "1.5.0", emulationVersion: "1.4.0" },
  );
  assert.equal(settings(["--identity", "a"]).coordinated, undefined);
  assert.equal(settings(["--identity", "a"]).events, true);
  assert.equal(settings(["--identity", "a"], { EVENTS: "false" }).events, false);
});

test("under Bun, a -- right after the script is dropped by Bun: the error says to put a flag before it", () => {
  const bun = process.versions.bun ? process.execPath : "bun";
  const cli = fileURLToPath(new URL("../lib/cli.ts", import.meta.url));
  const r = spawnSync(bun, [cli, "--", "sleep", "1"], {
    env: { PATH: process.env.PATH, LEASE_NAME: "x", POD_NAME: "a" },
    encoding: "utf8",
  });
  assert.equal(r.status, 2, r.stderr + r.stdout);
  const out = r.stderr + r.stdout;
  assert.match(out, /unexpected argument \\"sleep\\"; put a command after --/);
  assert.match(out, /Bun drops a -- that directly follows the script: put a flag before it/);
  // With a flag first, Bun leaves the -- alone.
  assert.deepEqual(parseArgs(["--lease-name", "x", "--", "sleep", "1"], () => undefined).command, ["sleep", "1"]);
});
