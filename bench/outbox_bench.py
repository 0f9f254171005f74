#!/usr/bin/env python3
"""Durable outbox benchmark (issue 13; not a test: it prints figures).

Against the nginx HTTP/2 TLS sink (bench/sink, APNs 200 with an apns-id and no body), with the
release daemon, in one run:

1. async single sends accepted over 4 socket connections, pipelined (each connection keeps
   `--window` requests in flight), every answer after the outbox's COMMIT with
   synchronous=FULL (group commit): accepts/s. The jobs are scheduled an hour ahead so this
   measures the accept path alone; then the same with the worker delivering them at once.
2. an async send to 100,000 devices (`filter` by app, and a list of 100,000 `ids`): time from
   the request to the answer.
   1b. (`latency`) one client's sequential async accepts, idle and while a job to every device
   is delivered: p50, p99, max.
3. background delivery of that job (accept to `done`) vs a synchronous `send` to the same
   100,000 devices through the same daemon and sink: notifications/s and the ratio.
4. RSS with many notifications queued: `--queued` notifications accepted as scheduled jobs
   (100,000 devices each) by a fresh daemon (so the figure is the queue's, not what an
   earlier synchronous send left), its RSS then and its peak.
5. (`--parts rss-due`, not run by default: it takes minutes) the same number accepted as jobs
   due at once while the provider is down (the app's endpoint is a port nothing listens on:
   every attempt fails to connect and is retried with backoff), so the worker resolves every
   target into pending delivery rows and keeps claiming and retrying them: RSS sampled every
   few seconds until every job is resolved (and `--due-hold` seconds more), and its peak.

    bench/outbox_bench.py --bin .build/release/pushline [--port 21000] [--devices 100000] [--parts accept,latency,deliver,rss,rss-due]

Figures on a loaded 2-core machine are indicative only.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (sink_cpu_s, thread_wakeups, thread_wakeups_line, ctx_switches, per_send_line, Conn, concurrent_calls, cpu_s, outbox_bench_config, proc_status, start_daemon, start_sink, stop_daemon,  # noqa: E402
                      stop_sink, thread_cpu_line, thread_cpu_s)


def wait_done(c, job_id, timeout=600):
    t_end = time.time() + timeout
    while time.time() < t_end:
        j = c.call({"cmd": "job", "job": job_id})["job"]
        if j["state"] in ("done", "canceled"):
            return j, time.time()
        time.sleep(0.02)
    raise SystemExit(f"job {job_id} not done after {timeout} s")


def fresh_daemon(args, port, ca, tag):
    work = Path(tempfile.mkdtemp(prefix=f"pushline-outbox-bench-{tag}."))
    config = outbox_bench_config(work, port, ca)
    proc, sock = start_daemon(args.bin, work, config)
    c = Conn(sock)
    ids = []
    for s in range(0, args.devices, 20000):
        r = c.call({"cmd": "register", "devices": [
            {"platform": "apns", "registration_id": f"{i:064x}"} for i in range(s, min(args.devices, s + 20000))]})
        assert r["ok"], r
        ids += [d["id"] for d in r["devices"]]
    return proc, sock, c, ids


def stop_and_remove(proc, sock):
    """Stops the daemon and removes its work directory (database, WAL: tens of MB per run)."""
    import shutil
    stop_daemon(proc)
    shutil.rmtree(Path(sock).parent, ignore_errors=True)


def rss_mb(pid, field="VmRSS"):
    return proc_status(pid, field) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release/pushline")
    ap.add_argument("--port", type=int, default=21000)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--accepts", type=int, default=40_000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--queued", type=int, default=10_000_000)
    ap.add_argument("--parts", default="accept,latency,deliver,rss", help="which of accept, latency, deliver, rss, rss-due to run")
    ap.add_argument("--due-hold", type=float, default=30, help="rss-due: seconds to keep sampling once all is resolved")
    ap.add_argument("--pairs", type=int, default=1,
                    help="deliver: how many background/sync pairs to run in the daemon (the median ratio is printed)")
    ap.add_argument("--perf", default="", help="accept, deliver: record `perf record -g` of the daemon per phase into this directory")
    ap.add_argument("--perf-stat", default="",
                    help="accept, deliver: instead of --perf, `perf stat --per-thread -e EVENTS` per phase, printed per thread group")
    ap.add_argument("--down-port", type=int, default=0, help="rss-due: the provider port nothing listens on (default: --port + 1)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    port, ca, sink_dir = start_sink(args.port)
    try:
        if "accept" in parts:
            accepts(args, port, ca)
        if "latency" in parts:
            accept_latency(args, port, ca)
        if "deliver" in parts:
            deliver(args, port, ca, sink_dir)
        if "rss" in parts:
            queued_rss(args, port, ca)
        if "rss-due" in parts:
            due_rss(args, args.down_port or port + 1, ca)
    finally:
        stop_sink(sink_dir)


def accepts(args, port, ca):
    # 1. accepts (scheduled an hour ahead: the accept path alone).
    proc, sock, c, ids = fresh_daemon(args, port, ca, "accept")
    later = int(time.time()) + 3600
    reqs = [{"cmd": "send", "ids": [ids[i % len(ids)]], "message": "hello", "async": True, "send_at": later}
            for i in range(args.accepts)]
    perf = perf_start(args, proc.pid, "accept")
    cpu0, threads0 = cpu_s(proc.pid), thread_cpu_s(proc.pid)
    dt, out = concurrent_calls(sock, 4, reqs, window=args.window)
    ok = sum(1 for r in out if r.get("ok"))
    cpu, threads = cpu_s(proc.pid) - cpu0, thread_cpu_line(threads0, thread_cpu_s(proc.pid), max(ok, 1))
    perf_stop(perf)
    print(f"async single sends accepted (scheduled, 4 connections, window {args.window}): {ok / dt:,.0f}/s "
          f"({ok} of {len(reqs)} ok in {dt:.2f} s); daemon CPU {cpu * 1e6 / max(ok, 1):.1f} µs an accept ({threads})")
    stop_and_remove(proc, sock)
    proc, sock, c, ids = fresh_daemon(args, port, ca, "accept-deliver")
    reqs = [{"cmd": "send", "ids": [ids[i % len(ids)]], "message": "hello", "async": True} for i in range(args.accepts)]
    t_start = time.time()
    dt, out = concurrent_calls(sock, 4, reqs, window=args.window)
    ok = sum(1 for r in out if r.get("ok"))
    print(f"async single sends accepted (delivered meanwhile): {ok / dt:,.0f}/s ({ok} ok in {dt:.2f} s)")
    last = [r["job"]["id"] for r in out if r.get("ok")][-1]
    _, t_done = wait_done(c, last)
    print(f"  the last of them done {t_done - t_start:.2f} s after the first request: "
          f"{ok / (t_done - t_start):,.0f} jobs/s accepted and delivered")
    stop_and_remove(proc, sock)


def accept_latency(args, port, ca):
    # 1b. one client's sequential async accepts: idle, then while a job to every device is
    # resolved and delivered (the worker's database writes compete with the accepts).
    from benchlib import percentile
    proc, sock, c, ids = fresh_daemon(args, port, ca, "latency")

    def run(n=500):
        later = int(time.time()) + 3600
        out = []
        for i in range(n):
            t = time.perf_counter()
            r = c.call({"cmd": "send", "ids": [ids[i % len(ids)]], "message": "x", "async": True, "send_at": later})
            out.append((time.perf_counter() - t) * 1000)
            assert r["ok"], r
        out.sort()
        return f"p50 {percentile(out, 50):.2f} ms, p99 {percentile(out, 99):.2f} ms, max {out[-1]:.1f} ms"

    print(f"async accept latency, one client sequential, idle: {run()}")
    r = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "async": True})
    assert r["ok"], r
    time.sleep(0.1)
    during = run()
    job = c.call({"cmd": "job", "job": r["job"]["id"]})["job"]
    print(f"  during an async job to {len(ids):,} devices: {during} (the job: {job['sent']:,} sent by then)")
    stop_and_remove(proc, sock)


def perf_start(args, pid, name):
    """`perf record -g` of the daemon into --perf/<name>.data (None without --perf); or with
    --perf-stat, `perf stat` of those events per thread (printed by `perf_stop`)."""
    import subprocess
    if args.perf_stat:
        p = subprocess.Popen(["perf", "stat", "--per-thread", "-x", ",", "-e", args.perf_stat, "-p", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        p.phase = name
        time.sleep(0.5)
        return p
    if not args.perf:
        return None
    Path(args.perf).mkdir(parents=True, exist_ok=True)
    # PERF_RECORD_ARGS replaces "-g" (for example "--call-graph dwarf -F 500" where frame pointers are missing).
    extra = os.environ.get("PERF_RECORD_ARGS", "-g").split()
    p = subprocess.Popen(["perf", "record", *extra, "-q", "-o", str(Path(args.perf) / f"{name}.data"), "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def perf_stop(p):
    if p is not None:
        import signal
        p.send_signal(signal.SIGINT)
        if getattr(p, "phase", None):
            # "pl-http-0-1234,5678,,raw_syscalls:sys_enter,..." per thread: summed by thread group.
            groups = {}
            for line in p.communicate(timeout=60)[1].splitlines():
                f = line.split(",")
                if len(f) < 4 or not f[1].strip().isdigit():
                    continue
                name = f[0].rsplit("-", 1)[0]
                head, _, tail = name.rpartition("-")
                if head and tail.isdigit():
                    name = head
                groups[(name, f[3])] = groups.get((name, f[3]), 0) + int(f[1])
            print(f"  perf stat, {p.phase}: " + ", ".join(f"{g} {e} {v:,}" for (g, e), v in sorted(groups.items(), key=lambda kv: -kv[1]) if v))
        else:
            p.wait(60)


def deliver(args, port, ca, sink_dir):
    # 2 and 3. a 100,000-device job: accept time, background delivery vs sync.
    proc, sock, c, ids = fresh_daemon(args, port, ca, "deliver")
    n = len(ids)
    warm = c.call({"cmd": "send", "ids": ids[:10], "message": "warm"})
    assert warm["ok"], warm
    bg_rate, bg_cpu, ratio = background_vs_sync(args, proc, c, ids, sink_dir, first=True)
    ratios = [ratio]
    # The same synchronous send with its default answer (`results` "all": every device's result,
    # as the background delivery keeps every device's result for `job`).
    cpu0, sink0 = cpu_s(proc.pid), sink_cpu_s(sink_dir)
    t0 = time.time()
    s = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone"})
    all_s = c.received_at - t0
    assert s["ok"] and s["sent"] == n and len(s["results"]) == n, {k: s.get(k) for k in ("ok", "sent", "failed", "error")}
    all_cpu, all_sink = cpu_s(proc.pid) - cpu0, sink_cpu_s(sink_dir) - sink0
    print(f"  synchronous send, every result in its answer (the default): {n / all_s:,.0f}/s; daemon CPU "
          f"{all_cpu / n * 1e6:.0f} us each; sink {all_sink / n * 1e6:.0f} us each; background / this = "
          f"{bg_rate / (n / all_s):.2f} (rate), {bg_cpu / max(all_cpu, 1e-9):.2f} (CPU)")
    for k in range(1, args.pairs):
        # Further pairs, alternating again in the same daemon: one pair's ratio moves by a
        # tenth or more with what else the shared machine does.
        ratios.append(background_vs_sync(args, proc, c, ids, sink_dir, first=False, label=f"pair {k + 1}")[2])
    if len(ratios) > 1:
        print(f"  background / sync over {len(ratios)} pairs: median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}")
    print(f"  daemon peak RSS so far (VmHWM): {rss_mb(proc.pid, 'VmHWM'):.1f} MB")
    stop_and_remove(proc, sock)


def queued_rss(args, port, ca):
    # 4. RSS with many notifications queued (scheduled jobs of 100,000 devices each).
    proc, sock, c, ids = fresh_daemon(args, port, ca, "rss")
    n = len(ids)
    print(f"fresh daemon with {n:,} devices: RSS {rss_mb(proc.pid):.1f} MB")
    later = int(time.time()) + 3600
    jobs = max(1, args.queued // n)
    t0 = time.time()
    for _ in range(jobs):
        r = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "later", "async": True, "send_at": later})
        assert r["ok"], r
    depth = c.call({"cmd": "metrics"})["text"]
    queued = [line for line in depth.splitlines() if line.startswith("pushline_outbox_queued_notifications")]
    print(f"{jobs} scheduled jobs of {n:,} accepted in {time.time() - t0:.1f} s; {queued[0] if queued else ''}; "
          f"RSS {rss_mb(proc.pid):.1f} MB (peak {rss_mb(proc.pid, 'VmHWM'):.1f} MB)")
    time.sleep(3)  # the daemon gives burst memory back after 2 quiet seconds
    print(f"  RSS 3 s later: {rss_mb(proc.pid):.1f} MB")
    stop_and_remove(proc, sock)


def due_rss(args, down_port, ca):
    # 5. RSS with many notifications due and pending while the provider is down.
    import socket
    probe = socket.socket()
    if probe.connect_ex(("127.0.0.1", down_port)) == 0:
        raise SystemExit(f"something listens on port {down_port}: pass --down-port with a free one")
    probe.close()
    proc, sock, c, ids = fresh_daemon(args, down_port, ca, "rss-due")
    n = len(ids)
    print(f"fresh daemon with {n:,} devices, its provider down (port {down_port}): RSS {rss_mb(proc.pid):.1f} MB")
    jobs = max(1, args.queued // n)
    t0 = time.time()
    ids_ = []
    for _ in range(jobs):
        r = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "now", "async": True})
        assert r["ok"], r
        ids_.append(r["job"]["id"])
    print(f"{jobs} due jobs of {n:,} accepted in {time.time() - t0:.1f} s; RSS {rss_mb(proc.pid):.1f} MB")
    peak, resolved_at, last = 0.0, None, 0.0
    while True:
        time.sleep(5)
        rss = rss_mb(proc.pid)
        peak = max(peak, rss)
        rows = c.call({"cmd": "jobs", "state": "running", "limit": 1000})["jobs"] + \
            c.call({"cmd": "jobs", "state": "queued", "limit": 1000})["jobs"]
        devices = sum(j["devices"] for j in rows)
        started = sum(1 for j in rows if j["started_at"])
        text = c.call({"cmd": "metrics"})["text"]
        queued = next((line.split()[-1] for line in text.splitlines() if line.startswith("pushline_outbox_queued_notifications")), "?")
        t = time.time() - t0
        if t - last >= 30 or resolved_at:
            print(f"  {t:6.0f} s: RSS {rss:.1f} MB (peak {rss_mb(proc.pid, 'VmHWM'):.1f}); queued {queued}; "
                  f"{started} of {jobs} jobs started", flush=True)
            last = t
        # Resolved: a job shows its estimate as `devices` until then, so ask the database.
        if resolved_at is None and unresolved_jobs(sock) == 0:
            resolved_at = time.time()
            print(f"  every target resolved into {jobs * n:,} pending deliveries after {resolved_at - t0:.0f} s; "
                  f"RSS {rss:.1f} MB", flush=True)
        if resolved_at and time.time() - resolved_at >= args.due_hold:
            break
    print(f"  RSS with {jobs * n:,} deliveries due and pending: {rss_mb(proc.pid):.1f} MB, sampled peak {peak:.1f} MB, "
          f"VmHWM {rss_mb(proc.pid, 'VmHWM'):.1f} MB")
    stop_and_remove(proc, sock)


def unresolved_jobs(sock):
    """Jobs whose target is not fully resolved into delivery rows, read from the database file
    next to the socket (SQLite, read-only beside the daemon in WAL mode)."""
    import sqlite3
    db = Path(sock).with_name("p.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT count(*) FROM outbox_jobs WHERE resolved = 0").fetchone()[0]
    finally:
        con.close()


def background_vs_sync(args, proc, c, ids, sink_dir, first, label=""):
    """One async send to every device delivered in the background, then the same synchronous
    send; prints both (in full for the first pair, a line for the others) and returns the
    background rate and the ratio of the rates."""
    n = len(ids)
    perf = perf_start(args, proc.pid, "background") if first else None
    cpu0, threads0, sink0 = cpu_s(proc.pid), thread_cpu_s(proc.pid), sink_cpu_s(sink_dir)
    wk0, ctx0 = thread_wakeups(proc.pid), ctx_switches(proc.pid)
    t0 = time.time()
    r = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "async": True})
    accept_s = c.received_at - t0
    assert r["ok"], r
    job, t_done = wait_done(c, r["job"]["id"])
    bg_rate = n / (t_done - t0)
    bg_cpu, bg_threads = cpu_s(proc.pid) - cpu0, thread_cpu_line(threads0, thread_cpu_s(proc.pid), n)
    bg_sink = sink_cpu_s(sink_dir) - sink0
    bg_wk = f"{per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), n)}; wake-ups by thread: {thread_wakeups_line(wk0, thread_wakeups(proc.pid), n)}"
    perf_stop(perf)
    if first:
        print(f"async send to {n:,} devices (filter): accepted in {accept_s * 1000:.1f} ms")
        print(f"  background delivery: {job['sent']:,} sent in {t_done - t0:.2f} s = {bg_rate:,.0f}/s; "
          f"daemon CPU {bg_cpu:.2f} s = {bg_cpu / n * 1e6:.0f} us each ({bg_threads}); sink {bg_sink / n * 1e6:.0f} us each")
    if first:
        t0 = time.time()
        r2 = c.call({"cmd": "send", "ids": ids, "message": "everyone", "async": True})
        print(f"async send to {n:,} devices (an ids list of {n:,}): accepted in {(c.received_at - t0) * 1000:.1f} ms")
        wait_done(c, r2["job"]["id"])
    perf = perf_start(args, proc.pid, "sync") if first else None
    cpu0, threads0, sink0 = cpu_s(proc.pid), thread_cpu_s(proc.pid), sink_cpu_s(sink_dir)
    wk0, ctx0 = thread_wakeups(proc.pid), ctx_switches(proc.pid)
    t0 = time.time()
    s = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "results": "failed"})
    sync_s = c.received_at - t0
    assert s["ok"] and s["sent"] == n, {k: s.get(k) for k in ("ok", "sent", "failed", "error", "results")}
    sync_cpu, sync_threads = cpu_s(proc.pid) - cpu0, thread_cpu_line(threads0, thread_cpu_s(proc.pid), n)
    sync_sink = sink_cpu_s(sink_dir) - sink0
    sync_wk = f"{per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), n)}; wake-ups by thread: {thread_wakeups_line(wk0, thread_wakeups(proc.pid), n)}"
    perf_stop(perf)
    ratio = bg_rate / (n / sync_s)
    if not first:
        print(f"  {label}: background {bg_rate:,.0f}/s, daemon CPU {bg_cpu / n * 1e6:.0f} us each ({bg_threads}), sink "
              f"{bg_sink / n * 1e6:.0f} us; sync {n / sync_s:,.0f}/s, daemon CPU {sync_cpu / n * 1e6:.0f} us each, sink "
              f"{sync_sink / n * 1e6:.0f} us; background / sync = {ratio:.2f} (rate), {bg_cpu / max(sync_cpu, 1e-9):.2f} (CPU)")
        return bg_rate, bg_cpu, ratio
    print(f"  synchronous send to the same devices: {n / sync_s:,.0f}/s; daemon CPU {sync_cpu:.2f} s = "
          f"{sync_cpu / n * 1e6:.0f} us each ({sync_threads}); sink {sync_sink / n * 1e6:.0f} us each")
    print(f"  background / sync = {bg_rate / (n / sync_s):.2f} (rate), daemon CPU per delivery background / sync = "
          f"{bg_cpu / max(sync_cpu, 1e-9):.2f}")
    print(f"  per delivery, background: {bg_wk}")
    print(f"  per delivery, sync: {sync_wk}")
    return bg_rate, bg_cpu, ratio


if __name__ == "__main__":
    main()

