// The builds the footprint benchmarks run: the `tsc` build of the package for
// Node, and one-file minified bundles of the entrypoint (`bun build`, `deno bundle`).
// Each goes to a new temporary directory; dist/ is left alone.

import { existsSync } from "node:fs";
import { mkdtemp, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** Builds the package at `tree` with `tsc` into a temporary directory; its path, or undefined on failure. */
export async function buildNode(tree: string, log: (m: string) => void): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), "leasehold-bench-node-"));
  const r = await new Deno.Command(join(ROOT, "node_modules", ".bin", "tsc"), {
    args: ["-p", join(tree, "tsconfig.build.json"), "--outDir", dir],
    cwd: tree,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!existsSync(join(dir, "lib", "cli.js"))) {
    log(`!!! building leasehold for Node failed; Node is left out:\n${new TextDecoder().decode(r.stdout)}`);
    return undefined;
  }
  if (!r.success) log("!!! tsc reported errors building for Node; using its output anyway");
  await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  return dir;
}

/**
 * Bundles the entrypoint `lib/cli.ts` of `tree` into one minified ES module
 * file for `target` (`bun build` for Node and Bun, `deno bundle` for Deno);
 * its path, or undefined on failure.
 */
export async function bundleEntrypoint(
  tree: string,
  target: "node" | "bun" | "deno",
  log: (m: string) => void,
): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), `leasehold-bundle-${target}-`));
  const file = join(dir, "leasehold.mjs");
  const entry = join(tree, "lib", "cli.ts");
  const cmd = target === "deno"
    ? [Deno.execPath(), "bundle", "--quiet", "--minify", "--output", file, entry]
    : [join(ROOT, "node_modules", ".bin", "bun"), "build", entry, `--target=${target}`, "--format=esm", "--minify"]
      .concat(["--outfile", file]);
  const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), cwd: tree, stdout: "piped", stderr: "piped" })
    .output();
  if (!r.success || !existsSync(file)) {
    log(`!!! bundling the entrypoint for ${target} failed:\n${new TextDecoder().decode(r.stderr)}`);
    return undefined;
  }
  log(`one-file bundle for ${target}: ${(await stat(file)).size} bytes`);
  return file;
}

/** A single executable of the entrypoint, as deploy/Dockerfile builds it (`bun build --compile --minify`). */
export async function compileEntrypoint(tree: string, log: (m: string) => void): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), "leasehold-compiled-"));
  const file = join(dir, "leasehold");
  const r = await new Deno.Command(join(ROOT, "node_modules", ".bin", "bun"), {
    args: ["build", "--compile", "--minify", join(tree, "lib", "cli.ts"), "--outfile", file],
    cwd: tree,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success || !existsSync(file)) {
    log(`!!! bun build --compile of the entrypoint failed:\n${new TextDecoder().decode(r.stderr)}`);
    return undefined;
  }
  log(`compiled entrypoint (bun build --compile): ${((await stat(file)).size / 1048576).toFixed(1)} MiB`);
  return file;
}

/** Exports the tree at git `ref` into a temporary directory (node_modules linked), for before/after runs. */
export async function exportTree(ref: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "leasehold-tree-"));
  const archive = new Deno.Command("git", { args: ["archive", ref], cwd: ROOT, stdout: "piped" }).spawn();
  const tar = new Deno.Command("tar", { args: ["-x", "-C", dir], stdin: "piped" }).spawn();
  await archive.stdout.pipeTo(tar.stdin);
  if (!(await archive.status).success || !(await tar.status).success) throw new Error(`git archive ${ref} failed`);
  await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}
