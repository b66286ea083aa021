/**
 * The elector's public types (fencing token, leader context, stop reasons,
 * state, counters, the error handed to the leader's work) and the internal
 * shapes of one attempt.
 *
 * @module
 */

import type { Observation } from "./election_rules.ts";
import { LeaseholdError } from "./errors.ts";
import type { LeaderElectionRecord, Lease } from "./lease.ts";

/**
 * Proof of leadership handed to the leader's work. `leaseTransitions` grows by one
 * at every change of holder, so a store that remembers the highest value it has
 * seen can refuse writes from an older leader.
 */
export interface FencingToken {
  /** This replica's identity. */
  holderIdentity: string;
  /** `spec.leaseTransitions` when leadership was acquired. */
  leaseTransitions: number;
  /** `metadata.resourceVersion` of the write that acquired the Lease. */
  resourceVersion: string;
  /** `spec.acquireTime` written at acquisition (MicroTime). */
  acquireTime: string;
  /** `"<leaseTransitions>/<holderIdentity>"`, handy as a single string. */
  value: string;
}

/** What the leader's work receives. */
export interface LeaderContext {
  /** Aborts the moment this replica stops leading; stop the work then. */
  signal: AbortSignal;
  /** The fencing token of this term. */
  fencingToken: FencingToken;
}

/** Why leadership ended, given to `onStoppedLeading` and in the `stopped` event. */
export type StopReason =
  | "shutdown"
  | "renew-deadline"
  | "lease-taken"
  | "lease-deleted"
  | "lease-malformed"
  | "preferred-holder";

/** A snapshot of the elector's state, e.g. for a `/leader` endpoint. */
export interface ElectorState {
  /** Lease namespace/name. */
  lease: string;
  /** This replica's identity. */
  identity: string;
  /** Whether this replica leads now. */
  isLeader: boolean;
  /** The holder last observed (`""` when free, `undefined` before the first read). */
  leader: string | undefined;
  /** `leaseTransitions` last observed. */
  leaseTransitions: number | undefined;
  /** Wall time this replica started leading (ISO), if it leads. */
  leadingSince: string | undefined;
  /** The current fencing token, if leading. */
  fencingToken: FencingToken | undefined;
  /**
   * True from the end of a term until that term's work settled: the work was
   * told to stop but still runs. No new term starts meanwhile.
   */
  workSettling: boolean;
}

/** Counters kept by the elector, read by the metrics endpoint. */
export interface ElectorStats {
  /** Renewals that needed a GET before the PUT (client-go's slow path). */
  slowpathTotal: number;
  /** Terms started by this replica. */
  startedTotal: number;
  /** Changes of holder observed. */
  leaderChangesTotal: number;
  /** Failed requests by {@linkcode errorKind}. */
  errorsByKind: Record<string, number>;
  /** Successful renewals and the sum of their latencies (ms). */
  renewCount: number;
  /** Sum of renewal latencies in ms. */
  renewLatencySumMs: number;
  /** Requests sent, by verb. */
  requestsByVerb: Record<string, number>;
}

/**
 * Leadership ended; the reason of the signal handed to the leader's work.
 *
 * @example Usage
 * ```ts
 * import { LeadershipLostError } from "@leasehold/leasehold";
 * const e = new LeadershipLostError("shutdown", "stopping");
 * console.log(e.reason); // "shutdown"
 * ```
 */
export class LeadershipLostError extends LeaseholdError {
  /** Why leadership ended. */
  readonly reason: StopReason;
  /**
   * Milliseconds, counted from the moment the work's signal aborted, left before
   * another replica could take the Lease: leaseDuration after the start of this
   * replica's last successful write, minus the time since, on the monotonic
   * clock (0 when already past). A supervisor must have the work stopped within
   * it (for a shutdown whose release is still pending the same bound holds: the
   * release is written only after the work settled). The elector waits this long
   * for the work before it gives up on releasing, and never starts another term
   * while the work still runs.
   */
  readonly graceMs: number;
  /** Creates the error; `graceMs` defaults to 0 (no time left). */
  constructor(reason: StopReason, message: string, graceMs = 0) {
    super(message);
    this.name = "LeadershipLostError";
    this.reason = reason;
    this.graceMs = graceMs;
  }
}

/** The outcome of one acquire-or-renew attempt. */
export type Attempt =
  | Acquired
  | { kind: "held" | "lost-taken" | "lost-deleted" | "lost-malformed" | "lost-preferred" };

/** A successful write that makes (or keeps) this replica the holder. */
export interface Acquired {
  kind: "acquired";
  /** The write's response. */
  lease: Lease;
  /** The record written, as the response has it. */
  record: LeaderElectionRecord;
}

/** Set `abandoned` when the caller stopped waiting: a late answer then changes nothing. */
export interface AttemptCtx {
  abandoned: boolean;
}

export const HELD: Attempt = { kind: "held" };

export interface Observed extends Observation {
  lease: Lease;
  /** Key of the record for change detection. */
  key: string;
  /** For an absence: the version seen before it (see ElectorCore.observeAbsent). */
  beforeAbsence?: Observed;
}
