"""pylibmc (libmemcached): text mode by default, binary protocol with --binary.

set/get/multi-get/delete/incr/decr/cas/touch/expiry/large values.
"""

import sys

import check
import pylibmc


def body(c):
    host, port = check.address()
    binary = "--binary" in sys.argv
    mc = pylibmc.Client(
        ["%s:%d" % (host, port)],
        binary=binary,
        behaviors={"cas": True, "connect_timeout": 5000, "receive_timeout": 10000000},
    )
    k = c.key
    c.eq("set", mc.set(k("a"), b"alpha"), True)
    c.eq("get", mc.get(k("a")), b"alpha")
    c.eq("get miss", mc.get(k("missing")), None)
    c.eq("set_multi failures", mc.set_multi({k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"}), [])
    c.eq(
        "get_multi",
        mc.get_multi([k("m1"), k("m2"), k("nope"), k("m3")]),
        {k("m1"): b"1", k("m2"): b"2", k("m3"): b"3"},
    )
    c.eq("add new", mc.add(k("b"), b"beta"), True)
    c.eq("add existing", mc.add(k("b"), b"x"), False)
    c.eq("replace", mc.replace(k("b"), b"beta2"), True)
    c.eq("append", mc.append(k("b"), b"+"), True)
    c.eq("prepend", mc.prepend(k("b"), b"-"), True)
    c.eq("after append/prepend", mc.get(k("b")), b"-beta2+")
    c.eq("delete", mc.delete(k("a")), True)
    c.eq("delete missing", mc.delete(k("a")), False)
    c.eq("get deleted", mc.get(k("a")), None)
    mc.set(k("n"), b"10")
    c.eq("incr", mc.incr(k("n"), 5), 15)
    c.eq("decr", mc.decr(k("n"), 20), 0)
    try:
        missing = mc.incr(k("nn"), 1)
    except pylibmc.NotFound:
        missing = "NotFound"
    c.eq("incr missing", missing, "NotFound")
    value, token = mc.gets(k("b"))
    c.eq("gets value", value, b"-beta2+")
    c.true("gets token", token)
    c.eq("cas ok", mc.cas(k("b"), b"new", token), True)
    c.eq("cas stale", mc.cas(k("b"), b"newer", token), False)
    c.eq("after cas", mc.get(k("b")), b"new")
    # libmemcached 1.1's text-mode touch fails against memcached itself ("MEMORY ALLOCATION
    # FAILURE"), so touch is checked in binary mode only.
    if binary:
        c.eq("touch", mc.touch(k("b"), 100), True)
        c.eq("touch missing", mc.touch(k("nothere"), 100), False)
        c.eq("get after touch", mc.get(k("b")), b"new")
        # Expiry without sleeping: an exptime over 30 days is absolute Unix time, so 30 days
        # and 1 second is January 1970, already past.
        c.eq("touch to the past", mc.touch(k("b"), check.PAST), True)
        c.eq("expired by touch", mc.get(k("b")), None)
    mc.set(k("e"), b"x", time=check.PAST)
    c.eq("set with a past exptime", mc.get(k("e")), None)
    big = check.large_value()
    c.eq("set 500 KB", mc.set(k("large"), big), True)
    c.eq("get 500 KB", mc.get(k("large")), big)
    c.eq(
        "get_multi with 500 KB",
        mc.get_multi([k("large"), k("m1")]),
        {k("large"): big, k("m1"): b"1"},
    )
    try:
        ok = mc.set(k("toobig"), b"x" * (2 * 1024 * 1024))
    except pylibmc.Error:
        ok = False
    c.eq("set 2 MB refused", ok, False)
    c.eq("still usable", mc.get(k("m1")), b"1")


check.Checker("pylibmc_" + ("binary" if "--binary" in sys.argv else "text")).run(body)
