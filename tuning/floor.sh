#!/usr/bin/env bash
# The floor under get90-p1: server CPU time per request of corecache, of memcached, and of
# `examples/loopback_floor.rs` (one thread on corecache's io_uring structure answering get and
# set from a HashMap and nothing else: *floor*; and the same answering every get with one
# canned value and dropping sets: *canned*), on compare.sh's get90-p1 load.
#
# The floor is what the kernel's TCP work over loopback costs a server with corecache's
# structure, plus the least user-space work a text cache can do: the part of corecache's cost
# that no change to corecache can remove. Its ratio to memcached is the best CPU-per-request
# ratio any server built this way can reach against memcached on this host.
#
# The four run in turn (corecache, memcached, floor, canned; REPS times), each on CPU 1 with the load
# generator on CPU 0. CPU time is the server's utime + stime from /proc/PID/stat over its whole
# life; requests are everything the load generator sent (prefill, warm-up and measured window,
# from its "server should see" line), so all three are counted the same way.
#
# Usage: tuning/floor.sh [REPS] [DURATION]
# Environment: CORECACHE, BENCH, FLOOR (default target/release/...), MEMCACHED (default: on
# PATH, installed with apt-get if missing), OUT (a Markdown file to write the results to).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
duration=${2:-10}
bin=${CORECACHE:-target/release/corecache}
bench=${BENCH:-target/release/corecache-bench}
floor=${FLOOR:-target/release/examples/loopback_floor}
TOOL=floor
# shellcheck source=tuning/servers.sh
source tuning/servers.sh # free_port, cpu_ticks, cpu_per_request, find_memcached, median
find_memcached
[[ -x $floor ]] || die "$floor missing: cargo build --release --example loopback_floor"
start_work

measure() { # measure KIND: prints microseconds of server CPU per request
    local kind=$1 port pid
    port=$(free_port)
    case $kind in
        corecache) taskset -c 1 "$bin" -l 127.0.0.1 -p "$port" -m 1024 -t 1 -U 0 --cpus 1 >"$WORK/srv.out" 2>&1 & ;;
        memcached) taskset -c 1 "$MEMCACHED" -l 127.0.0.1 -p "$port" -m 1024 -t 1 -U 0 -u root >"$WORK/srv.out" 2>&1 & ;;
        floor) taskset -c 1 "$floor" "$port" >"$WORK/srv.out" 2>&1 & ;;
        canned) taskset -c 1 "$floor" --canned "$port" >"$WORK/srv.out" 2>&1 & ;;
    esac
    pid=$!
    SERVER_PID=$pid
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    local t0 t1
    t0=$(cpu_ticks "$pid")
    taskset -c 0 "$bench" --server "127.0.0.1:$port" --threads 1 --connections 50 \
        --keys 100000 --duration "$duration" --warmup 2 --get-ratio 0.9 --set-ratio 0.1 \
        --value-size 64 --pipeline 1 --prefill >"$WORK/bench.out" 2>&1 \
        || { cat "$WORK/bench.out" >&2; die "$kind: load generator failed"; }
    t1=$(cpu_ticks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true; SERVER_PID=
    grep -q "errors    0 total" "$WORK/bench.out" || { cat "$WORK/bench.out" >&2; die "$kind: errors"; }
    cpu_per_request "$WORK/bench.out" "$t0" "$t1"
}

declare -A us ops
for rep in $(seq "$reps"); do
    for kind in corecache memcached floor canned; do
        read -r u o < <(measure "$kind")
        us[$kind]+="$u "; ops[$kind]+="$o "
        log "rep $rep $kind: $u us/request, $o ops/s"
    done
done

med() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
range() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }
{
    echo "# The floor under get90-p1: server CPU per request"
    echo
    echo "- command: \`tuning/floor.sh $reps $duration\`"
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "- kernel: $(uname -r)"
    echo "- cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) cpus)"
    echo "- memcached: $("$MEMCACHED" -V 2>/dev/null || true)"
    echo "- load: 50 connections, pipeline 1, 90 % get / 10 % set, 100,000 keys, 64-byte values;"
    echo "  server on CPU 1, load generator on CPU 0; $reps repetitions of ${duration} s, in turn"
    echo
    echo "| server | CPU µs/request, median | range | ops/s, median | CPU vs memcached |"
    echo "|---|---|---|---|---|"
    mm=$(med "${us[memcached]}")
    for kind in corecache memcached floor canned; do
        m=$(med "${us[$kind]}")
        echo "| $kind | $m | $(range "${us[$kind]}") | $(med "${ops[$kind]}") | $(ratio "$m" "$mm") |"
    done
    echo
    echo "Per repetition (corecache, memcached, floor, canned), µs per request:"
    for rep in $(seq "$reps"); do
        c=$(cut -d' ' -f"$rep" <<<"${us[corecache]}"); m=$(cut -d' ' -f"$rep" <<<"${us[memcached]}")
        f=$(cut -d' ' -f"$rep" <<<"${us[floor]}"); k=$(cut -d' ' -f"$rep" <<<"${us[canned]}")
        echo "- rep $rep: $c, $m, $f, $k (vs memcached: corecache $(ratio "$c" "$m"), floor $(ratio "$f" "$m"), canned $(ratio "$k" "$m"))"
    done
} | tee "${OUT:-/dev/null}"
