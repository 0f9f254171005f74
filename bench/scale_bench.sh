#!/usr/bin/env bash
# Scale benchmark: batched register, dry-run send, real send (against the nginx HTTP/2 TLS sink),
# peak RSS, `devices` by user and `stats` at 100,000 and at 1,000,000 APNs devices, with the
# ratios of the large size to the small one. See bench/scale_bench.py.
#
#   bench/scale_bench.sh [sizes] [connections]     (defaults: 100000,1000000 2; PORT=23443)
# Not a test: numbers depend on the machine's load. About 4 minutes at the default sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${1:-100000,1000000}"
conns="${2:-2}"
port="${PORT:-23443}"

if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi

read -r _ port ca dir < <(bench/sink/start.sh "$port")
trap 'bench/sink/stop.sh "$dir"' EXIT

python3 bench/scale_bench.py --bin "$PUSHLINE_BIN" --port "$port" --ca "$ca" --sizes "$sizes" --connections "$conns"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
