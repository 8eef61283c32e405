#!/usr/bin/env bash
# User-space instructions per request for a pipelined GET of one warm key, counted by
# valgrind's callgrind (repeatable: instructions, not time).
#
# The server runs under callgrind twice, once serving N1 gets and once N2; the difference of
# the two totals divided by N2 - N1 cancels startup and shutdown. Requests go 100 per write.
#
# Usage: tuning/callgrind-get.sh [BACKEND (epoll|uring)] [N1] [N2]
# Environment: CORECACHE (default target/release/corecache).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-epoll}
n1=${2:-20000}
n2=${3:-120000}
bin=${CORECACHE:-target/release/corecache}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {
    local n=$1 out=$work/cg.$1
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" -p 0 -t 1 -m 64 \
        --io-backend "$backend" >"$work/stdout.$n" 2>"$work/stderr.$n" &
    local vg=$!
    local addr=""
    for _ in $(seq 600); do
        addr=$(awk '/^listening/{print $2}' "$work/stdout.$n" 2>/dev/null || true)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { cat "$work/stderr.$n"; echo "server did not start" >&2; exit 1; }
    python3 - "$addr" "$n" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
s = socket.create_connection((host, int(port)))
s.sendall(b"set warm 0 0 32\r\n" + b"v" * 32 + b"\r\n")
assert s.recv(100) == b"STORED\r\n"
reply = b"VALUE warm 0 32\r\n" + b"v" * 32 + b"\r\nEND\r\n"
batch = 100
sent = 0
while sent < n:
    k = min(batch, n - sent)
    s.sendall(b"get warm\r\n" * k)
    want = len(reply) * k
    got = 0
    while got < want:
        chunk = s.recv(1 << 20)
        assert chunk, "closed"
        got += len(chunk)
    sent += k
s.close()
EOF
    kill -TERM "$vg"
    wait "$vg" || true
    awk '/^summary:|^totals:/{print $2; exit}' "$out"
}

i1=$(run "$n1")
i2=$(run "$n2")
per=$(python3 -c "print(round(($i2 - $i1) / ($n2 - $n1), 1))")
echo "backend=$backend n1=$n1 instructions=$i1 n2=$n2 instructions=$i2"
echo "user-space instructions per pipelined GET (100 per write): $per"
