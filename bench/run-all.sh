#!/usr/bin/env bash
# Runs every benchmark against the release build (make bench). Benchmarks print
# figures; they do not pass or fail. Each provider benchmark also measures h2load
# against the same local sink, as the machine's ceiling.
set -uo pipefail
cd "$(dirname "$0")/.."
export PUSHLINE_BIN=${PUSHLINE_BIN:-$PWD/.build/release/pushline}
echo "== foundation (socket, registry, RSS) =="
python3 bench/foundation_bench.py --bin "$PUSHLINE_BIN"
echo "== careless clients (a huge line, replies never read) =="
python3 bench/server_abuse_bench.py --bin "$PUSHLINE_BIN"
for b in transport_bench.sh apns_bench.sh fcm_bench.sh webpush_bench.sh latency_bench.sh scale_bench.sh outbox_bench.sh pg_bench.sh; do
    if [ -x "bench/$b" ]; then
        echo "== $b =="
        "bench/$b" || echo "($b exited $?)"
    fi
done
