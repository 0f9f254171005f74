#!/usr/bin/env python3
"""What a careless local client costs everyone else (issue 12); prints figures, asserts nothing.

1. The slowest `ping` on one connection while another sends one 979 KB line whose `badges`
   object has 90,000 keys (and how long that line took to be answered).
2. The daemon's RSS growth while one client pipelines N pings and reads none of the replies,
   then how long reading all N replies takes.

    bench/server_abuse_bench.py [--bin .build/release/pushline] [--pings 3000000]
"""
import argparse
import json
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchlib import cpu_s, proc_status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def connect(path, timeout=600):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    return s


def recv_lines(s, buf, n):
    out = []
    while len(out) < n:
        while b"\n" not in buf:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        out.append(line)
    return out, buf


def start(binary, work):
    sock = str(Path(work) / "p.sock")
    p = subprocess.Popen([binary, "serve", "--socket", sock, "--database", str(Path(work) / "p.db")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            s = connect(sock, 2)
            s.sendall(b'{"cmd":"ping"}\n')
            recv_lines(s, b"", 1)
            s.close()
            return p, sock
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("daemon did not start")


def huge_line(p, sock):
    badges = {f"{i:05x}": i % 100 for i in range(90_000)}
    line = json.dumps({"id": "big", "cmd": "send", "tokens": ["ab" * 32], "platform": "apns", "message": "x",
                       "badges": badges}, separators=(",", ":")).encode() + b"\n"
    big, pinger = connect(sock), connect(sock)
    base = 0.0
    for _ in range(200):  # the same pings with nothing else going on: this machine's noise
        a = time.monotonic()
        pinger.sendall(b'{"cmd":"ping"}\n')
        recv_lines(pinger, b"", 1)
        base = max(base, time.monotonic() - a)
        time.sleep(0.002)
    print(f"slowest of 200 pings alone: {base * 1000:.2f} ms")
    t0 = time.monotonic()
    big.sendall(line)
    done = {}
    th = threading.Thread(target=lambda: (recv_lines(big, b"", 1), done.setdefault("t", time.monotonic() - t0)))
    th.start()
    slowest, n = 0.0, 0
    while th.is_alive() or n < 20:
        a = time.monotonic()
        pinger.sendall(b'{"cmd":"ping"}\n')
        recv_lines(pinger, b"", 1)
        slowest = max(slowest, time.monotonic() - a)
        n += 1
        time.sleep(0.002)
    th.join()
    print(f"979 KB line ({len(line):,} bytes, 90,000 keys): answered in {done['t'] * 1000:,.0f} ms; "
          f"slowest of {n} pings on another connection meanwhile: {slowest * 1000:.2f} ms")
    big.close()
    pinger.close()


def unread(p, sock, count):
    rss0 = proc_status(p.pid, "VmRSS")
    c = connect(sock)
    data = b'{"cmd":"ping"}\n' * count
    sent = [0]

    def writer():
        v = memoryview(data)
        while sent[0] < len(data):
            sent[0] += c.send(v[sent[0]:sent[0] + 65536])

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    peak, last, still = rss0, -1, time.monotonic()
    while w.is_alive() and time.monotonic() - still < 2:
        time.sleep(0.1)
        peak = max(peak, proc_status(p.pid, "VmRSS"))
        if sent[0] != last:
            last, still = sent[0], time.monotonic()
    peak = max(peak, proc_status(p.pid, "VmRSS"))
    print(f"{count:,} pings, none read: client got {sent[0] / len(data):.0%} written before the daemon stopped reading; "
          f"daemon RSS {rss0 / 1024:.1f} -> {peak / 1024:.1f} MB")
    t0 = time.monotonic()
    cpu0 = cpu_s(p.pid)
    buf = b""
    got = 0
    while got < count:
        lines, buf = recv_lines(c, buf, min(100_000, count - got))
        got += len(lines)
    w.join()
    print(f"then all {got:,} replies read in {time.monotonic() - t0:.1f} s (daemon CPU {cpu_s(p.pid) - cpu0:.1f} s; "
          f"the Python client, writing and reading at once, is the bottleneck)")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release" / "pushline"))
    ap.add_argument("--pings", type=int, default=3_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        p, sock = start(args.bin, work)
        try:
            huge_line(p, sock)
            unread(p, sock, args.pings)
        finally:
            p.terminate()
            t0 = time.monotonic()
            try:
                p.wait(60)
                print(f"SIGTERM to exit: {time.monotonic() - t0:.2f} s")
            except subprocess.TimeoutExpired:
                p.kill()
                print("SIGTERM: did not exit within 60 s (killed)")


if __name__ == "__main__":
    main()
