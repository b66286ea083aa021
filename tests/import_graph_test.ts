// The static import graph of the library holds no `node:` module, so an edge
// bundler or runtime loads it without Node compatibility; runtime-specific code
// (node:https, node:fs) is reached only through dynamic import().
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Specifiers of static `import … from`, `export … from` and bare `import "x"` statements. */
export function staticImports(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: string[] = [];
  const re = /^\s*(?:import|export)\s+(?:type\s+)?(?:[^;'"]*?\s+from\s+)?["']([^"']+)["']/gm;
  for (const m of code.matchAll(re)) out.push(m[1]);
  return out;
}

function walk(entry: string): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    const specs = staticImports(readFileSync(file, "utf8"));
    seen.set(file, specs);
    for (const s of specs) if (s.startsWith(".")) visit(join(dirname(file), s));
  };
  visit(entry);
  return seen;
}

/** A cycle of imports in `graph` (file -> relative specifiers), as the files along it, or `undefined`. */
export function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (file: string): string[] | undefined => {
    if (state.get(file) === "open") return [...path.slice(path.indexOf(file)), file];
    if (state.get(file) === "done" || !graph.has(file)) return undefined;
    state.set(file, "open");
    path.push(file);
    for (const s of graph.get(file)!) {
      const found = s.startsWith(".") ? visit(join(dirname(file), s)) : undefined;
      if (found) return found;
    }
    path.pop();
    state.set(file, "done");
    return undefined;
  };
  for (const file of graph.keys()) {
    const found = visit(file);
    if (found) return found;
  }
  return undefined;
}

test("import graph: the walker sees static imports and ignores dynamic ones", () => {
  const src = `import { a } from "./a.ts";\nimport type { B } from "./b.ts";\nexport * from "./c.ts";\n` +
    `import "node:side";\nconst x = await import("node:https");\n// import { no } from "node:comment";\n`;
  assert.deepEqual(staticImports(src), ["./a.ts", "./b.ts", "./c.ts", "node:side"]);
});

test("import graph: mod.ts reaches no node: module statically", () => {
  const graph = walk(join(ROOT, "mod.ts"));
  assert.ok(graph.size > 10, `walked ${graph.size} modules`);
  const offenders = [...graph].flatMap(([file, specs]) =>
    specs.filter((s) => !s.startsWith(".")).map((s) => `${relative(ROOT, file)} imports ${s}`)
  );
  assert.deepEqual(offenders, []);
});

test("import graph: a cycle is found and named", () => {
  const graph = new Map([["/l/a.ts", ["./b.ts"]], ["/l/b.ts", ["./c.ts", "node:fs"]], ["/l/c.ts", ["./a.ts"]]]);
  assert.deepEqual(findCycle(graph), ["/l/a.ts", "/l/b.ts", "/l/c.ts", "/l/a.ts"]);
  graph.set("/l/c.ts", []);
  assert.equal(findCycle(graph), undefined);
});

test("import graph: the library's modules import one another without a cycle (imports point one way)", () => {
  const graph = new Map([...walk(join(ROOT, "mod.ts")), ...walk(join(ROOT, "lib", "cli.ts"))]);
  const cycle = findCycle(graph);
  assert.equal(cycle?.map((f) => relative(ROOT, f)).join(" -> "), undefined);
});
