/**
 * Where the API server is and who we are to it: the in-cluster service account,
 * a kubeconfig, or explicit settings. Files are read with `node:fs`, which Deno,
 * Bun and Node all provide, imported only when a file is read, so the module
 * loads without Node compatibility; edge runtimes pass explicit settings instead.
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";
import { ConfigError } from "./errors.ts";
import { invalidToken, KubeClient, type TokenSource } from "./kube_client.ts";
import { KubeLeaseApi } from "./lease_api.ts";
import type { Logger } from "./log.ts";
import { createFetch, type TlsOptions } from "./transport.ts";
import { invalidLeaseName, invalidNamespace } from "./lease.ts";

/** The default service-account directory of a pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** How to reach and authenticate to the API server. */
export interface ClusterConfig extends TlsOptions {
  /** API server URL, e.g. `https://10.96.0.1:443`. */
  server: string;
  /** Default namespace (the pod's, or the kubeconfig context's). */
  namespace?: string;
  /** Bearer token source, if any. */
  tokenSource?: TokenSource;
  /** Where this came from, for logs and error messages. */
  source: string;
}

/**
 * A token read from a file, re-read when older than `maxAgeMs` and at once
 * after a 401 (the kubelet rotates projected tokens in place).
 *
 * @example Usage
 * ```ts ignore
 * import { FileTokenSource } from "@leasehold/leasehold";
 * const tokens = new FileTokenSource("/var/run/secrets/kubernetes.io/serviceaccount/token");
 * console.log((await tokens.token())?.length);
 * ```
 */
export class FileTokenSource implements TokenSource {
  /** The token file. */
  readonly path: string;
  #maxAge: number;
  #clock: Clock;
  #cached?: string;
  #readAt = -Infinity;

  /** Creates the source; the file is read on first use. */
  constructor(path: string, options: { maxAgeMs?: number; clock?: Clock } = {}) {
    this.path = path;
    this.#maxAge = options.maxAgeMs ?? 60000;
    this.#clock = options.clock ?? systemClock;
  }

  /** The token, re-read when stale. */
  async token(): Promise<string> {
    if (this.#cached === undefined || this.#clock.now() - this.#readAt >= this.#maxAge) {
      this.#cached = await readToken(this.path);
      this.#readAt = this.#clock.now();
    }
    return this.#cached;
  }

  /** Re-reads the file; true when the token changed. */
  async invalidate(): Promise<boolean> {
    const before = this.#cached;
    try {
      this.#cached = await readToken(this.path);
      this.#readAt = this.#clock.now();
    } catch {
      return false;
    }
    return this.#cached !== before;
  }
}

/**
 * A fixed token.
 *
 * @example Usage
 * ```ts
 * import { staticToken } from "@leasehold/leasehold";
 * console.log(await staticToken("abc").token()); // "abc"
 * ```
 */
export function staticToken(token: string): TokenSource {
  return { token: () => Promise.resolve(token) };
}

/**
 * Reads a UTF-8 text file; `node:fs` is imported on first use only. The read is
 * synchronous: these files (token, CA, namespace, kubeconfig) are small and
 * local, and the asynchronous file API starts a thread pool that costs 1.5 to
 * 2 MiB of resident memory on Deno and Bun for the life of the process.
 */
async function readFile(path: string, _encoding: "utf8", maxBytes = 1 << 20): Promise<string> {
  const fs = await import("node:fs");
  // (A file that grows between the two calls is still read whole; the cap is against the wrong file.)
  const { size } = fs.statSync(path);
  if (size > maxBytes) {
    throw new ConfigError(
      `${path} is ${size} bytes, more than the ${maxBytes} bytes accepted; is it the right file?`,
    );
  }
  return fs.readFileSync(path, "utf8");
}

async function readToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8", 64 << 10);
  } catch (e) {
    throw new ConfigError(
      `cannot read the service-account token ${path}: ${
        (e as Error).message
      }; mount a token (automountServiceAccountToken: true) or set --service-account-dir / SERVICE_ACCOUNT_DIR`,
      { cause: e },
    );
  }
  const t = text.trim(); // kubelet-written and hand-made files end with a newline
  if (!t) {
    throw new ConfigError(
      `the service-account token ${path} is empty; the kubelet has not written it yet or the mount is wrong`,
    );
  }
  const bad = invalidToken(t);
  if (bad) {
    throw new ConfigError(
      `the token in ${path} ${bad}, which cannot be sent in an HTTP header; a token is one line of printable ASCII: rewrite the file`,
    );
  }
  return t;
}

async function readPem(path: string, what: string, fix: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(e as Error).message}; ${fix}`, { cause: e });
  }
  if (!text.includes("-----BEGIN ")) throw new ConfigError(`${what} ${path} is not PEM (no "-----BEGIN" line); ${fix}`);
  return text;
}

/** Environment lookup, injectable for tests. */
export type EnvLookup = (name: string) => string | undefined;

/**
 * Reads an environment variable on Deno, Bun and Node; `undefined` where there is none.
 *
 * @example Usage
 * ```ts
 * import { getEnv } from "@leasehold/leasehold";
 * console.log(typeof getEnv("HOME"));
 * ```
 */
export function getEnv(name: string): string | undefined {
  const g = globalThis as {
    Deno?: { env: { get(n: string): string | undefined } };
    process?: { env: Record<string, string | undefined> };
  };
  try {
    if (g.Deno) return g.Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
  return g.process?.env?.[name];
}

/**
 * The pod's own configuration: `KUBERNETES_SERVICE_HOST`/`PORT` and the
 * service-account directory (`token`, `ca.crt`, `namespace`).
 *
 * @throws {ConfigError} naming what is missing and how to fix it
 * @example Usage
 * ```ts ignore
 * import { inClusterConfig } from "@leasehold/leasehold";
 * const config = await inClusterConfig();
 * console.log(config.server, config.namespace);
 * ```
 */
export async function inClusterConfig(
  options: { serviceAccountDir?: string; env?: EnvLookup; clock?: Clock } = {},
): Promise<ClusterConfig> {
  const env = options.env ?? getEnv;
  const dir = (options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR).replace(/\/+$/, "");
  const host = env("KUBERNETES_SERVICE_HOST");
  const port = env("KUBERNETES_SERVICE_PORT");
  if (!host || !port) {
    throw new ConfigError(
      "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so this is not running in a pod; outside a cluster use --kubeconfig or KUBECONFIG",
    );
  }
  if (!/^\d+$/.test(port)) {
    throw new ConfigError(`KUBERNETES_SERVICE_PORT is ${JSON.stringify(port)}, not a port number`);
  }
  const caCert = await readPem(
    `${dir}/ca.crt`,
    "the cluster CA",
    "the service-account volume must contain ca.crt (or set --service-account-dir)",
  );
  const tokenSource = new FileTokenSource(`${dir}/token`, { clock: options.clock });
  await tokenSource.token(); // fail now, with a clear message, if it is missing
  let namespace: string | undefined;
  try {
    namespace = (await readFile(`${dir}/namespace`, "utf8")).trim() || undefined;
  } catch {
    namespace = undefined;
  }
  const h = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return { server: `https://${h}:${port}`, namespace, caCert, tokenSource, source: `in-cluster (${dir})` };
}

/** Largest kubeconfig file read, in bytes. */
export const MAX_KUBECONFIG_BYTES = 4 << 20;

/**
 * Splits a `KUBECONFIG`-style list as kubectl does: on `:` (`;` on Windows),
 * dropping empty entries and repeats.
 *
 * @example Usage
 * ```ts
 * import { splitKubeconfigPaths } from "@leasehold/leasehold";
 * console.log(splitKubeconfigPaths("/a:/b::/a")); // ["/a", "/b"]
 * ```
 */
export function splitKubeconfigPaths(list: string, separator: string = defaultPathSeparator()): string[] {
  const out: string[] = [];
  for (const p of list.split(separator)) if (p && !out.includes(p)) out.push(p);
  return out;
}

function defaultPathSeparator(): string {
  const g = globalThis as { Deno?: { build?: { os?: string } }; process?: { platform?: string } };
  return (g.Deno?.build?.os ?? g.process?.platform ?? "") === "windows" || g.process?.platform === "win32" ? ";" : ":";
}

/** One kubeconfig file's content, with the directory its relative paths start from. */
interface KubeconfigFile {
  path: string;
  base: string;
  doc: Record<string, unknown>;
}

async function loadKubeconfigFile(path: string): Promise<KubeconfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8", MAX_KUBECONFIG_BYTES);
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return undefined;
    throw new ConfigError(`cannot read kubeconfig ${path}: ${(e as Error).message}`, { cause: e });
  }
  let doc: unknown;
  try {
    doc = parseKubeconfigText(text);
  } catch (e) {
    throw new ConfigError(`kubeconfig ${path} cannot be parsed: ${(e as Error).message}`, { cause: e });
  }
  if (doc !== null && (typeof doc !== "object" || Array.isArray(doc))) {
    throw new ConfigError(`kubeconfig ${path} is not a mapping (apiVersion, clusters, contexts, users)`);
  }
  const base = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
  return { path, base, doc: (doc ?? {}) as Record<string, unknown> };
}

/**
 * Reads a kubeconfig: the current (or given) context's server,
 * `certificate-authority(-data)`, `insecure-skip-tls-verify`, `token`,
 * `tokenFile`, `client-certificate(-data)` and `client-key(-data)`, and the
 * context's namespace. Exec plugins and auth providers are not supported and
 * are reported as such.
 *
 * `path` may be a `KUBECONFIG`-style list (`a:b`): files are merged as kubectl
 * merges them (the first file that sets `current-context`, or a cluster, context
 * or user of a given name, wins; missing files are skipped), and relative paths
 * in each file start from that file's directory. Files larger than
 * {@linkcode MAX_KUBECONFIG_BYTES} are refused.
 *
 * @throws {ConfigError} naming what is wrong
 * @example Usage
 * ```ts ignore
 * import { kubeconfigConfig } from "@leasehold/leasehold";
 * const config = await kubeconfigConfig("/home/me/.kube/config");
 * ```
 */
export async function kubeconfigConfig(path: string, options: { context?: string } = {}): Promise<ClusterConfig> {
  const paths = splitKubeconfigPaths(path);
  if (paths.length === 0) throw new ConfigError(`no kubeconfig file given (${JSON.stringify(path)})`);
  const files: KubeconfigFile[] = [];
  for (const p of paths) {
    const f = await loadKubeconfigFile(p);
    if (f) files.push(f);
  }
  const where = paths.length === 1 ? `kubeconfig ${paths[0]}` : `kubeconfig ${paths.join(", ")}`;
  if (files.length === 0) {
    throw new ConfigError(`cannot read ${where}: no such file; check --kubeconfig / KUBECONFIG`);
  }
  const ctxName = options.context ?? files.map((f) => str(f.doc["current-context"])).find((c) => c);
  if (!ctxName) throw new ConfigError(`${where} has no current-context; pass a context`);
  const named = (
    list: string,
    name: string,
    what: string,
  ): { entry: Record<string, unknown>; file: KubeconfigFile } => {
    for (const file of files) {
      const hit = (Array.isArray(file.doc[list]) ? file.doc[list] as unknown[] : []).map(asRecord).find((e) =>
        e.name === name
      );
      if (hit) return { entry: asRecord(hit[what]), file };
    }
    throw new ConfigError(`${where}: ${what} ${JSON.stringify(name)} not found`);
  };
  const ctx = named("contexts", ctxName, "context").entry;
  const { entry: cluster, file: clusterFile } = named("clusters", str(ctx.cluster) ?? "", "cluster");
  const { entry: user, file: userFile } = ctx.user
    ? named("users", str(ctx.user) ?? "", "user")
    : { entry: {} as Record<string, unknown>, file: clusterFile };
  const server = str(cluster.server);
  if (!server) throw new ConfigError(`${where}: cluster of context ${ctxName} has no server`);
  if (user.exec || user["auth-provider"]) {
    throw new ConfigError(
      `${where}: user of context ${ctxName} uses ${
        user.exec ? "an exec plugin" : "an auth provider"
      }, which leasehold does not run; use a token, tokenFile or client certificate, or run in the cluster`,
    );
  }
  if (user.username || user.password) {
    throw new ConfigError(
      `${where}: basic auth (username/password) is not supported; use a token or client certificate`,
    );
  }
  const pemData = (v: unknown, key: string, file: KubeconfigFile): string | undefined => {
    const s = str(v);
    if (!s) return undefined;
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(
        Uint8Array.from(atob(s.replace(/\s+/g, "")), (c) => c.charCodeAt(0)),
      );
    } catch {
      throw new ConfigError(`kubeconfig ${file.path}: ${key} is not valid base64 of a PEM file`);
    }
    if (!text.includes("-----BEGIN ")) {
      throw new ConfigError(
        `kubeconfig ${file.path}: ${key} does not hold PEM (no "-----BEGIN" line after base64 decoding); it must be the base64 of the PEM file`,
      );
    }
    return text;
  };
  const fileOr = async (dataKey: string, fileKey: string, from: Record<string, unknown>, file: KubeconfigFile) => {
    const data = pemData(from[dataKey], dataKey, file);
    if (data) return data;
    const f = str(from[fileKey]);
    const rel = (p: string) => (p.startsWith("/") ? p : file.base + p);
    return f ? await readPem(rel(f), `the ${fileKey}`, `fix ${fileKey} in ${file.path}`) : undefined;
  };
  const insecure = cluster["insecure-skip-tls-verify"] === true;
  const caCert = await fileOr("certificate-authority-data", "certificate-authority", cluster, clusterFile);
  if (insecure && caCert) {
    throw new ConfigError(
      `kubeconfig ${clusterFile.path}: cluster of context ${ctxName} sets insecure-skip-tls-verify together with a certificate authority, which kubectl refuses too: remove insecure-skip-tls-verify`,
    );
  }
  const clientCert = await fileOr("client-certificate-data", "client-certificate", user, userFile);
  const clientKey = await fileOr("client-key-data", "client-key", user, userFile);
  if (!!clientCert !== !!clientKey) {
    throw new ConfigError(
      `${where}: a client certificate needs both client-certificate(-data) and client-key(-data)`,
    );
  }
  let tokenSource: TokenSource | undefined;
  const token = typeof user.token === "string" ? user.token.trim() : undefined;
  if (user.token !== undefined && user.token !== null && typeof user.token !== "string") {
    throw new ConfigError(`kubeconfig ${userFile.path}: the user's token is not a string; quote it`);
  }
  if (token) {
    const bad = invalidToken(token);
    if (bad) {
      throw new ConfigError(
        `kubeconfig ${userFile.path}: the user's token ${bad}, which cannot be sent in an HTTP header; a token is one line of printable ASCII`,
      );
    }
    tokenSource = staticToken(token);
  } else if (str(user.tokenFile)) {
    const f = str(user.tokenFile)!;
    tokenSource = new FileTokenSource(f.startsWith("/") ? f : userFile.base + f);
  }
  return {
    server,
    namespace: str(ctx.namespace),
    caCert,
    clientCert,
    clientKey,
    insecureSkipTlsVerify: insecure,
    tokenSource,
    source: `${where} context ${ctxName}`,
  };
}

function asRecord(v: unknown): Record<string, unknown> {
  return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : typeof v === "number" ? String(v) : undefined;
}

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

/** What to elect on: the Lease name and namespace. */
export interface LeaseTarget {
  /** Lease name. */
  name: string;
  /** Namespace; defaults to the config's namespace, else `default`. */
  namespace?: string;
  /** Per-request timeout in ms (client-go: max(1s, renewDeadline/2)). @default 5000 */
  timeoutMs?: number;
  /** Clock for timeouts and token refresh. */
  clock?: Clock;
  /** Receives the warning logged when TLS verification is off. */
  logger?: Logger;
  /** A watch silent for this long is ended and reopened. @default 90000 (see DEFAULT_WATCH_IDLE_TIMEOUT_MS) */
  watchIdleTimeoutMs?: number;
}

/**
 * Builds the {@linkcode KubeLeaseApi} for a Lease from a {@linkcode ClusterConfig},
 * with the runtime's TLS adapter.
 *
 * @throws {ConfigError} for an invalid name or namespace
 * @example Usage
 * ```ts
 * import { createLeaseApi } from "@leasehold/leasehold";
 * const api = await createLeaseApi({ server: "https://127.0.0.1:6443", source: "explicit" }, { name: "my-lease" });
 * console.log(api.namespace); // "default"
 * ```
 */
export async function createLeaseApi(config: ClusterConfig, target: LeaseTarget): Promise<KubeLeaseApi> {
  const namespace = target.namespace || config.namespace || "default";
  const badName = invalidLeaseName(target.name);
  if (badName) throw new ConfigError(`lease name ${JSON.stringify(target.name)} ${badName}`);
  const badNs = invalidNamespace(namespace);
  if (badNs) throw new ConfigError(`namespace ${JSON.stringify(namespace)} ${badNs}`);
  let url: URL;
  try {
    url = new URL(config.server);
  } catch {
    throw new ConfigError(`server ${JSON.stringify(config.server)} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ConfigError(`server ${config.server} must be an https:// URL`);
  }
  const client = new KubeClient({
    server: config.server,
    fetch: await createFetch(config, { logger: target.logger }),
    tokenSource: config.tokenSource,
    timeoutMs: target.timeoutMs,
    clock: target.clock,
  });
  return new KubeLeaseApi(client, namespace, target.name, { watchIdleTimeoutMs: target.watchIdleTimeoutMs });
}
