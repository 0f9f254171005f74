#!/usr/bin/env python3
"""WebPush bulk benchmark through the daemon: N subscriptions with real P-256 keys, one
`bulk` to all of them, every message encrypted for its subscriber (RFC 8291) and POSTed
to a local HTTP/2 sink (bench/sink, nginx answering 200 to any POST).

    bench/webpush_bench.py --bin .build/release/pushline --port 18443 --ca CERT [-n 10000] [--runs 3]

Prints per run: notifications/s (wall time of the bulk command), the daemon's CPU seconds
for the run (utime+stime from /proc), and its peak RSS (VmHWM). Not a test.
"""
import argparse
import base64
import json
import os
import subprocess
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from benchlib import Conn, cpu_s as cpu_seconds  # noqa: E402


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024  # MB
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--origins", type=int, default=2, help="1: 127.0.0.1 only; 2: 127.0.0.1 and localhost")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="pushline-wpbench-")
    out = subprocess.run([args.bin, "vapid", "generate", "--out", work], capture_output=True, text=True, check=True)
    key_path = os.path.join(work, "vapid_private.pem")

    t0 = time.time()
    hosts = ["127.0.0.1", "localhost"][: max(1, min(2, args.origins))]
    devices = []
    for i in range(args.n):
        priv = ec.generate_private_key(ec.SECP256R1())
        pub = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        host = hosts[i % len(hosts)]
        devices.append({"platform": "webpush", "registration_id": f"https://{host}:{args.port}/push/sub{i:06d}",
                        "p256dh": b64u(pub), "auth": b64u(os.urandom(16)), "user": f"u{i}"})
    print(f"generated {args.n} P-256 subscriptions in {time.time() - t0:.1f} s ({len(hosts)} origin(s))", flush=True)

    config = {"apps": {"default": {"webpush": {"vapid_private_key_path": key_path, "subject": "mailto:bench@example.com",
                                               "ca_file": args.ca}}},
              "log_level": "warning", "max_line_bytes": 64 << 20}
    cfg = os.path.join(work, "config.json")
    with open(cfg, "w") as f:
        json.dump(config, f)
    sock = os.path.join(work, "p.sock")
    log = open(os.path.join(work, "daemon.log"), "wb")
    proc = subprocess.Popen([args.bin, "serve", "--socket", sock, "--database", os.path.join(work, "p.db"), "--config", cfg],
                            stdout=log, stderr=log)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                try:
                    c = Conn(sock)
                    if c.call({"cmd": "ping"}).get("ok"):
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise SystemExit("daemon did not start; see " + log.name)
        t0 = time.time()
        r = c.call({"cmd": "register", "devices": devices})
        assert r["ok"], r.get("error")
        print(f"registered {args.n} in {time.time() - t0:.2f} s; idle RSS {status(proc.pid, 'VmRSS')} MB", flush=True)

        message = {"cmd": "bulk", "filter": {"platform": "webpush"}, "title": "Sale", "message": "Everything 20% off today",
                   "tag": "sale", "url": "https://shop.example/sale", "extra": {"campaign": 42}}
        rates = []
        for run in range(1, args.runs + 1):
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.time()
            r = c.call(dict(message, id=run))
            wall = time.time() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            if not r.get("ok"):
                raise SystemExit(f"bulk failed: {r.get('error')}")
            reasons = {}
            for x in r["results"]:
                if x["status"] != "sent":
                    reasons[x.get("reason")] = reasons.get(x.get("reason"), 0) + 1
            rate = args.n / wall
            rates.append(rate)
            print(f"run {run}: {args.n} notifications in {wall:.2f} s = {rate:,.0f}/s; sent {r['sent']} failed {r['failed']}"
                  f"{' ' + str(reasons) if reasons else ''}; daemon CPU {cpu:.2f} s ({cpu / args.n * 1e6:.0f} us/notification);"
                  f" peak RSS {status(proc.pid, 'VmHWM')} MB", flush=True)
        rates.sort()
        print(f"WEBPUSH_BENCH n={args.n} best={rates[-1]:,.0f}/s median={rates[len(rates) // 2]:,.0f}/s "
              f"peak_rss={status(proc.pid, 'VmHWM')}MB (target >= 5,000/s)")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
