/**
 * The Deno image's permissions, run for real: deploy/Dockerfile.deno's
 * ENTRYPOINT with deploy/deployment.deno.yaml's args, `$(VAR)` expanded as the
 * kubelet does, on the bundle built as the Dockerfile builds it, against the
 * real test API server. With the API server's address
 * in `--allow-net` it leads and serves /healthz; pointed at another address, Deno
 * refuses the connection.
 *
 * Two test-only changes to the shipped argv: `--allow-read` names the test's
 * service-account directory (the pod's is /var/run/secrets/...), and the listen
 * port is a free one in place of HTTP_ADDR's 8080, in `--allow-net` and
 * HTTP_ADDR alike.
 *
 * Runs under `deno test -A tests/deno_image_test.ts` and `bun test tests/deno_image_test.ts`
 * (either way the entrypoint runs on Deno).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseAllDocuments } from "yaml";
import { freshNamespace, podIdentity, ROOT } from "./env/testenv.mjs";
import { freePort, startReplica } from "./env/replica.mjs";
import { serverTest } from "./support/needs_server.mjs";

const DENO = join(ROOT, "node_modules", ".bin", "deno");
const SA_DIR_IN_POD = "/var/run/secrets/kubernetes.io/serviceaccount";

interface EnvVar {
  name: string;
  value?: string;
}
interface Container {
  name: string;
  args?: string[];
  env?: EnvVar[];
}

function shipped(): { entrypoint: string[]; bundle: string[]; args: string[]; env: EnvVar[] } {
  const dockerfile = readFileSync(join(ROOT, "deploy", "Dockerfile.deno"), "utf8");
  const m = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
  assert.ok(m, "deploy/Dockerfile.deno has no ENTRYPOINT in exec form");
  const b = /^RUN (\["deno", "bundle",.*\])$/m.exec(dockerfile);
  assert.ok(b, "deploy/Dockerfile.deno has no RUN deno bundle");
  const docs = parseAllDocuments(readFileSync(join(ROOT, "deploy", "deployment.deno.yaml"), "utf8"))
    .map((d) => d.toJS() as { kind?: string; spec?: { template?: { spec?: { containers?: Container[] } } } });
  const container = docs.find((d) => d.kind === "Deployment")?.spec?.template?.spec?.containers
    ?.find((c) => c.name === "leasehold");
  assert.ok(container, "deploy/deployment.deno.yaml has no leasehold container");
  return {
    entrypoint: JSON.parse(m[1]),
    bundle: JSON.parse(b[1]),
    args: container.args ?? [],
    env: container.env ?? [],
  };
}

/** `$(NAME)` references replaced from `env`, as the kubelet does in container args (unknown ones stay). */
function expand(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
}

/** The image's /app: the bundle built by the Dockerfile's own `deno bundle` command, in a temporary directory. */
let app: string | undefined;
function appDir(): string {
  if (app) return app;
  const dir = mkdtempSync(join(tmpdir(), "leasehold-deno-image-"));
  const [cmd, ...rest] = shipped().bundle;
  assert.equal(cmd, "deno");
  execFileSync(DENO, rest.map((a) => a.startsWith("/app/") ? join(dir, a.slice(5)) : a), { cwd: ROOT, stdio: "pipe" });
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  return (app = dir);
}

/** The shipped command line for a pod whose API server is `apiEnv`, with the two test-only changes above. */
function commandLine(apiEnv: Record<string, string>, saDir: string, port: number, httpPort: string): string[] {
  const { entrypoint, args } = shipped();
  const argv = [...entrypoint, ...args.map((a) => expand(a, apiEnv))].map((a) =>
    a === `--allow-read=${SA_DIR_IN_POD}` ? `--allow-read=${saDir}` : a
  ).map((a) =>
    a.startsWith("--allow-net=")
      ? a.replaceAll(`]:${httpPort}`, `]:${port}`).replaceAll(`0.0.0.0:${httpPort}`, `0.0.0.0:${port}`)
      : a
  );
  assert.equal(argv[0], "deno");
  argv[0] = DENO;
  // The image's WORKDIR is /app, where the bundle is; the last arg names it.
  const script = argv.length - 1;
  assert.match(argv[script], /\.js$/, `the args do not end with the bundle: ${argv.join(" ")}`);
  argv[script] = join(appDir(), argv[script]);
  return argv;
}

serverTest("the Deno image's scoped --allow-net reaches the API server and serves /healthz", async (_t, info) => {
  const { env } = shipped();
  const lease = env.find((e) => e.name === "LEASE_NAME")?.value;
  const httpPort = env.find((e) => e.name === "HTTP_ADDR")?.value?.replace(/^:/, "");
  assert.ok(lease && httpPort);
  const ns = await freshNamespace(info, "denoimg");
  const id = await podIdentity(info, ns, lease);
  const port = await freePort();
  const argv = commandLine(id.env, id.dir, port, httpPort);
  const childEnv: Record<string, string> = {
    ...Object.fromEntries(env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value!])),
    HTTP_ADDR: `:${port}`,
    POD_NAME: "deno-image-0",
    LEASE_NAMESPACE: ns,
    SERVICE_ACCOUNT_DIR: id.dir,
    ...id.env,
  };
  const r = startReplica([], childEnv, { name: "deno-image", cmd: argv });
  try {
    await r.waitFor((l) => l.msg === "started leading", 30000);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200, await res.text());
    assert.ok(!r.lines.some((l) => /Requires net access/.test(String(l.error ?? ""))), "a connection was refused");
  } finally {
    r.kill("SIGTERM");
  }
  const exit = await r.exited;
  assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}; log: ${r.lines.map((l) => l.msg).join(" | ")}`);
});

serverTest("the Deno image's scoped --allow-net refuses an address other than the API server's", async (_t, info) => {
  const { env } = shipped();
  const lease = env.find((e) => e.name === "LEASE_NAME")?.value!;
  const httpPort = env.find((e) => e.name === "HTTP_ADDR")?.value?.replace(/^:/, "")!;
  const ns = await freshNamespace(info, "denoimg");
  const id = await podIdentity(info, ns, lease);
  const port = await freePort();
  // The permission names the API server; the process is then told to talk to 127.0.0.2 (the same machine).
  const argv = commandLine(id.env, id.dir, port, httpPort);
  const elsewhere = { ...id.env, KUBERNETES_SERVICE_HOST: "127.0.0.2" };
  const r = startReplica([], {
    HTTP_ADDR: `:${port}`,
    LEASE_NAME: lease,
    POD_NAME: "deno-image-1",
    LEASE_NAMESPACE: ns,
    SERVICE_ACCOUNT_DIR: id.dir,
    ...elsewhere,
  }, { name: "deno-image-elsewhere", cmd: argv });
  try {
    const refused = await r.waitFor(
      (l) => /Requires net access to "127\.0\.0\.2:\d+"/.test(String(l.error ?? "")),
      30000,
    );
    // The error names the fix.
    assert.match(refused.error, /--allow-net does not include the API server: grant 127\.0\.0\.2:\d+/);
    assert.ok(!r.lines.some((l) => l.msg === "started leading"), "it led without reaching the API server");
  } finally {
    r.kill("SIGTERM");
  }
  await r.exited;
});
