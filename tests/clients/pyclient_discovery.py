"""elasticache-pyclient (ElastiCache auto discovery over python-memcached, hashed with
uhashring): the client is given one node as its configuration endpoint and must find the
whole cluster through `config get cluster`, spread keys over it, and follow a changed list.

Usage: python3 pyclient_discovery.py ENDPOINT NODES
  ENDPOINT  host:port of the configuration endpoint (one of the nodes)
  NODES     the nodes discovery must find, comma-separated host:port
Stores and reads back KEYS keys ("ad:<pid>:1:<i>"), prints `phase 1 ok`, then reads one line
from stdin: the node list after a change (comma-separated host:port). It waits (bounded) for the
client to discover that list, stores and reads back KEYS more keys ("ad:<pid>:2:<i>"), prints
`phase 2 ok` and exits 0. Exits 1 on any mismatch or time-out.

uhashring's ring for python-memcached names each node by its host alone, so nodes sharing an
address would be one node to it: the nodes must have distinct addresses (as ElastiCache's do).
"""

import os
import sys
import time
import warnings

# The library imports telnetlib and distutils, deprecated in Python 3.11 (the import warns).
warnings.simplefilter("ignore", DeprecationWarning)

from elasticache_pyclient import MemcacheClient  # noqa: E402

NAME = "elasticache-pyclient"
KEYS = 300
# How long discovery may take to report a list (the client polls every POLL_S).
DISCOVERY_TIMEOUT_S = 10.0
POLL_S = 0.2


def fail(why):
    print("%s: FAILED: %s" % (NAME, why), file=sys.stderr)
    sys.stdout.flush()
    os._exit(1)  # the discovery timer is a daemon thread; exit at once


def servers(client):
    """The node list as the library holds it ("host:port", from the host and port fields)."""
    with client.cluster.lock:
        return list(client.cluster.servers)


def wait_for_nodes(client, want):
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while sorted(servers(client)) != sorted(want):
        if time.monotonic() > deadline:
            fail("discovered %s (version %d), want %s"
                 % (servers(client), client.cluster.version, want))
        time.sleep(0.02)  # bounded poll (deadline above)
    if client.cluster_size() != len(want):
        fail("cluster_size() %d, want %d" % (client.cluster_size(), len(want)))
    print("%s: discovered %s (version %d)"
          % (NAME, " ".join(servers(client)), client.cluster.version), flush=True)


def store_and_read(client, phase):
    def key(i):
        return "ad:%d:%d:%d" % (os.getpid(), phase, i)

    def value(i):
        return "value-%d-%d-%s" % (phase, i, "x" * (i % 40))

    for i in range(KEYS):
        if not client.set(key(i), value(i)):
            fail("set %s failed" % key(i))
    # One multi-get per 50 keys: python-memcached splits each by node.
    for start in range(0, KEYS, 50):
        keys = [key(i) for i in range(start, start + 50)]
        got = client.get_multi(keys)
        for i in range(start, start + 50):
            if got.get(key(i)) != value(i):
                fail("get_multi %s: got %r, want %r" % (key(i), got.get(key(i)), value(i)))
    for i in range(0, KEYS, 37):
        got = client.get(key(i))
        if got != value(i):
            fail("get %s: got %r, want %r" % (key(i), got, value(i)))


def main():
    if len(sys.argv) != 3:
        print("usage: python3 pyclient_discovery.py ENDPOINT NODES", file=sys.stderr)
        sys.exit(2)
    endpoint, nodes = sys.argv[1], sys.argv[2].split(",")
    client = MemcacheClient(endpoint, ad_timeout=5, ad_interval=POLL_S)
    wait_for_nodes(client, nodes)
    store_and_read(client, 1)
    print("%s: phase 1 ok" % NAME, flush=True)
    line = sys.stdin.readline().strip()
    if not line:
        fail("no node list on stdin")
    wait_for_nodes(client, line.split(","))
    store_and_read(client, 2)
    print("%s: phase 2 ok" % NAME, flush=True)
    client.stop_timer()
    client.disconnect_all()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # any client exception is a failure, with its type
        fail("%s: %s" % (type(error).__name__, error))
