#!/usr/bin/env python3
"""Where a single send's daemon CPU goes, per thread (not a test; figures are indicative on a
shared machine): 32 clients send single `send`s against the no-body APNs sink while `perf stat
--per-thread` counts syscalls, context switches and transmitted packets (net:net_dev_queue, one
per TCP segment on loopback); prints each thread's CPU and each count per send.
    bench/adhoc/syscalls_per_send.py BIN [BIN...] [--sends 10000] [--port 24060]
Needs perf with tracepoints (run as root).
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import Conn, concurrent_calls, start_daemon, start_sink, stop_daemon, stop_sink, thread_cpu_line, thread_cpu_s  # noqa: E402
from latency_bench import apns_config, register, token  # noqa: E402

SYSCALLS = ("read write writev readv sendto recvfrom sendmsg recvmsg poll ppoll epoll_wait epoll_pwait epoll_ctl "
            "futex mmap munmap madvise brk pread64 pwrite64 fsync fdatasync sched_yield nanosleep clock_nanosleep "
            "close openat newfstatat lseek fcntl getsockopt setsockopt rt_sigprocmask getrandom mprotect ioctl").split()


def one(binary, port, ca, sends):
    work = Path(tempfile.mkdtemp(prefix="pushline-syscalls."))
    proc, sock = start_daemon(binary, work, apns_config(work, port, ca, 2))
    out_file = work / "perf.txt"
    try:
        c = Conn(sock)
        register(c, 64)
        req = {"cmd": "send", "platform": "apns", "registration_ids": [token(2)], "message": "latency"}
        for _ in range(200):
            c.call(req)
        reqs = [dict(req, registration_ids=[token(1 + i % 64)]) for i in range(sends)]
        events = ",".join(f"syscalls:sys_enter_{x}" for x in SYSCALLS) + ",context-switches,net:net_dev_queue"
        perf = subprocess.Popen(["perf", "stat", "--per-thread", "-x", ",", "-e", events, "-p", str(proc.pid),
                                 "-o", str(out_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.7)
        th0 = thread_cpu_s(proc.pid)
        dt, out = concurrent_calls(sock, 32, reqs)
        threads = thread_cpu_line(th0, thread_cpu_s(proc.pid), len(out))
        perf.send_signal(2)
        perf.wait()
    finally:
        stop_daemon(proc)
    print(f"{Path(binary).name}: 32 clients {len(out) / dt:,.0f} sends/s; CPU per send {threads}")
    per = {}
    for line in open(out_file):
        f = line.strip().split(",")
        if len(f) > 3 and f[1].isdigit() and int(f[1]) > 0:
            name = f[0].rsplit("-", 1)[0]
            event = f[3].split("_enter_")[-1]
            per.setdefault(name, {})
            per[name][event] = per[name].get(event, 0) + int(f[1])
    for name, counts in per.items():
        items = [(k, v / len(out)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v / len(out) >= 0.01]
        if items:
            print(f"    {name} per send: " + ", ".join(f"{k} {v:.2f}" for k, v in items))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--sends", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=24060)
    args = ap.parse_args()
    port, ca, sink = start_sink(args.port, 0)
    try:
        for b in args.bins:
            one(b, port, ca, args.sends)
    finally:
        stop_sink(sink)


if __name__ == "__main__":
    main()
