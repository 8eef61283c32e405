#!/usr/bin/env bash
# Side-by-side comparison of corecache and memcached with corecache-bench.
#
# Each scenario runs A B A B A B (A = corecache, B = memcached; 3 repetitions by default), each
# run on a freshly started server pinned to one core (`taskset -c $SERVER_CPU`, `-t 1`), with
# the bench pinned to another (`$CLIENT_CPU`). For every run it records throughput, latency
# percentiles, the server's CPU time per request (utime+stime from /proc/PID/stat, and exactly
# by the scheduler's clock from /proc/PID/task/*/schedstat), the hit ratio and, for `memory`,
# resident memory per item. It prints one table of medians with [min-max] ranges and
# corecache/memcached ratios, plus the CPU ratio of each repetition's pair, and writes one
# Markdown file per scenario (plus a summary) into tuning/results/.
#
# Usage: tuning/compare.sh [--quick] [--scenarios a,b,...] [--duration S] [--warmup S]
#                          [--hitratio-warmup S] [--reps N] [--out DIR] [--list]
# `hitratio` warms up for --hitratio-warmup (30 s), long enough to fill `-m 64`, whatever
# --warmup says. Without --scenarios the issue's eight run; `tls-get90-p1` (get90-p1 over TLS,
# both servers with -Z and the test certificates of tests/tls/) runs when named.
# Environment: CORECACHE (default target/release/corecache), MEMCACHED (default: found on
# PATH, installed with apt-get if missing), BENCH (default target/release/corecache-bench),
# SERVER_CPU (1), CLIENT_CPU (0), SHARDS2_CPUS (1-2; on a host with fewer than 3 cpus both
# shards share SERVER_CPU, so -t 2 gets the same cpu as -t 1 and never the client's), MEMORY_MB (1024),
# CORECACHE_CPUS_FLAG (1: pass `--cpus` to corecache so its executors pin inside the taskset),
# PROTOCOL (text, meta or binary: what the bench speaks in every scenario; result files of meta
# and binary runs are named `<stamp>-<protocol>-<scenario>.md`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DEFAULT_SCENARIOS="get90-p1 get90-p16 multiget10 set1k latency memory hitratio shards2"
# tls-get90-p1: get90-p1 with both servers on TLS (-Z) and the bench connecting with --tls-ca.
ALL_SCENARIOS="$DEFAULT_SCENARIOS tls-get90-p1"
SCENARIOS=$DEFAULT_SCENARIOS
DURATION=10
WARMUP=2
HITRATIO_WARMUP=30
REPS=3
OUT_DIR=tuning/results

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) DURATION=1; WARMUP=0.5; HITRATIO_WARMUP=3; shift ;;
        --scenarios) SCENARIOS=${2//,/ }; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --hitratio-warmup) HITRATIO_WARMUP=$2; shift 2 ;;
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
BENCH=${BENCH:-target/release/corecache-bench}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
MEMORY_MB=${MEMORY_MB:-1024}
CORECACHE_CPUS_FLAG=${CORECACHE_CPUS_FLAG:-1}
PROTOCOL=${PROTOCOL:-text}
case $PROTOCOL in text|meta|binary) ;; *) echo "PROTOCOL must be text, meta or binary" >&2; exit 1 ;; esac
if [[ -z ${SHARDS2_CPUS:-} ]]; then
    if [[ $(nproc) -ge 3 ]]; then SHARDS2_CPUS=1-2; else SHARDS2_CPUS=$SERVER_CPU,$SERVER_CPU; fi
fi
CLK_TCK=$(getconf CLK_TCK)

TOOL=compare
# shellcheck source=tuning/servers.sh
source "$ROOT/tuning/servers.sh"

# --- prerequisites -------------------------------------------------------------------------
find_memcached
if [[ ! -x $BENCH ]]; then
    log "building corecache-bench (release)"
    cargo build --release --bin corecache-bench >&2
fi
[[ -x $CORECACHE ]] || die "corecache binary $CORECACHE not found (build it, or set CORECACHE)"
command -v taskset >/dev/null || die "taskset (util-linux) is required"
[[ $(nproc) -ge 2 ]] || log "warning: only $(nproc) cpu: client and server share it"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[[ $PROTOCOL == text ]] || STAMP=$STAMP-$PROTOCOL
mkdir -p "$OUT_DIR"
start_work

# --- JSON fields (the bench's JSON is flat enough for grep) -------------------------------
json_top() { grep -o "\"$2\":[-0-9.e]*" <<<"$1" | head -n1 | cut -d: -f2; }
json_op() { # json_op JSON OP FIELD (count, ops_per_sec, p50, p99, p99_9, max)
    grep -o "\"$2\":{\"count\"[^}]*}[^}]*}" <<<"$1" | grep -o "\"$3\":[-0-9.e]*" | head -n1 | cut -d: -f2
}
json_in() { grep -o "\"$2\":{[^}]*}" <<<"$1" | grep -o "\"$3\":[-0-9.e]*" | head -n1 | cut -d: -f2; }

# --- scenarios -----------------------------------------------------------------------------
# scenario_setup NAME: sets BENCH_ARGS, MAIN_OP, MEM, A/B kinds, binaries and thread counts.
LATENCY_RATE=
scenario_setup() {
    # The bench rejects a repeated flag, so per-scenario differences replace these.
    local common=(--threads 1 --connections 50 --keys 100000 --duration "$DURATION" --warmup "$WARMUP")
    local mix=(--get-ratio 0.9 --set-ratio 0.1 --value-size 64)
    MAIN_OP=get MEM=$MEMORY_MB SERVER_TLS=0
    A_KIND=corecache A_BIN=$CORECACHE A_THREADS=1 A_CPUS=$SERVER_CPU A_LABEL=corecache
    B_KIND=memcached B_BIN=$MEMCACHED B_THREADS=1 B_CPUS=$SERVER_CPU B_LABEL=memcached
    case $1 in
        get90-p1) BENCH_ARGS=("${common[@]}" "${mix[@]}" --pipeline 1 --prefill) ;;
        tls-get90-p1)
            BENCH_ARGS=("${common[@]}" "${mix[@]}" --pipeline 1 --prefill --tls-ca "$ROOT/tests/tls/ca.pem")
            SERVER_TLS=1 ;;
        get90-p16) BENCH_ARGS=("${common[@]}" "${mix[@]}" --pipeline 16 --prefill) ;;
        multiget10) BENCH_ARGS=("${common[@]}" "${mix[@]}" --pipeline 1 --prefill --multiget 10); MAIN_OP=multiget ;;
        set1k) BENCH_ARGS=("${common[@]}" --pipeline 1 --get-ratio 0 --set-ratio 1 --value-size 1024); MAIN_OP=set ;;
        latency) BENCH_ARGS=("${common[@]}" "${mix[@]}" --pipeline 1 --prefill --rate "$LATENCY_RATE") ;;
        memory)
            BENCH_ARGS=(--threads 1 --connections 50 --pipeline 1 --keys 1000000 --value-size 100
                --get-ratio 1 --set-ratio 0 --prefill --duration 1 --warmup 0) ;;
        hitratio)
            # ~140 bytes per 64-byte item in memcached's slabs: 64 MB hold ~470k; 10x that.
            MEM=64
            BENCH_ARGS=(--threads 1 --connections 50 --pipeline 1 --keys 4700000 --zipf 0.99
                --read-through --get-ratio 1 --set-ratio 0 --value-size 64
                --duration "$DURATION" --warmup "$HITRATIO_WARMUP") ;;
        shards2)
            BENCH_ARGS=("${common[@]}" "${mix[@]}" --pipeline 16 --prefill)
            B_KIND=corecache B_BIN=$CORECACHE
            A_THREADS=2 A_CPUS=$SHARDS2_CPUS A_LABEL="corecache-t2" B_LABEL="corecache-t1" ;;
    esac
}

# run_one SCENARIO SIDE REP: one server start, one bench run; appends a row to $WORK/rows.
run_one() {
    local scenario=$1 side=$2 rep=$3 kind bin threads cpus label
    if [[ $side == A ]]; then kind=$A_KIND bin=$A_BIN threads=$A_THREADS cpus=$A_CPUS label=$A_LABEL
    else kind=$B_KIND bin=$B_BIN threads=$B_THREADS cpus=$B_CPUS label=$B_LABEL; fi
    start_server "$kind" "$bin" "$threads" "$MEM" "$cpus"
    local rss0 ticks0 ticks1 ns0 ns1 json rc=0
    rss0=$(rss_kb "$SERVER_PID")
    ticks0=$(cpu_ticks "$SERVER_PID")
    ns0=$(cpu_ns "$SERVER_PID")
    local cmd=(taskset -c "$CLIENT_CPU" "$BENCH" --server "127.0.0.1:$SERVER_PORT" --json --quiet
        --protocol "$PROTOCOL" "${BENCH_ARGS[@]}")
    json=$("${cmd[@]}" 2>"$WORK/bench.err") || rc=$?
    ticks1=$(cpu_ticks "$SERVER_PID")
    ns1=$(cpu_ns "$SERVER_PID")
    local rss1 items
    rss1=$(rss_kb "$SERVER_PID")
    items=$(server_stat "$SERVER_PORT" curr_items)
    local evictions
    evictions=$(server_stat "$SERVER_PORT" evictions)
    if [[ $scenario == hitratio && $evictions == 0 ]]; then
        log "hitratio: no evictions yet, the cache never filled; use a longer --warmup for a steady-state hit ratio"
    fi
    stop_server
    if [[ -z $json ]]; then cat "$WORK/bench.err" >&2; die "bench produced no JSON ($scenario $label)"; fi
    # Server CPU covers the whole bench invocation, so divide by every request it served.
    local requests cpu_us_op cpu_exact rss_item ops p50 p99 p999 hit errors steal
    requests=$(( $(json_in "$json" server_totals get_commands) + $(json_in "$json" server_totals cmd_set) ))
    cpu_us_op=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.3f", n ? t * 1e6 / hz / n : 0 }')
    cpu_exact=$(awk -v t=$((ns1 - ns0)) -v n="$requests" 'BEGIN { printf "%.3f", n ? t / 1e3 / n : 0 }')
    rss_item=$(awk -v a="$rss0" -v b="$rss1" -v n="$items" 'BEGIN { printf "%.1f", n ? (b - a) * 1024 / n : 0 }')
    ops=$(json_top "$json" ops_per_sec)
    p50=$(json_op "$json" "$MAIN_OP" p50); p99=$(json_op "$json" "$MAIN_OP" p99); p999=$(json_op "$json" "$MAIN_OP" p99_9)
    hit=$(json_top "$json" hit_ratio)
    errors=$(( $(json_in "$json" errors total) + $(json_top "$json" drops) ))
    # Time the hypervisor did not run this machine's CPUs in the measured window: a run whose
    # tail holds a stall of that length lost it to the host, not to the server.
    steal=$(json_in "$json" host steal_ms)
    printf '%s %s %s %s %s %s %s %s %s %s %s %s %s\n' "$scenario" "$side" "$label" "$ops" "$p50" "$p99" "$p999" \
        "$cpu_us_op" "$hit" "$rss_item" "$errors" "$cpu_exact" "${steal:--}" >>"$WORK/rows"
    {
        echo "### $label, repetition $rep"
        echo
        echo "- server: \`$SERVER_CMD\`"
        echo "- bench: \`${cmd[*]}\` (exit $rc)"
        echo "- server CPU: $((ticks1 - ticks0)) ticks at $CLK_TCK Hz over $requests requests = $cpu_us_op µs/request; scheduler clock $((ns1 - ns0)) ns = $cpu_exact µs/request"
        echo "- VmRSS: idle $rss0 kB, after $rss1 kB; curr_items $items; evictions $evictions"
        echo
        echo '```json'
        echo "$json"
        echo '```'
        echo
    } >>"$WORK/$scenario.runs.md"
    log "$scenario rep $rep $label: $ops ops/s, $MAIN_OP p99 ${p99} µs, ${cpu_us_op} µs cpu/req, hit $hit, errors $errors, steal ${steal:--} ms"
}

host_info() {
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "- kernel: $(uname -r)"
    echo "- cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) cpus)"
    echo "- corecache: $CORECACHE; memcached: $MEMCACHED ($("$MEMCACHED" -V 2>/dev/null || echo '?'))"
    echo "- server cpu $SERVER_CPU, client cpu $CLIENT_CPU, duration ${DURATION}s, warm-up ${WARMUP}s, $REPS repetitions, $PROTOCOL protocol"
}

# --- main ----------------------------------------------------------------------------------
: >"$WORK/rows"
START=$(date +%s)
for scenario in $SCENARIOS; do
    if [[ $scenario == latency ]]; then
        # Open loop at half of memcached's closed-loop maximum from get90-p1.
        base=$(median get90-p1 B 4)
        if [[ $base == - || -z $base ]]; then
            log "latency: measuring memcached's get90-p1 maximum first"
            scenario_setup get90-p1
            run_one get90-p1-calibration B 1
            base=$(median get90-p1-calibration B 4)
        fi
        LATENCY_RATE=$(awk -v b="$base" 'BEGIN { printf "%d", b / 2 }')
        log "latency: open loop at $LATENCY_RATE req/s"
    fi
    scenario_setup "$scenario"
    : >"$WORK/$scenario.runs.md"
    for rep in $(seq "$REPS"); do
        run_one "$scenario" A "$rep"
        run_one "$scenario" B "$rep"
    done
done

header="| scenario | server | ops/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req | CPU µs/req (sched) | hit ratio | RSS B/item | errors | steal ms |"
rule="|---|---|---|---|---|---|---|---|---|---|---|---|"
table() {
    echo "$header"
    echo "$rule"
    for scenario in $SCENARIOS; do
        scenario_setup "$scenario"
        for side in A B; do
            if [[ $side == A ]]; then label=$A_LABEL; else label=$B_LABEL; fi
            printf '| %s | %s |' "$scenario" "$label"
            for col in 4 5 6 7 8 12 9 10 11 13; do printf ' %s |' "$(summarize "$scenario" "$side" "$col")"; done
            echo
        done
        printf '| %s | %s/%s |' "$scenario" "$A_LABEL" "$B_LABEL"
        for col in 4 5 6 7 8 12 9 10; do
            printf ' %s |' "$(ratio "$(median "$scenario" A "$col")" "$(median "$scenario" B "$col")")"
        done
        echo ' | |'
    done
}

# pair_ratios: each scenario's CPU ratios A/B per repetition (the runs of a repetition are
# neighbours in time, so each pair saw the same host), by /proc/PID/stat and by the scheduler
# clock: a ratio of medians can hide that the pairs disagree.
pair_ratios() {
    for scenario in $SCENARIOS; do
        awk -v s="$scenario" '$1 == s && $2 == "A" { a8[++na] = $8; a12[na] = $12 }
            $1 == s && $2 == "B" { b8[++nb] = $8; b12[nb] = $12 }
            END {
                line = "- " s " CPU per request A/B by repetition: stat"
                for (i = 1; i <= na && i <= nb; i++) line = line sprintf(" %s", b8[i] ? sprintf("%.2f", a8[i] / b8[i]) : "-")
                line = line "; sched"
                for (i = 1; i <= na && i <= nb; i++) line = line sprintf(" %s", b12[i] ? sprintf("%.2f", a12[i] / b12[i]) : "-")
                print line
            }' "$WORK/rows"
    done
}
TABLE=$(table)
echo
echo "$TABLE"
echo "(medians [min-max] over $REPS runs; latencies of each scenario's main operation; CPU is"
echo " server utime+stime per request over the whole bench run, and the same by the scheduler's"
echo " clock (/proc/PID/task/*/schedstat); steal is the time the hypervisor kept this machine's"
echo " CPUs from running in the measured window (/proc/stat); ratio rows divide medians)"
PAIRS=$(pair_ratios)
echo "$PAIRS"

for scenario in $SCENARIOS; do
    {
        echo "# $scenario ($STAMP)"
        echo
        host_info
        echo
        echo "$header"
        echo "$rule"
        grep -F "| $scenario |" <<<"$TABLE"
        echo
        grep -F -- "- $scenario CPU" <<<"$PAIRS"
        echo
        cat "$WORK/$scenario.runs.md"
    } >"$OUT_DIR/$STAMP-$scenario.md"
done
{
    echo "# compare.sh summary ($STAMP)"
    echo
    echo "Command: \`PROTOCOL=$PROTOCOL tuning/compare.sh --scenarios ${SCENARIOS// /,} --duration $DURATION --warmup $WARMUP --reps $REPS\`"
    echo
    host_info
    echo
    echo "$TABLE"
    echo
    echo "$PAIRS"
} >"$OUT_DIR/$STAMP-summary.md"
log "done in $(( $(date +%s) - START )) s; results in $OUT_DIR/$STAMP-*.md"
