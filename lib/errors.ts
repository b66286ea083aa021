/**
 * Typed errors. Every message says what failed and, where it can, what to fix.
 *
 * @module
 */

/**
 * Base class of every error leasehold throws on purpose.
 *
 * @example Usage
 * ```ts
 * import { LeaseholdError } from "@leasehold/leasehold";
 * try {
 *   throw new LeaseholdError("example");
 * } catch (e) {
 *   if (e instanceof LeaseholdError) console.log(e.message);
 * }
 * ```
 */
export class LeaseholdError extends Error {
  /** Creates the error; `cause` keeps the underlying error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LeaseholdError";
  }
}

/**
 * Bad options or configuration: a missing token, an unreadable CA, invalid timings.
 * The message names the setting and how to fix it.
 *
 * @example Usage
 * ```ts
 * import { ConfigError } from "@leasehold/leasehold";
 * const e = new ConfigError("LEASE_NAME is required: set --lease-name or LEASE_NAME");
 * console.log(e.name); // "ConfigError"
 * ```
 */
export class ConfigError extends LeaseholdError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/**
 * A request to the API server got no complete answer within its timeout.
 *
 * @example Usage
 * ```ts
 * import { TimeoutError } from "@leasehold/leasehold";
 * const e = new TimeoutError("GET /apis/... timed out after 5000 ms");
 * console.log(e.name); // "TimeoutError"
 * ```
 */
export class TimeoutError extends LeaseholdError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TimeoutError";
  }
}

/**
 * The request never got an HTTP answer: refused or reset connection, TLS failure, DNS.
 *
 * @example Usage
 * ```ts
 * import { NetworkError } from "@leasehold/leasehold";
 * const e = new NetworkError("GET https://10.0.0.1/ failed: connection refused");
 * console.log(e.name); // "NetworkError"
 * ```
 */
export class NetworkError extends LeaseholdError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NetworkError";
  }
}

/** Kubernetes `Status.reason` values leasehold distinguishes, plus reasons derived from the HTTP code. */
export type StatusReason =
  | "BadRequest"
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "AlreadyExists"
  | "Conflict"
  | "Gone"
  | "Invalid"
  | "TooManyRequests"
  | "InternalError"
  | "ServiceUnavailable"
  | "Timeout"
  | "Unknown";

/** Fields of {@linkcode KubeApiError}. */
export interface KubeApiErrorInit {
  /** HTTP status code. */
  code: number;
  /** Kubernetes `Status.reason`, or one derived from the code. */
  reason: StatusReason;
  /** HTTP method of the request. */
  method: string;
  /** URL of the request. */
  url: string;
  /** Seconds the server asked us to wait (`Retry-After` or `details.retryAfterSeconds`). */
  retryAfterSeconds?: number;
  /** The server's own message, if any. */
  serverMessage?: string;
}

/**
 * The API server answered with an error status. `message` explains the fix:
 * a 403 names the RBAC verb, resource and namespace the Role must grant.
 *
 * @example Usage
 * ```ts
 * import { KubeApiError, isConflict } from "@leasehold/leasehold";
 * const e = new KubeApiError("lost a race", {
 *   code: 409, reason: "Conflict", method: "PUT", url: "https://k8s/apis/...",
 * });
 * console.log(isConflict(e)); // true
 * ```
 */
export class KubeApiError extends LeaseholdError {
  /** HTTP status code. */
  readonly code: number;
  /** Kubernetes `Status.reason`, or one derived from the code. */
  readonly reason: StatusReason;
  /** HTTP method of the request. */
  readonly method: string;
  /** URL of the request. */
  readonly url: string;
  /** Seconds the server asked us to wait, if it said. */
  readonly retryAfterSeconds?: number;
  /** The server's own message, if any. */
  readonly serverMessage?: string;
  /** Creates the error. */
  constructor(message: string, init: KubeApiErrorInit) {
    super(message);
    this.name = "KubeApiError";
    this.code = init.code;
    this.reason = init.reason;
    this.method = init.method;
    this.url = init.url;
    this.retryAfterSeconds = init.retryAfterSeconds;
    this.serverMessage = init.serverMessage;
  }
}

function hasReason(e: unknown, reason: StatusReason): boolean {
  return typeof e === "object" && e !== null &&
    (e as { name?: unknown }).name === "KubeApiError" &&
    (e as { reason?: unknown }).reason === reason;
}

/**
 * True for a 409 Conflict: someone else wrote the Lease first. Re-read, never overwrite.
 *
 * @example Usage
 * ```ts
 * import { isConflict } from "@leasehold/leasehold";
 * console.log(isConflict(new Error("x"))); // false
 * ```
 */
export function isConflict(e: unknown): boolean {
  return hasReason(e, "Conflict");
}

/**
 * True for a 404 NotFound.
 *
 * @example Usage
 * ```ts
 * import { isNotFound } from "@leasehold/leasehold";
 * console.log(isNotFound(undefined)); // false
 * ```
 */
export function isNotFound(e: unknown): boolean {
  return hasReason(e, "NotFound");
}

/**
 * True for a 409 AlreadyExists (a create lost the race).
 *
 * @example Usage
 * ```ts
 * import { isAlreadyExists } from "@leasehold/leasehold";
 * console.log(isAlreadyExists(null)); // false
 * ```
 */
export function isAlreadyExists(e: unknown): boolean {
  return hasReason(e, "AlreadyExists");
}

/**
 * A short, stable kind for an error, used in logs and metrics labels:
 * `conflict`, `not_found`, `forbidden`, `unauthorized`, `throttled`, `server`,
 * `timeout`, `network`, `invalid_response`, `config` or `other`.
 *
 * @example Usage
 * ```ts
 * import { errorKind, TimeoutError } from "@leasehold/leasehold";
 * console.log(errorKind(new TimeoutError("slow"))); // "timeout"
 * ```
 */
export function errorKind(e: unknown): string {
  const name = (e as { name?: unknown } | null)?.name;
  if (name === "KubeApiError") {
    const r = (e as KubeApiError).reason;
    switch (r) {
      case "Conflict":
      case "AlreadyExists":
        return "conflict";
      case "NotFound":
        return "not_found";
      case "Forbidden":
        return "forbidden";
      case "Unauthorized":
        return "unauthorized";
      case "TooManyRequests":
        return "throttled";
      default:
        return (e as KubeApiError).code >= 500 ? "server" : "other";
    }
  }
  if (name === "TimeoutError") return "timeout";
  if (name === "NetworkError") return "network";
  if (name === "InvalidResponseError") return "invalid_response";
  if (name === "ConfigError") return "config";
  return "other";
}

/**
 * The server answered, but not with what the Kubernetes API promises: HTML from a
 * proxy, truncated JSON, an oversized body, or a Lease with the wrong shape.
 *
 * @example Usage
 * ```ts
 * import { InvalidResponseError } from "@leasehold/leasehold";
 * const e = new InvalidResponseError("GET ... returned text/html, not JSON");
 * console.log(e.name); // "InvalidResponseError"
 * ```
 */
export class InvalidResponseError extends LeaseholdError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InvalidResponseError";
  }
}
