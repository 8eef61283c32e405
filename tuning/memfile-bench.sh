#!/usr/bin/env bash
# Restartable cache (-e): fill corecache with KEYS items of 100 bytes, time the graceful save
# (SIGUSR1 until exit) and the next start (until its listening line, the restore included).
# Usage: tuning/memfile-bench.sh THREADS KEYS   (needs a release build; uses /dev/shm)
cd "$(dirname "$0")/.."
t=$1; keys=$2; f=/dev/shm/mfbench
rm -f $f $f.meta
start() { ${CORECACHE:-target/release/corecache} -l 127.0.0.1 -p 0 -U 0 -t $t -m 2048 -e $f > /tmp/mfb.out 2>/tmp/mfb.err & pid=$!; for i in $(seq 600); do grep -q listening /tmp/mfb.out && break; sleep 0.01; done; port=$(grep -o '[0-9]*$' /tmp/mfb.out | head -1); }
start
target/release/corecache-bench --server 127.0.0.1:$port --threads 1 --connections 8 --keys $keys --duration 1 --warmup 0 --get-ratio 1 --set-ratio 0 --value-size 100 --pipeline 16 --prefill >/dev/null 2>&1
rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
s0=$(date +%s.%N); kill -USR1 $pid; wait $pid; s1=$(date +%s.%N)
ls -l $f | awk '{print "file bytes", $5}'
sleep 1.1
s2=$(date +%s.%N); start; s3=$(date +%s.%N)
rss2=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
cat /tmp/mfb.err | grep restored
python3 -c "print(f'save {$s1-$s0:.2f} s, start with restore {$s3-$s2:.2f} s, RSS before {$rss/1024:.0f} MB after {$rss2/1024:.0f} MB')"
kill $pid; wait $pid 2>/dev/null; rm -f $f $f.meta
