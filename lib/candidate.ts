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

import { isAlreadyExists, isConflict, isNotFound } from "./errors.ts";
import type { KubeClient } from "./kube_client.ts";
import { type Clock, systemClock } from "./clock.ts";
import { type Logger, silentLogger } from "./log.ts";
import { formatMicroTime } from "./lease.ts";
import { DEFAULT_WATCH_IDLE_TIMEOUT_MS } from "./lease_api.ts";
import { watchCandidatePings } from "./candidate_watch.ts";
import {
  candidatePinged,
  checkCandidateVersions,
  type LeaseCandidate,
  leaseCandidateIntent,
  leaseCandidatePath,
  OLDEST_EMULATION_VERSION,
} from "./lease_candidate.ts";

export {
  compareSemver,
  type LeaseCandidate,
  type LeaseCandidateSpec,
  OLDEST_EMULATION_VERSION,
} from "./lease_candidate.ts";

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
  /**
   * Watch the candidate (field selector `metadata.name`) to answer pings at
   * once; when the watch fails the keeper polls every `pollMs` and tries the
   * watch again later. @default true
   */
  watch?: boolean;
  /** A watch silent (not even a bookmark) for this long is reopened. @default 90000 */
  watchIdleTimeoutMs?: number;
  /** Structured logger. @default silentLogger */
  logger?: Logger;
  /** Time source. @default systemClock */
  clock?: Clock;
}

/**
 * Keeps this replica's LeaseCandidate: creates it, answers the controller's
 * pings within one poll interval (at once while its watch works), renews it
 * periodically, and deletes it when stopped.
 *
 * On shutdown stop the keeper first and await its `run()` (which deletes the
 * candidate) before stopping the elector: if the elector released the Lease
 * while the candidate still existed, the controller could name this stopping
 * replica again and then wait out a Lease that nobody renews.
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
  #watching = false;

  /** Creates a keeper and checks its options; no request is made. */
  constructor(options: LeaseCandidateOptions) {
    const binaryVersion = options.binaryVersion;
    const emulationVersion = options.emulationVersion ?? binaryVersion;
    checkCandidateVersions(binaryVersion, emulationVersion);
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
      watch: options.watch ?? true,
      watchIdleTimeoutMs: options.watchIdleTimeoutMs ?? DEFAULT_WATCH_IDLE_TIMEOUT_MS,
    };
  }

  /** Pings answered so far. */
  get pingsAnswered(): number {
    return this.#answered;
  }

  /** Whether the candidate's watch is open (pings are answered at once, without polling). */
  get watching(): boolean {
    return this.#watching;
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
    return leaseCandidatePath(this.#o.namespace, withName ? this.#o.identity : undefined);
  }

  #intent(verb: string) {
    return leaseCandidateIntent(verb, this.#o.namespace, this.#o.identity);
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
    return await this.#renewFrom(undefined, signal);
  }

  /**
   * {@linkcode renew} starting from what was just read (`read.current`, e.g. a
   * watch event; `undefined` when the read found nothing) instead of a fresh read.
   */
  async #renewFrom(read: { current?: LeaseCandidate } | undefined, signal?: AbortSignal): Promise<LeaseCandidate> {
    for (let attempt = 0;; attempt++) {
      const current = attempt === 0 && read ? read.current : await this.get(signal);
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
    return candidatePinged(c);
  }

  /**
   * Keeps the candidate until `signal` aborts, then deletes it (best effort).
   * While its watch works, a ping is answered as soon as the watch delivers it
   * and the candidate is otherwise only renewed every `renewIntervalMs`; when the
   * watch cannot be opened (e.g. no `watch` verb) it polls every `pollMs` and
   * tries the watch again with a growing pause (up to 5 minutes).
   * Errors are logged and retried; they never end the loop.
   */
  async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    let watchAt = -Infinity;
    let watchPause = this.#o.pollMs;
    while (!signal.aborted) {
      try {
        const c = await this.get(signal);
        const due = this.#clock.now() - this.#renewedAt >= this.#o.renewIntervalMs;
        const pinged = LeaseCandidateKeeper.pinged(c);
        const current = !c || due || pinged ? await this.#renewFrom({ current: c }, signal) : c;
        if (pinged) this.#pingAnswered();
        failures = 0;
        if (this.#o.watch && this.#clock.now() >= watchAt) {
          const outcome = await this.#watchPings(current, signal);
          if (outcome === "reopen") {
            watchPause = this.#o.pollMs;
            continue;
          }
          if (signal.aborted) break;
          watchAt = this.#clock.now() + watchPause;
          watchPause = Math.min(300000, watchPause * 2);
        }
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
    this.#watching = false;
    await this.#client.request("DELETE", this.#path(true), { intent: this.#intent("delete"), timeoutMs: 2000 })
      .catch(() => {});
  }

  #pingAnswered(): void {
    this.#answered++;
    this.#log.debug("answered the election controller's ping", { candidate: this.#o.identity });
  }

  #watchWarned = false;

  /** Watches the candidate to answer pings at once (see {@linkcode watchCandidatePings}). */
  #watchPings(from: LeaseCandidate, signal: AbortSignal): Promise<"reopen" | "failed"> {
    return watchCandidatePings(from, {
      client: this.#client,
      clock: this.#clock,
      namespace: this.#o.namespace,
      name: this.#o.identity,
      renewIntervalMs: this.#o.renewIntervalMs,
      pollMs: this.#o.pollMs,
      idleMs: this.#o.watchIdleTimeoutMs,
      renewedAt: () => this.#renewedAt,
      renew: (read, signal) => this.#renewFrom(read, signal),
      answered: () => this.#pingAnswered(),
      watching: (open) => this.#watching = open,
      cannotWatch: (error) => {
        if (this.#watchWarned) return;
        this.#watchWarned = true;
        this.#log.warn("cannot watch the LeaseCandidate; checking for pings every pollMs instead", {
          pollMs: this.#o.pollMs,
          error: error instanceof Error ? error.message : String(error),
        });
      },
    }, signal);
  }
}
