// Differential fuzzing of the kubeconfig reader against the `yaml` package (a
// full YAML 1.2 parser) as the oracle. For every generated document the subset
// parser must either refuse it or produce exactly what the oracle produces; it
// must never accept a document the oracle rejects. Seeded: a failure prints the
// seed and the document, and `FUZZ_SEED=<n> FUZZ_CASES=<m>` replays or extends it.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import process from "node:process";
import YAML from "yaml";
import { parseKubeconfigText } from "../mod.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 20260726);
const CASES = Number(process.env.FUZZ_CASES ?? 10000);

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Values kubeconfig files really hold, in the spellings people use. */
const PLAIN = [
  "kind-kind",
  "https://127.0.0.1:6443",
  "O'Brien # c",
  "O'Brien",
  "'it''s'",
  '"quoted # not a comment"',
  '"esc \\" quote"',
  '"\\u00e9t\\u00e9"',
  "a:b",
  "a#b",
  "~",
  "true",
  "0x1F",
  "1e3",
  "-1",
  "[]",
  "{}",
  "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
  "",
  "é",
  "prod-eu",
  "'single'",
  '"double"',
];

/** Values that probe the edges of the subset. */
const SCALARS = [
  ...PLAIN,
  '"\\x41"',
  "'unterminated",
  '"unterminated',
  "a:b",
  "a: b",
  "a #b",
  "a#b",
  "#x",
  "~",
  "null",
  "Null",
  "true",
  "False",
  "yes",
  "0x1F",
  "0o17",
  "017",
  "1e3",
  ".5",
  "1.",
  "-1",
  "+1",
  ".inf",
  "-.Inf",
  ".nan",
  "12345678901234567890",
  "-",
  "- x",
  "?",
  "? x",
  ":",
  "[a]",
  "[]",
  "{}",
  "{a: 1}",
  "&anchor x",
  "*alias",
  "!tag x",
  "!!str 1",
  "|",
  ">",
  "%x",
  "@x",
  "`x`",
  ",x",
  "x,y",
  "a  b",
  "a\tb",
  "tail:",
  "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
  "",
  " ",
  "é",
  "__proto__",
];

const KEYS = [
  "apiVersion",
  "kind",
  "current-context",
  "clusters",
  "contexts",
  "users",
  "name",
  "cluster",
  "user",
  "server",
  "token",
  "namespace",
  "certificate-authority-data",
  "insecure-skip-tls-verify",
  "'quoted key'",
  '"dq key"',
  "a b",
  "1",
  "true",
  "null",
  "-k",
  "?k",
  "k#",
];

function pick<T>(r: () => number, xs: T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

/** A kubeconfig-shaped document in the block style kubectl writes, with random values. */
function baseDoc(r: () => number): string {
  const v = () => pick(r, r() < 0.1 ? SCALARS : PLAIN);
  const seqAtKeyIndent = r() < 0.5;
  const ind = seqAtKeyIndent ? "" : "  ";
  const lines = ["apiVersion: v1", "kind: Config", `current-context: ${v()}`];
  for (const list of ["clusters", "contexts", "users"]) {
    lines.push(`${list}:`);
    const n = Math.floor(r() * 3);
    for (let i = 0; i < n; i++) {
      lines.push(`${ind}- name: ${v()}`);
      lines.push(`${ind}  ${list.slice(0, -1)}:`);
      const m = 1 + Math.floor(r() * 3);
      const used = new Set<string>();
      for (let j = 0; j < m; j++) {
        const key = r() < 0.1 ? pick(r, KEYS) : pick(r, KEYS.slice(0, 14));
        if (used.has(key)) continue; // duplicates come from the mutations
        used.add(key);
        lines.push(`${ind}    ${key}: ${v()}`);
      }
      if (r() < 0.2) lines.push(`${ind}  # a comment`);
    }
    if (n === 0 && r() < 0.5) lines[lines.length - 1] += " []";
  }
  if (r() < 0.3) lines.push(`preferences: {}`);
  return lines.join("\n") + (r() < 0.8 ? "\n" : "");
}

const INSERTS = [
  " ",
  "  ",
  "\t",
  "\n",
  ":",
  ": ",
  "#",
  " #",
  "'",
  '"',
  "-",
  "- ",
  "[",
  "]",
  "{",
  "}",
  "&",
  "*",
  "!",
  "|",
  ">",
  "%",
  "@",
  "`",
  "?",
  ",",
  "\\",
  "x",
  "0",
  "\n---\n",
  "\n...\n",
  "\r",
  "\uFEFF",
];

function mutate(r: () => number, doc: string): string {
  let s = doc;
  const k = 1 + Math.floor(r() * 2);
  for (let i = 0; i < k; i++) {
    const op = r();
    const lines = s.split("\n");
    const li = Math.floor(r() * lines.length);
    if (op < 0.35) {
      const at = Math.floor(r() * (s.length + 1));
      s = s.slice(0, at) + pick(r, INSERTS) + s.slice(at);
    } else if (op < 0.5) {
      const at = Math.floor(r() * s.length);
      s = s.slice(0, at) + s.slice(at + 1);
    } else if (op < 0.65) {
      lines.splice(li, 0, lines[li] ?? ""); // duplicate a line (duplicate keys, repeated items)
      s = lines.join("\n");
    } else if (op < 0.8) {
      lines[li] = (r() < 0.5 ? " " : "") + (lines[li] ?? "").replace(/^ /, r() < 0.5 ? "" : " ");
      s = lines.join("\n");
    } else if (op < 0.9) {
      const lj = Math.floor(r() * lines.length);
      [lines[li], lines[lj]] = [lines[lj], lines[li]];
      s = lines.join("\n");
    } else {
      lines[li] = (lines[li] ?? "") + " # " + pick(r, SCALARS);
      s = lines.join("\n");
    }
  }
  return s;
}

type Outcome = { ok: true; json: string } | { ok: false; error: string };

function run(f: () => unknown): Outcome {
  try {
    return { ok: true, json: JSON.stringify(f()) ?? "undefined" };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

const oracle = (text: string) => YAML.parse(text, { uniqueKeys: true, schema: "core", logLevel: "error" });

test(`differential fuzz against the yaml package: ${CASES} documents, seed ${SEED}`, { timeout: 300_000 }, () => {
  const r = rng(SEED);
  const tally = { agreed: 0, bothRefused: 0, refusedOnly: 0 };
  for (let i = 0; i < CASES; i++) {
    const text = r() < 0.15 ? baseDoc(r) : mutate(r, baseDoc(r));
    const ours = run(() => parseKubeconfigText(text));
    const ref = run(() => oracle(text));
    if (ours.ok && !ref.ok) {
      assert.fail(`case ${i} (seed ${SEED}): accepted what YAML refuses (${ref.error.split("\n")[0]})\n${text}`);
    }
    if (ours.ok && ref.ok) {
      assert.equal(ours.json, ref.json, `case ${i} (seed ${SEED}): read differently from YAML\n${text}`);
      tally.agreed++;
    } else if (!ours.ok && !ref.ok) tally.bothRefused++;
    else tally.refusedOnly++;
  }
  console.log(`kubeconfig fuzz: ${JSON.stringify(tally)}`);
  // The generator must mostly produce documents both read, or the test proves little.
  assert.ok(tally.agreed > CASES * 0.25, JSON.stringify(tally));
});

test("kubeconfig files as kubectl, kind and cloud CLIs write them read the same as with YAML", () => {
  const docs = [
    `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://127.0.0.1:39211
  name: kind-kind
contexts:
- context:
    cluster: kind-kind
    user: kind-kind
  name: kind-kind
current-context: kind-kind
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    token: abc.def
`,
    `# written by hand
apiVersion: v1
kind: Config
clusters:
  - name: "prod"   # quoted
    cluster:
      server: 'https://10.0.0.1:6443'
      insecure-skip-tls-verify: true
contexts:
  - name: prod
    context: {cluster: prod}
current-context: prod
`,
    "\uFEFFapiVersion: v1\r\ncurrent-context: a\r\n",
    "---\napiVersion: v1\ncurrent-context: a\n...\n",
    '{"apiVersion": "v1", "current-context": "a", "clusters": []}',
  ];
  for (const d of docs) {
    const ours = run(() => parseKubeconfigText(d));
    const ref = run(() => oracle(d));
    assert.ok(ref.ok, d);
    if (d.includes("{cluster: prod}")) {
      assert.equal(ours.ok, false, "a non-empty flow mapping is refused");
      continue;
    }
    assert.deepEqual(ours, ref, d);
  }
});

test("the review's cases: several documents, duplicate keys, a comment after O'Brien, a BOM", () => {
  assert.throws(() => parseKubeconfigText("current-context: a\n---\ncurrent-context: b\n"), /second YAML document/);
  assert.throws(() => parseKubeconfigText("users:\n- name: u\n  user:\n    token: a\n    token: b\n"), /duplicate key/);
  assert.throws(() => parseKubeconfigText('{"current-context": "a", "current-context": "b"}'), /duplicate key/);
  assert.deepEqual(parseKubeconfigText("token: O'Brien # c\n"), { token: "O'Brien" });
  assert.deepEqual(parseKubeconfigText("\uFEFFcurrent-context: a\n"), { "current-context": "a" });
});

test("long lines are read in linear time (the old key regex was quadratic in a run of spaces)", () => {
  const spaces = " ".repeat(80_000);
  const t0 = performance.now();
  assert.deepEqual(parseKubeconfigText(`a${spaces}b: c\n`), { [`a${spaces}b`]: "c" });
  assert.throws(() => parseKubeconfigText(`a${spaces}b\n`), /expected "key: value"/);
  const long = "x".repeat(640_000);
  assert.deepEqual(parseKubeconfigText(`token: ${long}\n`), { token: long });
  // Generous: linear work takes milliseconds here; the quadratic regex took about 17 s for these lines.
  assert.ok(performance.now() - t0 < 5000, `took ${Math.round(performance.now() - t0)} ms`);
});
