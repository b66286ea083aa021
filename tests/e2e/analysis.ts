/**
 * The analysis of the end-to-end run, kept apart from the cluster so that it
 * can be tested on its own: leading terms from container log lines (and the
 * API server's audit log), overlaps, time without a leader and hand-overs.
 */

/** Which program wrote the log. */
export type Kind = "leasehold" | "blog";

/** One run of a container (a pod's log file N.log). */
export interface Instance {
  pod: string;
  run: number;
  lines: { t: number; text: string }[];
}

/** One term of leadership as a replica reported it. */
export interface Interval {
  who: string;
  start: number;
  end: number;
  /** The end is where the replica said it stopped (not a kill or its last report). */
  reported: boolean;
}

/** The fields of an API server audit event that the run reads. */
export interface AuditEvent {
  verb: string;
  objectRef?: { namespace?: string; name?: string; resource?: string };
  user: { username: string; extra?: Record<string, string[]> };
  responseStatus?: { code?: number };
  requestReceivedTimestamp: string;
  stageTimestamp: string;
  stage: string;
}

/** The pod a bound service-account token belongs to. */
export const podOf = (e: AuditEvent) => e.user.extra?.["authentication.kubernetes.io/pod-name"]?.[0];
/** The id of the token used. */
export const jtiOf = (e: AuditEvent) => e.user.extra?.["authentication.kubernetes.io/credential-id"]?.[0];

/** What a log line says about leadership. */
export function classify(kind: Kind, text: string): "start" | "end" | "release" | "work" | undefined {
  if (kind === "leasehold") {
    if (!text.startsWith("{")) return undefined;
    try {
      const msg = JSON.parse(text).msg;
      if (msg === "started leading") return "start";
      if (msg === "released the lease") return "release";
      if (msg === "stopped leading") return "end";
    } catch { /* not ours */ }
    return undefined;
  }
  if (/\] "leading"/.test(text)) return "start";
  if (/\] "still leading"/.test(text)) return "work";
  if (/\] "(stopped leading|leading cancelled)"/.test(text)) return "end";
  return undefined;
}

/**
 * The leading intervals each replica reports. An interval without a reported
 * end closes at the replica's death when we caused it (`deaths`, keyed
 * pod#run), else at its last report if a later run or no pod follows it,
 * else it is still open (Infinity). `updates` are the audit events of Lease
 * updates in the namespace.
 */
export function buildIntervals(
  kind: Kind,
  insts: Instance[],
  updates: AuditEvent[],
  deaths: Map<string, number>,
  alive: Set<string>,
): Interval[] {
  const out: Interval[] = [];
  for (const inst of insts) {
    const id = `${inst.pod}#${inst.run}`;
    const newer = insts.some((o) => o.pod === inst.pod && o.run > inst.run);
    let cur: Interval | undefined;
    let last = 0;
    let released: number | undefined;
    for (const l of inst.lines) {
      const k = classify(kind, l.text);
      if (k === "start" && !cur) cur = { who: id, start: l.t, end: Infinity, reported: false };
      if (k === "work" || k === "start") last = l.t;
      // leasehold aborts and awaits the work before it sends the release, and
      // logs both after the release was answered: the work ended before the
      // API server received that request.
      if (k === "release" && cur) {
        const sent = updates.filter((e) => podOf(e) === inst.pod && Date.parse(e.requestReceivedTimestamp) <= l.t).at(
          -1,
        );
        released = sent ? Date.parse(sent.requestReceivedTimestamp) : l.t;
      }
      if (k === "end" && cur) {
        cur.end = released ?? l.t;
        released = undefined;
        cur.reported = true;
        out.push(cur);
        cur = undefined;
      }
    }
    if (cur) {
      const death = deaths.get(id);
      if (death !== undefined) cur.end = death;
      else if (newer || !alive.has(inst.pod)) cur.end = Math.max(last, cur.start);
      out.push(cur);
    }
  }
  return out.sort((a, b) => a.start - b.start);
}

/** Overlaps, leaderless time and hand-overs within a window. */
export interface Analysis {
  overlaps: string[];
  /** Leaderless time within the window. */
  leaderlessMs: number;
  /** For each leader that stopped within the window: time until the next one started. */
  handovers: number[];
}

/** Analyses the intervals between an action at `fromAction` and `to`. */
export function analyse(iv: Interval[], fromAction: number, to: number): Analysis {
  // A leader that reports work once a second may have made its last report up
  // to a second before the action that ended it: measure from that report.
  const from = Math.min(
    fromAction,
    ...iv.filter((x) => x.end >= fromAction - 1500 && x.end <= fromAction).map((x) => x.end),
  );
  const overlaps: string[] = [];
  for (let i = 0; i < iv.length; i++) {
    for (let j = i + 1; j < iv.length; j++) {
      const a = iv[i], b = iv[j];
      const o = Math.min(a.end, b.end) - Math.max(a.start, b.start);
      if (o > 0 && a.who !== b.who) {
        overlaps.push(`${a.who} and ${b.who} both led for ${o} ms`);
      }
    }
  }
  let covered = 0;
  let cursor = from;
  for (const x of iv) {
    const s = Math.max(x.start, cursor), e = Math.min(x.end, to);
    if (e > s) {
      covered += e - s;
      cursor = e;
    }
  }
  const handovers: number[] = [];
  for (const x of iv) {
    if (x.end < from || x.end > to) continue;
    const next = iv.find((y) => y.start >= x.end && y.who !== x.who);
    if (next && next.start <= to) handovers.push(next.start - x.end);
  }
  return { overlaps, leaderlessMs: Math.max(0, to - from - covered), handovers };
}

// ---------------------------------------------------------------- the sharded mode

/** One term of a shard's command, from its "working on shard" line to its "stopped working on shard" line. */
export interface ShardTerm {
  shard: number;
  /** pod#run of the container whose command it was. */
  who: string;
  pod: string;
  start: number;
  /** Infinity while the command runs (or if it never reported its stop). */
  end: number;
  /** The fencing token the command was given. */
  fencingToken: string;
  /** The end is the command's own "stopped" line. */
  reported: boolean;
}

/** A shard command's line (deploy/deployment.shards.yaml's stand-in command), else undefined. */
export function shardLine(
  text: string,
): { kind: "start" | "end"; shard: number; fencingToken: string } | undefined {
  if (!text.startsWith("{")) return undefined;
  try {
    const o = JSON.parse(text);
    const kind = o.msg === "working on shard" ? "start" : o.msg === "stopped working on shard" ? "end" : undefined;
    if (!kind || !Number.isInteger(o.shard) || typeof o.fencingToken !== "string") return undefined;
    return { kind, shard: o.shard, fencingToken: o.fencingToken };
  } catch {
    return undefined;
  }
}

/** Every shard command's term, from the containers' logs, by start time. */
export function shardTerms(insts: Instance[]): ShardTerm[] {
  const out: ShardTerm[] = [];
  for (const inst of insts) {
    const open = new Map<number, ShardTerm>();
    for (const l of inst.lines) {
      const s = shardLine(l.text);
      if (!s) continue;
      if (s.kind === "start") {
        const prev = open.get(s.shard);
        if (prev) out.push(prev); // a second start without a stop: the first stays open
        open.set(s.shard, {
          shard: s.shard,
          who: `${inst.pod}#${inst.run}`,
          pod: inst.pod,
          start: l.t,
          end: Infinity,
          fencingToken: s.fencingToken,
          reported: false,
        });
      } else {
        const t = open.get(s.shard);
        if (!t) continue;
        t.end = l.t;
        t.reported = true;
        out.push(t);
        open.delete(s.shard);
      }
    }
    out.push(...open.values());
  }
  return out.sort((a, b) => a.start - b.start);
}

/**
 * What is wrong with the terms of the shards: two terms of one shard that
 * overlap, a fencing token whose leaseTransitions (`<n>/<holder>`) does not
 * grow from one term to the next, and a term of a container that is gone
 * (`gone(who)`) without a reported stop.
 */
export function shardProblems(terms: ShardTerm[], gone: (who: string) => boolean): string[] {
  const problems: string[] = [];
  const byShard = new Map<number, ShardTerm[]>();
  for (const t of terms) byShard.set(t.shard, [...(byShard.get(t.shard) ?? []), t]);
  for (const [shard, ts] of [...byShard].sort((a, b) => a[0] - b[0])) {
    for (let i = 0; i < ts.length; i++) {
      for (let j = i + 1; j < ts.length; j++) {
        const o = Math.min(ts[i].end, ts[j].end) - Math.max(ts[i].start, ts[j].start);
        if (o > 0) {
          problems.push(
            `shard ${shard}: ${ts[i].who} and ${ts[j].who} both worked for ${o === Infinity ? "ever" : `${o} ms`}`,
          );
        }
      }
      if (i > 0) {
        const n = (t: ShardTerm) => Number(t.fencingToken.split("/")[0]);
        if (!(n(ts[i]) > n(ts[i - 1]))) {
          problems.push(`shard ${shard}: fencing token ${ts[i].fencingToken} after ${ts[i - 1].fencingToken}`);
        }
      }
      if (ts[i].end === Infinity && gone(ts[i].who)) {
        problems.push(`shard ${shard}: the command of ${ts[i].who} never reported its stop`);
      }
    }
  }
  return problems;
}

/** The shards each pod's commands work on now (terms still open), by pod. */
export function shardsHeld(terms: ShardTerm[]): Map<string, number[]> {
  const held = new Map<string, number[]>();
  for (const t of terms) {
    if (t.end !== Infinity) continue;
    held.set(t.pod, [...(held.get(t.pod) ?? []), t.shard].sort((a, b) => a - b));
  }
  return held;
}
