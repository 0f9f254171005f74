#!/usr/bin/env bash
# APNs throughput through the daemon against a local nginx HTTP/2 TLS sink (bench/sink),
# with h2load (same connection count, 100 streams each) as the machine's ceiling.
#
#   bench/apns_bench.sh [devices] [connections]      (defaults: 100000 2; PORT=18444;
#                                                     STREAMS=100 per connection, like h2load -m 100)
#
# Prints h2load's rate with a bare POST (the issue's `h2load -c <same> -m 100`), then two
# ceilings with the daemon's own request (same path, body, apns-* headers and a bearer JWT of the
# same shape): h2load, and plain C on the system's libcurl (bench/curl_baseline.c). Then for
# bulk 10,000 and 100,000: notifications/s, the ratio to each ceiling, the daemon's CPU seconds
# (in all and per thread group) and peak RSS; then single-send latency (median, p99 of 1,000).
# Not a test: numbers depend on the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
devices="${1:-100000}"
conns="${2:-2}"
port="${PORT:-18444}"
streams="${STREAMS:-100}"

if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi

read -r _ port ca dir < <(bench/sink/start.sh "$port")
trap 'bench/sink/stop.sh "$dir"' EXIT

body="$dir/body.json"
printf '%s' '{"aps":{"alert":{"title":"Hello","body":"A benchmark notification"}}}' > "$body"
echo "== h2load -n 100000 -c $conns -m 100 (POST, an APNs-sized body)"
h2out="$(h2load -n 100000 -c "$conns" -m 100 -d "$body" -H 'content-type: application/json' \
    "https://127.0.0.1:$port/3/device/$(printf 'a%.0s' $(seq 64))" 2>&1)"
echo "$h2out" | grep -E "^finished|^requests:"
h2rate="$(echo "$h2out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')"

echo "== pushline bulk through the socket ($devices devices, max_connections $conns, $streams streams each)"
python3 bench/apns_bench.py --bin "$PUSHLINE_BIN" --port "$port" --ca "$ca" --devices "$devices" \
    --connections "$conns" --streams "$streams" ${h2rate:+--h2load-rps "$h2rate"}
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
