#!/usr/bin/env python3
"""Foundation benchmark: the daemon over its socket (not a test: it prints figures).

Measures pipelined ping round trips per second on one connection, single-device
register per second (pipelined on a few connections), batched registers (devices/s),
and the daemon's RSS idle and after 100k registered devices. The client is
Python, so the ping figure is also bounded by the client: it prints the client's
own CPU time beside it.

    bench/foundation_bench.py [--bin .build/release/pushline]
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from benchlib import cpu_s, proc_status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""

    def pipeline(self, lines: bytes, count: int) -> list:
        """Writes every line (from a thread) while reading `count` responses."""
        t = threading.Thread(target=self.s.sendall, args=(lines,))
        t.start()
        out = []
        while len(out) < count:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("closed")
            self.buf += chunk
            *full, self.buf = self.buf.split(b"\n")
            out.extend(full)
        t.join()
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release" / "pushline"))
    ap.add_argument("--pings", type=int, default=200_000)
    ap.add_argument("--registers", type=int, default=40_000)
    ap.add_argument("--batched", type=int, default=100_000)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="plbench")
    sock = os.path.join(work, "p.sock")
    cfg = os.path.join(work, "c.json")
    Path(cfg).write_text(json.dumps({"max_line_bytes": 64 << 20, "log_level": "warning"}))
    proc = subprocess.Popen([args.bin, "serve", "--config", cfg, "--socket", sock, "--database", os.path.join(work, "p.db")],
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = Conn(sock)
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        idle = proc_status(proc.pid, 'VmRSS')

        # Pipelined pings on one connection.
        lines = b"".join(b'{"id":%d,"cmd":"ping"}\n' % i for i in range(args.pings))
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        d0 = cpu_s(proc.pid)
        t0 = time.perf_counter()
        out = c.pipeline(lines, args.pings)
        dt = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        assert all(b'"ok":true' in l for l in out[:10]) and len(out) == args.pings
        print(f"ping (pipelined, 1 connection): {args.pings / dt:,.0f} round trips/s  "
              f"(daemon CPU {cpu_s(proc.pid) - d0:.2f}s, client CPU {(c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime):.2f}s)")

        # Single-device registers, pipelined on 4 connections.
        conns = [Conn(sock) for _ in range(4)]
        per = args.registers // len(conns)
        payloads = []
        for k in range(len(conns)):
            payloads.append(b"".join(
                b'{"id":%d,"cmd":"register","platform":"apns","registration_id":"%064x"}\n' % (i, k * per + i + 1)
                for i in range(per)))
        results = [None] * len(conns)
        d0 = cpu_s(proc.pid)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, conns[k].pipeline(payloads[k], per))) for k in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        okc = sum(1 for r in results for l in r if b'"ok":true' in l)
        print(f"register (single device, pipelined on {len(conns)} connections): {per * len(conns) / dt:,.0f}/s, "
              f"{okc}/{per * len(conns)} ok (daemon CPU {cpu_s(proc.pid) - d0:.2f}s)")

        # Batched registers: 100 requests of 1000 devices.
        base = 10_000_000
        batch = 1000
        reqs = []
        for b in range(args.batched // batch):
            devs = ",".join('{"platform":"fcm","registration_id":"tok-%d"}' % (base + b * batch + i) for i in range(batch))
            reqs.append(('{"id":%d,"cmd":"register","devices":[%s]}\n' % (b, devs)).encode())
        d0 = cpu_s(proc.pid)
        t0 = time.perf_counter()
        out = c.pipeline(b"".join(reqs), len(reqs))
        dt = time.perf_counter() - t0
        okc = sum(1 for l in out if l.startswith(b'{"id"') and b'"ok":true' in l[:40])
        print(f"register (batches of {batch}): {args.batched / dt:,.0f} devices/s, {okc}/{len(reqs)} requests ok "
              f"(daemon CPU {cpu_s(proc.pid) - d0:.2f}s)")

        c2 = Conn(sock)
        total = json.loads(c2.pipeline(b'{"cmd":"stats"}\n', 1)[0])["devices"]["total"]
        time.sleep(3)  # the daemon returns freed heap to the kernel after 2 quiet seconds
        print(f"RSS idle: {idle / 1024:.1f} MB; after {total:,} registered devices: {proc_status(proc.pid, 'VmRSS') / 1024:.1f} MB "
              f"(peak {proc_status(proc.pid, 'VmHWM') / 1024:.1f} MB)")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
