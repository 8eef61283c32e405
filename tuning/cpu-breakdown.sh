#!/usr/bin/env bash
# Where each server's CPU time per request goes under the get90-p1 load: `perf record` with the
# software cpu-clock event (works where hardware counters do not), split into the kernel's
# send path (with the loopback delivery to the client that runs inside it), the receive path,
# waiting for events, the rest of the kernel, and user space, each in microseconds per request.
#
# corecache and memcached run alternately (A B A B ...), each on CPU 1 with the load generator
# on CPU 0. Per repetition: a warm-up, then a window of WINDOW seconds in which perf samples the
# server, /proc/PID/stat gives its CPU time and `stats` its request count (cmd_get + cmd_set).
#
# Usage: tuning/cpu-breakdown.sh [REPS] [WINDOW]
# Environment: CORECACHE, BENCH (default target/release/...), MEMCACHED (default: on PATH,
# installed with apt-get if missing), OUT (a Markdown file to write the results to; default:
# stdout only), RATE (requests per second: the same load open loop at that rate, as
# compare.sh's `latency` scenario runs it, instead of closed loop).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-2}
window=${2:-5}
bin=${CORECACHE:-target/release/corecache}
bench=${BENCH:-target/release/corecache-bench}
TOOL=cpu-breakdown
# shellcheck source=tuning/servers.sh
source tuning/servers.sh # free_port, cpu_ticks, find_memcached
command -v perf >/dev/null || die "perf is needed (Debian: linux-perf)"
find_memcached
mc=$MEMCACHED
work=$(mktemp -d)
server_pid=""
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
    pkill -P $$ 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)

requests() { # requests PORT: cmd_get + cmd_set
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"stats\r\n")
data = b""
while not data.endswith(b"END\r\n"):
    chunk = s.recv(65536)
    assert chunk, "closed"
    data += chunk
st = dict(l.split()[1:3] for l in data.decode().splitlines() if l.startswith("STAT "))
print(int(st["cmd_get"]) + int(st["cmd_set"]))
EOF
}

# Inclusive ("children") shares of the symbols that mark each path, per server kind.
shares() { # shares PERF_DATA KIND
    perf report -i "$1" --children --sort sym --stdio -g none 2>/dev/null | python3 -c '
import re, sys
kind = sys.argv[1]
incl = {}
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
    if m:
        incl.setdefault(m.group(4), float(m.group(1)))
send = ["io_send"] if kind == "corecache" else ["__sys_sendmsg"]
recv = ["io_recv"] if kind == "corecache" else ["ksys_read"]
wait = ["io_cqring_wait"] if kind == "corecache" else ["__x64_sys_epoll_wait"]
get = lambda names: sum(incl.get(n, 0.0) for n in names)
kernel = get(["entry_SYSCALL_64_after_hwframe"])
s, r, w = get(send), get(recv), get(wait)
softirq = get(["do_softirq.part.0"])
print(kernel, s, softirq, r, w, kernel - s - r - w, 100 - kernel)
' "$2"
}

measure() { # measure KIND REP
    local kind=$1 rep=$2 port
    port=$(free_port)
    if [[ $kind == corecache ]]; then
        taskset -c 1 "$bin" -l 127.0.0.1 -p "$port" -m 1024 -t 1 -U 0 --cpus 1 >"$work/srv.out" 2>&1 &
    else
        taskset -c 1 "$mc" -l 127.0.0.1 -p "$port" -m 1024 -t 1 -U 0 -u root >"$work/srv.out" 2>&1 &
    fi
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    taskset -c 0 "$bench" --server "127.0.0.1:$port" --quiet --threads 1 --connections 50 \
        --keys 100000 --duration $((window + 6)) --warmup 1 --get-ratio 0.9 --set-ratio 0.1 \
        --value-size 64 --pipeline 1 --prefill ${RATE:+--rate "$RATE"} >"$work/bench.out" 2>&1 &
    local bench_pid=$!
    sleep 4 # prefill and warm-up
    local t0 r0 t1 r1
    r0=$(requests "$port"); t0=$(cpu_ticks "$server_pid")
    perf record -q -e cpu-clock -F 1999 -g -p "$server_pid" -o "$work/perf.data" -- sleep "$window" 2>/dev/null
    t1=$(cpu_ticks "$server_pid"); r1=$(requests "$port")
    wait "$bench_pid" || { cat "$work/bench.out" >&2; exit 1; }
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    local us
    us=$(python3 -c "print(($t1 - $t0) / $hz * 1e6 / ($r1 - $r0))")
    read -r kernel send softirq recv wait other user < <(shares "$work/perf.data" "$kind")
    python3 - "$kind" "$rep" "$us" "$send" "$softirq" "$recv" "$wait" "$other" "$user" "$((r1 - r0))" <<'EOF'
import sys
kind, rep, us = sys.argv[1], sys.argv[2], float(sys.argv[3])
send, softirq, recv, wait, other, user = (float(x) for x in sys.argv[4:10])
cells = [us] + [us * p / 100 for p in (send, softirq, recv, wait, other, user)]
print(f"| {kind} | {rep} | {int(sys.argv[10]) / 1e3:.0f}k | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
EOF
}

{
    echo "# CPU per request, split by kernel path (get90-p1${RATE:+, open loop at $RATE requests/s})"
    echo
    echo "- command: \`${RATE:+RATE=$RATE }tuning/cpu-breakdown.sh $reps $window\`"
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "- kernel: $(uname -r)"
    echo "- cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) cpus)"
    echo "- memcached: $("$mc" -V 2>/dev/null || true)"
    echo "- server on CPU 1, load generator on CPU 0; perf cpu-clock at 1999 Hz over ${window} s per run"
    echo
    echo "All figures are server CPU microseconds per request. *send* is the send system call (or"
    echo "io_uring send) with everything under it; *of which loopback rx* is the softirq inside it"
    echo "that delivers the reply to the client's socket (on loopback the sender pays for it);"
    echo "*recv* the receive; *wait* epoll_wait or the io_uring wait; *other kernel* the rest of"
    echo "the kernel time (system-call entry, io_uring task work, scheduling); *user* user space."
    echo
    echo "| server | rep | requests | total | send | of which loopback rx | recv | wait | other kernel | user |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for rep in $(seq "$reps"); do
        measure corecache "$rep"
        measure memcached "$rep"
    done
} | tee "${OUT:-/dev/null}"
