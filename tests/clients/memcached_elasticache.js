// memcached-elasticache (ElastiCache auto discovery over the `memcached` module, text
// protocol): the client is given one node as its configuration endpoint and must find the
// whole cluster through `config get cluster`, spread keys over it, and follow a changed list.
//
// Usage: node memcached_elasticache.js ENDPOINT NODES
//   ENDPOINT  host:port of the configuration endpoint (one of the nodes)
//   NODES     the nodes discovery must find, comma-separated host:port
// Stores and reads back KEYS keys ("ad:<pid>:1:<i>"), prints `phase 1 ok`, then reads one line
// from stdin: the node list after a change (comma-separated host:port). It waits (bounded) for
// the client to discover that list, stores and reads back KEYS more keys ("ad:<pid>:2:<i>"),
// prints `phase 2 ok` and exits 0. Exits 1 on any mismatch or time-out.
"use strict";

const readline = require("readline");
const Memcached = require("memcached-elasticache");

const [endpoint, nodesArg] = process.argv.slice(2);
if (!endpoint || !nodesArg) {
  console.error("usage: node memcached_elasticache.js ENDPOINT NODES");
  process.exit(2);
}
const name = "memcached-elasticache";
const KEYS = 300;
// How long discovery may take to report a list (the client polls every POLL_MS).
const DISCOVERY_TIMEOUT_MS = 10000;
const POLL_MS = 200;

function fail(why) {
  console.error(`${name}: FAILED: ${why}`);
  process.exit(1);
}

const sorted = (list) => [...list].sort();
const sameList = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

const client = new Memcached(endpoint, {
  autoDiscoverInterval: POLL_MS,
  // Options of the inner `memcached` client: fail fast instead of retrying for seconds.
  timeout: 2000,
  retries: 0,
});

// The node list as the library reports it: its `autoDiscover` event carries the nodes it
// now hashes over ("host:port", from the host and port fields of each entry).
let discovered = null;
const failures = [];
client.on("autoDiscover", (nodes) => {
  discovered = nodes;
  console.log(`${name}: discovered ${nodes.join(" ")}`);
});
client.on("autoDiscoverFailure", (err) => failures.push(String(err)));

function waitForNodes(want) {
  return new Promise((resolve) => {
    const deadline = Date.now() + DISCOVERY_TIMEOUT_MS;
    const poll = () => {
      if (discovered && sameList(discovered, want)) return resolve();
      if (Date.now() > deadline) {
        fail(
          `discovered ${JSON.stringify(discovered)}, want ${JSON.stringify(want)}; ` +
            `discovery failures: ${JSON.stringify(failures.slice(-3))}`
        );
      }
      setTimeout(poll, 20); // bounded poll (deadline above)
    };
    poll();
  });
}

const call = (method, ...args) =>
  new Promise((resolve, reject) =>
    client[method](...args, (err, result) => (err ? reject(err) : resolve(result)))
  );

async function storeAndRead(phase) {
  const key = (i) => `ad:${process.pid}:${phase}:${i}`;
  const value = (i) => `value-${phase}-${i}-${"x".repeat(i % 40)}`;
  for (let i = 0; i < KEYS; i += 1) {
    const stored = await call("set", key(i), value(i), 0);
    if (stored !== true) fail(`set ${key(i)} answered ${JSON.stringify(stored)}`);
  }
  // One multi-get per 50 keys: the library splits each by node.
  for (let start = 0; start < KEYS; start += 50) {
    const keys = [];
    for (let i = start; i < start + 50; i += 1) keys.push(key(i));
    const got = await call("getMulti", keys);
    for (let i = start; i < start + 50; i += 1) {
      if (got[key(i)] !== value(i)) {
        fail(`getMulti ${key(i)}: got ${JSON.stringify(got[key(i)])}, want ${value(i)}`);
      }
    }
  }
  // And a few single gets.
  for (let i = 0; i < KEYS; i += 37) {
    const got = await call("get", key(i));
    if (got !== value(i)) fail(`get ${key(i)}: got ${JSON.stringify(got)}, want ${value(i)}`);
  }
}

function readLine() {
  const lines = readline.createInterface({ input: process.stdin });
  return new Promise((resolve) => {
    lines.once("line", (line) => {
      resolve(line.trim()); // before close(), which resolves with null
      lines.close();
    });
    lines.once("close", () => resolve(null));
  });
}

async function main() {
  await waitForNodes(nodesArg.split(","));
  await storeAndRead(1);
  console.log(`${name}: phase 1 ok`);
  const next = await readLine();
  if (!next) fail("no node list on stdin");
  await waitForNodes(next.split(","));
  await storeAndRead(2);
  console.log(`${name}: phase 2 ok`);
  client.end();
  // Replaced inner clients keep idle connections until their own timeout: exit now.
  process.exit(0);
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
