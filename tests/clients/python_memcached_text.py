"""python-memcached (module `memcache`, text protocol).

set/get/get_multi (with a key prefix), set_multi/delete_multi, add/replace/append/prepend,
gets/cas, incr/decr (missing key, non-numeric value, bad deltas, clamp at 0, 64-bit wrap),
delete, touch, expiry, its flags (bytes, str, int, pickled objects, zlib compression), values
near 1 MB and over it (refused by the client, and by the server when the client lets them
through), keys with edge characters (punctuation, UTF-8, 250 bytes; control characters, spaces
and longer keys refused by the client), noreply writes, stats (general, settings, slabs) and
flush_all.
"""

import time

import check
import memcache


def client(host, port, **options):
    return memcache.Client(
        ["%s:%d" % (host, port)], socket_timeout=10, dead_retry=0, cache_cas=True, **options
    )


def raises(c, what, error, call):
    """Checks that `call` raises `error` (a class); the connection must stay usable after."""
    try:
        got = call()
    except error:
        got = error
    except Exception as other:  # reported as the wrong error, by type and message
        got = "%s(%s)" % (type(other).__name__, other)
    c.eq(what, got, error)


def expires_within(mc, key, seconds):
    """Polls (bounded) until `get` misses; False if the key is still there at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        if mc.get(key) is None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def body(c):
    host, port = check.address()
    mc = client(host, port)
    k = c.key

    # bytes (flag 0), str (flag 16, UTF-8), empty, all 256 byte values.
    c.eq("set", mc.set(k("a"), b"alpha"), True)
    c.eq("get", mc.get(k("a")), b"alpha")
    c.eq("get miss", mc.get(k("missing")), None)
    c.eq("set str", mc.set(k("str"), "naïve café ключ 🔑"), True)
    c.eq("get str", mc.get(k("str")), "naïve café ключ 🔑")
    c.eq("set empty", mc.set(k("empty"), b""), True)
    c.eq("get empty", mc.get(k("empty")), b"")
    all_bytes = bytes(range(256))
    c.eq("set all 256 byte values", mc.set(k("bin"), all_bytes), True)
    c.eq("get all 256 byte values", mc.get(k("bin")), all_bytes)
    c.eq("set CRLF value", mc.set(k("crlf"), b"a\r\nEND\r\nb"), True)
    c.eq("get CRLF value", mc.get(k("crlf")), b"a\r\nEND\r\nb")

    # set_multi / get_multi (found keys only), with and without a key prefix.
    c.eq("set_multi", mc.set_multi({k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"}), [])
    c.eq(
        "get_multi",
        mc.get_multi([k("m1"), k("m2"), k("nope"), k("m3")]),
        {k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"},
    )
    c.eq("get_multi all missing", mc.get_multi([k("x1"), k("x2")]), {})
    c.eq("set_multi prefixed", mc.set_multi({1: b"one", 2: b"two"}, key_prefix=k("p:")), [])
    c.eq("get_multi prefixed", mc.get_multi([2, 1, 3], key_prefix=k("p:")), {1: b"one", 2: b"two"})
    c.eq("prefixed key stored in full", mc.get(k("p:1")), b"one")

    # add / replace / append / prepend.
    c.eq("add new", mc.add(k("b"), b"beta"), True)
    c.eq("add existing", mc.add(k("b"), b"x"), False)
    c.eq("add did not overwrite", mc.get(k("b")), b"beta")
    c.eq("replace", mc.replace(k("b"), b"beta2"), True)
    c.eq("replace missing", mc.replace(k("zz"), b"x"), False)
    c.eq("replace missing stores nothing", mc.get(k("zz")), None)
    c.eq("append", mc.append(k("b"), b"+"), True)
    c.eq("prepend", mc.prepend(k("b"), b"-"), True)
    c.eq("after append/prepend", mc.get(k("b")), b"-beta2+")
    c.eq("append missing", mc.append(k("zz"), b"+"), False)
    c.eq("prepend missing", mc.prepend(k("zz"), b"-"), False)
    # append keeps the flags of the item: a str stays a str.
    c.eq("append to a str", mc.append(k("str"), b"!"), True)
    c.eq("str after append", mc.get(k("str")), "naïve café ключ 🔑!")

    # gets / cas (the client keeps the token per key): the token, again (EXISTS), a deleted key.
    c.eq("gets", mc.gets(k("b")), b"-beta2+")
    c.eq("cas ok", mc.cas(k("b"), b"new"), True)
    c.eq("cas stale", mc.cas(k("b"), b"newer"), False)
    c.eq("after cas", mc.get(k("b")), b"new")
    c.eq("gets again", mc.gets(k("b")), b"new")
    c.eq("cas after a concurrent set", (mc.set(k("b"), b"other"), mc.cas(k("b"), b"x")), (True, False))
    c.eq("gets for a deleted key", mc.gets(k("b")), b"other")
    c.eq("delete it", mc.delete(k("b")), 1)
    c.eq("cas on a deleted key", mc.cas(k("b"), b"x"), False)
    c.eq("cas did not store", mc.get(k("b")), None)
    c.eq("gets miss", mc.gets(k("zz")), None)
    mc.reset_cas()

    # incr / decr.
    c.eq("set counter", mc.set(k("n"), b"10"), True)
    c.eq("incr", mc.incr(k("n"), 5), 15)
    c.eq("incr by default 1", mc.incr(k("n")), 16)
    c.eq("decr", mc.decr(k("n"), 4), 12)
    c.eq("decr below zero clamps to 0", mc.decr(k("n"), 20), 0)
    # A shorter number is written over the old one in place, padded with spaces.
    c.eq("counter reads back", mc.get(k("n")), b"0 ")
    c.eq("set 99", mc.set(k("n99"), b"99"), True)
    c.eq("incr past the digits stored", mc.incr(k("n99"), 1), 100)
    c.eq("longer number reads back", mc.get(k("n99")), b"100")
    c.eq("set max", mc.set(k("max"), b"18446744073709551615"), True)
    c.eq("incr wraps at 2^64", mc.incr(k("max"), 1), 0)
    c.eq("set near max", mc.set(k("max"), b"18446744073709551614"), True)
    c.eq("incr to 2^64 - 1", mc.incr(k("max"), 1), 18446744073709551615)
    c.eq("incr missing", mc.incr(k("nn"), 1), None)
    c.eq("decr missing", mc.decr(k("nn"), 1), None)
    c.eq("incr missing stores nothing", mc.get(k("nn")), None)
    # The client reads the CLIENT_ERROR line as a number, so it raises ValueError.
    c.eq("set a non-number", mc.set(k("text"), b"abc"), True)
    raises(c, "incr on a non-number", ValueError, lambda: mc.incr(k("text"), 1))
    raises(c, "decr on a non-number", ValueError, lambda: mc.decr(k("text"), 1))
    c.eq("non-number unchanged", mc.get(k("text")), b"abc")
    raises(c, "incr by 2^64", ValueError, lambda: mc.incr(k("n"), 2**64))
    raises(c, "incr by -1", ValueError, lambda: mc.incr(k("n"), -1))
    c.eq("counter unchanged by bad deltas", mc.get(k("n")), b"0 ")
    # An int (flag 2) counts and reads back as an int.
    c.eq("set int", mc.set(k("int"), 41), True)
    c.eq("incr an int", mc.incr(k("int")), 42)
    c.eq("int reads back", mc.get(k("int")), 42)

    # delete, delete_multi (with the "0" delay memcached still accepts).
    c.eq("delete", mc.delete(k("a")), 1)
    c.eq("delete missing", mc.delete(k("a")), 0)
    c.eq("get deleted", mc.get(k("a")), None)
    c.eq("delete_multi", mc.delete_multi([k("m3"), k("nope")]), 1)
    c.eq("deleted by delete_multi", mc.get_multi([k("m1"), k("m3")]), {k("m1"): b"1"})
    c.eq("set m3 again", mc.set(k("m3"), b"3"), True)
    c.eq("delete_multi with time 0", mc.delete_multi([k("m3")], time=0), 1)
    c.eq("deleted with time 0", mc.get(k("m3")), None)
    c.eq("still in step after delete_multi", mc.get(k("m1")), b"1")

    # Pickled objects (flag 1) and zlib compression (flag 8).
    obj = {"name": "corecache", "list": [1, 2.5, None, True, "x"], "nested": {"a": ("b",)}}
    c.eq("set object", mc.set(k("obj"), obj), True)
    c.eq("get object", mc.get(k("obj")), obj)
    c.eq("set float", mc.set(k("float"), 2.5), True)
    c.eq("get float", mc.get(k("float")), 2.5)
    text = "corecache compresses well. " * (3 * 1024 * 1024 // 27)
    c.eq("set 3 MB compressed", mc.set(k("zipped"), text, min_compress_len=1024), True)
    c.eq("get 3 MB compressed", mc.get(k("zipped")), text)
    c.eq(
        "get_multi mixed flags",
        mc.get_multi([k("obj"), k("float"), k("m1"), k("zipped")]),
        {k("obj"): obj, k("float"): 2.5, k("m1"): b"1", k("zipped"): text},
    )

    # Keys: punctuation, UTF-8, exactly 250 bytes; the client refuses longer keys, control
    # characters and spaces before sending anything.
    punct = k("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    c.eq("set punctuation key", mc.set(punct, b"p"), True)
    c.eq("get punctuation key", mc.get(punct), b"p")
    utf8_key = k("clé-ключ-🔑")
    c.eq("set UTF-8 key", mc.set(utf8_key, b"u"), True)
    c.eq("get UTF-8 key", mc.get(utf8_key), b"u")
    c.eq(
        "get_multi UTF-8 and punctuation keys",
        mc.get_multi([utf8_key, punct, k("nope")]),
        {utf8_key: b"u", punct: b"p"},
    )
    key250 = k("").ljust(250, "k")
    c.eq("set 250-byte key", mc.set(key250, b"long"), True)
    c.eq("get 250-byte key", mc.get(key250), b"long")
    raises(
        c, "251-byte key refused", memcache.Client.MemcachedKeyLengthError,
        lambda: mc.set(key250 + "k", b"x"),
    )
    raises(
        c, "key with a space refused", memcache.Client.MemcachedKeyCharacterError,
        lambda: mc.set(k("a b"), b"x"),
    )
    raises(
        c, "key with a newline refused", memcache.Client.MemcachedKeyCharacterError,
        lambda: mc.get(k("a\nb")),
    )

    # touch and expiry: a past Unix time and a negative exptime expire at once; a short TTL
    # expires within a few seconds while a key touched to 100 s outlives it. The server's
    # clock ticks in whole seconds, so a TTL of 2 s lives at least 1 s.
    c.eq("set ttl 2", mc.set(k("short"), b"s", time=2), True)
    c.eq("set ttl 2 (to touch)", mc.set(k("touched"), b"t", time=2), True)
    c.eq("get before expiry", mc.get(k("short")), b"s")
    c.eq("touch", mc.touch(k("touched"), 100), 1)
    c.eq("touch missing", mc.touch(k("nothere"), 100), 0)
    c.eq("ttl 2 expires", expires_within(mc, k("short"), 6.0), True)
    c.eq("touched outlives its first ttl", mc.get(k("touched")), b"t")
    c.eq("touch to the past", mc.touch(k("touched"), check.PAST), 1)
    c.eq("expired by touch", mc.get(k("touched")), None)
    c.eq("set with a past exptime", mc.set(k("e"), b"x", time=check.PAST), True)
    c.eq("past exptime expired", mc.get(k("e")), None)
    c.eq("set with a negative exptime", mc.set(k("e2"), b"x", time=-1), True)
    c.eq("negative exptime expired", mc.get(k("e2")), None)
    c.eq("set at a Unix time", mc.set(k("unix"), b"u", time=int(time.time()) + 100), True)
    c.eq("Unix time kept", mc.get(k("unix")), b"u")
    c.eq("set_multi with a past exptime", mc.set_multi({k("e3"): b"x"}, time=check.PAST), [])
    c.eq("set_multi past exptime expired", mc.get(k("e3")), None)

    # Large values: 500 KB, near 1 MB, with other keys in one multi-get.
    big = check.large_value()
    c.eq("set 500 KB", mc.set(k("large"), big), True)
    c.eq("get 500 KB", mc.get(k("large")), big)
    near = check.large_value(1024 * 1024 - 1024)
    c.eq("set near 1 MB", mc.set(k("near"), near), True)
    c.eq("get near 1 MB", mc.get(k("near")), near)
    c.eq(
        "get_multi with near 1 MB",
        mc.get_multi([k("near"), k("m1"), k("large")]),
        {k("near"): near, k("m1"): b"1", k("large"): big},
    )
    # Over the client's limit (1 MB): not stored, silently (nothing is sent).
    c.eq("set 2 MB refused by the client", mc.set(k("toobig"), b"x" * (2 * 1024 * 1024)), 0)
    # Without the client's limit the server refuses them (SERVER_ERROR), reads past the value
    # and goes on; a refused set drops the key's old value.
    lax = client(host, port, server_max_value_length=0)
    c.eq("set old value", lax.set(k("over"), b"old"), True)
    c.eq("set 1 MB refused by the server", lax.set(k("over"), check.large_value(1024 * 1024)), False)
    c.eq("refused set dropped the old value", lax.get(k("over")), None)
    c.eq("set 2 MB refused by the server", lax.set(k("toobig"), b"x" * (2 * 1024 * 1024)), False)
    c.eq("still in step after the refusals", lax.get(k("m1")), b"1")
    c.eq("refused value not stored", lax.get(k("toobig")), None)
    c.eq(
        "set_multi refused over 1 MB",
        lax.set_multi({k("toobig"): b"y" * (2 * 1024 * 1024), k("fine"): b"f"}),
        [k("toobig")],
    )
    c.eq("set_multi stored the rest", lax.get_multi([k("toobig"), k("fine")]), {k("fine"): b"f"})
    lax.disconnect_all()

    # noreply: every write without a reply, then read back on the same connection.
    c.eq("set noreply", mc.set(k("q"), b"1", noreply=True), True)
    mc.add(k("q"), b"x", noreply=True)
    mc.add(k("qa"), b"added", noreply=True)
    mc.replace(k("qa"), b"replaced", noreply=True)
    mc.append(k("q"), b"0", noreply=True)
    mc.prepend(k("q"), b"2", noreply=True)
    mc.incr(k("q"), 5, noreply=True)
    mc.decr(k("q"), 2, noreply=True)
    mc.incr(k("text"), 1, noreply=True)  # non-numeric: an error line nobody reads
    mc.touch(k("q"), 100, noreply=True)
    mc.set_multi({k("q%d" % i): b"v%d" % i for i in range(50)}, noreply=True)
    mc.delete_multi([k("q7"), k("q8")], noreply=True)
    mc.delete(k("q9"), noreply=True)
    c.eq("noreply incr/decr landed", mc.get(k("q")), b"213")
    c.eq("noreply add/replace landed", mc.get(k("qa")), b"replaced")
    want = {k("q%d" % i): b"v%d" % i for i in range(50) if i not in (7, 8, 9)}
    c.eq("noreply set_multi/delete landed", mc.get_multi(list(want) + [k("q7"), k("q8"), k("q9")]), want)
    c.eq("non-numeric untouched by noreply incr", mc.get(k("text")), b"abc")

    # stats, as health checks read them (one entry per server).
    stats = mc.get_stats()
    c.eq("stats servers", [name for name, _ in stats], ["%s:%d (1)" % (host, port)])
    general = stats[0][1]
    for stat in ("pid", "uptime", "time", "version", "curr_items", "total_items", "cmd_get",
                 "get_hits", "get_misses", "curr_connections", "threads"):
        c.true("stats has %s" % stat, stat in general)
    c.true("stats version format", general.get("version", "").count(".") == 2)
    c.eq("stats threads", general.get("threads"), "2")
    c.true("stats counts the items", int(general.get("curr_items", "0")) > 50)
    settings = mc.get_stats("settings")[0][1]
    c.eq("settings item_size_max", settings.get("item_size_max"), "1048576")
    c.eq("settings maxbytes", settings.get("maxbytes"), "67108864")
    c.eq("settings cas_enabled", settings.get("cas_enabled"), "yes")
    slabs = mc.get_slab_stats()[0][1]
    classes = [cls for cls in slabs if cls.isdigit()]
    c.true("slab stats list classes", classes)
    c.true("slab classes have a chunk size", all(int(slabs[cls]["chunk_size"]) > 0 for cls in classes))
    c.true("slab stats active_slabs", int(slabs.get("active_slabs", "0")) == len(classes))

    # flush_all empties the cache; the client and the server go on.
    mc.flush_all()
    c.eq("flushed", mc.get(k("m1")), None)
    c.eq("flushed multi", mc.get_multi([k("m1"), k("m2"), k("near")]), {})
    c.eq("set after flush", mc.set(k("after"), b"x"), True)
    c.eq("get after flush", mc.get(k("after")), b"x")
    mc.disconnect_all()


check.Checker("python_memcached_text").run(body)
