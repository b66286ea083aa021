/**
 * How to reach and authenticate to the API server (the shape every source
 * produces), tokens from files or fixed, and the bounded file reads behind them.
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";
import { ConfigError } from "./errors.ts";
import { invalidToken, type TokenSource } from "./kube_client.ts";
import type { TlsOptions } from "./transport.ts";

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
export async function readFile(path: string, _encoding: "utf8", maxBytes = 1 << 20): Promise<string> {
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

/** Reads a PEM file; a clear error names `what` and the `fix`. */
export async function readPem(path: string, what: string, fix: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(e as Error).message}; ${fix}`, { cause: e });
  }
  if (!text.includes("-----BEGIN ")) throw new ConfigError(`${what} ${path} is not PEM (no "-----BEGIN" line); ${fix}`);
  return text;
}
