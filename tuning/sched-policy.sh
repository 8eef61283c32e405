#!/usr/bin/env bash
# Latency with corecache's default scheduling policy and with --sched-policy batch, and
# memcached's default, under corecache-bench's open loop (1 thread, 50 connections, 10,000
# keys, 90% get), in three settings on a host with at least two CPUs:
#
#   same-host  server (default shard count) and bench on the same CPUs, nothing pinned, --rate
#              RATE_SAME (40000): a client on the host, as an application or a load generator.
#   hogs       the same at RATE_HOGS (10000), with one CPU-bound process (`yes`) per CPU at the
#              same priority: CPU-bound neighbours the shards cannot preempt under batch.
#   burst      `-t 1` pinned to SERVER_CPU (1), bench pinned to CLIENT_CPU (0), --rate
#              RATE_BURST (20000), with a process on the server's CPU busy 20 ms of every 100 ms.
#
# Runs alternate between the servers (A B C A B C ...), each on a fresh server; it prints and
# writes (tuning/results/<stamp>-sched-policy.md) the medians [min-max] of get p50/p99/p99.9/max
# and server CPU per request (the server's whole run, prefill and warm-up included, over the
# measured requests: comparable within one table only), and the steal time the bench saw (a
# run with a 100 ms tail and 100 ms of steal lost that time to the hypervisor, not the server).
#
# Usage: tuning/sched-policy.sh [--reps N] [--duration S] [--settings "same-host hogs burst"]
# Environment: CORECACHE, BENCH (target/release/...), MEMCACHED (on PATH, else apt-get),
# RATE_SAME, RATE_HOGS, RATE_BURST, SERVER_CPU, CLIENT_CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REPS=5
DURATION=5
SETTINGS="same-host hogs burst"
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --settings) SETTINGS=$2; shift 2 ;;
        *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
CORECACHE=${CORECACHE:-target/release/corecache}
BENCH=${BENCH:-target/release/corecache-bench}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
TOOL=sched-policy
# shellcheck source=tuning/servers.sh
source "$ROOT/tuning/servers.sh" # free_port, cpu_ticks, find_memcached, die
[[ -x $CORECACHE && -x $BENCH ]] || die "cargo build --release first"
find_memcached

WORK=$(mktemp -d)
NEIGHBOURS=()
# Replaces servers.sh's cleanup: this script starts its servers itself, and neighbours.
cleanup() {
    for p in "${NEIGHBOURS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)

# run SETTING SERVER PIN_SERVER PIN_BENCH RATE SERVER-COMMAND...
run() {
    local setting=$1 server=$2 pin_server=$3 pin_bench=$4 rate=$5
    shift 5
    local port pid t0 t1 out
    port=$(free_port)
    $pin_server "$@" -p "$port" -l 127.0.0.1 >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.02; done
    t0=$(cpu_ticks "$pid")
    out=$($pin_bench "$BENCH" --server 127.0.0.1:"$port" --json --quiet --threads 1 --connections 50 \
        --rate "$rate" --keys 10000 --prefill --warmup 1 --duration "$DURATION")
    t1=$(cpu_ticks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 -c '
import json, sys
d = json.loads(sys.argv[1]); g = d["ops_by_type"]["get"]["latency_us"]
cpu = (int(sys.argv[3]) * 1e6 / int(sys.argv[4])) / max(d["ops"], 1)
steal = (d.get("host") or {}).get("steal_ms", -1)  # -1: no /proc/stat counters
print(sys.argv[2], g["p50"], g["p99"], g["p99_9"], g["max"], f"{cpu:.2f}", d["errors"]["total"], steal)
' "$out" "$setting $server" $((t1 - t0)) "$HZ" | tee -a "$WORK/rows" >&2
}

neighbours() {
    case $1 in
        hogs) for _ in $(seq "$(nproc)"); do yes >/dev/null & NEIGHBOURS+=($!); done ;;
        burst)
            taskset -c "$SERVER_CPU" python3 -c '
import time
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.02: pass
    time.sleep(0.08)' & NEIGHBOURS+=($!) ;;
    esac
}
stop_neighbours() {
    for p in "${NEIGHBOURS[@]}"; do kill "$p" 2>/dev/null || true; done
    NEIGHBOURS=()
}

for setting in $SETTINGS; do
    neighbours "$setting"
    for rep in $(seq "$REPS"); do
        case $setting in
            same-host|hogs)
                rate=${RATE_SAME:-40000}
                [[ $setting == hogs ]] && rate=${RATE_HOGS:-10000}
                run "$setting" default "" "" "$rate" "$CORECACHE"
                run "$setting" batch "" "" "$rate" "$CORECACHE" --sched-policy batch
                run "$setting" memcached "" "" "$rate" "$MEMCACHED" -u "${USER:-root}"
                ;;
            burst)
                s="taskset -c $SERVER_CPU" c="taskset -c $CLIENT_CPU" rate=${RATE_BURST:-20000}
                run burst default "$s" "$c" "$rate" "$CORECACHE" -t 1
                run burst batch "$s" "$c" "$rate" "$CORECACHE" -t 1 --sched-policy batch
                run burst memcached "$s" "$c" "$rate" "$MEMCACHED" -t 1 -u "${USER:-root}"
                ;;
            *) echo "unknown setting $setting" >&2; exit 2 ;;
        esac
    done
    stop_neighbours
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
report=tuning/results/$stamp-sched-policy.md
{
    echo "# --sched-policy and latency (tuning/sched-policy.sh)"
    echo
    echo "- command: \`tuning/sched-policy.sh --reps $REPS --duration $DURATION --settings \"$SETTINGS\"\`"
    echo "- git $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    echo "- kernel $(uname -r), CPU $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) CPUs, memcached $("$MEMCACHED" -V | awk '{print $2}')"
    echo
    python3 - "$WORK/rows" <<'EOF'
import statistics, sys
data = {}
for line in open(sys.argv[1]):
    setting, server, *vals = line.split()
    data.setdefault((setting, server), []).append([float(v) for v in vals])
print("get latency in us, server CPU us/request and steal ms (time the hypervisor did not run")
print("this machine's CPUs in the measured window; a tail as long as that is the host's),")
print("medians [min-max]\n")
print("| setting | server | p50 | p99 | p99.9 | max | CPU/req | errors | steal ms |")
print("|---|---|---|---|---|---|---|---|---|")
for (setting, server), rows in data.items():
    cells = []
    for i in range(7):
        col = [r[i] for r in rows]
        m = statistics.median(col)
        digits = 2 if i == 4 else 0
        cells.append(f"{m:.0f}" if i == 5 else f"{m:.{digits}f} [{min(col):.{digits}f}-{max(col):.{digits}f}]")
    print(f"| {setting} | {server} | " + " | ".join(cells) + " |")
EOF
} >"$report"
cat "$report"
echo "written: $report" >&2
