#!/usr/bin/env bash
# User-space instructions per request for a pipelined GET of one warm key, counted by
# valgrind's callgrind (repeatable: instructions, not time).
#
# The server runs under callgrind twice, once serving N1 gets and once N2; the difference of
# the two totals divided by N2 - N1 cancels startup and shutdown. Requests go BATCH per write
# (100 by default); BATCH=1 waits for each reply before the next request, so every request is
# a whole loop turn of the server (wake-up, receive, reply, back to sleep).
#
# With THREADS=2 and KEYS=16 the gets cycle over 16 keys that the two shards share about
# evenly, so about half of them cross to the other shard and back: the user-space cost of the
# cross-core path (the threads run one at a time under valgrind; their instructions add up).
#
# Usage: tuning/callgrind-get.sh [BACKEND (epoll|uring)] [N1] [N2]
# Environment: CORECACHE (default target/release/corecache), THREADS (server -t, default 1),
# KEYS (distinct keys the gets cycle over, default 1), BATCH (requests per write, default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-epoll}
n1=${2:-20000}
n2=${3:-120000}
bin=${CORECACHE:-target/release/corecache}
threads=${THREADS:-1}
keys=${KEYS:-1}
batch=${BATCH:-100}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
work=$(mktemp -d)
trap '[[ -n ${KEEP:-} ]] && cp "$work"/cg.* "$KEEP"/ ; rm -rf "$work"' EXIT

run() {
    local n=$1 out=$work/cg.$1
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" -p 0 -t "$threads" -m 64 \
        --io-backend "$backend" >"$work/stdout.$n" 2>"$work/stderr.$n" &
    local vg=$!
    local addr=""
    for _ in $(seq 600); do
        addr=$(awk '/^listening/{print $2}' "$work/stdout.$n" 2>/dev/null || true)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { cat "$work/stderr.$n"; echo "server did not start" >&2; exit 1; }
    python3 - "$addr" "$n" "$keys" "$batch" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
nkeys = int(sys.argv[3])
names = [b"warm"] if nkeys == 1 else [b"warm%02d" % i for i in range(nkeys)]
s = socket.create_connection((host, int(port)))
for name in names:
    s.sendall(b"set " + name + b" 0 0 32\r\n" + b"v" * 32 + b"\r\n")
    got = b""
    while not got.endswith(b"\r\n"):
        got += s.recv(100)
    assert got == b"STORED\r\n", got
reply_len = {name: len(b"VALUE " + name + b" 0 32\r\n" + b"v" * 32 + b"\r\nEND\r\n") for name in names}
batch = int(sys.argv[4])
sent = 0
while sent < n:
    k = min(batch, n - sent)
    picks = [names[(sent + i) % len(names)] for i in range(k)]
    s.sendall(b"".join(b"get " + name + b"\r\n" for name in picks))
    want = sum(reply_len[name] for name in picks)
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
echo "backend=$backend threads=$threads keys=$keys batch=$batch n1=$n1 instructions=$i1 n2=$n2 instructions=$i2"
echo "user-space instructions per GET ($batch per write): $per"
