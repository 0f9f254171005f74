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
3. background delivery of that job (accept to `done`) vs a synchronous `send` to the same
   100,000 devices through the same daemon and sink: notifications/s and the ratio.
4. RSS with many notifications queued: `--queued` notifications accepted as scheduled jobs
   (100,000 devices each) and the daemon's RSS then, and its peak RSS while a 100,000-device
   job's rows are resolved and delivered.

    bench/outbox_bench.py --bin .build/release/pushline [--port 21000] [--devices 100000]

Figures on a loaded 2-core machine are indicative only.
"""
import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Conn, apns_key, proc_status, start_daemon, start_sink, stop_daemon, stop_sink  # noqa: E402


def pipelined(path, conns, window, requests):
    """`conns` connections, each keeping up to `window` requests written ahead of its answers.
    Returns (seconds, answers)."""
    import selectors
    sel = selectors.DefaultSelector()
    lines = [json.dumps(r).encode() + b"\n" for r in requests]
    per = [lines[i::conns] for i in range(conns)]
    states = []
    t0 = time.time()
    for k in range(conns):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        st = {"sock": s, "lines": per[k], "next": 0, "got": 0, "buf": b""}
        n = min(window, len(st["lines"]))
        s.sendall(b"".join(st["lines"][:n]))
        st["next"] = n
        states.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    out = []
    pending = len(states)
    while pending:
        for key, _ in sel.select():
            st = key.data
            chunk = st["sock"].recv(1 << 20)
            if not chunk:
                raise ConnectionError("daemon closed a connection")
            st["buf"] += chunk
            more = []
            while b"\n" in st["buf"]:
                line, st["buf"] = st["buf"].split(b"\n", 1)
                out.append(json.loads(line))
                st["got"] += 1
                if st["next"] < len(st["lines"]):
                    more.append(st["lines"][st["next"]])
                    st["next"] += 1
            if more:
                st["sock"].sendall(b"".join(more))
            if st["got"] == len(st["lines"]):
                sel.unregister(st["sock"])
                pending -= 1
    dt = time.time() - t0
    for st in states:
        st["sock"].close()
    return dt, out


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
    key = apns_key(work)
    config = {
        "max_line_bytes": 64 << 20, "max_queued": 100_000_000,
        "apps": {"default": {"apns": {
            "key_path": str(key), "key_id": "BENCHKEY01", "team_id": "BENCHTEAM1", "topic": "com.example.bench",
            "endpoint": f"https://localhost:{port}", "ca_file": ca, "max_connections": 2}}},
    }
    proc, sock = start_daemon(args.bin, work, config)
    c = Conn(sock)
    ids = []
    for s in range(0, args.devices, 20000):
        r = c.call({"cmd": "register", "devices": [
            {"platform": "apns", "registration_id": f"{i:064x}"} for i in range(s, min(args.devices, s + 20000))]})
        assert r["ok"], r
        ids += [d["id"] for d in r["devices"]]
    return proc, sock, c, ids


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
    args = ap.parse_args()
    port, ca, sink_dir = start_sink(args.port)
    try:
        # 1. accepts (scheduled an hour ahead: the accept path alone).
        proc, sock, c, ids = fresh_daemon(args, port, ca, "accept")
        later = int(time.time()) + 3600
        reqs = [{"cmd": "send", "ids": [ids[i % len(ids)]], "message": "hello", "async": True, "send_at": later}
                for i in range(args.accepts)]
        dt, out = pipelined(sock, 4, args.window, reqs)
        ok = sum(1 for r in out if r.get("ok"))
        print(f"async single sends accepted (scheduled, 4 connections, window {args.window}): {ok / dt:,.0f}/s "
              f"({ok} of {len(reqs)} ok in {dt:.2f} s)")
        stop_daemon(proc)
        proc, sock, c, ids = fresh_daemon(args, port, ca, "accept-deliver")
        reqs = [{"cmd": "send", "ids": [ids[i % len(ids)]], "message": "hello", "async": True} for i in range(args.accepts)]
        t_start = time.time()
        dt, out = pipelined(sock, 4, args.window, reqs)
        ok = sum(1 for r in out if r.get("ok"))
        print(f"async single sends accepted (delivered meanwhile): {ok / dt:,.0f}/s ({ok} ok in {dt:.2f} s)")
        last = [r["job"]["id"] for r in out if r.get("ok")][-1]
        _, t_done = wait_done(c, last)
        print(f"  the last of them done {t_done - t_start:.2f} s after the first request: "
              f"{ok / (t_done - t_start):,.0f} jobs/s accepted and delivered")
        stop_daemon(proc)

        # 2 and 3. a 100,000-device job: accept time, background delivery vs sync.
        proc, sock, c, ids = fresh_daemon(args, port, ca, "deliver")
        n = len(ids)
        warm = c.call({"cmd": "send", "ids": ids[:10], "message": "warm"})
        assert warm["ok"], warm
        t0 = time.time()
        r = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "async": True})
        accept_s = c.received_at - t0
        assert r["ok"], r
        job, t_done = wait_done(c, r["job"]["id"])
        bg_rate = n / (t_done - t0)
        print(f"async send to {n:,} devices (filter): accepted in {accept_s * 1000:.1f} ms")
        print(f"  background delivery: {job['sent']:,} sent in {t_done - t0:.2f} s = {bg_rate:,.0f}/s")
        t0 = time.time()
        r2 = c.call({"cmd": "send", "ids": ids, "message": "everyone", "async": True})
        print(f"async send to {n:,} devices (an ids list of {n:,}): accepted in {(c.received_at - t0) * 1000:.1f} ms")
        wait_done(c, r2["job"]["id"])
        t0 = time.time()
        s = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "results": "none"})
        sync_s = c.received_at - t0
        assert s["ok"] and s["sent"] == n, {k: s.get(k) for k in ("ok", "sent", "failed", "error")}
        print(f"  synchronous send to the same devices: {n / sync_s:,.0f}/s; background / sync = {bg_rate / (n / sync_s):.2f}")
        print(f"  daemon peak RSS so far (VmHWM): {rss_mb(proc.pid, 'VmHWM'):.1f} MB")

        # 4. RSS with many notifications queued (scheduled jobs of 100,000 devices each).
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
        stop_daemon(proc)
    finally:
        stop_sink(sink_dir)


if __name__ == "__main__":
    main()
