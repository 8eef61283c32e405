// The `memcached` npm package (node-memcached 2.2.2, text protocol): set/get/multi-get,
// add/replace/append/prepend with the errors it reports, gets/cas, incr/decr (missing key,
// non-numeric value, clamp at 0, 64-bit wrap), delete, touch, expiry (Unix time, negative, and a
// short TTL), its serialization flags (strings, numbers, JSON objects, Buffers), an empty value,
// values near 1 MB and over it (refused by the client at its maxValue, and by the server when
// the client lets it through), keys with edge characters (punctuation, UTF-8, 250 bytes, and
// longer ones the client hashes), pooled concurrent requests, version, stats, stats settings /
// slabs / items, and flush. node-memcached has no noreply mode.
//
// Usage: node node_memcached_text.js HOST:PORT. Prints "node_memcached_text: ok (N checks)" and
// exits 0, or prints each mismatch and exits 1.
"use strict";

const Memcached = require("memcached");

const address = process.argv.slice(2).find((a) => a.includes(":"));
if (!address) {
  console.error("usage: node node_memcached_text.js HOST:PORT");
  process.exit(2);
}
const name = "node_memcached_text";
const prefix = `${name}:${process.pid}:`;
const k = (suffix) => prefix + suffix;
// An exptime over 30 days is absolute Unix time: 30 days + 1 s is in 1970, already past.
const PAST = 30 * 24 * 3600 + 1;
let checks = 0;
let failures = 0;

function short(value) {
  if (Buffer.isBuffer(value)) return `<Buffer ${value.length} bytes>`;
  if (value instanceof Error) return `Error(${JSON.stringify(value.message)})`;
  const text = JSON.stringify(value);
  if (text === undefined) return String(value);
  return text.length > 120 ? `${text.slice(0, 100)}...<${text.length} chars>` : text;
}

function same(got, want) {
  if (Buffer.isBuffer(want)) return Buffer.isBuffer(got) && got.equals(want);
  if (want !== null && typeof want === "object") {
    return JSON.stringify(got) === JSON.stringify(want);
  }
  return got === want;
}

function eq(what, got, want) {
  checks += 1;
  if (!same(got, want)) {
    failures += 1;
    console.error(`${name}: MISMATCH ${what}: got ${short(got)}, want ${short(want)}`);
  }
}

// Runs one client call; resolves to { err, result } (the library reports errors in the callback).
function call(mc, method, ...args) {
  return new Promise((resolve) => {
    mc[method](...args, (err, result) => resolve({ err, result }));
  });
}

// The result of a call that must not report an error.
async function ok(what, mc, method, ...args) {
  const { err, result } = await call(mc, method, ...args);
  eq(`${what} (error)`, err === undefined ? undefined : String(err), undefined);
  return result;
}

// A call that must fail with an error whose message contains `message`; returns the result.
async function fails(what, mc, method, message, ...args) {
  const { err, result } = await call(mc, method, ...args);
  const text = err === undefined ? "no error" : String(err instanceof Array ? err[0] : err);
  eq(`${what} (error)`, text.includes(message) ? message : text, message);
  return result;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls (bounded) until `get` misses; false if the key is still there at the deadline.
async function expiresWithin(mc, key, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const { err, result } = await call(mc, "get", key);
    if (!err && result === undefined) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

// A deterministic printable value of `size` bytes (no CR/LF), not one repeated byte.
function textValue(size) {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
  let out = "";
  const block = Array.from({ length: 4096 }, (_, i) => alphabet[(i * 7 + (i >> 6)) % 64]).join("");
  while (out.length < size) out += block;
  return out.slice(0, size);
}

function client(options) {
  return new Memcached(address, {
    retries: 0,
    timeout: 10000,
    idle: 30000,
    poolSize: 4,
    ...options,
  });
}

async function body(mc) {
  // Strings: set, get, miss.
  eq("set", await ok("set", mc, "set", k("a"), "alpha", 0), true);
  eq("get", await ok("get", mc, "get", k("a")), "alpha");
  eq("get miss", await ok("get miss", mc, "get", k("missing")), undefined);
  eq("set empty", await ok("set empty", mc, "set", k("empty"), "", 0), true);
  eq("get empty", await ok("get empty", mc, "get", k("empty")), "");
  // CR and LF are escaped by the client (a backslash before each), so they round-trip.
  const lines = "line one\r\nline two\nend\r";
  eq("set with line breaks", await ok("set lines", mc, "set", k("lines"), lines, 0), true);
  eq("get with line breaks", await ok("get lines", mc, "get", k("lines")), lines);
  const unicode = "naïve café ключ 🔑";
  eq("set UTF-8 value", await ok("set utf8", mc, "set", k("utf8v"), unicode, 0), true);
  eq("get UTF-8 value", await ok("get utf8", mc, "get", k("utf8v")), unicode);

  // Multi-get: found keys only.
  for (const [key, value] of [["m1", "1"], ["m2", "2"], ["m3", "3"]]) {
    await ok(`set ${key}`, mc, "set", k(key), value, 0);
  }
  eq(
    "getMulti",
    await ok("getMulti", mc, "getMulti", [k("m1"), k("m2"), k("nope"), k("m3")]),
    { [k("m1")]: "1", [k("m2")]: "2", [k("m3")]: "3" }
  );
  eq("getMulti all missing", await ok("getMulti none", mc, "getMulti", [k("x1"), k("x2")]), {});

  // add / replace / append / prepend, with the errors the client reports for NOT_STORED.
  eq("add new", await ok("add new", mc, "add", k("b"), "beta", 0), true);
  eq("add existing", await fails("add existing", mc, "add", "Item is not stored", k("b"), "x", 0), false);
  eq("add did not overwrite", await ok("get b", mc, "get", k("b")), "beta");
  eq("replace", await ok("replace", mc, "replace", k("b"), "beta2", 0), true);
  eq(
    "replace missing",
    await fails("replace missing", mc, "replace", "Item is not stored", k("zz"), "x", 0),
    false
  );
  eq("replace missing stores nothing", await ok("get zz", mc, "get", k("zz")), undefined);
  eq("append", await ok("append", mc, "append", k("b"), "+"), true);
  eq("prepend", await ok("prepend", mc, "prepend", k("b"), "-"), true);
  eq("after append/prepend", await ok("get b", mc, "get", k("b")), "-beta2+");
  eq(
    "append missing",
    await fails("append missing", mc, "append", "Item is not stored", k("zz"), "+"),
    false
  );
  eq(
    "prepend missing",
    await fails("prepend missing", mc, "prepend", "Item is not stored", k("zz"), "-"),
    false
  );

  // gets / cas: the token, a cas with it, the same token again (EXISTS), a missing key.
  const item = await ok("gets", mc, "gets", k("b"));
  eq("gets value", item && item[k("b")], "-beta2+");
  eq("gets token is a number", /^[0-9]+$/.test(item && item.cas) && item.cas !== "0", true);
  eq("cas ok", await ok("cas", mc, "cas", k("b"), "new", item.cas, 0), true);
  eq("cas stale", await ok("cas stale", mc, "cas", k("b"), "newer", item.cas, 0), false);
  eq("after cas", await ok("get b", mc, "get", k("b")), "new");
  eq("cas missing", await ok("cas missing", mc, "cas", k("zz"), "x", item.cas, 0), false);
  const next = await ok("gets again", mc, "gets", k("b"));
  eq("cas token changed", next && next.cas !== item.cas, true);
  eq("gets miss", await ok("gets miss", mc, "gets", k("zz")), undefined);

  // incr / decr.
  eq("set counter", await ok("set n", mc, "set", k("n"), "10", 0), true);
  eq("incr", await ok("incr", mc, "incr", k("n"), 5), 15);
  eq("decr", await ok("decr", mc, "decr", k("n"), 3), 12);
  eq("decr below zero clamps to 0", await ok("decr clamp", mc, "decr", k("n"), 20), 0);
  // A shorter number is written over the old one in place, padded with spaces.
  eq("counter reads back", await ok("get n", mc, "get", k("n")), "0 ");
  eq("incr after the clamp", await ok("incr", mc, "incr", k("n"), 1), 1);
  eq("set 99", await ok("set n99", mc, "set", k("n99"), "99", 0), true);
  eq("incr past the digits stored", await ok("incr 99", mc, "incr", k("n99"), 1), 100);
  eq("longer number reads back", await ok("get n99", mc, "get", k("n99")), "100");
  eq("set max", await ok("set max", mc, "set", k("max"), "18446744073709551615", 0), true);
  eq("incr wraps at 2^64", await ok("incr wrap", mc, "incr", k("max"), 1), 0);
  eq("incr missing", await ok("incr missing", mc, "incr", k("nn"), 1), false);
  eq("decr missing", await ok("decr missing", mc, "decr", k("nn"), 1), false);
  eq("set a non-number", await ok("set text", mc, "set", k("text"), "abc", 0), true);
  eq(
    "incr on a non-number",
    await fails(
      "incr on a non-number",
      mc,
      "incr",
      "cannot increment or decrement non-numeric value",
      k("text"),
      1
    ),
    false
  );
  eq(
    "decr on a non-number",
    await fails(
      "decr on a non-number",
      mc,
      "decr",
      "cannot increment or decrement non-numeric value",
      k("text"),
      1
    ),
    false
  );
  eq("non-number unchanged", await ok("get text", mc, "get", k("text")), "abc");
  // A number stored by the client (flag 8) counts too, and reads back as a number.
  eq("set a number", await ok("set num", mc, "set", k("num"), 41, 0), true);
  eq("incr a stored number", await ok("incr num", mc, "incr", k("num"), 1), 42);
  eq("stored number reads back", await ok("get num", mc, "get", k("num")), 42);

  // delete.
  eq("delete", await ok("delete", mc, "del", k("a")), true);
  eq("delete missing", await ok("delete missing", mc, "del", k("a")), false);
  eq("get deleted", await ok("get deleted", mc, "get", k("a")), undefined);

  // The client's flags: JSON (2), Buffer (4), number (8); strings are flag 0.
  const object = { name: "corecache", list: [1, 2.5, null, true, "x"], nested: { a: ["b"] } };
  eq("set object", await ok("set object", mc, "set", k("obj"), object, 0), true);
  eq("get object", await ok("get object", mc, "get", k("obj")), object);
  eq("set float", await ok("set float", mc, "set", k("float"), 2.5, 0), true);
  eq("get float", await ok("get float", mc, "get", k("float")), 2.5);
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  eq("set all 256 byte values", await ok("set bytes", mc, "set", k("bytes"), bytes, 0), true);
  eq("get all 256 byte values", await ok("get bytes", mc, "get", k("bytes")), bytes);
  eq(
    "getMulti mixed flags",
    await ok("getMulti flags", mc, "getMulti", [k("obj"), k("float"), k("m1")]),
    { [k("obj")]: object, [k("float")]: 2.5, [k("m1")]: "1" }
  );

  // Keys: punctuation the text protocol allows, UTF-8, exactly 250 bytes, and a longer key
  // (the client sends its md5 instead). Whitespace in a key is refused by the client.
  const punct = k("!#%&'()*+,-./:;<=>?@[\\]^_`{|}~\"");
  eq("set punctuation key", await ok("set punct", mc, "set", punct, "p", 0), true);
  eq("get punctuation key", await ok("get punct", mc, "get", punct), "p");
  const utf8Key = k("clé-ключ-🔑");
  eq("set UTF-8 key", await ok("set utf8 key", mc, "set", utf8Key, "u", 0), true);
  eq("get UTF-8 key", await ok("get utf8 key", mc, "get", utf8Key), "u");
  eq(
    "getMulti UTF-8 and punctuation keys",
    await ok("getMulti keys", mc, "getMulti", [utf8Key, punct, k("nope")]),
    { [utf8Key]: "u", [punct]: "p" }
  );
  const key250 = k("").padEnd(250, "k");
  eq("set 250-byte key", await ok("set 250", mc, "set", key250, "long", 0), true);
  eq("get 250-byte key", await ok("get 250", mc, "get", key250), "long");
  const key300 = k("").padEnd(300, "h");
  eq("set 300-byte key (hashed)", await ok("set 300", mc, "set", key300, "hashed", 0), true);
  eq("get 300-byte key (hashed)", await ok("get 300", mc, "get", key300), "hashed");
  eq(
    "key with a space refused",
    await fails("key with a space", mc, "set", "whitespace", k("a b"), "x", 0),
    undefined
  );

  // touch and expiry: a past Unix time and a negative exptime expire at once; a short TTL
  // expires within a few seconds while a key touched to 100 s outlives it. The server's clock
  // ticks in whole seconds, so a TTL of 2 s lives at least 1 s.
  eq("set ttl 2", await ok("set short", mc, "set", k("short"), "s", 2), true);
  eq("set ttl 2 (to touch)", await ok("set touched", mc, "set", k("touched"), "t", 2), true);
  eq("get before expiry", await ok("get short", mc, "get", k("short")), "s");
  eq("touch", await ok("touch", mc, "touch", k("touched"), 100), true);
  eq("touch missing", await ok("touch missing", mc, "touch", k("nothere"), 100), false);
  eq("ttl 2 expires", await expiresWithin(mc, k("short"), 6), true);
  eq("touched outlives its first ttl", await ok("get touched", mc, "get", k("touched")), "t");
  eq("touch to the past", await ok("touch past", mc, "touch", k("touched"), PAST), true);
  eq("expired by touch", await ok("get touched", mc, "get", k("touched")), undefined);
  eq("set with a past exptime", await ok("set past", mc, "set", k("e"), "x", PAST), true);
  eq("past exptime expired", await ok("get e", mc, "get", k("e")), undefined);
  eq("set with a negative exptime", await ok("set neg", mc, "set", k("e2"), "x", -1), true);
  eq("negative exptime expired", await ok("get e2", mc, "get", k("e2")), undefined);
  const unix = Math.floor(Date.now() / 1000) + 100;
  eq("set at a Unix time", await ok("set unix", mc, "set", k("unix"), "u", unix), true);
  eq("Unix time kept", await ok("get unix", mc, "get", k("unix")), "u");

  // Large values: 500 KB, near 1 MB, with other keys in one multi-get.
  const big = textValue(500 * 1024);
  eq("set 500 KB", await ok("set large", mc, "set", k("large"), big, 0), true);
  eq("get 500 KB", await ok("get large", mc, "get", k("large")), big);
  const near = textValue(1024 * 1024 - 1024);
  eq("set near 1 MB", await ok("set near", mc, "set", k("near"), near, 0), true);
  eq("get near 1 MB", await ok("get near", mc, "get", k("near")), near);
  eq(
    "getMulti with near 1 MB",
    await ok("getMulti large", mc, "getMulti", [k("near"), k("m1"), k("large")]),
    { [k("near")]: near, [k("m1")]: "1", [k("large")]: big }
  );
  // Over the client's maxValue (1 MB by default): refused before anything is sent.
  eq(
    "set 2 MB refused by the client",
    await fails(
      "set 2 MB",
      mc,
      "set",
      "The length of the value is greater than 1048576",
      k("toobig"),
      textValue(2 * 1024 * 1024),
      0
    ),
    false
  );
  // 1 MB exactly fits the client's limit but not the server's item size (the item header
  // and key count): SERVER_ERROR, which the client answers with false and marks the server
  // as having an issue, so a client of its own is used. The server drops the old value too.
  eq("set old value", await ok("set over", mc, "set", k("over"), "old", 0), true);
  const lax = client({ retry: 60000 });
  try {
    eq(
      "set 1 MB refused by the server",
      await ok("set 1 MB", lax, "set", k("over"), textValue(1024 * 1024), 0),
      false
    );
  } finally {
    lax.end();
  }
  eq("refused set dropped the old value", await ok("get over", mc, "get", k("over")), undefined);
  eq("still usable after the refusal", await ok("get m1", mc, "get", k("m1")), "1");

  // Pooled connections: 100 concurrent sets, then concurrent gets and one multi-get.
  const keys = Array.from({ length: 100 }, (_, i) => k(`p${i}`));
  const stored = await Promise.all(keys.map((key, i) => call(mc, "set", key, `v${i}`, 0)));
  eq("concurrent sets", stored.every(({ err, result }) => !err && result === true), true);
  const got = await Promise.all(keys.map((key) => call(mc, "get", key)));
  eq("concurrent gets", got.map(({ result }) => result).join(","), keys.map((_, i) => `v${i}`).join(","));
  const multi = await ok("getMulti 100", mc, "getMulti", keys);
  eq("getMulti 100 keys", Object.keys(multi).length, 100);
  eq("getMulti 100 values", keys.every((key, i) => multi[key] === `v${i}`), true);

  // version and stats, as health checks read them (one entry per server).
  const versions = await ok("version", mc, "version");
  eq("version servers", versions.map((v) => v.server), [address]);
  eq("version format", /^\d+\.\d+\.\d+$/.test(versions[0].version), true);
  const [stats] = await ok("stats", mc, "stats");
  eq("stats server", stats && stats.server, address);
  for (const stat of ["pid", "uptime", "time", "version", "curr_items", "total_items", "cmd_get", "get_hits", "get_misses", "curr_connections"]) {
    eq(`stats has ${stat}`, stats && stat in stats, true);
  }
  eq("stats version is the version", stats.version, versions[0].version);
  eq("stats pid is a number", Number.isInteger(stats.pid) && stats.pid > 0, true);
  eq("stats counts the items", stats.curr_items >= 100, true);
  const [settings] = await ok("stats settings", mc, "settings");
  eq("settings item_size_max", settings && settings.item_size_max, 1048576);
  eq("settings maxbytes", settings && settings.maxbytes, 64 * 1024 * 1024);
  eq("settings cas_enabled", settings && settings.cas_enabled, "yes");
  const [slabs] = await ok("stats slabs", mc, "slabs");
  const classes = Object.keys(slabs || {}).filter((id) => /^\d+$/.test(id));
  eq("slabs lists classes", classes.length > 0, true);
  eq("slabs classes have a chunk size", classes.every((id) => slabs[id].chunk_size > 0), true);
  const [items] = await ok("stats items", mc, "items");
  const itemClasses = Object.keys(items || {}).filter((id) => /^\d+$/.test(id));
  eq("items lists classes", itemClasses.length > 0, true);
  eq(
    "items count the keys",
    itemClasses.reduce((sum, id) => sum + items[id].number, 0) >= 100,
    true
  );

  // flush empties the cache; the client and the server go on.
  eq("flush", await ok("flush", mc, "flush"), [true]);
  eq("flushed", await ok("get b", mc, "get", k("b")), undefined);
  eq("flushed multi", await ok("getMulti flushed", mc, "getMulti", [k("m1"), k("m2")]), {});
  eq("set after flush", await ok("set after", mc, "set", k("after"), "x", 0), true);
  eq("get after flush", await ok("get after", mc, "get", k("after")), "x");
}

async function main() {
  const mc = client({});
  try {
    await body(mc);
  } catch (error) {
    failures += 1;
    console.error(`${name}: EXCEPTION ${error && error.stack ? error.stack : error}`);
  } finally {
    mc.end();
  }
  if (failures > 0) {
    console.error(`${name}: FAILED (${failures} of ${checks} checks, or an exception)`);
    process.exit(1);
  }
  console.log(`${name}: ok (${checks} checks)`);
  // The client keeps retry timers of its own; do not wait for them.
  process.exit(0);
}

main();
