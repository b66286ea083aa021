// A stand-in for the test API server that only answers GET /readyz with 200 over
// HTTPS (tests/server_guard_test.ts kills it mid-run). Usage:
//   node tests/support/fake_readyz.mjs CERT KEY   -> prints {"url": ...} when listening
import { createServer } from "node:https";
import { readFileSync } from "node:fs";
import process from "node:process";

const [cert, key] = process.argv.slice(2);
const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  res.writeHead(req.url === "/readyz" ? 200 : 404, { "content-type": "text/plain" });
  res.end(req.url === "/readyz" ? "ok" : "not found");
});
server.listen(0, "127.0.0.1", () => {
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  console.log(JSON.stringify({ url: `https://127.0.0.1:${port}`, host: "127.0.0.1", port }));
});
