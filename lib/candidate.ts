/**
 * A `coordination.k8s.io/v1beta1` LeaseCandidate kept alive for Coordinated
 * Leader Election (KEP-4355): the API server's election controller picks the
 * holder of a Lease among its candidates (e.g. the oldest emulation version
 * during an upgrade) and asks them to prove they are alive by setting
 * `spec.pingTime`; a candidate answers by writing `spec.renewTime`.
 *
 * The candidate is named after the replica's identity, which is also what the
 * controller writes into the Lease's `holderIdentity`.
 *
 * RBAC: `get`, `create`, `update`, `watch`, `delete` on `leasecandidates` in
 * `coordination.k8s.io`, in the Lease's namespace.
 *
 * @module
 */

import { ConfigError, isAlreadyExists, isConflict, isNotFound } from "./errors.ts";
import type { KubeClient } from "./kube_client.ts";
import { type Clock, systemClock } from "./clock.ts";
import { type Logger, silentLogger } from "./log.ts";
import { formatMicroTime, parseMicroTime } from "./lease.ts";

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

/** Options of {@linkcode LeaseCandidateKeeper}. Durations are in milliseconds. */
export interface LeaseCandidateOptions {
  /** Client for the API server. */
  client: KubeClient;
  /** Namespace of the Lease. */
  namespace: string;
  /** Name of the Lease. */
  leaseName: string;
  /** This replica's identity: the candidate's name. */
  identity: string;
  /** This binary's version (semver without `v`). */
  binaryVersion: string;
  /** The version this binary behaves as. @default binaryVersion */
  emulationVersion?: string;
  /** How the controller picks the holder. @default "OldestEmulationVersion" */
  strategy?: string;
  /** Renew the candidate at least this often even without pings. @default 300000 */
  renewIntervalMs?: number;
  /** Check for a ping this often when the candidate cannot be watched. @default 2000 */
  pollMs?: number;
  /** Structured logger. @default silentLogger */
  logger?: Logger;
  /** Time source. @default systemClock */
  clock?: Clock;
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;

/**
 * Keeps this replica's LeaseCandidate: creates it, answers the controller's
 * pings within one poll interval (at once while its watch works), renews it
 * periodically, and deletes it when stopped.
 *
 * @example Usage
 * ```ts
 * import { KubeClient, LeaseCandidateKeeper } from "@leasehold/leasehold";
 * const fetch = () => Promise.resolve(Response.json({ metadata: { resourceVersion: "1" } }));
 * const client = new KubeClient({ server: "https://127.0.0.1:6443", fetch });
 * const keeper = new LeaseCandidateKeeper({
 *   client,
 *   namespace: "default",
 *   leaseName: "app",
 *   identity: "pod-a",
 *   binaryVersion: "1.4.0",
 * });
 * console.log(keeper.body().spec?.strategy); // "OldestEmulationVersion"
 * ```
 */
export class LeaseCandidateKeeper {
  readonly #o: Required<Omit<LeaseCandidateOptions, "client" | "logger" | "clock">>;
  readonly #client: KubeClient;
  readonly #log: Logger;
  readonly #clock: Clock;
  #renewedAt = -Infinity;
  #answered = 0;

  /** Creates a keeper and checks its options; no request is made. */
  constructor(options: LeaseCandidateOptions) {
    const binaryVersion = options.binaryVersion;
    const emulationVersion = options.emulationVersion ?? binaryVersion;
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
    this.#client = options.client;
    this.#log = options.logger ?? silentLogger;
    this.#clock = options.clock ?? systemClock;
    this.#o = {
      namespace: options.namespace,
      leaseName: options.leaseName,
      identity: options.identity,
      binaryVersion,
      emulationVersion,
      strategy: options.strategy ?? OLDEST_EMULATION_VERSION,
      renewIntervalMs: options.renewIntervalMs ?? 300000,
      pollMs: options.pollMs ?? 2000,
    };
  }

  /** Pings answered so far. */
  get pingsAnswered(): number {
    return this.#answered;
  }

  /** The object this keeper writes (without `resourceVersion`). */
  body(): LeaseCandidate & { apiVersion: string; kind: string } {
    const { namespace, identity, leaseName, binaryVersion, emulationVersion, strategy } = this.#o;
    return {
      apiVersion: "coordination.k8s.io/v1beta1",
      kind: "LeaseCandidate",
      metadata: { name: identity, namespace },
      spec: {
        leaseName,
        binaryVersion,
        emulationVersion,
        strategy,
        renewTime: formatMicroTime(this.#clock.wallTime()),
      },
    };
  }

  #path(withName: boolean): string {
    const base = `/apis/coordination.k8s.io/v1beta1/namespaces/${
      encodeURIComponent(this.#o.namespace)
    }/leasecandidates`;
    return withName ? `${base}/${encodeURIComponent(this.#o.identity)}` : base;
  }

  #intent(verb: string) {
    return {
      verb,
      resource: "leasecandidates.coordination.k8s.io",
      namespace: this.#o.namespace,
      name: this.#o.identity,
    };
  }

  /** Reads the candidate; `undefined` when it does not exist. */
  async get(signal?: AbortSignal): Promise<LeaseCandidate | undefined> {
    try {
      return await this.#client.request("GET", this.#path(true), { signal, intent: this.#intent("get") }) as
        | LeaseCandidate
        | undefined;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * Writes `renewTime` now: creates the candidate when missing, otherwise
   * updates it guarded by its `resourceVersion` (re-read on a conflict).
   */
  async renew(signal?: AbortSignal): Promise<LeaseCandidate> {
    for (let attempt = 0;; attempt++) {
      const current = await this.get(signal);
      const body = this.body();
      try {
        let out: LeaseCandidate;
        if (!current) {
          out = await this.#client.request("POST", this.#path(false), {
            body,
            signal,
            intent: this.#intent("create"),
          }) as LeaseCandidate;
        } else {
          body.metadata = { ...current.metadata, name: this.#o.identity, namespace: this.#o.namespace };
          if (current.spec?.pingTime) body.spec!.pingTime = current.spec.pingTime;
          out = await this.#client.request("PUT", this.#path(true), {
            body,
            signal,
            intent: this.#intent("update"),
          }) as LeaseCandidate;
        }
        this.#renewedAt = this.#clock.now();
        return out;
      } catch (e) {
        if (attempt < 3 && (isConflict(e) || isAlreadyExists(e))) continue;
        throw e;
      }
    }
  }

  /** True when the controller pinged after the candidate's last renewal. */
  static pinged(c: LeaseCandidate | undefined): boolean {
    const ping = parseMicroTime(c?.spec?.pingTime);
    if (!ping) return false;
    const renew = parseMicroTime(c?.spec?.renewTime);
    return !renew || ping.getTime() > renew.getTime();
  }

  /**
   * Keeps the candidate until `signal` aborts, then deletes it (best effort).
   * Errors are logged and retried; they never end the loop.
   */
  async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        const c = await this.get(signal);
        const due = this.#clock.now() - this.#renewedAt >= this.#o.renewIntervalMs;
        if (!c || due || LeaseCandidateKeeper.pinged(c)) {
          const pinged = LeaseCandidateKeeper.pinged(c);
          await this.renew(signal);
          if (pinged) {
            this.#answered++;
            this.#log.debug("answered the election controller's ping", { candidate: this.#o.identity });
          }
        }
        failures = 0;
        await this.#clock.sleep(this.#o.pollMs, signal);
      } catch (e) {
        if (signal.aborted) break;
        failures++;
        const msg = e instanceof Error ? e.message : String(e);
        (failures === 1 ? this.#log.warn : this.#log.debug).call(this.#log, "could not keep the LeaseCandidate", {
          error: msg,
        });
        await this.#clock.sleep(Math.min(30000, this.#o.pollMs * 2 ** Math.min(failures, 4)), signal).catch(() => {});
      }
    }
    await this.#client.request("DELETE", this.#path(true), { intent: this.#intent("delete"), timeoutMs: 2000 })
      .catch(() => {});
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
