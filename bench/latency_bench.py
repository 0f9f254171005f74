#!/usr/bin/env python3
"""Single-send latency and provider-latency benchmarks through the daemon (not a test: it prints
figures), against bench/sink answering APNs as Apple does: 200, HEADERS only, an apns-id, no body.

Part 1, single sends (sink answering at once):
* one client sending `send`s to one device one after another: p50, p90, p99, max;
* 32 clients doing the same at once (one request in flight each): sends/s and failures, first
  from one Python selector loop (about 40 µs of CPU a send itself), then from 32 C clients
  (bench/socket_load.c, about 5 µs): on 2 cores the bench's client, the sink and the daemon share
  the CPU, so each part also prints the sink's and the client's CPU per send and how busy the
  cores were;
* ceilings in the same run: `h2load -c1 -m1` with the daemon's request (its mean time per request
  and rate), `h2load -c <connections> -m 16` (32 streams in flight), and plain C libcurl
  (bench/curl_baseline.c) with the same 32 requests in flight: its rate and CPU per request.

Part 2, issue 17 (sink answering after 0 ms and after 50 ms, LATENCY_MS of bench/sink):
* one `send` to 10,000 devices;
* one `bulk` of 10,000 `messages`, each to one device;
* 64 clients each sending single `send`s one after another;
rates (notifications/s), failures, and the ratio bulk-of-messages / send.

    bench/latency_bench.py [--bin .build/release/pushline] [--port 21040] [--sequential 2000]
                           [--concurrent-sends 20000] [--devices 10000] [--latencies 0,50] [--skip-part2]
"""
import argparse
import base64
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from benchlib import (socket_load, libcurl_rate, machine_cpu, sink_cpu_s, ROOT, Conn, apns_key, concurrent_calls, cpu_s, ctx_switches, per_send_line, thread_cpu_line, thread_wakeups, thread_wakeups_line, thread_cpu_s, h2load_run, percentile, start_daemon,  # noqa: E402
                      start_sink, stop_daemon, stop_sink)  # noqa: E402


def token(i):
    return f"{i:064x}"


def apns_config(work, port, ca, connections):
    key = apns_key(work)
    return {"max_line_bytes": 64 << 20, "apps": {"default": {"apns": {
        "key_path": str(key), "key_id": "BENCHKEY01", "team_id": "BENCHTEAM1", "topic": "com.example.bench",
        "endpoint": f"https://localhost:{port}", "ca_file": ca, "max_connections": connections}}}}


def register(c, n):
    for start in range(0, n, 20_000):
        k = min(20_000, n - start)
        r = c.call({"cmd": "register", "devices": [
            {"platform": "apns", "registration_id": token(i)} for i in range(start + 1, start + k + 1)]})
        assert r["ok"], r


def failures_of(responses):
    """(failed sends, reasons) over `send` responses."""
    failed, reasons = 0, {}
    for r in responses:
        if not r.get("ok"):
            failed += 1
            reasons[r.get("error", {}).get("code")] = reasons.get(r.get("error", {}).get("code"), 0) + 1
            continue
        for x in r["results"]:
            if x["status"] != "sent":
                failed += 1
                reasons[x.get("reason")] = reasons.get(x.get("reason"), 0) + 1
    return failed, reasons


def ceiling_request(work, port):
    """URL, body file and headers of the daemon's APNs request, for h2load."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    jwt = ".".join([b64(b'{"alg":"ES256","kid":"BENCHKEY01"}'),
                    b64(json.dumps({"iss": "BENCHTEAM1", "iat": int(time.time())}, separators=(",", ":")).encode()),
                    b64(os.urandom(64))])
    headers = ["apns-push-type: alert", "apns-priority: 10", "apns-topic: com.example.bench",
               f"authorization: bearer {jwt}"]
    body = Path(work) / "body.json"
    body.write_text('{"aps":{"alert":"latency"}}')
    return f"https://127.0.0.1:{port}/3/device/{token(2)}", body, headers


def part1(args):
    port, ca, sink = start_sink(args.port, 0)
    work = Path(tempfile.mkdtemp(prefix="pushline-latency-bench."))
    proc, sock = start_daemon(args.bin, work, apns_config(work, port, ca, args.connections))
    try:
        c = Conn(sock)
        register(c, 64)
        one = {"cmd": "send", "platform": "apns", "registration_ids": [token(2)], "message": "latency"}
        for _ in range(50):  # warm: connection, provider token
            c.call(one)
        lat, failed = [], 0
        cpu0, ctx0 = cpu_s(proc.pid), ctx_switches(proc.pid)
        t_all = time.perf_counter()
        for _ in range(args.sequential):
            t0 = time.perf_counter()
            r = c.call(one)
            lat.append((time.perf_counter() - t0) * 1000)
            failed += failures_of([r])[0]
        t_all = time.perf_counter() - t_all
        seq_line = per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), args.sequential)
        lat.sort()
        print(f"one client, {args.sequential} sequential sends: p50 {percentile(lat, 50):.3f} ms, p90 "
              f"{percentile(lat, 90):.3f} ms, p99 {percentile(lat, 99):.3f} ms, max {lat[-1]:.3f} ms, "
              f"{args.sequential / t_all:,.0f} sends/s, failed {failed}; daemon {seq_line}", flush=True)

        reqs = [dict(one, registration_ids=[token(1 + i % 64)]) for i in range(args.concurrent_sends)]
        cpu0, ctx0 = cpu_s(proc.pid), ctx_switches(proc.pid)
        threads0, wakeups0 = thread_cpu_s(proc.pid), thread_wakeups(proc.pid)
        sink0, mach0, t = sink_cpu_s(sink), machine_cpu(), os.times()
        client0 = t.user + t.system
        dt, out = concurrent_calls(sock, 32, reqs)
        sink1, mach1, t = sink_cpu_s(sink), machine_cpu(), os.times()
        conc_daemon_us = (cpu_s(proc.pid) - cpu0) / len(out) * 1e6
        conc_line = per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), len(out))
        # Who used the two cores: on this machine the sink and the bench's client share them with
        # the daemon, so the rate is bounded by all three together.
        share_line = (f"sink {(sink1 - sink0) / len(out) * 1e6:.0f} us, this client {(t.user + t.system - client0) / len(out) * 1e6:.0f} us "
                      f"per send; the machine's cores {(mach1[0] - mach0[0]) / max(1, mach1[1] - mach0[1]) * 100:.0f}% busy")
        threads = thread_cpu_line(threads0, thread_cpu_s(proc.pid), len(out))
        wakeups = thread_wakeups_line(wakeups0, thread_wakeups(proc.pid), len(out))
        failed, reasons = failures_of(out)
        conc_rate = len(out) / dt
        print(f"32 clients, {len(out)} single sends: {dt:.2f} s, {conc_rate:,.0f} sends/s, failed {failed}; "
              f"daemon {conc_line}"
              + (f" {reasons}" if reasons else ""), flush=True)
        print(f"    daemon CPU per send by thread: {threads}", flush=True)
        print(f"    daemon wake-ups per send by thread: {wakeups}", flush=True)
        print(f"    besides the daemon: {share_line}", flush=True)
        # The same sends from 32 C clients (bench/socket_load.c): the bench's own client then
        # takes a few µs a send of the two cores instead of about 40.
        cpu0, ctx0, threads0 = cpu_s(proc.pid), ctx_switches(proc.pid), thread_cpu_s(proc.pid)
        sink0, mach0 = sink_cpu_s(sink), machine_cpu()
        light_rate = light_daemon_us = None
        light = socket_load(sock, 32, reqs)
        if light:
            dt_c, rate_c, failed_c, client_us, first = light
            light_rate, light_daemon_us = rate_c, (cpu_s(proc.pid) - cpu0) / len(reqs) * 1e6
            sink1, mach1 = sink_cpu_s(sink), machine_cpu()
            print(f"32 C clients (bench/socket_load.c), {len(reqs)} single sends: {dt_c:.2f} s, {rate_c:,.0f} sends/s, failed {failed_c}; "
                  f"daemon {per_send_line(cpu0, ctx0, cpu_s(proc.pid), ctx_switches(proc.pid), len(reqs))}"
                  + (f"; first failure: {first}" if first else ""), flush=True)
            print(f"    daemon CPU per send by thread: {thread_cpu_line(threads0, thread_cpu_s(proc.pid), len(reqs))}", flush=True)
            print(f"    besides the daemon: sink {(sink1 - sink0) / len(reqs) * 1e6:.0f} us, the C clients {client_us:.0f} us per send; "
                  f"the machine's cores {(mach1[0] - mach0[0]) / max(1, mach1[1] - mach0[1]) * 100:.0f}% busy", flush=True)
    finally:
        stop_daemon(proc)
    url, body, headers = ceiling_request(work, port)
    rate1, mean1, ok1 = h2load_run(url, args.sequential, 1, 1, body, headers)
    rate32, _, ok32 = h2load_run(url, args.concurrent_sends, args.connections, max(1, 32 // args.connections), body,
                                 headers)
    # Plain C libcurl with the same 32 requests in flight (bench/curl_baseline.c): the transport
    # library's own rate and CPU per request here, the reference for the daemon's transport.
    # The best of three: plain libcurl 7.88 sometimes stalls for seconds on streams the sink
    # answered before their body was sent (66 req/s in one run of 2026-12-05, 25,000 and more in
    # the others); the daemon works around that stall, the bare C loop does not.
    curl_runs = [libcurl_rate(url, ca, args.concurrent_sends, args.connections, body, headers,
                              window=max(1, 32 // args.connections)) for _ in range(3)]
    curl32, curl32_us = max(curl_runs, key=lambda r: r[0] or 0)
    stop_sink(sink)
    if rate1:
        print(f"ceiling, h2load -c1 -m1 -n {args.sequential} (the daemon's request): mean {mean1:.3f} ms per request, "
              f"{rate1:,.0f} req/s ({ok1} succeeded); daemon p50 / h2load mean: {percentile(lat, 50) / mean1:.1f} x")
    if rate32:
        print(f"ceiling, h2load -c{args.connections} -m{max(1, 32 // args.connections)} (32 in flight): "
              f"{rate32:,.0f} req/s ({ok32} succeeded); 32 clients / h2load: {conc_rate / rate32:.2f} x", flush=True)
    if curl32:
        print(f"ceiling, plain C libcurl, {args.connections} threads x {max(1, 32 // args.connections)} in flight (the daemon's request; "
              f"best of 3: {', '.join(f'{r[0]:,.0f}' for r in curl_runs if r[0])} req/s): "
              f"{curl32:,.0f} req/s, {curl32_us:.1f} us CPU per request; 32 clients / libcurl: {conc_rate / curl32:.2f} x rate, "
              f"daemon CPU per send / libcurl's per request: {conc_daemon_us / curl32_us:.2f} x"
              + (f"; 32 C clients / libcurl: {light_rate / curl32:.2f} x rate, {light_daemon_us / curl32_us:.2f} x CPU" if light_rate else ""),
              flush=True)


def part2(args, latency_ms):
    try:
        port, ca, sink = start_sink(args.port + 1, latency_ms)
    except subprocess.CalledProcessError as e:
        print(f"  latency {latency_ms} ms: sink did not start ({e.stderr.strip()}): skipped", flush=True)
        return
    work = Path(tempfile.mkdtemp(prefix="pushline-latency-bench."))
    proc, sock = start_daemon(args.bin, work, apns_config(work, port, ca, args.connections))
    n = args.devices
    try:
        c = Conn(sock)
        register(c, n)
        c.call({"cmd": "send", "platform": "apns", "registration_ids": [token(1)], "message": "warm"})
        ids = [token(i) for i in range(1, n + 1)]

        t0 = time.time()
        r = c.call({"cmd": "send", "platform": "apns", "registration_ids": ids, "message": "one to many"})
        send_dt = c.received_at - t0
        send_rate = n / send_dt
        print(f"  latency {latency_ms} ms: one send to {n} devices: {send_dt:.2f} s, {send_rate:,.0f}/s, "
              f"failed {r.get('failed')}", flush=True)

        def bulk_of_messages(k):
            msgs = [{"platform": "apns", "registration_ids": [t], "message": f"personal {i}"}
                    for i, t in enumerate(ids[:k])]
            t0 = time.time()
            r = c.call({"cmd": "bulk", "messages": msgs})
            return c.received_at - t0, r

        # A probe of 200 first: where bulk runs its messages nearly one at a time (main before
        # issue 17, about 20 per second at 50 ms) a bulk of 10,000 would take minutes.
        probe_dt, r = bulk_of_messages(200)
        if probe_dt / 200 * n > args.bulk_budget_s:
            bulk_rate = 200 / probe_dt
            print(f"  latency {latency_ms} ms: bulk of 200 messages (one device each): {probe_dt:.2f} s, "
                  f"{bulk_rate:,.0f}/s, failed {r.get('failed')}, bulk/send {bulk_rate / send_rate:.2f} (the bulk of {n} "
                  f"would take about {probe_dt / 200 * n:.0f} s, over --bulk-budget-s {args.bulk_budget_s:.0f}: skipped)",
                  flush=True)
        else:
            bulk_dt, r = bulk_of_messages(n)
            bulk_rate = n / bulk_dt
            print(f"  latency {latency_ms} ms: bulk of {n} messages (one device each): {bulk_dt:.2f} s, "
                  f"{bulk_rate:,.0f}/s, failed {r.get('failed')}, bulk/send {bulk_rate / send_rate:.2f}", flush=True)

        per_client = args.single_per_client
        reqs = [{"cmd": "send", "platform": "apns", "registration_ids": [ids[i % n]], "message": "single"}
                for i in range(64 * per_client)]
        dt, out = concurrent_calls(sock, 64, reqs)
        failed, reasons = failures_of(out)
        print(f"  latency {latency_ms} ms: 64 clients x {per_client} single sends: {dt:.2f} s, {len(out) / dt:,.0f}/s "
              + (f"(at most {64 * 1000 / latency_ms:,.0f}/s at this latency), " if latency_ms else ", ")
              + f"failed {failed}"
              + (f" {reasons}" if reasons else ""), flush=True)
    finally:
        stop_daemon(proc)
        stop_sink(sink)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("PUSHLINE_BIN", str(ROOT / ".build/release/pushline")))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "21040")))
    ap.add_argument("--connections", type=int, default=2, help="apns max_connections")
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--concurrent-sends", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--single-per-client", type=int, default=50)
    ap.add_argument("--latencies", default="0,50")
    ap.add_argument("--bulk-budget-s", type=float, default=60,
                    help="skip the bulk of --devices messages if a 200-message probe projects longer")
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--skip-part2", action="store_true")
    args = ap.parse_args()
    if not args.skip_part1:
        print("== single sends against a no-body APNs sink", flush=True)
        part1(args)
    if not args.skip_part2:
        print("== provider latency (issue 17): send, bulk of messages, 64 single-send clients", flush=True)
        for latency in (int(x) for x in args.latencies.split(",")):
            part2(args, latency)
    print(f"== load average: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
