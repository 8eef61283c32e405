#!/usr/bin/env python3
"""Memory idle connections keep after carrying large values: N connections each read (or
store) one V-byte value and then stay open; report the server's RSS growth and its buffer
`stats` (read_buf_bytes, read_buf_bytes_free, response_obj_bytes) 3.5 s later, for
corecache on both backends and for memcached.

Usage: tuning/idle-buffers.py [--conns 500] [--value-size 500000] [--op get|set|both]
                              [--corecache target/release/corecache] [--out FILE]

Each server runs with one thread and -m 1024 -c 4096; the table is printed and, with --out,
written there with the command, git revision, kernel and CPU model.
"""
import argparse
import platform
import socket
import subprocess
import time

from servers import rss_bytes, start_corecache, start_memcached


def start(server, corecache):
    flags = ["-t", "1", "-m", "1024", "-c", "4096"]
    if server == "memcached":
        return start_memcached(flags)
    return start_corecache(corecache, flags + ["--io-backend", server.split("-", 1)[1]])


def read_exactly(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return bytes(buf)


def stats(sock):
    sock.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    out = {}
    for line in buf.decode().split("\r\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def run(server, args):
    p, port = start(server, args.corecache)
    try:
        admin = socket.create_connection(("127.0.0.1", port))
        value = b"v" * args.value_size
        store = b"set big 0 0 %d\r\n%s\r\n" % (len(value), value)
        admin.sendall(store)
        assert read_exactly(admin, 8) == b"STORED\r\n"
        reply_len = len(b"VALUE big 0 %d\r\n" % len(value)) + len(value) + len(b"\r\nEND\r\n")
        time.sleep(0.2)
        before = rss_bytes(p.pid)
        conns = []
        for i in range(args.conns):
            c = socket.create_connection(("127.0.0.1", port))
            if args.op in ("set", "both"):
                c.sendall(b"set k%d 0 0 %d\r\n%s\r\n" % (i % 8, len(value), value))
                assert read_exactly(c, 8) == b"STORED\r\n"
            if args.op in ("get", "both"):
                c.sendall(b"get big\r\n")
                read_exactly(c, reply_len)
            conns.append(c)
        # Idle connections give up large buffers within 2-3 s (a sweep once a second).
        time.sleep(3.5)
        after = rss_bytes(p.pid)
        st = stats(admin)
        for c in conns:
            c.close()
        return {
            "rss_before": before,
            "growth": after - before,
            "read_buf_bytes": int(st.get("read_buf_bytes", 0)),
            "read_buf_bytes_free": int(st.get("read_buf_bytes_free", 0)),
            "response_obj_bytes": int(st.get("response_obj_bytes", 0)),
        }
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--value-size", type=int, default=500_000)
    ap.add_argument("--op", choices=["get", "set", "both"], default="both")
    ap.add_argument("--corecache", default="target/release/corecache")
    ap.add_argument("--out")
    args = ap.parse_args()
    mb = 1 << 20
    lines = [
        f"| server | RSS before MB | RSS growth MB | read_buf_bytes | read_buf_bytes_free "
        f"| response_obj_bytes |",
        "|---|---|---|---|---|---|",
    ]
    for server in ["corecache-uring", "corecache-epoll", "memcached"]:
        r = run(server, args)
        lines.append(
            f"| {server} | {r['rss_before'] / mb:.1f} | {r['growth'] / mb:.1f} "
            f"| {r['read_buf_bytes']} | {r['read_buf_bytes_free']} "
            f"| {r['response_obj_bytes']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), "unknown")
        with open(args.out, "a") as f:
            f.write(f"command: `tuning/idle-buffers.py --conns {args.conns} --value-size "
                    f"{args.value_size} --op {args.op}`; git {git}; kernel "
                    f"{platform.release()}; CPU {cpu}\n\n{table}\n\n")


if __name__ == "__main__":
    main()
