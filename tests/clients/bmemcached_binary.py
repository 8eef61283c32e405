"""python-binary-memcached (binary protocol): set/get/multi-get/delete/incr/decr/cas/expiry/large.

The library has no touch; expiry is checked with an exptime already in the past.
"""

import check
import bmemcached


def body(c):
    host, port = check.address()
    mc = bmemcached.Client(("%s:%d" % (host, port),), socket_timeout=10)
    k = c.key
    c.eq("set", mc.set(k("a"), b"alpha"), True)
    c.eq("get", mc.get(k("a")), b"alpha")
    c.eq("get miss", mc.get(k("missing")), None)
    c.eq("set str", mc.set(k("s"), "text"), True)
    c.eq("get str", mc.get(k("s")), "text")
    mc.set_multi({k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"})
    c.eq(
        "get_multi",
        mc.get_multi([k("m1"), k("m2"), k("nope"), k("m3")]),
        {k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"},
    )
    c.eq("add new", mc.add(k("b"), b"beta"), True)
    c.eq("add existing", mc.add(k("b"), b"x"), False)
    c.eq("replace", mc.replace(k("b"), b"beta2"), True)
    c.eq("replace missing", mc.replace(k("zz"), b"x"), False)
    c.eq("delete", mc.delete(k("a")), True)
    # The library reports a delete of a missing key as success too.
    c.eq("delete missing", mc.delete(k("a")), True)
    c.eq("get deleted", mc.get(k("a")), None)
    c.eq("incr creates", mc.incr(k("n"), 5), 0)
    c.eq("incr", mc.incr(k("n"), 5), 5)
    c.eq("decr", mc.decr(k("n"), 20), 0)
    value, token = mc.gets(k("b"))
    c.eq("gets value", value, b"beta2")
    c.true("gets token", token)
    c.eq("cas ok", mc.cas(k("b"), b"new", token), True)
    c.eq("cas stale", mc.cas(k("b"), b"newer", token), False)
    c.eq("after cas", mc.get(k("b")), b"new")
    c.eq("set with a past exptime", mc.set(k("e"), b"x", time=check.PAST), True)
    c.eq("expired", mc.get(k("e")), None)
    big = check.large_value()
    c.eq("set 500 KB", mc.set(k("large"), big), True)
    c.eq("get 500 KB", mc.get(k("large")), big)
    c.eq(
        "get_multi with 500 KB",
        mc.get_multi([k("large"), k("m1")]),
        {k("large"): big, k("m1"): b"1"},
    )
    c.eq("still usable", mc.get(k("m1")), b"1")
    mc.disconnect_all()


check.Checker("bmemcached_binary").run(body)
