#!/usr/bin/env bash
# Throughput of the shared HTTP/2 transport against a local nginx HTTP/2 TLS sink, with
# h2load (same request count, same connection count, 100 streams each) as the ceiling.
#
#   bench/transport_bench.sh [requests] [threads] [connections-per-thread]
#   (defaults: 100000 2 1; PORT=18443; WINDOW=2000 concurrent senders)
#
# Prints h2load's rate, raw libcurl C baselines (bench/curl_baseline.c: 1 thread, then one thread
# per connection without and with TCP_CORK: the best a libcurl 7.88 client reached here, and its
# ratio to h2load; the daemon does not cork, see README), then pushline-transport-bench's
# rate, its ratio to h2load,
# CPU seconds (getrusage) and peak RSS. Not a test: numbers depend on the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-100000}"
threads="${2:-2}"
conns="${3:-1}"
port="${PORT:-18443}"
window="${WINDOW:-2000}"

swift build -c release --product pushline-transport-bench >/dev/null
bin="$(swift build -c release --show-bin-path)/pushline-transport-bench"

read -r _ port ca dir < <(bench/sink/start.sh "$port")
trap 'bench/sink/stop.sh "$dir"' EXIT

body="$dir/body.json"
printf '%s' '{"aps":{"alert":{"title":"Hello","body":"A benchmark notification"}}}' > "$body"
total_conns=$((threads * conns))

echo "== h2load -n $requests -c $total_conns -m 100 (POST, same body)"
h2out="$(h2load -n "$requests" -c "$total_conns" -m 100 -d "$body" \
    -H 'content-type: application/json' "https://127.0.0.1:$port/" 2>&1)"
echo "$h2out" | grep -E "^finished|^requests:"
h2rate="$(echo "$h2out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')"

baseline_rate=""
if command -v cc >/dev/null; then
    # 100 in flight per connection, as h2load -m 100 and the provider benches (libcurl 7.88 costs
    # more per request with more transfers attached to a multi handle: about 30 against 24 us
    # with 1000 in flight here).
    echo "== raw libcurl baseline (C, 1 connection per thread, 100 in flight per thread)"
    cc -O2 -pthread -o "$dir/curl_baseline" bench/curl_baseline.c -lcurl
    "$dir/curl_baseline" "https://127.0.0.1:$port/" "$ca" "$requests" 100 1 0
    "$dir/curl_baseline" "https://127.0.0.1:$port/" "$ca" "$requests" 100 "$total_conns" 0
    out="$("$dir/curl_baseline" "https://127.0.0.1:$port/" "$ca" "$requests" 100 "$total_conns" 1)"
    echo "$out"
    baseline_rate="$(echo "$out" | sed -n 's/.*: \([0-9]*\) req\/s.*/\1/p')"
    if [ -n "$h2rate" ] && [ -n "$baseline_rate" ]; then
        python3 -c "print(f'   best raw libcurl client with $total_conns connection(s): {$baseline_rate / $h2rate:.2f} x h2load')"
    fi
fi

echo "== pushline-transport-bench -n $requests --threads $threads --connections $conns"
"$bin" --url "https://127.0.0.1:$port/" --ca "$ca" -n "$requests" --threads "$threads" \
    --connections "$conns" --streams 100 --window "$window" ${h2rate:+--h2load-rps "$h2rate"}
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
