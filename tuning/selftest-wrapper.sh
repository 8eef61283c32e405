#!/usr/bin/env bash
# Stand-in for corecache when checking tuning/compare.sh itself:
#   CORECACHE=tuning/selftest-wrapper.sh tuning/compare.sh --quick
# It drops corecache's own flags (--cpus, --io-backend) and execs memcached, so the PID that
# compare.sh measures is memcached's.
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --cpus|--io-backend) shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [[ $EUID -eq 0 ]]; then args+=(-u root); fi
exec "${MEMCACHED:-memcached}" "${args[@]}"
