#!/usr/bin/env bash
# Reads this host's settings that matter for corecache latency and prints what tuning/README.md
# would change. It changes nothing and needs no root (some values are only readable as root).
#
# Usage: tuning/check-host.sh [--shard-cpus LIST] [--conns N]
#   --shard-cpus  cpus corecache's shards will run on (default: all but cpu 0)
#   --conns       the -c value corecache will run with (default 1024)
set -uo pipefail

SHARD_CPUS=
CONNS=1024
while [[ $# -gt 0 ]]; do
    case $1 in
        --shard-cpus) SHARD_CPUS=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done

NCPU=$(nproc --all)
if [[ -z $SHARD_CPUS ]]; then
    if [[ $NCPU -gt 2 ]]; then SHARD_CPUS="1-$((NCPU - 1))"; elif [[ $NCPU -eq 2 ]]; then SHARD_CPUS=1; else SHARD_CPUS=0; fi
fi

SUGGESTIONS=0
ok() { printf '  ok    %s\n' "$*"; }
info() { printf '  info  %s\n' "$*"; }
would() { printf '  WOULD %s\n' "$*"; SUGGESTIONS=$((SUGGESTIONS + 1)); }
section() { printf '\n%s\n' "$*"; }
read_file() { cat "$1" 2>/dev/null || echo "?"; }
sysctl_value() { read_file "/proc/sys/${1//.//}" | tr -s '\t ' ' '; }

# Expands "1-3,5" to "1 2 3 5".
expand_cpus() {
    local part out=()
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi
    done
    echo "${out[@]}"
}
SHARD_LIST=$(expand_cpus "$SHARD_CPUS")
in_shards() { [[ " $SHARD_LIST " == *" $1 "* ]]; }

# Whether a hex cpu mask (as in /proc/irq/*/smp_affinity) includes any shard cpu.
mask_hits_shards() {
    local mask=${1//,/} cpu word bit
    for cpu in $SHARD_LIST; do
        local nibble_index=$((cpu / 4)) len=${#mask}
        [[ $nibble_index -ge $len ]] && continue
        word=${mask:$((len - 1 - nibble_index)):1}
        bit=$((16#$word >> (cpu % 4) & 1))
        [[ $bit -eq 1 ]] && return 0
    done
    return 1
}

echo "corecache host check: $NCPU cpus, shard cpus [$SHARD_CPUS], -c $CONNS"
echo "kernel $(uname -r); $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"

section "CPU isolation"
CMDLINE=$(read_file /proc/cmdline)
declare -A WHY=([isolcpus]="no other tasks scheduled there" [nohz_full]="no timer tick while one thread runs"
    [rcu_nocbs]="RCU callbacks run elsewhere")
for param in isolcpus nohz_full rcu_nocbs; do
    value=$(tr ' ' '\n' <<<"$CMDLINE" | grep "^$param=" | head -n1)
    if [[ -n $value ]]; then ok "kernel command line has $value"; else
        would "add $param=$SHARD_CPUS to the kernel command line (${WHY[$param]})"
    fi
done
if in_shards 0; then would "leave cpu 0 out of the shard cpus (it takes interrupts and housekeeping)"; else ok "cpu 0 is not a shard cpu"; fi
GOV=$(read_file /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor)
if [[ $GOV == "?" ]]; then info "no cpufreq governor exposed (virtual machine?)"
elif [[ $GOV == performance ]]; then ok "cpufreq governor: performance"
else would "set the cpufreq governor to performance (now $GOV)"; fi

section "Interrupts and packet steering"
if pgrep -x irqbalance >/dev/null 2>&1; then
    would "stop irqbalance, or give it IRQBALANCE_BANNED_CPUS for the shard cpus; it moves IRQs back onto them"
else ok "irqbalance is not running"; fi
IRQ_ON_SHARDS=0
for f in /proc/irq/*/smp_affinity; do
    [[ -r $f ]] || continue
    mask=$(read_file "$f")
    [[ $mask == "?" ]] && continue
    if mask_hits_shards "$mask"; then IRQ_ON_SHARDS=$((IRQ_ON_SHARDS + 1)); fi
done
if [[ $IRQ_ON_SHARDS -gt 0 ]]; then
    would "move $IRQ_ON_SHARDS IRQs off the shard cpus (echo a mask without them into /proc/irq/N/smp_affinity)"
else ok "no IRQ may fire on a shard cpu"; fi
for dev in /sys/class/net/*; do
    name=${dev##*/}
    [[ $name == lo ]] && continue
    for q in "$dev"/queues/rx-*/rps_cpus; do
        [[ -r $q ]] || continue
        mask=$(read_file "$q")
        if [[ ${mask//[0,]/} != "" ]] && mask_hits_shards "$mask"; then
            would "$name ${q#"$dev"/queues/}: RPS mask $mask includes shard cpus; clear it or point it at cpu 0"
        fi
    done
    for q in "$dev"/queues/tx-*/xps_cpus; do
        [[ -r $q ]] || continue
        mask=$(read_file "$q")
        [[ $mask == "?" ]] && continue
        info "$name ${q#"$dev"/queues/}: XPS mask $mask"
    done
done

section "Busy polling"
for key in net.core.busy_poll net.core.busy_read; do
    value=$(sysctl_value "$key")
    if [[ $value == "?" ]]; then info "$key not readable"
    elif [[ $value -eq 0 ]]; then would "consider sysctl $key=50 (µs of busy polling on the socket before sleeping; trades cpu for latency)"
    else ok "$key = $value"; fi
done

section "Memory"
THP=$(read_file /sys/kernel/mm/transparent_hugepage/enabled)
case $THP in
    *"[always]"*|*"[madvise]"*) ok "transparent huge pages: $THP" ;;
    *) would "enable transparent huge pages (madvise or always) for fewer TLB misses over the slab pages (now: $THP)" ;;
esac
DEFRAG=$(read_file /sys/kernel/mm/transparent_hugepage/defrag)
case $DEFRAG in
    *"[always]"*) would "set transparent_hugepage/defrag to defer+madvise or madvise; synchronous compaction stalls allocations" ;;
    *) ok "THP defrag: $DEFRAG" ;;
esac
MEMLOCK_SOFT=$(ulimit -S -l)
MEMLOCK_HARD=$(ulimit -H -l)
info "RLIMIT_MEMLOCK soft $MEMLOCK_SOFT, hard $MEMLOCK_HARD (KiB); corecache raises soft to hard at start"
KERNEL_MAJOR=$(uname -r | cut -d. -f1)
KERNEL_MINOR=$(uname -r | cut -d. -f2 | tr -dc 0-9)
if [[ $KERNEL_MAJOR -gt 5 || ( $KERNEL_MAJOR -eq 5 && ${KERNEL_MINOR:-0} -ge 12 ) ]]; then
    ok "kernel >= 5.12 charges io_uring rings to the memory cgroup, not RLIMIT_MEMLOCK"
elif [[ $MEMLOCK_HARD != unlimited && $MEMLOCK_HARD -lt 65536 ]]; then
    would "raise the hard memlock limit to at least 64 MiB (LimitMEMLOCK= or limits.conf): before 5.12 io_uring rings count against it, and corecache falls back to epoll when they cannot be created"
else ok "memlock hard limit is enough for io_uring rings"; fi
if [[ $KERNEL_MAJOR -gt 6 || ( $KERNEL_MAJOR -eq 6 && ${KERNEL_MINOR:-0} -ge 12 ) ]]; then
    ok "kernel >= 6.12 consumes io_uring receive buffers incrementally (large values arrive 64 KiB per completion)"
else
    info "kernel before 6.12: io_uring receives into whole 4 KiB buffers; values of 50 KB to 1 MB cost 1.3-1.6x the CPU they cost on 6.12 (tuning/results/20261124-large-sets.md)"
fi
URING=$(sysctl_value kernel.io_uring_disabled)
case $URING in
    0|"?") ok "io_uring is allowed (kernel.io_uring_disabled=${URING})" ;;
    *) would "set kernel.io_uring_disabled=0 (now $URING) or run corecache with --io-backend epoll" ;;
esac
SWAP=$(sysctl_value vm.swappiness)
if [[ $SWAP != "?" && $SWAP -gt 10 ]]; then would "lower vm.swappiness (now $SWAP) to 1 so cache pages are not swapped"; else ok "vm.swappiness = $SWAP"; fi

section "File descriptors"
NOFILE_SOFT=$(ulimit -S -n)
NOFILE_HARD=$(ulimit -H -n)
NEED=$((CONNS + 64))
if [[ $NOFILE_HARD != unlimited && $NOFILE_HARD -lt $NEED ]]; then
    would "raise the open-files hard limit to at least $NEED for -c $CONNS (now $NOFILE_HARD; LimitNOFILE= or limits.conf)"
elif [[ $NOFILE_SOFT != unlimited && $NOFILE_SOFT -lt $NEED ]]; then
    would "raise the open-files soft limit to at least $NEED for -c $CONNS (now $NOFILE_SOFT; hard allows $NOFILE_HARD)"
else ok "open files: soft $NOFILE_SOFT, hard $NOFILE_HARD (need $NEED)"; fi

section "TCP"
check_min() { # check_min KEY MIN WHY
    local value
    value=$(sysctl_value "$1")
    if [[ $value == "?" ]]; then info "$1 not readable"
    elif [[ ${value%% *} -lt $2 ]]; then would "sysctl $1=$2 (now $value): $3"
    else ok "$1 = $value"; fi
}
check_min net.core.somaxconn 4096 "accept queue for connection bursts"
check_min net.ipv4.tcp_max_syn_backlog 4096 "SYN queue for connection bursts"
check_min net.core.netdev_max_backlog 5000 "packets queued per cpu before drops"
info "net.ipv4.ip_local_port_range = $(sysctl_value net.ipv4.ip_local_port_range) (matters on load generators opening many connections)"
SLOW=$(sysctl_value net.ipv4.tcp_slow_start_after_idle)
if [[ $SLOW == 1 ]]; then would "sysctl net.ipv4.tcp_slow_start_after_idle=0 (idle keep-alive connections restart slowly)"; else ok "tcp_slow_start_after_idle = $SLOW"; fi

section "Profiling"
PARANOID=$(sysctl_value kernel.perf_event_paranoid)
if command -v perf >/dev/null 2>&1; then ok "perf is installed"; else info "perf is not installed (linux-tools / linux-perf package)"; fi
if [[ $PARANOID != "?" && $PARANOID -gt 1 ]]; then
    would "sysctl kernel.perf_event_paranoid=1 (now $PARANOID) to profile without root"
else ok "kernel.perf_event_paranoid = $PARANOID"; fi
KPTR=$(sysctl_value kernel.kptr_restrict)
[[ $KPTR != 0 ]] && info "kernel.kptr_restrict=$KPTR: kernel symbols hidden in perf unless root"

printf '\n%d suggestion(s). Nothing was changed; see tuning/README.md for how and why.\n' "$SUGGESTIONS"
