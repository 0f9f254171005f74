#!/usr/bin/env bash
# The durable outbox's figures (issue 13): see bench/outbox_bench.py. PORT defaults to 21000.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --static-swift-stdlib --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi
python3 bench/outbox_bench.py --bin "$PUSHLINE_BIN" --port "${PORT:-21000}" "$@"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
