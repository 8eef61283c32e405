#!/usr/bin/env bash
# Server CPU time per request of two or more server builds (or memcached) on one load, run in
# turn: each repetition runs every variant once, in forward order on odd repetitions and in
# reverse on even ones (A B C, C B A, ...), so a drift in the host's speed falls on all of them
# alike. Each run starts its server afresh on CPU $SERVER_CPU (`-t 1 -U 0 -m $MEMORY_MB`) with
# corecache-bench on CPU $CLIENT_CPU; the figure is the server's utime + stime (from
# /proc/PID/stat) over its whole life divided by every request the bench sent (prefill,
# warm-up and measured window, from its "server should see" line).
#
# Prints each run, then per variant the median and range, and the median over repetitions of
# its ratio to the first variant in the same repetition.
#
# Usage: tuning/ab-cpu.sh [--reps N] [--duration S] [--out FILE.md] NAME=COMMAND ...
#   COMMAND is a server command line without address flags, e.g.
#   'base=/tmp/corecache-old --cpus 1', 'new=target/release/corecache --cpus 1',
#   'whole=env CORECACHE_TEST_WHOLE_BUFS=1 target/release/corecache --cpus 1' (a build with
#   --features test-hooks), or 'memcached=memcached -u root'.
# Load (environment): VALUE_SIZE (64), KEYS (100000), CONNECTIONS (50), GET_RATIO (0.9),
# SET_RATIO (0.1), PIPELINE (1), WARMUP (2). Also BENCH, SERVER_CPU (1), CLIENT_CPU (0),
# MEMORY_MB (1024).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=ab-cpu
# shellcheck source=tuning/servers.sh
source tuning/servers.sh # free_port, cpu_ticks, cpu_per_request
reps=3
duration=5
out=
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *=*) break ;;
        *) die "unknown argument $1 (see the usage at the top of $0)" ;;
    esac
done
[[ $# -ge 2 ]] || die "name at least two variants: NAME=COMMAND ..."
bench=${BENCH:-target/release/corecache-bench}
[[ -x $bench ]] || die "$bench missing: cargo build --release"
server_cpu=${SERVER_CPU:-1}
client_cpu=${CLIENT_CPU:-0}
names=()
commands=()
for v in "$@"; do
    names+=("${v%%=*}")
    commands+=("${v#*=}")
done
start_work

# run COMMAND: prints "microseconds-per-request ops/s" of one run.
run() {
    local port pid t0 t1
    port=$(free_port)
    # shellcheck disable=SC2086 # the command is split into words on purpose
    taskset -c "$server_cpu" $1 -l 127.0.0.1 -p "$port" -t 1 -U 0 -m "${MEMORY_MB:-1024}" \
        >"$WORK/server.out" 2>&1 &
    pid=$!
    SERVER_PID=$pid
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/server.out" >&2; die "server exited: $1"; }
        sleep 0.1
    done
    t0=$(cpu_ticks "$pid")
    taskset -c "$client_cpu" "$bench" --server "127.0.0.1:$port" --threads 1 \
        --connections "${CONNECTIONS:-50}" --keys "${KEYS:-100000}" --duration "$duration" \
        --warmup "${WARMUP:-2}" --get-ratio "${GET_RATIO:-0.9}" --set-ratio "${SET_RATIO:-0.1}" \
        --value-size "${VALUE_SIZE:-64}" --pipeline "${PIPELINE:-1}" --prefill \
        >"$WORK/bench.out" 2>&1 || { cat "$WORK/bench.out" >&2; die "load generator failed"; }
    t1=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    SERVER_PID=
    grep -q "errors    0 total" "$WORK/bench.out" || { cat "$WORK/bench.out" >&2; die "errors"; }
    cpu_per_request "$WORK/bench.out" "$t0" "$t1"
}

: >"$WORK/runs"
n=${#names[@]}
for rep in $(seq "$reps"); do
    order=$(seq 0 $((n - 1)))
    ((rep % 2 == 0)) && order=$(seq $((n - 1)) -1 0)
    for i in $order; do
        read -r us ops < <(run "${commands[$i]}")
        echo "$rep ${names[$i]} $us $ops" >>"$WORK/runs"
        log "rep $rep ${names[$i]}: $us us/request, $ops ops/s"
    done
done

report=$(python3 - "$WORK/runs" "${names[@]}" <<'EOF'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
names = sys.argv[2:]
us = {(int(r), n): float(u) for r, n, u, _ in runs}
ops = {(int(r), n): int(o) for r, n, _, o in runs}
reps = sorted({int(r) for r, *_ in runs})
print("| variant | CPU µs/request, median | range | ops/s, median | ratio to "
      f"{names[0]}, median | range |")
print("|---|---|---|---|---|---|")
for n in names:
    u = [us[(r, n)] for r in reps]
    o = [ops[(r, n)] for r in reps]
    q = [us[(r, n)] / us[(r, names[0])] for r in reps]
    print(f"| {n} | {statistics.median(u):.2f} | {min(u):.2f}-{max(u):.2f} | "
          f"{statistics.median(o):.0f} | {statistics.median(q):.3f} | {min(q):.3f}-{max(q):.3f} |")
print()
print("Runs (repetition, variant, µs/request, ops/s), in the order they ran:")
for r, n, u, o in runs:
    print(f"- {r} {n}: {u}, {o}")
EOF
)
echo "$report"
if [[ -n $out ]]; then
    {
        echo "# Server CPU per request: $*"
        echo
        echo "- command: \`tuning/ab-cpu.sh --reps $reps --duration $duration ...\` (variants below)"
        echo "- load: VALUE_SIZE=${VALUE_SIZE:-64} KEYS=${KEYS:-100000} CONNECTIONS=${CONNECTIONS:-50}" \
            "GET_RATIO=${GET_RATIO:-0.9} SET_RATIO=${SET_RATIO:-0.1} PIPELINE=${PIPELINE:-1}"
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- git: $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
        echo "- kernel: $(uname -r)"
        echo "- cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo) ($(nproc) cpus)"
        echo
        for i in "${!names[@]}"; do echo "- ${names[$i]}: \`${commands[$i]}\`"; done
        echo
        echo "$report"
    } >"$out"
    log "wrote $out"
fi
