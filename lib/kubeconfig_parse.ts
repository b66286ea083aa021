/**
 * The kubeconfig text parser: JSON, or the block-style YAML subset that
 * kubectl and cloud CLIs write; anything else is refused with its line number.
 *
 * @module
 */

/**
 * Parses kubeconfig text: JSON, or the block-style YAML that kubectl, kind and
 * cloud CLIs write (mappings, sequences, plain and quoted scalars, comments),
 * with YAML 1.2 core-schema scalars. Anything outside that subset is refused
 * with the line number, never guessed: several documents, duplicate keys,
 * anchors, aliases, tags, block and multi-line scalars, flow collections other
 * than `[]`/`{}`. A leading byte-order mark is ignored. Runs in linear time.
 *
 * @example Usage
 * ```ts
 * import { parseKubeconfigText } from "@leasehold/leasehold";
 * const doc = parseKubeconfigText("current-context: a\ncontexts:\n- name: a\n  context:\n    cluster: c\n");
 * console.log((doc as { "current-context": string })["current-context"]); // "a"
 * ```
 */
export function parseKubeconfigText(text: string): unknown {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let first = 0;
  while (first < text.length && " \t\r\n".includes(text[first])) first++;
  if (text[first] === "{") return parseJsonStrict(text);
  const lines: Line[] = [];
  let content = false;
  let ended = false;
  // deno-lint-ignore no-control-regex -- YAML forbids these characters; finding them is the point
  const bad = /[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x84\x86-\x9F\uFEFF\uFFFE\uFFFF]/.exec(text);
  if (bad) {
    const line = text.slice(0, bad.index).split("\n").length;
    throw new Error(
      `line ${line}: a control character or byte-order mark (U+${
        bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")
      }), which a kubeconfig file must not contain`,
    );
  }
  const raw = text.split(/\r?\n/);
  const cr = raw.findIndex((l) => l.includes("\r"));
  if (cr >= 0) throw new Error(`line ${cr + 1}: a carriage return inside a line`);
  for (let i = 0; i < raw.length; i++) {
    const line = raw[i];
    const n = i + 1;
    const marker = /^(---|\.\.\.)(?=[ \t]|$)/.exec(line)?.[1];
    if (marker === "...") {
      if (trimSpace(stripComment(line.slice(3), n))) throw new Error(`line ${n}: content after "..."`);
      ended = true;
      continue;
    }
    if (marker) {
      if (content || ended) {
        throw new Error(
          `line ${n}: a second YAML document ("${marker}"); a kubeconfig file holds one document: split it into files and list them in KUBECONFIG`,
        );
      }
      if (trimSpace(stripComment(line.slice(3), n))) throw new Error(`line ${n}: content after "${marker}"`);
      continue;
    }
    if (line.startsWith("%")) throw new Error(`line ${n}: YAML directives are not supported in a kubeconfig`);
    if (/^ *\t/.test(line)) throw new Error(`line ${n}: tabs are not allowed for indentation`);
    const noComment = stripComment(line, n);
    if (!trimSpace(noComment)) continue;
    if (ended) throw new Error(`line ${n}: content after the end of the document ("...")`);
    const indent = leadingSpace(noComment);
    if (noComment.slice(0, indent).includes("\t")) throw new Error(`line ${n}: tabs are not allowed for indentation`);
    content = true;
    lines.push({ indent, text: trimSpace(noComment), n });
  }
  let pos = 0;
  const isItem = (s: string) => s === "-" || s.startsWith("- ") || s.startsWith("-\t");
  const parseBlock = (indent: number): unknown => {
    const first = lines[pos];
    if (!first || first.indent < indent) return null;
    if (isItem(first.text)) {
      const out: unknown[] = [];
      const seqIndent = first.indent;
      while (pos < lines.length && lines[pos].indent === seqIndent && isItem(lines[pos].text)) {
        const line = lines[pos];
        if (/^ *\t/.test(line.text.slice(1))) throw new Error(`line ${line.n}: tabs are not allowed for indentation`);
        const rest = trimSpace(line.text.slice(1));
        if (!rest) {
          pos++;
          const next = lines[pos];
          out.push(next && next.indent > seqIndent ? parseBlock(next.indent) : null);
        } else if (isItem(rest)) {
          throw new Error(`line ${line.n}: nested sequences ("- - ") are not supported in a kubeconfig`);
        } else if (splitKey(rest, line.n)) {
          // "- key: value" starts a mapping whose keys sit where "key" starts.
          const inner = seqIndent + line.text.indexOf(rest);
          lines[pos] = { indent: inner, text: rest, n: line.n };
          out.push(parseBlock(inner));
        } else {
          pos++;
          out.push(scalar(rest, line.n));
          if (pos < lines.length && lines[pos].indent > seqIndent) {
            throw new Error(`line ${lines[pos].n}: unexpected indentation (multi-line values are not supported)`);
          }
        }
      }
      if (pos < lines.length && lines[pos].indent > seqIndent) {
        throw new Error(`line ${lines[pos].n}: unexpected indentation`);
      }
      return out;
    }
    const out: Record<string, unknown> = {};
    const mapIndent = first.indent;
    while (pos < lines.length && lines[pos].indent === mapIndent && !isItem(lines[pos].text)) {
      const line = lines[pos];
      const kv = splitKey(line.text, line.n);
      if (!kv) throw new Error(`line ${line.n}: expected "key: value"`);
      const { key, rest } = kv;
      if (Object.hasOwn(out, key)) {
        throw new Error(`line ${line.n}: duplicate key ${JSON.stringify(key)}; each key may appear once in a mapping`);
      }
      pos++;
      let value: unknown;
      if (rest !== "") {
        value = scalar(rest, line.n);
        if (pos < lines.length && lines[pos].indent > mapIndent) {
          throw new Error(`line ${lines[pos].n}: unexpected indentation (multi-line values are not supported)`);
        }
      } else if (pos < lines.length && lines[pos].indent > mapIndent) value = parseBlock(lines[pos].indent);
      else if (pos < lines.length && lines[pos].indent === mapIndent && isItem(lines[pos].text)) {
        value = parseBlock(mapIndent); // a sequence may sit at its key's indentation
      } else value = null;
      // Plain assignment of "__proto__" would change the prototype instead of adding a key.
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    }
    if (pos < lines.length && lines[pos].indent > mapIndent) {
      throw new Error(`line ${lines[pos].n}: unexpected indentation`);
    }
    return out;
  };
  const doc = parseBlock(lines[0]?.indent ?? 0);
  if (pos < lines.length) throw new Error(`line ${lines[pos].n}: unexpected content (check the indentation)`);
  return doc;
}

/** Removes YAML white space (spaces and tabs) from both ends; linear, unlike a regex. */
function trimSpace(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s[a] === " " || s[a] === "\t")) a++;
  while (b > a && (s[b - 1] === " " || s[b - 1] === "\t")) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

function trimEndSpace(s: string): string {
  let b = s.length;
  while (b > 0 && (s[b - 1] === " " || s[b - 1] === "\t")) b--;
  return s.slice(0, b);
}

function leadingSpace(s: string): number {
  let a = 0;
  while (a < s.length && (s[a] === " " || s[a] === "\t")) a++;
  return a;
}

interface Line {
  indent: number;
  text: string;
  n: number;
}

/** Index just past the quoted scalar starting at `s[i]`, or -1 when it is not closed on this line. */
function quotedEnd(s: string, i: number): number {
  const q = s[i];
  for (let j = i + 1; j < s.length; j++) {
    if (q === '"' && s[j] === "\\") j++;
    else if (s[j] === q) {
      if (q === "'" && s[j + 1] === "'") j++;
      else return j + 1;
    }
  }
  return -1;
}

/**
 * Removes a comment: `#` at the start or after white space, outside quoted
 * scalars. Quotes count only where a scalar starts (line start, after "- ",
 * after "key: "), so `O'Brien # c` is the plain scalar `O'Brien`.
 */
function stripComment(line: string, n: number): string {
  let i = 0;
  let tokenStart = true;
  while (i < line.length) {
    const c = line[i];
    if (c === " " || c === "\t") {
      i++;
      continue;
    }
    if (c === "#" && (i === 0 || line[i - 1] === " " || line[i - 1] === "\t")) return trimEndSpace(line.slice(0, i));
    if (tokenStart && (c === '"' || c === "'")) {
      const end = quotedEnd(line, i);
      if (end < 0) throw new Error(`line ${n}: unterminated quoted string (multi-line strings are not supported)`);
      i = end;
      tokenStart = false;
      continue;
    }
    const next = line[i + 1];
    const spaceNext = next === undefined || next === " " || next === "\t";
    if ((c === "-" && tokenStart && spaceNext) || (c === ":" && spaceNext)) {
      i++;
      tokenStart = true;
      continue;
    }
    tokenStart = false;
    i++;
  }
  return line;
}

/** Splits `key: rest` (comment already removed); `undefined` when the line is not a mapping entry. */
function splitKey(text: string, n: number): { key: string; rest: string } | undefined {
  let keyEnd: number;
  let restStart: number;
  if (text[0] === '"' || text[0] === "'") {
    const end = quotedEnd(text, 0);
    if (end < 0) return undefined;
    let j = end;
    while (text[j] === " " || text[j] === "\t") j++;
    if (text[j] !== ":" || (j + 1 < text.length && text[j + 1] !== " " && text[j + 1] !== "\t")) return undefined;
    keyEnd = end;
    restStart = j + 1;
  } else {
    let j = -1;
    for (let i = 0; i < text.length; i++) {
      if (text[i] === ":" && (i + 1 === text.length || text[i + 1] === " " || text[i + 1] === "\t")) {
        j = i;
        break;
      }
    }
    if (j < 0) return undefined;
    keyEnd = j;
    restStart = j + 1;
  }
  const rawKey = trimSpace(text.slice(0, keyEnd));
  if (!rawKey) throw new Error(`line ${n}: a mapping entry without a key`);
  const key = scalar(rawKey, n);
  if (typeof key !== "string") {
    throw new Error(`line ${n}: key ${rawKey} is not a string; quote it`);
  }
  return { key, rest: trimSpace(text.slice(restStart)) };
}

const PLAIN_REFUSED = /^[&*!|>\[\]{}%@`,#]|^[-?:](?:[ \t]|$)|: |:\t|:$| #|\t#/;

function scalar(s: string, n: number): unknown {
  const v = trimSpace(s);
  if (v[0] === '"' || v[0] === "'") {
    const end = quotedEnd(v, 0);
    if (end < 0) throw new Error(`line ${n}: unterminated string`);
    if (end !== v.length) throw new Error(`line ${n}: text after a quoted string`);
    if (v[0] === "'") return v.slice(1, -1).replace(/''/g, "'");
    try {
      return JSON.parse(v);
    } catch {
      throw new Error(`line ${n}: a double-quoted string with an escape or character not supported here`);
    }
  }
  if (v === "[]") return [];
  if (v === "{}") return {};
  if (PLAIN_REFUSED.test(v)) {
    throw new Error(
      `line ${n}: YAML feature not supported in a kubeconfig here (anchor, alias, tag, block or flow value, or a ": " inside a plain value; quote the value): ${
        JSON.stringify(v.slice(0, 20))
      }`,
    );
  }
  // YAML 1.2 core schema, as the reference YAML parsers type plain scalars.
  if (/^(?:~|null|Null|NULL)$/.test(v)) return null;
  if (/^(?:true|True|TRUE)$/.test(v)) return true;
  if (/^(?:false|False|FALSE)$/.test(v)) return false;
  if (/^[-+]?[0-9]+$/.test(v)) return Number(v);
  if (/^0o[0-7]+$/.test(v)) return parseInt(v.slice(2), 8);
  if (/^0x[0-9a-fA-F]+$/.test(v)) return parseInt(v.slice(2), 16);
  if (/^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$/.test(v)) return parseFloat(v);
  if (/^[-+]?\.(?:inf|Inf|INF)$/.test(v)) return v[0] === "-" ? -Infinity : Infinity;
  if (/^\.(?:nan|NaN|NAN)$/.test(v)) return NaN;
  return v;
}

/** `JSON.parse`, refusing duplicate keys (JSON.parse would keep the last one silently). */
function parseJsonStrict(text: string): unknown {
  const value = JSON.parse(text);
  // Valid JSON now: walk its strings and braces to find a key repeated in one object.
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "{") {
      stack.push(new Set());
      expectKey = true;
    } else if (c === "[") {
      stack.push(null);
      expectKey = false;
    } else if (c === "}" || c === "]") {
      stack.pop();
      expectKey = false;
    } else if (c === ",") {
      expectKey = stack[stack.length - 1] instanceof Set;
    } else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        const keys = stack[stack.length - 1]!;
        if (keys.has(key)) {
          throw new Error(`duplicate key ${JSON.stringify(key)}; each key may appear once in an object`);
        }
        keys.add(key);
        expectKey = false;
      }
      i = j;
    }
  }
  return value;
}
