// The local demo: three replicas of the entrypoint as processes, electing a
// leader through the Lease endpoints served by an in-memory server started
// right here (the same HTTP code path a pod uses). It shows who leads, stops
// the leader gracefully (SIGTERM), then kills the next one (SIGKILL), and
// prints both hand-over times.
//
//   deno task demo                     default timings (15s / 10s / 2s)
//   deno task demo --fast              4s / 3s / 500ms, for a quick look
//   deno task demo --kubeconfig FILE   the same against a real cluster
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { startLeaseServer } from "./support/lease_server.ts";
import { freePort, startReplica } from "./env/replica.mjs";

const args = process.argv.slice(2);
const fast = args.includes("--fast");
const kcIndex = args.indexOf("--kubeconfig");
const external = kcIndex >= 0 ? args[kcIndex + 1] : undefined;
const timings = fast
  ? { leaseDuration: "4s", renewDeadline: "3s", retryPeriod: "500ms" }
  : { leaseDuration: "15s", renewDeadline: "10s", retryPeriod: "2s" };
const leaseName = `leasehold-demo-${Date.now().toString(36)}`;

const out = (s: string) => process.stdout.write(s + "\n");
const t0 = performance.now();
const stamp = () => `${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s`;

let kubeconfig = external;
let server: Awaited<ReturnType<typeof startLeaseServer>> | undefined;
if (!kubeconfig) {
  const token = crypto.randomUUID();
  server = await startLeaseServer({ token });
  const dir = await mkdtemp(join(tmpdir(), "leasehold-demo-"));
  kubeconfig = join(dir, "kubeconfig");
  await writeFile(
    kubeconfig,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: demo",
      "  cluster:",
      `    server: ${server.url}`,
      "users:",
      "- name: demo",
      "  user:",
      `    token: ${token}`,
      "contexts:",
      "- name: demo",
      "  context:",
      "    cluster: demo",
      "    user: demo",
      "    namespace: default",
      "current-context: demo",
      "",
    ].join("\n"),
  );
  out(`${stamp()}  in-memory Lease server at ${server.url} (the replicas reach it over HTTP with a token)`);
} else {
  out(`${stamp()}  using the cluster of ${kubeconfig}`);
}
out(
  `${stamp()}  timings: leaseDuration ${timings.leaseDuration}, renewDeadline ${timings.renewDeadline}, retryPeriod ${timings.retryPeriod}`,
);

const names = ["replica-a", "replica-b", "replica-c"];
const ports = await Promise.all(names.map(() => freePort()));
const replicas = names.map((name, i) =>
  startReplica(
    [
      "--kubeconfig",
      kubeconfig!,
      "--lease-name",
      leaseName,
      "--identity",
      name,
      "--http-addr",
      `127.0.0.1:${ports[i]}`,
      "--lease-duration",
      timings.leaseDuration,
      "--renew-deadline",
      timings.renewDeadline,
      "--retry-period",
      timings.retryPeriod,
    ],
    {},
    { name },
  )
);

let lastView = "";
async function view(): Promise<string | undefined> {
  const states = await Promise.all(
    replicas.map(async (r, i) => {
      try {
        const res = await fetch(`http://127.0.0.1:${ports[i]}/leader`, { signal: AbortSignal.timeout(500) });
        return { name: r.name, ...(await res.json()) } as { name: string; isLeader: boolean; holderIdentity: string };
      } catch {
        return { name: r.name, down: true } as unknown as { name: string; isLeader: boolean; holderIdentity: string };
      }
    }),
  );
  const leader = states.find((s) => s.isLeader)?.name;
  const line = states.map((s) => `${s.name}: ${"down" in s ? "down" : s.isLeader ? "LEADER" : "follower"}`).join("   ");
  if (line !== lastView) {
    out(`${stamp()}  ${line}`);
    lastView = line;
  }
  return leader;
}

const live = setInterval(() => void view(), 200);
const started = (l: { msg: string }) => l.msg === "started leading";
let exitCode = 0;
try {
  const first = await Promise.race(replicas.map((r) => r.waitFor(started, 60000).then(() => r)));
  out(`${stamp()}  ${first.name} leads`);
  await new Promise((r) => setTimeout(r, 3000));

  // 1. Graceful: SIGTERM releases the lease; a watching follower takes it at once.
  let rest = replicas.filter((r) => r !== first);
  const next = Promise.race(rest.map((r) => r.waitFor(started, 60000).then((line) => ({ r, line }))));
  const k1 = performance.now();
  out(`${stamp()}  SIGTERM -> ${first.name}`);
  first.kill("SIGTERM");
  const { r: second, line: l2 } = await next;
  const graceful = l2.at - k1;
  out(`${stamp()}  ${second.name} leads, ${graceful.toFixed(0)} ms after the SIGTERM`);
  await first.exited;
  await new Promise((r) => setTimeout(r, 3000));

  // 2. Crash: SIGKILL cannot release; the last replica waits out the lease.
  rest = rest.filter((r) => r !== second);
  const k2 = performance.now();
  out(`${stamp()}  SIGKILL -> ${second.name}`);
  second.kill("SIGKILL");
  const l3 = await rest[0].waitFor(started, 120000);
  const crash = l3.at - k2;
  out(`${stamp()}  ${rest[0].name} leads, ${crash.toFixed(0)} ms after the SIGKILL`);
  await new Promise((r) => setTimeout(r, 500));

  out("");
  out(`graceful hand-over (SIGTERM): ${graceful.toFixed(0)} ms`);
  out(`crash fail-over (SIGKILL):    ${crash.toFixed(0)} ms (leaseDuration ${timings.leaseDuration})`);
  if (server) {
    out(
      `requests the Lease server answered: ${server.requests.length} (GET ${server.countBy("GET")}, PUT ${
        server.countBy("PUT")
      }, POST ${server.countBy("POST")})`,
    );
  }
} catch (e) {
  out(`demo failed: ${(e as Error).message}`);
  exitCode = 1;
} finally {
  clearInterval(live);
  for (const r of replicas) r.kill("SIGTERM");
  await Promise.all(replicas.map((r) => r.exited));
  await server?.close();
}
process.exit(exitCode);
