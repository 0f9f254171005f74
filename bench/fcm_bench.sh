#!/usr/bin/env bash
# FCM throughput: bulk of 10,000 and 100,000 tokens through the release daemon to the local
# nginx HTTP/2 sink, compared with h2load on the same connections (see bench/fcm_bench.py).
#   bench/fcm_bench.sh [--counts 10000,100000] [--max-connections 2] [--repeat 2]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi
exec python3 bench/fcm_bench.py --bin "$PUSHLINE_BIN" "$@"
