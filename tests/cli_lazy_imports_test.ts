// The entrypoint loads the HTTP server and child-process support only when it
// needs them (--http-addr, a command), and node:url only on Node: its static
// import graph holds none of node:http, node:child_process and node:url as a
// value import (type imports are erased). Nor node:crypto: the cluster CA is
// checked by lib/pem.ts, as node:crypto stays resident (1 MiB on Deno, 2.5 on Bun).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Static value imports and re-exports: [specifier, statement]; `import type` and all-`type` lists are left out. */
export function valueImports(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: string[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?(?:([^;'"]*?)\s+from\s+)?["']([^"']+)["']/gm;
  for (const m of code.matchAll(re)) {
    if (m[2]) continue;
    const clause = m[3]?.trim() ?? "";
    const braces = /^\{([\s\S]*)\}$/.exec(clause);
    if (braces) {
      const names = braces[1].split(",").map((n) => n.trim()).filter(Boolean);
      if (names.length && names.every((n) => n.startsWith("type "))) continue;
    }
    out.push(m[4]);
  }
  return out;
}

function graph(entry: string): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    const specs = valueImports(readFileSync(file, "utf8"));
    seen.set(file, specs);
    for (const s of specs) if (s.startsWith(".")) visit(join(dirname(file), s));
  };
  visit(entry);
  return seen;
}

test("lazy imports: the walker keeps value imports and drops type-only ones", () => {
  const src = `import type { A } from "node:a";\nimport { type B, type C } from "node:b";\n` +
    `import { type D, e } from "node:c";\nexport { f } from "./f.ts";\nimport g from "node:g";\n` +
    `const h = await import("node:h");\n`;
  assert.deepEqual(valueImports(src), ["node:c", "./f.ts", "node:g"]);
});

test("lazy imports: lib/cli.ts reaches none of node:http, node:child_process, node:url, node:crypto statically", () => {
  const g = graph(join(ROOT, "lib", "cli.ts"));
  assert.ok(g.size > 10, `walked ${g.size} modules`);
  const offenders = [...g].flatMap(([file, specs]) =>
    specs.filter((s) => ["node:http", "node:child_process", "node:url", "node:crypto"].includes(s)).map((s) =>
      `${relative(ROOT, file)} imports ${s}`
    )
  );
  assert.deepEqual(offenders, []);
});

test("lazy imports: the sharded set and the LeaseCandidate keeper load only in their modes", () => {
  const g = graph(join(ROOT, "lib", "cli.ts"));
  const reached = [...g.keys()].map((f) => relative(ROOT, f));
  const modeOnly = ["lib/cli_shards.ts", "lib/lease_set.ts", "lib/lease_hub.ts", "lib/candidate.ts"];
  assert.deepEqual(reached.filter((f) => modeOnly.includes(f)), []);
});
