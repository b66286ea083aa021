/**
 * The `coordination.k8s.io/v1beta1` LeaseCandidate object: its fields, where
 * it lives on the API server, the version rules of its spec, and whether the
 * election controller pinged it.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";
import type { RequestIntent } from "./kube_request.ts";
import { parseMicroTime } from "./lease.ts";

/** The strategy built into the API server's election controller. */
export const OLDEST_EMULATION_VERSION = "OldestEmulationVersion";

/** `spec` of a LeaseCandidate. */
export interface LeaseCandidateSpec {
  /** The Lease this candidate contends for. Immutable. */
  leaseName: string;
  /** Semver without a leading `v`, e.g. `1.4.0`. */
  binaryVersion: string;
  /** Semver, at most `binaryVersion`; required by `OldestEmulationVersion`. */
  emulationVersion?: string;
  /** Election strategy, e.g. `OldestEmulationVersion`. */
  strategy: string;
  /** Set by the controller when it wants candidates to prove they are alive. */
  pingTime?: string;
  /** Set by the candidate. */
  renewTime?: string;
}

/** A LeaseCandidate object, as far as leasehold reads it. */
export interface LeaseCandidate {
  /** Standard object metadata. */
  metadata: { name?: string; namespace?: string; resourceVersion?: string; uid?: string };
  /** The candidate's spec. */
  spec?: LeaseCandidateSpec;
}

/**
 * The path of the LeaseCandidates of `namespace`, or of the one named `name`.
 *
 * @example Usage
 * ```ts
 * import { leaseCandidatePath } from "./lease_candidate.ts";
 * console.log(leaseCandidatePath("default", "pod-a"));
 * // "/apis/coordination.k8s.io/v1beta1/namespaces/default/leasecandidates/pod-a"
 * ```
 */
export function leaseCandidatePath(namespace: string, name?: string): string {
  const base = `/apis/coordination.k8s.io/v1beta1/namespaces/${encodeURIComponent(namespace)}/leasecandidates`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

/**
 * What a request on the LeaseCandidate `name` does, for its error messages
 * (a 403 names the verb, resource and namespace to grant).
 *
 * @example Usage
 * ```ts
 * import { leaseCandidateIntent } from "./lease_candidate.ts";
 * console.log(leaseCandidateIntent("watch", "default", "pod-a").resource); // "leasecandidates.coordination.k8s.io"
 * ```
 */
export function leaseCandidateIntent(verb: string, namespace: string, name: string): RequestIntent {
  return { verb, resource: "leasecandidates.coordination.k8s.io", namespace, name };
}

/**
 * True when the controller pinged after the candidate's last renewal.
 *
 * @example Usage
 * ```ts
 * import { candidatePinged } from "./lease_candidate.ts";
 * const spec = { leaseName: "app", binaryVersion: "1.4.0", strategy: "OldestEmulationVersion" };
 * console.log(candidatePinged({ metadata: {}, spec: { ...spec, pingTime: "2026-01-01T00:00:01.000000Z" } })); // true
 * ```
 */
export function candidatePinged(c: LeaseCandidate | undefined): boolean {
  const ping = parseMicroTime(c?.spec?.pingTime);
  if (!ping) return false;
  const renew = parseMicroTime(c?.spec?.renewTime);
  return !renew || ping.getTime() > renew.getTime();
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;

/**
 * Checks a candidate's versions: both like `1.4.0`, the emulation version at
 * most the binary's.
 *
 * @throws {ConfigError} naming the version at fault and the flag that sets it
 *
 * @example Usage
 * ```ts
 * import { checkCandidateVersions } from "./lease_candidate.ts";
 * checkCandidateVersions("1.4.0", "1.3.2"); // fine
 * try {
 *   checkCandidateVersions("v1.4.0", "1.4.0");
 * } catch (e) {
 *   console.log((e as Error).message.includes("binaryVersion")); // true
 * }
 * ```
 */
export function checkCandidateVersions(binaryVersion: string, emulationVersion: string): void {
  for (const [name, v] of [["binaryVersion", binaryVersion], ["emulationVersion", emulationVersion]]) {
    if (!SEMVER.test(v)) {
      throw new ConfigError(
        `${name} ${
          JSON.stringify(v)
        } is not a version like 1.4.0 (semver, no leading "v"): set --binary-version / --emulation-version`,
      );
    }
  }
  if (compareSemver(emulationVersion, binaryVersion) > 0) {
    throw new ConfigError(
      `emulationVersion ${emulationVersion} is newer than binaryVersion ${binaryVersion}: it must be at most the binary's version`,
    );
  }
}

/**
 * Compares two `MAJOR.MINOR.PATCH` versions: negative, zero or positive.
 *
 * @example Usage
 * ```ts
 * import { compareSemver } from "@leasehold/leasehold";
 * console.log(compareSemver("1.10.0", "1.9.3") > 0); // true
 * ```
 */
export function compareSemver(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
