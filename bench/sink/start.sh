#!/usr/bin/env bash
# Starts the nginx HTTP/2 TLS sink on 127.0.0.1.
#   bench/sink/start.sh [port] [dir]      (defaults: 18443, a new temp dir)
# Prints: READY <port> <ca_file> <dir>     Stop it with bench/sink/stop.sh <dir>.
# WORKERS=n sets worker_processes (default 1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-18443}"
dir="${2:-$(mktemp -d /tmp/pushline-sink.XXXXXX)}"
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
user_line=""
if [ "$(id -u)" = 0 ]; then user_line="user $(id -un) $(id -gn);"; fi
sed -e "s|__DIR__|$dir|g" -e "s|__PORT__|$port|g" -e "s|__USER__|$user_line|" \
    -e "s|__WORKERS__|${WORKERS:-1}|" "$here/nginx.conf.template" > "$dir/nginx.conf"
nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 50); do
    [ -s "$dir/nginx.pid" ] && break
    sleep 0.1
done
[ -s "$dir/nginx.pid" ] || { echo "nginx did not start; see $dir/error.log" >&2; exit 1; }
echo "READY $port $dir/cert.pem $dir"
