"""A pytest plugin that points pylibmc's own test suite (from its source release) at the server
under test: its tests take MEMCACHED_HOST/MEMCACHED_PORT, but the auto-configuration tests use
a fixed 127.0.0.1:11211, which this replaces with PYLIBMC_TEST_HOST:PYLIBMC_TEST_PORT.
"""

import os


def pytest_configure(config):
    import tests
    import pylibmc.autoconf
    host, port = os.environ["PYLIBMC_TEST_HOST"], os.environ["PYLIBMC_TEST_PORT"]
    tests.PylibmcTestCase.memcached_host = host
    tests.PylibmcTestCase.memcached_port = port
    defaults = list(pylibmc.autoconf.elasticache.__defaults__)
    defaults[0] = "%s:%s" % (host, port)
    pylibmc.autoconf.elasticache.__defaults__ = tuple(defaults)
