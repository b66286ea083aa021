// Reading a kubeconfig as kubectl does: KUBECONFIG lists, a size cap, PEM checks
// of -data fields, insecure-skip-tls-verify with a CA, tokens; and the module
// graph of mod.ts without `node:` imports.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, kubeconfigConfig, MAX_KUBECONFIG_BYTES, splitKubeconfigPaths } from "../mod.ts";

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const b64 = (s: string) => btoa(s);

function kubeconfig(o: {
  current?: string;
  cluster?: string;
  server?: string;
  caData?: string;
  caFile?: string;
  insecure?: boolean;
  user?: string;
  token?: string;
  tokenFile?: string;
  ctx?: string;
}): string {
  const lines = ["apiVersion: v1", "kind: Config"];
  if (o.current) lines.push(`current-context: ${o.current}`);
  if (o.cluster) {
    lines.push(
      "clusters:",
      `- name: ${o.cluster}`,
      "  cluster:",
      `    server: ${o.server ?? "https://127.0.0.1:6443"}`,
    );
    if (o.caData !== undefined) lines.push(`    certificate-authority-data: ${o.caData}`);
    if (o.caFile) lines.push(`    certificate-authority: ${o.caFile}`);
    if (o.insecure) lines.push("    insecure-skip-tls-verify: true");
  }
  if (o.ctx) {
    lines.push("contexts:", `- name: ${o.ctx}`, "  context:", `    cluster: ${o.cluster ?? "c"}`);
    if (o.user) lines.push(`    user: ${o.user}`);
  }
  if (o.user && (o.token !== undefined || o.tokenFile)) {
    lines.push("users:", `- name: ${o.user}`, "  user:");
    if (o.token !== undefined) lines.push(`    token: ${o.token}`);
    if (o.tokenFile) lines.push(`    tokenFile: ${o.tokenFile}`);
  }
  return lines.join("\n") + "\n";
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "leasehold-kubeconfig-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("KUBECONFIG=a:b is split and merged as kubectl does: first value wins, missing files skipped", async () => {
  assert.deepEqual(splitKubeconfigPaths("/a:/b::/a", ":"), ["/a", "/b"]);
  assert.deepEqual(splitKubeconfigPaths("C:\\a;D:\\b", ";"), ["C:\\a", "D:\\b"]);
  await withDir(async (dir) => {
    mkdirSync(join(dir, "a"));
    mkdirSync(join(dir, "b"));
    // a: the current context and its context entry; b: the cluster (with a CA file relative to b) and user.
    writeFileSync(
      join(dir, "a", "config"),
      "current-context: dev\ncontexts:\n- name: dev\n  context:\n    cluster: c1\n    user: u1\n",
    );
    writeFileSync(join(dir, "b", "ca.crt"), PEM);
    writeFileSync(
      join(dir, "b", "config"),
      kubeconfig({
        current: "other",
        cluster: "c1",
        server: "https://10.0.0.9:6443",
        caFile: "ca.crt",
        user: "u1",
        token: "tok",
      }),
    );
    const list = [join(dir, "missing"), join(dir, "a", "config"), join(dir, "b", "config")].join(":");
    const config = await kubeconfigConfig(list);
    assert.equal(config.server, "https://10.0.0.9:6443");
    assert.equal(config.caCert, PEM);
    assert.equal(await config.tokenSource?.token(), "tok");
    assert.match(config.source, /context dev/);
  });
});

test("a kubeconfig larger than the cap is refused with a clear error", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "config");
    writeFileSync(path, kubeconfig({ current: "x" }) + "# " + "x".repeat(MAX_KUBECONFIG_BYTES) + "\n");
    await assert.rejects(kubeconfigConfig(path), (e) => e instanceof ConfigError && /bytes, more than/.test(e.message));
  });
});

test("-data fields must hold base64 PEM", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "config");
    const base = { current: "x", ctx: "x", cluster: "c", user: "u", token: "t" };
    writeFileSync(path, kubeconfig({ ...base, caData: b64("not a certificate") }));
    await assert.rejects(
      kubeconfigConfig(path),
      (e) => e instanceof ConfigError && /does not hold PEM/.test(e.message),
    );
    writeFileSync(path, kubeconfig({ ...base, caData: "abc$$" }));
    await assert.rejects(kubeconfigConfig(path), (e) => e instanceof ConfigError && /not valid base64/.test(e.message));
    writeFileSync(path, kubeconfig({ ...base, caData: b64(PEM) }));
    assert.equal((await kubeconfigConfig(path)).caCert, PEM);
  });
});

test("insecure-skip-tls-verify together with a CA is refused, as kubectl does", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "config");
    writeFileSync(
      path,
      kubeconfig({ current: "x", ctx: "x", cluster: "c", user: "u", token: "t", caData: b64(PEM), insecure: true }),
    );
    await assert.rejects(
      kubeconfigConfig(path),
      (e) =>
        e instanceof ConfigError && /insecure-skip-tls-verify together with a certificate authority/.test(e.message),
    );
  });
});

test("a kubeconfig token that cannot be a header value is refused without quoting it", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "config");
    writeFileSync(
      path,
      kubeconfig({ current: "x", ctx: "x", cluster: "c", user: "u", token: '"secret-one\\nsecret-two"' }),
    );
    await assert.rejects(kubeconfigConfig(path), (e) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, /line break/);
      assert.doesNotMatch(e.message, /secret/);
      return true;
    });
    writeFileSync(path, kubeconfig({ current: "x", ctx: "x", cluster: "c", user: "u", token: "O'Brien # a comment" }));
    assert.equal(await (await kubeconfigConfig(path)).tokenSource?.token(), "O'Brien");
  });
});

// ---- issue 13: the static import graph of mod.ts ---------------------------------

/** Every module statically reachable from `entry` (import/export ... from, and bare `import "x"`). */
function staticGraph(entry: string): { files: string[]; external: string[] } {
  const files: string[] = [];
  const external = new Set<string>();
  const todo = [resolve(entry)];
  while (todo.length) {
    const file = todo.pop()!;
    if (files.includes(file)) continue;
    files.push(file);
    const src = readFileSync(file, "utf8")
      .replace(/\/\*[\s\S]*?\*\//g, "") // block comments (JSDoc examples hold imports)
      .replace(/^\s*\/\/.*$/gm, "");
    const re = /(?:^|;|\n)\s*(?:import|export)\s+(?:type\s+)?(?:[^;'"]*?\s+from\s+)?["']([^"']+)["']/g;
    for (const m of src.matchAll(re)) {
      const whole = m[0];
      if (/^\s*(?:import|export)\s+type\s/.test(whole.replace(/^[;\n]/, ""))) continue; // erased at compile time
      const spec = m[1];
      if (spec.startsWith(".")) todo.push(resolve(dirname(file), spec));
      else external.add(spec);
    }
  }
  return { files, external: [...external] };
}

test("the static import graph of mod.ts has no node: module (edge bundlers need no Node compatibility)", () => {
  const mod = fileURLToPath(new URL("../mod.ts", import.meta.url));
  const { files, external } = staticGraph(mod);
  assert.ok(files.some((f) => f.endsWith("kube_client.ts")), `graph walk found: ${files.join(", ")}`);
  assert.ok(files.some((f) => f.endsWith("config.ts")));
  assert.deepEqual(external, [], `static imports outside the package: ${external.join(", ")}`);
});
