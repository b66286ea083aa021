/**
 * The `coordination.k8s.io/v1` Lease object, the election record it carries,
 * Kubernetes MicroTime, and validation of what the server sends.
 *
 * @module
 */

/** `metadata` of a Lease; unknown fields are kept as they came. */
export interface ObjectMeta {
  /** Object name. */
  name?: string;
  /** Namespace. */
  namespace?: string;
  /** Opaque version for optimistic concurrency. */
  resourceVersion?: string;
  /** Server-assigned id. */
  uid?: string;
  /** Anything else the server or another writer put there. */
  [key: string]: unknown;
}

/** `spec` of a Lease as it is on the wire; every field may be absent or null. */
export interface LeaseSpec {
  /** Who holds the lease; `""` means free. */
  holderIdentity?: string | null;
  /** How long a holder's claim lasts after its last observed change. */
  leaseDurationSeconds?: number | null;
  /** MicroTime of the current holder's acquisition. */
  acquireTime?: string | null;
  /** MicroTime of the last renewal. */
  renewTime?: string | null;
  /** How many times the lease changed hands. */
  leaseTransitions?: number | null;
  /** Coordinated leader election strategy (kept, never written by us). */
  strategy?: string | null;
  /** Coordinated leader election preferred holder (kept, never written by us). */
  preferredHolder?: string | null;
  /** Unknown fields are preserved on update. */
  [key: string]: unknown;
}

/** A `coordination.k8s.io/v1` Lease. */
export interface Lease {
  /** Always `coordination.k8s.io/v1`. */
  apiVersion?: string;
  /** Always `Lease`. */
  kind?: string;
  /** Object metadata. */
  metadata: ObjectMeta;
  /** The election record; may be missing on a broken object. */
  spec?: LeaseSpec | null;
  /** Anything else is preserved. */
  [key: string]: unknown;
}

/** The election record in client-go's terms, read from a valid Lease spec. */
export interface LeaderElectionRecord {
  /** Holder identity; `""` when free. */
  holderIdentity: string;
  /** Seconds the claim lasts. */
  leaseDurationSeconds: number;
  /** MicroTime string, or `""` when absent. */
  acquireTime: string;
  /** MicroTime string, or `""` when absent. */
  renewTime: string;
  /** Number of hand-overs. */
  leaseTransitions: number;
}

/**
 * Formats a date as Kubernetes MicroTime: UTC with exactly six fractional digits,
 * e.g. `2026-07-24T13:13:51.123000Z`. `Date.toISOString()` has three, which the
 * API server rejects.
 *
 * @example Usage
 * ```ts
 * import { formatMicroTime } from "@leasehold/leasehold";
 * console.log(formatMicroTime(new Date("2026-07-24T13:13:51.123Z")));
 * // 2026-07-24T13:13:51.123000Z
 * ```
 */
export function formatMicroTime(d: Date): string {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return iso.slice(0, 23) + "000Z";
}

const MICRO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Parses a MicroTime (or any RFC 3339 time); `undefined` when it is not one.
 *
 * @example Usage
 * ```ts
 * import { parseMicroTime } from "@leasehold/leasehold";
 * console.log(parseMicroTime("2026-07-24T13:13:51.123456Z")?.toISOString());
 * // 2026-07-24T13:13:51.123Z
 * console.log(parseMicroTime("yesterday")); // undefined
 * ```
 */
export function parseMicroTime(s: unknown): Date | undefined {
  if (typeof s !== "string" || !MICRO_RE.test(s)) return undefined;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** The outcome of reading a Lease's spec. */
export type RecordResult =
  | { ok: true; record: LeaderElectionRecord }
  | { ok: false; problems: string[]; holderIdentity?: string };

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);

/**
 * Reads and validates the election record of a Lease. A Lease with a missing
 * spec, a non-positive or non-integer `leaseDurationSeconds`, a holder that is
 * not a string, a garbled time or a negative transition count is reported as
 * broken (`ok: false` with the problems) and must not be trusted. A missing or
 * null `holderIdentity` on an otherwise sound spec reads as `""` (free), as in client-go.
 *
 * @example Usage
 * ```ts
 * import { readRecord } from "@leasehold/leasehold";
 * const r = readRecord({ metadata: {}, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } });
 * console.log(r.ok); // true
 * ```
 */
export function readRecord(lease: Lease): RecordResult {
  const spec = lease?.spec;
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    return { ok: false, problems: ["spec is missing"] };
  }
  const problems: string[] = [];
  const h = spec.holderIdentity;
  if (h !== undefined && h !== null && typeof h !== "string") {
    problems.push(`holderIdentity is ${JSON.stringify(h)}, not a string`);
  }
  const holderIdentity = typeof h === "string" ? h : "";
  const d = spec.leaseDurationSeconds;
  if (!isInt(d) || d <= 0) {
    problems.push(`leaseDurationSeconds is ${JSON.stringify(d)}, not a positive integer`);
  }
  for (const key of ["acquireTime", "renewTime"] as const) {
    const v = spec[key];
    if (v !== undefined && v !== null && parseMicroTime(v) === undefined) {
      problems.push(`${key} is ${JSON.stringify(v)}, not a time`);
    }
  }
  const t = spec.leaseTransitions;
  if (t !== undefined && t !== null && (!isInt(t) || t < 0)) {
    problems.push(`leaseTransitions is ${JSON.stringify(t)}, not a non-negative integer`);
  }
  if (problems.length) return { ok: false, problems, holderIdentity: holderIdentity || undefined };
  return {
    ok: true,
    record: {
      holderIdentity,
      leaseDurationSeconds: d as number,
      acquireTime: typeof spec.acquireTime === "string" ? spec.acquireTime : "",
      renewTime: typeof spec.renewTime === "string" ? spec.renewTime : "",
      leaseTransitions: isInt(t) ? t : 0,
    },
  };
}

/**
 * Writes a record into a Lease spec, keeping fields leasehold does not own
 * (anything unknown; `strategy` and `preferredHolder` are kept too).
 *
 * @example Usage
 * ```ts
 * import { writeRecord } from "@leasehold/leasehold";
 * const spec = writeRecord({ extra: 1 }, {
 *   holderIdentity: "a", leaseDurationSeconds: 15, leaseTransitions: 0,
 *   acquireTime: "2026-01-01T00:00:00.000000Z", renewTime: "2026-01-01T00:00:00.000000Z",
 * });
 * console.log(spec.extra, spec.holderIdentity); // 1 "a"
 * ```
 */
export function writeRecord(spec: LeaseSpec | null | undefined, r: LeaderElectionRecord): LeaseSpec {
  const base = spec && typeof spec === "object" && !Array.isArray(spec) ? spec : {};
  return {
    ...base,
    holderIdentity: r.holderIdentity,
    leaseDurationSeconds: r.leaseDurationSeconds,
    acquireTime: r.acquireTime || null,
    renewTime: r.renewTime || null,
    leaseTransitions: r.leaseTransitions,
  };
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Why `name` is not a valid Lease name (a DNS-1123 subdomain), or `undefined` if it is.
 *
 * @example Usage
 * ```ts
 * import { invalidLeaseName } from "@leasehold/leasehold";
 * console.log(invalidLeaseName("my-lease")); // undefined
 * console.log(typeof invalidLeaseName("My_Lease")); // "string"
 * ```
 */
export function invalidLeaseName(name: string): string | undefined {
  if (!name) return "must not be empty";
  if (name.length > 253) return "must be at most 253 characters";
  if (!DNS_SUBDOMAIN.test(name)) {
    return "must consist of lower case letters, digits, '-' and '.', and start and end with a letter or digit";
  }
  return undefined;
}

/**
 * Why `ns` is not a valid namespace (a DNS-1123 label), or `undefined` if it is.
 *
 * @example Usage
 * ```ts
 * import { invalidNamespace } from "@leasehold/leasehold";
 * console.log(invalidNamespace("default")); // undefined
 * ```
 */
export function invalidNamespace(ns: string): string | undefined {
  if (!ns) return "must not be empty";
  if (ns.length > 63) return "must be at most 63 characters";
  if (!DNS_LABEL.test(ns)) {
    return "must consist of lower case letters, digits and '-', and start and end with a letter or digit";
  }
  return undefined;
}
