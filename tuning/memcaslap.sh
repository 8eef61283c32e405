#!/usr/bin/env bash
# corecache against memcached under a load generator that is not ours: libmemcached's
# memaslap (Debian's libmemcached-tools ships it as `memcaslap`), with its own key and value
# mix (by its defaults: 64-byte keys, 1 KiB values, 90% get and 10% set) and its own data
# verification (`-v 0.05`: 5% of gets checked against what was set).
#
# Each scenario runs A B A B A B (A = corecache, B = memcached; 3 repetitions by default), each
# on a freshly started server pinned to one core (`taskset -c $SERVER_CPU`, `-t 1`) with
# memcaslap pinned to another (`$CLIENT_CPU`). For every run it records memcaslap's ops/s, the
# server's CPU time per op (utime+stime from /proc/PID/stat), and memcaslap's get misses,
# verification failures and (UDP) drops and timeouts. It prints one table of medians with
# [min-max] ranges and corecache/memcached ratios and writes it, with every run's raw output,
# into tuning/results/<stamp>-memcaslap.md.
#
# Usage: tuning/memcaslap.sh [--scenarios a,b,...] [--duration S] [--reps N] [--out DIR] [--list]
# Scenarios: text (ASCII), binary (-B), multiget10 (-d 10), udp (-U: gets and sets over UDP).
# Environment: CORECACHE (default target/release/corecache), MEMCACHED (default: on PATH,
# installed with apt-get if missing), MEMCASLAP (default: on PATH; libmemcached-tools is
# installed with apt-get if missing), SERVER_CPU (1), CLIENT_CPU (0), MEMORY_MB (1024),
# CONCURRENCY (50).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ALL_SCENARIOS="text binary multiget10 udp"
SCENARIOS=$ALL_SCENARIOS
DURATION=10
REPS=3
OUT_DIR=tuning/results

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --scenarios) SCENARIOS=${2//,/ }; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --list) echo "$ALL_SCENARIOS"; exit 0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 1 ;;
    esac
done
for s in $SCENARIOS; do
    [[ " $ALL_SCENARIOS " == *" $s "* ]] || { echo "unknown scenario $s (have: $ALL_SCENARIOS)" >&2; exit 1; }
done

CORECACHE=${CORECACHE:-target/release/corecache}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
MEMORY_MB=${MEMORY_MB:-1024}
CONCURRENCY=${CONCURRENCY:-50}
CLK_TCK=$(getconf CLK_TCK)

TOOL=memcaslap
# shellcheck source=tuning/servers.sh
source "$ROOT/tuning/servers.sh"

find_memcached
if [[ -z ${MEMCASLAP:-} ]]; then
    MEMCASLAP=$(command -v memcaslap || command -v memaslap || true)
    if [[ -z $MEMCASLAP ]]; then
        log "memcaslap not found; installing libmemcached-tools with apt-get"
        if [[ $EUID -eq 0 ]]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libmemcached-tools >/dev/null
        MEMCASLAP=$(command -v memcaslap || command -v memaslap) || die "could not install memcaslap"
    fi
fi
[[ -x $CORECACHE ]] || die "corecache binary $CORECACHE not found (build it, or set CORECACHE)"
command -v taskset >/dev/null || die "taskset (util-linux) is required"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR"
start_work

# scenario_args NAME: memcaslap's flags for the scenario (besides server, time and pinning).
scenario_args() {
    local common=(-T 1 -c "$CONCURRENCY" -v 0.05)
    case $1 in
        text) echo "${common[*]}" ;;
        binary) echo "${common[*]} -B" ;;
        multiget10) echo "${common[*]} -d 10" ;;
        # memcaslap's UDP mode keeps no more than one request per concurrency in flight.
        udp) echo "-T 1 -c 16 -U" ;;
    esac
}

field() { # field OUTPUT NAME: the number after "NAME: " in memcaslap's summary
    { grep -o "$2: [0-9.]*" <<<"$1" || true; } | tail -n1 | awk '{ print $2 }'
}

# run_one SCENARIO SIDE REP: appends "scenario side tps cpu_us_op misses verify_failed drops".
run_one() {
    local scenario=$1 side=$2 rep=$3 kind bin
    if [[ $side == A ]]; then kind=corecache bin=$CORECACHE; else kind=memcached bin=$MEMCACHED; fi
    if [[ $scenario == udp ]]; then UDP_SAME_PORT=1; else UDP_SAME_PORT=0; fi
    start_server "$kind" "$bin" 1 "$MEMORY_MB" "$SERVER_CPU"
    local args ticks0 ticks1 out rc=0
    read -r -a args <<<"$(scenario_args "$scenario")"
    local cmd=(taskset -c "$CLIENT_CPU" "$MEMCASLAP" -s "127.0.0.1:$SERVER_PORT" -t "${DURATION}s" "${args[@]}")
    ticks0=$(cpu_ticks "$SERVER_PID")
    out=$("${cmd[@]}" 2>&1) || rc=$?
    ticks1=$(cpu_ticks "$SERVER_PID")
    stop_server
    local ops tps cpu_us_op misses failed drops
    ops=$(field "$out" Ops); tps=$(field "$out" TPS)
    [[ -n $ops && $ops != 0 ]] || { echo "$out" >&2; die "memcaslap reported no ops ($scenario $kind, exit $rc)"; }
    cpu_us_op=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$ops" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
    misses=$(field "$out" get_misses); failed=$(( $(field "$out" verify_failed) + 0 ))
    drops=$(( $(field "$out" packet_drop) + $(field "$out" udp_timeout) + 0 ))
    printf '%s %s %s %s %s %s %s\n' "$scenario" "$side" "$kind" "$tps" "$cpu_us_op" "${misses:-0}" "$failed $drops" \
        >>"$WORK/rows"
    {
        echo "### $kind, repetition $rep"
        echo
        echo "- server: \`$SERVER_CMD\`"
        echo "- load: \`${cmd[*]}\` (exit $rc)"
        echo "- server CPU: $((ticks1 - ticks0)) ticks at $CLK_TCK Hz over $ops ops = $cpu_us_op µs/op"
        echo
        echo '```'
        grep -v '^\s*$' <<<"$out"
        echo '```'
        echo
    } >>"$WORK/$scenario.runs.md"
    log "$scenario rep $rep $kind: $tps ops/s, $cpu_us_op µs cpu/op, misses ${misses:-0}, verify failed $failed, drops $drops"
}

: >"$WORK/rows"
for scenario in $SCENARIOS; do
    : >"$WORK/$scenario.runs.md"
    for rep in $(seq "$REPS"); do
        run_one "$scenario" A "$rep"
        run_one "$scenario" B "$rep"
    done
done

table() {
    echo "| scenario | server | ops/s | CPU µs/op | get misses | verify failed | UDP drops+timeouts |"
    echo "|---|---|---|---|---|---|---|"
    for scenario in $SCENARIOS; do
        for side in A B; do
            if [[ $side == A ]]; then label=corecache; else label=memcached; fi
            printf '| %s | %s |' "$scenario" "$label"
            for col in 4 5 6 7 8; do printf ' %s |' "$(summarize "$scenario" "$side" "$col")"; done
            echo
        done
        printf '| %s | corecache/memcached | %s | %s | | | |\n' "$scenario" \
            "$(ratio "$(median "$scenario" A 4)" "$(median "$scenario" B 4)")" \
            "$(ratio "$(median "$scenario" A 5)" "$(median "$scenario" B 5)")"
    done
}
TABLE=$(table)
echo
echo "$TABLE"
echo "(medians [min-max] over $REPS runs; CPU is server utime+stime per memcaslap op)"

OUT="$OUT_DIR/$STAMP-memcaslap.md"
{
    echo "# memcaslap: corecache against memcached ($STAMP)"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "- kernel: $(uname -r)"
    echo "- cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) cpus)"
    echo "- corecache: $CORECACHE; memcached: $MEMCACHED ($("$MEMCACHED" -V 2>/dev/null || echo '?')); load: $MEMCASLAP"
    echo "- command: \`tuning/memcaslap.sh --scenarios ${SCENARIOS// /,} --duration $DURATION --reps $REPS\`"
    echo "- server cpu $SERVER_CPU, client cpu $CLIENT_CPU, ${DURATION}s per run, $REPS repetitions, A B interleaved"
    echo
    echo "$TABLE"
    echo
    echo "(medians [min-max]; CPU is server utime+stime per memcaslap op)"
    echo
    for scenario in $SCENARIOS; do
        echo "## $scenario: every run"
        echo
        cat "$WORK/$scenario.runs.md"
    done
} >"$OUT"
log "wrote $OUT"
