/**
 * Cluster settings from a kubeconfig (one file or a `KUBECONFIG` list, merged
 * as kubectl merges them).
 *
 * @module
 */

import { ConfigError } from "./errors.ts";
import { invalidToken, type TokenSource } from "./kube_client.ts";
import { type ClusterConfig, FileTokenSource, readFile, readPem, staticToken } from "./cluster_config.ts";
import { parseKubeconfigText } from "./kubeconfig_parse.ts";

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
