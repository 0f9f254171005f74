#!/usr/bin/env python3
"""FCM throughput benchmark (not a test: it prints figures).

The release daemon sends `bulk` commands of 10,000 and 100,000 FCM tokens to the local nginx
HTTP/2 TLS sink (bench/sink, with bench/sink/fcm-locations.conf answering the OAuth2 token and
the v1 send endpoints), one request per token as FCM v1 requires. Prints notifications/s (whole
command, from the request sent to the response's last byte received: registry lookup, message
build, HTTP/2, results), the ratio to h2load's rate with the
same number of connections and the same request, the daemon's CPU seconds and peak RSS.

    bench/fcm_bench.py [--bin .build/release/pushline] [--counts 10000,100000] [--port 18444]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "fakes"))
from fcm_service_account import make_service_account  # noqa: E402
from benchlib import (Conn, cpu_s, h2load_rate, libcurl_rate, proc_status, settle_and_reset_peak,  # noqa: E402
                      thread_cpu_line, thread_cpu_s)


def start_sink(port):
    """bench/sink answers the FCM paths itself (bench/sink/fcm-locations.conf)."""
    out = subprocess.run([str(ROOT / "bench/sink/start.sh"), str(port)], check=True, capture_output=True,
                         text=True).stdout.split()
    _, port, ca, d = out[:4]
    return int(port), ca, d


def request_headers(token):
    """The headers the daemon sends to FCM (the ceilings send the same)."""
    return ["content-type: application/json; charset=UTF-8", f"authorization: Bearer {token}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("PUSHLINE_BIN", str(ROOT / ".build/release/pushline")))
    ap.add_argument("--counts", default="10000,100000")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "18444")))
    ap.add_argument("--max-connections", type=int, default=2, help="the fcm block's max_connections")
    ap.add_argument("--repeat", type=int, default=2, help="runs per count (the best is reported too)")
    ap.add_argument("--streams", type=int, default=100,
                    help="max_streams_per_connection (default 100, like h2load's -m 100)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    args.bin = os.path.abspath(args.bin)

    port, ca, sink_dir = start_sink(args.port)
    work = Path(tempfile.mkdtemp(prefix="pushline-fcm-bench-"))
    proc = None
    try:
        base = f"https://127.0.0.1:{port}"
        sa = work / "sa.json"
        make_service_account(str(sa), base + "/token", "bench")
        sock = str(work / "p.sock")
        config = {"apps": {"default": {"fcm": {"service_account_path": str(sa), "endpoint": base, "ca_file": ca,
                                                "max_connections": args.max_connections}}},
                  "max_line_bytes": 16 << 20, "log_level": "warning", "max_streams_per_connection": args.streams}
        (work / "config.json").write_text(json.dumps(config))
        log = open(work / "daemon.log", "wb")
        proc = subprocess.Popen([args.bin, "serve", "--socket", sock, "--database", str(work / "p.db"),
                                 "--config", str(work / "config.json")], stdout=log, stderr=log, cwd=work)
        for _ in range(200):
            try:
                c = Conn(sock)
                if c.call({"cmd": "ping"}).get("ok"):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("daemon did not start: " + (work / "daemon.log").read_text())

        total = max(counts)
        ids = []
        t0 = time.time()
        for start in range(0, total, 50000):
            devs = [{"platform": "fcm", "registration_id": f"bench-{i:07d}-" + "x" * 140}
                    for i in range(start, min(total, start + 50000))]
            r = c.call({"cmd": "register", "devices": devs})
            assert r["ok"], r
            ids += [d["id"] for d in r["devices"]]
        print(f"registered {total} FCM devices in {time.time() - t0:.1f} s")
        note = {"message": "A benchmark notification", "title": "Hello"}
        r = c.call({"cmd": "send", "ids": ids[:1], **note})  # token fetch, connections
        assert r["ok"] and r["sent"] == 1, r
        settle_and_reset_peak(proc.pid)  # Registration's burst memory given back first.
        rss_idle = proc_status(proc.pid, "VmRSS")

        body = work / "body.json"
        body.write_text(json.dumps({"message": {"token": "bench-0000000-" + "x" * 140,
                                                "notification": {"title": "Hello", "body": note["message"]}}},
                                   separators=(",", ":")))
        conns = args.max_connections
        print(f"daemon: release binary, {conns} connection(s) x {args.streams} streams to the sink; "
              f"idle RSS after warm-up {rss_idle / 1024:.1f} MB")
        lifetime_peak = 0
        url = f"{base}/v1/projects/bench/messages:send"
        rates = {}
        for n in counts:
            rates[n] = []
            for rep in range(args.repeat):
                lifetime_peak = max(lifetime_peak, settle_and_reset_peak(proc.pid))
                rss0 = proc_status(proc.pid, "VmRSS")
                cpu0 = cpu_s(proc.pid)
                threads0 = thread_cpu_s(proc.pid)
                t0 = time.time()
                req = {"cmd": "bulk", **note}
                if n == total:
                    req["filter"] = {"platform": "fcm"}
                else:
                    req["ids"] = ids[:n]
                r = c.call(req)
                wall = c.received_at - t0
                cpu = cpu_s(proc.pid) - cpu0
                threads = thread_cpu_line(threads0, thread_cpu_s(proc.pid), n)
                assert r["ok"], r
                rps = n / wall
                rates[n].append(rps)
                print(f"  bulk {n}: sent {r['sent']} failed {r['failed']} in {wall:.2f} s = {rps:,.0f} notifications/s,"
                      f" daemon CPU {cpu:.2f} s ({cpu / n * 1e6:.0f} us/notification),"
                      f" RSS before {rss0 / 1024:.1f} MB, peak during the bulk {proc_status(proc.pid, 'VmHWM') / 1024:.1f} MB")
                print(f"    daemon CPU per notification by thread: {threads}")
                if r["failed"]:
                    reasons = {}
                    for x in r["results"]:
                        if x["status"] == "failed":
                            reasons[x.get("reason")] = reasons.get(x.get("reason"), 0) + 1
                    print(f"    failures: {reasons}")

        # The ceilings, with the daemon's request, after the daemon's bulks: run just before them,
        # they left the daemon's bulks slower and its RSS higher here (see apns_bench.py).
        # plain libcurl: 100,000 requests whatever n is, a steady rate rather than start-up.
        # "Accept:" removes libcurl's default Accept, which the daemon does not send either.
        curl_rate, curl_cpu = libcurl_rate(url, ca, 100_000, conns, body,
                                           request_headers("bench-access-token") + ["Accept:"])
        if curl_rate:
            print(f"plain C libcurl (-n 100000, {conns} threads x 1 connection x 100 in flight, same request): "
                  f"{curl_rate:,.0f} req/s, {curl_cpu:.1f} us CPU/request")
        for n in counts:
            rate, ok = h2load_rate(url, n, conns, body, request_headers("bench-access-token"))
            print(f"h2load -n {n} -c {conns} -m 100 (same request): {rate:,.0f} req/s ({ok} succeeded)"
                  + (f"; plain libcurl = {curl_rate / rate:.2f} x h2load" if curl_rate and rate else ""))
            for rps in rates[n]:
                print(f"  bulk {n} at {rps:,.0f}/s: " + ", ".join(
                    ([f"{rps / rate:.2f} x h2load"] if rate else [])
                    + ([f"{rps / curl_rate:.2f} x plain libcurl"] if curl_rate else [])))
            best = max(rates[n])
            print(f"  best {n}: {best:,.0f} notifications/s"
                  + (f" = {best / rate:.2f} x h2load" if rate else "")
                  + (f", {best / curl_rate:.2f} x plain libcurl" if curl_rate else ""))
        lifetime_peak = max(lifetime_peak, proc_status(proc.pid, "VmHWM"))
        print(f"daemon peak RSS over the whole run (registration included): {lifetime_peak / 1024:.1f} MB")
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
        subprocess.run([str(ROOT / "bench/sink/stop.sh"), sink_dir])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
