#!/usr/bin/env bash
# set1k-like load against corecache -t 1 without the log and with each --log-fsync mode.
# Server on CPU 1 (`-t 1 --cpus 1`, the log thread pinned there too: a 2-core host), client on
# CPU 0, 50 connections, pipeline 1, 1 KiB values, 8 s measured after 1 s of warm-up, 3 rounds
# of A B C D interleaved. One line per run on stdout and in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/corecache
BENCH=target/release/corecache-bench
out=${OUT:-/tmp/durability-bench.txt}
: > "$out"
for rep in 1 2 3; do
  for mode in off no everysec always; do
    dir=$(mktemp -d)
    args=(-p 0 -t 1 -m 1024 --cpus 1)
    # COMPACT_BYTES: --log-compact-bytes (default 0: no compaction, as the first results were
    # measured; give e.g. 67108864 to include the snapshots a long run takes).
    [[ $mode != off ]] && args+=(--log-dir "$dir/log" --log-fsync "$mode" --log-cpu 1 \
      --log-compact-bytes "${COMPACT_BYTES:-0}")
    taskset -c 1 "$BIN" "${args[@]}" > "$dir/stdout" 2> "$dir/stderr" &
    pid=$!
    for _ in $(seq 100); do grep -q listening "$dir/stdout" && break; sleep 0.1; done
    addr=$(awk '/^listening/{print $2}' "$dir/stdout")
    json=$(taskset -c 0 "$BENCH" --server "$addr" --json --quiet --threads 1 --connections 50 \
      --keys 100000 --duration 8 --warmup 1 --pipeline 1 --get-ratio 0 --set-ratio 1 --value-size 1024)
    ops=$(echo "$json" | python3 -c 'import json,sys; j=json.load(sys.stdin); s=j["ops_by_type"]["set"]; print(round(j["ops_per_sec"]), s["latency_us"]["p50"], s["latency_us"]["p99"], s["errors"])')
    cpu=$(awk '{print $14+$15}' /proc/$pid/stat)
    kill $pid; wait $pid || true
    echo "$mode rep$rep ops/s,p50_us,p99_us,errors: $ops server_cpu_ticks=$cpu log_bytes=$(cat "$dir"/log/corecache.*.log 2>/dev/null | wc -c)" | tee -a "$out"
    rm -rf "$dir"
  done
done
