"""pymemcache (text protocol): set/get/multi-get/delete/incr/decr/cas/touch/expiry/large."""

import check
from pymemcache.client.base import Client


def body(c):
    host, port = check.address()
    mc = Client((host, port), connect_timeout=5, timeout=10, default_noreply=False)
    k = c.key
    c.eq("version", bool(mc.version()), True)
    c.eq("set", mc.set(k("a"), b"alpha"), True)
    c.eq("get", mc.get(k("a")), b"alpha")
    c.eq("get miss", mc.get(k("missing")), None)
    mc.set_many({k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"})
    c.eq(
        "get_many",
        mc.get_many([k("m1"), k("m2"), k("nope"), k("m3")]),
        {k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"},
    )
    c.eq("add existing", mc.add(k("a"), b"x"), False)
    c.eq("add new", mc.add(k("b"), b"beta"), True)
    c.eq("replace", mc.replace(k("b"), b"beta2"), True)
    c.eq("replace missing", mc.replace(k("zz"), b"x"), False)
    c.eq("append", mc.append(k("b"), b"+"), True)
    c.eq("prepend", mc.prepend(k("b"), b"-"), True)
    c.eq("after append/prepend", mc.get(k("b")), b"-beta2+")
    c.eq("delete", mc.delete(k("a")), True)
    c.eq("delete missing", mc.delete(k("a")), False)
    c.eq("get deleted", mc.get(k("a")), None)
    # incr / decr
    mc.set(k("n"), b"10")
    c.eq("incr", mc.incr(k("n"), 5), 15)
    c.eq("decr", mc.decr(k("n"), 20), 0)
    c.eq("incr missing", mc.incr(k("nn"), 1), None)
    mc.set(k("big"), b"18446744073709551615")
    c.eq("incr wraps", mc.incr(k("big"), 1), 0)
    # cas
    value, token = mc.gets(k("b"))
    c.eq("gets value", value, b"-beta2+")
    c.true("gets token", token)
    c.eq("cas ok", mc.cas(k("b"), b"new", token), True)
    c.eq("cas stale", mc.cas(k("b"), b"newer", token), False)
    c.eq("cas missing", mc.cas(k("nothere"), b"x", token), None)
    c.eq("after cas", mc.get(k("b")), b"new")
    # touch and expiry without sleeping: a negative exptime expires at once.
    c.eq("touch", mc.touch(k("b"), 100), True)
    c.eq("touch missing", mc.touch(k("nothere"), 100), False)
    c.eq("get after touch", mc.get(k("b")), b"new")
    c.eq("touch to the past", mc.touch(k("b"), check.PAST), True)
    c.eq("expired by touch", mc.get(k("b")), None)
    mc.set(k("e"), b"x", expire=check.PAST)
    c.eq("set with a past exptime", mc.get(k("e")), None)
    mc.set(k("e2"), b"x", expire=-1)
    c.eq("set with a negative exptime", mc.get(k("e2")), None)
    # large values
    big = check.large_value()
    c.eq("set 500 KB", mc.set(k("large"), big), True)
    c.eq("get 500 KB", mc.get(k("large")), big)
    got = mc.get_many([k("large"), k("m1")])
    c.eq("multi-get with 500 KB", got, {k("large"): big, k("m1"): b"1"})
    too_big = b"x" * (2 * 1024 * 1024)
    try:
        ok = mc.set(k("toobig"), too_big)
    except Exception:  # pymemcache raises MemcacheServerError on SERVER_ERROR
        ok = False
    c.eq("set 2 MB refused", ok, False)
    c.eq("still usable", mc.get(k("m1")), b"1")
    mc.close()


check.Checker("pymemcache_text").run(body)
