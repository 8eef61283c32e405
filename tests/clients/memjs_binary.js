// memjs (binary protocol): set/get/multi-get/delete/incr/decr/touch/expiry/large values.
// memjs 1.3 has neither cas nor getMulti: the multi-get is concurrent gets pipelined on one
// connection. Usage: node memjs_binary.js HOST:PORT. Exits 1 on any mismatch.
"use strict";

const memjs = require("memjs");

const address = process.argv.slice(2).find((a) => a.includes(":"));
if (!address) {
  console.error("usage: node memjs_binary.js HOST:PORT");
  process.exit(2);
}
const name = "memjs_binary";
const prefix = `${name}:${process.pid}:`;
const k = (suffix) => prefix + suffix;
// An exptime over 30 days is absolute Unix time: 30 days + 1 s is in 1970, already past.
const PAST = 30 * 24 * 3600 + 1;
let checks = 0;
let failures = 0;

function short(value) {
  const text = Buffer.isBuffer(value) ? `<Buffer ${value.length} bytes>` : JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 120 ? text.slice(0, 100) + "..." : text;
}

function eq(what, got, want) {
  checks += 1;
  const same =
    Buffer.isBuffer(want) && Buffer.isBuffer(got) ? got.equals(want) : got === want;
  if (!same) {
    failures += 1;
    console.error(`${name}: MISMATCH ${what}: got ${short(got)}, want ${short(want)}`);
  }
}

function largeValue(size) {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 1) out[i] = i % 256;
  return out;
}

async function getMulti(mc, keys) {
  const replies = await Promise.all(keys.map((key) => mc.get(key)));
  const values = {};
  keys.forEach((key, i) => {
    if (replies[i].value !== null) values[key] = replies[i].value;
  });
  return { values };
}

async function main() {
  const mc = memjs.Client.create(address, { retries: 0, timeout: 10, logger: { log() {} } });
  try {
    eq("set", await mc.set(k("a"), "alpha", { expires: 0 }), true);
    eq("get", (await mc.get(k("a"))).value.toString(), "alpha");
    eq("get miss", (await mc.get(k("missing"))).value, null);
    for (const [key, value] of [["m1", "1"], ["m2", "2"], ["m3", "3"]]) {
      await mc.set(k(key), value, { expires: 0 });
    }
    const multi = await getMulti(mc, [k("m1"), k("m2"), k("nope"), k("m3")]);
    eq("getMulti m1", multi.values[k("m1")].toString(), "1");
    eq("getMulti m3", multi.values[k("m3")].toString(), "3");
    eq("getMulti miss", multi.values[k("nope")], undefined);
    eq("add new", await mc.add(k("b"), "beta", { expires: 0 }), true);
    eq("add existing", await mc.add(k("b"), "x", { expires: 0 }), false);
    eq("replace", await mc.replace(k("b"), "beta2", { expires: 0 }), true);
    eq("replace missing", await mc.replace(k("zz"), "x", { expires: 0 }), false);
    eq("append", await mc.append(k("b"), "+"), true);
    // memjs 1.3.2's prepend sends the append opcode (0x0E), so prepend is not checked.
    eq("after append", (await mc.get(k("b"))).value.toString(), "beta2+");
    eq("delete", await mc.delete(k("a")), true);
    eq("delete missing", await mc.delete(k("a")), false);
    eq("get deleted", (await mc.get(k("a"))).value, null);
    await mc.set(k("n"), "10", { expires: 0 });
    eq("incr", (await mc.increment(k("n"), 5, {})).value, 15);
    eq("decr", (await mc.decrement(k("n"), 20, {})).value, 0);
    eq("incr initial", (await mc.increment(k("nn"), 1, { initial: 7 })).value, 7);
    eq("touch", await mc.touch(k("b"), 100), true);
    eq("touch missing", await mc.touch(k("nothere"), 100), false);
    eq("get after touch", (await mc.get(k("b"))).value.toString(), "beta2+");
    eq("touch to the past", await mc.touch(k("b"), PAST), true);
    eq("expired by touch", (await mc.get(k("b"))).value, null);
    await mc.set(k("e"), "x", { expires: PAST });
    eq("set with a past exptime", (await mc.get(k("e"))).value, null);
    const big = largeValue(500 * 1024);
    eq("set 500 KB", await mc.set(k("large"), big, { expires: 0 }), true);
    eq("get 500 KB", (await mc.get(k("large"))).value, big);
    const both = await getMulti(mc, [k("large"), k("m1")]);
    eq("getMulti with 500 KB", both.values[k("large")], big);
    eq("still usable", (await mc.get(k("m1"))).value.toString(), "1");
  } catch (error) {
    failures += 1;
    console.error(`${name}: EXCEPTION ${error && error.stack ? error.stack : error}`);
  } finally {
    mc.close();
  }
  if (failures > 0) {
    console.error(`${name}: FAILED (${failures} of ${checks} checks, or an exception)`);
    process.exit(1);
  }
  console.log(`${name}: ok (${checks} checks)`);
}

main();
