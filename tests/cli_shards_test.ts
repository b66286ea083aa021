// The entrypoint's sharded mode: `--shards N -- CMD` runs one command per held
// shard with LEASEHOLD_SHARD and the shard's fencing token, stops the commands
// of the shards it gives up, and lists the held shards on /leader and /metrics.
// Flag checks run anywhere; the run needs the real API server.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import type { Server } from "node:http";
import { readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main, parseArgs, resolveSettings } from "../lib/cli.ts";
import { freshNamespace } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

type Line = Record<string, unknown> & { msg: string; level: string };
const FAST = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"];

/** Log lines with waiters: `waitFor` resolves on the first matching line, past or future. */
function lineLog() {
  const lines: Line[] = [];
  let waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  return {
    lines,
    write(text: string) {
      const l = JSON.parse(text) as Line;
      lines.push(l);
      waiters = waiters.filter((w) => (w.pred(l) ? (w.resolve(l), false) : true));
    },
    waitFor(pred: (l: Line) => boolean): Promise<Line> {
      const hit = lines.find(pred);
      return hit ? Promise.resolve(hit) : new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    count(pred: (l: Line) => boolean): number {
      return lines.filter(pred).length;
    },
  };
}

/** The file's lines once it has `n` of them (polled: only the file tells when a command wrote). */
async function fileLines(path: string, n: number, ms = 10000): Promise<string[]> {
  const t0 = Date.now();
  for (;;) {
    const lines = readFileSync(path, "utf8").split("\n").filter(Boolean);
    if (lines.length >= n || Date.now() - t0 > ms) return lines;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("cli --shards: the shard count is checked and needs a command", () => {
  const s = resolveSettings(parseArgs(["--lease-name", "work", "--identity", "a", "--shards", "16", "--", "true"]));
  assert.equal(s.shards, 16);
  const env = (name: string) => (name === "SHARDS" ? "3" : undefined);
  assert.equal(resolveSettings(parseArgs(["--lease-name", "w", "--identity", "a", "--", "true"], env)).shards, 3);
  for (
    const [args, msg] of [
      [["--shards", "0", "--", "true"], /--shards \(SHARDS\) must be a whole number from 1 to 4096, not "0"/],
      [["--shards", "1.5", "--", "true"], /must be a whole number/],
      [["--shards", "5000", "--", "true"], /must be a whole number/],
      [["--shards", "4"], /--shards needs a command after --/],
    ] as const
  ) {
    assert.throws(
      () => resolveSettings(parseArgs(["--lease-name", "work", "--identity", "a", ...args], () => undefined)),
      msg,
    );
  }
});

test("cli --shards: a bad shard prefix exits 2 naming the fix", async () => {
  const log = lineLog();
  const code = await main(
    ["--lease-name", "Work_", "--identity", "a", "--kubeconfig", "/nonexistent", "--shards", "2", "--", "true"],
    { write: log.write, handleSignals: false, env: () => undefined },
  );
  assert.equal(code, 2);
  assert.match(String(log.lines[0]?.msg), /--lease-name "Work_" is the shard Lease prefix with --shards/);
});

serverTest("cli --shards: one command per held shard with its fencing token; a joining replica takes its share", {
  timeout: 120000,
}, async (_t, info: { kubeconfig: string }) => {
  const ns = await freshNamespace(info, "clishards");
  // The command prints its shard and token, then runs until SIGTERM.
  const out = join(await mkdtemp(join(tmpdir(), "leasehold-shards-")), "out");
  const cmd = ["sh", "-c", `echo "$LEASEHOLD_SHARD $LEASEHOLD_FENCING_TOKEN" >> ${out}; exec sleep 600`];
  const start = (identity: string) => {
    const log = lineLog();
    const stop = new AbortController();
    let server: Server | undefined;
    const exited = main(
      [
        ...["--lease-name", "work", "--lease-namespace", ns, "--identity", identity, "--kubeconfig", info.kubeconfig],
        ...[...FAST, "--shards", "4", "--http-addr", "127.0.0.1:0", "--", ...cmd],
      ],
      {
        write: log.write,
        handleSignals: false,
        env: () => undefined,
        signal: stop.signal,
        onServer: (s) => (server = s),
      },
    );
    const url = (path: string) => {
      const a = server!.address() as { port: number };
      return `http://127.0.0.1:${a.port}${path}`;
    };
    return { log, stop, exited, url };
  };
  const a = start("replica-a");
  const b = { current: undefined as ReturnType<typeof start> | undefined };
  try {
    for (let i = 0; i < 4; i++) {
      await a.log.waitFor((l) => l.msg === "holding shard" && l.shard === i);
      await a.log.waitFor((l) => l.msg === "started command" && typeof l.pid === "number");
    }
    await a.log.waitFor((l) => l.msg === "serving http");
    const leader = await (await fetch(a.url("/leader"))).json() as {
      held: { shard: number; fencingToken: string }[];
      members: string[];
      quota: number;
    };
    assert.deepEqual(leader.held.map((h) => h.shard), [0, 1, 2, 3]);
    assert.ok(leader.held.every((h) => /^\d+\/replica-a$/.test(h.fencingToken)), JSON.stringify(leader));
    assert.equal(leader.quota, 4);
    const metrics = await (await fetch(a.url("/metrics"))).text();
    for (let i = 0; i < 4; i++) {
      assert.match(metrics, new RegExp(`leasehold_shard_held\\{set="${ns}/work",shard="${i}"\\} 1`));
    }
    assert.equal((await fetch(a.url("/readyz"))).status, 200);
    assert.equal((await fetch(a.url("/healthz"))).status, 200);
    assert.equal((await fetch(a.url("/leader"), { method: "POST" })).status, 405);
    // A second replica joins: a gives up two shards (their commands stopped), b takes them.
    b.current = start("replica-b");
    await b.current.log.waitFor(() => b.current!.log.count((l) => l.msg === "holding shard") === 2);
    await a.log.waitFor(() => a.log.count((l) => l.msg === "giving up shard") === 2);
    await a.log.waitFor(() => a.log.count((l) => l.msg === "stopping command") === 2);
    const given = a.log.lines.filter((l) => l.msg === "giving up shard").map((l) => l.shard as number).sort();
    const took = b.current.log.lines.filter((l) => l.msg === "holding shard").map((l) => l.shard as number).sort();
    assert.deepEqual(took, given, "b holds exactly what a gave up");
    const la = await (await fetch(a.url("/leader"))).json() as { held: { shard: number }[]; members: string[] };
    const lb = await (await fetch(b.current.url("/leader"))).json() as { held: { shard: number }[] };
    assert.equal(la.held.length, 2);
    assert.deepEqual(la.members, ["replica-a", "replica-b"]);
    assert.deepEqual([...la.held, ...lb.held].map((h) => h.shard).sort(), [0, 1, 2, 3]);
    await b.current.log.waitFor(() => b.current!.log.count((l) => l.msg === "started command") === 2);
    // Each command saw its shard and that shard's fencing token (as /leader has them).
    const lbTokens = await (await fetch(b.current.url("/leader"))).json() as {
      held: { shard: number; fencingToken: string }[];
    };
    // The commands write their line after "started command" is logged; nothing signals it but the file.
    const seen = await fileLines(out, 6);
    for (const h of [...leader.held, ...lbTokens.held]) {
      assert.ok(seen.includes(`${h.shard} ${h.fencingToken}`), seen.join("|"));
    }
    assert.equal(seen.length, 6, "4 commands for a, then 2 for b");
  } finally {
    a.stop.abort();
    b.current?.stop.abort();
  }
  assert.equal(await a.exited, 0);
  assert.equal(await b.current!.exited, 0);
  for (const r of [a, b.current!]) {
    assert.equal(
      r.log.count((l) => l.msg === "started command"),
      r.log.count((l) => l.msg === "command exited"),
      "every command stopped",
    );
  }
});
