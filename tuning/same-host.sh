#!/usr/bin/env bash
# Servers on their defaults, with libmemcached's memcaslap on the same host and nothing pinned:
# what a user who tries corecache on a small machine sees first. Compares corecache's default
# (one shard per CPU) with some of its settings changed, and memcached's default, under
# memcaslap's own mix (90% get, 10% set, values up to 1 KiB).
#
# Servers (--servers picks and orders them): `default` (corecache on its defaults), `batch`
# (--sched-policy batch: shard threads under SCHED_BATCH), `borrow-off`
# (--borrow-idle-shards off), `t1` (-t 1), `memcached` (its defaults) and `memcached-batch`
# (memcached under `chrt -b 0`, SCHED_BATCH, for the same scheduling as corecache's `batch`).
#
# Each client shape (memcaslap -T threads -c connections) runs every server once per
# repetition, in turn (A B C D A B C D ...), each on a freshly started server. For every run it
# records memcaslap's ops/s, the server's CPU time per op (utime+stime from /proc/PID/stat) and
# its voluntary context switches per op, and prints medians with [min-max] ranges, plus the
# ratio of each corecache column's median ops/s to memcached's.
#
# Usage: tuning/same-host.sh [--reps N] [--duration S] [--shapes "T:C T:C ..."] [--binary]
#        [--servers "NAME ..."] [--out DIR]   (--binary: memcaslap -B, the binary protocol)
# Environment: CORECACHE (default target/release/corecache), CORECACHE_ARGS (more flags for
# every corecache run, e.g. "--io-backend epoll"), MEMCACHED (on PATH, else apt-get), MEMCASLAP
# (default: on PATH). Both come from Debian (memcached, libmemcached-tools).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPS=3
DURATION=3
SHAPES="1:8 1:50 2:64 4:200"
OUT_DIR=tuning/results
PROTOCOL=()
SERVERS=(default batch borrow-off t1 memcached)
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --shapes) SHAPES=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --binary) PROTOCOL=(-B); shift ;;
        --servers) read -r -a SERVERS <<<"$2"; shift 2 ;;
        *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done

CORECACHE=${CORECACHE:-target/release/corecache}
MEMCASLAP=${MEMCASLAP:-$(command -v memcaslap || true)}
TOOL=same-host
# shellcheck source=tuning/servers.sh
source "$ROOT/tuning/servers.sh" # free_port, cpu_ticks, find_memcached, die
[[ -x $CORECACHE ]] || die "no $CORECACHE: cargo build --release"
find_memcached
[[ -n $MEMCASLAP ]] || die "needs memcaslap: apt-get install libmemcached-tools"

server_cmd() {
    case $1 in
        default) echo "$CORECACHE ${CORECACHE_ARGS:-}" ;;
        batch) echo "$CORECACHE --sched-policy batch ${CORECACHE_ARGS:-}" ;;
        borrow-off) echo "$CORECACHE --borrow-idle-shards off ${CORECACHE_ARGS:-}" ;;
        t1) echo "$CORECACHE -t 1 ${CORECACHE_ARGS:-}" ;;
        memcached) echo "$MEMCACHED -u ${USER:-root}" ;;
        memcached-batch) echo "chrt -b 0 $MEMCACHED -u ${USER:-root}" ;;
        *) return 1 ;;
    esac
}
for server in "${SERVERS[@]}"; do
    server_cmd "$server" >/dev/null || { echo "unknown server $server" >&2; exit 2; }
done
[[ " ${SERVERS[*]} " == *" memcached "* ]] || { echo "--servers must include memcached" >&2; exit 2; }

csw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/ {s += $2} END {print s+0}'; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
HZ=$(getconf CLK_TCK)

for rep in $(seq "$REPS"); do
    for shape in $SHAPES; do
        threads=${shape%%:*} conns=${shape##*:}
        for server in "${SERVERS[@]}"; do
            port=$(free_port)
            # shellcheck disable=SC2046
            $(server_cmd "$server") -p "$port" -l 127.0.0.1 >/dev/null 2>&1 &
            pid=$!
            for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.02; done
            t0=$(cpu_ticks "$pid") c0=$(csw "$pid")
            out=$("$MEMCASLAP" -s 127.0.0.1:"$port" -t "${DURATION}s" -T "$threads" -c "$conns" ${PROTOCOL[@]+"${PROTOCOL[@]}"} 2>&1 || true)
            t1=$(cpu_ticks "$pid") c1=$(csw "$pid")
            kill "$pid"; wait "$pid" 2>/dev/null || true
            ops=$(awk '/^Run time/ {for (i = 1; i <= NF; i++) if ($i == "Ops:") print $(i+1)}' <<<"$out" | tail -1)
            tps=$(awk '/^Run time/ {for (i = 1; i <= NF; i++) if ($i == "TPS:") print $(i+1)}' <<<"$out" | tail -1)
            [[ -n $ops && $ops -gt 0 ]] || { echo "memcaslap failed against $server:" >&2; echo "$out" >&2; exit 1; }
            cpu=$(awk -v t=$((t1 - t0)) -v o="$ops" -v hz="$HZ" 'BEGIN {printf "%.2f", t * 1e6 / hz / o}')
            cs=$(awk -v c=$((c1 - c0)) -v o="$ops" 'BEGIN {printf "%.3f", c / o}')
            echo "$shape $server $tps $cpu $cs" | tee -a "$WORK/rows" >&2
        done
    done
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR"
report="$OUT_DIR/$stamp-same-host.md"
python3 - "$WORK/rows" "$REPS" "$DURATION" "${SERVERS[@]}" >"$WORK/table" <<'EOF'
import statistics, sys
rows, reps, duration, servers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
data = {}
for line in open(rows):
    shape, server, tps, cpu, cs = line.split()
    data.setdefault((shape, server), []).append((float(tps), float(cpu), float(cs)))
shapes = list(dict.fromkeys(k[0] for k in data))
def cell(vals, fmt):
    m = statistics.median(vals)
    return f"{fmt.format(m)} [{fmt.format(min(vals))}-{fmt.format(max(vals))}]"
print(f"memcaslap, {reps} repetitions of {duration} s, medians [min-max]\n")
for what, i, fmt in [("ops/s (thousands)", 0, "{:.1f}"), ("server CPU us/op", 1, "{:.2f}"),
                     ("voluntary context switches/op", 2, "{:.3f}")]:
    print(f"### {what}\n")
    print("| -T:-c | " + " | ".join(servers) + " |")
    print("|---" * (len(servers) + 1) + "|")
    for shape in shapes:
        cells = []
        for s in servers:
            vals = [r[i] / (1000 if i == 0 else 1) for r in data.get((shape, s), [])]
            cells.append(cell(vals, fmt) if vals else "-")
        print(f"| {shape} | " + " | ".join(cells) + " |")
    print()
print("### ops/s against memcached (ratio of medians)\n")
print("| -T:-c | " + " | ".join(s for s in servers if s != "memcached") + " |")
print("|---" * len(servers) + "|")
for shape in shapes:
    mc = statistics.median(r[0] for r in data[(shape, "memcached")])
    print(f"| {shape} | " + " | ".join(
        f"{statistics.median(r[0] for r in data[(shape, s)]) / mc:.2f}"
        for s in servers if s != "memcached") + " |")
EOF
{
    echo "# Same host, defaults, memcaslap (tuning/same-host.sh)"
    echo
    echo "- command: \`tuning/same-host.sh --reps $REPS --duration $DURATION --shapes \"$SHAPES\" --servers \"${SERVERS[*]}\"${PROTOCOL[@]+ --binary}\`"
    echo "- git $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    echo "- kernel $(uname -r), CPU $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) CPUs"
    echo "- memcached $("$MEMCACHED" -V | awk '{print $2}'), nothing pinned, servers on their defaults${CORECACHE_ARGS:+ (corecache also with: $CORECACHE_ARGS)}"
    echo
    cat "$WORK/table"
} >"$report"
cat "$report"
echo "written: $report" >&2
