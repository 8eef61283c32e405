"""meta-memcache (meta protocol: mg/ms/md/ma): set/get/multi-get/delete/incr/cas/touch/expiry/large."""

import check
from meta_memcache import (
    CacheClient,
    Key,
    ServerAddress,
    connection_pool_factory_builder,
)


def body(c):
    host, port = check.address()
    mc = CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host=host, port=port)],
        connection_pool_factory_fn=connection_pool_factory_builder(recv_timeout=10),
    )
    k = c.key
    c.eq("set", mc.set(k("a"), b"alpha", ttl=0), True)
    c.eq("get", mc.get(k("a")), b"alpha")
    c.eq("get miss", mc.get(k("missing")), None)
    c.eq("set str", mc.set(k("s"), "text", ttl=0), True)
    c.eq("get str", mc.get(k("s")), "text")
    for name, value in ((k("m1"), b"1"), (k("m2"), b"2"), (k("m3"), b"3")):
        mc.set(name, value, ttl=0)
    got = mc.multi_get([k("m1"), k("m2"), k("nope"), k("m3")])
    c.eq(
        "multi_get",
        {key.key: value for key, value in got.items()},
        {k("m1"): b"1", k("m2"): b"2", k("nope"): None, k("m3"): b"3"},
    )
    c.eq("delete", mc.delete(k("a")), True)
    c.eq("get deleted", mc.get(k("a")), None)
    c.eq("set counter", mc.set(k("n"), 10, ttl=0), True)
    c.eq("delta_and_get", mc.delta_and_get(k("n"), 5), 15)
    c.eq("delta missing", mc.delta(k("nn"), 1), False)
    value, token = mc.get_cas(k("s"))
    c.eq("get_cas value", value, "text")
    c.true("get_cas token", token)
    c.eq("cas ok", mc.set(k("s"), "new", ttl=0, cas_token=token), True)
    c.eq("cas stale", mc.set(k("s"), "newer", ttl=0, cas_token=token), False)
    c.eq("after cas", mc.get(k("s")), "new")
    c.eq("touch", mc.touch(k("s"), ttl=100), True)
    c.eq("touch missing", mc.touch(k("nothere"), ttl=100), False)
    c.eq("touch to the past", mc.touch(k("s"), ttl=check.PAST), True)
    c.eq("expired by touch", mc.get(k("s")), None)
    big = check.large_value()
    c.eq("set 500 KB", mc.set(k("large"), big, ttl=0), True)
    c.eq("get 500 KB", mc.get(k("large")), big)
    got = mc.multi_get([k("large"), k("m1")])
    c.eq(
        "multi_get with 500 KB",
        {key.key: value for key, value in got.items()},
        {k("large"): big, k("m1"): b"1"},
    )
    c.eq("still usable", mc.get(Key(k("m1"))), b"1")


check.Checker("meta_memcache").run(body)
