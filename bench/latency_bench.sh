#!/usr/bin/env bash
# Single-send latency (one client sequential; 32 concurrent clients) against a no-body APNs sink,
# with h2load -c1 -m1 as the ceiling, then issue 17's provider-latency bench (sink answering after
# 0 ms and 50 ms: one send to 10,000 devices, a bulk of 10,000 messages, 64 single-send clients).
#   bench/latency_bench.sh [latency_bench.py options]      (PORT=21040: uses PORT and PORT+1)
# Not a test: numbers depend on the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi
exec python3 bench/latency_bench.py --bin "$PUSHLINE_BIN" "$@"
