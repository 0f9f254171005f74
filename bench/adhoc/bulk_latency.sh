#!/usr/bin/env bash
# Ad-hoc latency comparison for issue 17 (not part of `make bench`): starts two nginx+njs sinks
# answering APNs-style after 50 ms and 1 s (ports 24001, 24002), runs bulk_latency.py, stops them.
#   bench/adhoc/bulk_latency.sh [pushline binary] [N] [REPEAT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../.build/release/pushline}"
dir="$(mktemp -d /tmp/pushline-bulk-latency.XXXXXX)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
user_line=""; if [ "$(id -u)" = 0 ]; then user_line="user $(id -un) $(id -gn);"; fi
for spec in 24001:50 24002:1000; do
    port="${spec%%:*}"; ms="${spec##*:}"; d="$dir/$port"; mkdir -p "$d"
    cp "$dir/cert.pem" "$dir/key.pem" "$d/"
    sed "s/var ms = 50;/var ms = $ms;/" "$here/apns-delay.js" > "$d/delay.js"
    sed -e "s|__DIR__|$d|g" -e "s|__PORT__|$port|g" -e "s|__USER__|$user_line|" "$here/nginx-delay.conf.template" > "$d/nginx.conf"
    nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf"
done
trap 'for p in 24001 24002; do [ -s "$dir/$p/nginx.pid" ] && kill "$(cat "$dir/$p/nginx.pid")"; done' EXIT
sleep 0.5
python3 "$here/bulk_latency.py" "$bin" 24001 "$dir/cert.pem" 24002 "$dir/cert.pem" "${2:-10000}" "${3:-2}"
