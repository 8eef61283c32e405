"""Shared helpers for the client compatibility scripts: argument parsing and checks.

Every script takes the server address (`host:port`) as its first argument, runs its checks,
prints `<name>: ok (<n> checks)` and exits 0, or prints each mismatch and exits 1.
"""

import os
import sys


class Checker:
    def __init__(self, name):
        self.name = name
        self.checks = 0
        self.failures = 0
        # A per-run key prefix, so several scripts can share one server.
        self.prefix = "%s:%d:" % (name, os.getpid())

    def key(self, suffix):
        return self.prefix + suffix

    def eq(self, what, got, want):
        self.checks += 1
        if got != want:
            self.failures += 1
            print(
                "%s: MISMATCH %s: got %s, want %s"
                % (self.name, what, short(got), short(want)),
                file=sys.stderr,
            )

    def true(self, what, cond):
        self.eq(what, bool(cond), True)

    def run(self, body):
        try:
            body(self)
        except Exception as error:  # any client exception is a failure, with its type
            self.failures += 1
            print(
                "%s: EXCEPTION %s: %s" % (self.name, type(error).__name__, error),
                file=sys.stderr,
            )
        if self.failures:
            print(
                "%s: FAILED (%d of %d checks, or an exception)"
                % (self.name, self.failures, self.checks),
                file=sys.stderr,
            )
            sys.exit(1)
        print("%s: ok (%d checks)" % (self.name, self.checks))


# An exptime over 30 days is absolute Unix time: 30 days and 1 second is in January 1970, so an
# item stored or touched with it is expired at once (expiry checked without sleeping).
PAST = 30 * 24 * 3600 + 1


def short(value):
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + "...<%d chars>" % len(text)


def address():
    addresses = [a for a in sys.argv[1:] if not a.startswith("-") and ":" in a]
    if not addresses:
        print("usage: %s HOST:PORT [options]" % sys.argv[0], file=sys.stderr)
        sys.exit(2)
    host, port = addresses[0].rsplit(":", 1)
    return host, int(port)


def large_value(size=500 * 1024):
    """A ~500 KB value that is not one repeated byte (catches offset bugs)."""
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]
