// A TLS API-server stand-in (HTTP/2 and HTTP/1.1) behind a TCP proxy that can
// freeze the connections it carries: stop forwarding in both directions while
// keeping both sockets open (no FIN, no RST), as when a node dies or a NAT drops
// its state. Connections opened after a freeze are forwarded normally.
//
// It also answers watches (`?watch=1`: one ADDED event, then the end; for the
// Lease named "hold" the stream stays open and silent after that event) and
// redirects (`/redirect`: 303 to a plain-http URL), and reports the CN of a
// client certificate (signed by `[client-ca.pem]`) in the Lease's annotations.
//
// Run with Node: `node frozen_proxy.mjs <cert.pem> <key.pem> [client-ca.pem]`. It prints one
// JSON line `{"url": ...}` when ready, then answers each command read from stdin
// ("freeze", "heal", "stats") with one JSON line. It exits when stdin closes.
import http2 from "node:http2";
import net from "node:net";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const [certFile, keyFile, clientCaFile] = process.argv.slice(2);
let requests = 0;
const server = http2.createSecureServer({
  cert: readFileSync(certFile),
  key: readFileSync(keyFile),
  allowHTTP1: true,
  ...(clientCaFile ? { ca: readFileSync(clientCaFile), requestCert: true, rejectUnauthorized: false } : {}),
}, (req, res) => {
  requests++;
  if (req.url.startsWith("/redirect")) {
    res.writeHead(303, { location: "http://127.0.0.1:9/elsewhere" });
    return res.end();
  }
  const peer = req.socket.getPeerCertificate?.();
  const lease = {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name: "frozen",
      namespace: "default",
      resourceVersion: String(requests),
      annotations: { clientCn: peer?.subject?.CN ?? "", authorization: req.headers.authorization ?? "" },
    },
    spec: { holderIdentity: "a", leaseDurationSeconds: 15 },
  };
  res.setHeader("content-type", "application/json");
  if (/[?&]watch=(1|true)/.test(req.url)) {
    const line = JSON.stringify({ type: "ADDED", object: lease }) + "\n";
    // A Lease named "hold" gets a watch that stays open after its first event (and never sends a bookmark).
    return req.url.includes("metadata.name%3Dhold") ? res.write(line) : res.end(line);
  }
  res.end(JSON.stringify(lease));
});

const links = new Set();
let proxied = 0;
const proxy = net.createServer((client) => {
  proxied++;
  const upstream = net.connect(server.address().port, "127.0.0.1");
  const link = { client, upstream, frozen: false };
  links.add(link);
  client.pipe(upstream);
  upstream.pipe(client);
  const drop = () => {
    links.delete(link);
    client.destroy();
    upstream.destroy();
  };
  client.on("error", drop).on("close", drop);
  upstream.on("error", drop).on("close", drop);
});

function freeze() {
  let n = 0;
  for (const l of links) {
    if (l.frozen) continue;
    l.frozen = true;
    l.client.unpipe(l.upstream);
    l.upstream.unpipe(l.client);
    l.client.pause();
    l.upstream.pause();
    n++;
  }
  return n;
}

function heal() {
  let n = 0;
  for (const l of links) {
    if (!l.frozen) continue;
    l.frozen = false;
    l.client.pipe(l.upstream);
    l.upstream.pipe(l.client);
    n++;
  }
  return n;
}

server.listen(0, "127.0.0.1", () => {
  proxy.listen(0, "127.0.0.1", () => {
    console.log(JSON.stringify({ url: `https://127.0.0.1:${proxy.address().port}` }));
  });
});

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const cmd = line.trim();
  if (cmd === "freeze") console.log(JSON.stringify({ frozen: freeze() }));
  else if (cmd === "heal") console.log(JSON.stringify({ healed: heal() }));
  else if (cmd === "stats") console.log(JSON.stringify({ connections: proxied, open: links.size, requests }));
  else console.log(JSON.stringify({ error: `unknown command ${cmd}` }));
});
rl.on("close", () => process.exit(0));
