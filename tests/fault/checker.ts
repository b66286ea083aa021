/**
 * The fault suite's safety checker: a pure function from what a scenario
 * recorded to the problems it proves.
 *
 * A write is a new `resourceVersion`. Its time is the time the API server
 * accepted it, known only as an interval `[lo, hi]`:
 * - a write seen by a replica's proxy (or made by the harness itself) was
 *   accepted after its request was sent upstream (`lo`) and before its answer
 *   came back (`hi`);
 * - the checker's own watch can only see a version after it was accepted, so
 *   the first arrival of a resourceVersion is a `hi`; a version that arrives
 *   again (a re-list after an API server restart, a watch re-established from
 *   scratch) is not a new write and changes nothing;
 * - versions are ordered by resourceVersion, and so are their accept times:
 *   `lo` carries forward, `hi` carries backward.
 * Lateness of the recording process (an event loop busy with proxies) only
 * widens the intervals, so every problem reported is proven, never guessed.
 *
 * Work intervals come from the work itself (lines written by the leader's
 * child with the real clock, client-go's own start/stop events) and are closed
 * at the latest time a killed process could still have run.
 *
 * @module
 */

/** The fields of a Lease spec the checker reads (anything may be missing or malformed). */
export interface LeaseSpecView {
  /** `spec.holderIdentity`. */
  holderIdentity?: unknown;
  /** `spec.leaseDurationSeconds`. */
  leaseDurationSeconds?: unknown;
  /** `spec.renewTime`. */
  renewTime?: unknown;
  /** `spec.acquireTime`. */
  acquireTime?: unknown;
  /** `spec.leaseTransitions`. */
  leaseTransitions?: unknown;
}

/** One thing a scenario recorded. Times are real-clock epoch milliseconds. */
export type Observation =
  /**
   * An event of the checker's own watch of the Lease, `at` when it arrived.
   * `relist` marks the initial events of a watch started without a resourceVersion.
   */
  | {
    kind: "watch";
    type: "ADDED" | "MODIFIED" | "DELETED";
    rv: string;
    spec?: LeaseSpecView;
    at: number;
    relist?: boolean;
  }
  /**
   * A write whose request and answer were seen: by a replica's proxy (`by` is the
   * replica) or made by the harness (`by` starts with `hand`). The server accepted
   * it between `sentAt` and `answeredAt`. Only 2xx answers name a version.
   */
  | {
    kind: "write";
    by: string;
    verb: string;
    sentAt: number;
    answeredAt: number;
    status: number;
    rv?: string;
    spec?: LeaseSpecView;
    /** `rv` is the deletion's own version (a DELETE's answer carries the object's last one: do not report that). */
    deleted?: boolean;
    /**
     * False when the write changed nothing and the answer names the version it was
     * sent against (an update with the same content): then only `answeredAt` bounds it.
     */
    created?: boolean;
  }
  /** A line of the leader's work, written by the work itself (`pid` tells copies apart). */
  | { kind: "work"; name: string; event: "start" | "stop"; at: number; pid?: number }
  /** The work of `name` (only `pid`, if given) cannot have run after `at`: it was killed or its process is gone. */
  | { kind: "ended"; name: string; at: number; pid?: number; why?: string }
  /** The checker's watch failed in a way the scenario did not expect. */
  | { kind: "watch-error"; at: number; error: string }
  /** The Lease read once at the end: the watch must have seen this version. `rv` is "" when there is no Lease. */
  | { kind: "final"; at: number; rv: string };

/** One version of the Lease, with the bounds on its accept time. */
export interface Version {
  /** resourceVersion. */
  rv: string;
  /** Holder: `""` when free; `undefined` for a deletion. */
  holder: string | undefined;
  /** leaseDurationSeconds × 1000, or 0 when missing or invalid. */
  durationMs: number;
  /** The record as compared for "changed" (spec fields only). */
  key: string;
  /** `spec.renewTime` as written (for the reader; the checker never compares it with a clock). */
  renewTime?: string;
  /** Who wrote it, when a proxy or the harness saw the write. */
  by?: string;
  /** Earliest possible accept time. */
  lo: number;
  /** Latest possible accept time. */
  hi: number;
  /** When the checker's watch first saw it (undefined if never). */
  seenAt?: number;
  /** True when first seen by a re-list rather than a watch event. */
  relisted?: boolean;
}

/** A period during which a replica's work ran. */
export interface WorkInterval {
  /** Replica name. */
  name: string;
  /** Process of the work, when known. */
  pid?: number;
  /** Start (real clock). */
  start: number;
  /** End, or `Infinity` while it (may) still run. */
  end: number;
  /** How the end is known: the work's own line, or a kill/exit bound. */
  endedBy?: string;
}

/** Options of {@linkcode check}. */
export interface CheckOptions {
  /** Margin for timer granularity, in ms, granted before calling a takeover early. @default 10 */
  slackMs?: number;
  /** A scenario in which nobody should ever work sets this to false. @default true */
  expectWork?: boolean;
  /**
   * Returns a reason to accept an early change of holder that the scenario knows
   * about (e.g. client-go re-creates a deleted Lease at once), or undefined.
   */
  exempt?: (
    change: { writer: string; from: Version; to: Version; afterDelete: boolean; gapMs: number },
  ) => string | undefined;
  /**
   * Returns a reason to accept work by a replica that never held the Lease, or that outlived
   * its last write (a known flaw of a peer), or undefined.
   */
  exemptWork?: (iv: WorkInterval) => string | undefined;
}

/** What {@linkcode check} found. */
export interface Report {
  /** Every version of the Lease, ordered by resourceVersion. */
  versions: Version[];
  /** Work intervals, ordered by start. */
  intervals: WorkInterval[];
  /** Changes of holder to another non-empty holder. */
  transitions: number;
  /** Pairs of overlapping work intervals. */
  overlaps: number;
  /** Watch events that carried a version already seen (re-lists, re-deliveries). */
  redelivered: number;
  /** Proven problems; empty means the scenario is safe as far as recorded. */
  problems: string[];
  /** Early changes accepted through `exempt`, with the reason. */
  exempted: string[];
}

function rvOrder(a: string, b: string): number {
  // etcd revisions are decimal integers; the API calls them opaque, the checker
  // relies on the etcd-backed server it runs against.
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

function holderOf(spec: LeaseSpecView | undefined): string {
  const h = spec?.holderIdentity;
  if (h === undefined || h === null) return "";
  return typeof h === "string" ? h : JSON.stringify(h);
}

function durationOf(spec: LeaseSpecView | undefined): number {
  const d = spec?.leaseDurationSeconds;
  return typeof d === "number" && Number.isInteger(d) && d > 0 ? d * 1000 : 0;
}

function keyOf(spec: LeaseSpecView | undefined): string {
  return JSON.stringify([
    spec?.holderIdentity ?? null,
    spec?.leaseDurationSeconds ?? null,
    spec?.acquireTime ?? null,
    spec?.renewTime ?? null,
    spec?.leaseTransitions ?? null,
  ]);
}

const isHand = (name: string | undefined) => !!name && name.startsWith("hand");
const ms = (n: number) => (Number.isFinite(n) ? String(Math.round(n)) : "?");

/** Builds the versions of the Lease with their accept-time bounds. */
export function versionsOf(log: readonly Observation[]): { versions: Version[]; redelivered: number } {
  const byRv = new Map<string, Version>();
  let redelivered = 0;
  const get = (rv: string, spec: LeaseSpecView | undefined, deleted: boolean) => {
    let v = byRv.get(rv);
    if (!v) {
      v = {
        rv,
        holder: deleted ? undefined : holderOf(spec),
        durationMs: deleted ? 0 : durationOf(spec),
        key: deleted ? "<deleted>" : keyOf(spec),
        lo: -Infinity,
        hi: Infinity,
      };
      byRv.set(rv, v);
    }
    return v;
  };
  for (const o of log) {
    if (o.kind === "watch") {
      if (!/^\d+$/.test(o.rv)) continue;
      const known = byRv.get(o.rv);
      if (known?.seenAt !== undefined) {
        redelivered++;
        continue;
      }
      const v = get(o.rv, o.spec, o.type === "DELETED");
      if (o.type !== "DELETED") {
        // The watch's JSON is the canonical form of the record (a write may have been read from protobuf).
        v.holder = holderOf(o.spec);
        v.durationMs = durationOf(o.spec);
        v.key = keyOf(o.spec);
        v.renewTime = typeof o.spec?.renewTime === "string" ? o.spec.renewTime : undefined;
      }
      v.seenAt = o.at;
      v.relisted = !!o.relist;
      v.hi = Math.min(v.hi, o.at);
    } else if (o.kind === "write") {
      if (o.status < 200 || o.status > 299 || !o.rv || !/^\d+$/.test(o.rv)) continue;
      const v = get(o.rv, o.spec, !!o.deleted);
      v.hi = Math.min(v.hi, o.answeredAt);
      if (o.created === false) continue;
      v.by ??= o.by;
      v.lo = Math.max(v.lo, o.sentAt);
    }
  }
  const versions = [...byRv.values()].sort((a, b) => rvOrder(a.rv, b.rv));
  for (let i = 1; i < versions.length; i++) versions[i].lo = Math.max(versions[i].lo, versions[i - 1].lo);
  for (let i = versions.length - 2; i >= 0; i--) versions[i].hi = Math.min(versions[i].hi, versions[i + 1].hi);
  return { versions, redelivered };
}

/** Builds the work intervals: each start opens one, its own stop or an `ended` bound closes it. */
export function intervalsOf(log: readonly Observation[]): { intervals: WorkInterval[]; problems: string[] } {
  const problems: string[] = [];
  const events = log.filter((o) => o.kind === "work" || o.kind === "ended") as Extract<
    Observation,
    { kind: "work" | "ended" }
  >[];
  // Stable by time; at equal times a start comes before an end.
  events.sort((a, b) => a.at - b.at || (a.kind === "work" && a.event === "start" ? -1 : 1));
  const intervals: WorkInterval[] = [];
  const open: WorkInterval[] = [];
  for (const e of events) {
    const mine = open.filter((i) => i.name === e.name && (e.pid === undefined || i.pid === e.pid));
    if (e.kind === "work" && e.event === "start") {
      const iv: WorkInterval = { name: e.name, pid: e.pid, start: e.at, end: Infinity };
      intervals.push(iv);
      open.push(iv);
      continue;
    }
    if (e.kind === "work") {
      if (mine.length === 0) {
        problems.push(`work of ${e.name} logged a stop at ${ms(e.at)} without a start`);
        continue;
      }
      const iv = mine[0];
      iv.end = e.at;
      iv.endedBy = "stop";
      open.splice(open.indexOf(iv), 1);
      continue;
    }
    for (const iv of mine) {
      iv.end = e.at;
      iv.endedBy = e.why ?? "ended";
      open.splice(open.indexOf(iv), 1);
    }
  }
  intervals.sort((a, b) => a.start - b.start);
  return { intervals, problems };
}

/**
 * Checks a scenario's recording:
 * - the Lease changed hands only when free, when written by its holder or by
 *   hand, or once the holder's record had stayed unchanged for its
 *   leaseDuration (measured in accept times, through deletions);
 * - a replica never wrote a record naming another replica;
 * - no two work intervals overlap (two copies in one replica included);
 * - work ran only after its replica held the Lease, and ended within
 *   leaseDuration of that replica's last write;
 * - the watch saw something, saw the final version, and did not fail.
 *
 * @example Usage
 * ```ts
 * const report = check([]);
 * console.log(report.problems[0]); // the checker saw no version of the Lease
 * ```
 */
export function check(log: readonly Observation[], opts: CheckOptions = {}): Report {
  const slack = opts.slackMs ?? 10;
  const problems: string[] = [];
  const exempted: string[] = [];
  const { versions, redelivered } = versionsOf(log);
  const { intervals, problems: ivProblems } = intervalsOf(log);
  problems.push(...ivProblems);

  if (versions.length === 0) problems.push("the checker saw no version of the Lease");
  if ((opts.expectWork ?? true) && intervals.length === 0) problems.push("no replica ever worked");
  for (const o of log) {
    if (o.kind === "watch-error") problems.push(`the checker's Lease watch failed: ${o.error}`);
  }
  for (const v of versions) {
    if (v.lo > v.hi) {
      problems.push(`inconsistent record: rv ${v.rv} accepted after ${ms(v.lo)} but seen at ${ms(v.hi)}`);
    }
  }
  const finals = log.filter((o) => o.kind === "final") as Extract<Observation, { kind: "final" }>[];
  for (const f of finals) {
    if (f.rv && !versions.some((v) => v.rv === f.rv && v.seenAt !== undefined)) {
      problems.push(`the checker's Lease watch never delivered the final version (rv ${f.rv})`);
    }
  }

  // ---- changes of holder ----
  let transitions = 0;
  let lastHolder = "";
  for (let i = 0; i < versions.length; i++) {
    const b = versions[i];
    if (b.holder === undefined) continue;
    if (b.holder !== "") {
      if (lastHolder !== "" && b.holder !== lastHolder) transitions++;
      lastHolder = b.holder;
    }
    const writer = b.by ?? (b.holder !== "" ? b.holder : undefined);
    if (b.by && !isHand(b.by) && b.holder !== "" && b.holder !== b.by) {
      problems.push(`${b.by} wrote a record naming ${b.holder} as holder (rv ${b.rv})`);
    }
    // The last record before b that was not a deletion, and whether a deletion came between.
    let j = i - 1;
    let afterDelete = false;
    while (j >= 0 && versions[j].holder === undefined) {
      afterDelete = true;
      j--;
    }
    if (j < 0) continue;
    const q = versions[j];
    if (q.holder === "" || writer === undefined || writer === q.holder || isHand(writer)) continue;
    if (q.durationMs <= 0) continue; // a record without a valid duration claims nothing measurable
    // The claim runs from the first of the unchanged copies of q's record.
    let k = j;
    while (k > 0 && versions[k - 1].key === q.key) k--;
    const since = versions[k];
    const gap = b.hi - since.lo;
    if (gap < q.durationMs - slack) {
      const change = { writer, from: q, to: b, afterDelete, gapMs: gap };
      const reason = opts.exempt?.(change);
      const text = `lease taken by ${writer} from ${q.holder}${afterDelete ? " (re-created after a deletion)" : ""} ` +
        `at most ${ms(gap)} ms after ${q.holder}'s record last changed ` +
        `(rv ${since.rv} -> ${b.rv}, leaseDuration ${q.durationMs} ms)`;
      if (reason) exempted.push(`${text}: ${reason}`);
      else problems.push(text);
    }
  }

  // ---- work ----
  let overlaps = 0;
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const a = intervals[i], b = intervals[j];
      if (b.start < a.end) {
        overlaps++;
        const same = a.name === b.name ? " (two copies of one replica's work)" : "";
        problems.push(
          `overlap${same}: ${a.name} worked ${ms(a.start)}..${Number.isFinite(a.end) ? ms(a.end) : "end"} ` +
            `while ${b.name} started at ${ms(b.start)} (${ms(Math.min(a.end, b.end) - b.start)} ms)`,
        );
      }
    }
  }
  for (const iv of intervals) {
    const held = versions.filter((v) => v.holder === iv.name);
    if (versions.length > 0 && !held.some((v) => v.lo <= iv.start + slack)) {
      const text = `${iv.name} started work at ${ms(iv.start)} without having held the Lease`;
      const reason = opts.exemptWork?.(iv);
      if (reason) exempted.push(`${text}: ${reason}`);
      else problems.push(text);
      continue;
    }
    if (!Number.isFinite(iv.end)) continue;
    const last = held.filter((v) => v.lo <= iv.end).pop();
    if (!last || last.durationMs <= 0) continue;
    const bound = last.hi + last.durationMs;
    if (iv.end > bound + slack) {
      const text = `${iv.name}'s work ran until ${ms(iv.end)}, ${ms(iv.end - bound)} ms past its lease ` +
        `(last write rv ${last.rv} accepted by ${ms(last.hi)}, leaseDuration ${last.durationMs} ms)`;
      const reason = opts.exemptWork?.(iv);
      if (reason) exempted.push(`${text}: ${reason}`);
      else problems.push(text);
    }
  }

  return { versions, intervals, transitions, overlaps, redelivered, problems, exempted };
}
