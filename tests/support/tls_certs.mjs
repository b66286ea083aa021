// Throw-away certificates for transport tests, made with the `openssl` command:
// two independent CAs (cluster and other), a serving certificate from each for
// 127.0.0.1/localhost, and a client certificate (CN=leasehold-test) from the
// cluster CA. Plain JavaScript, so Deno, Bun and Node tests share it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function openssl(args, cwd) {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/**
 * Creates the certificates in a fresh temporary directory.
 * @returns {{ dir: string, clusterCa: string, clusterCaFile: string, otherCa: string, otherCaFile: string,
 *   server: { cert: string, key: string, certFile: string, keyFile: string },
 *   otherServer: { cert: string, key: string, certFile: string, keyFile: string },
 *   client: { cert: string, key: string }, cleanup: () => void }}
 */
export function makeTestCerts() {
  const dir = mkdtempSync(join(tmpdir(), "leasehold-certs-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  for (const ca of ["cluster-ca", "other-ca"]) {
    openssl([
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.pem`,
      "-days",
      "2",
      "-subj",
      `/CN=${ca}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ], dir);
  }
  writeFileSync(
    join(dir, "server.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  writeFileSync(join(dir, "client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  const leaf = (name, ca, subj, ext) => {
    openssl(["req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subj], dir);
    openssl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      ext,
    ], dir);
  };
  leaf("server", "cluster-ca", "/CN=localhost", "server.ext");
  leaf("other-server", "other-ca", "/CN=localhost", "server.ext");
  leaf("client", "cluster-ca", "/CN=leasehold-test", "client.ext");
  const read = (f) => readFileSync(join(dir, f), "utf8");
  const pair = (n) => ({
    cert: read(`${n}.pem`),
    key: read(`${n}.key`),
    certFile: join(dir, `${n}.pem`),
    keyFile: join(dir, `${n}.key`),
  });
  return {
    dir,
    clusterCa: read("cluster-ca.pem"),
    clusterCaFile: join(dir, "cluster-ca.pem"),
    otherCa: read("other-ca.pem"),
    otherCaFile: join(dir, "other-ca.pem"),
    server: pair("server"),
    otherServer: pair("other-server"),
    client: { cert: read("client.pem"), key: read("client.key") },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
