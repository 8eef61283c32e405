# Shared by the comparison scripts in tuning/: servers started pinned on a free port, their CPU
# time and memory, and medians over repetitions. Source it after setting TOOL (the log prefix),
# then call start_work; start_server sets SERVER_PID, SERVER_PORT and SERVER_CMD.
# UDP_SAME_PORT=1 serves UDP on the TCP port (otherwise -U 0). SERVER_TLS=1 starts the server
# with TLS (`-Z`, the test certificates in tests/tls/); server_stat then talks TLS too.

log() { echo "$TOOL: $*" >&2; }
die() { log "$*"; exit 1; }

# Makes WORK, a scratch directory removed at exit together with any server still running.
start_work() {
    WORK=$(mktemp -d)
    SERVER_PID=
    trap cleanup EXIT
}
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}

# Sets MEMCACHED: the given one, the one on PATH, or one installed with apt-get.
find_memcached() {
    [[ -n ${MEMCACHED:-} ]] && return
    MEMCACHED=$(command -v memcached || true)
    if [[ -z $MEMCACHED ]]; then
        log "memcached not found; installing with apt-get"
        if [[ $EUID -eq 0 ]]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq memcached >/dev/null
        MEMCACHED=$(command -v memcached) || die "could not install memcached"
    fi
}

# --- servers -------------------------------------------------------------------------------
free_port() {
    # Below the usual ephemeral range (32768-60999), so no client socket holds the port.
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port"
}

# start_server KIND BIN THREADS MEMORY_MB CPUS: sets SERVER_PID, SERVER_PORT, SERVER_CMD.
start_server() {
    local attempt
    for attempt in 1 2 3 4 5; do
        if start_server_once "$@"; then return; fi
        log "server did not start (attempt $attempt), retrying on another port"
    done
    cat "$WORK/server.log" >&2
    die "server failed to start: $SERVER_CMD"
}

start_server_once() {
    local kind=$1 bin=$2 threads=$3 mem=$4 cpus=$5
    SERVER_PORT=$(free_port)
    local udp=0
    if [[ ${UDP_SAME_PORT:-0} == 1 ]]; then udp=$SERVER_PORT; fi
    local args=(-l 127.0.0.1 -p "$SERVER_PORT" -m "$mem" -t "$threads" -U "$udp")
    if [[ $kind == memcached && $EUID -eq 0 ]]; then args+=(-u root); fi
    if [[ $kind == corecache && ${CORECACHE_CPUS_FLAG:-1} == 1 ]]; then args+=(--cpus "$cpus"); fi
    if [[ ${SERVER_TLS:-0} == 1 ]]; then
        args+=(-Z -o "ssl_chain_cert=$PWD/tests/tls/server.pem,ssl_key=$PWD/tests/tls/server.key")
    fi
    SERVER_CMD="taskset -c $cpus $bin ${args[*]}"
    taskset -c "$cpus" "$bin" "${args[@]}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$SERVER_PORT") 2>/dev/null; then return 0; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=
            return 1
        fi
        sleep 0.05
    done
    stop_server
    return 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cpu_ticks() { # utime + stime of a process, in clock ticks
    local stat rest
    read -r stat <"/proc/$1/stat"
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

cpu_ns() { # on-CPU time of all of a process's threads, in nanoseconds (scheduler clock)
    # /proc/PID/task/TID/schedstat's first field is the thread's sum_exec_runtime: exact where
    # /proc/PID/stat's utime+stime are sampled at the timer tick (CONFIG_HZ, often 250 Hz, so a
    # 10 s run carries about 2 % of sampling noise). Both include interrupt work done while the
    # thread runs unless the kernel has CONFIG_IRQ_TIME_ACCOUNTING.
    cat "/proc/$1"/task/*/schedstat 2>/dev/null | awk '{ t += $1 } END { printf "%.0f", t }'
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

server_stat() { # server_stat PORT NAME
    if [[ ${SERVER_TLS:-0} == 1 ]]; then
        python3 - "$1" "$2" "$PWD/tests/tls/ca.pem" <<'EOF'
import socket, ssl, sys
port, name, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                     server_hostname="127.0.0.1") as s:
    s.sendall(b"stats\r\n")
    data = b""
    while not data.endswith(b"END\r\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
value = "0"
for line in data.decode().splitlines():
    if line.startswith(f"STAT {name} "):
        value = line.split()[2]
print(value)
EOF
        return
    fi
    local line value=
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'stats\r\n' >&3
    while IFS= read -r -t 5 line <&3; do
        line=${line%$'\r'}
        [[ $line == END ]] && break
        [[ $line == "STAT $2 "* ]] && value=${line#"STAT $2 "}
    done
    exec 3<&- 3>&-
    echo "${value:-0}"
}

# stats over one column for one scenario and side: "median [min-max]"
summarize() { # summarize SCENARIO SIDE COLUMN
    awk -v s="$1" -v side="$2" -v c="$3" '$1 == s && $2 == side { print $c }' "$WORK/rows" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
             m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
             printf "%s [%s-%s]", f(m), f(v[1]), f(v[NR]) }
             function f(x) { return (x >= 100 || x <= -100) ? sprintf("%.0f", x) : sprintf("%.3g", x) }'
}
median() { summarize "$@" | awk '{ print $1 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-") print "-"; else printf "%.2f", a / b }'; }

# cpu_per_request BENCH_OUTPUT T0 T1: prints "microseconds-per-request ops/s" from a
# corecache-bench output and the server's CPU ticks (cpu_ticks) before and after it ran.
# Requests are everything the bench sent (prefill, warm-up and measured window, from its
# "server should see" line), so every server's are counted the same way.
cpu_per_request() {
    python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"should see: cmd_get \+(\d+).*cmd_set \+(\d+)", text)
ops = re.search(r"= (\d+) ops/s", text)
requests = int(m.group(1)) + int(m.group(2))
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"{cpu * 1e6 / requests:.3f} {ops.group(1)}")
EOF
}
