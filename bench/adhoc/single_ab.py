#!/usr/bin/env python3
"""A/B of single sends between daemon binaries, back to back against one no-body APNs sink
(not a test; figures are indicative on a shared machine). For each round and each binary:
one client sequential (p50/p99, daemon CPU per send) and 32 clients (sends/s, daemon CPU per
send by thread).
    bench/adhoc/single_ab.py BIN_A BIN_B [--rounds 2] [--port 24050] [--perf-dir DIR]
With --perf-dir, `perf record -g` samples each daemon during its 32-client part.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import Conn, concurrent_calls, cpu_s, ctx_switches, per_send_line, thread_wakeups, thread_wakeups_line, percentile, start_daemon, start_sink, stop_daemon, stop_sink, thread_cpu_line, thread_cpu_s  # noqa: E402
from latency_bench import apns_config, failures_of, register, token  # noqa: E402


def one(binary, port, ca, args, label, perf_dir):
    work = Path(tempfile.mkdtemp(prefix="pushline-ab."))
    proc, sock = start_daemon(binary, work, apns_config(work, port, ca, args.connections))
    try:
        c = Conn(sock)
        register(c, 64)
        req = {"cmd": "send", "platform": "apns", "registration_ids": [token(2)], "message": "latency"}
        for _ in range(100):
            c.call(req)
        lat, failed = [], 0
        cpu0, ctx0, wk0 = cpu_s(proc.pid), ctx_switches(proc.pid), thread_wakeups(proc.pid)
        for _ in range(args.sequential):
            t0 = time.perf_counter()
            r = c.call(req)
            lat.append((time.perf_counter() - t0) * 1000)
            failed += failures_of([r])[0]
        seq_line = per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), args.sequential)
        seq_wk = thread_wakeups_line(wk0, thread_wakeups(proc.pid), args.sequential)
        lat.sort()
        reqs = [dict(req, registration_ids=[token(1 + i % 64)]) for i in range(args.concurrent)]
        perf = None
        if perf_dir:
            perf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-p", str(proc.pid), "-o",
                                     str(Path(perf_dir) / f"{label}.data")], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        elif args.syscalls:
            events = ",".join(f"syscalls:sys_enter_{n}" for n in args.syscalls.split(","))
            perf = subprocess.Popen(["perf", "stat", "--per-thread", "-x", ",", "-e", events, "-p", str(proc.pid), "-o",
                                     f"/tmp/perf-syscalls-{label.replace(' ', '_')}.txt"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        cpu0, ctx0, th0, wk0 = cpu_s(proc.pid), ctx_switches(proc.pid), thread_cpu_s(proc.pid), thread_wakeups(proc.pid)
        dt, out = concurrent_calls(sock, 32, reqs)
        conc_line = per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), len(out))
        conc_wk = thread_wakeups_line(wk0, thread_wakeups(proc.pid), len(out))
        th = thread_cpu_line(th0, thread_cpu_s(proc.pid), len(out))
        if perf:
            perf.send_signal(2)
            perf.wait()
        if args.syscalls:
            per = {}
            for line in open(f"/tmp/perf-syscalls-{label.replace(' ', '_')}.txt"):
                f = line.strip().split(",")
                if len(f) > 3 and f[1].isdigit() and args.syscall_threads in f[0]:
                    per[f[3].split("_enter_")[-1]] = per.get(f[3].split("_enter_")[-1], 0) + int(f[1])
            print(f"    {args.syscall_threads} syscalls per send: " + ", ".join(f"{k} {v / len(out):.2f}" for k, v in per.items()))
        f2, reasons = failures_of(out)
        load = open("/proc/loadavg").read().split()[0]
        print(f"{label}: seq p50 {percentile(lat, 50):.3f} p99 {percentile(lat, 99):.3f} ms, {seq_line}; "
              f"[wake-ups by thread: {seq_wk}]; "
              f"32 clients {len(out) / dt:,.0f}/s, {conc_line} ({th}) [wake-ups by thread: {conc_wk}]; failed {failed + f2}"
              f"{' ' + str(reasons) if reasons else ''}; load {load}", flush=True)
    finally:
        stop_daemon(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--port", type=int, default=24050)
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--concurrent", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=2, help="the APNs block's max_connections")
    ap.add_argument("--perf-dir")
    ap.add_argument("--syscalls", help="comma-separated syscall names counted on --syscall-threads (perf stat)")
    ap.add_argument("--syscall-threads", default="pl-http", help="thread name part whose syscalls are counted")
    args = ap.parse_args()
    port, ca, sink = start_sink(args.port, 0)
    try:
        for r in range(args.rounds):
            for i, b in enumerate(args.bins):
                one(b, port, ca, args, f"r{r} {chr(65 + i)} {Path(b).name}", args.perf_dir if r == 0 else None)
    finally:
        stop_sink(sink)


if __name__ == "__main__":
    main()
