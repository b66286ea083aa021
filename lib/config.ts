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

/** Reads a UTF-8 text file; `node:fs` is imported on first use only. */
async function readFile(path: string, _encoding: "utf8", maxBytes = 1 << 20): Promise<string> {
  const fs = await import("node:fs/promises");
  const handle = await fs.open(path, "r");
  try {
    const { size } = await handle.stat();
    if (size > maxBytes) {
      throw new ConfigError(
        `${path} is ${size} bytes, more than the ${maxBytes} bytes accepted; is it the right file?`,
      );
    }
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
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

/**
 * Reads a kubeconfig file (YAML or JSON): the current (or given) context's
 * server, `certificate-authority(-data)`, `insecure-skip-tls-verify`, `token`,
 * `tokenFile`, `client-certificate(-data)` and `client-key(-data)`, and the
 * context's namespace. Exec plugins and auth providers are not supported and
 * are reported as such.
 *
 * @throws {ConfigError} naming what is wrong
 * @example Usage
 * ```ts ignore
 * import { kubeconfigConfig } from "@leasehold/leasehold";
 * const config = await kubeconfigConfig("/home/me/.kube/config");
 * ```
 */
export async function kubeconfigConfig(path: string, options: { context?: string } = {}): Promise<ClusterConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read kubeconfig ${path}: ${(e as Error).message}`, { cause: e });
  }
  let doc: unknown;
  try {
    doc = parseKubeconfigText(text);
  } catch (e) {
    throw new ConfigError(`kubeconfig ${path} cannot be parsed: ${(e as Error).message}`, { cause: e });
  }
  const base = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
  const rel = (p: string) => (p.startsWith("/") ? p : base + p);
  const obj = asRecord(doc);
  const ctxName = options.context ?? str(obj["current-context"]);
  if (!ctxName) throw new ConfigError(`kubeconfig ${path} has no current-context; pass a context`);
  const named = (list: unknown, name: string, what: string): Record<string, unknown> => {
    const hit = (Array.isArray(list) ? list : []).map(asRecord).find((e) => e.name === name);
    if (!hit) throw new ConfigError(`kubeconfig ${path}: ${what} ${JSON.stringify(name)} not found`);
    return asRecord(hit[what]);
  };
  const ctx = named(obj.contexts, ctxName, "context");
  const cluster = named(obj.clusters, str(ctx.cluster) ?? "", "cluster");
  const user = ctx.user ? named(obj.users, str(ctx.user) ?? "", "user") : {};
  const server = str(cluster.server);
  if (!server) throw new ConfigError(`kubeconfig ${path}: cluster of context ${ctxName} has no server`);
  if (user.exec || user["auth-provider"]) {
    throw new ConfigError(
      `kubeconfig ${path}: user of context ${ctxName} uses ${
        user.exec ? "an exec plugin" : "an auth provider"
      }, which leasehold does not run; use a token, tokenFile or client certificate, or run in the cluster`,
    );
  }
  if (user.username || user.password) {
    throw new ConfigError(
      `kubeconfig ${path}: basic auth (username/password) is not supported; use a token or client certificate`,
    );
  }
  const b64 = (v: unknown, what: string) => {
    const s = str(v);
    if (!s) return undefined;
    try {
      return new TextDecoder().decode(Uint8Array.from(atob(s.replace(/\s+/g, "")), (c) => c.charCodeAt(0)));
    } catch {
      throw new ConfigError(`kubeconfig ${path}: ${what} is not valid base64`);
    }
  };
  const fileOr = async (dataKey: string, fileKey: string, from: Record<string, unknown>, what: string) => {
    const data = b64(from[dataKey], dataKey);
    if (data) return data;
    const f = str(from[fileKey]);
    return f ? await readPem(rel(f), what, `fix ${fileKey} in ${path}`) : undefined;
  };
  const caCert = await fileOr(
    "certificate-authority-data",
    "certificate-authority",
    cluster,
    "the certificate authority",
  );
  const clientCert = await fileOr("client-certificate-data", "client-certificate", user, "the client certificate");
  const clientKey = await fileOr("client-key-data", "client-key", user, "the client key");
  if (!!clientCert !== !!clientKey) {
    throw new ConfigError(
      `kubeconfig ${path}: a client certificate needs both client-certificate(-data) and client-key(-data)`,
    );
  }
  let tokenSource: TokenSource | undefined;
  if (str(user.token)) tokenSource = staticToken(str(user.token)!);
  else if (str(user.tokenFile)) tokenSource = new FileTokenSource(rel(str(user.tokenFile)!));
  return {
    server,
    namespace: str(ctx.namespace),
    caCert,
    clientCert,
    clientKey,
    insecureSkipTlsVerify: cluster["insecure-skip-tls-verify"] === true,
    tokenSource,
    source: `kubeconfig ${path} context ${ctxName}`,
  };
}

function asRecord(v: unknown): Record<string, unknown> {
  return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : typeof v === "number" ? String(v) : undefined;
}

/**
 * Parses kubeconfig text: JSON, or the block-style YAML that kubectl and kind
 * write (mappings, sequences, plain and quoted scalars, comments). Anchors,
 * multi-line strings and flow collections other than `[]`/`{}` are refused.
 *
 * @example Usage
 * ```ts
 * import { parseKubeconfigText } from "@leasehold/leasehold";
 * const doc = parseKubeconfigText("current-context: a\ncontexts:\n- name: a\n  context:\n    cluster: c\n");
 * console.log((doc as { "current-context": string })["current-context"]); // "a"
 * ```
 */
export function parseKubeconfigText(text: string): unknown {
  const t = text.trim();
  if (t.startsWith("{")) return JSON.parse(t);
  const lines: { indent: number; text: string; n: number }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const noComment = stripComment(raw);
    if (!noComment.trim() || noComment.trim() === "---") return;
    if (/^\s*\t/.test(noComment)) throw new Error(`line ${i + 1}: tabs are not allowed for indentation`);
    lines.push({ indent: noComment.length - noComment.trimStart().length, text: noComment.trim(), n: i + 1 });
  });
  let pos = 0;
  const parseBlock = (indent: number): unknown => {
    const first = lines[pos];
    if (!first || first.indent < indent) return null;
    if (first.text === "-" || first.text.startsWith("- ")) {
      const out: unknown[] = [];
      const seqIndent = first.indent;
      while (
        pos < lines.length && lines[pos].indent === seqIndent &&
        (lines[pos].text === "-" || lines[pos].text.startsWith("- "))
      ) {
        const line = lines[pos];
        const rest = line.text.slice(1).trim();
        if (!rest) {
          pos++;
          out.push(parseBlock(seqIndent + 1));
        } else {
          // "- key: value" starts a mapping whose keys are indented at seqIndent + 2.
          const inner = seqIndent + line.text.indexOf(rest);
          lines[pos] = { indent: inner, text: rest, n: line.n };
          out.push(isMapEntry(rest) ? parseBlock(inner) : (pos++, scalar(rest, line.n)));
        }
      }
      return out;
    }
    const out: Record<string, unknown> = {};
    const mapIndent = first.indent;
    while (pos < lines.length && lines[pos].indent === mapIndent) {
      const line = lines[pos];
      const m = /^("[^"]*"|'[^']*'|[^:]+?)\s*:(?:\s+(.*))?$/.exec(line.text);
      if (!m) throw new Error(`line ${line.n}: expected "key: value"`);
      const key = String(scalar(m[1], line.n));
      pos++;
      if (m[2] !== undefined && m[2] !== "") out[key] = scalar(m[2], line.n);
      else if (pos < lines.length && lines[pos].indent > mapIndent) out[key] = parseBlock(lines[pos].indent);
      else if (pos < lines.length && lines[pos].indent === mapIndent && lines[pos].text.startsWith("- ")) {
        out[key] = parseBlock(mapIndent); // sequences may sit at the key's indentation
      } else out[key] = null;
    }
    if (pos < lines.length && lines[pos].indent > mapIndent) {
      throw new Error(`line ${lines[pos].n}: unexpected indentation`);
    }
    return out;
  };
  const doc = parseBlock(0);
  if (pos < lines.length) throw new Error(`line ${lines[pos].n}: unexpected content`);
  return doc;
}

function isMapEntry(s: string): boolean {
  return /^("[^"]*"|'[^']*'|[^:'"\s][^:]*?)\s*:(\s|$)/.test(s);
}

function stripComment(line: string): string {
  let q: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) {
      if (c === q) q = undefined;
    } else if (c === '"' || c === "'") q = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i).trimEnd();
  }
  return line;
}

function scalar(s: string, n: number): unknown {
  const v = s.trim();
  if (v.startsWith('"')) {
    if (!v.endsWith('"') || v.length < 2) throw new Error(`line ${n}: unterminated string`);
    return JSON.parse(v);
  }
  if (v.startsWith("'")) {
    if (!v.endsWith("'") || v.length < 2) throw new Error(`line ${n}: unterminated string`);
    return v.slice(1, -1).replace(/''/g, "'");
  }
  if (v === "[]") return [];
  if (v === "{}") return {};
  if (/^[&*!|>[{]/.test(v)) {
    throw new Error(`line ${n}: YAML feature not supported in a kubeconfig here: ${v.slice(0, 20)}`);
  }
  if (v === "true" || v === "false") return v === "true";
  if (v === "null" || v === "~") return null;
  if (/^-?\d+$/.test(v)) return Number(v);
  return v;
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
