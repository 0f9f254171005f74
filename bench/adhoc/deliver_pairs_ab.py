#!/usr/bin/env python3
"""Pooled A/B of background delivery between daemon binaries (not a test; figures are
indicative on a shared machine): runs `outbox_bench.py --parts deliver --pairs P` for each
binary in turn, `--rounds` times, and pools every background/sync pair of a binary: the median
rate ratio, the median daemon-CPU ratio, and the median worker + database-thread CPU per
background delivery (the part only a background delivery has).
    bench/adhoc/deliver_pairs_ab.py BIN_A BIN_B [...] [--rounds 3] [--pairs 4] [--port 21000] [--log FILE]
"""
import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "outbox_bench.py"
FIRST_BG = re.compile(r"background delivery: .*= ([\d,]+)/s; daemon CPU [\d.]+ s = (\d+) us each \((.*?)\)")
FIRST_SYNC = re.compile(r"synchronous send to the same devices: ([\d,]+)/s; daemon CPU [\d.]+ s = (\d+) us")
PAIR = re.compile(r"pair \d+: background ([\d,]+)/s, daemon CPU (\d+) us each \((.*?)\).*sync ([\d,]+)/s, daemon CPU (\d+) us")


def num(s):
    return int(s.replace(",", ""))


def background_only(threads):
    """Worker tasks (Dispatch's default-QoS threads) plus the database thread, µs a delivery."""
    w = re.search(r"oot.default-qos (\d+)", threads)
    d = re.search(r"pushline-db (\d+)", threads)
    return (int(w.group(1)) if w else 0) + (int(d.group(1)) if d else 0)


def pairs(out):
    """(rate ratio, CPU ratio, worker+db µs) for every pair of one outbox_bench output."""
    found = []
    bg = FIRST_BG.search(out)
    sy = FIRST_SYNC.search(out)
    if bg and sy:
        found.append((num(bg.group(1)) / num(sy.group(1)), int(bg.group(2)) / int(sy.group(2)), background_only(bg.group(3))))
    for m in PAIR.finditer(out):
        found.append((num(m.group(1)) / num(m.group(4)), int(m.group(2)) / int(m.group(5)), background_only(m.group(3))))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--port", type=int, default=21000)
    ap.add_argument("--log", help="append every run's output here")
    a = ap.parse_args()
    pooled = {b: [] for b in a.binaries}
    for r in range(a.rounds):
        for b in a.binaries:
            out = subprocess.run([sys.executable, str(BENCH), "--bin", b, "--port", str(a.port), "--parts", "deliver",
                                  "--pairs", str(a.pairs)], capture_output=True, text=True, check=True).stdout
            if a.log:
                with open(a.log, "a") as f:
                    f.write(f"== {b} round {r + 1}\n{out}")
            got = pairs(out)
            if not got:
                raise SystemExit(f"unexpected output from {b}:\n{out}")
            pooled[b].extend(got)
            print(f"round {r + 1} {b}: rate ratios " + ", ".join(f"{x[0]:.2f}" for x in got), flush=True)
    for b, got in pooled.items():
        rates = [x[0] for x in got]
        print(f"{b}: {len(got)} pairs; background / sync rate median {statistics.median(rates):.3f} "
              f"({min(rates):.2f}-{max(rates):.2f}); daemon CPU ratio median {statistics.median(x[1] for x in got):.3f}; "
              f"worker + database thread median {statistics.median(x[2] for x in got)} us a delivery")


if __name__ == "__main__":
    main()
