#!/usr/bin/env bash
# WebPush bulk benchmark: 10,000 subscriptions with real P-256 keys, one `bulk` through the
# daemon (release build), each message encrypted per subscriber and POSTed to the local nginx
# HTTP/2 sink (bench/sink). Reports notifications/s, daemon CPU seconds and peak RSS.
#
#   bench/webpush_bench.sh [subscriptions] [runs]     (defaults: 10000 3; PORT=18444)
#
# Not a test: numbers depend on the machine's load. Target on 2 cores: >= 5,000/s.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
runs="${2:-3}"
port="${PORT:-18444}"

if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi

read -r _ port ca dir < <(bench/sink/start.sh "$port")
trap 'bench/sink/stop.sh "$dir"' EXIT

python3 bench/webpush_bench.py --bin "$PUSHLINE_BIN" --port "$port" --ca "$ca" -n "$n" --runs "$runs"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
