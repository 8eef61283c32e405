"""Helpers the Python scripts under tuning/ share: start corecache or memcached on a free
loopback port, and read a process's RSS."""
import os
import socket
import subprocess
import time


def rss_bytes(pid):
    """VmRSS of process `pid`, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def start_corecache(path, flags):
    """corecache on 127.0.0.1 and a port it picks, with `flags`; returns (process, port) once
    it prints its `listening` line."""
    p = subprocess.Popen([path, "-l", "127.0.0.1", "-p", "0"] + flags,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("listening "):
        p.kill()
        raise RuntimeError(f"corecache did not start: {line!r}")
    return p, int(line.rsplit(":", 1)[1])


def start_memcached(flags, cpus=None):
    """memcached on 127.0.0.1 and a free port, without UDP, with `flags` (as `nobody` when run
    as root), under `taskset -c cpus` if given; returns (process, port) once it accepts."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cmd = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0"] + flags
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    if cpus is not None:
        cmd = ["taskset", "-c", str(cpus)] + cmd
    p = subprocess.Popen(cmd)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.02)
    p.kill()
    raise RuntimeError("memcached did not start")
