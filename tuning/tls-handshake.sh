#!/usr/bin/env bash
# Server CPU per TLS handshake, corecache against memcached (both `-t 1 -Z` with the test
# certificates of tests/tls/, ECDSA P-256), A B A B: a Python client on CLIENT_CPU (0) opens N
# connections one after another to the server on SERVER_CPU (1), each a full handshake (no
# resumption), one `version` and a close. Prints per server: wall time, the slowest connection,
# and the server's utime+stime divided by N.
#
# Usage: tuning/tls-handshake.sh [N (1000)] [REPS (2)]
# Environment: CORECACHE (target/release/corecache), MEMCACHED (found on PATH or installed).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=tls-handshake
# shellcheck source=tuning/servers.sh
source tuning/servers.sh
n=${1:-1000}
reps=${2:-2}
CORECACHE=${CORECACHE:-target/release/corecache}
find_memcached
start_work
SERVER_TLS=1
hz=$(getconf CLK_TCK)
client() { # client PORT: N handshakes; prints "wall_s worst_ms"
    taskset -c "${CLIENT_CPU:-0}" python3 - "$1" "$n" "$PWD/tests/tls/ca.pem" <<'PY'
import socket, ssl, sys, time
port, n, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
start, worst = time.time(), 0.0
for _ in range(n):
    t = time.time()
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    s.sendall(b"version\r\n")
    assert s.recv(100).startswith(b"VERSION")
    s.close()
    worst = max(worst, time.time() - t)
print(f"{time.time() - start:.2f} {worst * 1e3:.1f}")
PY
}
echo "# TLS handshakes: $n full handshakes per run, server CPU per handshake"
echo
echo "- command: \`tuning/tls-handshake.sh $n $reps\`"
echo "- git: $(git rev-parse --short HEAD); kernel: $(uname -r); cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) cpus)"
echo "- memcached: $("$MEMCACHED" -V)"
echo
echo "| server | rep | wall s | slowest connection ms | server CPU µs per handshake |"
echo "|---|---|---|---|---|"
for rep in $(seq "$reps"); do
    for kind in corecache memcached; do
        if [[ $kind == corecache ]]; then bin=$CORECACHE; else bin=$MEMCACHED; fi
        start_server "$kind" "$bin" 1 64 "${SERVER_CPU:-1}"
        t0=$(cpu_ticks "$SERVER_PID")
        read -r wall worst < <(client "$SERVER_PORT")
        t1=$(cpu_ticks "$SERVER_PID")
        stop_server
        echo "| $kind | $rep | $wall | $worst | $(( (t1 - t0) * 1000000 / hz / n )) |"
    done
done
