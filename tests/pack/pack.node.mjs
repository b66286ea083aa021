// The published packages as a user gets them.
//
// npm: packs a clean copy of the project (the files git knows, no dist/), so the
// package must build itself before it is packed; installs the tarball into an
// empty directory without the network; then, on Node 20 and on Bun, imports it by
// name, compares its exports (values and types) with mod.ts's, type-checks a
// consumer against the shipped declarations, and starts the `leasehold` bin: its
// help, and an election between a Node and a Bun replica on the real API server.
// The per-runtime one-file bundles (dist/bundle) elect on Deno and Bun.
// JSR: the file list of `deno publish --dry-run`.
//
//   node --test tests/pack/pack.node.mjs
//
// Without the real API server the election test is skipped loudly; under CI=true
// it fails (tests/env/testenv.mjs).
import { after, before, test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const TOOLS = join(ROOT, "node_modules", ".bin");
const NODE = process.execPath;
const BUN = join(TOOLS, "bun");
const DENO = join(TOOLS, "deno");
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");
const NAME = "@leasehold/leasehold";
// The shebang resolves `node` through PATH: make it this Node.
const PATH = [dirname(NODE), TOOLS, process.env.PATH].join(":");
const FAST = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"];
// Settings of an outer `npm run` (npm_config_*) must not leak into the npm commands here.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_")));

/** @type {string} */ let work; // temp root
/** @type {string} */ let src; // the clean copy
/** @type {string} */ let app; // the empty directory the tarball is installed into
/** @type {any} */ let packed; // `npm pack --json` entry
/** @type {any} */ let testenv; // tests/env/testenv.mjs of the clean copy, once imported

/** Runs a command; throws with its output when it fails. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...ENV, PATH, NO_COLOR: "1" }, ...opts });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} exited with ${r.status}:\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

const libModules = () =>
  readdirSync(join(src, "lib")).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")).map((f) => f.slice(0, -3));

before(() => {
  work = mkdtempSync(join(tmpdir(), "leasehold-pack-"));
  src = join(work, "src");
  app = join(work, "app");
  // A clean checkout: tracked and new (not ignored) files; no dist/, no .cache/.
  const files = execFileSync("git", ["ls-files", "-z", "-co", "--exclude-standard"], { cwd: ROOT, encoding: "utf8" })
    .split("\0").filter((f) => f && existsSync(join(ROOT, f)) && statSync(join(ROOT, f)).isFile());
  for (const f of files) {
    mkdirSync(dirname(join(src, f)), { recursive: true });
    copyFileSync(join(ROOT, f), join(src, f));
  }
  assert.ok(!existsSync(join(src, "dist")), "the clean copy has no dist/");
  // The dev tools (tsc for the build) and the test API server binaries are shared.
  symlinkSync(join(ROOT, "node_modules"), join(src, "node_modules"));
  mkdirSync(join(ROOT, ".cache"), { recursive: true });
  symlinkSync(join(ROOT, ".cache"), join(src, ".cache"));

  const out = run("npm", ["pack", "--json", "--pack-destination", work], { cwd: src }).stdout;
  packed = JSON.parse(out.slice(out.indexOf("[")))[0];
  const tarball = join(work, packed.filename);
  const kB = (n) => (n / 1000).toFixed(1) + " kB";
  console.log(
    `# npm pack: ${packed.entryCount} files, ${kB(packed.size)} packed, ${kB(packed.unpackedSize)} unpacked:\n` +
      packed.files.map((f) => `#   ${f.path} ${f.size}`).join("\n"),
  );

  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], { cwd: app });
});

after(async () => {
  // An API server started by this file (not one named by LEASEHOLD_TESTENV) is stopped here.
  const started = testenv && !process.env.LEASEHOLD_TESTENV ? await testenv.apiServer() : undefined;
  if (started?.stop) await started.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("npm pack from a clean copy builds first and ships exactly the library, its types, the bin, README, LICENSE", () => {
  const expected = ["package.json", "README.md", "LICENSE", "dist/mod.js", "dist/mod.d.ts", "dist/bin/leasehold.mjs"];
  for (const m of libModules()) expected.push(`dist/lib/${m}.js`, `dist/lib/${m}.d.ts`);
  const actual = packed.files.map((/** @type {any} */ f) => f.path);
  assert.deepEqual([...actual].sort(), expected.sort());
});

test("every entry point package.json names is in the package", () => {
  const pkg = JSON.parse(readFileSync(join(app, "node_modules", NAME, "package.json"), "utf8"));
  const paths = [pkg.main, pkg.types, ...Object.values(pkg.bin)];
  for (const e of Object.values(pkg.exports)) paths.push(...Object.values(/** @type {any} */ (e)));
  assert.ok(paths.length >= 7, `package.json names ${paths.length} entry points`);
  for (const p of paths) assert.ok(existsSync(join(app, "node_modules", NAME, p)), `${p} is in the package`);
});

test("the installed bin is one minified file with a Node shebang, executable, importing only node: modules", () => {
  const bin = join(app, "node_modules", ".bin", "leasehold");
  assert.ok(statSync(bin).mode & 0o111, "node_modules/.bin/leasehold is executable");
  const text = readFileSync(bin, "utf8");
  assert.equal(text.split("\n")[0], "#!/usr/bin/env node");
  const specs = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g)].map((m) => m[1]);
  assert.ok(specs.length > 0, "the bundle imports node: built-ins");
  assert.deepEqual(specs.filter((s) => !s.startsWith("node:")), [], "nothing but node: built-ins is imported");
  const lines = text.split("\n").length;
  assert.ok(lines < 50, `minified: ${lines} lines`);
  console.log(`# bin ${packed.files.find((/** @type {any} */ f) => f.path === "dist/bin/leasehold.mjs").size} bytes`);
});

/** The runtime export names of mod.ts (source, on Bun) and of the installed package (by name). */
function runtimeNames(runtime, dir, spec) {
  const file = join(dir, `names-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(
    file,
    `const m = await import(${JSON.stringify(spec)});\n` +
      `console.log(JSON.stringify({ names: Object.keys(m).sort(), bun: typeof Bun !== "undefined", node: process.versions.node }));\n`,
  );
  return JSON.parse(run(runtime, [file], { cwd: dir }).stdout);
}

test("Node 20 imports the package by name; its exports are mod.ts's", () => {
  const source = runtimeNames(BUN, work, pathToFileURL(join(src, "mod.ts")).href);
  const got = runtimeNames(NODE, app, NAME);
  assert.equal(got.bun, false);
  assert.equal(Number(got.node.split(".")[0]) >= 20, true, `Node ${got.node}`);
  assert.ok(source.names.includes("LeaderElector"));
  assert.deepEqual(got.names, source.names);
});

test("Bun imports the package by name; its exports are mod.ts's", () => {
  const source = runtimeNames(BUN, work, pathToFileURL(join(src, "mod.ts")).href);
  const got = runtimeNames(BUN, app, NAME);
  assert.equal(got.bun, true);
  assert.deepEqual(got.names, source.names);
});

test("the shipped declarations export every name of mod.ts (values and types) and type-check a consumer", () => {
  const ts = createRequire(join(ROOT, "package.json"))("typescript");
  const base = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    lib: ["lib.es2023.d.ts", "lib.dom.d.ts"],
    types: [],
    strict: true,
    noEmit: true,
  };
  const exportsOf = (file, options) => {
    const program = ts.createProgram([file], options);
    const checker = program.getTypeChecker();
    const sym = checker.getSymbolAtLocation(program.getSourceFile(file));
    return checker.getExportsOfModule(sym).map((/** @type {any} */ s) => s.name).sort();
  };
  const source = exportsOf(join(src, "mod.ts"), { ...base, allowImportingTsExtensions: true });
  writeFileSync(join(app, "reexport.ts"), `export * from "${NAME}";\n`);
  const shipped = exportsOf(join(app, "reexport.ts"), base);
  assert.ok(source.includes("LeaderElectorOptions"), "types are among mod.ts's exports");
  assert.deepEqual(shipped, source);

  // A consumer as in the README, type-checked with tsc against the installed package only.
  const tsconfig = (file) => ({
    compilerOptions: {
      module: "NodeNext",
      moduleResolution: "NodeNext",
      target: "ES2022",
      lib: ["ES2023", "DOM"],
      types: [],
      strict: true,
      noEmit: true,
      skipLibCheck: false,
    },
    files: [file],
  });
  writeFileSync(
    join(app, "good.ts"),
    `import { createLeaseApi, inClusterConfig, KubeApiError, LeaderElector } from "${NAME}";
export async function main(stop: AbortSignal): Promise<void> {
  const elector = new LeaderElector({
    lease: await createLeaseApi(await inClusterConfig(), { name: "my-app" }),
    identity: "pod-a",
    onStartedLeading: async ({ signal, fencingToken }) => {
      const transitions: number = fencingToken.leaseTransitions;
      void transitions, signal.aborted;
    },
  });
  try {
    await elector.run(stop);
  } catch (e) {
    if (e instanceof KubeApiError) console.error(e.code, e.reason, e.retryAfterSeconds);
    throw e;
  }
}
`,
  );
  writeFileSync(join(app, "tsconfig.good.json"), JSON.stringify(tsconfig("good.ts")));
  const good = spawnSync(NODE, [TSC, "-p", "tsconfig.good.json"], { cwd: app, encoding: "utf8" });
  assert.equal(good.status, 0, `tsc on a consumer of the installed package:\n${good.stdout}${good.stderr}`);

  // The declarations carry real types: a wrong one is an error, not an any.
  writeFileSync(
    join(app, "bad.ts"),
    `import { LeaderElector } from "${NAME}";
new LeaderElector({ lease: undefined as never, identity: "a", onStartedLeading: async ({ fencingToken }) => {
  const wrong: string = fencingToken.leaseTransitions;
  void wrong;
} });
`,
  );
  writeFileSync(join(app, "tsconfig.bad.json"), JSON.stringify(tsconfig("bad.ts")));
  const bad = spawnSync(NODE, [TSC, "-p", "tsconfig.bad.json"], { cwd: app, encoding: "utf8" });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stdout, /bad\.ts\(3,9\): error TS2322/);
});

test("the leasehold bin prints its help on Node and on Bun", () => {
  const bin = join(app, "node_modules", ".bin", "leasehold");
  for (const [cmd, args] of [[bin, ["--help"]], [BUN, [bin, "--help"]]]) {
    const r = run(cmd, args, { cwd: app });
    const out = r.stdout + r.stderr;
    assert.match(out, /usage: leasehold \[flags\]/, `${cmd} --help`);
    assert.match(out, /--lease-name\s+LEASE_NAME/);
  }
});

test("the installed bin on Node and on Bun shares a Lease on the real API server; SIGTERM hands over", async (t) => {
  const env = testenv = await import(pathToFileURL(join(src, "tests", "env", "testenv.mjs")).href);
  const { startReplica } = await import(pathToFileURL(join(src, "tests", "env", "replica.mjs")).href);
  const info = await env.apiServer();
  if (!info) {
    t.skip("real API server not available");
    return;
  }
  const ns = await env.freshNamespace(info, "pack");
  const id = await env.podIdentity(info, ns, "pack");
  const vars = { ...id.env, SERVICE_ACCOUNT_DIR: id.dir, LEASE_NAME: "pack", PATH };
  const bin = join(app, "node_modules", ".bin", "leasehold");
  const started = (/** @type {any} */ l) => l.msg === "started leading";
  const node = startReplica([...FAST, "--identity", "node"], vars, { name: "node", cmd: [bin] });
  const bun = startReplica([...FAST, "--identity", "bun"], vars, { name: "bun", cmd: [BUN, bin] });
  try {
    const first = await Promise.race([node, bun].map((r) => r.waitFor(started, 30000).then(() => r)));
    const second = first === node ? bun : node;
    await second.waitFor((l) => l.msg === "new leader" && l.leader === first.name);
    first.kill("SIGTERM");
    await second.waitFor(started, 15000);
    assert.equal((await first.exited).code, 0);
    second.kill("SIGTERM");
    assert.equal((await second.exited).code, 0);
    const lease = await env.adminRequest(info, "GET", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/pack`);
    assert.equal(lease.spec.holderIdentity, "", "the last leader released the Lease");
    assert.ok(lease.spec.leaseTransitions >= 1);
  } finally {
    node.kill("SIGKILL");
    bun.kill("SIGKILL");
  }
});

test("the one-file bundles for Deno and Bun (dist/bundle) share a Lease on the real API server", async (t) => {
  const env = testenv = await import(pathToFileURL(join(src, "tests", "env", "testenv.mjs")).href);
  const { startReplica } = await import(pathToFileURL(join(src, "tests", "env", "replica.mjs")).href);
  const info = await env.apiServer();
  if (!info) {
    t.skip("real API server not available");
    return;
  }
  const ns = await env.freshNamespace(info, "bundle");
  const id = await env.podIdentity(info, ns, "bundle");
  const vars = { ...id.env, SERVICE_ACCOUNT_DIR: id.dir, LEASE_NAME: "bundle", PATH };
  const started = (/** @type {any} */ l) => l.msg === "started leading";
  const deno = startReplica([...FAST, "--identity", "deno"], vars, {
    name: "deno",
    cmd: [DENO, "run", "-A", join(src, "dist", "bundle", "leasehold.deno.js")],
  });
  /** @type {any} */
  let bun;
  try {
    await deno.waitFor(started, 30000);
    bun = startReplica([...FAST, "--identity", "bun"], vars, {
      name: "bun",
      cmd: [BUN, join(src, "dist", "bundle", "leasehold.bun.js")],
    });
    await bun.waitFor((l) => l.msg === "new leader" && l.leader === "deno");
    deno.kill("SIGTERM");
    await bun.waitFor(started, 15000);
    assert.equal((await deno.exited).code, 0);
    bun.kill("SIGTERM");
    assert.equal((await bun.exited).code, 0);
  } finally {
    deno.kill("SIGKILL");
    bun?.kill("SIGKILL");
  }
});

test("deno publish --dry-run (JSR) publishes mod.ts, lib/, README.md, deno.json and LICENSE, no tests", () => {
  const r = run(DENO, ["publish", "--dry-run", "--allow-dirty"], { cwd: src });
  const base = pathToFileURL(src).href + "/";
  const listed = (r.stdout + r.stderr).split("\n")
    .map((l) => l.match(/^\s+(file:\/\/\S+) \(/)?.[1])
    .filter((u) => u !== undefined)
    .map((u) => (u.startsWith(base) ? u.slice(base.length) : u));
  const expected = ["mod.ts", "README.md", "deno.json", "LICENSE", ...libModules().map((m) => `lib/${m}.ts`)];
  assert.deepEqual(listed.sort(), expected.sort());
});
