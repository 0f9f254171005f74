#!/usr/bin/env python3
"""A/B of background delivery between daemon binaries (not a test; figures are indicative on a
shared machine): runs `outbox_bench.py --parts deliver` for each binary in turn, `--rounds`
times, and prints each run's background and synchronous rates, their ratio and the daemon's CPU
per delivery by thread, then the median of each per binary.
    bench/adhoc/deliver_ab.py BIN_A BIN_B [--rounds 3] [--port 21000]
"""
import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "outbox_bench.py"


def run(binary, port):
    out = subprocess.run([sys.executable, str(BENCH), "--bin", binary, "--port", str(port), "--parts", "deliver"],
                         capture_output=True, text=True, check=True).stdout
    bg = re.search(r"background delivery: .*?= ([\d,]+)/s; daemon CPU [\d.]+ s = (\d+) us each \((.*?)\); sink (\d+) us", out)
    sy = re.search(r"synchronous send to the same devices: ([\d,]+)/s; daemon CPU [\d.]+ s = (\d+) us each \((.*?)\); sink (\d+) us", out)
    if not bg or not sy:
        raise SystemExit(f"unexpected output from {binary}:\n{out}")
    threads = {m.group(1): int(m.group(2)) for m in re.finditer(r"([\w.-]+) (\d+) us", bg.group(3))}
    sync_threads = {m.group(1): int(m.group(2)) for m in re.finditer(r"([\w.-]+) (\d+) us", sy.group(3))}
    return {
        "bg": int(bg.group(1).replace(",", "")), "bg_cpu": int(bg.group(2)), "bg_sink": int(bg.group(4)),
        "sync": int(sy.group(1).replace(",", "")), "sync_cpu": int(sy.group(2)), "sync_sink": int(sy.group(4)),
        "http": threads.get("pl-http", 0), "sync_http": sync_threads.get("pl-http", 0), "db": threads.get("pushline-db", 0), "worker": threads.get("oot.default-qos", 0),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=21000)
    args = ap.parse_args()
    runs = {b: [] for b in args.bins}
    for r in range(args.rounds):
        for b in args.bins:
            x = run(b, args.port)
            x["ratio"] = x["bg"] / x["sync"]
            x["cpu_ratio"] = x["bg_cpu"] / x["sync_cpu"]
            runs[b].append(x)
            print(f"round {r + 1} {Path(b).name}: background {x['bg']:,}/s, sync {x['sync']:,}/s, ratio {x['ratio']:.2f}; "
                  f"CPU per delivery {x['bg_cpu']} us (pl-http {x['http']}, db {x['db']}, worker {x['worker']}) against sync {x['sync_cpu']} us (pl-http {x['sync_http']}) "
                  f"(x{x['cpu_ratio']:.2f}); sink {x['bg_sink']}/{x['sync_sink']} us", flush=True)
    for b, xs in runs.items():
        med = {k: statistics.median(x[k] for x in xs) for k in xs[0]}
        print(f"median {Path(b).name} over {len(xs)}: ratio {med['ratio']:.2f} (range {min(x['ratio'] for x in xs):.2f}-{max(x['ratio'] for x in xs):.2f}), "
              f"CPU ratio {med['cpu_ratio']:.2f}, background {med['bg_cpu']:.0f} us (pl-http {med['http']:.0f}, db {med['db']:.0f}, worker {med['worker']:.0f}), sync {med['sync_cpu']:.0f} us (pl-http {med['sync_http']:.0f})")


if __name__ == "__main__":
    main()
