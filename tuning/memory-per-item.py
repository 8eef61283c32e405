#!/usr/bin/env python3
"""RSS per item: load N items (keys key:0000001.., fixed-size values) into corecache and into
memcached with the same -t and -m, read every item back, and report VmRSS per item for both.

Usage: tuning/memory-per-item.py [--items 1000000] [--value-size 100] [--memory 1024]
                                 [--corecache target/release/corecache] [--reps 1]

Both servers run with one thread; servers run one after the other (A B A B when --reps > 1)
and the result is written under tuning/results/.
"""
import argparse
import os
import platform
import socket
import subprocess
import sys
import time

from servers import rss_bytes, start_corecache, start_memcached

BATCH = 100  # keys per pipelined write / multi-get


def start_corecache_one(path, memory):
    return start_corecache(path, ["-t", "1", "-m", str(memory), "--cpus", "1"])


def start_memcached_one(memory):
    return start_memcached(["-t", "1", "-m", str(memory)], cpus=1)


def recv_until(sock, buf, marker, count):
    """Reads until `marker` has appeared `count` times in the stream; returns leftover bytes."""
    seen = 0
    while True:
        i = buf.find(marker)
        if i >= 0:
            seen += 1
            buf = buf[i + len(marker):]
            if seen == count:
                return buf
            continue
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk


def load_and_read(port, items, value_size):
    sock = socket.create_connection(("127.0.0.1", port))
    value = b"v" * value_size
    buf = b""
    for start in range(1, items + 1, BATCH):
        keys = [b"key:%07d" % i for i in range(start, min(start + BATCH, items + 1))]
        req = b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, value_size, value) for k in keys)
        sock.sendall(req)
    # A round trip makes sure every set has been executed.
    sock.sendall(b"version\r\n")
    buf = recv_until(sock, buf, b"\r\n", 1)
    hits = 0
    for start in range(1, items + 1, BATCH):
        keys = [b"key:%07d" % i for i in range(start, min(start + BATCH, items + 1))]
        sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        data = buf
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        hits += data.count(b"VALUE ")
        buf = b""
    sock.sendall(b"stats\r\n")
    data = b""
    while not data.endswith(b"END\r\n"):
        data += sock.recv(1 << 20)
    stats = dict(l.split()[1:3] for l in data.decode().split("\r\n") if l.startswith("STAT "))
    sock.close()
    return hits, stats


def measure(name, start, items, value_size, memory):
    p, port = start()
    try:
        time.sleep(0.2)
        base = rss_bytes(p.pid)
        hits, stats = load_and_read(port, items, value_size)
        rss = rss_bytes(p.pid)
    finally:
        p.terminate()
        p.wait()
    return {"name": name, "rss": rss, "base": base, "hits": hits,
            "curr_items": int(stats.get("curr_items", 0)),
            "evictions": int(stats.get("evictions", 0))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--memory", type=int, default=1024)
    ap.add_argument("--corecache", default="target/release/corecache")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", default="tuning/results")
    a = ap.parse_args()
    rows = []
    for _ in range(a.reps):
        rows.append(measure("corecache", lambda: start_corecache_one(a.corecache, a.memory),
                            a.items, a.value_size, a.memory))
        rows.append(measure("memcached", lambda: start_memcached_one(a.memory),
                            a.items, a.value_size, a.memory))
    lines = ["| server | items read back | curr_items | evictions | VmRSS MiB | RSS bytes/item |",
             "| --- | --- | --- | --- | --- | --- |"]
    per = {}
    for r in rows:
        b = r["rss"] / a.items
        per.setdefault(r["name"], []).append(b)
        lines.append(f"| {r['name']} | {r['hits']} | {r['curr_items']} | {r['evictions']} | "
                     f"{r['rss'] / 2**20:.1f} | {b:.1f} |")
    med = {k: sorted(v)[len(v) // 2] for k, v in per.items()}
    ratio = med["corecache"] / med["memcached"]
    lines.append("")
    lines.append(f"corecache/memcached RSS per item: {ratio:.3f} "
                 f"(medians {med['corecache']:.1f} / {med['memcached']:.1f} bytes)")
    report = "\n".join(lines)
    print(report)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mc = subprocess.run(["memcached", "-V"], capture_output=True, text=True).stdout.strip()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, time.strftime("%Y%m%d-%H%M%S") + "-memory-per-item.md")
    with open(path, "w") as f:
        f.write(f"# RSS per item\n\ncommand: `{' '.join(sys.argv)}`\n\n"
                f"git: {rev}\nkernel: {platform.release()}\ncpu: {cpu}\nreference: {mc}\n\n"
                f"{a.items} items, keys key:0000001.., {a.value_size}-byte values, -t 1 -m {a.memory}; "
                f"every item read back before VmRSS is taken.\n\n{report}\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
