#!/usr/bin/env bash
# Runs memcached 1.6.18's own test suite (t/*.t, Perl, t/lib/MemcachedTest.pm) against corecache
# or against memcached itself, one file at a time, and prints one summary line per file.
#
# The suite starts `./memcached-debug` from the memcached source directory (through
# `./timedrun 600`, memcached's small signal-forwarding helper, built here from its timedrun.c)
# and adds memcached's own flags. This script puts a wrapper named `memcached-debug` there
# that execs the chosen server with those flags (less the debug-only `-o relaxed_privileges`):
#   corecache: $CORECACHE --io-backend $BACKEND "$@"
#   memcached: $MEMCACHED -u root "$@"            (the control run)
# The wrapper adds nothing else: `-h` is the server's own help (the suite greps it to detect
# SASL, TLS, UNIX sockets, extstore and the proxy), and every reply reaches the tests as sent.
#
# Usage: tuning/t-suite.sh [corecache|memcached] [FILE.t ...]     (default: corecache, all files)
# Environment: BACKEND (epoll|uring, default epoll), CORECACHE (default target/release/corecache,
# built with `cargo build --release` if missing), MEMCACHED (default /usr/bin/memcached),
# SRC (default /tmp/mc-src/memcached-1.6.18; downloaded and unpacked if missing),
# TIMEOUT (seconds per file, default 120), LOGS (directory for each file's prove -v output,
# default a new temporary directory, printed at the end).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
server=${1:-corecache}
[[ $# -gt 0 ]] && shift
backend=${BACKEND:-epoll}
corecache=${CORECACHE:-$repo/target/release/corecache}
memcached=${MEMCACHED:-/usr/bin/memcached}
src=${SRC:-/tmp/mc-src/memcached-1.6.18}
timeout_secs=${TIMEOUT:-120}
logs=${LOGS:-$(mktemp -d /tmp/t-suite.XXXXXX)}
mkdir -p "$logs"

case $server in
corecache | memcached) ;;
*) echo "usage: $0 [corecache|memcached] [FILE.t ...]" >&2; exit 1 ;;
esac

if [[ ! -d $src/t ]]; then
    tarball=/tmp/memcached_1.6.18.orig.tar.xz
    [[ -f $tarball ]] || curl -sSf -o "$tarball" \
        http://deb.debian.org/debian/pool/main/m/memcached/memcached_1.6.18.orig.tar.xz || exit 1
    mkdir -p "$(dirname "$src")"
    tar -xJf "$tarball" -C "$(dirname "$src")" || exit 1
fi
if [[ $server == corecache && ! -x $corecache ]]; then
    cargo build --release || exit 1
fi
command -v prove >/dev/null || { echo "prove (perl) is missing" >&2; exit 1; }
[[ -x $src/timedrun ]] || cc -O2 -o "$src/timedrun" "$src/timedrun.c" || exit 1

cat >"$src/memcached-debug" <<'EOF'
#!/bin/sh
# Installed by corecache's tuning/t-suite.sh: the server memcached's t/ suite starts.
# MemcachedTest.pm appends `-o relaxed_privileges` to every start; only a memcached-debug build
# knows it (release memcached 1.6.18 refuses it as an illegal suboption), so that one pair is
# dropped. Every other argument is passed on unchanged.
n=$#
while [ "$n" -gt 0 ]; do
    a=$1; shift; n=$((n - 1))
    if [ "$a" = "-o" ] && [ "$n" -gt 0 ] && [ "$1" = "relaxed_privileges" ]; then
        shift; n=$((n - 1)); continue
    fi
    set -- "$@" "$a"
done
case "${T_SUITE_SERVER:-corecache}" in
memcached) exec "$T_SUITE_MEMCACHED" -u root "$@" ;;
*) exec "$T_SUITE_CORECACHE" --io-backend "$T_SUITE_BACKEND" "$@" ;;
esac
EOF
chmod +x "$src/memcached-debug"
export T_SUITE_SERVER=$server T_SUITE_BACKEND=$backend
export T_SUITE_CORECACHE=$corecache T_SUITE_MEMCACHED=$memcached

cd "$src" || exit 1
if [[ $# -gt 0 ]]; then files=("$@"); else files=(t/*.t); fi
passed=0
failed=0
for file in "${files[@]}"; do
    file=t/$(basename "$file")
    name=$(basename "$file" .t)
    log=$logs/$name.log
    timeout "$timeout_secs" prove -v "$file" >"$log" 2>&1
    rc=$?
    if [[ $rc -eq 0 ]]; then
        skip=$(grep -m1 -o 'skipped: .*' "$log" || true)
        echo "PASS $file${skip:+ ($skip)}"
        passed=$((passed + 1))
    else
        what=$(grep -m1 -E '^ *Failed tests?: ' "$log" | sed 's/^ *//')
        [[ $rc -eq 124 ]] && what="timed out after ${timeout_secs}s${what:+; $what}"
        [[ -z $what ]] && what=$(grep -m1 -E 'Parse errors|Bad plan|Dubious|Wstat' "$log" | sed 's/^ *//')
        echo "FAIL $file (${what:-exit $rc})"
        grep -E '^not ok ' "$log" | cut -c1-120 | sed 's/^/    /' | head -20
        failed=$((failed + 1))
    fi
done
echo "server=$server backend=$backend passed=$passed failed=$failed logs=$logs"
[[ $failed -eq 0 ]]
